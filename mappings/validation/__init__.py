"""Fast checks of an outbound Bundle, as OperationOutcome issues (severity, code, FHIRPath expression, diagnostics).

Layers, in the order ``$validate`` applies them (``LAYERS``):
1. ``structure``: fhirkit-rs, a structural validator generated from the FHIR R4 4.0.1 specification (elements,
   cardinality, JSON datatypes, primitive formats, choice types; every issue with its path), plus the two checks it
   lacks, made by the typed walk: real calendar dates in date/dateTime/instant elements and the id syntax. It
   replaced a pass through the fhir.resources R4B models, which cost as much as parsing the bundle, accepted JSON
   of the wrong type (``"active": "yes"``) and checks 4.3.0 rather than the 4.0.1 we serve;
   tests/mappings/test_structure_layer.py shows it refuses everything that pass refused.
2. ``bindings``: every ``code`` element with a required binding, against the R4 codes the R4B models ship
   (``enum_values``), plus the required CodeableConcept bindings we fill (table below, R4 value sets, V: S1).
3. ``invariants``: R4 core invariants that apply to what we emit (``INVARIANTS``, FHIRPath as in the spec), checked
   by direct Python equivalents (``DIRECT``) on the resource types they apply to; per-1 and qty-3 on the Period and
   Quantity elements found by the typed walk. tests/mappings/test_validation.py proves each direct check agrees with
   the compiled fhirpathpy expression on passing and failing resources.
4. ``profile``: the kapfhir profile rules (identifier, security labels, claimed profiles, bundle conditions).

The typed part of structure, and bindings, invariants and profile (``FAST_LAYERS``) run in one pass over the
bundle: one walk of each resource typed by the R4B model metadata (built once per model and cached), no
fhir.resources object construction.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache

import fhirkit
import fhirpathpy
from fhirpathpy.models import models as fhirpath_models

from mappings import terminology as t
from mappings.resources.operation_outcome import validation_outcome

LAYERS = ("structure", "bindings", "invariants", "profile")


@dataclass(frozen=True)
class Issue:
    severity: str  # fatal | error | warning | information
    code: str  # OperationOutcome issue type: structure, code-invalid, invariant, business-rule, ...
    expression: str
    diagnostics: str

    def as_fhir(self) -> dict:
        return {
            "severity": self.severity,
            "code": self.code,
            "expression": [self.expression],
            "diagnostics": self.diagnostics,
        }


def operation_outcome(issues: Iterable[Issue]) -> dict:
    return validation_outcome(i.as_fhir() for i in issues)


# --- 1. structure ----------------------------------------------------------------------------------------------


def check_structure(bundle: dict) -> list[Issue]:
    """fhirkit's structural issues, then the calendar and id checks of the typed walk."""
    return validate_bundle(bundle, ("structure",))


def _fhirkit_issues(bundle: dict) -> list[Issue]:
    return [
        Issue("error" if i.severity == "error" else "warning", "structure", i.path, i.message)
        for i in fhirkit.validate(bundle)
    ]


def _entries(bundle: dict) -> list[dict]:
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return []
    return [
        e
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("resource"), dict) and _typed(e["resource"].get("resourceType"))
    ]


def _typed(resource_type: object) -> bool:
    """Whether the typed walk can type this resource (fhirkit reports a missing or unknown resourceType)."""
    if not isinstance(resource_type, str) or resource_type not in _FHIRKIT_TYPES:
        return False
    try:
        _model(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError):
        return False
    return True


_FHIRKIT_TYPES = frozenset(fhirkit.RESOURCE_TYPES)


_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_ID_CHARS = re.compile(r"[A-Za-z0-9\-.]+")
_CONTAINED_ID = re.compile(r"\.contained\[\d+\]\.id$")
_DATE_PART = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def _primitive_issue(kind: str, value: str, where: str) -> Issue | None:
    r"""What fhirkit does not check: ids against the id syntax (R4 §2.24.0.1 ``[A-Za-z0-9\-\.]{1,64}``) and that a
    date is on the calendar (fhirkit accepts 2024-02-30). The format itself is fhirkit's."""
    if kind == "id":
        if _ID.fullmatch(value):
            return None
        if _CONTAINED_ID.search(where) and _ID_CHARS.fullmatch(value):
            return None  # the reference validator checks a contained resource's id characters, not its length
        return Issue("error", "structure", where, f"{value!r} is not a valid id")
    match = _DATE_PART.match(value)
    if match is None:
        return None
    try:
        date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return Issue("error", "structure", where, f"{value!r} is not a real calendar date")
    return None


# --- 2. bindings ---------------------------------------------------------------------------------------------

