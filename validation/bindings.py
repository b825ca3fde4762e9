"""Layer 2, bindings: every ``code`` element with a required binding, against the R4 codes the R4B models ship
(``enum_values``, read by the typed walk of ``validation.typed``), plus the required CodeableConcept bindings we fill
(``CONCEPT_BINDINGS``, R4 value sets, V: S1). The base-specification layer (``validation.base``) checks the
required bindings of the R4 definitions on Coding and CodeableConcept elements."""

from __future__ import annotations

from mappings import terminology as t
from validation.issues import Issue

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


def concept_bindings(resource: dict, rtype: str, path: str, issues: list[Issue]) -> None:
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


def code_issue(element: str, enum: frozenset[str], where: str) -> Issue:
    """A ``code`` outside its required value set."""
    return Issue(
        "error", "code-invalid", where, f"{element!r} is not in the required value set: {', '.join(sorted(enum))}"
    )
