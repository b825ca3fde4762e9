"""Messages a person understands: query-parameter mistakes name the parameter, a time without offset says to add
one, and a time comes back with the offset it was sent with (a Z as +00:00, as README says)."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.support.app import Api, bearer, token_for

PATIENT = {
    "mrn": {"system": "https://demo-clinic.example.org/fhir/mrn", "value": "SYN-MSG-1"},
    "name": {"family": "Example", "given": ["Sam"]},
    "birth_date": "1985-04-12",
    "gender": "female",
}


def test_a_query_parameter_mistake_names_the_parameter(api: Api):
    answer = api.get("/episodes?limit=abc&offset=-1")
    assert answer.status_code == 422
    problem = answer.get_json()
    assert problem["title"] == "Invalid query parameter"
    assert "query parameter `limit`: not a valid integer" in problem["detail"]
    assert "query parameter `offset`:" in problem["detail"]
    assert {e["field"] for e in problem["errors"]} == {"limit", "offset"}
    unknown = api.get("/episodes?colour=blue").get_json()
    assert "query parameter `colour`: unknown field" in unknown["detail"]


def test_a_time_without_offset_says_to_add_one(api: Api, client: FlaskClient):
    patient = api.created("/patients", PATIENT)
    answer = api.post(
        f"/patients/{patient['id']}/body-weights", {"weight_kg": 70, "measured_at": "2026-03-10T09:00:00"}
    )
    assert answer.status_code == 422
    (error,) = answer.get_json()["errors"]
    assert error["field"] == "measured_at"
    assert "add a UTC offset, e.g. 2026-03-10T09:00:00-05:00" in error["message"]
    assert "measured_at: Has no UTC offset" in answer.get_json()["detail"]
    audit = client.get(
        "/api/v1/audit-events?since=2026-03-10T09:00:00",
        headers=bearer(token_for(client.application, scope="system/AuditEvent.rs")),
    )
    assert audit.status_code == 422 and "query parameter `since`: has no UTC offset" in audit.get_json()["detail"]


def test_times_come_back_with_the_offset_they_were_sent_with(api: Api):
    patient = api.created("/patients", PATIENT)
    sent = {"-05:00": "2026-03-10T09:00:00-05:00", "+05:30": "2026-03-10T09:00:00+05:30", "Z": "2026-03-10T09:00:00Z"}
    for offset, time in sent.items():
        created = api.created(f"/patients/{patient['id']}/body-weights", {"weight_kg": 70, "measured_at": time})
        read = api.get(f"/patients/{patient['id']}/body-weights/{created['id']}").get_json()
        expected = time if offset != "Z" else "2026-03-10T09:00:00+00:00"  # README: Z comes back as +00:00
        assert created["measured_at"] == read["measured_at"] == expected
