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
from mappings.validation import Issue, definitions
from mappings.validation import base as vbase
from mappings.validation import policy as vpolicy
from mappings.validation import profiles as vprofiles

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
            if (
                path != root
                and isinstance(value, dict)
                and isinstance(value.get("url"), str)
                and value["url"] in by_extension
            ):
                targets += [(constraint, value, path) for _sd, constraint in by_extension[value["url"]]]
    meta = resource.get("meta")
    claimed = meta.get("profile") if isinstance(meta, dict) else None
    profiles = {p for p in claimed if isinstance(p, str)} if isinstance(claimed, list) else set()
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


def r4_type(name: Any) -> bool:
    """Whether ``name`` is an R4 4.0.1 resource type (every one, stored here or not)."""
    if not isinstance(name, str):
        return False
    if definitions.available():
        return name in definitions.load().resources
    return known_type(name)


def validate(
    resource: Any,
    *,
    expected_type: str | None = None,
    profile: str | None = None,
    kap_rules: bool = False,
) -> list[Issue]:
    """``$validate``: the issues the HL7 reference validator would report on ``resource`` (base specification,
    declared or asked-for profiles), then kapfhir's domain rules when a kapfhir profile is claimed or asked for, or
    ``kap_rules`` is set."""
    if not isinstance(resource, dict):
        return [Issue("fatal", "structure", "Resource", "the body must be a JSON object (a FHIR resource)")]
    rtype = resource.get("resourceType")
    if not r4_type(rtype):
        return [Issue("fatal", "structure", "resourceType", f"unknown resourceType {rtype!r}: not an R4 resource type")]
    if expected_type and rtype != expected_type:
        return [Issue("error", "invalid", "resourceType", f"expected a {expected_type}, got {rtype}")]
    if not definitions.available():
        note = Issue(
            "warning",
            "not-supported",
            rtype,
            "the FHIR R4 definitions are not installed (scripts/install-fhir-definitions.sh): only structure, "
            "required bindings and a few invariants were checked",
        )
        return [*_legacy_validate(resource, rtype, profile), note]
    kap_profiles = _kap_profiles()
    meta = resource.get("meta")
    declared = meta.get("profile") if isinstance(meta, dict) else None
    claims = [
        vprofiles.classify(p, rtype, kap_profiles, asked=False)
        for p in (declared if isinstance(declared, list) else [])
        if isinstance(p, str)
    ]
    if profile:
        claims.append(vprofiles.classify(profile, rtype, kap_profiles, asked=True))
    kap = kap_rules or any(c.kind == "kapfhir" for c in claims) or (rtype == "Bundle" and _bundle_claims_kap(resource))
    issues: list[Issue] = []
    layers = ["structure", "bindings"] + (["profile"] if kap and rtype != "Bundle" else [])
    if rtype == "Bundle":
        issues += _layers(resource, layers + (["profile"] if kap else []), "Bundle", "Bundle")
    else:
        wrapper = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource}],
        }
        issues += _layers(wrapper, layers, "Bundle.entry[0].resource", rtype)
    if any(i.severity == "fatal" for i in issues):
        return _dedupe(issues)
    unchecked: set[str] = set()

    def base_layer() -> list[Issue]:
        found, missed = vbase.check(resource, rtype)
        unchecked.update(missed)
        return [_issue(i) for i in found]

    def profile_layer() -> list[Issue]:
        out = _profile_issues(resource, rtype, rtype, claims)
        entries = resource.get("entry") if rtype == "Bundle" else None
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                out += _profile_issues(
                    entry["resource"], entry["resource"].get("resourceType"), f"Bundle.entry[{i}].resource", None
                )
        return out

    issues += _guarded("base specification", rtype, base_layer)
    issues += _guarded("profile", rtype, profile_layer)
    issues += _guarded("extension constraint", rtype, lambda: _extension_constraints(resource, rtype))
    if kap:
        issues += _guarded("kapfhir invariant", rtype, lambda: _kap_invariants(resource, rtype))
    if unchecked:
        issues.append(
            Issue(
                "information",
                "informational",
                rtype,
                "Invariants not evaluated (FHIRPath functions the engine "
                f"lacks, such as resolve() or conformsTo()): {', '.join(sorted(unchecked))}",
            )
        )
    if _has_external_codes(resource):
        issues.append(Issue("information", "informational", rtype, vbase.TERMINOLOGY_NOTE))
    if kap and not any(i.severity in ("error", "fatal") for i in issues):
        if rtype == "Bundle":
            if any(
                isinstance(e, dict)
                and isinstance(e.get("resource"), dict)
                and e["resource"].get("resourceType") == "EpisodeOfCare"
                for e in resource.get("entry") or []
            ):
                issues += domain_checks_bundle(resource)
        else:
            issues += domain_checks_resource(resource)
    return _dedupe(issues)


def _guarded(layer: str, root: str, run: typing.Callable[[], list[Issue]]) -> list[Issue]:
    """A layer's issues; content too broken for it (fhirkit has reported why) gives a warning, never a 500."""
    try:
        return run()
    except (TypeError, AttributeError, KeyError, ValueError, IndexError, RecursionError) as exc:
        return [
            Issue(
                "warning", "exception", root, f"the {layer} checks could not run on this content: {type(exc).__name__}"
            )
        ]


def _issue(found: Any) -> Issue:
    return Issue(found.severity, found.code, found.expression, found.diagnostics)


@cache
def _kap_profiles() -> frozenset[str]:
    return frozenset(
        url
        for url, sd in load_all().items()
        if sd.get("resourceType") == "StructureDefinition" and sd.get("type") != "Extension"
    )


