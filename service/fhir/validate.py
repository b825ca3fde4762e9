"""``$validate``: every problem of a resource or Bundle as OperationOutcome issues with FHIRPath expressions.

Layers: the ``mappings.validation`` layers (structure with fhirkit-rs for R4 4.0.1 plus calendar dates and ids,
required bindings, core invariants; the kapfhir profile rules when a kapfhir profile is claimed or asked for), then
checks of our own: reference target types, the constraints our StructureDefinitions declare, and domain rules
(reverse mapping into the domain and the safety rules, for a Bundle that carries an episode).
"""

from __future__ import annotations

import re
import typing
import uuid
from functools import cache
from typing import Any

import fhirpathpy
from fhirpathpy.models import models as fhirpath_models

from mappings import terminology as t
from mappings import validation as v
from mappings.conformance import load_all
from mappings.resources._common import MappingRefusedError
from mappings.validation import Issue

KAP_PREFIX = t.SD + "/"


def known_type(name: Any) -> bool:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Z][A-Za-z]{1,63}", name):
        return False
    try:
        v._model(name)
    except (KeyError, ValueError, AttributeError, ImportError):
        return False
    return True


@cache
def sd_constraints() -> list[tuple[dict, dict, dict]]:
    """(StructureDefinition, element, constraint) for every constraint our StructureDefinitions declare."""
    out = []
    for sd in load_all().values():
        if sd.get("resourceType") != "StructureDefinition":
            continue
        for element in sd.get("differential", {}).get("element", []):
            for constraint in element.get("constraint", []) or []:
                out.append((sd, element, constraint))
    return out


@cache
def _compiled(expression: str) -> Any:
    return fhirpathpy.compile(expression, fhirpath_models["r4"])


def _descend(value: Any, path: str) -> typing.Iterator[tuple[Any, str]]:
    yield value, path
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, list):
                for i, element in enumerate(item):
                    yield from _descend(element, f"{path}.{key}[{i}]")
            else:
                yield from _descend(item, f"{path}.{key}")


@cache
def _reference_fields(model: type) -> dict[str, tuple[tuple[str, ...] | None, type | None]]:
    """Element name -> (allowed reference target types, child model), from the R4B model metadata."""
    children = v._fields(model)  # element name -> (child model, required codes)
    table = {}
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        targets = extra.get("enum_reference_types")
        alias = info.alias or name
        table[alias] = (tuple(targets) if targets else None, children[alias][0])
    return table


_TYPED_REFERENCE = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}(/_history/.+)?")


def _check_references(value: Any, model: type, path: str, issues: list[Issue]) -> None:
    if not isinstance(value, dict):
        return
    fields = _reference_fields(model)
    for key, item in value.items():
        spec = fields.get(key)
        if spec is None:
            continue
        targets, child = spec
        items = item if isinstance(item, list) else [item]
        for index, element in enumerate(items):
            if not isinstance(element, dict):
                continue
            where = f"{path}.{key}" + (f"[{index}]" if isinstance(item, list) else "")
            if targets and "Resource" not in targets:
                ref = element.get("reference")
                rtype = element.get("type")
                if isinstance(ref, str) and _TYPED_REFERENCE.fullmatch(ref):
                    rtype = ref.split("/")[0]
                if isinstance(rtype, str) and rtype not in targets:
                    issues.append(
                        Issue(
                            "error",
                            "structure",
                            f"{where}.reference" if "reference" in element else f"{where}.type",
                            f"a reference to {rtype} is not allowed here; allowed: {', '.join(targets)}",
                        )
                    )
            if "resourceType" in element and known_type(element["resourceType"]):
                _check_references(element, v._model(element["resourceType"]), where, issues)
            elif child is not None:
                _check_references(element, child, where, issues)


@cache
def _constraints_by_extension() -> dict[str, list[tuple[dict, dict]]]:
    out: dict[str, list[tuple[dict, dict]]] = {}
    for sd, _element, constraint in sd_constraints():
        if sd.get("type") == "Extension":
            out.setdefault(sd["url"], []).append((sd, constraint))
    return out


