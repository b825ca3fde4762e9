"""MeasureReport: the result of ``$evaluate-measure`` (a summary for the clinic, or individual for one patient).

References use the logical ids of the /fhir projection (uuid5 of the mapping's fullUrls), so an individual report
points at the Patient, EpisodeOfCare and score Observations served under /fhir.
"""

from __future__ import annotations

from datetime import date, datetime

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import EPISODE, ORGANIZATION, OUTCOME_SCORE, PATIENT, full_url_of
from mappings.resources.measure import canonical
from service.domain.measures import MeasureResult
from service.domain.model import Clinic


def fhir_id(clinic: Clinic, resource_type: str, kind: str, value: str) -> str:
    """The /fhir logical id of a projected resource."""
    return full_url_of(clinic.identifier_system.rstrip("/"), resource_type, kind, value).removeprefix("urn:uuid:")


def patient_fhir_id(clinic: Clinic, patient_id: str) -> str:
    return fhir_id(clinic, "Patient", PATIENT, patient_id)


def to_measure_report(
    result: MeasureResult,
    clinic: Clinic,
    *,
    generated_at: datetime,
    patient_id: str | None = None,
) -> dict:
    """A summary report, or with ``patient_id`` an individual one (the result is then that patient's episodes)."""
    definition = result.definition
    groups = []
    for group in definition.groups:
        counts = result.population(group)
        entry: dict = {
            "id": str(group),
            "code": {"text": str(group)},
            "population": [
                {"code": {"coding": [t.MEASURE_POPULATIONS[code]]}, "count": count}
                for code, count in (
                    ("initial-population", counts.initial_population),
                    ("denominator", counts.denominator),
                    ("denominator-exclusion", counts.denominator_exclusion),
                    ("numerator", counts.numerator),
                )
            ],
        }
        if counts.score is not None:
            entry["measureScore"] = {"value": counts.score}
        groups.append(entry)
    report: dict = {
        "resourceType": "MeasureReport",
        "meta": {"security": [t.SECURITY_RESTRICTED, t.SECURITY_PSY]},
        "status": "complete",
        "type": "individual" if patient_id else "summary",
        "measure": f"{canonical(definition)}|{t.CONFORMANCE_VERSION}",
        "date": dt.instant(generated_at),
        "reporter": {
            "reference": f"Organization/{fhir_id(clinic, 'Organization', ORGANIZATION, clinic.id)}",
            "display": clinic.name,
        },
        "period": {"start": _day(result.period_start), "end": _day(result.period_end)},
        "improvementNotation": {"coding": [t.MEASURE_IMPROVEMENT_INCREASE]},
        "group": groups,
    }
    if patient_id:
        report["subject"] = {"reference": f"Patient/{patient_fhir_id(clinic, patient_id)}"}
        evaluated = []
        for outcome in result.outcomes:
            evaluated.append(f"EpisodeOfCare/{fhir_id(clinic, 'EpisodeOfCare', EPISODE, outcome.episode_id)}")
            for point in (outcome.index, outcome.follow_up):
                if point is not None:
                    value = f"{point.measure_id}.total"
                    evaluated.append(f"Observation/{fhir_id(clinic, 'Observation', OUTCOME_SCORE, value)}")
        if evaluated:
            report["evaluatedResource"] = [{"reference": r} for r in dict.fromkeys(evaluated)]
    return report


def _day(value: date) -> str:
    return value.isoformat()
