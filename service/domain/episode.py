"""The episode aggregate: phase state machine, records, corrections and safety flags."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import ClassVar, TypeVar

from service.domain import rems, rules, scales
from service.domain.errors import Conflict, FieldError, Incoherent, NotFound, TransitionRefused
from service.domain.model import (
    RECORD_KIND_OF,
    CareTeamMember,
    ClinicalSession,
    Consent,
    DosingOrder,
    DosingRecord,
    FlagAcknowledgement,
    Indication,
    MonitoringReading,
    OutcomeMeasure,
    PhaseTransition,
    Record,
    RemsLedger,
    RemsSubmission,
    SafetyFlag,
    SideEffect,
)
from service.domain.vocabulary import (
    EpisodeStatus,
    FlagStatus,
    IndicationKind,
    Phase,
    SessionKind,
    SessionStatus,
)

R = TypeVar("R", bound=Record)

# assessment -> preparation -> dosing <-> integration -> maintenance -> completed; discontinued from any phase.
ALLOWED_TRANSITIONS: dict[Phase, tuple[Phase, ...]] = {
    Phase.ASSESSMENT: (Phase.PREPARATION,),
    Phase.PREPARATION: (Phase.DOSING,),
    Phase.DOSING: (Phase.INTEGRATION,),
    Phase.INTEGRATION: (Phase.DOSING, Phase.MAINTENANCE, Phase.COMPLETED),
    Phase.MAINTENANCE: (Phase.COMPLETED,),
    Phase.COMPLETED: (),
    Phase.DISCONTINUED: (),
}
_TERMINAL = (Phase.COMPLETED, Phase.DISCONTINUED)

FLAG_NAMESPACE = uuid.UUID("6f1c7f3e-3a52-5a8e-9d0f-2b7c1e4a9b10")


def flag_id(episode_id: str, rule_id: str, record_ids: list[str] | tuple[str, ...]) -> str:
    """One flag per episode, rule and set of records, whoever evaluates it."""
    return str(uuid.uuid5(FLAG_NAMESPACE, f"{episode_id}|{rule_id}|{','.join(sorted(record_ids))}"))


def allowed_next(phase: Phase) -> list[Phase]:
    following = list(ALLOWED_TRANSITIONS[phase])
    return following + ([Phase.DISCONTINUED] if phase not in _TERMINAL else [])


# --- domain events: what a command changed, for the work that follows it (the FHIR projection) -----------------


@dataclass(frozen=True)
class RecordChanged:
    """A record was added, amended or marked entered-in-error; ``previous``: its version before (None if new)."""

    record_id: str
    previous: Record | None = None


@dataclass(frozen=True)
class PhaseChanged:
    to_phase: Phase


@dataclass(frozen=True)
class FlagChanged:
    """A safety flag was raised, reopened, resolved or acknowledged."""

    flag_id: str


@dataclass(frozen=True)
class HeaderChanged:
    """Indications, care team or status: what every resource of the episode may carry (labels, references)."""


@dataclass(frozen=True)
class RemsSubmitted:
    session_id: str


EpisodeEvent = RecordChanged | PhaseChanged | FlagChanged | HeaderChanged | RemsSubmitted


@dataclass
class FlagChanges:
    raised: list[SafetyFlag] = field(default_factory=list)
    changed: list[SafetyFlag] = field(default_factory=list)


@dataclass(kw_only=True)
class Episode:
    id: str
    patient_id: str
    indications: list[Indication]
    care_team: list[CareTeamMember] = field(default_factory=list)
    period_start: datetime
    period_end: datetime | None = None
    status: EpisodeStatus = EpisodeStatus.ACTIVE
    phase: Phase = Phase.ASSESSMENT
    phase_history: list[PhaseTransition] = field(default_factory=list)
    discontinuation_reason: str | None = None
    version: int = 1
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # The version and time at which the header (status, period, indications, care team, discontinuation reason)
    # last changed: what the EpisodeOfCare and Conditions carry, so that a session written does not give them new
    # versions. None (episodes stored before it was kept): the episode's own.
    header_version: int | None = None
    header_updated_at: datetime | None = None
    # The rules and policy (rules.basis) under which the flags were last evaluated over every record; kept current
    # since by evaluating what each change touched. None, or another basis: the next evaluation covers everything.
    # Not compared: two episodes with the same records and flags are the same episode.
    safety_basis: str | None = field(default=None, compare=False)
    # Kept for the FHIR projection's versions and the rules, not part of the episode a clinic recorded: its history
    # leaves them out.
    BOOKKEEPING: ClassVar[tuple[str, ...]] = ("header_version", "header_updated_at", "safety_basis")
    records: dict[str, Record] = field(default_factory=dict)
    flags: list[SafetyFlag] = field(default_factory=list)
    # REMS form submissions and the clinic's time zone (loaded beside the records; see RemsLedger).
    rems: RemsLedger = field(default_factory=RemsLedger)

    def __post_init__(self) -> None:
        # Not fields: not stored, not compared, not copied by dataclasses.replace.
        self._events: list[EpisodeEvent] = []
        # Sessions and outcome measures (by id) changed since the flags were last evaluated; None: the context of
        # every rule (consents, phase history, indications) may have changed.
        self._unevaluated: set[str] | None = set()
        self._saved_header = self._header()
        if self.header_version is None:
            self.header_version, self.header_updated_at = self.version, self.updated_at

    def saved_as(self, version: int, now: datetime) -> None:
        """The repository saved the episode as ``version``; the header's version follows if it changed since it was
        loaded or last saved."""
        self.version, self.updated_at = version, now
        if self._unevaluated != set():  # saved with changes the rules have not seen: the next evaluation sees all
            self.safety_basis = None
        if self._header() != self._saved_header:
            self.header_version, self.header_updated_at = version, now
            self._saved_header = self._header()

    def _header(self) -> tuple:
        """The header's values, lists copied (so that a change in place still shows against an earlier one)."""
        return (self.status, self.period_end, self.discontinuation_reason, [*self.indications], [*self.care_team])

    def pull_events(self) -> list[EpisodeEvent]:
        """What the commands on this aggregate changed since the last pull, in order."""
        events, self._events = self._events, []
        return events

    # --- queries -------------------------------------------------------------------------------------

    def current(self, cls: type[R]) -> list[R]:
        """Records of a type that are not entered in error."""
        return [r for r in self.records.values() if isinstance(r, cls) and not r.entered_in_error]

    def all_of(self, cls: type[R]) -> list[R]:
        return [r for r in self.records.values() if isinstance(r, cls)]

    def find(self, cls: type[R], record_id: str) -> R:
        record = self.records.get(record_id)
        if not isinstance(record, cls):
            raise NotFound(f"No {RECORD_KIND_OF[cls]} {record_id} in episode {self.id}.")
        return record

    def doses_in(self, session_id: str) -> list[DosingRecord]:
        return [d for d in self.current(DosingRecord) if d.session_id == session_id]

    def readings_in(self, session_id: str) -> list[MonitoringReading]:
        return [r for r in self.current(MonitoringReading) if r.session_id == session_id]

    def depression_indications(self) -> list[Indication]:
        return [i for i in self.indications if i.kind is IndicationKind.DEPRESSION]

    def phase_at(self, when: datetime) -> Phase:
        phase = Phase.ASSESSMENT
        for transition in self.phase_history:
            if transition.at <= when:
                phase = transition.to_phase
        return phase

    def open_flags(self) -> list[SafetyFlag]:
        return [f for f in self.flags if f.status is FlagStatus.OPEN]

    # --- phase state machine ------------------------------------------------------------------------

    def transition(self, to_phase: Phase, *, at: datetime, actor: str, reason: str | None = None) -> PhaseTransition:
        if to_phase not in allowed_next(self.phase):
            raise TransitionRefused(str(self.phase), str(to_phase), [str(p) for p in allowed_next(self.phase)])
        if self.phase_history and at < self.phase_history[-1].at:
            raise Incoherent.at(
                "at",
                f"{at.isoformat()} is before the previous transition ({self.phase_history[-1].at.isoformat()}); "
                "transitions are kept in clinical order",
            )
        if at < self.period_start:
            raise Incoherent.at("at", "a phase transition cannot precede the start of the episode")
        if to_phase is Phase.DISCONTINUED and not reason:
            raise Incoherent.at("reason", "discontinuing an episode needs a reason")
        transition = PhaseTransition(from_phase=self.phase, to_phase=to_phase, at=at, actor=actor, reason=reason)
        self.phase_history.append(transition)
        self.phase = to_phase
        if to_phase in _TERMINAL:
            self.period_end = at
            self.discontinuation_reason = reason if to_phase is Phase.DISCONTINUED else None
            took_place = any(s.status is SessionStatus.COMPLETED for s in self.current(ClinicalSession))
            self.status = EpisodeStatus.FINISHED if took_place else EpisodeStatus.CANCELLED
        elif self.status is EpisodeStatus.PLANNED:
            self.status = EpisodeStatus.ACTIVE
        self._events.append(PhaseChanged(to_phase))
        self._unevaluated = None  # "dose outside the dosing phase" reads the phase history
        return transition

    def amend_header(
        self, *, indications: list[Indication], care_team: list[CareTeamMember], status: EpisodeStatus
    ) -> None:
        self.indications, self.care_team, self.status = indications, care_team, status
        self._events.append(HeaderChanged())
        self._unevaluated = None

    def record_rems_submission(self, submission: RemsSubmission) -> None:
        self.rems.submissions.append(submission)
        self._events.append(RemsSubmitted(submission.session_id))

    # --- records -----------------------------------------------------------------------------------

    def add(self, record: Record, *, now: datetime) -> Record:
        if record.id in self.records:
            raise Conflict(f"Record {record.id} already exists.")
        record = self._prepared(record)
        record.version, record.recorded_at, record.updated_at = 1, now, now
        self.records[record.id] = record
        self._events.append(RecordChanged(record.id))
        self._touch(record)
        return record

    def amend(self, record_id: str, amended: Record, *, now: datetime) -> Record:
        existing = self.records.get(record_id)
        if existing is None or type(existing) is not type(amended):
            raise NotFound(f"No {RECORD_KIND_OF[type(amended)]} {record_id} in episode {self.id}.")
        if existing.entered_in_error:
            raise Conflict(f"Record {record_id} is entered-in-error and can no longer be amended.")
        amended = self._prepared(replace(amended, id=record_id))
        amended.version = existing.version + 1
        amended.recorded_at, amended.updated_at = existing.recorded_at, now
        self.records[record_id] = amended
        self._events.append(RecordChanged(record_id, existing))
        self._touch(amended, existing)
        return amended

    def mark_entered_in_error(self, record_id: str, *, now: datetime) -> Record:
        record = self.records.get(record_id)
        if record is None:
            raise NotFound(f"No record {record_id} in episode {self.id}.")
        if record.entered_in_error:
            raise Conflict(f"Record {record_id} is already entered-in-error.")
        marked = replace(record, entered_in_error=True, version=record.version + 1, updated_at=now)
        self.records[record_id] = marked
        self._events.append(RecordChanged(record_id, record))
        self._touch(marked, record)
        return marked

    def _touch(self, *versions: Record) -> None:
        """Notes what the safety rules must look at again after a change to a record (its versions after and
        before): its session, or itself when it is a session or an outcome measure; everything for a consent."""
        if self._unevaluated is None:
            return
        for record in versions:
            if isinstance(record, Consent):
                self._unevaluated = None  # every dose's consent rules read every consent
                return
            if isinstance(record, (ClinicalSession, OutcomeMeasure)):
                self._unevaluated.add(record.id)
            elif isinstance(record, (DosingRecord, MonitoringReading)):
                self._unevaluated.add(record.session_id)

    def _prepared(self, record: Record) -> Record:
        """Checks references and coherence, and fills what the domain derives."""
        if isinstance(record, DosingRecord):
            session = self._session_ref(record.session_id, "session_id")
            if session.kind is not SessionKind.DOSING:
                raise Incoherent.at("session_id", f"session {session.id} is a {session.kind} session, not dosing")
            if record.order_id is not None:
                self._ref(DosingOrder, record.order_id, "order_id")
            record.off_label = rules.is_off_label(record, self)
        elif isinstance(record, MonitoringReading):
            self._session_ref(record.session_id, "session_id")
        elif isinstance(record, SideEffect):
            if record.session_id is not None:
                self._session_ref(record.session_id, "session_id")
            if record.dose_id is not None:
                self._ref(DosingRecord, record.dose_id, "dose_id")
        elif isinstance(record, OutcomeMeasure):
            if record.session_id is not None:
                self._session_ref(record.session_id, "session_id")
        elif isinstance(record, ClinicalSession) and record.kind is not SessionKind.DOSING:
            if record.setting is not None or record.discharge_at is not None or record.check_in_at is not None:
                raise Incoherent.at("setting", "setting, check-in and discharge belong to dosing sessions only")
        return record

    def score(self, measure: OutcomeMeasure, policy: rules.SafetyPolicy, submitted_total: int | None) -> None:
        result = scales.score(
            measure.instrument,
            measure.items,
            behaviour_within_3_months=measure.behaviour_within_3_months,
            pcl5_cut_point=policy.pcl5_cut_point,
        )
        if submitted_total is not None and submitted_total != result.total:
            raise Incoherent(
                f"The submitted total {submitted_total} disagrees with the items, which add up to {result.total}.",
                [FieldError("total", f"computed from the items: {result.total}")],
            )
        measure.total, measure.severity_band, measure.risk_level = result.total, result.severity_band, result.risk_level

    def _session_ref(self, session_id: str, field_name: str) -> ClinicalSession:
        return self._ref(ClinicalSession, session_id, field_name)

    def _ref(self, cls: type[R], record_id: str, field_name: str) -> R:
        record = self.records.get(record_id)
        if not isinstance(record, cls) or record.entered_in_error:
            raise Incoherent.at(field_name, f"no {RECORD_KIND_OF[cls]} {record_id} in this episode")
        return record

    # --- safety flags ------------------------------------------------------------------------------

    def evaluate_safety(self, policy: rules.SafetyPolicy, *, now: datetime) -> FlagChanges:
        """Reconciles the flags with the deviations the records show now: those of the sessions and measures
        changed since the last evaluation when nothing else changed, else of every record. The REMS deadlines
        follow the clock: always all of them."""
        changes = FlagChanges()
        basis = rules.basis(policy)
        only = self._unevaluated if self.safety_basis == basis else None
        found = [*rules.evaluate(self, policy, only), *rems.deadline_deviations(self, now=now)]
        deviations = {(d.rule_id, tuple(sorted(d.record_ids))): d for d in found}
        existing = {f.key: f for f in self.flags}
        for key, deviation in deviations.items():
            flag = existing.get(key)
            if flag is None:
                flag = SafetyFlag(
                    id=flag_id(self.id, key[0], key[1]),
                    rule_id=deviation.rule_id,
                    severity=deviation.severity,
                    explanation=deviation.explanation,
                    record_ids=list(key[1]),
                    raised_at=now,
                )
                self.flags.append(flag)
                changes.raised.append(flag)
                self._events.append(FlagChanged(flag.id))
            elif flag.status is FlagStatus.RESOLVED:
                flag.status, flag.resolved_at, flag.explanation = FlagStatus.OPEN, None, deviation.explanation
                changes.changed.append(flag)
                self._events.append(FlagChanged(flag.id))
        # A flag the evaluation did not look at stays as it is.
        in_scope = None if only is None else self._evaluated_ids(only)
        for key, flag in existing.items():
            evaluated = in_scope is None or flag.rule_id in rems.DEADLINE_RULES or not in_scope.isdisjoint(key[1])
            if evaluated and key not in deviations and flag.status is FlagStatus.OPEN:
                flag.status, flag.resolved_at = FlagStatus.RESOLVED, now
                changes.changed.append(flag)
                self._events.append(FlagChanged(flag.id))
        self.safety_basis, self._unevaluated = basis, set()
        return changes

    def _evaluated_ids(self, only: set[str]) -> set[str]:
        """The records whose flags an evaluation of these sessions and measures decides: them, and the doses and
        readings of those sessions (a flag names the doses it is about; a dose entered in error takes its away)."""
        ids = set(only)
        for record in self.records.values():
            if isinstance(record, (DosingRecord, MonitoringReading)) and record.session_id in only:
                ids.add(record.id)
        return ids

    def acknowledge_flag(self, flag_id: str, *, by: str, at: datetime, comment: str | None) -> SafetyFlag:
        flag = next((f for f in self.flags if f.id == flag_id), None)
        if flag is None:
            raise NotFound(f"No safety flag {flag_id} in episode {self.id}.")
        if flag.status is not FlagStatus.OPEN:
            raise Conflict(f"Safety flag {flag_id} is {flag.status}, not open.")
        flag.status = FlagStatus.ACKNOWLEDGED
        flag.acknowledgement = FlagAcknowledgement(by=by, at=at, comment=comment)
        self._events.append(FlagChanged(flag.id))
        return flag


def check_not_future(field_name: str, value: datetime | None, now: datetime, tolerance_min: int) -> None:
    if value is not None and value > now + timedelta(minutes=tolerance_min):
        raise Incoherent.at(field_name, f"{value.isoformat()} is in the future")
