"""kapfhir's domain rules as a layer of the validator (``validation.operation.DomainRules``): content that claims a
kapfhir profile must map into the KAP domain (a refusal names its element), and a Bundle carrying an episode is
checked against the safety rules under the policy given (each deviation a warning naming the implicated resources:
what happened is stored; deviations are flagged, not refused)."""

from __future__ import annotations

from dataclasses import dataclass

from mappings.bundle import from_bundle
from mappings.resources import condition, patient
from mappings.resources._common import MappingRefusedError
from service.domain import rules
from validation import Issue


@dataclass(frozen=True)
class DomainRules:
    policy: rules.SafetyPolicy

    def bundle(self, bundle: dict) -> list[Issue]:
        """The bundle mapped into the domain, then the safety rules on its episode."""
        try:
            chart = from_bundle(bundle)
        except MappingRefusedError as exc:
            return [Issue("error", "business-rule", exc.expression, exc.reason)]
        except (KeyError, ValueError, TypeError) as exc:
            return [
                Issue(
                    "error",
                    "business-rule",
                    "Bundle",
                    f"the bundle does not map into a KAP episode: {type(exc).__name__} {exc}",
                )
            ]
        index = _record_entries(bundle)
        issues = []
        for deviation in rules.evaluate(chart.episode, self.policy):
            where = [index[r] for r in sorted(deviation.record_ids) if r in index] or ["Bundle"]
            for path in where:
                issues.append(
                    Issue(
                        "warning",
                        "business-rule",
                        path,
                        f"safety rule {deviation.rule_id} ({deviation.severity}): {deviation.explanation}",
                    )
                )
        return issues

    def resource(self, resource: dict) -> list[Issue]:
        """A single resource claiming a kapfhir profile must map into the domain (reverse mapping)."""
        readers = {"Patient": lambda r: patient.from_patient(None, r), "Condition": condition.from_condition}
        reader = readers.get(resource["resourceType"])
        if reader is None:
            return []
        try:
            reader(resource)
        except MappingRefusedError as exc:
            return [Issue("error", "business-rule", exc.expression, exc.reason)]
        except (KeyError, ValueError, TypeError) as exc:
            return [Issue("error", "business-rule", resource["resourceType"], f"does not map into the domain: {exc}")]
        return []


def _record_entries(bundle: dict) -> dict[str, str]:
    """Business identifier value -> the path of the entry that carries it (where a deviation's records are)."""
    out: dict[str, str] = {}
    for i, entry in enumerate(bundle.get("entry", [])):
        for ident in (
            entry["resource"].get("identifier", []) if isinstance(entry["resource"].get("identifier"), list) else []
        ):
            value = ident.get("value")
            if value and value not in out:
                out[value] = f"Bundle.entry[{i}].resource"
    return out
