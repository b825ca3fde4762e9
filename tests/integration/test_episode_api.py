"""The domain API end to end in-process, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json

from tests.support.app import Api
from tests.support.seed import PATIENT, dosing_session_body, seed_episode


def test_a_whole_dosing_session_is_one_request_and_the_episode_reads_back_whole(api: Api):
    ids = seed_episode(api)
    session = api.created(f"/episodes/{ids['episode']}/sessions", dosing_session_body(ids))
    (dose,) = session["doses"]
    assert dose["off_label"] is True and dose["dose_mg_per_kg"] == 0.5
    assert len(session["monitoring_readings"]) == 2

    response = api.get(f"/episodes/{ids['episode']}")
    assert response.status_code == 200 and response.headers["ETag"] == f'W/"{response.get_json()["version"]}"'
    episode = response.get_json()
    assert episode["phase"] == "dosing" and episode["status"] == "active"
    assert [s["id"] for s in episode["sessions"]] == [session["id"]]
    assert [d["id"] for d in episode["doses"]] == [dose["id"]]
    assert episode["open_flags"] == []
    kinds = [entry["kind"] for entry in episode["timeline"]]
    assert kinds.index("consent") < kinds.index("session") < kinds.index("dose")


def test_a_dose_that_breaks_a_rule_is_stored_and_flagged_then_acknowledged(api: Api):
    ids = seed_episode(api)
    session = api.created(f"/episodes/{ids['episode']}/sessions", dosing_session_body(ids, with_pre_dose_bp=False))
    flags = api.get(f"/episodes/{ids['episode']}/safety-flags?status=open").get_json()["items"]
    assert [f["rule_id"] for f in flags] == ["no-pre-dose-blood-pressure"]
    assert session["doses"][0]["id"] in flags[0]["record_ids"]

    ack = api.post(
        f"/episodes/{ids['episode']}/safety-flags/{flags[0]['id']}/acknowledgement",
        {"by": ids["prescriber"], "comment": "BP taken, entered late on paper"},
    )
    assert ack.status_code == 200
    assert ack.get_json()["status"] == "acknowledged" and ack.get_json()["acknowledgement"]["by"] == ids["prescriber"]
    assert api.get(f"/episodes/{ids['episode']}").get_json()["open_flags"] == []
    again = api.post(
        f"/episodes/{ids['episode']}/safety-flags/{flags[0]['id']}/acknowledgement", {"by": ids["prescriber"]}
    )
    assert again.status_code == 409


def test_acknowledging_needs_a_registered_practitioner(api: Api):
    ids = seed_episode(api)
    api.created(f"/episodes/{ids['episode']}/sessions", dosing_session_body(ids, with_pre_dose_bp=False))
    (flag,) = api.get(f"/episodes/{ids['episode']}/safety-flags").get_json()["items"]
    response = api.post(f"/episodes/{ids['episode']}/safety-flags/{flag['id']}/acknowledgement", {"by": "nobody"})
    assert response.status_code == 422 and response.get_json()["errors"][0]["field"] == "by"


def test_a_post_retried_with_the_same_idempotency_key_creates_one_record(api: Api):
    ids = seed_episode(api)
    body = dosing_session_body(ids)
    first = api.post(f"/episodes/{ids['episode']}/sessions", body, headers={"Idempotency-Key": "k-1"})
    second = api.post(f"/episodes/{ids['episode']}/sessions", body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == second.status_code == 201
    assert first.get_json() == second.get_json() and second.headers["Idempotent-Replayed"] == "true"
    assert len(api.get(f"/episodes/{ids['episode']}/sessions").get_json()["items"]) == 1
    assert len(api.get(f"/episodes/{ids['episode']}/doses").get_json()["items"]) == 1

    other = api.post(
        f"/episodes/{ids['episode']}/sessions",
        {**body, "start": "2026-02-10T09:01:00-05:00"},
        headers={"Idempotency-Key": "k-1"},
    )
    assert other.status_code == 422 and other.mimetype == "application/problem+json"
    assert len(api.get(f"/episodes/{ids['episode']}/sessions").get_json()["items"]) == 1


def test_amendments_need_a_reason_honour_if_match_and_keep_history(api: Api):
    ids = seed_episode(api)
    session = api.created(f"/episodes/{ids['episode']}/sessions", dosing_session_body(ids))
    dose = session["doses"][0]
    path = f"/episodes/{ids['episode']}/doses/{dose['id']}"
    body = {
        k: v
        for k, v in dose.items()
        if k not in ("id", "version", "entered_in_error", "recorded_at", "updated_at", "off_label", "dose_mg_per_kg")
    }
    body["controlled_substance"] = {**body["controlled_substance"], "lot_number": "LOT-SYN-2"}

    assert api.put(path, body).status_code == 422  # no amendment_reason
    stale = api.put(path, {**body, "amendment_reason": "lot typo"}, headers={"If-Match": 'W/"7"'})
    assert stale.status_code == 412
    amended = api.put(path, {**body, "amendment_reason": "lot typo"}, headers={"If-Match": 'W/"1"'})
    assert amended.status_code == 200 and amended.headers["ETag"] == 'W/"2"'
    assert amended.get_json()["controlled_substance"]["lot_number"] == "LOT-SYN-2"

    history = api.get(f"{path}/history").get_json()["items"]
    assert [(h["version"], h["change"], h["reason"]) for h in history] == [
        (1, "created", None),
        (2, "amended", "lot typo"),
    ]
    assert history[0]["data"]["controlled_substance"]["lot_number"] == "LOT-SYN-1"


def test_entered_in_error_keeps_the_record_and_takes_it_out_of_the_rules(api: Api):
    ids = seed_episode(api)
    session = api.created(f"/episodes/{ids['episode']}/sessions", dosing_session_body(ids, dose_mg=70))
    assert [f["rule_id"] for f in api.get(f"/episodes/{ids['episode']}").get_json()["open_flags"]] == [
        "racemic-dose-above-max-mg-per-kg"
    ]
    dose_path = f"/episodes/{ids['episode']}/doses/{session['doses'][0]['id']}"
    marked = api.post(f"{dose_path}/entered-in-error", {"reason": "recorded on the wrong patient"})
    assert marked.status_code == 200 and marked.get_json()["entered_in_error"] is True
    assert api.get(dose_path).get_json()["entered_in_error"] is True
    assert api.get(f"/episodes/{ids['episode']}").get_json()["open_flags"] == []
    flags = api.get(f"/episodes/{ids['episode']}/safety-flags").get_json()["items"]
    assert [f["status"] for f in flags] == ["resolved"]
    assert api.post(f"{dose_path}/entered-in-error", {"reason": "again"}).status_code == 409


def test_psychotherapy_notes_are_stored_but_never_returned(api: Api, app):
    ids = seed_episode(api)
    session = api.created(f"/episodes/{ids['episode']}/sessions", dosing_session_body(ids))
    assert session["has_psychotherapy_notes"] is True
    bodies = [
        api.get(f"/episodes/{ids['episode']}").get_data(as_text=True),
        api.get(f"/episodes/{ids['episode']}/sessions").get_data(as_text=True),
        api.get(f"/episodes/{ids['episode']}/sessions/{session['id']}").get_data(as_text=True),
        api.get(f"/episodes/{ids['episode']}/sessions/{session['id']}/history").get_data(as_text=True),
        json.dumps(session),
    ]
    assert not [b for b in bodies if "canary-notes-1" in b]
    # ...and stored: the note is in the database, kept apart from every response.
    from sqlalchemy import select

    from service.adapters import orm

    with app.extensions["kapfhir.engine"].connect() as connection:
        data = connection.execute(
            select(orm.clinical_records.c.data).where(orm.clinical_records.c.id == session["id"])
        ).scalar_one()
    assert data["psychotherapy_notes"] == "SYNTHETIC NOTE canary-notes-1"


def test_outcome_totals_are_computed_and_a_disagreeing_total_is_refused(api: Api):
    ids = seed_episode(api)
    path = f"/episodes/{ids['episode']}/outcome-measures"
    body = {
        "instrument": "phq-9",
        "administered_at": "2026-02-09T09:00:00-05:00",
        "items": [2, 2, 2, 2, 2, 1, 1, 1, 0],
        "difficulty": 2,
    }
    wrong = api.post(path, {**body, "total": 14})
    assert wrong.status_code == 422 and wrong.get_json()["errors"][0]["field"] == "total"
    measure = api.created(path, {**body, "total": 13})
    assert (measure["total"], measure["severity_band"]) == (13, "moderate")
    assert api.get(f"/episodes/{ids['episode']}").get_json()["open_flags"] == []

    risky = api.created(path, {**body, "items": [0, 0, 0, 0, 0, 0, 0, 0, 1]})
    flags = api.get(f"/episodes/{ids['episode']}/safety-flags").get_json()["items"]
    assert [(f["rule_id"], f["severity"], f["record_ids"]) for f in flags] == [
        ("suicide-risk-positive", "high", [risky["id"]])
    ]


def test_a_refused_transition_says_where_the_episode_is_and_where_it_may_go(api: Api):
    ids = seed_episode(api)
    response = api.post(
        f"/episodes/{ids['episode']}/phase-transitions", {"to_phase": "maintenance", "at": "2026-03-01T09:00:00-05:00"}
    )
    assert response.status_code == 409 and response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["current_phase"] == "dosing"
    assert problem["allowed_next_phases"] == ["integration", "discontinued"]


def test_withdrawing_consent_flags_later_doses(api: Api):
    ids = seed_episode(api)
    withdrawn = api.post(
        f"/episodes/{ids['episode']}/consents/{ids['consent']}/withdrawal",
        {"at": "2026-02-09T12:00:00-05:00", "reason": "patient withdrew"},
    )
    assert withdrawn.status_code == 200 and withdrawn.get_json()["withdrawn_at"].startswith("2026-02-09T12:00:00")
    api.created(f"/episodes/{ids['episode']}/sessions", dosing_session_body(ids))
    flags = api.get(f"/episodes/{ids['episode']}").get_json()["open_flags"]
    assert [f["rule_id"] for f in flags] == ["dose-without-active-consent"]
    history = api.get(f"/episodes/{ids['episode']}/consents/{ids['consent']}/history").get_json()["items"]
    assert [h["change"] for h in history] == ["created", "withdrawn"]


def test_a_failing_nested_record_stores_nothing_of_the_request(api: Api):
    ids = seed_episode(api)
    body = dosing_session_body(ids)
    body["doses"][0]["administered_by_id"] = "no-such-practitioner"
    response = api.post(f"/episodes/{ids['episode']}/sessions", body)
    assert response.status_code == 422
    assert response.get_json()["errors"] == [
        {"field": "doses[0].administered_by_id", "message": "no practitioner no-such-practitioner"}
    ]
    episode = api.get(f"/episodes/{ids['episode']}").get_json()
    assert episode["sessions"] == [] and episode["doses"] == [] and episode["monitoring_readings"] == []


def test_times_keep_their_offset(api: Api):
    ids = seed_episode(api)
    session = api.created(f"/episodes/{ids['episode']}/sessions", dosing_session_body(ids))
    assert session["start"] == "2026-02-10T09:00:00-05:00"
    assert api.get(f"/episodes/{ids['episode']}/doses").get_json()["items"][0]["start"] == "2026-02-10T09:15:00-05:00"


def test_episodes_list_filters_and_pages(api: Api):
    ids = seed_episode(api)
    other_patient = api.created("/patients", {**PATIENT, "mrn": {**PATIENT["mrn"], "value": "SYN-9002"}})["id"]
    for _ in range(3):
        api.created(
            "/episodes",
            {
                "patient_id": other_patient,
                "period_start": "2026-01-05T09:00:00+00:00",
                "indications": [{"kind": "anxiety", "icd10cm": "F41.1"}],
                "status": "planned",
            },
        )
    page = api.get("/episodes?limit=2&offset=0").get_json()
    assert page["total"] == 4 and len(page["items"]) == 2
    assert api.get(f"/episodes?patient_id={ids['patient']}").get_json()["total"] == 1
    assert api.get("/episodes?phase=dosing").get_json()["total"] == 1
    assert api.get("/episodes?status=planned").get_json()["total"] == 3
    assert api.get("/episodes?limit=0").status_code == 422


def test_sessions_filter_by_kind(api: Api):
    ids = seed_episode(api)
    api.created(f"/episodes/{ids['episode']}/sessions", dosing_session_body(ids))
    api.created(
        f"/episodes/{ids['episode']}/sessions",
        {"kind": "integration", "status": "completed", "start": "2026-02-11T09:00:00-05:00", "modality": "telehealth"},
    )
    assert [
        s["kind"] for s in api.get(f"/episodes/{ids['episode']}/sessions?kind=integration").get_json()["items"]
    ] == ["integration"]
    assert api.get(f"/episodes/{ids['episode']}/sessions?kind=nope").status_code == 422


def test_patients_are_amended_with_history_and_mrns_stay_unique(api: Api):
    patient = api.created("/patients", PATIENT)
    assert api.post("/patients", PATIENT).status_code == 409
    amended = api.put(
        f"/patients/{patient['id']}",
        {
            **{k: v for k, v in patient.items() if k not in ("id", "version", "recorded_at", "updated_at")},
            "birth_date": "1984-05-18",
            "amendment_reason": "typo",
        },
        headers={"If-Match": 'W/"1"'},
    )
    assert amended.status_code == 200 and amended.get_json()["version"] == 2
    assert [h["change"] for h in api.get(f"/patients/{patient['id']}/history").get_json()["items"]] == [
        "created",
        "amended",
    ]


def test_a_dose_fills_its_weight_from_the_latest_body_weight(api: Api):
    ids = seed_episode(api)
    api.created(
        f"/patients/{ids['patient']}/body-weights", {"measured_at": "2026-02-01T09:00:00-05:00", "weight_kg": 80}
    )
    body = dosing_session_body(ids, dose_mg=40)
    del body["doses"][0]["weight_kg"]
    session = api.created(f"/episodes/{ids['episode']}/sessions", body)
    assert (session["doses"][0]["weight_kg"], session["doses"][0]["dose_mg_per_kg"]) == (80, 0.5)


def test_the_episode_history_shows_the_episode_without_the_projections_bookkeeping(api: Api):
    ids = seed_episode(api)  # created, then moved through its phases: several versions
    history = api.get(f"/episodes/{ids['episode']}/history").get_json()["items"]
    assert len(history) > 1
    for entry in history:
        assert {"status", "phase", "indications", "care_team", "version"} <= entry["data"].keys()
        assert not {"header_version", "header_updated_at"} & entry["data"].keys(), entry["data"].keys()
