"""What /fhir serves: resource types, their interactions and search parameters. The CapabilityStatement, the
router, the indexer and the tests all read this one table, so nothing is declared that is not served.

Search parameter names, types and paths follow the R4 SearchParameter definitions (vendored extract in
``mappings/r4_search_parameters.json``; a test checks every declaration against it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mappings.search_parameters import r4_definition, r4_definitions  # noqa: F401 - the R4 table, re-exported

HERE = Path(__file__).resolve().parent

# Interactions of every served type (FHIR R4 TypeRestfulInteraction codes).
READ_INTERACTIONS = ("read", "vread", "history-instance", "history-type", "search-type")


@dataclass(frozen=True)
class Param:
    code: str
    type: str  # token | reference | date | string | uri
    paths: tuple[str, ...] = ()  # dotted element paths below the resource; a choice element by its stem
    only_target: str | None = None  # reference parameters restricted to one target type (patient -> Patient)


@dataclass(frozen=True)
class TypeInfo:
    name: str
    source: str  # projection | conformance | audit
    params: dict[str, Param] = field(default_factory=dict)
    date_param: str | None = None


def _p(code: str, type_: str, *paths: str, only: str | None = None) -> Param:
    return Param(code, type_, paths, only)


IDENTIFIER = _p("identifier", "token", "identifier")


def _subject(type_name: str, element: str = "subject") -> list[Param]:
    return [_p("patient", "reference", element, only="Patient"), _p("subject", "reference", element)]


_DEFS: dict[str, tuple[str, list[Param], str | None]] = {
    "Patient": (
        "projection",
        [
            IDENTIFIER,
            _p("name", "string", "name"),
            _p("family", "string", "name.family"),
            _p("given", "string", "name.given"),
            _p("birthdate", "date", "birthDate"),
            _p("gender", "token", "gender"),
        ],
        "birthdate",
    ),
    "Practitioner": (
        "projection",
        [
            IDENTIFIER,
            _p("name", "string", "name"),
            _p("family", "string", "name.family"),
            _p("given", "string", "name.given"),
        ],
        None,
    ),
    "Organization": ("projection", [IDENTIFIER, _p("name", "string", "name")], None),
    "Condition": (
        "projection",
        [
            IDENTIFIER,
            *_subject("Condition"),
            _p("code", "token", "code"),
            _p("category", "token", "category"),
            _p("clinical-status", "token", "clinicalStatus"),
            _p("verification-status", "token", "verificationStatus"),
            _p("recorded-date", "date", "recordedDate"),
            _p("onset-date", "date", "onset"),
        ],
        "recorded-date",
    ),
    "EpisodeOfCare": (
        "projection",
        [
            IDENTIFIER,
            _p("patient", "reference", "patient", only="Patient"),
            _p("status", "token", "status"),
            _p("date", "date", "period"),
            _p("organization", "reference", "managingOrganization"),
            _p("condition", "reference", "diagnosis.condition"),
            _p("care-manager", "reference", "careManager"),
        ],
        "date",
    ),
    "CarePlan": (
        "projection",
        [
            IDENTIFIER,
            *_subject("CarePlan"),
            _p("category", "token", "category"),
            _p("status", "token", "status"),
            _p("intent", "token", "intent"),
            _p("date", "date", "period"),
            _p("condition", "reference", "addresses"),
        ],
        "date",
    ),
    "Encounter": (
        "projection",
        [
            IDENTIFIER,
            *_subject("Encounter"),
            _p("status", "token", "status"),
            _p("class", "token", "class"),
            _p("type", "token", "type"),
            _p("date", "date", "period"),
            _p("episode-of-care", "reference", "episodeOfCare"),
            _p("participant", "reference", "participant.individual"),
            _p("service-provider", "reference", "serviceProvider"),
        ],
        "date",
    ),
    "Procedure": (
        "projection",
        [
            IDENTIFIER,
            *_subject("Procedure"),
            _p("code", "token", "code"),
            _p("status", "token", "status"),
            _p("date", "date", "performed"),
            _p("encounter", "reference", "encounter"),
            _p("based-on", "reference", "basedOn"),
        ],
        "date",
    ),
    "Consent": (
        "projection",
        [
            IDENTIFIER,
            _p("patient", "reference", "patient", only="Patient"),
            _p("status", "token", "status"),
            _p("category", "token", "category"),
            _p("scope", "token", "scope"),
            _p("date", "date", "dateTime"),
            _p("period", "date", "provision.period"),
        ],
        "date",
    ),
    "MedicationRequest": (
        "projection",
        [
            IDENTIFIER,
            *_subject("MedicationRequest"),
            _p("status", "token", "status"),
            _p("intent", "token", "intent"),
            _p("authoredon", "date", "authoredOn"),
            _p("code", "token", "medicationCodeableConcept"),
            _p("requester", "reference", "requester"),
        ],
        "authoredon",
    ),
    "MedicationAdministration": (
        "projection",
        [
            IDENTIFIER,
            *_subject("MedicationAdministration"),
            _p("status", "token", "status"),
            _p("effective-time", "date", "effective"),
            _p("context", "reference", "context"),
            _p("request", "reference", "request"),
            _p("performer", "reference", "performer.actor"),
        ],
        "effective-time",
    ),
    "MedicationStatement": (
        "projection",
        [
            IDENTIFIER,
            *_subject("MedicationStatement"),
            _p("status", "token", "status"),
            _p("effective", "date", "effective"),
            _p("context", "reference", "context"),
            _p("code", "token", "medicationCodeableConcept"),
            _p("category", "token", "category"),
        ],
        "effective",
    ),
    "Observation": (
        "projection",
        [
            IDENTIFIER,
            *_subject("Observation"),
            _p("code", "token", "code"),
            _p("category", "token", "category"),
            _p("status", "token", "status"),
            _p("date", "date", "effective"),
            _p("encounter", "reference", "encounter"),
            _p("derived-from", "reference", "derivedFrom"),
            _p("component-code", "token", "component.code"),
            _p("performer", "reference", "performer"),
        ],
        "date",
    ),
    "QuestionnaireResponse": (
        "projection",
        [
            IDENTIFIER,
            *_subject("QuestionnaireResponse"),
            _p("status", "token", "status"),
            _p("authored", "date", "authored"),
            _p("encounter", "reference", "encounter"),
            _p("questionnaire", "reference", "questionnaire"),
        ],
        "authored",
    ),
    "AdverseEvent": (
        "projection",
        [
            _p("subject", "reference", "subject"),
            _p("actuality", "token", "actuality"),
            _p("date", "date", "date"),
            _p("event", "token", "event"),
            _p("seriousness", "token", "seriousness"),
            _p("severity", "token", "severity"),
            _p("substance", "reference", "suspectEntity.instance"),
        ],
        "date",
    ),
    "DetectedIssue": (
        "projection",
        [
            IDENTIFIER,
            _p("patient", "reference", "patient", only="Patient"),
            _p("code", "token", "code"),
            _p("identified", "date", "identified"),
            _p("implicated", "reference", "implicated"),
            _p("status", "token", "status"),
        ],
        "identified",
    ),
    "Flag": (
        "projection",
        [
            IDENTIFIER,
            *_subject("Flag"),
            _p("date", "date", "period"),
            _p("author", "reference", "author"),
        ],
        "date",
    ),
    "Provenance": (
        "projection",
        [
            _p("target", "reference", "target"),
            _p("patient", "reference", "target", only="Patient"),
            _p("recorded", "date", "recorded"),
            _p("agent", "reference", "agent.who"),
        ],
        "recorded",
    ),
    # The Spravato REMS Patient Monitoring Form of a session: its due date and whether (how) it was sent.
    "Task": (
        "projection",
        [
            IDENTIFIER,
            _p("patient", "reference", "for", only="Patient"),
            _p("subject", "reference", "for"),
            _p("status", "token", "status"),
            _p("business-status", "token", "businessStatus"),
            _p("code", "token", "code"),
            _p("focus", "reference", "focus"),
            _p("encounter", "reference", "encounter"),
            _p("owner", "reference", "owner"),
            _p("authored-on", "date", "authoredOn"),
            _p("modified", "date", "lastModified"),
            _p("period", "date", "executionPeriod"),
        ],
        "authored-on",
    ),
    "AuditEvent": (
        "audit",
        [
            _p("date", "date", "recorded"),
            _p("action", "token", "action"),
            _p("outcome", "token", "outcome"),
            _p("subtype", "token", "subtype"),
            _p("type", "token", "type"),
        ],
        "date",
    ),
}
_CONFORMANCE_PARAMS = [
    _p("url", "uri", "url"),
    _p("name", "string", "name"),
    _p("status", "token", "status"),
    _p("version", "token", "version"),
]
for _name in ("StructureDefinition", "CodeSystem", "ValueSet", "Questionnaire"):
    _DEFS[_name] = ("conformance", list(_CONFORMANCE_PARAMS), "date")
    _DEFS[_name][1].append(_p("date", "date", "date"))

COMMON = {"_id": _p("_id", "token"), "_lastUpdated": _p("_lastUpdated", "date")}

TYPES: dict[str, TypeInfo] = {
    name: TypeInfo(name, source, {**COMMON, **{p.code: p for p in params}}, date_param)
    for name, (source, params, date_param) in _DEFS.items()
}
PROJECTED_TYPES = tuple(n for n, t in TYPES.items() if t.source == "projection")


def includes(resource_type: str) -> list[str]:
    """``_include`` values a type supports: each of its reference parameters."""
    return [f"{resource_type}:{p.code}" for p in TYPES[resource_type].params.values() if p.type == "reference"]