# Required bindings on CodeableConcept elements (R4 value sets; V: S1 via reference §1.9, §1.10).
CONCEPT_BINDINGS: dict[tuple[str, str], tuple[str, frozenset[str]]] = {
    ("Condition", "clinicalStatus"): (
        t.CONDITION_CLINICAL,
        frozenset({"active", "recurrence", "relapse", "inactive", "remission", "resolved"}),
    ),
    ("Condition", "verificationStatus"): (
        t.CONDITION_VERIFICATION,
        frozenset({"unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error"}),
    ),
    ("AdverseEvent", "severity"): (t.AE_SEVERITY, frozenset({"mild", "moderate", "severe"})),
    ("AdverseEvent", "outcome"): (
        t.AE_OUTCOME,
        frozenset({"resolved", "recovering", "ongoing", "resolvedWithSequelae", "fatal", "unknown"}),
    ),
}


CONCEPT_BINDINGS_BY_TYPE: dict[str, list[tuple[str, tuple[str, frozenset[str]]]]] = {}
for (_type, _element), _binding in CONCEPT_BINDINGS.items():
    CONCEPT_BINDINGS_BY_TYPE.setdefault(_type, []).append((_element, _binding))


# fhir.resources lists a value set with child codes up to "+": the rest of the R4 codes (V: S1, reference §1.5,
# §1.11; questionnaire-item-type from the R4 definitions).
_OBSERVATION_STATUS_REST = frozenset({"corrected", "cancelled", "entered-in-error", "unknown"})
ENUM_SUPPLEMENT: dict[tuple[str, str], frozenset[str]] = {
    ("Observation", "status"): _OBSERVATION_STATUS_REST,
    ("DetectedIssue", "status"): _OBSERVATION_STATUS_REST,
    ("Encounter", "status"): frozenset({"entered-in-error", "unknown"}),
    ("EncounterStatusHistory", "status"): frozenset({"entered-in-error", "unknown"}),
    # R4 task-status (hl7.org/fhir/R4/valueset-task-status.html): the codes below "accepted"'s "+".
    ("Task", "status"): frozenset(
        {"rejected", "ready", "cancelled", "in-progress", "on-hold", "failed", "completed", "entered-in-error"}
    ),
    ("QuestionnaireItem", "type"): frozenset(
        {"time", "string", "text", "url", "choice", "open-choice", "attachment", "reference", "quantity"}
    ),
}


# Elements whose R4B enum_values are not the R4 value set: CapabilityStatement.format is bound to MimeType
# (BCP 13 mime types plus xml, json, ttl), which the model lists as its four placeholder codes.
ENUM_NOT_R4 = frozenset({("CapabilityStatement", "format"), ("CapabilityStatement", "patchFormat")})


def preload_models(resource_types: Iterable[str]) -> None:
    """Imports the R4B model classes (and the datatypes they use) of these resource types ahead of use."""
    for resource_type in resource_types:
        _typed_fields(_model(resource_type))


@cache
def _model(resource_type: str) -> type:
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(resource_type)


@cache
def _fields(model: type) -> dict[str, tuple[type | None, frozenset[str] | None]]:
    """Element name -> (child model, required codes) from the R4B model metadata."""
    table = {}
    for name, info in model.model_fields.items():
        alias = info.alias or name
        extra = info.json_schema_extra or {}
        enum = None
        if isinstance(extra, dict) and extra.get("enum_values") and (model.__name__, alias) not in ENUM_NOT_R4:
            enum = (frozenset(extra["enum_values"]) - {"+"}) | ENUM_SUPPLEMENT.get((model.__name__, alias), frozenset())
        child = None
        for arg in typing.get_args(info.annotation) or (info.annotation,):
            for inner in typing.get_args(arg) or (arg,):
                getter = getattr(inner, "get_model_klass", None)
                if getter is not None:
                    child = getter()
        table[alias] = (child, enum)
    return table


_PRIMITIVES_CHECKED = {"Date": "date", "DateTime": "dateTime", "Instant": "instant", "Id": "id"}


@cache
def _primitive_kinds(model: type) -> dict[str, str]:
    """Element name -> date, dateTime, instant or id, for the elements of those types (from the annotations)."""
    table = {}
    for name, info in model.model_fields.items():
        for arg in typing.get_args(info.annotation) or (info.annotation,):
            for meta in getattr(arg, "__metadata__", ()):
                kind = _PRIMITIVES_CHECKED.get(type(meta).__name__)
                if kind is not None:
                    table[info.alias or name] = kind
    return table


def _kind(child: type | None) -> str | None:
    """Which typed invariants apply to an element of this datatype: per-1 (Period) or qty-3 (Quantity and the
    datatypes derived from it: Age, Count, Distance, Duration)."""
    if child is None:
        return None
    if child.__name__ == "Period":
        return "Period"
    if any(base.__name__ == "Quantity" for base in child.__mro__):
        return "Quantity"
    return None


