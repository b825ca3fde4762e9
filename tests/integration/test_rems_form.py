"""The Spravato REMS Patient Monitoring Form (issue 16) through the real app: derived from the esketamine fixture
episode (fixtures/episodes/c-esketamine-rems.json), complete, traced to records, printable (the PDF is rendered with
pdftoppm and read back with pdftotext), sent (idempotently), amended when the record changes, listed when due, and
served under /fhir (Questionnaire, QuestionnaireResponses, Tasks) where each QuestionnaireResponse validates against
the Questionnaire."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from service.fixture_loader import load_fixture, replay
from tests.support.app import authorized_app

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_C = ROOT / "fixtures" / "episodes" / "c-esketamine-rems.json"
FIXTURE_A = ROOT / "fixtures" / "episodes" / "a-trd-iv-ketamine.json"
QUESTIONNAIRE = "https://kapfhir.example.org/fhir/Questionnaire/spravato-rems-patient-monitoring"
BP_40 = "blood pressure about 40 minutes after the dose"


def _sender(client: Any):
    def send(method: str, path: str, body: Any) -> tuple[int, Any]:
        r = client.open("/api/v1" + path, method=method, json=body)
        return r.status_code, r.get_json(silent=True)

    return send


def _form_url(ids: dict[str, str], session: str) -> str:
    return f"/api/v1/episodes/{ids['episode']}/sessions/{ids[session]}/rems-form"


def _answers(form: dict) -> dict[str, Any]:
    return {f["key"]: f["answer"] for f in form["fields"]}


def _known_ids(client: Any, ids: dict[str, str]) -> set[str]:
    episode = client.get(f"/api/v1/episodes/{ids['episode']}").get_json()
    known = {ids["patient"], "demo", ids["prescriber"], ids["nurse"], ids["therapist"]}
    for collection in ("sessions", "doses", "monitoring_readings", "side_effects", "concomitant_medications"):
        known |= {r["id"] for r in episode[collection]}
    return known


@pytest.fixture
def loaded(database_url: str) -> tuple[Any, dict[str, str]]:
    app = authorized_app(database_url)
    client = app.test_client()
    ids = replay(load_fixture(FIXTURE_C), _sender(client))
    yield client, ids
    app.extensions["kapfhir.engine"].dispose()


def test_the_esketamine_fixture_gives_complete_traced_forms_and_a_missing_40_minute_reading_makes_one_in_progress(
    loaded: tuple[Any, dict[str, str]],
) -> None:
    client, ids = loaded
    form = client.get(_form_url(ids, "induction_1")).get_json()
    assert form["status"] == "completed" and form["missing"] == [] and form["missing_fields"] == []
    assert form["questionnaire"] == QUESTIONNAIRE
    assert form["treatment_date"] == "2026-08-10" and form["due_date"] == "2026-08-17"
    assert form["submission_state"] == "submitted" and form["submission"]["confirmation_number"] == "SYN-PMF-0810"
    answers = _answers(form)
    assert answers["patient.first-name"] == "Priya" and answers["patient.last-name"] == "Examplar"
    assert answers["patient.birth-date"] == "1969-11-20" and answers["patient.sex"] == "female"
    assert answers["patient.first-treatment"] is True
    # zolpidem is a non-benzodiazepine sedative hypnotic; escitalopram is none of the classes asked about.
    assert answers["medication.non-benzodiazepine-sedative-hypnotics"] is True
    assert answers["medication.benzodiazepines"] is False and answers["medication.opioids"] is False
    assert answers["provider.first-name"] == "Alex" and answers["provider.last-name"] == "Standin"
    assert answers["provider.telephone"] == "303-555-0100" and answers["setting.city"] == "Denver"
    assert answers["session.dose"] == "56 mg" and answers["session.lot-number"] == "SYN-ESK-0810"
    assert answers["session.total-minutes"] == 130  # 09:20 first device -> 11:30 discharge
    assert answers["session.bp-before-dose"] == "122/78" and answers["session.bp-40-minutes"] == "136/86"
    assert answers["session.bp-before-completion"] == "124/79"
    assert answers["session.vitals-before-dose"] is True and answers["session.pulse-oximetry"] is True
    # MOAA/S 4 and CADSS 12 at 09:45, both back to normal at the 11:25 discharge reading.
    assert answers["session.sedation"] is True and answers["session.sedation-resolved"] is True
    assert answers["session.dissociation"] is True and answers["session.dissociation-resolved"] is True
    assert answers["session.respiratory-depression"] is False
    assert "session.respiratory-depression-resolved" not in {k for k, v in answers.items() if v is not None}
    assert answers["session.ready-minutes"] == 125  # the 11:25 reading is the first that stays clear
    assert answers["session.serious-adverse-event"] is False
    # Every answered required field names the records it comes from, and they exist.
    known = _known_ids(client, ids)
    for field in form["fields"]:
        if field["answer"] is not None:
            assert field["sources"] and set(field["sources"]) <= known, field
    second = _answers(client.get(_form_url(ids, "induction_2")).get_json())
    assert second["patient.first-treatment"] is False and second["session.dose"] == "84 mg"

    # Remove the ~40-minute reading: the form is in progress and names it, in clinical words.
    readings = client.get(f"/api/v1/episodes/{ids['episode']}/monitoring-readings").get_json()["items"]
    (post_dose,) = [r for r in readings if r["session_id"] == ids["induction_1"] and r["timing"] == "post-dose"]
    r = client.post(
        f"/api/v1/episodes/{ids['episode']}/monitoring-readings/{post_dose['id']}/entered-in-error",
        json={"reason": "recorded on the wrong patient"},
    )
    assert r.status_code == 200, r.get_json()
    form = client.get(_form_url(ids, "induction_1")).get_json()
    assert form["status"] == "in-progress"
    assert form["missing"] == [BP_40] and form["missing_fields"] == ["session.bp-40-minutes"]
    # It was sent before the change: the form is amended and asks for a corrected submission.
    assert form["submission_state"] == "amended" and form["corrected_submission_needed"] is True
    due = client.get("/api/v1/rems-forms?status=due").get_json()["items"]
    assert [(f["session_id"], f["submission_state"]) for f in due] == [(ids["induction_1"], "amended")]

    # An incomplete form cannot be sent: 422 naming what is missing.
    submission = {"channel": "fax", "submitted_at": "2026-08-12T10:00:00-06:00", "submitted_by": ids["nurse"]}
    r = client.post(_form_url(ids, "induction_1") + "/submission", json=submission)
    assert r.status_code == 422
    assert r.get_json()["errors"] == [{"field": "session.bp-40-minutes", "message": BP_40}]


def test_a_second_submission_of_the_same_form_is_idempotent_and_a_corrected_one_is_recorded(
    loaded: tuple[Any, dict[str, str]],
) -> None:
    client, ids = loaded
    url = _form_url(ids, "induction_2") + "/submission"
    again = {"channel": "fax", "submitted_at": "2026-08-14T09:00:00-06:00", "submitted_by": ids["prescriber"]}
    r = client.post(url, json=again)
    assert r.status_code == 200
    body = r.get_json()
    assert len(body["submissions"]) == 1 and body["submission"]["channel"] == "portal"  # the one recorded first

    # A session corrected after it was sent: amended; the corrected form is a new submission.
    episode = client.get(f"/api/v1/episodes/{ids['episode']}").get_json()
    (session,) = [s for s in episode["sessions"] if s["id"] == ids["induction_2"]]
    r = client.get(f"/api/v1/episodes/{ids['episode']}/sessions/{ids['induction_2']}")
    amended = {
        k: v
        for k, v in r.get_json().items()
        if k not in ("id", "version", "entered_in_error", "recorded_at", "updated_at", "has_psychotherapy_notes")
    }
    amended |= {"discharge_at": "2026-08-13T11:40:00-06:00", "end": "2026-08-13T11:45:00-06:00"}
    amended["amendment_reason"] = "discharge time was typed wrongly"
    r = client.put(f"/api/v1/episodes/{ids['episode']}/sessions/{ids['induction_2']}", json=amended)
    assert r.status_code == 200, r.get_json()
    form = client.get(_form_url(ids, "induction_2")).get_json()
    assert form["submission_state"] == "amended" and _answers(form)["session.total-minutes"] == 140
    r = client.post(url, json=again | {"confirmation_number": "SYN-PMF-0813-C"})
    assert r.status_code == 201
    form = r.get_json()
    assert form["submission_state"] == "submitted" and len(form["submissions"]) == 2
    assert session["id"] == ids["induction_2"]


def test_the_pdf_renders_and_reads_back(loaded: tuple[Any, dict[str, str]], tmp_path: Path) -> None:
    if not (shutil.which("pdftoppm") and shutil.which("pdftotext")):
        pytest.fail("poppler-utils missing: run scripts/install-system-packages.sh")
    client, ids = loaded
    before = datetime.now(UTC) - timedelta(seconds=1)
    r = client.get(_form_url(ids, "induction_1"), headers={"Accept": "application/pdf"})
    assert r.status_code == 200 and r.mimetype == "application/pdf"
    pdf = tmp_path / "form.pdf"
    pdf.write_bytes(r.get_data())
    subprocess.run(["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")], check=True)
    (png,) = sorted(tmp_path.glob("page*.png"))
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (340, 440)  # US letter at 40 dpi
    # The page carries ink: a grey rendering has dark pixels, not a blank page.
    subprocess.run(
        ["pdftoppm", "-gray", "-r", "40", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "grey")], check=True
    )
    (pgm,) = sorted(tmp_path.glob("grey*.pgm"))
    pixels = pgm.read_bytes().split(b"\n", 3)[3]
    assert sum(1 for p in pixels if p < 128) > 2000
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True, text=True).stdout
    for expected in (
        "REMS Patient Monitoring Form",
        "Form status: COMPLETE",
        "Examplar",
        "11/20/1969",
        "SYN-ESK-0810",
        "136/86 mmHg",
        "08/10/2026",
        "Standin",
        "1 Synthetic Plaza",
    ):
        assert expected in text, expected
    assert "Missing:" not in text
    # Printing the form is a disclosure: the audit trail names the session it reports.
    events = client.get("/api/v1/audit-events", query_string={"since": before.isoformat(), "limit": 200})
    events = events.get_json()["items"]
    assert any({"type": "Encounter", "id": ids["induction_1"]} in e["entity"] for e in events)


def test_racemic_sessions_never_get_a_form(sqlite_url: str) -> None:
    app = authorized_app(sqlite_url)
    client = app.test_client()
    ids = replay(load_fixture(FIXTURE_A), _sender(client))
    episode = client.get(f"/api/v1/episodes/{ids['episode']}").get_json()
    dosing = [s["id"] for s in episode["sessions"] if s["kind"] == "dosing"]
    assert dosing
    for session_id in dosing:
        r = client.get(f"/api/v1/episodes/{ids['episode']}/sessions/{session_id}/rems-form")
        assert r.status_code == 404 and "racemic" in r.get_json()["detail"]
    assert client.get("/api/v1/rems-forms").get_json()["items"] == []
    assert client.get("/api/v1/rems-forms?status=sent").status_code == 422
    app.extensions["kapfhir.engine"].dispose()


def test_a_recent_unsent_form_is_listed_due_and_the_review_raises_its_flag(loaded: tuple[Any, dict[str, str]]) -> None:
    client, ids = loaded
    episode = ids["episode"]
    # A maintenance session six days ago (Denver days), its form not sent yet.
    first = (datetime.now(UTC) - timedelta(days=6)).replace(microsecond=0)
    body = {
        "kind": "dosing",
        "status": "completed",
        "start": (first - timedelta(minutes=20)).isoformat(),
        "end": (first + timedelta(minutes=140)).isoformat(),
        "clinician_ids": [ids["nurse"]],
        "setting": "clinic",
        "discharge_at": (first + timedelta(minutes=130)).isoformat(),
        "doses": [
            {
                "medication": "esketamine",
                "route": "intranasal",
                "setting": "clinic",
                "dose_mg": 84,
                "start": first.isoformat(),
                "controlled_substance": {"lot_number": "SYN-ESK-LATE"},
            }
        ],
    }
    r = client.post(f"/api/v1/episodes/{episode}/sessions", json=body)
    assert r.status_code == 201, r.get_json()
    session_id = r.get_json()["id"]
    due = client.get("/api/v1/rems-forms?status=due").get_json()["items"]
    (late,) = [f for f in due if f["session_id"] == session_id]
    assert late["overdue"] is False and late["submission_state"] == "unsent"
    # No readings: the form says what to record before it can be sent.
    assert "blood pressure before the dose" in late["missing"] and late["status"] == "in-progress"
    flags = client.get(f"/api/v1/episodes/{episode}/safety-flags?status=open").get_json()["items"]
    assert {f["rule_id"] for f in flags if f["record_ids"] == [session_id]} >= {"rems-form-due"}
    assert client.post("/api/v1/rems-forms/deadline-review").get_json() == {"flags_changed": 0}
    assert client.get("/api/v1/rems-forms?status=overdue").get_json()["items"] == []


def test_fhir_serves_the_questionnaire_and_each_response_validates_against_it(
    loaded: tuple[Any, dict[str, str]],
) -> None:
    client, _ = loaded
    r = client.get("/fhir/Questionnaire/spravato-rems-patient-monitoring")
    assert r.status_code == 200
    questionnaire = r.get_json()
    assert questionnaire["url"] == QUESTIONNAIRE and "manualspro.net" in questionnaire["description"]
    issues = client.post("/fhir/Questionnaire/$validate", json=questionnaire).get_json()["issue"]
    assert not [i for i in issues if i["severity"] in ("error", "fatal")], issues

    bundle = client.get(
        "/fhir/QuestionnaireResponse", query_string={"patient": f"Patient/{_fhir_patient(client)}"}
    ).get_json()
    responses = [e["resource"] for e in bundle["entry"] if e["resource"]["questionnaire"] == QUESTIONNAIRE]
    assert len(responses) == 9 and {r["status"] for r in responses} == {"completed"}
    for response in responses:
        issues = client.post("/fhir/QuestionnaireResponse/$validate", json=response).get_json()["issue"]
        assert not [i for i in issues if i["severity"] in ("error", "fatal")], issues
    # A response that drops a required answer no longer validates against the Questionnaire.
    broken = dict(responses[0])
    broken["item"] = [g for g in broken["item"] if g["linkId"] != "setting"]
    issues = client.post("/fhir/QuestionnaireResponse/$validate", json=broken).get_json()["issue"]
    assert any("'setting'" in i["diagnostics"] and i["severity"] == "error" for i in issues), issues

    tasks = client.get("/fhir/Task", query_string={"status": "completed"}).get_json()
    assert len(tasks["entry"]) == 9
    sent = tasks["entry"][0]["resource"]
    assert sent["businessStatus"]["coding"][0]["code"] == "submitted"
    assert sent["output"][0]["valueString"].startswith("SYN-PMF-")
    assert sent["restriction"]["period"]["end"] > sent["authoredOn"]


def _fhir_patient(client: Any) -> str:
    bundle = client.get(
        "/fhir/Patient", query_string={"identifier": "https://demo-clinic.example.org/fhir/mrn|SYN-0003"}
    )
    return bundle.get_json()["entry"][0]["resource"]["id"]
