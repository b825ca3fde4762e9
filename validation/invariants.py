"""Layer 3, invariants: the R4 core invariants that apply to what we emit (``INVARIANTS``, FHIRPath as in the spec),
checked by direct Python equivalents (``DIRECT``) on the resource types they apply to; per-1 and qty-3 on the Period
and Quantity elements the typed walk (``validation.typed``) finds. tests/mappings/test_validation.py proves each
direct check agrees with the compiled fhirpathpy expression on passing and failing resources. The
base-specification layer (``validation.base``) evaluates every other constraint of the R4 definitions (FHIRPath)."""

from __future__ import annotations

import typing
from datetime import datetime
from functools import cache

import fhirpathpy
from fhirpathpy.models import models as fhirpath_models

from mappings import terminology as t
from validation.issues import Issue

# key, severity, resource types (None = every resource), FHIRPath, human text. R4 core (V: S1), rewritten where
# the original needs functions fhirpathpy lacks; the meaning is the same.
INVARIANTS: tuple[tuple[str, str, frozenset[str] | None, str, str], ...] = (
    (
        "dom-2",
        "error",
        None,
        "contained.contained.empty()",
        "If the resource is contained in another resource, it SHALL NOT contain nested Resources",
    ),
    (
        "dom-3",
        "error",
        None,
        "contained.all(%resource.descendants().reference contains ('#' + id))",
        "A contained resource SHALL be referred to from elsewhere in the resource",
    ),
    (
        "dom-4",
        "error",
        None,
        "contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()",
        "A contained resource SHALL NOT have a meta.versionId or a meta.lastUpdated",
    ),
    ("dom-5", "error", None, "contained.meta.security.empty()", "A contained resource SHALL NOT have a security label"),
    (
        "per-1",
        "error",
        None,
        "descendants().ofType(Period).where(start.exists() and end.exists() and start > end).empty()",
        "If present, start SHALL have a lower value than end",
    ),
    (
        "qty-3",
        "error",
        None,
        "descendants().ofType(Quantity).where(code.exists() and system.empty()).empty()",
        "If a code for the unit is present, the system SHALL also be present",
    ),
    (
        "obs-6",
        "error",
        frozenset({"Observation"}),
        "dataAbsentReason.empty() or value.empty()",
        "dataAbsentReason SHALL only be present if Observation.value[x] is not present",
    ),
    (
        "obs-7",
        "error",
        frozenset({"Observation"}),
        "value.empty() or component.code.where(coding.intersect(%resource.code.coding).exists()).empty()",
        "If Observation.code is the same as an Observation.component.code then the value element associated with "
        "the code SHALL NOT be present",
    ),
    (
        "vs-2",
        "error",
        frozenset({"Observation"}),
        "category.coding.where(code = 'vital-signs').empty() or component.exists() or hasMember.exists() "
        "or dataAbsentReason.exists() or value.exists()",
        "If there is no component or hasMember element then either a value[x] or a data absent reason must be present",
    ),
    (
        "vs-3",
        "error",
        frozenset({"Observation"}),
        "category.coding.where(code = 'vital-signs').empty() "
        "or component.all(dataAbsentReason.exists() or value.exists())",
        "If there is no a value a data absent reason must be present",
    ),
    (
        "ppc-1",
        "error",
        frozenset({"Consent"}),
        "policy.exists() or policyRule.exists()",
        "Either a Policy or PolicyRule",
    ),
    (
        "ppc-5",
        "error",
        frozenset({"Consent"}),
        "patient.exists() or scope.coding.where(system = 'http://terminology.hl7.org/CodeSystem/consentscope' "
        "and code = 'treatment').empty()",
        "IF Scope=treatment, there must be a patient",
    ),
    (
        "mad-1",
        "error",
        frozenset({"MedicationAdministration"}),
        "dosage.empty() or dosage.dose.exists() or dosage.rate.exists()",
        "SHALL have at least one of dosage.dose or dosage.rate[x]",
    ),
    (
        "con-3",
        "warning",
        frozenset({"Condition"}),
        "clinicalStatus.exists() or verificationStatus.coding.where(code = 'entered-in-error').exists() "
        "or category.coding.where(code = 'problem-list-item').empty()",
        "Condition.clinicalStatus SHALL be present if verificationStatus is not entered-in-error and category is "
        "problem-list-item",
    ),
    (
        "con-5",
        "error",
        frozenset({"Condition"}),
        "verificationStatus.coding.where(code = 'entered-in-error').empty() or clinicalStatus.empty()",
        "Condition.clinicalStatus SHALL NOT be present if verification Status is entered-in-error",
    ),
    (
        "cpl-3",
        "error",
        frozenset({"CarePlan"}),
        "activity.all(detail.empty() or reference.empty())",
        "Provide a reference or detail, not both",
    ),
    (
        "us-core-8",
        "error",
        frozenset({"Patient"}),
        "name.all(family.exists() or given.exists())",
        "Patient.name.given or Patient.name.family or both SHALL be present",
    ),
    (
        "kap-off-label-1",
        "warning",
        frozenset({"MedicationRequest"}),
        f"extension.where(url = '{t.EXT_OFF_LABEL}').all(extension.where(url = 'isOffLabelUse' and value = true)"
        ".empty() or extension.where(url = 'reason').exists())",
        "An off-label order should say why (the BE off-label extension makes it an invariant)",
    ),
)