def _check_sd_constraints(resource: dict, root: str) -> list[Issue]:
    targets: list[tuple[dict, Any, str]] = []
    by_extension = _constraints_by_extension()
    if by_extension:
        # one walk for every extension constraint: the extensions present, by url
        for value, path in _descend(resource, root):
            if path != root and isinstance(value, dict) and value.get("url") in by_extension:
                targets += [(constraint, value, path) for _sd, constraint in by_extension[value["url"]]]
    profiles = set(resource.get("meta", {}).get("profile", []))
    for sd, element, constraint in sd_constraints():
        if sd.get("type") != "Extension" and sd["url"] in profiles and element["path"] == sd.get("type"):
            targets.append((constraint, resource, root))
    issues = []
    for constraint, value, path in targets:
        try:
            ok = _compiled(constraint["expression"])(value, {"resource": resource}) == [True]
        except Exception:  # noqa: BLE001 - an expression that cannot run on this content fails the constraint
            ok = False
        if not ok:
            issues.append(
                Issue(
                    constraint.get("severity", "error"),
                    "invariant",
                    path,
                    f"{constraint['key']}: {constraint.get('human', '')} (failed: {constraint['expression']})",
                )
            )
    return issues


def _rebase(issues: list[Issue], prefix: str, root: str) -> list[Issue]:
    out = []
    for issue in issues:
        expression = issue.expression
        if expression.startswith(prefix):
            expression = root + expression[len(prefix) :]
        expression = re.sub(r"^" + re.escape(root) + r"\.ofType\(\w+\)", root, expression)
        out.append(Issue(issue.severity, issue.code, expression, issue.diagnostics))
    return out


def validate(resource: Any, *, expected_type: str | None = None, profile: str | None = None) -> list[Issue]:
    if not isinstance(resource, dict):
        return [Issue("fatal", "structure", "Resource", "the body must be a JSON object (a FHIR resource)")]
    rtype = resource.get("resourceType")
    if not known_type(rtype):
        return [Issue("fatal", "structure", "resourceType", f"unknown resourceType {rtype!r}")]
    if expected_type and rtype != expected_type:
        return [Issue("error", "invalid", "resourceType", f"expected a {expected_type}, got {rtype}")]
    issues: list[Issue] = []
    if profile is not None:
        known = load_all()
        if profile not in known and not profile.startswith("http://hl7.org/fhir/us/core/StructureDefinition/"):
            issues.append(
                Issue("error", "not-supported", "Parameters.parameter.profile", f"unknown profile {profile!r}")
            )
    if rtype == "Bundle":
        return issues + _validate_bundle(resource, profile)
    kap = (profile or "").startswith(KAP_PREFIX) or any(
        str(p).startswith(KAP_PREFIX) for p in resource.get("meta", {}).get("profile", []) or []
    )
    wrapper = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource}],
    }
    layers = ["structure", "bindings", "invariants"] + (["profile"] if kap else [])
    issues += _layers(wrapper, layers, "Bundle.entry[0].resource", rtype)
    issues += _own_checks(resource, rtype)
    if kap and not any(i.severity in ("error", "fatal") for i in issues):
        issues += domain_checks_resource(resource)
    return _dedupe(issues)


def _layers(bundle: dict, layers: list[str], prefix: str, root: str) -> list[Issue]:
    found: list[Issue] = []
    sd_keys = {c["key"] for _, _, c in sd_constraints()}
    try:
        by_layer: dict[str, list[Issue]] | None = v.validate_layers(bundle, layers)  # one walk for all layers
    except Exception:  # noqa: BLE001 - broken content: run the layers one by one, so each reports what it can
        by_layer = None
    for layer in layers:
        try:
            got = by_layer[layer] if by_layer is not None else v.CHECKS[layer](bundle)
        except Exception as exc:  # noqa: BLE001 - a layer that cannot run on broken content reports, not crashes
            got = [Issue("error", "exception", root, f"the {layer} check could not run: {type(exc).__name__}")]
        if layer == "structure" and any(i.code == "structure" for i in got):
            found += _rebase(got, prefix, root)
            if any("resource type" in i.diagnostics or "needs a resourceType" in i.diagnostics for i in got):
                return found
            continue
        got = [i for i in got if not (i.code == "invariant" and i.diagnostics.split(":")[0] in sd_keys)]
        found += _rebase(got, prefix, root)
    return found


