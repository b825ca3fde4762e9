"""Scratch generator of fixtures/invalid/ (run: python tests/fixtures_check/build_invalid.py). SYNTHETIC data only."""

from __future__ import annotations

import json
from pathlib import Path

from build_fixtures import CONSENT_FORM, MRN_SYSTEM, npi

OUT = Path(__file__).resolve().parents[2] / "fixtures" / "invalid"
T = "2026-03-02T09:00:00-05:00"


def at(hhmm: str, day: str = "2026-03-02") -> str:
    return f"{day}T{hhmm}:00-05:00"


BASE = {
    "name": "invalid-base",
    "description": "SYNTHETIC shared setup for fixtures/invalid/: two practitioners, a patient (MRN SYN-9001) with a "
                   "body weight, an episode left in phase 'assessment', a consent, a dosing order, an assessment "
                   "session, an in-progress dosing session with one dose. Its saved names (prescriber, nurse, patient, "
                   "episode, consent, order, assessment_session, dosing_session, dose) are the placeholders the "
                   "invalid requests use.",
    "expected_flags": [],
    "steps": [
        {"save_as": "prescriber", "path": "/practitioners",
         "body": {"name": {"family": "Basecase", "given": ["Robin"]}, "npi": npi("591827364"),
                  "roles": ["prescriber"]}},
        {"save_as": "nurse", "path": "/practitioners",
         "body": {"name": {"family": "Basecase", "given": ["Kim"]}, "roles": ["nurse", "monitor"]}},
        {"save_as": "patient", "path": "/patients",
         "body": {"mrn": {"system": MRN_SYSTEM, "value": "SYN-9001"}, "name": {"family": "Invalidsworth",
                  "given": ["Pat"]}, "birth_date": "1980-01-01", "gender": "unknown"}},
        {"path": "/patients/{{patient}}/body-weights", "body": {"measured_at": at("08:30"), "weight_kg": 75}},
        {"save_as": "episode", "path": "/episodes", "body": {
            "patient_id": "{{patient}}",
            "indications": [{"kind": "depression", "icd10cm": "F33.2", "snomed": "36474008",
                             "treatment_resistant": True}],
            "care_team": [{"practitioner_id": "{{prescriber}}", "role": "prescriber"}],
            "period_start": at("08:00")}},
        {"save_as": "consent", "path": "/episodes/{{episode}}/consents", "body": {
            "form_url": CONSENT_FORM, "form_version": "2026.1", "signed_at": at("08:40"),
            "off_label_use_acknowledged": True, "routes_covered": ["intravenous", "intramuscular"]}},
        {"save_as": "order", "path": "/episodes/{{episode}}/dosing-orders", "body": {
            "medication": "racemic-ketamine", "route": "intravenous", "dose_value": 0.5, "dose_unit": "mg/kg",
            "frequency": "twice weekly", "number_of_sessions": 6, "prescriber_id": "{{prescriber}}",
            "ordered_at": at("08:45")}},
        {"save_as": "assessment_session", "path": "/episodes/{{episode}}/sessions", "body": {
            "kind": "assessment", "status": "completed", "start": at("08:00"), "end": at("08:40"),
            "clinician_ids": ["{{prescriber}}"]}},
        {"save_as": "dosing_session", "path": "/episodes/{{episode}}/sessions", "save_children": {"dose": "doses.0"},
         "body": {"kind": "dosing", "status": "in-progress", "start": at("09:00"), "setting": "clinic",
                  "clinician_ids": ["{{nurse}}"],
                  "doses": [{"medication": "racemic-ketamine", "route": "intravenous", "dose_mg": 37.5,
                             "weight_kg": 75, "infusion_duration_min": 40, "start": at("09:10"),
                             "end": at("09:50"), "order_id": "{{order}}", "administered_by_id": "{{nurse}}"}]}},
    ],
}

DOSE = {"session_id": "{{dosing_session}}", "medication": "racemic-ketamine", "route": "intravenous",
        "dose_mg": 37.5, "weight_kg": 75, "infusion_duration_min": 40, "start": at("09:10"), "end": at("09:50")}
IM_DOSE = {"session_id": "{{dosing_session}}", "medication": "racemic-ketamine", "route": "intramuscular",
           "dose_mg": 37.5, "weight_kg": 75, "start": at("09:10")}
SESSION = {"kind": "preparation", "status": "completed", "start": at("13:00"), "end": at("14:00")}
PATIENT = {"mrn": {"system": MRN_SYSTEM, "value": "SYN-9002"}, "name": {"family": "Newcomer", "given": ["Lee"]},
           "birth_date": "1990-05-05", "gender": "female"}