@cache
def compiled_invariants() -> tuple[tuple[str, str, frozenset[str] | None, typing.Callable, str, str], ...]:
    """The INVARIANTS compiled with fhirpathpy: the reference the direct checks below are tested against."""
    model = fhirpath_models["r4"]
    return tuple(
        (key, sev, types, fhirpathpy.compile(expr, model), expr, human) for key, sev, types, expr, human in INVARIANTS
    )


# Direct checks, one per invariant of INVARIANTS, each equivalent to its FHIRPath (tests/mappings/test_validation.py
# checks both agree on passing and failing resources). FHIRPath `exists()` is "present and not empty" here.
# per-1 and qty-3 apply to elements of a datatype (Period, Quantity): they run in the typed walk (typed_invariant).

_OBSERVATION_VALUES = (
    "valueQuantity",
    "valueCodeableConcept",
    "valueString",
    "valueBoolean",
    "valueInteger",
    "valueRange",
    "valueRatio",
    "valueSampledData",
    "valueTime",
    "valueDateTime",
    "valuePeriod",
)
_TYPED_INVARIANTS = ("per-1", "qty-3")


def _has(element: dict, key: str) -> bool:
    value = element.get(key)
    return value is not None and value != [] and value != {}


def _list(element: dict, key: str) -> list:
    value = element.get(key)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _has_value(element: dict) -> bool:
    return any(_has(element, key) for key in _OBSERVATION_VALUES)


def _codes(concepts: list, code: str, system: str | None = None) -> bool:
    """Whether any coding of the concepts has this code (and system)."""
    return any(
        c.get("code") == code and (system is None or c.get("system") == system)
        for concept in concepts
        for c in concept.get("coding", ())
    )


