"""Scratch generator of the synthetic fixture episodes in fixtures/episodes/.

Run: python tests/fixtures_check/build_fixtures.py

Everything here is SYNTHETIC: invented people, invented MRNs (SYN-000n), invented lot numbers, fake notes.
The JSON files are the deliverable; this script only keeps times, totals and ids consistent while writing them.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "episodes"
MRN_SYSTEM = "https://demo-clinic.example.org/fhir/mrn"
CONSENT_FORM = "https://demo-clinic.example.org/forms/kap-consent"


def npi(nine: str) -> str:
    """Completes nine digits with the NPI check digit (Luhn over 80840 + the digits)."""
    for check in "0123456789":
        digits = [int(c) for c in "80840" + nine + check]
        total = 0
        for index, digit in enumerate(reversed(digits)):
            if index % 2 == 1:
                digit *= 2
                digit = digit - 9 if digit > 9 else digit
            total += digit
        if total % 10 == 0:
            return nine + check
    raise AssertionError


class Clock:
    def __init__(self, zone: str) -> None:
        self.zone = ZoneInfo(zone)

    def __call__(self, day: date | str, hhmm: str, plus_min: float = 0) -> str:
        d = date.fromisoformat(day) if isinstance(day, str) else day
        h, m = (int(x) for x in hhmm.split(":"))
        when = datetime(d.year, d.month, d.day, h, m, tzinfo=self.zone) + timedelta(minutes=plus_min)
        assert when < datetime(2026, 11, 1, tzinfo=self.zone), when
        return when.isoformat()


def practitioner(save_as: str, family: str, given: list[str], nine: str | None, roles: list[str]) -> dict:
    return {"save_as": save_as, "path": "/practitioners",
            "body": {"name": {"family": family, "given": given}, "npi": npi(nine) if nine else None, "roles": roles}}


def patient(save_as: str, mrn: str, family: str, given: list[str], birth: str, gender: str) -> dict:
    return {"save_as": save_as, "path": "/patients",
            "body": {"mrn": {"system": MRN_SYSTEM, "value": mrn}, "name": {"family": family, "given": given},
                     "birth_date": birth, "gender": gender}}


def transition(to: str, at: str, reason: str | None = None) -> dict:
    return {"path": "/episodes/{{episode}}/phase-transitions", "body": {"to_phase": to, "at": at, "reason": reason}}


def measure(instrument: str, at: str, items: list[int], session: str | None = None, *, difficulty: int | None = None,
            with_total: bool = True, save_as: str | None = None) -> dict:
    body: dict = {"instrument": instrument, "administered_at": at, "items": items}
    if session:
        body["session_id"] = "{{" + session + "}}"
    if difficulty is not None:
        body["difficulty"] = difficulty
    if with_total and instrument != "c-ssrs-screener":
        body["total"] = sum(items)
    step = {"path": "/episodes/{{episode}}/outcome-measures", "body": body}
    if save_as:
        step["save_as"] = save_as
    return step


def cssrs(at: str, session: str | None = None) -> dict:
    # C-SSRS screener, recent: six yes/no items, all "no" -> risk none, no flag.
    return measure("c-ssrs-screener", at, [0, 0, 0, 0, 0, 0], session, with_total=False)


def session(save_as: str, kind: str, start: str, end: str, clinicians: list[str], *, modality: str = "in-person",
            notes: str | None = None, status: str = "completed", **extra) -> dict:
    body = {"kind": kind, "status": status, "start": start, "end": end, "modality": modality,
            "clinician_ids": ["{{" + c + "}}" for c in clinicians]}
    if notes:
        body["psychotherapy_notes"] = notes
    body.update(extra)
    return {"save_as": save_as, "path": "/episodes/{{episode}}/sessions", "body": body}


def reading(at: str, timing: str, *, bp: tuple[int, int] | None = None, hr: int | None = None,
            spo2: int | None = None, rr: int | None = None, cadss: int | None = None, moaas: int | None = None,
            self_reported: bool = False) -> dict:
    body: dict = {"taken_at": at, "timing": timing}
    if bp:
        body["systolic_mmhg"], body["diastolic_mmhg"] = bp
    for key, value in (("heart_rate_per_min", hr), ("spo2_percent", spo2), ("respiratory_rate_per_min", rr),
                       ("cadss_total", cadss), ("moaas_score", moaas)):
        if value is not None:
            body[key] = value
    if self_reported:
        body["self_reported"] = True
    return body


def write(name: str, fixture: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / name).write_text(json.dumps(fixture, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------------------
# (a) treatment-resistant depression, IV racemic ketamine 0.5 mg/kg over 40 min, 6 infusions
# ------------------------------------------------------------------------------------------------------------


def fixture_a() -> dict:
    t = Clock("America/New_York")  # January-February 2026: -05:00
    weight = 82.0
    dose_mg = 41.0  # 0.5 mg/kg x 82 kg
    steps = [
        practitioner("prescriber", "Testwell", ["Avery"], "192837465", ["prescriber"]),
        practitioner("therapist", "Placeholder", ["Jordan"], "182736455", ["therapist"]),
        practitioner("nurse", "Mockford", ["Casey"], "172635445", ["nurse", "monitor"]),
        patient("patient", "SYN-0001", "Synthwaite", ["Harriet", "Q"], "1978-04-12", "female"),
        {"path": "/patients/{{patient}}/body-weights",
         "body": {"measured_at": t("2026-01-12", "09:10"), "weight_kg": weight}},
        {"save_as": "episode", "path": "/episodes", "body": {
            "patient_id": "{{patient}}",
            "indications": [{"kind": "depression", "icd10cm": "F33.2", "snomed": "36474008",
                             "display": "Major depressive disorder, recurrent, severe without psychotic features",
                             "treatment_resistant": True}],
            "care_team": [{"practitioner_id": "{{prescriber}}", "role": "prescriber"},
                          {"practitioner_id": "{{therapist}}", "role": "therapist"},
                          {"practitioner_id": "{{nurse}}", "role": "nurse"}],
            "period_start": t("2026-01-12", "09:00"), "status": "active"}},
        session("assessment_session", "assessment", t("2026-01-12", "09:00"), t("2026-01-12", "10:00"),
                ["prescriber"], notes="SYNTHETIC NOTE: intake assessment; two adequate antidepressant trials failed. "
                                      "Not a real patient."),
        measure("phq-9", t("2026-01-12", "09:20"), [3, 3, 2, 3, 2, 3, 2, 2, 0], "assessment_session", difficulty=2),
        cssrs(t("2026-01-12", "09:25"), "assessment_session"),
        {"path": "/episodes/{{episode}}/concomitant-medications",
         "body": {"medication_class": "other", "name": "sertraline (SSRI)", "dose_text": "150 mg by mouth daily",
                  "start": "2025-03-01"}},
        {"path": "/episodes/{{episode}}/concomitant-medications",
         "body": {"medication_class": "benzodiazepine", "name": "lorazepam", "dose_text": "0.5 mg by mouth as needed; "
                  "held 24 h before each infusion", "start": "2025-09-15"}},
        transition("preparation", t("2026-01-12", "10:05"), "eligible for IV ketamine after intake"),
        {"save_as": "order", "path": "/episodes/{{episode}}/dosing-orders", "body": {
            "medication": "racemic-ketamine", "route": "intravenous", "dose_value": 0.5, "dose_unit": "mg/kg",
            "frequency": "twice weekly, infused over 40 minutes", "number_of_sessions": 6,
            "prescriber_id": "{{prescriber}}", "ordered_at": t("2026-01-12", "10:10"),
            "off_label_reason": "Racemic ketamine is not FDA-approved for depression; off-label use for "
                                "treatment-resistant depression."}},
        session("prep_session", "preparation", t("2026-01-14", "13:00"), t("2026-01-14", "14:00"), ["therapist"],
                notes="SYNTHETIC NOTE: preparation, intentions and set/setting discussed. Not a real patient."),
        transition("dosing", t("2026-01-19", "08:30")),
    ]
    days = ["2026-01-19", "2026-01-22", "2026-01-26", "2026-01-29", "2026-02-02", "2026-02-05"]
    vitals = [((128, 82), 74), ((126, 80), 72), ((131, 84), 76), ((124, 79), 70), ((127, 81), 73), ((122, 78), 71)]
    phq_weekly = {  # weekly PHQ-9 (item 9 always 0: no suicide-risk flag in this story)
        "2026-01-19": [3, 3, 2, 2, 2, 3, 2, 2, 0],
        "2026-01-26": [2, 2, 2, 2, 1, 2, 1, 1, 0],
        "2026-02-02": [1, 1, 1, 2, 1, 1, 1, 0, 0],
    }
    for n, day in enumerate(days, start=1):
        (sys_, dia), hr = vitals[n - 1]
        dose = {
            "order_id": "{{order}}", "medication": "racemic-ketamine", "route": "intravenous", "setting": "clinic",
            "dose_mg": dose_mg, "weight_kg": weight, "infusion_duration_min": 40,
            "start": t(day, "09:05"), "end": t(day, "09:45"),
            "administered_by_id": "{{nurse}}", "supervised_by_id": "{{prescriber}}",
            "controlled_substance": {"lot_number": f"SYN-KET-26A{n:02d}", "expiry": "2027-08-31",
                                     "amount_drawn_mg": 50.0, "amount_administered_mg": dose_mg,
                                     "amount_wasted_mg": 9.0, "waste_witness_id": "{{prescriber}}"}}
        readings = [
            reading(t(day, "08:55"), "pre-dose", bp=(sys_, dia), hr=hr, spo2=98, rr=14, moaas=5),
            reading(t(day, "09:25"), "during", bp=(sys_ + 14, dia + 8), hr=hr + 8, spo2=97, rr=14, cadss=14, moaas=4),
            reading(t(day, "09:50"), "post-dose", bp=(sys_ + 8, dia + 4), hr=hr + 4, spo2=98, rr=14, cadss=6,
                    moaas=5),
            reading(t(day, "10:45"), "discharge", bp=(sys_ + 2, dia + 1), hr=hr, spo2=98, rr=14, cadss=0, moaas=5),
        ]
        step = session(f"infusion_{n}", "dosing", t(day, "08:45"), t(day, "11:00"), ["nurse", "prescriber"],
                       notes=f"SYNTHETIC NOTE: infusion {n}; brief processing after emergence. Not a real patient."
                       if n in (1, 3, 6) else None,
                       setting="clinic", discharge_at=t(day, "10:55"), doses=[dose], monitoring_readings=readings)
        step["save_children"] = {f"dose_{n}": "doses.0"}
        if n == 1:
            step["comment"] = ("The infusion started at 09:05; the consent form was only signed at 09:20 "
                               "(next step), so this dose is flagged dose-without-active-consent.")
        steps.append(step)
        if n == 1:
            steps.append({"save_as": "consent", "path": "/episodes/{{episode}}/consents", "body": {
                "form_url": CONSENT_FORM, "form_version": "2026.1", "signed_at": t(day, "09:20"),
                "signed_by_patient": True, "witness_practitioner_id": "{{nurse}}",
                "covers_ketamine_for_psychotherapy": True, "off_label_use_acknowledged": True,
                "routes_covered": ["intravenous"], "valid_from": t(day, "09:20"),
                "valid_until": t("2026-07-19", "09:20")}})
            steps.append({"method": "GET", "path": "/episodes/{{episode}}/safety-flags",
                          "save_item": {"consent_flag": {"rule_id": "dose-without-active-consent", "status": "open"}}})
            steps.append({"path": "/episodes/{{episode}}/safety-flags/{{consent_flag}}/acknowledgement",
                          "expect_status": 200,
                          "body": {"by": "{{prescriber}}",
                                   "comment": "SYNTHETIC: verbal consent was documented before the infusion; the "
                                              "written form was signed 15 minutes after it started. Reviewed."}})
        if day in phq_weekly:
            steps.append(measure("phq-9", t(day, "08:50"), phq_weekly[day], f"infusion_{n}", difficulty=2))
        if n == 3:
            steps.append(transition("integration", t(day, "12:00"), "integration block after infusion 3"))
            steps.append(session("integration_1", "integration", t("2026-01-27", "14:00"), t("2026-01-27", "15:00"),
                                 ["therapist"],
                                 notes="SYNTHETIC NOTE: integration of infusions 1-3. Not a real patient."))
            steps.append(transition("dosing", t("2026-01-29", "08:30"), "second infusion block"))
    steps += [
        transition("integration", t("2026-02-05", "12:00")),
        session("integration_2", "integration", t("2026-02-09", "14:00"), t("2026-02-09", "15:00"), ["therapist"],
                modality="telehealth", notes="SYNTHETIC NOTE: closing integration session. Not a real patient."),
        measure("phq-9", t("2026-02-09", "14:05"), [1, 1, 0, 1, 1, 0, 1, 0, 0], "integration_2", difficulty=1),
        cssrs(t("2026-02-09", "14:10"), "integration_2"),
        transition("completed", t("2026-02-09", "15:30"), "acute course of 6 infusions completed"),
    ]
    return {
        "name": "a-trd-iv-ketamine",
        "description": "SYNTHETIC. Treatment-resistant depression (F33.2 + treatment_resistant), IV racemic ketamine "
                       "0.5 mg/kg over 40 min (82 kg -> 41 mg) under a weight-based dosing order, 6 completed "
                       "infusions with pre-dose/during/post-dose/discharge vitals, CADSS and MOAA/S, weekly PHQ-9, "
                       "C-SSRS, preparation and integration sessions, phases assessment -> preparation -> dosing -> "
                       "integration -> dosing -> integration -> completed. The first infusion started before the "
                       "consent was signed: flagged dose-without-active-consent and acknowledged by the prescriber.",
        "expected_flags": ["dose-without-active-consent"],
        "steps": steps,
    }


# ------------------------------------------------------------------------------------------------------------
# (b) PTSD, IM racemic ketamine 0.5 mg/kg, PCL-5 before and after, a moderate side effect, an amended dose
# ------------------------------------------------------------------------------------------------------------


def fixture_b() -> dict:
    t = Clock("America/Chicago")  # May-June 2026: -05:00
    weight = 90.0
    dose_mg = 45.0  # 0.5 mg/kg
    steps = [
        practitioner("prescriber", "Samplesby", ["Rowan"], "291827364", ["prescriber"]),
        practitioner("therapist", "Notreal", ["Quinn"], "281726354", ["therapist"]),
        practitioner("nurse", "Fictive", ["Dana"], None, ["nurse", "monitor"]),
        patient("patient", "SYN-0002", "Fauxley", ["Marcus"], "1985-09-03", "male"),
        {"path": "/patients/{{patient}}/body-weights",
         "body": {"measured_at": t("2026-05-04", "10:15"), "weight_kg": weight}},
        {"save_as": "episode", "path": "/episodes", "body": {
            "patient_id": "{{patient}}",
            "indications": [{"kind": "ptsd", "icd10cm": "F43.12", "snomed": "47505003",
                             "display": "Post-traumatic stress disorder, chronic"}],
            "care_team": [{"practitioner_id": "{{prescriber}}", "role": "prescriber"},
                          {"practitioner_id": "{{therapist}}", "role": "therapist"},
                          {"practitioner_id": "{{nurse}}", "role": "nurse"}],
            "period_start": t("2026-05-04", "10:00")}},
        session("assessment_session", "assessment", t("2026-05-04", "10:00"), t("2026-05-04", "11:00"),
                ["prescriber", "therapist"],
                notes="SYNTHETIC NOTE: PTSD intake; invented history. Not a real patient."),
        measure("pcl-5", t("2026-05-04", "10:20"),
                [3, 3, 2, 3, 3, 3, 2, 2, 3, 3, 2, 3, 3, 2, 3, 3, 3, 2, 2, 2], "assessment_session",
                save_as="pcl5_before"),
        cssrs(t("2026-05-04", "10:30"), "assessment_session"),
        {"path": "/episodes/{{episode}}/concomitant-medications",
         "body": {"medication_class": "other", "name": "prazosin", "dose_text": "2 mg by mouth at bedtime",
                  "start": "2025-11-01"}},
        transition("preparation", t("2026-05-04", "11:05")),
        {"save_as": "consent", "path": "/episodes/{{episode}}/consents", "body": {
            "form_url": CONSENT_FORM, "form_version": "2026.1", "signed_at": t("2026-05-06", "15:10"),
            "witness_practitioner_id": "{{therapist}}", "off_label_use_acknowledged": True,
            "routes_covered": ["intramuscular"], "valid_until": t("2026-10-31", "15:10")}},
        {"save_as": "order", "path": "/episodes/{{episode}}/dosing-orders", "body": {
            "medication": "racemic-ketamine", "route": "intramuscular", "dose_value": 0.5, "dose_unit": "mg/kg",
            "frequency": "weekly", "number_of_sessions": 3, "prescriber_id": "{{prescriber}}",
            "ordered_at": t("2026-05-06", "15:30"),
            "off_label_reason": "Racemic ketamine is not approved for PTSD; off-label use with psychotherapy."}},
        session("prep_session", "preparation", t("2026-05-06", "15:00"), t("2026-05-06", "16:00"), ["therapist"],
                notes="SYNTHETIC NOTE: preparation; grounding techniques rehearsed. Not a real patient."),
        transition("dosing", t("2026-05-11", "08:00")),
    ]
    days = ["2026-05-11", "2026-05-18", "2026-05-25"]
    lots = ["SYN-IM-2605A", "SYN-IM-2605B", "SYN-IM-2605B"]
    for n, day in enumerate(days, start=1):
        dose = {
            "order_id": "{{order}}", "medication": "racemic-ketamine", "route": "intramuscular", "setting": "clinic",
            "dose_mg": dose_mg, "weight_kg": weight, "start": t(day, "09:00"), "end": t(day, "09:00"),
            "administered_by_id": "{{nurse}}", "supervised_by_id": "{{prescriber}}",
            "controlled_substance": {"lot_number": "SYN-IM-2605X" if n == 1 else lots[n - 1], "expiry": "2027-03-31",
                                     "amount_drawn_mg": 50.0, "amount_administered_mg": dose_mg,
                                     "amount_wasted_mg": 5.0, "waste_witness_id": "{{prescriber}}"}}
        readings = [
            reading(t(day, "08:50"), "pre-dose", bp=(124, 80), hr=78, spo2=98, rr=15, moaas=5),
            reading(t(day, "09:20"), "during", bp=(138, 88), hr=86, spo2=97, rr=15, cadss=18, moaas=4),
            reading(t(day, "10:00"), "post-dose", bp=(130, 84), hr=80, spo2=98, rr=15, cadss=5, moaas=5),
            reading(t(day, "10:40"), "discharge", bp=(126, 81), hr=76, spo2=98, rr=14, cadss=0, moaas=5),
        ]
        step = session(f"dosing_{n}", "dosing", t(day, "08:40"), t(day, "11:00"), ["nurse", "therapist"],
                       notes=f"SYNTHETIC NOTE: IM session {n} with therapist present. Not a real patient.",
                       setting="clinic", discharge_at=t(day, "10:45"), doses=[dose], monitoring_readings=readings)
        step["save_children"] = {f"dose_{n}": "doses.0"}
        steps.append(step)
        if n == 1:
            dose_fixed = dict(dose, session_id="{{dosing_1}}",
                              controlled_substance=dict(dose["controlled_substance"], lot_number="SYN-IM-2605A"))
            steps.append({
                "method": "PUT", "path": "/episodes/{{episode}}/doses/{{dose_1}}",
                "comment": "amendment: the lot number was transcribed wrongly",
                "body": {**dose_fixed,
                         "amendment_reason": "Lot number transcribed wrongly (SYN-IM-2605X); corrected to "
                                             "SYN-IM-2605A from the vial label."}})
        if n == 2:
            steps.append({"save_as": "nausea", "path": "/episodes/{{episode}}/side-effects", "body": {
                "session_id": "{{dosing_2}}", "dose_id": "{{dose_2}}", "kind": "nausea", "severity": "moderate",
                "onset_at": t(day, "09:25"), "resolved_at": t(day, "10:20")}})
        steps.append(session(f"integration_{n}", "integration", t(day, "13:00", 24 * 60),
                             t(day, "14:00", 24 * 60), ["therapist"],
                             modality="telehealth" if n == 2 else "in-person",
                             notes=f"SYNTHETIC NOTE: integration after IM session {n}. Not a real patient."))
    steps += [
        transition("integration", t("2026-05-26", "15:00")),
        session("integration_final", "integration", t("2026-06-01", "10:00"), t("2026-06-01", "11:00"),
                ["therapist"], notes="SYNTHETIC NOTE: closing session. Not a real patient."),
        measure("pcl-5", t("2026-06-01", "10:10"),
                [1, 1, 1, 2, 1, 1, 1, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1], "integration_final",
                save_as="pcl5_after"),
        cssrs(t("2026-06-01", "10:15"), "integration_final"),
        transition("completed", t("2026-06-01", "11:30")),
    ]
    return {
        "name": "b-ptsd-im-ketamine",
        "description": "SYNTHETIC. PTSD (F43.12), IM racemic ketamine 0.5 mg/kg (90 kg -> 45 mg) in 3 weekly sessions, "
                       "PCL-5 before (total 52, provisional PTSD) and after (total 23), C-SSRS, prazosin as a "
                       "concomitant medication, a moderate nausea tied to the second dose, and the first dose "
                       "amended (lot number corrected, PUT with amendment_reason). No safety flag.",
        "expected_flags": [],
        "steps": steps,
    }


# ------------------------------------------------------------------------------------------------------------
# (c) esketamine nasal spray for TRD (on-label), REMS monitoring, maintenance booster
# ------------------------------------------------------------------------------------------------------------


def fixture_c() -> dict:
    t = Clock("America/Denver")  # August-September 2026: -06:00
    steps = [
        practitioner("prescriber", "Unreal", ["Morgan"], "381726354", ["prescriber"]),
        practitioner("nurse", "Standin", ["Alex"], "371625344", ["nurse", "monitor"]),
        practitioner("therapist", "Pretendsen", ["Sam"], None, ["therapist"]),
        patient("patient", "SYN-0003", "Examplar", ["Priya"], "1969-11-20", "female"),
        {"path": "/patients/{{patient}}/body-weights",
         "body": {"measured_at": t("2026-08-03", "09:05"), "weight_kg": 64.5}},
        {"save_as": "episode", "path": "/episodes", "body": {
            "patient_id": "{{patient}}",
            "indications": [{"kind": "depression", "icd10cm": "F33.2", "snomed": "36474008",
                             "display": "Major depressive disorder, recurrent, severe without psychotic features",
                             "treatment_resistant": True}],
            "care_team": [{"practitioner_id": "{{prescriber}}", "role": "prescriber"},
                          {"practitioner_id": "{{nurse}}", "role": "monitor"},
                          {"practitioner_id": "{{therapist}}", "role": "therapist"}],
            "period_start": t("2026-08-03", "09:00")}},
        session("assessment_session", "assessment", t("2026-08-03", "09:00"), t("2026-08-03", "10:00"),
                ["prescriber"], notes="SYNTHETIC NOTE: REMS enrolment and intake. Not a real patient."),
        measure("phq-9", t("2026-08-03", "09:15"), [3, 2, 3, 2, 2, 2, 2, 1, 0], "assessment_session", difficulty=2),
        cssrs(t("2026-08-03", "09:20"), "assessment_session"),
        {"path": "/episodes/{{episode}}/concomitant-medications",
         "body": {"medication_class": "other", "name": "escitalopram (SSRI, the oral antidepressant taken with "
                  "esketamine)", "dose_text": "20 mg by mouth daily", "start": "2026-02-01"}},
        {"path": "/episodes/{{episode}}/concomitant-medications",
         "body": {"medication_class": "non-benzodiazepine-sedative-hypnotic", "name": "zolpidem",
                  "dose_text": "5 mg at bedtime as needed", "start": "2026-04-10"}},
        transition("preparation", t("2026-08-03", "10:05")),
        session("prep_session", "preparation", t("2026-08-05", "10:00"), t("2026-08-05", "11:00"), ["therapist"],
                notes="SYNTHETIC NOTE: preparation; REMS rules (no driving that day) explained. Not a real patient."),
        {"save_as": "consent", "path": "/episodes/{{episode}}/consents", "body": {
            "form_url": CONSENT_FORM, "form_version": "2026.1-esk", "signed_at": t("2026-08-05", "10:40"),
            "witness_practitioner_id": "{{nurse}}", "off_label_use_acknowledged": False,
            "routes_covered": ["intranasal"]}},
        {"save_as": "order_induction", "path": "/episodes/{{episode}}/dosing-orders", "body": {
            "medication": "esketamine", "route": "intranasal", "dose_value": 56, "dose_unit": "mg",
            "frequency": "twice weekly, weeks 1-4 (induction): 56 mg on day 1, then 84 mg", "number_of_sessions": 8,
            "prescriber_id": "{{prescriber}}", "ordered_at": t("2026-08-05", "11:00")}},
        transition("dosing", t("2026-08-10", "08:30")),
    ]
    days = ["2026-08-10", "2026-08-13", "2026-08-17", "2026-08-20", "2026-08-24", "2026-08-27", "2026-08-31",
            "2026-09-03"]
    weekly_phq = {"2026-08-17": [2, 2, 2, 2, 2, 1, 1, 1, 0], "2026-08-24": [2, 1, 1, 2, 1, 1, 1, 1, 0],
                  "2026-08-31": [1, 1, 1, 1, 1, 1, 1, 0, 0]}

    def rems_session(save_as: str, day: str, mg: int, *, order: str, notes: str | None = None,
                     side_effects: list | None = None) -> dict:
        devices = mg // 28
        first = t(day, "09:20")
        dose = {"order_id": "{{" + order + "}}", "medication": "esketamine", "route": "intranasal",
                "setting": "clinic", "dose_mg": mg, "start": first, "end": t(day, "09:20", 5 * (devices - 1)),
                "administered_by_id": "{{nurse}}", "supervised_by_id": "{{prescriber}}",
                "controlled_substance": {"ndc": "50458-028-02" if mg == 56 else "50458-028-03",
                                         "lot_number": f"SYN-ESK-{day[5:7]}{day[8:10]}", "expiry": "2027-06-30",
                                         "amount_drawn_mg": mg, "amount_administered_mg": mg,
                                         "amount_wasted_mg": 0}}
        readings = [
            reading(t(day, "09:10"), "pre-dose", bp=(122, 78), hr=72, spo2=98, rr=14, moaas=5),
            reading(t(day, "09:45"), "during", spo2=97, hr=78, cadss=12, moaas=4),
            # REMS: BP about 40 minutes after the first device (09:20 + 40 min).
            reading(t(day, "10:00"), "post-dose", bp=(136, 86), hr=80, spo2=98, rr=14, cadss=6, moaas=5),
            reading(t(day, "11:25"), "discharge", bp=(124, 79), hr=72, spo2=98, rr=14, cadss=0, moaas=5),
        ]
        extra = {"side_effects": side_effects} if side_effects else {}
        step = session(save_as, "dosing", t(day, "09:00"), t(day, "11:35"), ["nurse"], notes=notes,
                       setting="clinic", discharge_at=t(day, "11:30"),  # 130 min after the first device
                       doses=[dose], monitoring_readings=readings, **extra)
        step["save_children"] = {f"{save_as}_dose": "doses.0"}
        return step

    for n, day in enumerate(days, start=1):
        mild_dissociation = [{"kind": "dissociation", "severity": "mild", "onset_at": t(day, "09:35"),
                              "resolved_at": t(day, "10:30")}] if n == 1 else None
        steps.append(rems_session(f"induction_{n}", day, 56 if n == 1 else 84, order="order_induction",
                                  notes="SYNTHETIC NOTE: first esketamine session. Not a real patient."
                                  if n == 1 else None, side_effects=mild_dissociation))
        if day in weekly_phq:
            steps.append(measure("phq-9", t(day, "09:05"), weekly_phq[day], f"induction_{n}", difficulty=1))
    steps += [
        transition("integration", t("2026-09-03", "13:00"), "induction completed"),
        session("integration_1", "integration", t("2026-09-04", "10:00"), t("2026-09-04", "11:00"), ["therapist"],
                modality="telehealth", notes="SYNTHETIC NOTE: integration after induction. Not a real patient."),
        measure("phq-9", t("2026-09-04", "10:05"), [1, 1, 0, 1, 1, 0, 1, 0, 0], "integration_1", difficulty=1),
        cssrs(t("2026-09-04", "10:10"), "integration_1"),
        transition("maintenance", t("2026-09-08", "08:00"), "response: weekly maintenance"),
        {"save_as": "order_maintenance", "path": "/episodes/{{episode}}/dosing-orders", "body": {
            "medication": "esketamine", "route": "intranasal", "dose_value": 84, "dose_unit": "mg",
            "frequency": "weekly, weeks 5-8 (maintenance)", "number_of_sessions": 4,
            "prescriber_id": "{{prescriber}}", "ordered_at": t("2026-09-08", "08:05")}},
        rems_session("booster_1", "2026-09-10", 84, order="order_maintenance",
                     notes="SYNTHETIC NOTE: first maintenance booster. Not a real patient."),
    ]
    return {
        "name": "c-esketamine-rems",
        "description": "SYNTHETIC. Treatment-resistant depression, esketamine nasal spray (on-label, consent without "
                       "off-label acknowledgement): 8 induction sessions (56 mg on day 1, then 84 mg; NDC "
                       "50458-028-02 / -03 with lot numbers), REMS monitoring (BP before the dose, 40 min after it and "
                       "at discharge; SpO2; discharge 130 min after the first device), weekly PHQ-9, escitalopram and "
                       "zolpidem as concomitant medications, a mild dissociation, then integration -> maintenance and "
                       "one 84 mg maintenance booster. The episode stays in maintenance. No safety flag.",
        "expected_flags": [],
        "steps": steps,
    }


# ------------------------------------------------------------------------------------------------------------
# (d) generalized anxiety, at-home sublingual racemic ketamine lozenges, telehealth
# ------------------------------------------------------------------------------------------------------------


def fixture_d() -> dict:
    t = Clock("America/Los_Angeles")  # September-October 2026: -07:00
    steps = [
        practitioner("prescriber", "Imaginary", ["Taylor"], "471625384", ["prescriber", "monitor"]),
        practitioner("therapist", "Fakename", ["Riley"], "461524374", ["therapist"]),
        patient("patient", "SYN-0004", "Dummington", ["Rene"], "1992-02-14", "other"),
        {"path": "/patients/{{patient}}/body-weights",
         "body": {"measured_at": t("2026-09-08", "17:10"), "weight_kg": 68.0}},
        {"save_as": "episode", "path": "/episodes", "body": {
            "patient_id": "{{patient}}",
            "indications": [{"kind": "anxiety", "icd10cm": "F41.1", "snomed": "21897009",
                             "display": "Generalized anxiety disorder"}],
            "care_team": [{"practitioner_id": "{{prescriber}}", "role": "prescriber"},
                          {"practitioner_id": "{{therapist}}", "role": "therapist"}],
            "period_start": t("2026-09-08", "17:00")}},
        session("assessment_session", "assessment", t("2026-09-08", "17:00"), t("2026-09-08", "18:00"),
                ["prescriber"], modality="telehealth",
                notes="SYNTHETIC NOTE: telehealth intake for at-home KAP. Not a real patient."),
        measure("gad-7", t("2026-09-08", "17:15"), [3, 2, 3, 2, 2, 3, 2], "assessment_session"),
        cssrs(t("2026-09-08", "17:20"), "assessment_session"),
        {"path": "/episodes/{{episode}}/concomitant-medications",
         "body": {"medication_class": "other", "name": "buspirone", "dose_text": "15 mg by mouth twice daily",
                  "start": "2026-01-15"}},
        transition("preparation", t("2026-09-08", "18:05")),
        session("prep_session", "preparation", t("2026-09-10", "17:00"), t("2026-09-10", "18:00"), ["therapist"],
                modality="telehealth",
                notes="SYNTHETIC NOTE: preparation; home setting, sitter and lozenge technique reviewed. "
                      "Not a real patient."),
        {"save_as": "consent", "path": "/episodes/{{episode}}/consents", "body": {
            "form_url": CONSENT_FORM, "form_version": "2026.1-home", "signed_at": t("2026-09-10", "17:45"),
            "off_label_use_acknowledged": True, "routes_covered": ["sublingual"]}},
        {"save_as": "order", "path": "/episodes/{{episode}}/dosing-orders", "body": {
            "medication": "racemic-ketamine", "route": "sublingual", "dose_value": 100, "dose_unit": "mg",
            "frequency": "weekly at home with a telehealth check-in; titrate by 100 mg per session to 300 mg as "
                         "tolerated", "number_of_sessions": 3, "prescriber_id": "{{prescriber}}",
            "ordered_at": t("2026-09-10", "18:00"),
            "off_label_reason": "Racemic ketamine is not approved for generalized anxiety disorder."}},
        transition("dosing", t("2026-09-14", "17:00")),
    ]
    plan = [("2026-09-14", 100), ("2026-09-21", 200), ("2026-09-28", 300)]
    gad = {"2026-09-21": [2, 2, 2, 2, 1, 2, 1], "2026-09-28": [2, 1, 1, 1, 1, 1, 1]}
    for n, (day, mg) in enumerate(plan, start=1):
        dose = {"order_id": "{{order}}", "medication": "racemic-ketamine", "route": "sublingual", "setting": "home",
                "dose_mg": mg, "start": t(day, "18:15"), "end": t(day, "18:30"),
                "supervised_by_id": "{{prescriber}}",
                "controlled_substance": {"lot_number": f"SYN-SL-26{n:02d}", "expiry": "2027-01-31",
                                         "amount_administered_mg": mg}}
        readings = [
            reading(t(day, "18:10"), "pre-dose", bp=(118, 76), hr=80, self_reported=True),
            reading(t(day, "19:15"), "post-dose", bp=(124, 80), hr=76, self_reported=True),
        ]
        step = session(f"home_{n}", "dosing", t(day, "18:00"), t(day, "19:30"), ["prescriber"], modality="telehealth",
                       setting="home", check_in_at=t(day, "18:05"), doses=[dose], monitoring_readings=readings,
                       notes="SYNTHETIC NOTE: at-home session, sitter present. Not a real patient." if n == 1 else None)
        step["save_children"] = {f"dose_{n}": "doses.0"}
        steps.append(step)
        if day in gad:
            steps.append(measure("gad-7", t(day, "17:55"), gad[day], f"home_{n}"))
        steps.append(session(f"integration_{n}", "integration", t(day, "17:00", 24 * 60), t(day, "18:00", 24 * 60),
                             ["therapist"], modality="telehealth",
                             notes=f"SYNTHETIC NOTE: telehealth integration after home session {n}. "
                                   "Not a real patient."))
    steps += [
        transition("integration", t("2026-09-29", "18:30")),
        session("integration_final", "integration", t("2026-10-05", "17:00"), t("2026-10-05", "18:00"),
                ["therapist"], modality="telehealth", notes="SYNTHETIC NOTE: closing session. Not a real patient."),
        measure("gad-7", t("2026-10-05", "17:10"), [1, 1, 1, 0, 1, 1, 0], "integration_final"),
        cssrs(t("2026-10-05", "17:15"), "integration_final"),
        transition("completed", t("2026-10-05", "18:30")),
    ]
    return {
        "name": "d-gad-home-sublingual",
        "description": "SYNTHETIC. Generalized anxiety disorder (F41.1), at-home sublingual racemic ketamine lozenges "
                       "(100, 200, 300 mg; weight taken from the recorded body weight, 68 kg), self-reported home "
                       "readings, a telehealth check-in 10 minutes before each dose, telehealth assessment, "
                       "preparation and integration sessions, GAD-7 from 17 (severe) to 5 (mild), C-SSRS, buspirone. "
                       "No safety flag.",
        "expected_flags": [],
        "steps": steps,
    }


if __name__ == "__main__":
    write("a-trd-iv-ketamine.json", fixture_a())
    write("b-ptsd-im-ketamine.json", fixture_b())
    write("c-esketamine-rems.json", fixture_c())
    write("d-gad-home-sublingual.json", fixture_d())
    print("written to", OUT)
