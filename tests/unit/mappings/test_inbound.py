"""Inbound resources from an EHR with the same codes: mapped into the domain, or refused naming the element."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from mappings.resources import condition, medication_administration, observation, patient, questionnaire_response
from mappings.resources._common import MappingRefusedError, ReverseContext
from service.domain.vocabulary import AdministrativeGender, IndicationKind, Instrument, Medication, Route

EHR = ReverseContext(base="https://ehr.example.org/not-kapfhir")


def example(us_core: Path, name: str) -> dict:
    return json.loads((us_core / "examples" / name).read_text())


def test_us_core_patient_example_is_accepted_unchanged(us_core: Path) -> None:
    mapped = patient.from_patient(EHR, example(us_core, "patient-example.json"))
    assert (mapped.mrn.system, mapped.mrn.value) == ("http://hospital.smarthealthit.org", "1032702")
    assert (mapped.birth_date, mapped.gender) == (date(1987, 2, 20), AdministrativeGender.FEMALE)
    assert mapped.name.family


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("heart-rate.json", "heart_rate_per_min", 44),
        ("respiratory-rate.json", "respiratory_rate_per_min", 26),
    ],
)
def test_us_core_vital_sign_examples_are_accepted_unchanged(us_core: Path, name: str, field: str, value: float) -> None:
    assert observation.reading_values(example(us_core, name)) == {field: value}


def test_us_core_blood_pressure_example_is_accepted_unchanged(us_core: Path) -> None:
    assert set(observation.reading_values(example(us_core, "blood-pressure.json"))) == {
        "systolic_mmhg",
        "diastolic_mmhg",
    }


def test_us_core_body_weight_example_is_accepted_unchanged(us_core: Path) -> None:
    weight = observation.from_body_weight(EHR, example(us_core, "weight.json"))
    assert weight.weight_kg == 20.09414


def test_us_core_phq9_questionnaire_response_is_accepted_unchanged(us_core: Path) -> None:
    measure = questionnaire_response.from_questionnaire_response(
        EHR, example(us_core, "QuestionnaireResponse-phq-9-example.json")
    )
    assert measure.instrument is Instrument.PHQ9
    assert measure.items == [2, 2, 2, 2, 1, 1, 2, 0, 0]
    assert measure.difficulty == 1


@pytest.mark.parametrize(
    ("name", "snomed"),
    [
        ("condition-encounter-diagnosis-example1.json", "39065001"),
        ("condition-encounter-diagnosis-example2.json", "442311008"),
        ("condition-duodenal-ulcer.json", "51868009"),
        ("condition-SDOH-example.json", "445281000124101"),
    ],
)
def test_us_core_snomed_only_conditions_are_accepted_unchanged(us_core: Path, name: str, snomed: str) -> None:
    indication = condition.from_condition(example(us_core, name))
    assert (indication.icd10cm, indication.snomed, indication.kind) == (None, snomed, IndicationKind.OTHER)


def test_a_condition_without_icd10cm_or_snomed_is_refused_naming_the_element() -> None:
    resource = {"resourceType": "Condition", "code": {"coding": [{"system": "http://example.org/x", "code": "1"}]}}
    with pytest.raises(MappingRefusedError) as refused:
        condition.from_condition(resource)
    assert refused.value.expression == "Condition.code.coding"
    assert "ICD-10-CM" in refused.value.reason and "SNOMED CT" in refused.value.reason


def test_a_condition_with_icd10cm_maps_to_an_indication() -> None:
    resource = {
        "resourceType": "Condition",
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F43.12"}]},
    }
    assert condition.from_condition(resource).icd10cm == "F43.12"


def test_an_ehr_ketamine_administration_maps_and_a_dose_in_ml_is_refused() -> None:
    resource = {
        "resourceType": "MedicationAdministration",
        "id": "ma-1",
        "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "333847008"}]},
        "subject": {"reference": "Patient/p1"},
        "context": {"reference": "Encounter/e1"},
        "effectivePeriod": {"start": "2026-03-02T09:00:00+00:00", "end": "2026-03-02T09:40:00+00:00"},
        "dosage": {
            "route": {"coding": [{"system": "http://snomed.info/sct", "code": "47625008"}]},
            "dose": {"value": 35, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"},
        },
    }
    dose = medication_administration.from_medication_administration(EHR, resource)
    assert (dose.id, dose.session_id, dose.medication, dose.route, dose.dose_mg) == (
        "ma-1",
        "e1",
        Medication.RACEMIC_KETAMINE,
        Route.INTRAVENOUS,
        35,
    )
    assert dose.start == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    resource["dosage"]["dose"] = {"value": 3.5, "unit": "mL", "system": "http://unitsofmeasure.org", "code": "mL"}
    with pytest.raises(MappingRefusedError) as refused:
        medication_administration.from_medication_administration(EHR, resource)
    assert refused.value.expression == "MedicationAdministration.dosage.dose"


def test_a_heart_rate_in_the_wrong_unit_is_refused_naming_the_element() -> None:
    resource = {
        "resourceType": "Observation",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "valueQuantity": {"value": 1.2, "unit": "Hz", "system": "http://unitsofmeasure.org", "code": "Hz"},
    }
    with pytest.raises(MappingRefusedError) as refused:
        observation.reading_values(resource)
    assert refused.value.expression == "Observation.valueQuantity"
