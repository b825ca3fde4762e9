"""Behaviours found while writing the fixtures, and now fixed: appointments and consent validity may lie ahead,
errors on nested records name their place in the request, and a taken MRN is a 409 naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.fixture_loader import load_fixture, replay
from tests.support.fixture_replay import INVALID, api_sender, sqlite_app


@pytest.fixture
def base(tmp_path: Path) -> tuple[Any, dict[str, str]]:
    client = sqlite_app(tmp_path).test_client()
    return client, replay(load_fixture(INVALID / "_base.json"), api_sender(client))


def _post(client: Any, path: str, body: Any) -> Any:
    return client.post("/api/v1" + path, json=body)


DOSE = {
    "medication": "racemic-ketamine",
    "route": "intravenous",
    "dose_mg": 37.5,
    "weight_kg": 75,
    "infusion_duration_min": 40,
    "start": "2026-03-02T10:10:00-05:00",
    "end": "2026-03-02T10:50:00-05:00",
}


def test_consent_valid_until_may_lie_in_the_future(base: tuple[Any, dict[str, str]]) -> None:
    client, ids = base
    r = _post(
        client,
        f"/episodes/{ids['episode']}/consents",
        {
            "form_url": "https://demo-clinic.example.org/forms/kap-consent",
            "form_version": "2026.2",
            "signed_at": "2026-03-02T08:40:00-05:00",
            "off_label_use_acknowledged": True,
            "routes_covered": ["intravenous"],
            "valid_until": "2027-09-02T08:40:00-05:00",
        },
    )
    assert r.status_code == 201, r.get_json()


def test_a_planned_session_may_be_scheduled_ahead(base: tuple[Any, dict[str, str]]) -> None:
    client, ids = base
    r = _post(
        client,
        f"/episodes/{ids['episode']}/sessions",
        {"kind": "preparation", "status": "planned", "start": "2027-01-04T10:00:00-05:00"},
    )
    assert r.status_code == 201, r.get_json()


def test_nested_dose_time_error_names_the_nested_path(base: tuple[Any, dict[str, str]]) -> None:
    client, ids = base
    r = _post(
        client,
        f"/episodes/{ids['episode']}/sessions",
        {
            "kind": "dosing",
            "status": "completed",
            "start": "2026-03-02T10:00:00-05:00",
            "doses": [{**DOSE, "end": "2026-03-02T10:00:00-05:00"}],
        },
    )
    assert r.status_code == 422
    assert "doses[0].end" in {e["field"] for e in r.get_json()["errors"]}, r.get_json()


def test_nested_dose_unknown_practitioner_names_the_nested_path(base: tuple[Any, dict[str, str]]) -> None:
    client, ids = base
    r = _post(
        client,
        f"/episodes/{ids['episode']}/sessions",
        {
            "kind": "dosing",
            "status": "completed",
            "start": "2026-03-02T10:00:00-05:00",
            "doses": [{**DOSE, "administered_by_id": "no-such-practitioner"}],
        },
    )
    assert r.status_code == 422
    assert "doses[0].administered_by_id" in {e["field"] for e in r.get_json()["errors"]}, r.get_json()


def test_duplicate_mrn_names_the_field(base: tuple[Any, dict[str, str]]) -> None:
    client, _ = base
    r = _post(
        client,
        "/patients",
        {
            "mrn": {"system": "https://demo-clinic.example.org/fhir/mrn", "value": "SYN-9001"},
            "name": {"family": "Twin"},
            "birth_date": "1990-01-01",
            "gender": "unknown",
        },
    )
    assert r.status_code == 409
    assert "mrn" in {e["field"] for e in r.get_json().get("errors", [])}, r.get_json()


def test_a_nested_side_effect_names_its_dose_by_position(base: tuple[Any, dict[str, str]]) -> None:
    client, ids = base
    r = _post(
        client,
        f"/episodes/{ids['episode']}/sessions",
        {
            "kind": "dosing",
            "status": "in-progress",
            "start": "2026-03-02T10:00:00-05:00",
            "doses": [DOSE],
            "side_effects": [
                {"kind": "nausea", "severity": "mild", "onset_at": "2026-03-02T10:30:00-05:00", "dose_index": 0}
            ],
        },
    )
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert body["side_effects"][0]["dose_id"] == body["doses"][0]["id"]
    wrong = _post(
        client,
        f"/episodes/{ids['episode']}/sessions",
        {
            "kind": "dosing",
            "status": "in-progress",
            "start": "2026-03-02T10:00:00-05:00",
            "doses": [DOSE],
            "side_effects": [
                {"kind": "nausea", "severity": "mild", "onset_at": "2026-03-02T10:30:00-05:00", "dose_index": 1}
            ],
        },
    )
    assert wrong.status_code == 422
    assert {e["field"] for e in wrong.get_json()["errors"]} == {"side_effects[0].dose_index"}
