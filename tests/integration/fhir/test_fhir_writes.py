"""The FHIR write interactions under /fhir (create, update, conditional create and update, patch, delete,
transaction at ``{base}`` and ``{base}/``, batch per entry), each turned into the use cases of /api/v1: the same
rules, the same scopes by meaning, and no trace of one clinic in another's answers."""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from service.domain import rules
from service.domain.model import OutcomeMeasure
from service.domain.vocabulary import FlagSeverity
from service.entrypoints.cli import ensure_clinic
from tests.integration.fhir.fhir_support import BACKENDS, FHIR_JSON, app_on, entries, load_episodes
from tests.support.app import bearer, token_for
from tests.support.seed import PATIENT

EHR_MRN = "https://ehr.example.org/mrn"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


@pytest.fixture(scope="module", params=BACKENDS)
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    with app_on(request, request.param, tmp_path_factory.mktemp("writes"), "fhir_writes") as application:
        application.config["EPISODE_IDS"] = load_episodes(application)
        settings = application.extensions["kapfhir"].settings
        ensure_clinic(settings, "clinic-b", "Clinic B", "https://clinic-b.example.org/fhir/id")
        yield application


@pytest.fixture(scope="module")
def client(app: Flask) -> Any:
    return app.test_client()


def patient(value: str, family: str = "Writetest") -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": EHR_MRN, "value": value}],
        "name": [{"family": family, "given": ["Alex"]}],
        "gender": "unknown",
        "birthDate": "1980-02-03",
    }


def only(client: Any, path: str, **query: str) -> dict:
    found = entries(client.get(path, query_string=query).get_json())
    assert len(found) == 1, (path, query, len(found))
    return found[0]


def scoped(app: Flask, scope: str, clinic: str = "demo") -> dict[str, str]:
    return bearer(token_for(app, scope=scope, clinic=clinic))


# --- create, read, update, conditional create ---------------------------------------------------------------------


