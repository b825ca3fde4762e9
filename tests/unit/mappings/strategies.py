"""Hypothesis strategies of whole EpisodeCharts, and a census of the fields and enum values they reach.

``charts()`` draws at random. ``charts(cover=k)`` keeps the same shape but makes every choice that coverage depends
on deterministic: fixed list lengths, every enum drawn in rotation (starting at member k), booleans alternating
True/False, optional values present every other time (first time present). ``covering_charts()`` (k = 0 ..
COVERING_CHARTS - 1) therefore reach every field, both values of every boolean and every enum member by
construction, whatever hypothesis draws for the free values (texts, times, amounts).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from enum import Enum

from hypothesis import HealthCheck, Phase, find, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisWarning

from service.domain import rems, scales, vocabulary
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
    HealthcareSetting,
    HumanName,
    Identifier,
    Indication,
    MonitoringReading,
    OutcomeMeasure,
    Patient,
    PhaseTransition,
    Practitioner,
    Record,
    RemsLedger,
    RemsSubmission,
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

# Charts whose rotations start at member 0 .. 4: the largest enum drawn once per chart (EpisodeStatus) has 5.
COVERING_CHARTS = 5


def _later(start: datetime) -> st.SearchStrategy[datetime]:
    return durations.map(lambda d: start + d)


class Choices:
    """The choices of one chart that coverage depends on: random (``cover=None``) or a rotation (``cover=k``)."""

    def __init__(self, draw: st.DrawFn, cover: int | None) -> None:
        self.draw = draw
        self.cover = cover
        self.turns: Counter[object] = Counter()

    def _turn(self, key: object) -> int:
        turn = self.turns[key]
        self.turns[key] += 1
        return turn

    def member(self, values: Iterable) -> object:
        options = list(values)
        if self.cover is None:
            return self.draw(st.sampled_from(options))
        key = values if isinstance(values, type) else repr(options)
        return options[(self.cover + self._turn(key)) % len(options)]

    def boolean(self, key: str) -> bool:
        if self.cover is None:
            return self.draw(st.booleans())
        return self._turn(("bool", key)) % 2 == 0

    def maybe(self, key: str, strategy: st.SearchStrategy) -> object:
        """None or a value; in cover mode a value first, then every other time."""
        if self.cover is None:
            return self.draw(maybe(strategy))
        return self.draw(strategy) if self._turn(("maybe", key)) % 2 == 0 else None

    def maybe_member(self, key: str, values: Iterable) -> object:
        if self.cover is None:
            return self.draw(maybe(st.sampled_from(list(values))))
        return self.member(values) if self._turn(("maybe", key)) % 2 == 0 else None

    def count(self, high: int, covering: int) -> int:
        """How many items a list gets: ``covering`` in cover mode (enough for every member of its enums)."""
        return covering if self.cover is not None else self.draw(st.integers(0, high))


def record_bookkeeping(c: Choices, kind: str) -> dict:
    recorded = c.maybe(f"{kind}.recorded_at", times)
    return {
        "version": c.draw(st.integers(1, 5)),
        "entered_in_error": c.boolean(f"{kind}.entered_in_error"),
        "recorded_at": recorded,
        "updated_at": c.maybe(f"{kind}.updated_at", times if recorded is None else _later(recorded)),
    }


def person_bookkeeping(c: Choices, kind: str) -> dict:
    recorded = c.maybe(f"{kind}.recorded_at", times)
    return {
        "version": c.draw(st.integers(1, 3)),
        "recorded_at": recorded,
        "updated_at": c.maybe(f"{kind}.updated_at", times if recorded is None else _later(recorded)),
    }


# C-SSRS screener answers (items, behaviour within 3 months) reaching none, low, moderate and high risk.
CSSRS_COVER = (
    ((0, 0, 0, 0, 0, 0), None),
    ((1, 0, 0, 0, 0, 0), False),
    ((0, 0, 1, 0, 0, 0), None),
    ((0, 0, 0, 0, 0, 1), True),
)


def measures(c: Choices, rid: str, session_ids: list[str]) -> OutcomeMeasure:
    draw = c.draw
    instrument = c.member(Instrument)
    spec = scales.SCALES[instrument]
    behaviour = None
    if c.cover is not None:
        if instrument is Instrument.CSSRS_SCREENER:
            answers, behaviour = c.member(CSSRS_COVER)
            items = list(answers)
        else:
            items = [c.member((0, spec.item_max))] * spec.items
    else:
        items = draw(
            st.one_of(
                st.just([0] * spec.items),  # a clean screen is the common case
                st.lists(st.integers(0, spec.item_max), min_size=spec.items, max_size=spec.items),
            )
        )
        if instrument is Instrument.CSSRS_SCREENER:
            behaviour = draw(st.booleans()) if items[5] else draw(maybe(st.booleans()))
    score = scales.score(instrument, items, behaviour_within_3_months=behaviour)
    return OutcomeMeasure(
        id=rid,
        **record_bookkeeping(c, "OutcomeMeasure"),
        instrument=instrument,
        administered_at=draw(times),
        session_id=c.maybe("OutcomeMeasure.session_id", st.sampled_from(session_ids)) if session_ids else None,
        items=items,
        difficulty=c.maybe("OutcomeMeasure.difficulty", st.integers(0, 3)) if instrument is Instrument.PHQ9 else None,
        behaviour_within_3_months=behaviour,
        total=score.total,
        severity_band=score.severity_band,
        risk_level=score.risk_level,
    )


@st.composite
def charts(draw: st.DrawFn, cover: int | None = None) -> EpisodeChart:
    c = Choices(draw, cover)
    n = draw(st.integers(1, 99))
    setting = HealthcareSetting(
        address_line_1=draw(texts),
        address_line_2=c.maybe("HealthcareSetting.address_line_2", texts),
        city=c.maybe("HealthcareSetting.city", texts),
        state=c.maybe("HealthcareSetting.state", texts),
        postal_code=c.maybe("HealthcareSetting.postal_code", st.from_regex(r"[0-9]{5}", fullmatch=True)),
        phone=c.maybe("HealthcareSetting.phone", st.from_regex(r"[0-9]{3}-555-01[0-9]{2}", fullmatch=True)),
        email=c.maybe("HealthcareSetting.email", st.just("rems@clinic.example.org")),
    )
    clinic = Clinic(
        id=f"clinic-{n}",
        name=draw(texts),
        identifier_system=f"https://c{n}.example.org/fhir/id",
        time_zone=c.member(("UTC", "America/Denver", "Pacific/Honolulu")),
        setting=c.maybe("Clinic.setting", st.just(setting)),
    )
    practitioners = [
        Practitioner(
            id=f"pr-{i}",
            name=HumanName(family=draw(texts), given=draw(st.lists(texts, min_size=cover is not None, max_size=2))),
            npi=c.maybe("Practitioner.npi", st.from_regex(r"[0-9]{10}", fullmatch=True)),
            roles=[c.member(vocabulary.PractitionerRole) for _ in range(c.count(2, 2))],
            **person_bookkeeping(c, "Practitioner"),
        )
        for i in range(c.count(3, 3))
    ]
    people = [p.id for p in practitioners] + ["outside-clinician"]
    person = st.sampled_from(people)
    patient = Patient(
        id=f"pt-{n}",
        mrn=Identifier(system="https://mrn.example.org", value=draw(texts)),
        name=HumanName(family=draw(texts), given=draw(st.lists(texts, min_size=cover is not None, max_size=2))),
        birth_date=draw(days),
        gender=c.member(vocabulary.AdministrativeGender),
        **person_bookkeeping(c, "Patient"),
    )
    counter = iter(range(10_000))

    def rid(prefix: str) -> str:
        return f"{prefix}-{next(counter)}"

    sessions = []
    for _ in range(c.count(4, 8)):
        start = draw(times)
        kind = c.member(SessionKind)
        dosing = kind is SessionKind.DOSING
        sessions.append(
            ClinicalSession(
                id=rid("s"),
                **record_bookkeeping(c, "ClinicalSession"),
                kind=kind,
                status=c.member(vocabulary.SessionStatus),
                start=start,
                end=c.maybe("ClinicalSession.end", _later(start)),
                modality=c.member(vocabulary.Modality),
                clinician_ids=draw(st.lists(person, max_size=2)) if cover is None else [draw(person)],
                psychotherapy_notes=c.maybe("ClinicalSession.psychotherapy_notes", texts),
                setting=c.maybe_member("ClinicalSession.setting", vocabulary.DosingSetting) if dosing else None,
                check_in_at=c.maybe("ClinicalSession.check_in_at", times) if dosing else None,
                discharge_at=c.maybe("ClinicalSession.discharge_at", times) if dosing else None,
            )
        )
    session_ids = [s.id for s in sessions] + ["missing-session"]
    weights = [
        BodyWeight(id=rid("w"), **record_bookkeeping(c, "BodyWeight"), measured_at=draw(times), weight_kg=draw(amounts))
        for _ in range(c.count(2, 3))
    ]
    records: list = list(sessions)
    for _ in range(c.count(2, 2)):
        signed = draw(times)
        valid_from = c.maybe("Consent.valid_from", _later(signed))
        records.append(
            Consent(
                id=rid("c"),
                **record_bookkeeping(c, "Consent"),
                form_url=f"https://forms.example.org/{draw(texts)}".replace(" ", ""),
                form_version=draw(st.from_regex(r"[0-9]{1,2}(\.[0-9]{1,2})?", fullmatch=True)),
                signed_at=signed,
                signed_by_patient=c.boolean("Consent.signed_by_patient"),
                witness_practitioner_id=c.maybe("Consent.witness_practitioner_id", person),
                witness_name=c.maybe("Consent.witness_name", texts),
                covers_ketamine_for_psychotherapy=c.boolean("Consent.covers_ketamine_for_psychotherapy"),
                off_label_use_acknowledged=c.boolean("Consent.off_label_use_acknowledged"),
                routes_covered=[c.member(vocabulary.Route) for _ in range(c.count(3, 3))],
                valid_from=valid_from,
                valid_until=c.maybe("Consent.valid_until", _later(valid_from or signed)),
                withdrawn_at=c.maybe("Consent.withdrawn_at", times),
                withdrawal_reason=c.maybe("Consent.withdrawal_reason", texts),
            )
        )
    orders = []
    for _ in range(c.count(2, 2)):
        orders.append(
            DosingOrder(
                id=rid("o"),
                **record_bookkeeping(c, "DosingOrder"),
                medication=c.member(vocabulary.Medication),
                route=c.member(vocabulary.Route),
                dose_value=draw(amounts),
                dose_unit=c.member(vocabulary.DoseUnit),
                frequency=draw(texts),
                number_of_sessions=draw(st.integers(1, 20)),
                prescriber_id=draw(person),
                ordered_at=draw(times),
                off_label_reason=c.maybe("DosingOrder.off_label_reason", texts),
            )
        )
    records += orders
    doses = []
    for _ in range(c.count(3, 5)):
        start = draw(times)
        weight = draw(st.one_of(st.none(), amounts, st.sampled_from([w.weight_kg for w in weights] or [70.0])))
        if cover is not None and weight is None:
            weight = draw(amounts)
        doses.append(
            DosingRecord(
                id=rid("d"),
                **record_bookkeeping(c, "DosingRecord"),
                session_id=draw(st.sampled_from(session_ids)),
                order_id=c.maybe("DosingRecord.order_id", st.sampled_from([o.id for o in orders] + ["missing-order"])),
                medication=c.member(vocabulary.Medication),
                route=c.member(vocabulary.Route),
                setting=c.member(vocabulary.DosingSetting),
                dose_mg=draw(amounts),
                weight_kg=weight,
                infusion_duration_min=c.maybe("DosingRecord.infusion_duration_min", amounts),
                start=start,
                end=c.maybe("DosingRecord.end", _later(start)),
                administered_by_id=c.maybe("DosingRecord.administered_by_id", person),
                supervised_by_id=c.maybe("DosingRecord.supervised_by_id", person),
                override_reason=c.maybe("DosingRecord.override_reason", texts),
                controlled_substance=ControlledSubstanceRecord(
                    ndc=c.maybe("cs.ndc", st.from_regex(r"[0-9]{5}-[0-9]{3}-[0-9]{2}", fullmatch=True)),
                    lot_number=c.maybe("cs.lot_number", texts),
                    expiry=c.maybe("cs.expiry", days),
                    amount_drawn_mg=c.maybe("cs.amount_drawn_mg", amounts),
                    amount_administered_mg=c.maybe("cs.amount_administered_mg", amounts),
                    amount_wasted_mg=c.maybe("cs.amount_wasted_mg", amounts),
                    waste_witness_id=c.maybe("cs.waste_witness_id", person),
                ),
                off_label=c.boolean("DosingRecord.off_label"),
            )
        )
    records += doses
    for _ in range(c.count(3, 4)):
        records.append(
            MonitoringReading(
                id=rid("r"),
                **record_bookkeeping(c, "MonitoringReading"),
                session_id=draw(st.sampled_from(session_ids)),
                taken_at=draw(times),
                timing=c.member(vocabulary.ReadingTiming),
                systolic_mmhg=c.maybe("MonitoringReading.systolic_mmhg", amounts),
                diastolic_mmhg=c.maybe("MonitoringReading.diastolic_mmhg", amounts),
                heart_rate_per_min=c.maybe("MonitoringReading.heart_rate_per_min", amounts),
                spo2_percent=c.maybe("MonitoringReading.spo2_percent", amounts),
                respiratory_rate_per_min=c.maybe("MonitoringReading.respiratory_rate_per_min", amounts),
                cadss_total=c.maybe("MonitoringReading.cadss_total", st.integers(0, 92)),
                moaas_score=c.maybe("MonitoringReading.moaas_score", st.integers(0, 5)),
                self_reported=c.boolean("MonitoringReading.self_reported"),
            )
        )
    for _ in range(c.count(3, len(vocabulary.SideEffectKind))):
        onset = draw(times)
        records.append(
            SideEffect(
                id=rid("ae"),
                **record_bookkeeping(c, "SideEffect"),
                session_id=c.maybe("SideEffect.session_id", st.sampled_from(session_ids)),
                dose_id=c.maybe("SideEffect.dose_id", st.sampled_from([d.id for d in doses] + ["missing-dose"])),
                kind=c.member(vocabulary.SideEffectKind),
                other_text=c.maybe("SideEffect.other_text", texts),
                severity=c.member(vocabulary.SideEffectSeverity),
                serious=c.boolean("SideEffect.serious"),
                onset_at=onset,
                resolved_at=c.maybe("SideEffect.resolved_at", _later(onset)),
            )
        )
    for _ in range(c.count(2, len(vocabulary.ConcomitantMedicationClass))):
        start = c.maybe("ConcomitantMedication.start", days)
        records.append(
            ConcomitantMedication(
                id=rid("cm"),
                **record_bookkeeping(c, "ConcomitantMedication"),
                medication_class=c.member(vocabulary.ConcomitantMedicationClass),
                name=draw(texts),
                dose_text=c.maybe("ConcomitantMedication.dose_text", texts),
                start=start,
                end=c.maybe(
                    "ConcomitantMedication.end",
                    st.timedeltas(timedelta(0), timedelta(days=400)).map(
                        lambda d, start=start: (start or date(2020, 1, 1)) + d
                    ),
                ),
            )
        )
    for _ in range(c.count(3, 4 * len(CSSRS_COVER))):
        records.append(measures(c, rid("m"), [s.id for s in sessions]))
    placement = [c.member(("chart", "episode", "both")) for _ in weights]
    records += [w for w, where in zip(weights, placement, strict=True) if where != "chart"]
    chart_weights = [w for w, where in zip(weights, placement, strict=True) if where != "episode"]
    record_ids = [r.id for r in records] + ["gone-record"]
    flags = []
    for i in range(c.count(3, 3)):
        raised = draw(times)
        acknowledgement = c.maybe(
            "SafetyFlag.acknowledgement",
            st.builds(FlagAcknowledgement, by=st.one_of(person, texts), at=_later(raised), comment=maybe(texts)),
        )
        if acknowledgement is not None and cover is not None and acknowledgement.comment is None:
            acknowledgement.comment = draw(texts)
        flags.append(
            SafetyFlag(
                id=f"flag-{i}",
                rule_id=c.member(RULE_IDS),
                severity=c.member(vocabulary.FlagSeverity),
                explanation=draw(texts),
                record_ids=draw(
                    st.lists(st.sampled_from(record_ids), min_size=cover is not None, max_size=3, unique=True)
                ),
                raised_at=raised,
                status=c.member(vocabulary.FlagStatus),
                acknowledgement=acknowledgement,
                resolved_at=c.maybe("SafetyFlag.resolved_at", _later(raised)),
            )
        )
    period_start = draw(times)
    history = [
        PhaseTransition(
            from_phase=c.maybe_member("PhaseTransition.from_phase", vocabulary.Phase),
            to_phase=c.member(vocabulary.Phase),
            at=draw(times),
            actor=draw(texts),
            reason=c.maybe("PhaseTransition.reason", texts),
        )
        for _ in range(c.count(3, len(vocabulary.Phase)))
    ]
    created = c.maybe("Episode.created_at", times)
    episode = Episode(
        id=f"ep-{n}",
        patient_id=patient.id,
        indications=[
            Indication(
                kind=c.member(vocabulary.IndicationKind),
                icd10cm=c.maybe("Indication.icd10cm", st.from_regex(r"[A-Z][0-9]{2}(\.[0-9]{1,2})?", fullmatch=True)),
                snomed=c.maybe("Indication.snomed", st.from_regex(r"[1-9][0-9]{5,9}", fullmatch=True)),
                display=c.maybe("Indication.display", texts),
                treatment_resistant=c.boolean("Indication.treatment_resistant"),
                acute_suicidal_ideation=c.boolean("Indication.acute_suicidal_ideation"),
            )
            for _ in range(c.count(2, len(vocabulary.IndicationKind)))
        ],
        care_team=[
            CareTeamMember(practitioner_id=draw(person), role=c.member(vocabulary.PractitionerRole))
            for _ in range(c.count(3, 3))
        ],
        period_start=period_start,
        period_end=c.maybe("Episode.period_end", _later(period_start)),
        status=c.member(vocabulary.EpisodeStatus),
        phase=c.member(vocabulary.Phase),
        phase_history=history,
        discontinuation_reason=c.maybe("Episode.discontinuation_reason", texts),
        version=draw(st.integers(1, 9)),
        created_at=created,
        updated_at=c.maybe("Episode.updated_at", times if created is None else _later(created)),
        records={r.id: r for r in records},
        flags=flags,
        rems=RemsLedger(time_zone=clinic.time_zone),
    )
    if cover is not None and not rems.reportable_sessions(episode):
        # Covering charts need an outpatient esketamine session: it has a REMS form, with sendings to cover.
        start = draw(times)
        esk_session = ClinicalSession(
            id=rid("s"),
            kind=SessionKind.DOSING,
            status=vocabulary.SessionStatus.COMPLETED,
            start=start,
            clinician_ids=[draw(person)],
            setting=vocabulary.DosingSetting.CLINIC,
        )
        esk_dose = DosingRecord(
            id=rid("d"),
            session_id=esk_session.id,
            medication=vocabulary.Medication.ESKETAMINE,
            route=vocabulary.Route.INTRANASAL,
            setting=vocabulary.DosingSetting.CLINIC,
            dose_mg=56.0,
            start=start,
        )
        episode.records |= {esk_session.id: esk_session, esk_dose.id: esk_dose}
    # REMS forms exist for outpatient esketamine sessions only; their sendings are exported on the form's Task.
    for session in rems.reportable_sessions(episode):
        for _ in range(c.count(2, 2)):
            sent_at = draw(times)
            episode.rems.submissions.append(
                RemsSubmission(
                    id=rid("sub"),
                    session_id=session.id,
                    channel=c.member(vocabulary.RemsChannel),
                    submitted_at=sent_at,
                    confirmation_number=c.maybe("RemsSubmission.confirmation_number", texts),
                    submitted_by=draw(person),
                    form_digest=draw(st.from_regex(r"[0-9a-f]{64}", fullmatch=True)),
                    recorded_at=draw(_later(sent_at)),
                    recorded_by=draw(texts),
                )
            )
    episode.rems.submissions.sort(key=lambda sub: (sub.recorded_at, sub.id))
    return EpisodeChart(
        clinic=clinic, patient=patient, episode=episode, practitioners=practitioners, body_weights=chart_weights
    )


def covering_charts() -> list[EpisodeChart]:
    """COVERING_CHARTS deterministic charts that together reach every field, boolean value and enum member."""
    found = []
    for k in range(COVERING_CHARTS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HypothesisWarning)  # the repr of a whole chart is large
            found.append(
                find(
                    charts(cover=k),
                    lambda _: True,
                    settings=settings(
                        database=None,
                        derandomize=True,
                        max_examples=1,
                        phases=[Phase.generate],
                        suppress_health_check=list(HealthCheck),
                    ),
                )
            )
    return found


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
                if not f.compare:
                    continue  # bookkeeping the round trip does not compare (Episode.safety_basis)
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