@cache
def _typed_fields(model: type) -> dict[str, tuple[type | None, frozenset[str] | None, str | None, str | None]]:
    primitives = _primitive_kinds(model)
    return {key: (child, enum, _kind(child), primitives.get(key)) for key, (child, enum) in _fields(model).items()}


@dataclass
class _Found:
    """Issues of one typed walk, kept per layer so that each layer reports in its own order."""

    bindings: list[Issue]
    invariants: list[Issue]
    primitives: list[Issue]
    check_bindings: bool
    check_invariants: bool
    check_primitives: bool = False


def _walk(value: dict, model: type, path: str, found: _Found) -> None:
    """One pass over an element tree typed by the R4B models: required code bindings, per-1 and qty-3, and the
    calendar and id checks of the structure layer."""
    fields = _typed_fields(model)
    for key, item in value.items():
        spec = fields.get(key)
        if spec is None:
            continue  # resourceType, _primitive extensions, unknown elements (the structure layer reports those)
        child, enum, kind, primitive = spec
        if primitive is not None and found.check_primitives:
            for index, element in enumerate(item) if isinstance(item, list) else ((0, item),):
                if isinstance(element, str):
                    where = f"{path}.{key}[{index}]" if isinstance(item, list) else f"{path}.{key}"
                    issue = _primitive_issue(primitive, element, where)
                    if issue is not None:
                        found.primitives.append(issue)
            continue
        many = isinstance(item, list)
        for index, element in enumerate(item) if many else ((0, item),):
            if isinstance(element, dict):
                where = f"{path}.{key}[{index}]" if many else f"{path}.{key}"
                if kind is not None and found.check_invariants:
                    _typed_invariant(kind, element, where, found.invariants)
                if "resourceType" in element:
                    _walk(element, _model(element["resourceType"]), where, found)
                elif child is not None:
                    _walk(element, child, where, found)
            elif enum is not None and found.check_bindings and isinstance(element, str) and element not in enum:
                where = f"{path}.{key}[{index}]" if many else f"{path}.{key}"
                found.bindings.append(
                    Issue(
                        "error",
                        "code-invalid",
                        where,
                        f"{element!r} is not in the required value set: {', '.join(sorted(enum))}",
                    )
                )


def _concept_bindings(resource: dict, rtype: str, path: str, issues: list[Issue]) -> None:
    for element, (system, codes) in CONCEPT_BINDINGS_BY_TYPE.get(rtype, ()):
        if element in resource:
            codings = [c for c in resource[element].get("coding", ()) if c.get("system") == system]
            if not codings or any(c.get("code") not in codes for c in codings):
                issues.append(
                    Issue(
                        "error",
                        "code-invalid",
                        f"{path}.{element}",
                        f"a {system} code from {', '.join(sorted(codes))} is required",
                    )
                )


def check_bindings(bundle: dict) -> list[Issue]:
    return _fast(bundle, ("bindings",))["bindings"]


# --- 3. invariants -------------------------------------------------------------------------------------------

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
# per-1 and qty-3 apply to elements of a datatype (Period, Quantity): they run in the typed walk (_typed_invariant).

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


def _typed_invariant(kind: str, element: dict, where: str, issues: list[Issue]) -> None:
    if kind == "Period":
        start, end = element.get("start"), element.get("end")
        if start and end and _later_than(start, end):
            issues.append(_invariant_issue("per-1", where))
    elif "code" in element and "system" not in element:
        issues.append(_invariant_issue("qty-3", where))


def _later_than(start: str, end: str) -> bool:
    """FHIRPath ``start > end`` on two dateTimes, as instants (offsets applied). Different precisions compare at the
    shared precision and are empty (no issue) when equal there. fhirpathpy 2.2.4 compares the text instead, which
    differs for different offsets (tests/mappings/test_validation.py)."""
    if ("T" in start) != ("T" in end) or (len(start) != len(end) and "T" not in start):
        shared = min(len(start.split("T")[0]), len(end.split("T")[0]))
        return start[:shared] > end[:shared]
    if "T" not in start:
        return start > end
    return datetime.fromisoformat(start.replace("Z", "+00:00")) > datetime.fromisoformat(end.replace("Z", "+00:00"))


def _resource_invariants(resource: dict, rtype: str, path: str, issues: list[Issue]) -> None:
    for key in _GENERIC:
        if not DIRECT[key](resource):
            issues.append(_invariant_issue(key, f"{path}.ofType({rtype})"))
    for key in _FOR_TYPE.get(rtype, ()):
        if not DIRECT[key](resource):
            issues.append(_invariant_issue(key, f"{path}.ofType({rtype})"))


def check_invariants(bundle: dict) -> list[Issue]:
    return _fast(bundle, ("invariants",))["invariants"]