def _own_checks(resource: dict, root: str) -> list[Issue]:
    refs: list[Issue] = []
    _check_references(resource, v._model(resource["resourceType"]), root, refs)
    if resource.get("resourceType") == "QuestionnaireResponse":
        refs += _check_against_questionnaire(resource, root)
    return refs + _check_sd_constraints(resource, root)


# --- a QuestionnaireResponse against the kapfhir Questionnaire it names ---------------------------------------------

_ANSWER_KEY = {
    "boolean": "valueBoolean",
    "string": "valueString",
    "text": "valueString",
    "date": "valueDate",
    "integer": "valueInteger",
    "decimal": "valueDecimal",
    "choice": "valueCoding",
}


def _answers_by_link_id(items: list, found: dict[str, list[dict]]) -> dict[str, list[dict]]:
    for item in items or []:
        if isinstance(item, dict):
            found.setdefault(str(item.get("linkId")), []).extend(
                a for a in item.get("answer", []) or [] if isinstance(a, dict)
            )
            _answers_by_link_id(item.get("item", []), found)
    return found


def _enabled(question: dict, answers: dict[str, list[dict]]) -> bool:
    """enableWhen with the '=' operator (the only one kapfhir's Questionnaires use); several conditions: any."""
    conditions = question.get("enableWhen") or []
    if not conditions:
        return True
    for condition in conditions:
        expected = {k: w for k, w in condition.items() if k.startswith("answer")}
        for key, wanted in expected.items():
            value_key = "value" + key.removeprefix("answer")
            for answer in answers.get(condition.get("question"), []):
                got = answer.get(value_key)
                if isinstance(wanted, dict) and isinstance(got, dict):
                    if (got.get("system"), got.get("code")) == (wanted.get("system"), wanted.get("code")):
                        return True
                elif got == wanted:
                    return True
    return False


def _check_items(
    questions: list[dict], items: list, answers: dict[str, list[dict]], path: str, complete: bool, issues: list[Issue]
) -> None:
    by_link = {q["linkId"]: q for q in questions}
    seen: set[str] = set()
    for i, item in enumerate(items or []):
        where = f"{path}.item[{i}]"
        link_id = item.get("linkId") if isinstance(item, dict) else None
        question = by_link.get(link_id)
        if question is None:
            issues.append(
                Issue("error", "structure", f"{where}.linkId", f"no item {link_id!r} here in the Questionnaire")
            )
            continue
        seen.add(link_id)
        if question["type"] == "group":
            _check_items(question.get("item", []), item.get("item", []), answers, where, complete, issues)
            continue
        given = item.get("answer", []) or []
        if len(given) > 1 and not question.get("repeats"):
            issues.append(Issue("error", "structure", f"{where}.answer", f"item {link_id!r} takes one answer"))
        key = _ANSWER_KEY.get(question["type"])
        for j, answer in enumerate(given):
            if key is not None and key not in answer:
                issues.append(
                    Issue("error", "value", f"{where}.answer[{j}]", f"item {link_id!r} is {question['type']}: {key}")
                )
            elif key == "valueCoding" and question.get("answerOption"):
                allowed = {
                    (o["valueCoding"].get("system"), o["valueCoding"].get("code"))
                    for o in question["answerOption"]
                    if "valueCoding" in o
                }
                coding = answer[key]
                if (coding.get("system"), coding.get("code")) not in allowed:
                    issues.append(
                        Issue("error", "code-invalid", f"{where}.answer[{j}]", f"not an answer option of {link_id!r}")
                    )
        if given and not _enabled(question, answers):
            issues.append(Issue("error", "business-rule", f"{where}.answer", f"item {link_id!r} is not enabled"))
    if complete:
        for question in questions:
            if question.get("required") and question["linkId"] not in seen and _enabled(question, answers):
                issues.append(
                    Issue("error", "required", f"{path}.item", f"required item {question['linkId']!r} is not answered")
                )


