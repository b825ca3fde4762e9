"""PHI canaries: every patient-identifying field and every note of a whole episode carries a unique string; none
of them may surface in the logs, in the audit trail or in any stored error text."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from sqlalchemy import select

from service.adapters import orm
from service.entrypoints.logs import JsonFormatter
from tests.support.app import Api, bearer, make_app, token_for

CANARIES: dict[str, str] = {}


def canary(name: str) -> str:
    value = f"CANARY{len(CANARIES):02d}x{name}"
    CANARIES[name] = value
    return value


def test_no_canary_reaches_logs_audit_or_stored_errors(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(JsonFormatter())
    logging.getLogger("kapfhir").addHandler(handler)
    app = make_app(f"sqlite:///{tmp_path}/kapfhir.db")
    api = Api(app.test_client())
    prescriber = api.created(
        "/practitioners",
        {
            "name": {"family": canary("prescriber_family"), "given": [canary("prescriber_given")]},
            "roles": ["prescriber"],
        },
    )["id"]
    patient_body = {
        "mrn": {"system": "https://demo-clinic.example.org/fhir/mrn", "value": canary("mrn")},
        "name": {"family": canary("family"), "given": [canary("given")]},
        "birth_date": "1979-01-02",
        "gender": "female",
    }
    patient = api.created("/patients", patient_body)["id"]
    episode = api.created(
        "/episodes",
        {
            "patient_id": patient,
            "period_start": "2026-01-05T09:00:00-05:00",
            "indications": [{"kind": "ptsd", "icd10cm": "F43.12", "display": canary("indication_display")}],
            "care_team": [{"practitioner_id": prescriber, "role": "prescriber"}],
        },
    )["id"]
    for phase, at in (("preparation", "2026-01-06T09:00:00-05:00"), ("dosing", "2026-01-07T09:00:00-05:00")):
        api.post(f"/episodes/{episode}/phase-transitions", {"to_phase": phase, "at": at, "reason": canary(phase)})
    consent = api.created(
        f"/episodes/{episode}/consents",
        {
            "form_url": "https://demo-clinic.example.org/forms/kap",
            "form_version": "1",
            "signed_at": "2026-01-06T10:00:00-05:00",
            "witness_name": canary("witness"),
            "off_label_use_acknowledged": True,
            "routes_covered": ["intramuscular"],
        },
    )["id"]
    api.created(
        f"/episodes/{episode}/dosing-orders",
        {
            "medication": "racemic-ketamine",
            "route": "intramuscular",
            "dose_value": 0.5,
            "dose_unit": "mg/kg",
            "frequency": "weekly",
            "number_of_sessions": 3,
            "prescriber_id": prescriber,
            "ordered_at": "2026-01-06T11:00:00-05:00",
            "off_label_reason": canary("off_label_reason"),
        },
    )
    api.created(
        f"/episodes/{episode}/sessions",
        {
            "kind": "dosing",
            "status": "completed",
            "start": "2026-01-08T09:00:00-05:00",
            "psychotherapy_notes": canary("psychotherapy_note"),
            "doses": [
                {
                    "medication": "racemic-ketamine",
                    "route": "intramuscular",
                    "dose_mg": 80,
                    "weight_kg": 70,
                    "start": "2026-01-08T09:10:00-05:00",
                    "override_reason": canary("override"),
                    "controlled_substance": {"lot_number": canary("lot")},
                }
            ],
            "side_effects": [
                {
                    "kind": "other",
                    "other_text": canary("side_effect_text"),
                    "severity": "mild",
                    "onset_at": "2026-01-08T09:40:00-05:00",
                }
            ],
        },
    )
    api.created(
        f"/episodes/{episode}/concomitant-medications",
        {"medication_class": "other", "name": canary("medication_name"), "dose_text": canary("medication_dose")},
    )
    api.put(
        f"/patients/{patient}",
        {**patient_body, "name": {"family": canary("family_amended")}, "amendment_reason": canary("amendment_reason")},
    )
    api.post(
        f"/episodes/{episode}/consents/{consent}/withdrawal",
        {"at": "2026-01-09T09:00:00-05:00", "reason": canary("withdrawal_reason")},
    )
    for flag in api.get(f"/episodes/{episode}/safety-flags").get_json()["items"]:
        api.post(
            f"/episodes/{episode}/safety-flags/{flag['id']}/acknowledgement",
            {"by": prescriber, "comment": canary(f"ack_{flag['rule_id']}")},
        )
    # Refused and failing requests that carry patient data too:
    assert api.post("/patients", {**patient_body, "name": {"family": canary("refused_family")}}).status_code == 409
    bad = api.post(
        f"/episodes/{episode}/sessions",
        {
            "kind": "dosing",
            "status": "completed",
            "start": "2026-01-08T09:00:00-05:00",
            "psychotherapy_notes": canary("note_of_refused_session"),
            "doses": [{"dose_mg": -1}],
        },
    )
    assert bad.status_code == 422
    assert app.test_client().post("/api/v1/patients", json=patient_body).status_code == 401
    other = Api(app.test_client(), token_for(app, clinic="other"))
    assert other.get(f"/patients/{patient}").status_code == 404
    malformed = app.test_client().post(
        "/api/v1/patients",
        data='{"name": "' + canary("malformed") + '",',
        content_type="application/json",
        headers=bearer(token_for(app)),
    )
    assert malformed.status_code == 400

    logging.getLogger("kapfhir").removeHandler(handler)
    logs = captured.getvalue() + capfd.readouterr().err + "\n".join(r.getMessage() for r in caplog.records)
    assert logs.count('"msg": "request"') >= 15  # the logs were captured
    with app.extensions["kapfhir.engine"].connect() as connection:
        audit = json.dumps([dict(r._mapping) for r in connection.execute(select(orm.audit_events))], default=str)
    assert audit.count('"route"') >= 15
    for name, value in CANARIES.items():
        assert value not in logs, f"canary {name} in the logs"
        assert value not in audit, f"canary {name} in the audit trail"
