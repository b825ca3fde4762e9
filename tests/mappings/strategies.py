"""Hypothesis strategies of whole EpisodeCharts, and a census of the fields and enum values they reach."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from enum import Enum

from hypothesis import strategies as st

from service.domain import scales, vocabulary
from service.domain.chart import EpisodeChart
from service.domain.episode import Episode
from service.domain.model import (
    BodyWeight,
    CareTeamMember,
    Clinic,
    ClinicalSession,
    ConcomitantMedication,
    Consent,
    ControlledSubstanceRecord,
    DosingOrder,
    DosingRecord,
    FlagAcknowledgement,
    HumanName,
    Identifier,
    Indication,
    MonitoringReading,
    OutcomeMeasure,
    Patient,
    PhaseTransition,
    Practitioner,
    Record,
    SafetyFlag,
    SideEffect,
)
from service.domain.rules import RULE_IDS
from service.domain.vocabulary import Instrument, SessionKind

texts = st.from_regex(r"[A-Za-z][A-Za-z0-9 ,.'-]{0,14}[A-Za-z0-9]|[A-Za-z]", fullmatch=True)
times = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC))
days = st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 1, 1))
durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30))
amounts = st.floats(min_value=0.01, max_value=1000, allow_nan=False, allow_infinity=False)
maybe = st.none().__or__


def _later(start: datetime) -> st.SearchStrategy[datetime]:
    return durations.map(lambda d: start + d)


@st.composite
def record_bookkeeping(draw: st.DrawFn) -> dict:
    recorded = draw(maybe(times))
    return {
        "version": draw(st.integers(1, 5)),
        "entered_in_error": draw(st.booleans()),
        "recorded_at": recorded,
        "updated_at": draw(maybe(times if recorded is None else _later(recorded))),
    }


@st.composite
def measures(draw: st.DrawFn, rid: str, session_ids: list[str]) -> OutcomeMeasure:
    instrument = draw(st.sampled_from(Instrument))
    spec = scales.SCALES[instrument]
    items = draw(
        st.one_of(
            st.just([0] * spec.items),  # a clean screen is the common case
            st.lists(st.integers(0, spec.item_max), min_size=spec.items, max_size=spec.items),
        )
    )
    behaviour = None
    if instrument is Instrument.CSSRS_SCREENER:
        behaviour = draw(st.booleans()) if items[5] else draw(maybe(st.booleans()))
    score = scales.score(instrument, items, behaviour_within_3_months=behaviour)
    return OutcomeMeasure(
        id=rid,
        **draw(record_bookkeeping()),
        instrument=instrument,
        administered_at=draw(times),
        session_id=draw(maybe(st.sampled_from(session_ids))) if session_ids else None,
        items=items,
        difficulty=draw(maybe(st.integers(0, 3))) if instrument is Instrument.PHQ9 else None,
        behaviour_within_3_months=behaviour,
        total=score.total,
        severity_band=score.severity_band,
        risk_level=score.risk_level,
    )


@st.composite
def charts(draw: st.DrawFn) -> EpisodeChart:
    n = draw(st.integers(1, 99))
    clinic = Clinic(id=f"clinic-{n}", name=draw(texts), identifier_system=f"https://c{n}.example.org/fhir/id")
    practitioners = [
        Practitioner(
            id=f"pr-{i}",
            name=HumanName(family=draw(texts), given=draw(st.lists(texts, max_size=2))),
            npi=draw(maybe(st.from_regex(r"[0-9]{10}", fullmatch=True))),
            roles=draw(st.lists(st.sampled_from(vocabulary.PractitionerRole), max_size=2)),
            version=draw(st.integers(1, 3)),
        )
        for i in range(draw(st.integers(0, 3)))
    ]
    people = [p.id for p in practitioners] + ["outside-clinician"]
    person = st.sampled_from(people)
    patient = Patient(
        id=f"pt-{n}",
        mrn=Identifier(system="https://mrn.example.org", value=draw(texts)),
        name=HumanName(family=draw(texts), given=draw(st.lists(texts, max_size=2))),
        birth_date=draw(days),
        gender=draw(st.sampled_from(vocabulary.AdministrativeGender)),
        version=draw(st.integers(1, 3)),
    )
    counter = iter(range(10_000))

    def rid(prefix: str) -> str:
        return f"{prefix}-{next(counter)}"

    sessions = []
    for _ in range(draw(st.integers(0, 4))):
        start = draw(times)
        kind = draw(st.sampled_from(SessionKind))
        dosing = kind is SessionKind.DOSING
        sessions.append(
            ClinicalSession(
                id=rid("s"),
                **draw(record_bookkeeping()),
                kind=kind,
                status=draw(st.sampled_from(vocabulary.SessionStatus)),
                start=start,
                end=draw(maybe(_later(start))),
                modality=draw(st.sampled_from(vocabulary.Modality)),
                clinician_ids=draw(st.lists(person, max_size=2)),
                psychotherapy_notes=draw(maybe(texts)),
                setting=draw(maybe(st.sampled_from(vocabulary.DosingSetting))) if dosing else None,
                check_in_at=draw(maybe(times)) if dosing else None,
                discharge_at=draw(maybe(times)) if dosing else None,
            )
        )
    session_ids = [s.id for s in sessions] + ["missing-session"]
    weights = [
        BodyWeight(id=rid("w"), **draw(record_bookkeeping()), measured_at=draw(times), weight_kg=draw(amounts))
        for _ in range(draw(st.integers(0, 2)))
    ]
    records: list = list(sessions)
    for _ in range(draw(st.integers(0, 2))):
        signed = draw(times)
        valid_from = draw(maybe(_later(signed)))
        records.append(
            Consent(
                id=rid("c"),
                **draw(record_bookkeeping()),
                form_url=f"https://forms.example.org/{draw(texts)}".replace(" ", ""),
                form_version=draw(st.from_regex(r"[0-9]{1,2}(\.[0-9]{1,2})?", fullmatch=True)),
                signed_at=signed,
                signed_by_patient=draw(st.booleans()),
                witness_practitioner_id=draw(maybe(person)),
                witness_name=draw(maybe(texts)),
                covers_ketamine_for_psychotherapy=draw(st.booleans()),
                off_label_use_acknowledged=draw(st.booleans()),
                routes_covered=draw(st.lists(st.sampled_from(vocabulary.Route), max_size=3)),
                valid_from=valid_from,
                valid_until=draw(maybe(_later(valid_from or signed))),
                withdrawn_at=draw(maybe(times)),
                withdrawal_reason=draw(maybe(texts)),
            )
        )
    orders = []
    for _ in range(draw(st.integers(0, 2))):
        orders.append(
            DosingOrder(
                id=rid("o"),
                **draw(record_bookkeeping()),
                medication=draw(st.sampled_from(vocabulary.Medication)),
                route=draw(st.sampled_from(vocabulary.Route)),
                dose_value=draw(amounts),
                dose_unit=draw(st.sampled_from(vocabulary.DoseUnit)),
                frequency=draw(texts),
                number_of_sessions=draw(st.integers(1, 20)),
                prescriber_id=draw(person),
                ordered_at=draw(times),
                off_label_reason=draw(maybe(texts)),
            )
        )
    records += orders
    doses = []
    for _ in range(draw(st.integers(0, 3))):
        start = draw(times)
        weight = draw(st.one_of(st.none(), amounts, st.sampled_from([w.weight_kg for w in weights] or [70.0])))
        doses.append(
            DosingRecord(
                id=rid("d"),
                **draw(record_bookkeeping()),
                session_id=draw(st.sampled_from(session_ids)),
                order_id=draw(maybe(st.sampled_from([o.id for o in orders] + ["missing-order"]))),
                medication=draw(st.sampled_from(vocabulary.Medication)),
                route=draw(st.sampled_from(vocabulary.Route)),
                setting=draw(st.sampled_from(vocabulary.DosingSetting)),
                dose_mg=draw(amounts),
                weight_kg=weight,
                infusion_duration_min=draw(maybe(amounts)),
                start=start,
                end=draw(maybe(_later(start))),
                administered_by_id=draw(maybe(person)),
                supervised_by_id=draw(maybe(person)),
                override_reason=draw(maybe(texts)),
                controlled_substance=ControlledSubstanceRecord(
                    ndc=draw(maybe(st.from_regex(r"[0-9]{5}-[0-9]{3}-[0-9]{2}", fullmatch=True))),
                    lot_number=draw(maybe(texts)),
                    expiry=draw(maybe(days)),
                    amount_drawn_mg=draw(maybe(amounts)),
                    amount_administered_mg=draw(maybe(amounts)),
                    amount_wasted_mg=draw(maybe(amounts)),
                    waste_witness_id=draw(maybe(person)),
                ),
                off_label=draw(st.booleans()),
            )
        )
    records += doses
    for _ in range(draw(st.integers(0, 3))):
        records.append(
            MonitoringReading(
                id=rid("r"),
                **draw(record_bookkeeping()),
                session_id=draw(st.sampled_from(session_ids)),
                taken_at=draw(times),
                timing=draw(st.sampled_from(vocabulary.ReadingTiming)),
                systolic_mmhg=draw(maybe(amounts)),
                diastolic_mmhg=draw(maybe(amounts)),
                heart_rate_per_min=draw(maybe(amounts)),
                spo2_percent=draw(maybe(amounts)),
                respiratory_rate_per_min=draw(maybe(amounts)),
                cadss_total=draw(maybe(st.integers(0, 92))),
                moaas_score=draw(maybe(st.integers(0, 5))),
                self_reported=draw(st.booleans()),
            )
        )
    for _ in range(draw(st.integers(0, 3))):
        onset = draw(times)
        records.append(
            SideEffect(
                id=rid("ae"),
                **draw(record_bookkeeping()),
                session_id=draw(maybe(st.sampled_from(session_ids))),
                dose_id=draw(maybe(st.sampled_from([d.id for d in doses] + ["missing-dose"]))),
                kind=draw(st.sampled_from(vocabulary.SideEffectKind)),
                other_text=draw(maybe(texts)),
                severity=draw(st.sampled_from(vocabulary.SideEffectSeverity)),
                onset_at=onset,
                resolved_at=draw(maybe(_later(onset))),
            )
        )
    for _ in range(draw(st.integers(0, 2))):
        start = draw(maybe(days))
        records.append(
            ConcomitantMedication(
                id=rid("cm"),
                **draw(record_bookkeeping()),
                medication_class=draw(st.sampled_from(vocabulary.ConcomitantMedicationClass)),
                name=draw(texts),
                dose_text=draw(maybe(texts)),
                start=start,
                end=draw(
                    maybe(
                        st.timedeltas(timedelta(0), timedelta(days=400)).map(
                            lambda d, start=start: (start or date(2020, 1, 1)) + d
                        )
                    )
                ),
            )
        )
    for _ in range(draw(st.integers(0, 3))):
        records.append(draw(measures(rid("m"), [s.id for s in sessions])))
    placement = draw(
        st.lists(st.sampled_from(["chart", "episode", "both"]), min_size=len(weights), max_size=len(weights))
    )
    records += [w for w, where in zip(weights, placement, strict=True) if where != "chart"]
    chart_weights = [w for w, where in zip(weights, placement, strict=True) if where != "episode"]
    record_ids = [r.id for r in records] + ["gone-record"]
    flags = []
    for i in range(draw(st.integers(0, 3))):
        raised = draw(times)
        acknowledgement = draw(
            maybe(st.builds(FlagAcknowledgement, by=st.one_of(person, texts), at=_later(raised), comment=maybe(texts)))
        )
        flags.append(
            SafetyFlag(
                id=f"flag-{i}",
                rule_id=draw(st.sampled_from(RULE_IDS)),
                severity=draw(st.sampled_from(vocabulary.FlagSeverity)),
                explanation=draw(texts),
                record_ids=draw(st.lists(st.sampled_from(record_ids), max_size=3, unique=True)),
                raised_at=raised,
                status=draw(st.sampled_from(vocabulary.FlagStatus)),
                acknowledgement=acknowledgement,
                resolved_at=draw(maybe(_later(raised))),
            )
        )
    period_start = draw(times)
    history = [
        PhaseTransition(
            from_phase=draw(maybe(st.sampled_from(vocabulary.Phase))),
            to_phase=draw(st.sampled_from(vocabulary.Phase)),
            at=draw(times),
            actor=draw(texts),
            reason=draw(maybe(texts)),
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    created = draw(maybe(times))
    episode = Episode(
        id=f"ep-{n}",
        patient_id=patient.id,
        indications=[
            Indication(
                kind=draw(st.sampled_from(vocabulary.IndicationKind)),
                icd10cm=draw(st.from_regex(r"[A-Z][0-9]{2}(\.[0-9]{1,2})?", fullmatch=True)),
                snomed=draw(maybe(st.from_regex(r"[1-9][0-9]{5,9}", fullmatch=True))),
                display=draw(maybe(texts)),
                treatment_resistant=draw(st.booleans()),
                acute_suicidal_ideation=draw(st.booleans()),
            )
            for _ in range(draw(st.integers(0, 2)))
        ],
        care_team=[
            CareTeamMember(practitioner_id=draw(person), role=draw(st.sampled_from(vocabulary.PractitionerRole)))
            for _ in range(draw(st.integers(0, 3)))
        ],
        period_start=period_start,
        period_end=draw(maybe(_later(period_start))),
        status=draw(st.sampled_from(vocabulary.EpisodeStatus)),
        phase=draw(st.sampled_from(vocabulary.Phase)),
        phase_history=history,
        discontinuation_reason=draw(maybe(texts)),
        version=draw(st.integers(1, 9)),
        created_at=created,
        updated_at=draw(maybe(times if created is None else _later(created))),
        records={r.id: r for r in records},
        flags=flags,
    )
    return EpisodeChart(
        clinic=clinic, patient=patient, episode=episode, practitioners=practitioners, body_weights=chart_weights
    )


# --- census ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Census:
    """Which (class, field) got a value, both booleans, and which enum members appeared."""

    fields: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    booleans: set[tuple[str, str, bool]] = dataclasses.field(default_factory=set)
    enums: set[Enum] = dataclasses.field(default_factory=set)

    def visit(self, value: object) -> None:
        if isinstance(value, Enum):
            self.enums.add(value)
        elif dataclasses.is_dataclass(value):
            name = type(value).__name__
            for f in dataclasses.fields(value):
                item = getattr(value, f.name)
                if isinstance(item, bool):
                    self.booleans.add((name, f.name, item))
                if item not in (None, [], {}, ""):
                    self.fields.add((name, f.name))
                self.visit(item)
        elif isinstance(value, dict):
            for item in value.values():
                self.visit(item)
        elif isinstance(value, list | tuple):
            for item in value:
                self.visit(item)

    def missing(self, roots: list[type]) -> list[str]:
        gaps = []
        seen_classes: set[type] = set()
        pending = list(roots)
        while pending:
            cls = pending.pop()
            if cls in seen_classes or not dataclasses.is_dataclass(cls) or cls is Record:
                continue  # Record is abstract: its fields are counted on each record class
            seen_classes.add(cls)
            hints = __import__("typing").get_type_hints(cls)
            for f in dataclasses.fields(cls):
                if (cls.__name__, f.name) not in self.fields:
                    gaps.append(f"{cls.__name__}.{f.name} never had a value")
                if hints[f.name] in (bool, bool | None):
                    for flag in (True, False):
                        if (cls.__name__, f.name, flag) not in self.booleans:
                            gaps.append(f"{cls.__name__}.{f.name} never {flag}")
                pending += _dataclasses_in(hints[f.name])
        for enum in _domain_enums():
            gaps += [f"{enum.__name__}.{m.name} never generated" for m in enum if m not in self.enums]
        return gaps


def _dataclasses_in(hint: object) -> list[type]:
    import typing

    args = typing.get_args(hint)
    if args:
        return [c for a in args for c in _dataclasses_in(a)]
    return [hint] if isinstance(hint, type) and dataclasses.is_dataclass(hint) else []


def _domain_enums() -> list[type[Enum]]:
    return [
        v
        for v in vars(vocabulary).values()
        if isinstance(v, type)
        and issubclass(v, Enum)
        and v.__module__ == vocabulary.__name__
        and v is not vocabulary.StrEnum
    ]


RECORD_CLASSES = [
    Consent,
    DosingOrder,
    ClinicalSession,
    DosingRecord,
    MonitoringReading,
    SideEffect,
    OutcomeMeasure,
    ConcomitantMedication,
    BodyWeight,
]
