"""Request bodies of a small, clean IV-ketamine episode and of its dosing sessions, for API tests, the reliability
tests and bench/ (anything with ``created`` and ``post``: the in-process Api or an HTTP client)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any, Protocol


class SendsRequests(Protocol):
    """The in-process Api (tests/support/app.py) or an HTTP client (tests/support/harness.py)."""

    def created(self, path: str, body: Any) -> dict[str, Any]: ...

    def post(self, path: str, body: Any = None) -> Any: ...


PRESCRIBER = {"name": {"family": "Okafor", "given": ["Nneka"]}, "npi": "1234567893", "roles": ["prescriber"]}
THERAPIST = {"name": {"family": "Lindqvist", "given": ["Jon"]}, "roles": ["therapist"]}
PATIENT = {
    "mrn": {"system": "https://demo-clinic.example.org/fhir/mrn", "value": "SYN-9001"},
    "name": {"family": "Testperson", "given": ["Alex"]},
    "birth_date": "1984-05-17",
    "gender": "other",
}


def seed_episode(
    api: SendsRequests, *, patient: dict[str, Any] = PATIENT, prescriber: dict[str, Any] = PRESCRIBER
) -> dict[str, str]:
    """An IV-ketamine episode in the dosing phase with a signed consent; ``api`` needs ``created`` and ``post``."""
    prescriber = api.created("/practitioners", prescriber)["id"]
    therapist = api.created("/practitioners", THERAPIST)["id"]
    patient = api.created("/patients", patient)["id"]
    episode = api.created(
        "/episodes",
        {
            "patient_id": patient,
            "indications": [
                {"kind": "depression", "icd10cm": "F33.2", "snomed": "36474008", "treatment_resistant": True}
            ],
            "care_team": [
                {"practitioner_id": prescriber, "role": "prescriber"},
                {"practitioner_id": therapist, "role": "therapist"},
            ],
            "period_start": "2026-02-01T09:00:00-05:00",
        },
    )["id"]
    for to_phase, at in (("preparation", "2026-02-03T09:00:00-05:00"), ("dosing", "2026-02-10T08:00:00-05:00")):
        assert api.post(f"/episodes/{episode}/phase-transitions", {"to_phase": to_phase, "at": at}).status_code == 201
    consent = api.created(
        f"/episodes/{episode}/consents",
        {
            "form_url": "https://demo-clinic.example.org/forms/kap-consent",
            "form_version": "2026-01",
            "signed_at": "2026-02-03T10:00:00-05:00",
            "off_label_use_acknowledged": True,
            "routes_covered": ["intravenous"],
        },
    )["id"]
    return {
        "prescriber": prescriber,
        "therapist": therapist,
        "patient": patient,
        "episode": episode,
        "consent": consent,
    }


def dosing_session_body(
    ids: dict[str, str],
    *,
    start: str = "2026-02-10T09:00:00-05:00",
    dose_mg: float = 35.0,
    with_pre_dose_bp: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    readings = (
        [
            {
                "taken_at": start.replace("09:00", "09:05"),
                "timing": "pre-dose",
                "systolic_mmhg": 126,
                "diastolic_mmhg": 80,
                "heart_rate_per_min": 70,
                "spo2_percent": 98,
            }
        ]
        if with_pre_dose_bp
        else []
    )
    readings.append(
        {"taken_at": start.replace("09:00", "10:30"), "timing": "discharge", "systolic_mmhg": 122, "diastolic_mmhg": 78}
    )
    body = {
        "kind": "dosing",
        "status": "completed",
        "start": start,
        "end": start.replace("09:00", "11:00"),
        "clinician_ids": [ids["prescriber"], ids["therapist"]],
        "setting": "clinic",
        "discharge_at": start.replace("09:00", "10:45"),
        "psychotherapy_notes": "SYNTHETIC NOTE canary-notes-1",
        "doses": [
            {
                "medication": "racemic-ketamine",
                "route": "intravenous",
                "dose_mg": dose_mg,
                "weight_kg": 70,
                "infusion_duration_min": 40,
                "start": start.replace("09:00", "09:15"),
                "end": start.replace("09:00", "09:55"),
                "administered_by_id": ids["prescriber"],
                "controlled_substance": {
                    "lot_number": "LOT-SYN-1",
                    "amount_drawn_mg": max(50, dose_mg),
                    "amount_administered_mg": dose_mg,
                    "amount_wasted_mg": max(50, dose_mg) - dose_mg,
                    "waste_witness_id": ids["therapist"],
                },
            }
        ],
        "monitoring_readings": readings,
    }
    body.update(extra)
    return body


def session_bodies(episodes: list[dict[str, str]], count: int, offset: int) -> list[tuple[str, str]]:
    """Distinct, non-overlapping dosing sessions (path, body), round-robin over the episodes."""
    base = dt.datetime(2026, 2, 11, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    out = []
    for n in range(offset, offset + count):
        ids = episodes[n % len(episodes)]
        start = base + dt.timedelta(hours=3 * (n // len(episodes)))

        def at(minutes: int, start: dt.datetime = start) -> str:
            return (start + dt.timedelta(minutes=minutes)).isoformat()

        body = {
            "kind": "dosing",
            "status": "completed",
            "start": at(0),
            "end": at(120),
            "clinician_ids": [ids["prescriber"], ids["therapist"]],
            "setting": "clinic",
            "discharge_at": at(105),
            "doses": [
                {
                    "medication": "racemic-ketamine",
                    "route": "intravenous",
                    "dose_mg": 35,
                    "weight_kg": 70,
                    "infusion_duration_min": 40,
                    "start": at(15),
                    "end": at(55),
                    "administered_by_id": ids["prescriber"],
                    "controlled_substance": {
                        "lot_number": "LOT-SYN-1",
                        "amount_drawn_mg": 50,
                        "amount_administered_mg": 35,
                        "amount_wasted_mg": 15,
                        "waste_witness_id": ids["therapist"],
                    },
                }
            ],
            "monitoring_readings": [
                {
                    "taken_at": at(5),
                    "timing": "pre-dose",
                    "systolic_mmhg": 126,
                    "diastolic_mmhg": 80,
                    "heart_rate_per_min": 70,
                    "spo2_percent": 98,
                },
                {"taken_at": at(90), "timing": "discharge", "systolic_mmhg": 122, "diastolic_mmhg": 78},
            ],
        }
        out.append((f"/api/v1/episodes/{ids['episode']}/sessions", json.dumps(body)))
    return out


def seed_episodes(http: SendsRequests, count: int) -> list[dict[str, str]]:
    """Episodes in the dosing phase with a signed consent (seed_episode), each with its own patient and
    a prescriber without an NPI (NPIs are unique per clinic)."""
    prescriber = {k: v for k, v in PRESCRIBER.items() if k != "npi"}
    out = []
    for _ in range(count):
        patient = {**PATIENT, "mrn": {**PATIENT["mrn"], "value": f"SYN-{uuid.uuid4().hex[:10]}"}}
        out.append(seed_episode(http, patient=patient, prescriber=prescriber))
    return out