def _check_against_questionnaire(resource: dict, root: str) -> list[Issue]:
    """Items, answer types, answer options, enableWhen and (when completed or amended) required items, against the
    kapfhir Questionnaire named by ``questionnaire``. A Questionnaire kapfhir does not publish is not checked."""
    canonical = str(resource.get("questionnaire", "")).split("|")[0]
    questionnaire = load_all().get(canonical)
    if questionnaire is None or questionnaire.get("resourceType") != "Questionnaire":
        return []
    items = resource.get("item", [])
    if not isinstance(items, list):
        return []
    issues: list[Issue] = []
    complete = resource.get("status") in ("completed", "amended")
    answers = _answers_by_link_id(items, {})
    _check_items(questionnaire.get("item", []), items, answers, root, complete, issues)
    return issues


def _validate_bundle(bundle: dict, profile: str | None) -> list[Issue]:
    entries = bundle.get("entry")
    issues: list[Issue] = []
    if entries is not None and not isinstance(entries, list):
        return [Issue("error", "structure", "Bundle.entry", "entry must be an array")]
    for i, entry in enumerate(entries or []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            issues.append(Issue("error", "required", f"Bundle.entry[{i}].resource", "every entry needs a resource"))
        elif not known_type(resource.get("resourceType")):
            issues.append(
                Issue(
                    "fatal",
                    "structure",
                    f"Bundle.entry[{i}].resource.resourceType",
                    f"unknown resourceType {resource.get('resourceType')!r}",
                )
            )
    if issues:
        return issues
    kap = (profile or "").startswith(KAP_PREFIX) or any(
        str(p).startswith(KAP_PREFIX)
        for e in entries or []
        for p in e["resource"].get("meta", {}).get("profile", []) or []
    )
    layers = ["structure", "bindings", "invariants"] + (["profile"] if kap else [])
    issues += _layers(bundle, layers, "Bundle", "Bundle")
    for i, entry in enumerate(entries or []):
        issues += _own_checks(entry["resource"], f"Bundle.entry[{i}].resource")
    if not any(x.severity in ("error", "fatal") for x in issues) and any(
        e["resource"]["resourceType"] == "EpisodeOfCare" for e in entries or []
    ):
        issues += domain_checks_bundle(bundle)
    return _dedupe(issues)


def _dedupe(issues: list[Issue]) -> list[Issue]:
    seen, out = set(), []
    for issue in issues:
        key = (issue.severity, issue.code, issue.expression, issue.diagnostics)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out


# --- domain rules -------------------------------------------------------------------------------------------------


def domain_checks_bundle(bundle: dict) -> list[Issue]:
    """The bundle mapped into the domain: a refusal names its element; each safety-rule deviation is a warning
    naming the implicated resources (what happened is stored; deviations are flagged, not refused)."""
    from mappings.bundle import from_bundle
    from service.config import safety_policy_from_env

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
    from service.domain import rules

    policy = safety_policy_from_env()
    index = _record_entries(bundle)
    issues = []
    for deviation in rules.evaluate(chart.episode, policy):
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


def _record_entries(bundle: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, entry in enumerate(bundle.get("entry", [])):
        for ident in (
            entry["resource"].get("identifier", []) if isinstance(entry["resource"].get("identifier"), list) else []
        ):
            value = ident.get("value")
            if value and value not in out:
                out[value] = f"Bundle.entry[{i}].resource"
    return out


def domain_checks_resource(resource: dict) -> list[Issue]:
    """A single resource claiming a kapfhir profile must map into the domain (reverse mapping)."""
    from mappings.resources import condition, patient

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
