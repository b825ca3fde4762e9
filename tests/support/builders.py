"""Small builders of domain objects for tests: defaults that describe a clean, uneventful KAP episode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from service.domain.episode import Episode
from service.domain.model import (
    ClinicalSession,
    Consent,
    DosingRecord,
    Indication,
    MonitoringReading,
    OutcomeMeasure,
)
from service.domain.rules import SafetyPolicy
from service.domain.vocabulary import (
    DosingSetting,
    IndicationKind,
    Instrument,
    Medication,
    Modality,
    Phase,
    ReadingTiming,
    Route,
    SessionKind,
    SessionStatus,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
POLICY = SafetyPolicy()


def trd() -> Indication:
    return Indication(kind=IndicationKind.DEPRESSION, icd10cm="F33.2", snomed="36474008", treatment_resistant=True)


def episode(*, indications: list[Indication] | None = None, in_dosing_from: datetime | None = T0) -> Episode:
    ep = Episode(id="ep-1", patient_id="pt-1", indications=indications or [trd()], period_start=T0 - timedelta(days=30))
    if in_dosing_from is not None:
        ep.transition(Phase.PREPARATION, at=in_dosing_from - timedelta(days=7), actor="test")
        ep.transition(Phase.DOSING, at=in_dosing_from - timedelta(days=1), actor="test")
    return ep


def consent(**overrides: Any) -> Consent:
    values: dict[str, Any] = dict(
        id="consent-1",
        form_url="https://clinic.example.org/forms/kap-consent",
        form_version="3",
        signed_at=T0 - timedelta(days=2),
        off_label_use_acknowledged=True,
        routes_covered=[Route.INTRAVENOUS, Route.INTRAMUSCULAR, Route.SUBLINGUAL, Route.INTRANASAL, Route.ORAL],
    )
    values.update(overrides)
    return Consent(**values)


def dosing_session(session_id: str = "s-1", start: datetime = T0, **overrides: Any) -> ClinicalSession:
    values: dict[str, Any] = dict(
        id=session_id,
        kind=SessionKind.DOSING,
        status=SessionStatus.COMPLETED,
        start=start,
        end=start + timedelta(hours=3),
        modality=Modality.IN_PERSON,
        setting=DosingSetting.CLINIC,
        discharge_at=start + timedelta(hours=3),
    )
    values.update(overrides)
    return ClinicalSession(**values)


def iv_dose(
    dose_id: str = "d-1", session_id: str = "s-1", start: datetime = T0 + timedelta(minutes=15), **overrides: Any
) -> DosingRecord:
    values: dict[str, Any] = dict(
        id=dose_id,
        session_id=session_id,
        medication=Medication.RACEMIC_KETAMINE,
        route=Route.INTRAVENOUS,
        dose_mg=35.0,
        weight_kg=70.0,
        infusion_duration_min=40,
        start=start,
        end=start + timedelta(minutes=40),
    )
    values.update(overrides)
    return DosingRecord(**values)


def esketamine_dose(
    dose_id: str = "d-1", session_id: str = "s-1", start: datetime = T0 + timedelta(minutes=15), **overrides: Any
) -> DosingRecord:
    values: dict[str, Any] = dict(
        id=dose_id,
        session_id=session_id,
        medication=Medication.ESKETAMINE,
        route=Route.INTRANASAL,
        dose_mg=56.0,
        start=start,
        end=start + timedelta(minutes=10),
    )
    values.update(overrides)
    return DosingRecord(**values)


def bp(
    reading_id: str, at: datetime, timing: ReadingTiming, session_id: str = "s-1", **overrides: Any
) -> MonitoringReading:
    values: dict[str, Any] = dict(
        id=reading_id,
        session_id=session_id,
        taken_at=at,
        timing=timing,
        systolic_mmhg=124,
        diastolic_mmhg=78,
        heart_rate_per_min=72,
        spo2_percent=98,
    )
    values.update(overrides)
    return MonitoringReading(**values)


def phq9(measure_id: str, items: list[int], at: datetime = T0) -> OutcomeMeasure:
    return OutcomeMeasure(id=measure_id, instrument=Instrument.PHQ9, administered_at=at, items=items)


def with_records(ep: Episode, *records: Any) -> Episode:
    for record in records:
        ep.add(record, now=NOW)
    return ep


# The REMS form deadlines follow the clock, not the session record: tests/unit/domain/test_rems.py covers them.
REMS_DEADLINE_RULES = {"rems-form-due", "rems-form-overdue"}


def rules_raised(ep: Episode) -> set[str]:
    """The rules the records break (deadline flags of unsent REMS forms left out)."""
    ep.evaluate_safety(POLICY, now=NOW)
    return {f.rule_id for f in ep.open_flags()} - REMS_DEADLINE_RULES