def _bundle_claims_kap(bundle: dict) -> bool:
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        meta = resource.get("meta") if isinstance(resource, dict) else None
        if isinstance(meta, dict) and any(str(p).startswith(KAP_PREFIX) for p in meta.get("profile") or []):
            return True
    return False


def _profile_issues(resource: dict, rtype: Any, where: str, claims: list | None) -> list[Issue]:
    """Declared (and asked-for) profiles of one resource, and the vital-signs profile R4 requires."""
    if not isinstance(rtype, str):
        return []
    if claims is None:
        meta = resource.get("meta")
        claims = [
            vprofiles.classify(p, rtype, _kap_profiles(), asked=False)
            for p in (meta.get("profile") or [] if isinstance(meta, dict) else [])
            if isinstance(p, str)
        ]
    issues: list[Issue] = []
    core = {c.url for c in claims if c.kind == "core"}
    vital = vprofiles.required_vital_profile(resource)
    if vital:
        core.add(vital)
    for url in sorted(core):
        issues += [_issue(i) for i in vprofiles.check_core_profile(resource, url, where)]
    for claim in claims:
        if claim.kind == "us-core":
            issues += [_issue(i) for i in vprofiles.check_us_core(resource, claim.url, where)]
        elif claim.kind in ("unknown", "wrong-type"):
            at = "Parameters.parameter.profile" if claim.asked else f"{where}.meta.profile"
            issues.append(_issue(vprofiles.unknown_issue(claim, at)))
    return issues


def _extension_constraints(resource: dict, rtype: str) -> list[Issue]:
    """Constraints our extension definitions declare (they apply wherever the extension is used), and those of a
    claimed kapfhir profile."""
    if rtype != "Bundle":
        return _check_sd_constraints(resource, rtype)
    issues = []
    for i, entry in enumerate(resource.get("entry") or []):
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
            issues += _check_sd_constraints(entry["resource"], f"Bundle.entry[{i}].resource")
    return issues


# kapfhir-profile invariants of the invariants layer that the base specification does not define.
_KAP_ONLY_INVARIANTS = ("us-core-8", "kap-off-label-1")


def _kap_invariants(resource: dict, rtype: str) -> list[Issue]:
    bundle = (
        resource
        if rtype == "Bundle"
        else {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"fullUrl": "urn:uuid:x", "resource": resource}],
        }
    )
    prefix, root = ("Bundle", "Bundle") if rtype == "Bundle" else ("Bundle.entry[0].resource", rtype)
    sd_keys = {c["key"] for _, _, c in sd_constraints()}
    found = [
        i
        for i in v.check_invariants(bundle)
        if i.diagnostics.split(":")[0] in _KAP_ONLY_INVARIANTS and i.diagnostics.split(":")[0] not in sd_keys
    ]
    return _rebase(found, prefix, root)


def _has_external_codes(resource: dict) -> bool:
    """Whether the resource carries codes of code systems outside FHIR's own (their terminology is not checked)."""
    stack: list[Any] = [resource]
    budget = 100_000
    while stack and budget:
        budget -= 1
        value = stack.pop()
        if isinstance(value, dict):
            system = value.get("system")
            if (
                isinstance(system, str)
                and "code" in value
                and not system.startswith(("http://hl7.org/fhir", "http://terminology.hl7.org", "urn:ietf:bcp:"))
            ):
                return True
            stack.extend(x for x in value.values() if isinstance(x, dict | list))
        elif isinstance(value, list):
            stack.extend(x for x in value if isinstance(x, dict | list))
    return False


def _legacy_validate(resource: dict, rtype: str, profile: str | None) -> list[Issue]:
    """Without the R4 definitions: the layers of mappings.validation alone (structure, bindings, invariants)."""
    if rtype == "Bundle":
        return _validate_bundle(resource, profile)
    wrapper = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource}],
    }
    return _dedupe(
        _layers(wrapper, ["structure", "bindings", "invariants"], "Bundle.entry[0].resource", rtype)
        + _own_checks(resource, rtype)
    )


def validate_for_write(bundle: dict) -> list[Issue]:
    """What the write path (POST /fhir) checks on the entries of a transaction, collected as a ``collection``
    Bundle: the layers and domain rules of ``_validate_bundle``, then the extension write policy
    (``mappings.validation.policy``): an unknown modifierExtension refuses the write, an unknown extension never
    does."""
    issues = _validate_bundle(bundle, None)
    return issues + [_issue(i) for i in vpolicy.write_issues(bundle)]


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
    found = _layers(bundle, layers, "Bundle", "Bundle")
    if kap and not (profile or "").startswith(KAP_PREFIX):
        # kapfhir's profile rules bind the entries that claim a kapfhir profile, not their neighbours (an EHR's
        # Practitioner beside one of our MedicationAdministrations)
        claiming = {
            i
            for i, e in enumerate(entries or [])
            if any(str(p).startswith(KAP_PREFIX) for p in e["resource"].get("meta", {}).get("profile", []) or [])
        }
        profile_only = {(i.code, i.expression, i.diagnostics) for i in _layers(bundle, ["profile"], "Bundle", "Bundle")}
        found = [
            i
            for i in found
            if (i.code, i.expression, i.diagnostics) not in profile_only or _entry_index(i.expression) in claiming
        ]
    issues += found
    for i, entry in enumerate(entries or []):
        issues += _own_checks(entry["resource"], f"Bundle.entry[{i}].resource")
    if not any(x.severity in ("error", "fatal") for x in issues) and any(
        e["resource"]["resourceType"] == "EpisodeOfCare" for e in entries or []
    ):
        issues += domain_checks_bundle(bundle)
    return _dedupe(issues)


def _entry_index(expression: str | None) -> int | None:
    m = re.match(r"Bundle\.entry\[(\d+)\]", expression or "")
    return int(m.group(1)) if m else None


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