def test_create_read_update_with_if_match_and_stale_412(client: Any) -> None:
    r = client.post("/fhir/Patient", json=patient("W-1"), content_type=FHIR_JSON)
    assert r.status_code == 201, r.get_data(as_text=True)
    created = r.get_json()
    assert r.headers["Location"].endswith(f"/fhir/Patient/{created['id']}/_history/1")
    assert r.headers["ETag"] == 'W/"1"'
    assert client.get(f"/fhir/Patient/{created['id']}").get_json()["name"][0]["family"] == "Writetest"

    changed = {**created, "name": [{"family": "Renamed", "given": ["Alex"]}]}
    r = client.put(f"/fhir/Patient/{created['id']}", json=changed, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["name"][0]["family"] == "Renamed"
    assert r.headers["ETag"] == 'W/"2"'
    # the domain API sees the same patient changed
    api = client.get("/api/v1/patients", query_string={"limit": 100}).get_json()
    assert any(p["name"]["family"] == "Renamed" for p in api["items"])

    stale = client.put(f"/fhir/Patient/{created['id']}", json=changed, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.get_json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/fhir/Patient/{created['id']}/_history/1").get_json()["name"][0]["family"] == "Writetest"


def test_if_match_star_holds_for_any_current_version_and_an_unreadable_one_is_a_400(client: Any) -> None:
    created = client.post("/fhir/Patient", json=patient("W-STAR"), content_type=FHIR_JSON).get_json()
    path = f"/fhir/Patient/{created['id']}"
    r = client.put(path, json={**created, "gender": "female"}, headers={"If-Match": "*"})
    assert (r.status_code, r.headers["ETag"]) == (200, 'W/"2"'), r.get_data(as_text=True)
    missing = str(uuid.uuid4())
    gone = client.put(f"/fhir/Patient/{missing}", json={**created, "id": missing}, headers={"If-Match": "*"})
    assert gone.status_code == 404  # as without the condition (RFC 9110 13.2.2): kapfhir assigns ids
    bad = client.put(path, json=created, headers={"If-Match": "version two"})
    assert bad.status_code == 400
    assert bad.get_json()["issue"][0]["expression"] == ["If-Match"]
    assert client.get(path).headers["ETag"] == 'W/"2"'


def test_a_conditional_update_honours_if_match(client: Any) -> None:
    created = client.post("/fhir/Patient", json=patient("W-CU"), content_type=FHIR_JSON).get_json()
    url = f"/fhir/Patient?identifier={EHR_MRN}|W-CU"
    stale = client.put(url, json={**patient("W-CU"), "gender": "female"}, headers={"If-Match": 'W/"7"'})
    assert stale.status_code == 412, stale.get_data(as_text=True)
    assert stale.get_json()["issue"][0]["expression"] == ["If-Match"]
    assert client.get(f"/fhir/Patient/{created['id']}").get_json()["gender"] == "unknown"
    current = client.put(url, json={**patient("W-CU"), "gender": "female"}, headers={"If-Match": 'W/"1"'})
    assert current.status_code == 200, current.get_data(as_text=True)
    assert client.get(f"/fhir/Patient/{created['id']}").get_json()["gender"] == "female"
    # no match: it would create, and no current version can meet the condition
    nothing = client.put(
        f"/fhir/Patient?identifier={EHR_MRN}|W-CU-NONE", json=patient("W-CU-NONE"), headers={"If-Match": 'W/"1"'}
    )
    assert nothing.status_code == 412
    assert client.get("/fhir/Patient", query_string={"identifier": f"{EHR_MRN}|W-CU-NONE"}).get_json()["total"] == 0


def test_a_transaction_or_batch_update_by_id_honours_its_if_match(client: Any) -> None:
    created = client.post("/fhir/Patient", json=patient("W-TXM"), content_type=FHIR_JSON).get_json()
    path = f"Patient/{created['id']}"

    def entry(gender: str, if_match: Any) -> dict:
        return {
            "resource": {**created, "gender": gender},
            "request": {"method": "PUT", "url": path, "ifMatch": if_match},
        }

    other = {"resource": patient("W-TXM-2"), "request": {"method": "POST", "url": "Patient"}}
    stale = client.post(
        "/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [other, entry("female", 'W/"5"')]}
    )
    assert stale.status_code == 412, stale.get_data(as_text=True)
    assert stale.get_json()["issue"][0]["expression"] == ["Bundle.entry[1].request.ifMatch"]
    assert client.get(f"/fhir/{path}").get_json()["gender"] == "unknown"
    assert client.get("/fhir/Patient", query_string={"identifier": f"{EHR_MRN}|W-TXM-2"}).get_json()["total"] == 0

    batch = client.post(
        "/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [other, entry("female", 'W/"5"')]}
    )
    assert batch.status_code == 200, batch.get_data(as_text=True)
    first, second = batch.get_json()["entry"]
    assert first["response"]["status"].startswith("201") and second["response"]["status"].startswith("412")
    assert client.get(f"/fhir/{path}").get_json()["gender"] == "unknown"

    current = client.post(
        "/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry("female", 'W/"1"')]}
    )
    assert current.status_code == 200, current.get_data(as_text=True)
    assert client.get(f"/fhir/{path}").get_json()["gender"] == "female"

    unreadable = client.post(
        "/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry("male", "two")]}
    )
    assert unreadable.status_code == 400
    assert unreadable.get_json()["issue"][0]["expression"] == ["Bundle.entry[0].request.ifMatch"]
    on_a_create = {"resource": patient("W-TXM-3"), "request": {"method": "POST", "url": "Patient", "ifMatch": 'W/"1"'}}
    refused = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [on_a_create]})
    assert refused.status_code == 422
    assert refused.get_json()["issue"][0]["expression"] == ["Bundle.entry[0].request.ifMatch"]
    assert client.get(f"/fhir/{path}").get_json()["gender"] == "female"


def test_conditional_create_twice_makes_one_resource(client: Any) -> None:
    headers = {"If-None-Exist": f"identifier={EHR_MRN}|W-2"}
    first = client.post("/fhir/Patient", json=patient("W-2"), headers=headers)
    second = client.post("/fhir/Patient", json=patient("W-2"), headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.get_json()["id"] == second.get_json()["id"]
    assert client.get("/fhir/Patient", query_string={"identifier": f"{EHR_MRN}|W-2"}).get_json()["total"] == 1


def _conditional_creates_at_once(app: Flask, mrn: str, senders: int) -> list[tuple[int, str]]:
    """(status, id or error) of ``senders`` identical conditional creates of a patient, sent together."""
    start = threading.Barrier(senders)
    answers: list[tuple[int, str]] = []
    condition = {"If-None-Exist": f"identifier={EHR_MRN}|{mrn}"}

    def send() -> None:
        client = app.test_client()
        start.wait(timeout=30)
        r = client.post("/fhir/Patient", json=patient(mrn), headers=condition)
        answers.append((r.status_code, (r.get_json() or {}).get("id") or r.get_data(as_text=True)[:300]))

    threads = [threading.Thread(target=send) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def test_the_same_conditional_create_sent_at_once_stores_one_and_answers_each(app: Flask) -> None:
    """An EHR's retries or workers may send one conditional create several times at once. One creates (201); the
    others answer as if they came after it (200, the same resource), not 409: on PostgreSQL the losers' inserts
    conflict in the database, and a conditional create is run again, once, in a new transaction."""
    for attempt in range(3):
        mrn = f"W-RACE-{attempt}-{uuid.uuid4().hex[:6]}"
        answers = _conditional_creates_at_once(app, mrn, 8)
        assert sorted(status for status, _ in answers) == [200] * 7 + [201], answers
        assert len({rid for _, rid in answers}) == 1, answers
        found = app.test_client().get("/fhir/Patient", query_string={"identifier": f"{EHR_MRN}|{mrn}"})
        assert found.get_json()["total"] == 1


def test_prefer_minimal_and_operation_outcome(client: Any) -> None:
    r = client.post("/fhir/Patient", json=patient("W-3"), headers={"Prefer": "return=minimal"})
    assert r.status_code == 201 and r.get_data() == b"" and "/fhir/Patient/" in r.headers["Location"]
    r = client.post("/fhir/Patient", json=patient("W-4"), headers={"Prefer": "return=OperationOutcome"})
    assert r.status_code == 201 and r.get_json()["resourceType"] == "OperationOutcome"


def test_update_of_an_unknown_id_is_refused_kapfhir_assigns_ids(client: Any) -> None:
    body = {**patient("W-5"), "id": "client-chosen"}
    r = client.put("/fhir/Patient/client-chosen", json=body)
    assert r.status_code == 404
    assert "updateCreate" in r.get_json()["issue"][0]["diagnostics"]


def test_a_practitioner_created_through_fhir_is_readable_and_registered(client: Any) -> None:
    body = {
        "resourceType": "Practitioner",
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}],
        "name": [{"family": "Writer", "given": ["Pat"]}],
    }
    r = client.post("/fhir/Practitioner", json=body)
    assert r.status_code in (200, 201), r.get_data(as_text=True)
    rid = r.get_json()["id"]
    assert client.get(f"/fhir/Practitioner/{rid}").status_code == 200


