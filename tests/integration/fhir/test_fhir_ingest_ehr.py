"""Inbound resources from an EHR in a ``POST /fhir`` transaction (no whole episode): Patient, Condition, vital-sign
Observations, QuestionnaireResponses with their score, MedicationAdministration map into the domain through its use
cases where they attach to our records, or are refused with an OperationOutcome naming the element."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from mappings import terminology as t
from tests.integration.fhir.fhir_support import BACKENDS, FHIR_JSON, app_on, clinic_b, entries, load_episodes

EHR = "https://ehr.example.org/fhir/id"
OURS = "https://kapfhir.example.org"


@pytest.fixture(scope="module", params=BACKENDS)
def ehr_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    with app_on(request, request.param, tmp_path_factory.mktemp("ehr"), "fhir_ehr") as app:
        app.config["EPISODE_IDS"] = load_episodes(app)
        yield app


@pytest.fixture(scope="module")
def client(ehr_app: Flask) -> Any:
    return ehr_app.test_client()


def as_ehr(resource: dict, value: str) -> dict:
    """One of our resources as an EHR would send it: its own identifier, no kapfhir bookkeeping."""
    out = copy.deepcopy(resource)
    for key in ("id", "meta", "text"):
        out.pop(key, None)
    out["extension"] = [e for e in out.get("extension", []) if e["url"] == t.EXT_READING_TIMING]
    if not out["extension"]:
        del out["extension"]
    ident = {"system": EHR, "value": value}
    out["identifier"] = ident if resource["resourceType"] == "QuestionnaireResponse" else [ident]
    return out


def post(client: Any, resources: list[dict], *, kind: str = "transaction", method: str = "POST", **kwargs: Any) -> Any:
    bundle = {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {
                "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
                "resource": r,
                "request": {"method": method, "url": r["resourceType"]},
            }
            for i, r in enumerate(resources)
        ],
    }
    for i, extra in kwargs.get("requests", {}).items():
        bundle["entry"][i]["request"] |= extra
    return client.post("/fhir", json=bundle)


def first(client: Any, path: str, **query: str) -> dict:
    found = entries(client.get(path, query_string=query).get_json())
    assert found, (path, query)
    return found[0]


def episode_of(client: Any, app: Flask, name: str = "a-trd-iv-ketamine") -> tuple[dict, dict, dict]:
    ids = app.config["EPISODE_IDS"][name]
    patient = first(client, "/fhir/Patient", identifier=ids["patient"])
    eoc = first(client, "/fhir/EpisodeOfCare", identifier=ids["episode"])
    return ids, patient, eoc


def records(client: Any, episode_id: str, kind: str) -> list[dict]:
    body = client.get(f"/api/v1/episodes/{episode_id}/{kind}").get_json()
    return body["items"] if isinstance(body, dict) and "items" in body else body


def test_vitals_scores_and_a_condition_from_an_ehr_become_domain_records(client: Any, ehr_app: Flask) -> None:
    ids, patient, eoc = episode_of(client, ehr_app)
    hr = first(client, "/fhir/Observation", code=f"{t.LOINC}|8867-4", patient=f"Patient/{patient['id']}")
    qr = first(
        client,
        "/fhir/QuestionnaireResponse",
        patient=f"Patient/{patient['id']}",
        questionnaire=t.QUESTIONNAIRE_URL[next(iter(t.QUESTIONNAIRE_URL))],
    )
    score = first(client, "/fhir/Observation", **{"derived-from": f"QuestionnaireResponse/{qr['id']}"})
    vital = as_ehr(hr, "hr-1") | {"valueQuantity": {**hr["valueQuantity"], "value": 97}}
    response = as_ehr(qr, "qr-1")
    total = as_ehr(score, "score-1") | {"derivedFrom": [{"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"}]}
    encounter_ref = response["encounter"]
    enc = client.get(f"/fhir/{encounter_ref['reference']}").get_json()
    # the QuestionnaireResponse names its Encounter by identifier, as an EHR may
    response["encounter"] = {"type": "Encounter", "identifier": enc["identifier"][0]}
    condition = {
        "resourceType": "Condition",
        "identifier": [{"system": EHR, "value": "cond-1"}],
        "extension": [
            {
                "url": f"{t.FHIR_SD}/workflow-episodeOfCare",
                "valueReference": {"reference": f"EpisodeOfCare/{eoc['id']}"},
            }
        ],
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
        },
        "code": {"coding": [{"system": t.ICD10CM, "code": "F41.1"}], "text": "Generalized anxiety disorder"},
        "subject": {"reference": f"Patient/{patient['id']}"},
    }
    before_readings = len(records(client, ids["episode"], "monitoring-readings"))
    before_measures = len(records(client, ids["episode"], "outcome-measures"))
    r = post(client, [vital, response, total, condition])
    assert r.status_code == 200, r.get_data(as_text=True)
    answer = r.get_json()
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created"] * 4
    locations = [e["response"]["location"] for e in answer["entry"]]
    assert [loc.split("/")[0] for loc in locations] == [
        "Observation",
        "QuestionnaireResponse",
        "Observation",
        "Condition",
    ]
    for loc in locations:
        assert client.get("/fhir/" + loc).status_code == 200, loc
    stored = client.get("/fhir/" + locations[0].split("/_history")[0]).get_json()
    assert stored["valueQuantity"]["value"] == 97 and stored["encounter"] == hr["encounter"]
    assert len(records(client, ids["episode"], "monitoring-readings")) == before_readings + 1
    assert len(records(client, ids["episode"], "outcome-measures")) == before_measures + 1
    episode = client.get(f"/api/v1/episodes/{ids['episode']}").get_json()
    assert any(i.get("icd10cm") == "F41.1" for i in episode["indications"])
    again = post(client, [vital, response, total, condition]).get_json()
    assert [e["response"]["status"] for e in again["entry"]] == ["200 OK"] * 4
    assert [e["response"]["location"] for e in again["entry"]] == locations


def test_a_dose_from_an_ehr_is_stored_and_its_rule_deviations_are_flagged(client: Any, ehr_app: Flask) -> None:
    ids, patient, _ = episode_of(client, ehr_app)
    served = first(client, "/fhir/MedicationAdministration", patient=f"Patient/{patient['id']}")
    dose = as_ehr(served, "dose-1")
    before = len(records(client, ids["episode"], "doses"))
    r = post(client, [dose])
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["entry"][0]["response"]["status"] == "201 Created"
    assert len(records(client, ids["episode"], "doses")) == before + 1
    assert post(client, [dose]).get_json()["entry"][0]["response"]["status"] == "200 OK"
    assert len(records(client, ids["episode"], "doses")) == before + 1


def test_a_patient_by_mrn_is_registered_then_updated_by_conditional_put(client: Any) -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "https://ehr.example.org/mrn", "value": "MRN-EHR-1"}],
        "name": [{"family": "Fromehr", "given": ["Robin"]}],
        "gender": "female",
        "birthDate": "1980-02-03",
    }
    r = post(client, [patient])
    assert r.status_code == 200, r.get_data(as_text=True)
    created = r.get_json()["entry"][0]["response"]
    assert created["status"] == "201 Created" and created["etag"] == 'W/"1"'
    read = client.get("/fhir/" + created["location"].split("/_history")[0])
    assert read.status_code == 200 and read.get_json()["name"][0]["family"] == "Fromehr"
    condition = {"ifNoneExist": "identifier=https://ehr.example.org/mrn|MRN-EHR-1"}
    assert post(client, [patient], requests={0: condition}).get_json()["entry"][0]["response"]["status"] == "200 OK"
    duplicate = post(client, [patient])
    assert duplicate.status_code == 409 and duplicate.mimetype == FHIR_JSON
    assert duplicate.get_json()["issue"][0]["expression"] == ["Bundle.entry[0].resource.identifier"]
    renamed = patient | {"name": [{"family": "Renamed", "given": ["Robin"]}]}
    put = {"method": "PUT", "url": "Patient?identifier=https://ehr.example.org/mrn|MRN-EHR-1"}
    r = post(client, [renamed], requests={0: put})
    assert r.status_code == 200, r.get_data(as_text=True)
    updated = r.get_json()["entry"][0]["response"]
    assert updated["location"].split("/_history")[0] == created["location"].split("/_history")[0]
    assert updated["etag"] == 'W/"2"'
    now = client.get("/fhir/" + updated["location"].split("/_history")[0]).get_json()
    old = client.get("/fhir/" + created["location"]).get_json()
    assert now["name"][0]["family"] == "Renamed" and old["name"][0]["family"] == "Fromehr"


def _refusal(r: Any, status: int = 422) -> list[str]:
    assert r.status_code == status, r.get_data(as_text=True)
    body = r.get_json()
    assert r.mimetype == FHIR_JSON and body["resourceType"] == "OperationOutcome"
    assert all(i["diagnostics"] for i in body["issue"])
    return [e for i in body["issue"] for e in i.get("expression", [])]


def test_what_does_not_attach_is_refused_naming_the_element(client: Any, ehr_app: Flask) -> None:
    _, patient, eoc = episode_of(client, ehr_app)
    hr = first(client, "/fhir/Observation", code=f"{t.LOINC}|8867-4", patient=f"Patient/{patient['id']}")
    vital = as_ehr(hr, "hr-refused")
    assert _refusal(post(client, [{k: v for k, v in vital.items() if k != "encounter"}])) == [
        "Bundle.entry[0].resource.encounter"
    ]
    no_timing = {k: v for k, v in vital.items() if k != "extension"}
    assert _refusal(post(client, [no_timing]))[0].startswith("Bundle.entry[0].resource.extension(")
    unknown_encounter = vital | {"encounter": {"reference": "Encounter/not-ours"}}
    assert _refusal(post(client, [unknown_encounter])) == ["Bundle.entry[0].resource.encounter.reference"]
    other = first(client, "/fhir/Patient", identifier=ehr_app.config["EPISODE_IDS"]["b-ptsd-im-ketamine"]["patient"])
    wrong_patient = vital | {"subject": {"reference": f"Patient/{other['id']}"}}
    assert _refusal(post(client, [wrong_patient])) == ["Bundle.entry[0].resource.subject"]
    qr = first(client, "/fhir/QuestionnaireResponse", patient=f"Patient/{patient['id']}")
    score = first(client, "/fhir/Observation", **{"derived-from": f"QuestionnaireResponse/{qr['id']}"})
    assert _refusal(post(client, [as_ehr(score, "lonely-score")])) == ["Bundle.entry[0].resource.derivedFrom"]
    wrong_total = as_ehr(score, "bad-total") | {
        "derivedFrom": [{"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"}],
        "valueQuantity": {**score["valueQuantity"], "value": score["valueQuantity"]["value"] + 1},
    }
    assert _refusal(post(client, [as_ehr(qr, "qr-bad-total"), wrong_total])) == ["Bundle.entry[0].resource"]
    procedure = {
        "resourceType": "Procedure",
        "status": "completed",
        "code": {"text": "x"},
        "subject": {"reference": f"Patient/{patient['id']}"},
    }
    assert _refusal(post(client, [procedure])) == ["Bundle.entry[0].resource.resourceType"]
    no_code = {
        "resourceType": "Condition",
        "extension": [
            {
                "url": f"{t.FHIR_SD}/workflow-episodeOfCare",
                "valueReference": {"reference": f"EpisodeOfCare/{eoc['id']}"},
            }
        ],
        "code": {"text": "anxious"},
        "subject": {"reference": f"Patient/{patient['id']}"},
    }
    assert _refusal(post(client, [no_code])) == ["Bundle.entry[0].resource.code.coding"]


def test_a_refused_entry_stores_nothing_of_the_transaction(client: Any, ehr_app: Flask) -> None:
    ids, patient, eoc = episode_of(client, ehr_app)
    condition = {
        "resourceType": "Condition",
        "identifier": [{"system": EHR, "value": "cond-atomic"}],
        "extension": [
            {
                "url": f"{t.FHIR_SD}/workflow-episodeOfCare",
                "valueReference": {"reference": f"EpisodeOfCare/{eoc['id']}"},
            }
        ],
        "code": {"coding": [{"system": t.ICD10CM, "code": "F43.10"}]},
        "subject": {"reference": f"Patient/{patient['id']}"},
    }
    procedure = {
        "resourceType": "Procedure",
        "status": "completed",
        "code": {"text": "x"},
        "subject": {"reference": f"Patient/{patient['id']}"},
    }
    versions = client.get(f"/fhir/EpisodeOfCare/{eoc['id']}").get_json()["meta"]["versionId"]
    assert _refusal(post(client, [condition, procedure])) == ["Bundle.entry[1].resource.resourceType"]
    episode = client.get(f"/api/v1/episodes/{ids['episode']}").get_json()
    assert not any(i.get("icd10cm") == "F43.10" for i in episode["indications"])
    assert client.get(f"/fhir/EpisodeOfCare/{eoc['id']}").get_json()["meta"]["versionId"] == versions


def test_another_clinic_cannot_attach_to_our_records(client: Any, ehr_app: Flask) -> None:
    _, patient, _ = episode_of(client, ehr_app)
    hr = first(client, "/fhir/Observation", code=f"{t.LOINC}|8867-4", patient=f"Patient/{patient['id']}")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": as_ehr(hr, "hr-b"), "request": {"method": "POST", "url": "Observation"}}],
    }
    r = client.post("/fhir", json=bundle, headers=clinic_b(ehr_app))
    assert r.status_code in (404, 422) and r.get_json()["resourceType"] == "OperationOutcome"
    assert "hr-b" not in r.get_data(as_text=True)
    assert not entries(client.get("/fhir/Observation", query_string={"identifier": "hr-b"}).get_json())


def test_a_batch_answers_per_entry_and_keeps_what_was_accepted(client: Any, ehr_app: Flask) -> None:
    ids, patient, _ = episode_of(client, ehr_app)
    hr = first(client, "/fhir/Observation", code=f"{t.LOINC}|8867-4", patient=f"Patient/{patient['id']}")
    good = as_ehr(hr, "hr-batch-good") | {"valueQuantity": {**hr["valueQuantity"], "value": 77}}
    bad = {k: v for k, v in as_ehr(hr, "hr-batch-bad").items() if k != "encounter"}
    before = len(records(client, ids["episode"], "monitoring-readings"))
    response = post(client, [good, bad], kind="batch")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["type"] == "batch-response"
    first_entry, second_entry = (e["response"] for e in body["entry"])
    assert first_entry["status"].startswith("201")
    assert second_entry["status"] == "422"
    assert second_entry["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1].resource.encounter"]
    after = records(client, ids["episode"], "monitoring-readings")
    assert len(after) == before + 1
    # The same entries as a transaction: all or nothing.
    refused = post(client, [as_ehr(hr, "hr-tx-good"), bad], kind="transaction")
    assert refused.status_code == 422
    assert len(records(client, ids["episode"], "monitoring-readings")) == before + 1
