"""Fast checks of an outbound Bundle, as OperationOutcome issues (severity, code, FHIRPath expression, diagnostics).

Layers, in the order ``$validate`` applies them (``LAYERS``):
1. ``structure``: fhir.resources R4B models (elements, cardinality, datatypes, choice types).
2. ``bindings``: every ``code`` element with a required binding, against the R4 codes the R4B models ship
   (``enum_values``), plus the required CodeableConcept bindings we fill (table below, R4 value sets, V: S1).
3. ``invariants``: R4 core invariants that apply to what we emit, as compiled fhirpathpy expressions.
4. ``profile``: the kapfhir profile rules (identifier, security labels, claimed profiles, bundle conditions).
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import fhirpathpy
from fhirpathpy.models import models as fhirpath_models
from pydantic import ValidationError

from mappings import terminology as t

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
    found = [i.as_fhir() for i in issues]
    if not found:
        found = [{"severity": "information", "code": "informational", "diagnostics": "No issues found."}]
    return {"resourceType": "OperationOutcome", "issue": found}


# --- 1. structure ----------------------------------------------------------------------------------------------


def _pydantic_path(loc: tuple) -> str:
    path = "Bundle"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in ("root",):
            path += f".{part}"
    return path


def check_structure(bundle: dict) -> list[Issue]:
    from fhir.resources.R4B.bundle import Bundle

    try:
        Bundle.model_validate(bundle)
    except ValidationError as error:
        return [Issue("error", "structure", _pydantic_path(e["loc"]), e["msg"]) for e in error.errors()]
    except KeyError as error:  # fhir.resources raises KeyError for an unknown resourceType
        return [Issue("error", "structure", "Bundle.entry.resource.resourceType", f"unknown resource type {error}")]
    return []


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


# fhir.resources lists a value set with child codes up to "+": the rest of the R4 codes (V: S1, reference §1.5,
# §1.11; questionnaire-item-type from the R4 definitions).
_OBSERVATION_STATUS_REST = frozenset({"corrected", "cancelled", "entered-in-error", "unknown"})
ENUM_SUPPLEMENT: dict[tuple[str, str], frozenset[str]] = {
    ("Observation", "status"): _OBSERVATION_STATUS_REST,
    ("DetectedIssue", "status"): _OBSERVATION_STATUS_REST,
    ("Encounter", "status"): frozenset({"entered-in-error", "unknown"}),
    ("EncounterStatusHistory", "status"): frozenset({"entered-in-error", "unknown"}),
    ("QuestionnaireItem", "type"): frozenset(
        {"time", "string", "text", "url", "choice", "open-choice", "attachment", "reference", "quantity"}
    ),
}


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
        if isinstance(extra, dict) and extra.get("enum_values"):
            enum = (frozenset(extra["enum_values"]) - {"+"}) | ENUM_SUPPLEMENT.get((model.__name__, alias), frozenset())
        child = None
        for arg in typing.get_args(info.annotation) or (info.annotation,):
            for inner in typing.get_args(arg) or (arg,):
                getter = getattr(inner, "get_model_klass", None)
                if getter is not None:
                    child = getter()
        table[alias] = (child, enum)
    return table


def _walk(value: object, model: type, path: str, issues: list[Issue]) -> None:
    if not isinstance(value, dict):
        return
    fields = _fields(model)
    for key, item in value.items():
        if key == "resourceType" or key.startswith("_"):
            continue
        child, enum = fields.get(key, (None, None))
        items = item if isinstance(item, list) else [item]
        for index, element in enumerate(items):
            where = f"{path}.{key}" + (f"[{index}]" if isinstance(item, list) else "")
            if enum is not None and isinstance(element, str) and element not in enum:
                issues.append(
                    Issue(
                        "error",
                        "code-invalid",
                        where,
                        f"{element!r} is not in the required value set: {', '.join(sorted(enum))}",
                    )
                )
            if isinstance(element, dict):
                if "resourceType" in element:
                    _walk(element, _model(element["resourceType"]), where, issues)
                elif child is not None:
                    _walk(element, child, where, issues)


def check_bindings(bundle: dict) -> list[Issue]:
    issues: list[Issue] = []
    for i, entry in enumerate(bundle.get("entry", [])):
        resource = entry["resource"]
        rtype = resource["resourceType"]
        path = f"Bundle.entry[{i}].resource"
        _walk(resource, _model(rtype), path, issues)
        for (btype, element), (system, codes) in CONCEPT_BINDINGS.items():
            if btype == rtype and element in resource:
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
    return issues


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
    model = fhirpath_models["r4"]
    return tuple(
        (key, sev, types, fhirpathpy.compile(expr, model), expr, human) for key, sev, types, expr, human in INVARIANTS
    )


def check_invariants(bundle: dict) -> list[Issue]:
    issues = []
    invariants = compiled_invariants()
    for i, entry in enumerate(bundle.get("entry", [])):
        resource = entry["resource"]
        rtype = resource["resourceType"]
        for key, severity, types, fn, expr, human in invariants:
            if types is not None and rtype not in types:
                continue
            if fn(resource, {"resource": resource}) != [True]:
                issues.append(
                    Issue(
                        severity,
                        "invariant",
                        f"Bundle.entry[{i}].resource.ofType({rtype})",
                        f"{key}: {human} (failed: {expr})",
                    )
                )
    return issues


# --- 4. kapfhir profile rules ------------------------------------------------------------------------------------


def check_profile(bundle: dict) -> list[Issue]:
    issues = []
    seen_urls: set[str] = set()
    seen_conditions: set[str] = set()
    for i, entry in enumerate(bundle.get("entry", [])):
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
        for label in (t.SECURITY_RESTRICTED, t.SECURITY_PSY):
            if (label["system"], label["code"]) not in codes:
                issues.append(
                    Issue(
                        "error",
                        "security",
                        f"{path}.resource.meta.security",
                        f"the {label['code']} security label is required",
                    )
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
    return issues


CHECKS = {
    "structure": check_structure,
    "bindings": check_bindings,
    "invariants": check_invariants,
    "profile": check_profile,
}


def validate_bundle(bundle: dict, layers: Iterable[str] = LAYERS) -> list[Issue]:
    issues: list[Issue] = []
    for layer in layers:
        issues += CHECKS[layer](bundle)
    return issues