PHQ9 = {"instrument": "phq-9", "administered_at": at("08:20"), "items": [1, 2, 1, 2, 1, 1, 1, 1, 0]}  # total 10
READING = {"session_id": "{{dosing_session}}", "taken_at": at("09:05"), "timing": "pre-dose",
           "systolic_mmhg": 124, "diastolic_mmhg": 80, "heart_rate_per_min": 72}


def case(description: str, method: str, path: str, status: int, fields: list[str] | None = None, **request) -> dict:
    return {"description": description, "request": {"method": method, "path": path, **request},
            "expected_status": status, "expected_error_fields": fields or []}


E = "/episodes/{{episode}}"
CASES = {
    # --- transport ------------------------------------------------------------------------------------------
    "malformed-json": case("The body is not valid JSON (cut off).", "POST", "/patients", 400,
                           raw_body='{"mrn": {"system": "https://demo-clinic.example.org/fhir/mrn", "value": '),
    "malformed-json-trailing-comma": case("JSON with a trailing comma.", "POST", E + "/sessions", 400,
                                          raw_body='{"kind": "preparation", "status": "completed",}'),
    "wrong-content-type": case("A JSON body sent as text/plain.", "POST", "/patients", 415,
                               raw_body=json.dumps(PATIENT), content_type="text/plain"),
    "wrong-content-type-form": case("A form-encoded body.", "POST", E + "/outcome-measures", 415,
                                    raw_body="instrument=phq-9&items=1",
                                    content_type="application/x-www-form-urlencoded"),
    "body-too-large": case("A body over the 1 MiB limit (KAPFHIR_MAX_BODY_BYTES): a session whose notes are 1.1 MB.",
                           "POST", E + "/sessions", 413,
                           raw_body_repeat={"prefix": '{"kind": "preparation", "status": "completed", "start": "'
                                            + at("13:00") + '", "psychotherapy_notes": "',
                                            "text": "SYNTHETIC NOTE ", "times": 75000, "suffix": '"}'}),
    "body-not-an-object": case("A JSON array where an object is expected.", "POST", "/patients", 422,
                               body=[PATIENT]),
    # --- schema -------------------------------------------------------------------------------------------
    "unknown-field": case("A field the API does not know.", "POST", "/patients", 422, ["favourite_colour"],
                          body={**PATIENT, "favourite_colour": "teal"}),
    "unknown-field-nested-dose": case("An unknown field inside a nested dose.", "POST", E + "/sessions", 422,
                                      ["doses[0].mg_per_kg"],
                                      body={"kind": "dosing", "status": "completed", "start": at("10:00"),
                                            "doses": [{**{k: v for k, v in DOSE.items() if k != "session_id"},
                                                       "mg_per_kg": 0.5}]}),
    "derived-field-sent": case("off_label is derived by the service (dump_only): sending it is refused.", "POST",
                               E + "/doses", 422, ["off_label"], body={**DOSE, "off_label": False}),
    "missing-required-field": case("A dose without dose_mg.", "POST", E + "/doses", 422, ["dose_mg"],
                                   body={k: v for k, v in DOSE.items() if k != "dose_mg"}),
    "unknown-enum-value": case("A route outside the vocabulary.", "POST", E + "/doses", 422, ["route"],
                               body={**DOSE, "route": "rectal"}),
    "naive-datetime": case("A clinical time without a UTC offset is ambiguous.", "POST", E + "/doses", 422,
                           ["start"], body={**DOSE, "start": "2026-03-02T09:10:00"}),
    "naive-datetime-nested-reading": case("A nested monitoring reading time without offset.", "POST",
                                          E + "/sessions", 422, ["monitoring_readings[0].taken_at"],
                                          body={"kind": "dosing", "status": "in-progress", "start": at("10:00"),
                                                "monitoring_readings": [{"taken_at": "2026-03-02 10:05",
                                                                         "timing": "pre-dose",
                                                                         "heart_rate_per_min": 70}]}),
    "dose-mg-zero": case("dose_mg 0.", "POST", E + "/doses", 422, ["dose_mg"], body={**DOSE, "dose_mg": 0}),
    "dose-mg-negative": case("dose_mg negative.", "POST", E + "/doses", 422, ["dose_mg"], body={**DOSE, "dose_mg": -5}),
    "dose-mg-zero-nested": case("dose_mg 0 in a dose nested in a session.", "POST", E + "/sessions", 422,
                                ["doses[0].dose_mg"],
                                body={"kind": "dosing", "status": "completed", "start": at("10:00"),
                                      "doses": [{**{k: v for k, v in DOSE.items() if k != "session_id"},
                                                 "dose_mg": 0}]}),
    "weight-1-kg": case("A body weight of 1 kg (allowed 2-400).", "POST", "/patients/{{patient}}/body-weights", 422,
                        ["weight_kg"], body={"measured_at": at("08:30"), "weight_kg": 1}),
    "weight-500-kg": case("A body weight of 500 kg (allowed 2-400).", "POST", "/patients/{{patient}}/body-weights",
                          422, ["weight_kg"], body={"measured_at": at("08:30"), "weight_kg": 500}),
    "dose-weight-500-kg": case("A dose with weight_kg 500.", "POST", E + "/doses", 422, ["weight_kg"],
                               body={**DOSE, "weight_kg": 500}),
    "dose-weight-1-kg": case("A dose with weight_kg 1.", "POST", E + "/doses", 422, ["weight_kg"],
                             body={**DOSE, "weight_kg": 1}),
    "infusion-duration-on-im-dose": case("An infusion duration on an intramuscular dose.", "POST", E + "/doses", 422,
                                         ["infusion_duration_min"], body={**IM_DOSE, "infusion_duration_min": 40}),
    "amount-administered-differs": case("Controlled-substance amount administered differs from dose_mg.", "POST",
                                        E + "/doses", 422, ["controlled_substance.amount_administered_mg"],
                                        body={**DOSE, "controlled_substance": {"amount_drawn_mg": 50,
                                                                               "amount_administered_mg": 35}}),
    "controlled-substance-unbalanced": case("Drawn is not administered + wasted.", "POST", E + "/doses", 422,
                                            ["controlled_substance.amount_wasted_mg"],
                                            body={**DOSE, "controlled_substance": {
                                                "amount_drawn_mg": 50, "amount_administered_mg": 37.5,
                                                "amount_wasted_mg": 5}}),
    "bad-ndc": case("An NDC that is not in 4-4-2/5-3-2/5-4-1 form.", "POST", E + "/doses", 422,
                    ["controlled_substance.ndc"], body={**DOSE, "controlled_substance": {"ndc": "5045802802"}}),
    "diastolic-not-below-systolic": case("Diastolic >= systolic.", "POST", E + "/monitoring-readings", 422,
                                         ["diastolic_mmhg"], body={**READING, "systolic_mmhg": 90,
                                                                   "diastolic_mmhg": 95}),
    "bp-without-diastolic": case("Systolic without diastolic.", "POST", E + "/monitoring-readings", 422,
                                 ["diastolic_mmhg"], body={k: v for k, v in READING.items() if k != "diastolic_mmhg"}),
    "reading-without-measurement": case("A reading with no measurement at all.", "POST", E + "/monitoring-readings",
                                        422, ["(body)"], body={"session_id": "{{dosing_session}}",
                                                               "taken_at": at("09:05"), "timing": "pre-dose"}),
    "spo2-over-100": case("SpO2 101 %.", "POST", E + "/monitoring-readings", 422, ["spo2_percent"],
                          body={**READING, "spo2_percent": 101}),
    "invalid-icd10cm": case("An ICD-10-CM code that does not have the code's form.", "POST", "/episodes", 422,
                            ["indications[0].icd10cm"],
                            body={"patient_id": "{{patient}}", "period_start": at("08:00"),
                                  "indications": [{"kind": "depression", "icd10cm": "33.2F"}]}),
    "treatment-resistant-on-ptsd": case("treatment_resistant on a non-depression indication.", "POST", "/episodes",
                                        422, ["indications[0].treatment_resistant"],
                                        body={"patient_id": "{{patient}}", "period_start": at("08:00"),
                                              "indications": [{"kind": "ptsd", "icd10cm": "F43.12",
                                                               "treatment_resistant": True}]}),
    "invalid-npi-check-digit": case("An NPI whose Luhn check digit is wrong.", "POST", "/practitioners", 422, ["npi"],
                                    body={"name": {"family": "Wrongdigit", "given": ["Ari"]},
                                          "npi": npi("123456789")[:9] + str((int(npi("123456789")[9]) + 1) % 10),
                                          "roles": ["therapist"]}),
    "npi-nine-digits": case("An NPI of 9 digits.", "POST", "/practitioners", 422, ["npi"],
                            body={"name": {"family": "Shortnpi"}, "npi": "123456789", "roles": ["nurse"]}),
    "practitioner-without-role": case("A practitioner with no role.", "POST", "/practitioners", 422, ["roles"],
                                      body={"name": {"family": "Noroles"}, "roles": []}),
    "birth-date-in-future": case("A birth date in the future.", "POST", "/patients", 422, ["birth_date"],
                                 body={**PATIENT, "birth_date": "2099-01-01"}),
    "mrn-system-not-uri": case("An MRN system that is not a URI.", "POST", "/patients", 422, ["mrn.system"],
                               body={**PATIENT, "mrn": {"system": "demo clinic", "value": "SYN-9003"}}),
    # --- scales -------------------------------------------------------------------------------------------
    "phq9-total-disagrees": case("A submitted PHQ-9 total (12) that disagrees with the items (10).", "POST",
                                 E + "/outcome-measures", 422, ["total"], body={**PHQ9, "total": 12}),
    "phq9-eight-items": case("A PHQ-9 with 8 items.", "POST", E + "/outcome-measures", 422, ["items"],
                             body={**PHQ9, "items": [1, 2, 1, 2, 1, 1, 1, 1]}),
    "phq9-item-out-of-range": case("A PHQ-9 answer of 4 (items are 0-3).", "POST", E + "/outcome-measures", 422,
                                   ["items[3]"], body={**PHQ9, "items": [1, 2, 1, 4, 1, 1, 1, 1, 0]}),
    "pcl5-item-out-of-range": case("A PCL-5 answer of 5 (items are 0-4).", "POST", E + "/outcome-measures", 422,
                                   ["items[19]"], body={"instrument": "pcl-5", "administered_at": at("08:20"),
                                                        "items": [2] * 19 + [5]}),
    "gad7-with-difficulty": case("The difficulty item belongs to the PHQ-9.", "POST", E + "/outcome-measures", 422,
                                 ["difficulty"], body={"instrument": "gad-7", "administered_at": at("08:20"),
                                                       "items": [1] * 7, "difficulty": 1}),
    "cssrs-behaviour-timing-missing": case("C-SSRS item 6 (behaviour) yes without saying whether within 3 months.",
                                           "POST", E + "/outcome-measures", 422, ["behaviour_within_3_months"],
                                           body={"instrument": "c-ssrs-screener", "administered_at": at("08:20"),
                                                 "items": [0, 0, 0, 0, 0, 1]}),
    # --- references ---------------------------------------------------------------------------------------
    "unknown-episode": case("An episode id that does not exist.", "POST",
                            "/episodes/00000000-0000-4000-8000-000000000000/sessions", 404, body=SESSION),
    "unknown-episode-get": case("Reading an episode that does not exist.", "GET",
                                "/episodes/00000000-0000-4000-8000-000000000000", 404),
    "unknown-record": case("Amending a dose that does not exist.", "PUT",
                           E + "/doses/00000000-0000-4000-8000-000000000000", 404,
                           body={**DOSE, "amendment_reason": "SYNTHETIC correction"}),
    "unknown-flag": case("Acknowledging a safety flag that does not exist.", "POST",
                         E + "/safety-flags/00000000-0000-4000-8000-000000000000/acknowledgement", 404,
                         body={"by": "{{prescriber}}"}),
    "unknown-session-id": case("A dose in a session that does not exist.", "POST", E + "/doses", 422, ["session_id"],
                               body={**DOSE, "session_id": "no-such-session"}),
    "dose-in-non-dosing-session": case("A dose recorded in an assessment session.", "POST", E + "/doses", 422,
                                       ["session_id"], body={**DOSE, "session_id": "{{assessment_session}}"}),
    "doses-in-preparation-session": case("A preparation session carrying doses.", "POST", E + "/sessions", 422,
                                         ["doses"], body={**SESSION, "doses": [
                                             {k: v for k, v in DOSE.items() if k != "session_id"}]}),
    "unknown-order-id": case("A dose referring to an order that does not exist.", "POST", E + "/doses", 422,
                             ["order_id"], body={**DOSE, "order_id": "no-such-order"}),
    "unknown-practitioner": case("A session clinician who is not registered.", "POST", E + "/sessions", 422,
                                 ["clinician_ids[1]"],
                                 body={**SESSION, "clinician_ids": ["{{prescriber}}", "no-such-practitioner"]}),
    "unknown-practitioner-on-dose": case("A dose administered by an unregistered practitioner.", "POST", E + "/doses",
                                         422, ["administered_by_id"],
                                         body={**DOSE, "administered_by_id": "no-such-practitioner"}),
    "unknown-care-team-member": case("An episode whose care team names an unregistered practitioner.", "POST",
                                     "/episodes", 422, ["care_team[0].practitioner_id"],
                                     body={"patient_id": "{{patient}}", "period_start": at("08:00"),
                                           "indications": [{"kind": "anxiety", "icd10cm": "F41.1"}],
                                           "care_team": [{"practitioner_id": "no-such-practitioner",
                                                          "role": "therapist"}]}),
    "unknown-patient": case("An episode for a patient that does not exist.", "POST", "/episodes", 422,
                            ["patient_id"], body={"patient_id": "no-such-patient", "period_start": at("08:00"),
                                                  "indications": [{"kind": "anxiety", "icd10cm": "F41.1"}]}),
    "unknown-acknowledger": case("A flag acknowledged by an unregistered practitioner (checked before the flag).",
                                 "POST", E + "/safety-flags/00000000-0000-4000-8000-000000000000/acknowledgement",
                                 422, ["by"], body={"by": "no-such-practitioner"}),
    "side-effect-unknown-dose": case("A side effect tied to a dose that does not exist.", "POST",
                                     E + "/side-effects", 422, ["dose_id"],
                                     body={"dose_id": "no-such-dose", "kind": "nausea", "severity": "mild",
                                           "onset_at": at("09:30")}),
    # --- time coherence -----------------------------------------------------------------------------------
    "end-before-start": case("A session that ends before it starts.", "POST", E + "/sessions", 422, ["end"],
                             body={**SESSION, "end": at("12:00")}),
    "dose-end-before-start": case("A dose that ends before it starts.", "POST", E + "/doses", 422, ["end"],
                                  body={**DOSE, "end": at("09:00")}),
    "side-effect-resolved-before-onset": case("A side effect resolved before its onset.", "POST", E + "/side-effects",
                                              422, ["resolved_at"],
                                              body={"kind": "headache", "severity": "mild", "onset_at": at("10:00"),
                                                    "resolved_at": at("09:00")}),
    "discharge-before-session-start": case("A dosing session discharged before it started.", "POST", E + "/sessions",
                                           422, ["discharge_at"],
                                           body={"kind": "dosing", "status": "completed", "start": at("10:00"),
                                                 "end": at("12:00"), "discharge_at": at("09:00")}),
    "dose-in-far-future": case("A dose time far in the future (refused: more than a few minutes ahead).", "POST",
                               E + "/doses", 422, ["start"],
                               body={**DOSE, "start": "2099-03-02T09:10:00-05:00", "end": None}),
    "setting-on-preparation-session": case("setting/check-in/discharge belong to dosing sessions only.", "POST",
                                           E + "/sessions", 422, ["setting"], body={**SESSION, "setting": "home"}),
    # --- state ------------------------------------------------------------------------------------------
    "refused-phase-transition": case("assessment -> dosing skips preparation.", "POST", E + "/phase-transitions",
                                     409, ["to_phase"], body={"to_phase": "dosing", "at": at("10:00")}),
    "transition-before-episode-start": case("A transition before the episode's period_start.", "POST",
                                            E + "/phase-transitions", 422, ["at"],
                                            body={"to_phase": "preparation", "at": at("07:00")}),
    "discontinue-without-reason": case("Discontinuing needs a reason.", "POST", E + "/phase-transitions", 422,
                                       ["reason"], body={"to_phase": "discontinued", "at": at("10:00")}),
    "duplicate-mrn": case("A second patient with the base patient's MRN (SYN-9001).", "POST", "/patients", 409,
                          body={**PATIENT, "mrn": {"system": MRN_SYSTEM, "value": "SYN-9001"}}),
    "duplicate-npi": case("A second practitioner with the base prescriber's NPI.", "POST", "/practitioners", 409,
                          body={"name": {"family": "Twin"}, "npi": npi("591827364"), "roles": ["prescriber"]}),
    "amend-without-reason": case("An amendment needs amendment_reason.", "PUT", E + "/doses/{{dose}}", 422,
                                 ["amendment_reason"], body=DOSE),
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "_base.json").write_text(json.dumps(BASE, indent=2) + "\n")
    for name, body in CASES.items():
        (OUT / f"{name}.json").write_text(json.dumps(body, indent=2) + "\n")
    print(len(CASES), "cases written to", OUT)


if __name__ == "__main__":
    main()