def body_weight(patient_id: str, value: str, kg: float) -> dict:
    return {
        "resourceType": "Observation",
        "identifier": [{"system": "https://ehr.example.org/observation", "value": value}],
        "status": "final",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-02-01T09:00:00-05:00",
        "valueQuantity": {"value": kg, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    }


def test_a_body_weight_of_a_patient_without_an_episode_is_created_and_served(client: Any) -> None:
    """An EHR records a weight before the patient's first KAP episode: a create answers with the Observation and
    its Location, as for any create, and the weight is read and searched under /fhir like any other."""
    pid = client.post("/fhir/Patient", json=patient("W-BW")).get_json()["id"]
    condition = {"If-None-Exist": "identifier=https://ehr.example.org/observation|BW-1"}
    r = client.post("/fhir/Observation", json=body_weight(pid, "BW-1", 71.5), headers=condition)
    assert r.status_code == 201, r.get_data(as_text=True)
    created = r.get_json()
    assert created["resourceType"] == "Observation", created
    assert r.headers["Location"].endswith(f"/fhir/Observation/{created['id']}/_history/1")
    assert (created["subject"], created["valueQuantity"]["value"]) == ({"reference": f"Patient/{pid}"}, 71.5)
    assert client.get(f"/fhir/Observation/{created['id']}").get_json()["valueQuantity"]["value"] == 71.5
    found = entries(client.get("/fhir/Observation", query_string={"patient": pid, "code": "29463-7"}).get_json())
    assert [o["id"] for o in found] == [created["id"]]
    again = client.post("/fhir/Observation", json=body_weight(pid, "BW-1", 71.5), headers=condition)
    assert (again.status_code, again.get_json()["id"]) == (200, created["id"])


def test_a_body_weight_recorded_on_the_domain_api_before_any_episode_is_served(client: Any) -> None:
    mrn = {**PATIENT["mrn"], "value": f"SYN-BW-{uuid.uuid4().hex[:8]}"}
    r = client.post("/api/v1/patients", json={**PATIENT, "mrn": mrn})
    assert r.status_code == 201, r.get_data(as_text=True)
    domain_id = r.get_json()["id"]
    fhir_patient = only(client, "/fhir/Patient", identifier=f"{mrn['system']}|{mrn['value']}")
    r = client.post(
        f"/api/v1/patients/{domain_id}/body-weights",
        json={"measured_at": "2026-02-01T09:00:00-05:00", "weight_kg": 64},
    )
    assert r.status_code == 201, r.get_data(as_text=True)
    found = entries(client.get("/fhir/Observation", query_string={"patient": fhir_patient["id"]}).get_json())
    assert [(o["code"]["coding"][0]["code"], o["valueQuantity"]["value"]) for o in found] == [("29463-7", 64)]


# --- records: update, patch, delete, flags ------------------------------------------------------------------------


def _dose(client: Any, app: Flask, name: str = "b-ptsd-im-ketamine") -> tuple[str, dict]:
    ids = app.config["EPISODE_IDS"][name]
    doses = client.get(f"/api/v1/episodes/{ids['episode']}/doses").get_json()
    dose = (doses["items"] if isinstance(doses, dict) else doses)[-1]
    resource = only(client, "/fhir/MedicationAdministration", identifier=dose["id"])
    return ids["episode"], resource


def test_update_of_a_dose_amends_the_record_through_the_domain(client: Any, app: Flask) -> None:
    episode_id, resource = _dose(client, app, "d-gad-home-sublingual")
    record_id = resource["identifier"][0]["value"]
    before = client.get(f"/api/v1/episodes/{episode_id}/doses/{record_id}").get_json()
    changed = copy.deepcopy(resource)
    changed["note"] = [{"text": "lozenge held 15 minutes"}]
    lot = changed["contained"][0].setdefault("batch", {})
    lot["lotNumber"] = "SYN-LOT-EDIT"
    r = client.put(f"/fhir/MedicationAdministration/{resource['id']}", json=changed)
    assert r.status_code == 200, r.get_data(as_text=True)
    after = client.get(f"/api/v1/episodes/{episode_id}/doses/{record_id}").get_json()
    assert after["version"] == before["version"] + 1
    assert after["controlled_substance"]["lot_number"] == "SYN-LOT-EDIT"
    # an unchanged update changes nothing
    again = client.put(f"/fhir/MedicationAdministration/{resource['id']}", json=r.get_json())
    assert again.status_code == 200
    assert client.get(f"/api/v1/episodes/{episode_id}/doses/{record_id}").get_json()["version"] == after["version"]


def test_patch_changes_one_element(client: Any, app: Flask) -> None:
    created = client.post("/fhir/Patient", json=patient("W-6")).get_json()
    ops = [{"op": "replace", "path": "/birthDate", "value": "1981-03-04"}]
    r = client.patch(f"/fhir/Patient/{created['id']}", data=json.dumps(ops), content_type="application/json-patch+json")
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["birthDate"] == "1981-03-04"
    bad = [{"op": "replace", "path": "/birthDate", "value": "not-a-date"}]
    r = client.patch(f"/fhir/Patient/{created['id']}", data=json.dumps(bad), content_type="application/json-patch+json")
    assert r.status_code == 422
    assert client.get(f"/fhir/Patient/{created['id']}").get_json()["birthDate"] == "1981-03-04"


def test_delete_marks_entered_in_error_and_patients_are_not_deleted(client: Any, app: Flask) -> None:
    episode_id, resource = _dose(client, app, "c-esketamine-rems")
    record_id = resource["identifier"][0]["value"]
    r = client.delete(f"/fhir/MedicationAdministration/{resource['id']}")
    assert r.status_code == 200, r.get_data(as_text=True)
    assert client.get(f"/fhir/MedicationAdministration/{resource['id']}").get_json()["status"] == "entered-in-error"
    assert client.get(f"/api/v1/episodes/{episode_id}/doses/{record_id}").get_json()["entered_in_error"] is True
    pat = entries(client.get("/fhir/Patient?_count=1").get_json())[0]
    refused = client.delete(f"/fhir/Patient/{pat['id']}")
    assert refused.status_code == 405
    assert refused.get_json()["issue"][0]["diagnostics"]


def test_a_create_only_token_cannot_acknowledge_a_flag_through_any_path(client: Any, app: Flask) -> None:
    ids = app.config["EPISODE_IDS"]["a-trd-iv-ketamine"]
    # a PHQ-9 with item 9 above 0 raises a high-severity suicide-risk flag
    phq9 = {"instrument": "phq-9", "administered_at": "2026-03-25T09:00:00-05:00", "items": [1, 1, 1, 1, 1, 1, 1, 1, 1]}
    measure = client.post(f"/api/v1/episodes/{ids['episode']}/outcome-measures", json=phq9)
    assert measure.status_code == 201, measure.get_data(as_text=True)
    flags = client.get(f"/api/v1/episodes/{ids['episode']}/safety-flags").get_json()
    open_flag = next(f for f in flags["items"] if f["status"] == "open" and measure.get_json()["id"] in f["record_ids"])
    create_only = scoped(app, "system/*.c")
    issue = only(client, "/fhir/DetectedIssue", identifier=open_flag["id"])
    prescriber = entries(client.get("/fhir/Practitioner?_count=1").get_json())[0]
    acknowledged = copy.deepcopy(issue)
    acknowledged["status"] = "final"
    acknowledged["mitigation"] = [
        {
            "action": {"text": "reviewed"},
            "date": "2026-03-20T10:00:00-05:00",
            "author": {"reference": f"Practitioner/{prescriber['id']}"},
        }
    ]
    # 1. update of the DetectedIssue
    r = client.put(f"/fhir/DetectedIssue/{issue['id']}", json=acknowledged, headers=create_only)
    assert r.status_code == 403
    # 2. the whole episode posted back with the flag acknowledged
    bundle = client.get(f"/api/v1/episodes/{ids['episode']}/fhir").get_json()
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "DetectedIssue" and resource["identifier"][0]["value"] == open_flag["id"]:
            entry["resource"]["status"] = "final"
            entry["resource"]["mitigation"] = acknowledged["mitigation"]
    r = client.post("/fhir", json=bundle, headers=create_only)
    assert r.status_code == 403, r.get_data(as_text=True)
    assert "system/DetectedIssue.u" in r.get_json()["issue"][0]["diagnostics"]
    after = client.get(f"/api/v1/episodes/{ids['episode']}/safety-flags").get_json()
    assert next(f for f in after["items"] if f["id"] == open_flag["id"])["status"] == "open"
    # with DetectedIssue.u and a registered practitioner it is acknowledged, as through /api/v1
    r = client.put(
        f"/fhir/DetectedIssue/{issue['id']}", json=acknowledged, headers=scoped(app, "system/DetectedIssue.ru")
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    after = client.get(f"/api/v1/episodes/{ids['episode']}/safety-flags").get_json()
    assert next(f for f in after["items"] if f["id"] == open_flag["id"])["status"] == "acknowledged"


# --- whole episodes -------------------------------------------------------------------------------------------------


def _with_own_full_urls(bundle: dict) -> dict:
    """The Bundle as another client would send it: its own urn:uuid fullUrls, references rewritten to match."""
    text = json.dumps(bundle)
    for entry in bundle["entry"]:
        text = text.replace(entry["fullUrl"], f"urn:uuid:{uuid.uuid4()}")
    return json.loads(text)


def test_every_export_posts_back_with_client_chosen_full_urls_and_changes_nothing(client: Any, app: Flask) -> None:
    for name, ids in sorted(app.config["EPISODE_IDS"].items()):
        bundle = client.get(f"/api/v1/episodes/{ids['episode']}/fhir").get_json()
        assert (
            any(e["resource"]["resourceType"] == "AdverseEvent" for e in bundle["entry"])
            or name != "b-ptsd-im-ketamine"
        )
        before = client.get(f"/api/v1/episodes/{ids['episode']}").get_json()["version"]
        for kind in ("transaction", "batch"):
            sent = _with_own_full_urls({**bundle, "type": kind})
            r = client.post("/fhir/", json=sent)
            assert r.status_code == 200, (name, kind, r.get_data(as_text=True)[:1500])
            answers = r.get_json()["entry"]
            odd = [(i, a) for i, a in enumerate(answers) if a["response"]["status"] != "200 OK"]
            assert not odd, (name, kind, [(sent["entry"][i]["resource"]["resourceType"], a) for i, a in odd])
        assert client.get(f"/api/v1/episodes/{ids['episode']}").get_json()["version"] == before, name


def test_a_whole_episode_whose_phq9_total_disagrees_is_refused_as_on_the_domain_api(client: Any, app: Flask) -> None:
    ids = app.config["EPISODE_IDS"]["a-trd-iv-ketamine"]
    bundle = client.get(f"/api/v1/episodes/{ids['episode']}/fhir").get_json()
    # the same episode as another clinic's export (another identifier base): every record is new here
    text = json.dumps(bundle).replace("https://demo-clinic.example.org/fhir/id", "https://other.example.org/id")
    sent = json.loads(text)
    score = next(
        e["resource"]
        for e in sent["entry"]
        if e["resource"]["resourceType"] == "Observation"
        and "valueQuantity" in e["resource"]
        and e["resource"].get("derivedFrom")
    )
    true_total = score["valueQuantity"]["value"]
    score["valueQuantity"]["value"] = true_total + 3
    r = client.post("/fhir", json=sent)
    assert r.status_code == 422, r.get_data(as_text=True)[:1000]
    diagnostics = " ".join(i["diagnostics"] for i in r.get_json()["issue"])
    assert f"disagrees with the items, which add up to {true_total}" in diagnostics
    # the same disagreement on the domain API
    measure = client.get(f"/api/v1/episodes/{ids['episode']}/outcome-measures").get_json()
    item = (measure["items"] if isinstance(measure, dict) else measure)[0]
    body = {k: item[k] for k in ("instrument", "administered_at", "items") if k in item}
    body["total"] = item["total"] + 3
    api = client.post(f"/api/v1/episodes/{ids['episode']}/outcome-measures", json=body)
    assert api.status_code == 422
    assert f"which add up to {item['total']}" in api.get_json()["detail"]


def test_a_rule_added_to_the_domain_applies_to_every_write_path(client: Any, app: Flask, monkeypatch: Any) -> None:
    """A rule that exists only in this test: both doors raise its flag without any code of theirs."""
    original = rules.evaluate

    def with_test_rule(episode: Any, policy: Any, only: Any = None) -> list[rules.Deviation]:
        extra = [
            rules.Deviation("test-only-rule", FlagSeverity.MODERATE, "raised by a rule of the test", (m.id,))
            for m in episode.current(OutcomeMeasure)
            if m.instrument == "gad-7" and (only is None or m.id in only)
        ]
        return [*original(episode, policy, only), *extra]

    monkeypatch.setattr(rules, "evaluate", with_test_rule)
    # as with a rule added to the code: each episode's next write evaluates all its records again
    monkeypatch.setattr(rules, "RULES_CODE", rules.RULES_CODE + "+test-only-rule")
    ids = app.config["EPISODE_IDS"]["d-gad-home-sublingual"]
    measures = client.get(f"/api/v1/episodes/{ids['episode']}/outcome-measures").get_json()
    gad = next(m for m in (measures["items"] if isinstance(measures, dict) else measures) if m["instrument"] == "gad-7")
    qr = only(client, "/fhir/QuestionnaireResponse", identifier=gad["id"])
    # through /fhir: an update of the QuestionnaireResponse (an answer corrected) re-evaluates the rules
    r = client.put(f"/fhir/QuestionnaireResponse/{qr['id']}", json=qr)
    assert r.status_code == 200, r.get_data(as_text=True)
    body = {k: gad[k] for k in ("instrument", "administered_at", "items")}
    # through /api/v1
    other = client.post(
        f"/api/v1/episodes/{ids['episode']}/outcome-measures", json={**body, "administered_at": gad["administered_at"]}
    )
    assert other.status_code == 201, other.get_data(as_text=True)
    flags = client.get(f"/api/v1/episodes/{ids['episode']}/safety-flags").get_json()["items"]
    raised = {tuple(f["record_ids"]) for f in flags if f["rule_id"] == "test-only-rule"}
    assert (gad["id"],) in raised and (other.get_json()["id"],) in raised


# --- tenants --------------------------------------------------------------------------------------------------------


def _strip(answer: Any) -> tuple[int, Any]:
    """What a caller learns from an answer: its status and the shape of its body, without ids and times."""
    body = answer.get_json(silent=True)

    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: shape(v)
                for k, v in value.items()
                if k not in ("id", "lastUpdated", "versionId", "location", "lastModified", "etag")
            }
        if isinstance(value, list):
            return [shape(v) for v in value]
        return "x" if isinstance(value, str) else value

    return answer.status_code, shape(body)


def _create_as(client: Any, way: str, mrn: str, headers: dict | None = None) -> Any:
    body = patient(mrn)
    condition = f"identifier={EHR_MRN}|{mrn}"
    if way == "plain":
        return client.post("/fhir/Patient", json=body, headers=headers or {})
    if way == "conditional":
        return client.post("/fhir/Patient", json=body, headers={"If-None-Exist": condition, **(headers or {})})
    entry = {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": body}
    entry["request"] = {"method": "POST", "url": "Patient", "ifNoneExist": condition}
    return client.post(
        "/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]}, headers=headers or {}
    )


@pytest.mark.parametrize("way", ["plain", "conditional", "transaction"])
def test_the_same_mrn_in_two_clinics_gives_each_its_own_patient(client: Any, app: Flask, way: str) -> None:
    clinic_b = scoped(app, "system/*.cruds", clinic="clinic-b")
    held, unused = f"HELD-BY-B-{way}", f"UNUSED-{way}"
    assert _create_as(client, way, held, clinic_b).status_code in (200, 201)
    b_search = client.get("/fhir/Patient", query_string={"identifier": f"{EHR_MRN}|{held}"}, headers=clinic_b)
    b_before = entries(b_search.get_json())

    a_held = _create_as(client, way, held)
    a_unused = _create_as(client, way, unused)
    assert a_held.status_code in (200, 201) and a_held.status_code == a_unused.status_code, a_held.get_data(
        as_text=True
    )
    assert _strip(a_held) == _strip(a_unused)

    mine = entries(client.get("/fhir/Patient", query_string={"identifier": f"{EHR_MRN}|{held}"}).get_json())
    theirs = entries(
        client.get("/fhir/Patient", query_string={"identifier": f"{EHR_MRN}|{held}"}, headers=clinic_b).get_json()
    )
    assert len(mine) == 1 and theirs == b_before and len(theirs) == 1
    assert mine[0]["id"] != theirs[0]["id"]


# --- the read-side parameters FHIR clients send -------------------------------------------------------------------


def test_summary_count_total_elements_pretty_and_post_search(client: Any) -> None:
    full = client.get("/fhir/Observation", query_string={"_count": 5}).get_json()
    count = client.get("/fhir/Observation", query_string={"_summary": "count"}).get_json()
    assert count["total"] == full["total"] > 5 and "entry" not in count
    assert "total" not in client.get("/fhir/Observation", query_string={"_total": "none"}).get_json()
    subset = client.get("/fhir/Observation", query_string={"_elements": "status,code", "_count": 2}).get_json()
    for entry in subset["entry"]:
        assert set(entry["resource"]) <= {"resourceType", "id", "meta", "status", "code"}
        assert {"code": "SUBSETTED"}.items() <= entry["resource"]["meta"]["tag"][-1].items()
    pretty = client.get("/fhir/Patient", query_string={"_count": 1, "_pretty": "true"}).get_data(as_text=True)
    assert "\n  " in pretty
    patient_id = full["entry"][0]["resource"]["subject"]["reference"]
    posted = client.post(
        "/fhir/Observation/_search",
        data={"subject": patient_id, "_count": "3"},
        content_type="application/x-www-form-urlencoded",
    )
    got = client.get("/fhir/Observation", query_string={"subject": patient_id, "_count": 3})
    assert posted.status_code == 200
    assert posted.get_json()["total"] == got.get_json()["total"] > 0


def test_if_none_match_answers_304_and_history_since(client: Any) -> None:
    created = client.post("/fhir/Patient", json=patient("W-304"))
    rid, etag = created.get_json()["id"], created.headers["ETag"]
    assert client.get(f"/fhir/Patient/{rid}", headers={"If-None-Match": etag}).status_code == 304
    assert client.get(f"/fhir/Patient/{rid}", headers={"If-None-Match": 'W/"99"'}).status_code == 200
    modified = created.headers["Last-Modified"]
    unchanged = client.get(f"/fhir/Patient/{rid}", headers={"If-Modified-Since": modified})
    assert (unchanged.status_code, unchanged.data, unchanged.headers["ETag"]) == (304, b"", etag)
    earlier = "Mon, 01 Jan 2024 00:00:00 GMT"
    assert client.get(f"/fhir/Patient/{rid}", headers={"If-Modified-Since": earlier}).status_code == 200
    assert client.get(f"/fhir/Patient/{rid}", headers={"If-Modified-Since": "last week"}).status_code == 200
    # If-None-Match decides when both are sent
    both = {"If-None-Match": 'W/"99"', "If-Modified-Since": modified}
    assert client.get(f"/fhir/Patient/{rid}", headers=both).status_code == 200
    stamp = created.get_json()["meta"]["lastUpdated"]
    later = client.put(f"/fhir/Patient/{rid}", json={**created.get_json(), "gender": "other"}).get_json()
    since = client.get(f"/fhir/Patient/{rid}/_history", query_string={"_since": later["meta"]["lastUpdated"]})
    assert [e["resource"]["meta"]["versionId"] for e in since.get_json()["entry"]] == ["2"]
    every = client.get(f"/fhir/Patient/{rid}/_history", query_string={"_since": stamp}).get_json()
    assert every["total"] == 2
    assert client.get(f"/fhir/Patient/{rid}/_history", query_string={"_since": "yesterday"}).status_code == 400


def test_a_batch_refuses_its_bad_entry_alone(client: Any) -> None:
    good, bad = patient("W-B1"), {**patient("W-B2"), "birthDate": "1980-13-45"}
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": good, "request": {"method": "POST", "url": "Patient"}},
            {"resource": bad, "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 200, r.get_data(as_text=True)
    first, second = r.get_json()["entry"]
    assert first["response"]["status"].startswith("201")
    assert second["response"]["status"].startswith("4")
    assert second["response"]["outcome"]["issue"][0]["expression"][0].startswith("Bundle.entry[1]")
    assert client.get("/fhir/Patient", query_string={"identifier": f"{EHR_MRN}|W-B1"}).get_json()["total"] == 1
    as_transaction = client.post("/fhir", json={**bundle, "type": "transaction"})
    assert as_transaction.status_code in (400, 422)


# --- valid FHIR that does not make a KAP record: refused with an OperationOutcome, never a 5xx ----------------------

MINIMAL = {
    "Patient": {"resourceType": "Patient"},
    "Practitioner": {"resourceType": "Practitioner"},
    "Condition": {"resourceType": "Condition", "subject": {"reference": "Patient/nope"}},
    "Observation": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
    "QuestionnaireResponse": {"resourceType": "QuestionnaireResponse", "status": "completed"},
    "MedicationAdministration": {
        "resourceType": "MedicationAdministration",
        "status": "completed",
        "medicationCodeableConcept": {"text": "x"},
        "subject": {"reference": "Patient/nope"},
        "effectiveDateTime": "2026-03-01T10:00:00Z",
    },
    "Encounter": {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}},
    "Consent": {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"text": "x"},
        "category": [{"text": "x"}],
    },
    "MedicationRequest": {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "x"},
        "subject": {"reference": "Patient/nope"},
    },
    "AdverseEvent": {"resourceType": "AdverseEvent", "actuality": "actual", "subject": {"reference": "Patient/nope"}},
    "MedicationStatement": {
        "resourceType": "MedicationStatement",
        "status": "active",
        "medicationCodeableConcept": {"text": "x"},
        "subject": {"reference": "Patient/nope"},
    },
}


