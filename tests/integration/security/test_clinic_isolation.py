"""No clinic ever sees another clinic's data: every route of the URL map, called with a clinic-B token against
clinic-A ids, answers 404 (or, for lists, nothing of A), and A's data is unchanged afterwards."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from service.entrypoints.auth import is_public
from service.entrypoints.cli import ensure_clinic
from tests.support.app import Api, make_app, token_for
from tests.support.seed import PATIENT, dosing_session_body, seed_episode

AT = "2026-02-20T09:00:00-05:00"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Flask:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/kapfhir.db"
    else:
        url = request.getfixturevalue("postgres").create_database("isolation")
    application = make_app(url)
    settings = application.extensions["kapfhir"].settings
    ensure_clinic(settings, "clinic-b", "Clinic B", "https://clinic-b.example.org/fhir/id")
    return application


def _clinic_a(api: Api) -> dict[str, str]:
    ids = seed_episode(api)
    session = api.created(f"/episodes/{ids['episode']}/sessions", dosing_session_body(ids, with_pre_dose_bp=False))
    episode = ids["episode"]
    ids["session"] = session["id"]
    ids["dose"] = session["doses"][0]["id"]
    ids["reading"] = session["monitoring_readings"][0]["id"]
    ids["order"] = api.created(f"/episodes/{episode}/dosing-orders", order_body(ids))["id"]
    ids["side_effect"] = api.created(f"/episodes/{episode}/side-effects", side_effect_body(ids))["id"]
    ids["measure"] = api.created(f"/episodes/{episode}/outcome-measures", measure_body(ids))["id"]
    ids["medication"] = api.created(f"/episodes/{episode}/concomitant-medications", medication_body(ids))["id"]
    ids["weight"] = api.created(f"/patients/{ids['patient']}/body-weights", weight_body(ids))["id"]
    ids["privacy_consent"] = api.created(f"/patients/{ids['patient']}/privacy-consents", privacy_body(ids))["id"]
    fhir = api.client.get("/fhir/Patient", headers={"Authorization": f"Bearer {api.token}"}).get_json()
    ids["fhir_patient"] = fhir["entry"][0]["resource"]["id"]
    ids["flag"] = api.get(f"/episodes/{episode}/safety-flags").get_json()["items"][0]["id"]
    return ids


def order_body(ids: dict[str, str]) -> dict[str, Any]:
    return {
        "medication": "racemic-ketamine",
        "route": "intravenous",
        "dose_value": 0.5,
        "dose_unit": "mg/kg",
        "frequency": "twice weekly",
        "number_of_sessions": 6,
        "prescriber_id": ids["prescriber"],
        "ordered_at": "2026-02-05T09:00:00-05:00",
    }


def side_effect_body(ids: dict[str, str]) -> dict[str, Any]:
    return {"kind": "nausea", "severity": "mild", "onset_at": "2026-02-10T09:30:00-05:00"}


def measure_body(ids: dict[str, str]) -> dict[str, Any]:
    return {"instrument": "gad-7", "administered_at": "2026-02-09T09:00:00-05:00", "items": [1, 1, 1, 1, 1, 1, 1]}


def medication_body(ids: dict[str, str]) -> dict[str, Any]:
    return {"medication_class": "benzodiazepine", "name": "lorazepam"}


def weight_body(ids: dict[str, str]) -> dict[str, Any]:
    return {"measured_at": "2026-02-01T09:00:00-05:00", "weight_kg": 70}


def privacy_body(ids: dict[str, str]) -> dict[str, Any]:
    return {
        "recipient_name": "Example EHR",
        "signed_at": "2026-02-01T09:00:00-05:00",
        "recipient_identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"},
    }


def _record_body(collection: str, ids: dict[str, str]) -> dict[str, Any]:
    session = dosing_session_body(ids)
    dose = {**session["doses"][0], "session_id": ids["session"]}
    reading = {**session["monitoring_readings"][0], "session_id": ids["session"]}
    session = {k: v for k, v in session.items() if k not in ("doses", "monitoring_readings")}
    consent = {
        "form_url": "https://demo-clinic.example.org/forms/kap-consent",
        "form_version": "2026-01",
        "signed_at": "2026-02-03T10:00:00-05:00",
        "off_label_use_acknowledged": True,
        "routes_covered": ["intravenous"],
    }
    return {
        "consents": consent,
        "dosing-orders": order_body(ids),
        "sessions": session,
        "doses": dose,
        "monitoring-readings": reading,
        "side-effects": side_effect_body(ids),
        "outcome-measures": measure_body(ids),
        "concomitant-medications": medication_body(ids),
    }[collection]


RECORD_ID_KEY = {
    "consents": "consent",
    "dosing-orders": "order",
    "sessions": "session",
    "doses": "dose",
    "monitoring-readings": "reading",
    "side-effects": "side_effect",
    "outcome-measures": "measure",
    "concomitant-medications": "medication",
}


FHIR_PATIENT = {
    "resourceType": "Patient",
    "name": [{"family": "Isolation", "given": ["B"]}],
    "gender": "female",
    "birthDate": "1980-01-01",
}


def _request_for(rule: Any, method: str, ids: dict[str, str]) -> tuple[str, dict[str, Any] | None]:
    collection = (rule.defaults or {}).get("collection")
    values = {
        "episode_id": ids["episode"],
        "patient_id": ids["patient"],
        "practitioner_id": ids["prescriber"],
        "consent_id": ids["consent"],
        "flag_id": ids["flag"],
        "record_id": ids[RECORD_ID_KEY[collection]] if collection else "",
        "session_id": ids["session"],  # the REMS form of A's session
        # /fhir routes: A's Patient, by its FHIR id
        "rtype": "Patient",
        "rid": ids["fhir_patient"],
        "vid": "1",
    }
    if rule.rule.endswith("/body-weights/<record_id>"):
        values["record_id"] = ids["weight"]
    if "/privacy-consents/" in rule.rule:
        values["consent_id"] = ids["privacy_consent"]
    path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: values[m.group(1)], rule.rule)
    if method == "GET":
        return path, None
    endpoint = rule.endpoint
    patient = {"resourceType": "Patient", "gender": "female"}
    bodies: dict[str, Any] = {
        # a batch that only reads is refused by this server (it ingests whole episodes): nothing of A can come back
        "fhir.transaction": {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": f"Patient/{ids['fhir_patient']}"}}],
        },
        "fhir.validate": patient,
        "fhir.validate_type": patient,
        # The same NPI and MRN as clinic A's: uniqueness is per clinic, so B registers its own.
        "api.register_practitioner": {"name": {"family": "B"}, "npi": "1234567893", "roles": ["nurse"]},
        "api.register_patient": PATIENT,
        # A's patient id, referenced from B: to B it does not exist.
        "api.open_episode": {
            "patient_id": ids["patient"],
            "period_start": AT,
            "indications": [{"kind": "anxiety", "icd10cm": "F41.1"}],
        },
        "api.amend_patient": {**PATIENT, "amendment_reason": "isolation test"},
        "api.record_body_weight": weight_body(ids),
        "api.record_privacy_consent": privacy_body(ids),
        "api.withdraw_privacy_consent": {"at": AT, "reason": "isolation test"},
        "api.amend_episode": {
            "indications": [{"kind": "anxiety", "icd10cm": "F41.1"}],
            "care_team": [],
            "status": "active",
            "amendment_reason": "isolation test",
        },
        "api.transition_phase": {"to_phase": "integration", "at": AT},
        "api.withdraw_consent": {"at": AT, "reason": "isolation test"},
        "api.acknowledge_safety_flag": {"by": ids["prescriber"]},
        "api.mark_entered_in_error": {"reason": "isolation test"},
        # FHIR writes: B's own patient with A's MRN is B's alone; A's resources are unknown to B
        "fhir.transaction_slash": {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": f"Patient/{ids['fhir_patient']}"}}],
        },
        "fhir.create": {**FHIR_PATIENT, "identifier": [{**PATIENT["mrn"], "value": "SYN-9001-B"}]},
        "fhir.update": {**FHIR_PATIENT, "id": ids["fhir_patient"]},
        "fhir.conditional_update": FHIR_PATIENT,
        "fhir.patch": [{"op": "replace", "path": "/gender", "value": "other"}],
        # B's own healthcare setting: A's stays as it is (the snapshot below).
        "api.set_healthcare_setting": {"time_zone": "America/Denver", "city": "Elsewhere"},
        "api.submit_rems_form": {"channel": "fax", "submitted_at": AT, "submitted_by": ids["prescriber"]},
    }
    if endpoint == "api.add_record":
        return path, _record_body(collection, ids)
    if endpoint == "api.amend_record":
        return path, {**_record_body(collection, ids), "amendment_reason": "isolation test"}
    return path, bodies.get(endpoint)


def _snapshot(api: Api, ids: dict[str, str]) -> str:
    parts = [
        api.get(f"/episodes/{ids['episode']}").get_json(),
        api.get(f"/patients/{ids['patient']}").get_json(),
        api.get(f"/patients/{ids['patient']}/body-weights").get_json(),
        api.get(f"/practitioners/{ids['prescriber']}").get_json(),
    ]
    return json.dumps(parts, sort_keys=True)


def test_clinic_b_reaches_nothing_of_clinic_a_on_any_route(app: Flask):
    clinic_a = Api(app.test_client())
    ids = _clinic_a(clinic_a)
    before = _snapshot(clinic_a, ids)
    clinic_b = Api(app.test_client(), token_for(app, clinic="clinic-b", scope="system/*.cruds"))
    a_ids = set(ids.values())
    checked = []
    sent = ""
    for rule in app.url_map.iter_rules():
        if is_public(rule.endpoint):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            path, body = _request_for(rule, method, ids)
            headers = {"Authorization": f"Bearer {clinic_b.token}"}
            response = clinic_b.client.open(path, method=method, json=body, headers=headers)
            text = response.get_data(as_text=True)
            checked.append(f"{method} {rule.rule}")
            if rule.endpoint == "api.open_episode":
                assert response.status_code == 422 and response.get_json()["errors"][0]["field"] == "patient_id"
            elif rule.endpoint in ("fhir.transaction", "fhir.transaction_slash"):
                # a batch answers per entry: its read-only entry is refused on its own
                entries = response.get_json()["entry"]
                assert response.status_code == 200 and entries[0]["response"]["status"].startswith("4"), text[:300]
            elif rule.endpoint == "fhir.conditional_update":
                # no search criteria: refused
                assert 400 <= response.status_code < 500, (method, rule.rule, response.status_code, text[:300])
            elif rule.endpoint == "fhir.delete":
                # patients are never deleted: the same 405 whoever holds the id
                assert response.status_code == 405, (method, rule.rule, response.status_code, text[:300])
            elif rule.endpoint in ("fhir.validate_type",):
                assert response.status_code == 200, (method, rule.rule, response.status_code, text[:300])
            elif rule.arguments - set(rule.defaults or {}) - {"rtype"}:
                assert response.status_code == 404, (method, rule.rule, response.status_code, text[:300])
            else:
                assert response.status_code in (200, 201), (method, rule.rule, response.status_code, text[:300])
            # B may see back what B itself sent (an error echoing its value, its own audit trail); anything else
            # of A's is a leak.
            sent += path + json.dumps(body)
            leaked = [i for i in a_ids if i in text and i not in sent]
            assert leaked == [], (method, rule.rule, leaked)
    assert len(checked) >= 60
    assert _snapshot(clinic_a, ids) == before