def invariant_failures(resource: dict) -> set[str]:
    """Keys of the invariants one resource breaks, by the direct checks (for tests against fhirpathpy)."""
    found = _Found([], [], [], check_bindings=False, check_invariants=True)
    _resource_invariants(resource, resource["resourceType"], "R", found.invariants)
    _walk(resource, _model(resource["resourceType"]), "R", found)
    return {i.diagnostics.split(":")[0] for i in found.invariants}


# --- 4. kapfhir profile rules ------------------------------------------------------------------------------------

_REQUIRED_LABELS = tuple((label["system"], label["code"]) for label in (t.SECURITY_RESTRICTED, t.SECURITY_PSY))


def _profile_entry(i: int, entry: dict, seen_urls: set[str], seen_conditions: set[str], issues: list[Issue]) -> None:
    path = f"Bundle.entry[{i}]"
    resource = entry["resource"]
    rtype = resource["resourceType"]
    url = entry.get("fullUrl", "")
    if not url.startswith("urn:uuid:") or url in seen_urls:
        issues.append(Issue("error", "business-rule", f"{path}.fullUrl", f"{url!r}: expected a unique urn:uuid"))
    seen_urls.add(url)
    request = entry.get("request")
    if request is not None:
        condition = request.get("ifNoneExist") or request["url"]
        if condition in seen_conditions:
            issues.append(
                Issue("error", "business-rule", f"{path}.request", f"two entries share the condition {condition!r}")
            )
        seen_conditions.add(condition)
    meta = resource.get("meta", {})
    codes = {(c.get("system"), c.get("code")) for c in meta.get("security", ())}
    for system, code in _REQUIRED_LABELS:
        if (system, code) not in codes:
            issues.append(
                Issue("error", "security", f"{path}.resource.meta.security", f"the {code} security label is required")
            )
    if not any(p.startswith(t.SD + "/") for p in meta.get("profile", ())):
        issues.append(
            Issue("error", "business-rule", f"{path}.resource.meta.profile", "a kapfhir profile must be claimed")
        )
    if rtype != "Provenance":
        ident = resource.get("identifier")
        found = [ident] if isinstance(ident, dict) else (ident or [])
        if not any(x.get("system") and x.get("value") for x in found):
            issues.append(
                Issue(
                    "error",
                    "required",
                    f"{path}.resource.identifier",
                    "a business identifier with system and value is required",
                )
            )
    if rtype == "CarePlan" and "text" not in resource:
        issues.append(Issue("error", "required", f"{path}.resource.text", "US Core CarePlan needs a narrative"))


def check_profile(bundle: dict) -> list[Issue]:
    return _fast(bundle, ("profile",))["profile"]


# --- the fast layers in one pass -----------------------------------------------------------------------------------

FAST_LAYERS = ("bindings", "invariants", "profile")


def _fast(bundle: dict, layers: Iterable[str]) -> dict[str, list[Issue]]:
    """The typed part of structure, bindings, invariants and profile over one walk of the bundle, by layer."""
    wanted = set(layers)
    found = _Found(
        [],
        [],
        [],
        check_bindings="bindings" in wanted,
        check_invariants="invariants" in wanted,
        check_primitives="structure" in wanted,
    )
    profile: list[Issue] = []
    seen_urls: set[str] = set()
    seen_conditions: set[str] = set()
    typed = found.check_bindings or found.check_invariants or found.check_primitives
    for i, entry in enumerate(_entries(bundle)):
        resource = entry["resource"]
        rtype = resource["resourceType"]
        path = f"Bundle.entry[{i}].resource"
        if typed:
            _walk(resource, _model(rtype), path, found)
        if found.check_bindings:
            _concept_bindings(resource, rtype, path, found.bindings)
        if found.check_invariants:
            _resource_invariants(resource, rtype, f"Bundle.entry[{i}].resource", found.invariants)
        if "profile" in wanted:
            _profile_entry(i, entry, seen_urls, seen_conditions, profile)
    return {
        "structure": found.primitives,
        "bindings": found.bindings,
        "invariants": found.invariants,
        "profile": profile,
    }


CHECKS = {
    "structure": check_structure,
    "bindings": check_bindings,
    "invariants": check_invariants,
    "profile": check_profile,
}


def validate_layers(bundle: dict, layers: Iterable[str] = LAYERS) -> dict[str, list[Issue]]:
    """Issues of the layers asked for, by layer; the typed checks of every layer share one walk."""
    layers = tuple(layers)
    structural = _fhirkit_issues(bundle) if "structure" in layers else []
    by_layer = _fast(bundle, layers)
    by_layer["structure"] = structural + by_layer["structure"]
    return {layer: by_layer[layer] for layer in layers}


def validate_bundle(bundle: dict, layers: Iterable[str] = LAYERS) -> list[Issue]:
    """Issues of the layers asked for, layer by layer in the order given."""
    by_layer = validate_layers(bundle, layers)
    return [issue for issues in by_layer.values() for issue in issues]