@pytest.mark.parametrize("rtype", sorted(MINIMAL))
def test_minimal_valid_resources_are_refused_cleanly(client: Any, rtype: str) -> None:
    r = client.post(f"/fhir/{rtype}", json=MINIMAL[rtype])
    assert r.status_code < 500, r.get_data(as_text=True)
    if r.status_code >= 400:
        assert r.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("rtype", sorted(t for t in MINIMAL if t != "Practitioner"))
def test_minimal_updates_of_stored_resources_are_refused_cleanly(client: Any, rtype: str) -> None:
    stored = entries(client.get(f"/fhir/{rtype}", query_string={"_count": 1}).get_json())
    if not stored:
        pytest.fail(f"the fixtures hold no {rtype}")
    body = {**MINIMAL[rtype], "id": stored[0]["id"]}
    r = client.put(f"/fhir/{rtype}/{stored[0]['id']}", json=body)
    assert r.status_code < 500, r.get_data(as_text=True)
    assert r.status_code in (200, 400, 405, 409, 412, 422), r.get_data(as_text=True)


def test_a_transaction_updates_by_id_and_creates_any_writable_type(client: Any, app: Flask) -> None:
    episode_id, dose = _dose(client, app, "a-trd-iv-ketamine")
    record_id = dose["identifier"][0]["value"]
    before = client.get(f"/api/v1/episodes/{episode_id}/doses/{record_id}").get_json()["version"]
    changed = copy.deepcopy(dose)
    changed["contained"][0].setdefault("batch", {})["lotNumber"] = "SYN-LOT-TX"
    practitioner = {
        "resourceType": "Practitioner",
        "identifier": [{"system": "https://ehr.example.org/staff", "value": "TX-1"}],
        "name": [{"family": "Transact", "given": ["Lee"]}],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": changed, "request": {"method": "PUT", "url": f"MedicationAdministration/{dose['id']}"}},
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": practitioner,
                "request": {"method": "POST", "url": "Practitioner"},
            },
        ],
    }
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 200, r.get_data(as_text=True)
    first, second = r.get_json()["entry"]
    assert first["response"]["location"].startswith(f"MedicationAdministration/{dose['id']}/_history/")
    assert second["response"]["status"].startswith("201")
    after = client.get(f"/api/v1/episodes/{episode_id}/doses/{record_id}").get_json()
    assert after["version"] == before + 1
    unknown = {
        **bundle,
        "entry": [{"resource": changed, "request": {"method": "PUT", "url": "MedicationAdministration/nope"}}],
    }
    assert client.post("/fhir", json=unknown).status_code == 404


