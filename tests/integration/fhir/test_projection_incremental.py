"""The FHIR projection and the safety rules follow what each command changed (issue 13): after any sequence of
commands, the resources stored incrementally are those a full refresh of the chart stores, and the flags are those
an evaluation of every record gives; and a write into a long episode stores only what it changed, however long the
episode."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from service.adapters.fhir_store import fhir_resources
from service.domain.episode import allowed_next
from service.domain.errors import DomainError
from service.domain.model import (
    BodyWeight,
    CareTeamMember,
    ClinicalSession,
    DosingRecord,
    HumanName,
    Identifier,
    Indication,
    MonitoringReading,
    OutcomeMeasure,
    Patient,
    Practitioner,
    Record,
    SideEffect,
)
from service.domain.rules import SafetyPolicy
from service.domain.vocabulary import (
    AdministrativeGender,
    FlagStatus,
    IndicationKind,
    Instrument,
    Medication,
    Phase,
    PractitionerRole,
    ReadingTiming,
    Route,
    SideEffectKind,
    SideEffectSeverity,
)
from service.fhir import projection
from service.service_layer import services
from service.service_layer.unit_of_work import UnitOfWork
from tests.support.app import make_app
from tests.support.builders import T0, consent, dosing_session, trd

CLINIC = "demo"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    yield make_app(database_url)


class Chart:
    """One patient and episode, changed by use cases, one unit of work (one request) per command."""

    def __init__(self, app: Flask) -> None:
        self.session_factory = app.extensions["kapfhir"].session_factory
        self.step = 0
        suffix = uuid.uuid4().hex[:8]
        self.lead, self.nurse = f"pr-lead-{suffix}", f"pr-nurse-{suffix}"
        self.patient_id = f"pt-{suffix}"
        self.run(
            lambda uow, ctx: [
                services.register_practitioner(
                    uow, ctx, Practitioner(id=pid, name=HumanName(family=family), roles=[role])
                )
                for pid, family, role in (
                    (self.lead, "Lead", PractitionerRole.PRESCRIBER),
                    (self.nurse, "Nurse", PractitionerRole.NURSE),
                )
            ]
        )
        self.run(
            lambda uow, ctx: services.register_patient(
                uow,
                ctx,
                Patient(
                    id=self.patient_id,
                    mrn=Identifier(system="https://clinic.example.org/mrn", value=suffix),
                    name=HumanName(family="Synthetic", given=["Pat"]),
                    birth_date=date(1980, 1, 1),
                    gender=AdministrativeGender.FEMALE,
                ),
            )
        )
        episode = self.run(
            lambda uow, ctx: services.open_episode(
                uow,
                ctx,
                patient_id=self.patient_id,
                indications=[trd()],
                care_team=[CareTeamMember(practitioner_id=self.lead, role=PractitionerRole.PRESCRIBER)],
                period_start=T0 - timedelta(days=30),
                status=services.EpisodeStatus.ACTIVE,
            )
        )
        self.episode_id = episode.id

    def at(self) -> datetime:
        """A clinical time later than every earlier one (transitions are kept in clinical order)."""
        self.step += 1
        return T0 + timedelta(hours=6 * self.step)

    def run(self, command: Callable[[UnitOfWork, services.Context], Any]) -> Any:
        """One command; a refused one (e.g. amending a dose of a session entered in error) changes nothing."""
        with UnitOfWork(self.session_factory, CLINIC, write=True) as uow:
            try:
                result = command(uow, services.Context(actor="test", now=NOW, policy=SafetyPolicy()))
            except DomainError:
                return None
            uow.commit()
            self.projected = dict(uow.projected)
        return result

    def episode(self) -> Any:
        with UnitOfWork(self.session_factory, CLINIC, write=False) as uow:
            return services.get_episode(uow, self.episode_id)


def _session_with_dose(chart: Chart, esketamine: bool, readings: int, by_nurse: bool) -> list[tuple[str, Record]]:
    start = chart.at()
    sid, did = str(uuid.uuid4()), str(uuid.uuid4())
    dose = DosingRecord(
        id=did,
        session_id=sid,
        medication=Medication.ESKETAMINE if esketamine else Medication.RACEMIC_KETAMINE,
        route=Route.INTRANASAL if esketamine else Route.INTRAVENOUS,
        dose_mg=56.0 if esketamine else 35.0,
        weight_kg=None if esketamine else 70.0,
        infusion_duration_min=None if esketamine else 40,
        start=start + timedelta(minutes=15),
        end=start + timedelta(minutes=25 if esketamine else 55),
        administered_by_id=chart.nurse if by_nurse else None,
    )
    records: list[tuple[str, Record]] = [("", dosing_session(sid, start)), ("doses[0].", dose)]
    for i in range(readings):
        reading = MonitoringReading(
            id=str(uuid.uuid4()),
            session_id=sid,
            taken_at=start + timedelta(minutes=5 + 60 * i),
            timing=ReadingTiming.PRE_DOSE if i == 0 else ReadingTiming.POST_DOSE,
            systolic_mmhg=185 if i == 1 else 124,
            diastolic_mmhg=78,
            heart_rate_per_min=72,
            spo2_percent=98,
        )
        records.append((f"readings[{i}].", reading))
    return records


def apply(chart: Chart, command: tuple) -> None:
    kind, *args = command
    episode = chart.episode()
    current = [r for r in episode.records.values() if not r.entered_in_error]
    if kind == "session":
        chart.run(lambda uow, ctx: services.add_records(uow, ctx, chart.episode_id, _session_with_dose(chart, *args)))
    elif kind == "measure":
        measure = OutcomeMeasure(
            id=str(uuid.uuid4()), instrument=Instrument.PHQ9, administered_at=chart.at(), items=list(args[0])
        )
        chart.run(lambda uow, ctx: services.add_records(uow, ctx, chart.episode_id, [("", measure)]))
    elif kind == "consent":
        # signed before every session (a consent recorded late) or now
        signed_at = T0 - timedelta(days=1) if args[0] else chart.at()
        routes = [Route.INTRAVENOUS, Route.INTRANASAL]
        signed = consent(id=str(uuid.uuid4()), signed_at=signed_at, routes_covered=routes)
        chart.run(lambda uow, ctx: services.add_records(uow, ctx, chart.episode_id, [("", signed)]))
    elif kind == "pre-dose-reading":
        sessions = [r for r in current if isinstance(r, ClinicalSession)]
        if sessions:
            session = sessions[args[0] % len(sessions)]
            reading = MonitoringReading(
                id=str(uuid.uuid4()),
                session_id=session.id,
                taken_at=session.start + timedelta(minutes=5),
                timing=ReadingTiming.PRE_DOSE,
                systolic_mmhg=120,
                diastolic_mmhg=76,
            )
            chart.run(lambda uow, ctx: services.add_records(uow, ctx, chart.episode_id, [("", reading)]))
    elif kind == "side-effect" and current:
        onset = chart.at()
        effect = SideEffect(
            id=str(uuid.uuid4()),
            kind=SideEffectKind.NAUSEA,
            severity=SideEffectSeverity.MILD,
            onset_at=onset,
            resolved_at=onset + timedelta(hours=1),
        )
        chart.run(lambda uow, ctx: services.add_records(uow, ctx, chart.episode_id, [("", effect)]))
    elif kind == "amend-dose":
        doses = [r for r in current if isinstance(r, DosingRecord)]
        if doses:
            dose = doses[args[0] % len(doses)]
            amended = dataclasses.replace(
                dose, dose_mg=dose.dose_mg + 10, administered_by_id=chart.nurse if args[1] else None
            )
            chart.run(
                lambda uow, ctx: services.amend_record(
                    uow, ctx, chart.episode_id, amended, reason="corrected", expected_version=dose.version
                )
            )
    elif kind == "mark" and current:
        record = current[args[0] % len(current)]
        chart.run(
            lambda uow, ctx: services.mark_entered_in_error(
                uow, ctx, chart.episode_id, type(record), record.id, reason="wrong chart", expected_version=None
            )
        )
    elif kind == "phase":
        following = [p for p in allowed_next(episode.phase) if p is not Phase.DISCONTINUED]
        if following:
            chart.run(
                lambda uow, ctx: services.transition_phase(
                    uow, ctx, chart.episode_id, to_phase=following[0], at=chart.at(), reason=None, expected_version=None
                )
            )
    elif kind == "acknowledge":
        open_flags = [f for f in episode.flags if f.status is FlagStatus.OPEN]
        if open_flags:
            flag = open_flags[args[0] % len(open_flags)]
            by = chart.nurse if args[1] else chart.lead
            chart.run(
                lambda uow, ctx: services.acknowledge_flag(uow, ctx, chart.episode_id, flag.id, by=by, comment="seen")
            )
    elif kind == "indications":
        indications = [trd()]
        if args[0]:
            indications.append(
                Indication(kind=IndicationKind.SUBSTANCE_USE, icd10cm="F10.20", display="Alcohol dependence")
            )
        chart.run(
            lambda uow, ctx: services.amend_episode(
                uow,
                ctx,
                chart.episode_id,
                indications=indications,
                care_team=episode.care_team,
                status=episode.status,
                reason="reviewed",
                expected_version=None,
            )
        )
    elif kind == "weight":
        weight = BodyWeight(id=str(uuid.uuid4()), measured_at=chart.at(), weight_kg=args[0])
        chart.run(lambda uow, ctx: services.record_patient_record(uow, ctx, chart.patient_id, weight))


commands = st.one_of(
    st.tuples(st.just("session"), st.booleans(), st.integers(0, 2), st.booleans()),
    st.tuples(st.just("measure"), st.lists(st.integers(0, 3), min_size=9, max_size=9)),
    st.tuples(st.just("side-effect")),
    st.tuples(st.just("consent"), st.booleans()),
    st.tuples(st.just("pre-dose-reading"), st.integers(0, 5)),
    st.tuples(st.just("amend-dose"), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("mark"), st.integers(0, 20)),
    st.tuples(st.just("phase")),
    st.tuples(st.just("acknowledge"), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("indications"), st.booleans()),
    st.tuples(st.just("weight"), st.floats(40, 150).map(lambda kg: round(kg, 1))),
)


def stored_resources(app: Flask) -> dict[tuple[str, str], dict]:
    """The current resources of the clinic (Provenance aside: one per write), without meta.lastUpdated."""
    t = fhir_resources
    out = {}
    with app.extensions["kapfhir"].session_factory() as session:
        query = select(t.c.resource_type, t.c.id, t.c.body).where(
            t.c.clinic_id == CLINIC, t.c.is_current.is_(True), t.c.resource_type != "Provenance"
        )
        for row in session.execute(query):
            body = orjson.loads(row.body)
            body.get("meta", {}).pop("lastUpdated", None)
            out[(row.resource_type, row.id)] = body
    return out


def full_refresh(chart: Chart) -> None:
    with UnitOfWork(chart.session_factory, CLINIC, write=True) as uow:
        projection.refresh_projection(uow.session, CLINIC, services.episode_chart(uow, chart.episode_id), NOW)
        uow.commit()


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(sequence=st.lists(commands, min_size=1, max_size=7))
# A flag acknowledged by a practitioner no record names (shown by name), who a later dose then names (a reference),
# and who an amendment stops naming again: the DetectedIssue follows.
@example(sequence=[("acknowledge", 0, True), ("session", False, 0, True)])
@example(sequence=[("acknowledge", 0, True), ("session", False, 0, True), ("phase",), ("amend-dose", 1, False)])
# A session without a pre-dose reading, given one later: the new reading alone resolves its flag.
@example(sequence=[("session", False, 0, False), ("pre-dose-reading", 1)])
# A consent resolves the flags of every earlier session; the one marked entered in error raises them again.
@example(sequence=[("session", True, 1, False), ("consent", True), ("mark", 4), ("session", False, 0, False)])
def test_incremental_projection_equals_a_full_refresh(app: Flask, sequence: list[tuple]) -> None:
    chart = Chart(app)
    apply(chart, ("session", False, 1, False))  # something to amend, mark and flag from the start
    for command in sequence:
        apply(chart, command)
        assert_flags_are_those_of_every_record(chart)
    incremental = stored_resources(app)
    full_refresh(chart)
    assert stored_resources(app) == incremental


def assert_flags_are_those_of_every_record(chart: Chart) -> None:
    """The stored flags, evaluated again over every record (as if the rules had changed), change in nothing: the
    writes that evaluated only the sessions and measures they touched left what a full evaluation leaves."""
    episode = chart.episode()
    stored = {f.id: (f.key, f.status) for f in episode.flags}
    episode.safety_basis = None
    changes = episode.evaluate_safety(SafetyPolicy(), now=NOW)
    assert (changes.raised, changes.changed) == ([], []), stored
    assert {f.id: (f.key, f.status) for f in episode.flags} == stored


def _rows(app: Flask) -> int:
    with app.extensions["kapfhir"].session_factory() as session:
        return session.execute(select(func.count()).select_from(fhir_resources)).scalar_one()


def test_a_session_write_stores_only_what_it_changed_however_long_the_episode(app: Flask) -> None:
    chart = Chart(app)
    written = []
    for _ in range(32):
        before = _rows(app)
        apply(chart, ("session", False, 2, False))
        written.append(_rows(app) - before)
    # The 32nd session into the episode stores as many rows as the 2nd: the session, its dose and its two readings
    # (each reading's observations), the episode-level resources (EpisodeOfCare, CarePlan, Condition), a
    # Provenance; nothing of the 30 earlier sessions.
    assert written[-1] == written[1]
    assert written[-1] < 20
    assert not any(rtype in ("Patient", "Organization", "Practitioner") for rtype, _ in chart.projected)
    assert sum(1 for rtype, _ in chart.projected if rtype == "Encounter") == 1


def _header_resources(chart: Chart) -> dict[tuple[str, str], tuple[int, bool]]:
    return {key: stored for key, stored in chart.projected.items() if key[0] in ("EpisodeOfCare", "Condition")}


def test_sessions_written_leave_the_episode_of_care_and_conditions_at_their_version(app: Flask) -> None:
    # They carry the episode's header (status, period, indications, care team), not its version: an EHR polling
    # them by _lastUpdated or _history sees a new version only when the header changed.
    chart = Chart(app)
    apply(chart, ("session", False, 1, False))
    first = _header_resources(chart)
    assert {rtype for rtype, _ in first} == {"EpisodeOfCare", "Condition"}
    for _ in range(3):
        apply(chart, ("session", True, 2, False))
        assert _header_resources(chart) == {key: (version, False) for key, (version, _) in first.items()}
    chart.run(
        lambda uow, ctx: services.transition_phase(
            uow,
            ctx,
            chart.episode_id,
            to_phase=Phase.DISCONTINUED,
            at=chart.at(),
            reason="moved",
            expected_version=None,
        )
    )
    ended = _header_resources(chart)
    assert ended == {key: (version + 1, True) for key, (version, _) in first.items()}  # status and period changed
    episode = chart.episode()
    assert (episode.header_version, episode.header_updated_at) == (episode.version, NOW)