def _references(value: object, found: set[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                found.add(item)
            elif isinstance(item, dict | list):
                _references(item, found)
    elif isinstance(value, list):
        for item in value:
            _references(item, found)


def _dom_3(resource: dict) -> bool:
    contained = _list(resource, "contained")
    if not contained:
        return True
    found: set[str] = set()
    _references(resource, found)
    return all(("#" + c["id"]) in found if c.get("id") else False for c in contained)


def _obs_7(resource: dict) -> bool:
    if not _has_value(resource):
        return True
    own = resource.get("code", {}).get("coding", [])
    return not any(c in own for component in _list(resource, "component") for c in component["code"].get("coding", ()))


def _vital(resource: dict) -> bool:
    return _codes(_list(resource, "category"), "vital-signs")


def _off_label(resource: dict) -> bool:
    for ext in _list(resource, "extension"):
        if ext.get("url") == t.EXT_OFF_LABEL:
            parts = _list(ext, "extension")
            off = any(p.get("url") == "isOffLabelUse" and p.get("valueBoolean") is True for p in parts)
            if off and not any(p.get("url") == "reason" for p in parts):
                return False
    return True


def _eie(resource: dict) -> bool:
    return _codes(_list(resource, "verificationStatus"), "entered-in-error")


DIRECT: dict[str, typing.Callable[[dict], bool]] = {
    "dom-2": lambda r: not any(_has(c, "contained") for c in _list(r, "contained")),
    "dom-3": _dom_3,
    "dom-4": lambda r: (
        not any(
            _has(c.get("meta", {}), "versionId") or _has(c.get("meta", {}), "lastUpdated")
            for c in _list(r, "contained")
        )
    ),
    "dom-5": lambda r: not any(_has(c.get("meta", {}), "security") for c in _list(r, "contained")),
    "obs-6": lambda r: not (_has(r, "dataAbsentReason") and _has_value(r)),
    "obs-7": _obs_7,
    "vs-2": lambda r: (
        not _vital(r) or _has(r, "component") or _has(r, "hasMember") or _has(r, "dataAbsentReason") or _has_value(r)
    ),
    "vs-3": lambda r: not _vital(r) or all(_has(c, "dataAbsentReason") or _has_value(c) for c in _list(r, "component")),
    "ppc-1": lambda r: _has(r, "policy") or _has(r, "policyRule"),
    "ppc-5": lambda r: _has(r, "patient") or not _codes(_list(r, "scope"), "treatment", t.CONSENT_SCOPE),
    "mad-1": lambda r: (
        not _has(r, "dosage")
        or _has(r["dosage"], "dose")
        or _has(r["dosage"], "rateRatio")
        or _has(r["dosage"], "rateQuantity")
    ),
    "con-3": lambda r: _has(r, "clinicalStatus") or _eie(r) or not _codes(_list(r, "category"), "problem-list-item"),
    "con-5": lambda r: not _eie(r) or not _has(r, "clinicalStatus"),
    "cpl-3": lambda r: all(not _has(a, "detail") or not _has(a, "reference") for a in _list(r, "activity")),
    "us-core-8": lambda r: all(_has(n, "family") or _has(n, "given") for n in _list(r, "name")),
    "kap-off-label-1": _off_label,
}
_BY_KEY = {key: (severity, expr, human) for key, severity, _, expr, human in INVARIANTS}
_GENERIC = tuple(key for key, _, types, _, _ in INVARIANTS if types is None and key not in _TYPED_INVARIANTS)
_FOR_TYPE: dict[str, tuple[str, ...]] = {}
for _key, _, _types, _, _ in INVARIANTS:
    for _type in _types or ():
        _FOR_TYPE[_type] = (*_FOR_TYPE.get(_type, ()), _key)


def _invariant_issue(key: str, expression: str) -> Issue:
    severity, expr, human = _BY_KEY[key]
    return Issue(severity, "invariant", expression, f"{key}: {human} (failed: {expr})")


def typed_invariant(kind: str, element: dict, where: str, issues: list[Issue]) -> None:
    if kind == "Period":
        start, end = element.get("start"), element.get("end")
        if start and end and later_than(start, end):
            issues.append(_invariant_issue("per-1", where))
    elif "code" in element and "system" not in element:
        issues.append(_invariant_issue("qty-3", where))


def later_than(start: str, end: str) -> bool:
    """FHIRPath ``start > end`` on two dateTimes, as instants (offsets applied). Different precisions compare at the
    shared precision and are empty (no issue) when equal there. fhirpathpy 2.2.4 compares the text instead, which
    differs for different offsets (tests/mappings/test_validation.py)."""
    if ("T" in start) != ("T" in end) or (len(start) != len(end) and "T" not in start):
        shared = min(len(start.split("T")[0]), len(end.split("T")[0]))
        return start[:shared] > end[:shared]
    if "T" not in start:
        return start > end
    return datetime.fromisoformat(start.replace("Z", "+00:00")) > datetime.fromisoformat(end.replace("Z", "+00:00"))


def resource_invariants(resource: dict, rtype: str, path: str, issues: list[Issue]) -> None:
    for key in _GENERIC:
        if not DIRECT[key](resource):
            issues.append(_invariant_issue(key, f"{path}.ofType({rtype})"))
    for key in _FOR_TYPE.get(rtype, ()):
        if not DIRECT[key](resource):
            issues.append(_invariant_issue(key, f"{path}.ofType({rtype})"))