def test_each_write_leaves_one_provenance_naming_what_it_changed(client: Any, app: Flask) -> None:
    created = client.post("/fhir/Patient", json=patient("W-PROV")).get_json()
    latest = {"_count": 20, "_sort": "-_lastUpdated"}
    before = {e["resource"]["id"] for e in client.get("/fhir/Provenance", query_string=latest).get_json()["entry"]}
    updated = client.put(f"/fhir/Patient/{created['id']}", json={**created, "gender": "male"}).get_json()
    after = client.get("/fhir/Provenance", query_string=latest).get_json()["entry"]
    new = [e["resource"] for e in after if e["resource"]["id"] not in before]
    assert len(new) == 1
    assert new[0]["target"] == [{"reference": f"Patient/{created['id']}/_history/{updated['meta']['versionId']}"}]


def test_a_record_write_leaves_one_provenance_with_exactly_the_versions_it_stored(client: Any, app: Flask) -> None:
    _, dose = _dose(client, app, "b-ptsd-im-ketamine")
    latest = {"_count": 20, "_sort": "-_lastUpdated"}
    seen = {e["resource"]["id"] for e in client.get("/fhir/Provenance", query_string=latest).get_json()["entry"]}
    changed = copy.deepcopy(dose)
    changed["contained"][0].setdefault("batch", {})["lotNumber"] = "SYN-LOT-PROV"
    updated = client.put(f"/fhir/MedicationAdministration/{dose['id']}", json=changed).get_json()
    new = [
        e["resource"]
        for e in client.get("/fhir/Provenance", query_string=latest).get_json()["entry"]
        if e["resource"]["id"] not in seen
    ]
    assert len(new) == 1
    targets = [t["reference"] for t in new[0]["target"]]
    assert f"MedicationAdministration/{dose['id']}/_history/{updated['meta']['versionId']}" in targets
    for target in targets:  # each target is a version that exists, and the current one
        rtype, rid, _, version = target.split("/")
        assert client.get(f"/fhir/{rtype}/{rid}").get_json()["meta"]["versionId"] == version
