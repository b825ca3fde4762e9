"""Use cases. Each runs inside one unit of work opened by the caller and commits nothing itself: the entry
point commits once, together with its idempotency record."""

from __future__ import annotations

import dataclasses
import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from service.adapters import outbox
from service.adapters.repository import Page, VersionEntry
from service.domain import rems
from service.domain.chart import EpisodeChart
from service.domain.episode import Episode, check_not_future
from service.domain.errors import Conflict, DomainError, FieldError, Incoherent, NotFound, StaleVersion
from service.domain.model import (
    RECORD_KIND_OF,
    CareTeamMember,
    Clinic,
    ClinicalSession,
    Consent,
    DosingRecord,
    HealthcareSetting,
    Indication,
    OutcomeMeasure,
    Patient,
    Practitioner,
    PrivacyConsent,
    Record,
    RemsSubmission,
    SafetyFlag,
)
from service.domain.rules import SafetyPolicy
from service.domain.vocabulary import EpisodeStatus, Phase, RemsChannel, SessionStatus
from service.service_layer.unit_of_work import Projected, UnitOfWork


@dataclass(frozen=True)
class Context:
    """Who is asking and under which rules; ``now`` is the one clock reading of the request."""

    actor: str
    now: datetime
    policy: SafetyPolicy
    future_tolerance_min: int = 5
    # EHR targets every change is queued for (the outbox), in the transaction of the change.
    sync_targets: tuple[str, ...] = ()


def new_id() -> str:
    return str(uuid.uuid4())


def _check_version(kind: str, entity_id: str, current: int, expected: int | None) -> None:
    if expected is not None and expected != current:
        raise StaleVersion(
            f"{kind} {entity_id} is at version {current}, not {expected}: read it again before changing it."
        )


# Pairs of times where the second cannot precede the first.
_TIME_ORDER = (
    ("start", "end"),
    ("valid_from", "valid_until"),
    ("signed_at", "withdrawn_at"),
    ("onset_at", "resolved_at"),
    ("start", "discharge_at"),
)
# Times that are not events which took place: system bookkeeping and the validity window of a consent.
_NOT_EVENTS = {"recorded_at", "updated_at", "valid_from", "valid_until"}


def _check_times(record: Any, ctx: Context, prefix: str = "") -> None:
    """Refuses times of things that happened lying in the future, and ends before starts, on any dataclass.
    A planned session is an appointment: it may lie ahead."""
    planned = isinstance(record, ClinicalSession) and record.status is SessionStatus.PLANNED
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if isinstance(value, datetime) and f.name not in _NOT_EVENTS and not planned:
            check_not_future(prefix + f.name, value, ctx.now, ctx.future_tolerance_min)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            _check_times(value, ctx, prefix=f"{prefix}{f.name}.")
    for first, second in _TIME_ORDER:
        a, b = getattr(record, first, None), getattr(record, second, None)
        if a is not None and b is not None and b < a:
            raise Incoherent.at(prefix + second, f"{second} ({b.isoformat()}) is before {first} ({a.isoformat()})")


_PRACTITIONER_FIELDS = ("prescriber_id", "administered_by_id", "supervised_by_id", "witness_practitioner_id")
_PRACTITIONER_LISTS = ("clinician_ids", "care_team", "controlled_substance")


@functools.cache
def _practitioner_fields_of(cls: type) -> tuple[tuple[str, ...], frozenset[str]]:
    """The fields of a class that can name practitioners: a write reads them on every record of its episode, and
    most kinds of record have none."""
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else None
    if names is None:
        return _PRACTITIONER_FIELDS, frozenset(_PRACTITIONER_LISTS)
    return tuple(n for n in _PRACTITIONER_FIELDS if n in names), frozenset(n for n in _PRACTITIONER_LISTS if n in names)


def practitioner_refs(obj: Any) -> dict[str, str]:
    """Field path -> practitioner id, for every practitioner reference in a record or episode."""
    refs: dict[str, str] = {}
    single, others = _practitioner_fields_of(type(obj))
    for name in single:
        value = getattr(obj, name, None)
        if value:
            refs[name] = value
    if not others:
        return refs
    for index, value in enumerate(getattr(obj, "clinician_ids", []) or []):
        refs[f"clinician_ids[{index}]"] = value
    for index, member in enumerate(getattr(obj, "care_team", []) or []):
        refs[f"care_team[{index}].practitioner_id"] = member.practitioner_id
    controlled = getattr(obj, "controlled_substance", None)
    if controlled is not None and controlled.waste_witness_id:
        refs["controlled_substance.waste_witness_id"] = controlled.waste_witness_id
    return refs


def _check_practitioners(uow: UnitOfWork, obj: Any) -> None:
    refs = practitioner_refs(obj)
    missing = uow.repo.missing_practitioners(set(refs.values()))
    if missing:
        raise Incoherent(
            "The request refers to practitioners that are not registered at this clinic.",
            [FieldError(path, f"no practitioner {pid}") for path, pid in refs.items() if pid in missing],
        )


# --- practitioners and patients ------------------------------------------------------------------------------


def register_practitioner(uow: UnitOfWork, ctx: Context, practitioner: Practitioner) -> Practitioner:
    uow.repo.add_practitioner(practitioner, actor=ctx.actor, now=ctx.now)
    # A practitioner is served under /fhir from registration on, not only once an episode names them.
    uow.before_commit(
        f"practitioner:{practitioner.id}",
        lambda: uow.projector.project_practitioner_alone(uow, practitioner.id, ctx.now),
    )
    return practitioner


def register_patient(uow: UnitOfWork, ctx: Context, patient: Patient) -> Patient:
    uow.repo.add_patient(patient, actor=ctx.actor, now=ctx.now)
    _patient_changed(uow, ctx, patient.id)
    return patient


def amend_patient(
    uow: UnitOfWork, ctx: Context, patient: Patient, *, reason: str, expected_version: int | None
) -> Patient:
    current = uow.repo.get_patient(patient.id)
    _check_version("Patient", patient.id, current.version, expected_version)
    other = uow.repo.find_patient_by_mrn(patient.mrn.system, patient.mrn.value)
    if other is not None and other.id != patient.id:
        raise Conflict("Another patient has this MRN.", [FieldError("mrn", "already registered")])
    patient.version = current.version + 1
    patient.recorded_at = current.recorded_at
    uow.repo.update_patient(patient, expected_version=current.version, actor=ctx.actor, reason=reason, now=ctx.now)
    _patient_changed(uow, ctx, patient.id)
    return patient


def record_patient_record(uow: UnitOfWork, ctx: Context, patient_id: str, record: Record) -> Record:
    """A record of the patient outside any episode: a body weight, a privacy consent."""
    uow.repo.get_patient(patient_id)
    _check_times(record, ctx)
    record.recorded_at = record.updated_at = ctx.now
    uow.repo.add_patient_record(patient_id, record, actor=ctx.actor)
    _patient_changed(uow, ctx, patient_id)
    return record


def withdraw_privacy_consent(
    uow: UnitOfWork,
    ctx: Context,
    patient_id: str,
    consent_id: str,
    *,
    at: datetime,
    reason: str,
    expected_version: int | None,
) -> PrivacyConsent:
    current = uow.repo.get_patient_record(patient_id, consent_id)
    if not isinstance(current, PrivacyConsent):
        raise NotFound(f"No privacy consent {consent_id} for patient {patient_id}.")
    _check_version("privacy-consent", consent_id, current.version, expected_version)
    if current.withdrawn_at is not None:
        raise Conflict(f"Privacy consent {consent_id} was already withdrawn.")
    check_not_future("at", at, ctx.now, ctx.future_tolerance_min)
    if at < current.signed_at:
        raise Incoherent.at("at", "a consent cannot be withdrawn before it was signed")
    withdrawn = dataclasses.replace(
        current, withdrawn_at=at, withdrawal_reason=reason, version=current.version + 1, updated_at=ctx.now
    )
    uow.repo.save_patient_record(withdrawn, change="withdrawn", reason=reason, actor=ctx.actor)
    _patient_changed(uow, ctx, patient_id)
    return withdrawn


def _patient_changed(uow: UnitOfWork, ctx: Context, patient_id: str) -> None:
    """Everything shared of a patient goes out again after a change that concerns all their episodes; a patient
    without an episode still gets a current Patient resource under /fhir."""
    episode_ids = uow.repo.episode_ids_of(patient_id)
    for episode_id in episode_ids:
        _episode_changed(uow, ctx, episode_id, full=True)  # the patient is part of every resource's context
    if not episode_ids:
        uow.before_commit(
            f"patient:{patient_id}", lambda: uow.projector.project_patient_alone(uow, patient_id, ctx.now)
        )


def follow_up_change(uow: UnitOfWork, ctx: Context, episode_id: str) -> Projected:
    """Whatever follows a change to an episode, in its transaction: the outbox job of every target, and new
    versions of the FHIR resources the change affects (returned: (type, id) -> (version, changed))."""
    outbox.enqueue(uow.session, uow.clinic_id, episode_id, ctx.sync_targets, ctx.now)
    return uow.project_episode(episode_id, ctx.now)


def _episode_changed(
    uow: UnitOfWork, ctx: Context, episode_id: str, episode: Episode | None = None, *, full: bool = False
) -> None:
    """The follow-up of a change, once per unit of work, just before it commits. The unit of work collects what
    changed (the aggregate's events; everything when the change is not the aggregate's own, or unknown)."""
    uow.note_changes(episode_id, episode.pull_events() if episode is not None else (), full=full or episode is None)
    uow.before_commit(f"episode:{episode_id}", lambda: uow.projected.update(follow_up_change(uow, ctx, episode_id)))


# --- episodes -------------------------------------------------------------------------------------------------


def open_episode(
    uow: UnitOfWork,
    ctx: Context,
    *,
    patient_id: str,
    indications: list[Indication],
    care_team: list[CareTeamMember],
    period_start: datetime,
    status: EpisodeStatus,
    episode_id: str | None = None,
) -> Episode:
    """``episode_id``: the id an imported episode already has (a FHIR ingest); new episodes get a fresh one."""
    try:
        uow.repo.get_patient(patient_id)
    except NotFound as exc:
        raise Incoherent.at("patient_id", f"no patient {patient_id}") from exc
    episode = Episode(
        id=episode_id or new_id(),
        patient_id=patient_id,
        indications=indications,
        care_team=care_team,
        period_start=period_start,
        status=status,
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    check_not_future("period_start", period_start, ctx.now, ctx.future_tolerance_min)
    _check_practitioners(uow, episode)
    uow.repo.add_episode(episode, actor=ctx.actor, now=ctx.now)
    _episode_changed(uow, ctx, episode.id)
    return episode


def get_episode(uow: UnitOfWork, episode_id: str) -> Episode:
    return uow.repo.get_episode(episode_id)


def list_episodes(uow: UnitOfWork, **filters: Any) -> Page:
    return uow.repo.list_episodes(**filters)


def amend_episode(
    uow: UnitOfWork,
    ctx: Context,
    episode_id: str,
    *,
    indications: list[Indication],
    care_team: list[CareTeamMember],
    status: EpisodeStatus,
    reason: str,
    expected_version: int | None,
) -> Episode:
    episode = uow.repo.get_episode(episode_id, for_update=True)
    _check_version("Episode", episode_id, episode.version, expected_version)
    if episode.phase in (Phase.COMPLETED, Phase.DISCONTINUED) and status in (
        EpisodeStatus.ACTIVE,
        EpisodeStatus.ON_HOLD,
    ):
        raise Incoherent.at("status", f"the episode has ended (phase {episode.phase})")
    before = episode.version
    episode.amend_header(indications=indications, care_team=care_team, status=status)
    _check_practitioners(uow, episode)
    _reevaluate_and_save(uow, ctx, episode, before, episode_change=("amended", reason))
    return episode


def transition_phase(
    uow: UnitOfWork,
    ctx: Context,
    episode_id: str,
    *,
    to_phase: Phase,
    at: datetime | None,
    reason: str | None,
    expected_version: int | None,
) -> Episode:
    episode = uow.repo.get_episode(episode_id, for_update=True)
    _check_version("Episode", episode_id, episode.version, expected_version)
    when = at or ctx.now
    check_not_future("at", when, ctx.now, ctx.future_tolerance_min)
    before = episode.version
    episode.transition(to_phase, at=when, actor=ctx.actor, reason=reason)
    _reevaluate_and_save(uow, ctx, episode, before, episode_change=(f"phase:{to_phase}", reason))
    return episode


def _reevaluate_and_save(
    uow: UnitOfWork,
    ctx: Context,
    episode: Episode,
    before: int,
    *,
    notes: dict[str, tuple[str, str | None]] | None = None,
    episode_change: tuple[str, str | None] | None = None,
) -> None:
    episode.evaluate_safety(ctx.policy, now=ctx.now)
    uow.repo.save_episode(
        episode, expected_version=before, actor=ctx.actor, now=ctx.now, notes=notes, episode_change=episode_change
    )
    _episode_changed(uow, ctx, episode.id, episode)


# --- records of an episode ------------------------------------------------------------------------------------


def _prepare(uow: UnitOfWork, ctx: Context, episode: Episode, record: Record, submitted_total: int | None) -> None:
    _check_times(record, ctx)
    _check_practitioners(uow, record)
    if isinstance(record, DosingRecord) and record.weight_kg is None:
        # Weight-based dosing: the most recent weight measured before the dose.
        earlier = [
            w
            for w in uow.repo.body_weights(episode.patient_id)
            if w.measured_at <= record.start and not w.entered_in_error
        ]
        if earlier:
            record.weight_kg = earlier[-1].weight_kg
    if isinstance(record, OutcomeMeasure):
        episode.score(record, ctx.policy, submitted_total)


def add_records(
    uow: UnitOfWork,
    ctx: Context,
    episode_id: str,
    records: list[tuple[str, Record]],
    *,
    submitted_total: int | None = None,
    submitted_totals: dict[str, int | None] | None = None,
) -> tuple[list[Record], Episode]:
    """Adds records (e.g. a session with its doses and readings) and evaluates the rules once, over all.
    Each record comes with the path of its place in the request ("" or "doses[0]."), which refusals name.
    ``submitted_totals``: the total a sender gave for each outcome measure (by record id), checked against its items."""
    episode = uow.repo.get_episode(episode_id, for_update=True)
    before = episode.version
    stored = []
    for path, record in records:
        total = (submitted_totals or {}).get(record.id, submitted_total)
        try:
            _prepare(uow, ctx, episode, record, total)
            stored.append(episode.add(record, now=ctx.now))
        except DomainError as exc:
            exc.field_errors = [FieldError(path + e.field, e.message) for e in exc.field_errors]
            raise
    _reevaluate_and_save(uow, ctx, episode, before)
    return stored, episode


def get_record(uow: UnitOfWork, episode_id: str, cls: type[Record], record_id: str) -> Record:
    return uow.repo.get_episode(episode_id).find(cls, record_id)


def list_records(uow: UnitOfWork, episode_id: str, cls: type[Record]) -> list[Record]:
    records = uow.repo.get_episode(episode_id).all_of(cls)
    return sorted(records, key=lambda r: (r.recorded_at, r.id))  # type: ignore[arg-type, return-value]


def amend_record(
    uow: UnitOfWork,
    ctx: Context,
    episode_id: str,
    record: Record,
    *,
    reason: str,
    expected_version: int | None,
    submitted_total: int | None = None,
    change: str = "amended",
) -> Record:
    episode = uow.repo.get_episode(episode_id, for_update=True)
    current = episode.find(type(record), record.id)
    _check_version(RECORD_KIND_OF[type(record)], record.id, current.version, expected_version)
    before = episode.version
    _prepare(uow, ctx, episode, record, submitted_total)
    amended = episode.amend(record.id, record, now=ctx.now)
    _reevaluate_and_save(uow, ctx, episode, before, notes={record.id: (change, reason)})
    return amended


def withdraw_consent(
    uow: UnitOfWork,
    ctx: Context,
    episode_id: str,
    consent_id: str,
    *,
    at: datetime,
    reason: str,
    expected_version: int | None,
) -> Record:
    episode = uow.repo.get_episode(episode_id)
    consent = episode.find(Consent, consent_id)
    if consent.withdrawn_at is not None:
        raise Incoherent.at("at", f"consent {consent_id} was already withdrawn at {consent.withdrawn_at.isoformat()}")
    withdrawn = dataclasses.replace(consent, withdrawn_at=at, withdrawal_reason=reason)
    return amend_record(
        uow, ctx, episode_id, withdrawn, reason=reason, expected_version=expected_version, change="withdrawn"
    )


def mark_entered_in_error(
    uow: UnitOfWork,
    ctx: Context,
    episode_id: str,
    cls: type[Record],
    record_id: str,
    *,
    reason: str,
    expected_version: int | None,
) -> Record:
    episode = uow.repo.get_episode(episode_id, for_update=True)
    current = episode.find(cls, record_id)
    _check_version(RECORD_KIND_OF[cls], record_id, current.version, expected_version)
    before = episode.version
    marked = episode.mark_entered_in_error(record_id, now=ctx.now)
    _reevaluate_and_save(uow, ctx, episode, before, notes={record_id: ("entered-in-error", reason)})
    return marked


def record_history(uow: UnitOfWork, episode_id: str, cls: type[Record], record_id: str) -> list[VersionEntry]:
    uow.repo.get_episode(episode_id).find(cls, record_id)
    return uow.repo.history(RECORD_KIND_OF[cls], record_id)


def acknowledge_flag(
    uow: UnitOfWork,
    ctx: Context,
    episode_id: str,
    flag_id: str,
    *,
    by: str,
    comment: str | None,
    at: datetime | None = None,
) -> SafetyFlag:
    """``at``: when the clinician acknowledged (an imported acknowledgement keeps its time); now by default."""
    episode = uow.repo.get_episode(episode_id, for_update=True)
    if uow.repo.missing_practitioners({by}):
        raise Incoherent.at("by", f"no practitioner {by}")
    when = at or ctx.now
    check_not_future("at", when, ctx.now, ctx.future_tolerance_min)
    before = episode.version
    flag = episode.acknowledge_flag(flag_id, by=by, at=when, comment=comment)
    uow.repo.save_episode(episode, expected_version=before, actor=ctx.actor, now=ctx.now)
    _episode_changed(uow, ctx, episode.id, episode)
    return flag


def episode_chart(uow: UnitOfWork, episode_id: str) -> EpisodeChart:
    """The episode with everything it references, for export (as this unit of work saved it, if it did)."""
    episode = uow.repo.episode_as_saved(episode_id)
    practitioner_ids: set[str] = {m.practitioner_id for m in episode.care_team}
    for record in episode.records.values():
        practitioner_ids.update(practitioner_refs(record).values())
    practitioner_ids.update(s.submitted_by for s in episode.rems.submissions)  # who sent a REMS form
    return EpisodeChart(
        clinic=uow.repo.get_clinic(),
        patient=uow.repo.get_patient(episode.patient_id),
        episode=episode,
        practitioners=[uow.repo.get_practitioner(pid) for pid in sorted(practitioner_ids)],
        body_weights=uow.repo.body_weights(episode.patient_id),
    )


# --- Spravato REMS Patient Monitoring Form -------------------------------------------------------------------


def set_healthcare_setting(uow: UnitOfWork, ctx: Context, *, time_zone: str, setting: HealthcareSetting) -> Clinic:
    """The clinic's time zone and address/contact, as the REMS form asks for them. Due dates and forms follow."""
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise Incoherent.at("time_zone", f"{time_zone!r} is not an IANA time zone (e.g. America/Denver)") from None
    current = uow.repo.get_clinic()
    if current.time_zone == time_zone and current.setting == setting:
        return current  # the same setting again changes nothing (and sends nothing to the targets again)
    uow.repo.update_clinic_setting(time_zone=time_zone, setting=setting)
    rems_episodes = uow.repo.rems_episode_ids()
    for episode_id in rems_episodes:
        _review_deadlines(uow, ctx, episode_id)
    # The forms change with the setting; the clinic's Organization (one resource) with any one episode's projection.
    anyone = [e.id for e in uow.repo.list_episodes(patient_id=None, status=None, phase=None, limit=1, offset=0).items]
    for episode_id in dict.fromkeys([*rems_episodes, *anyone]):
        _episode_changed(uow, ctx, episode_id)
    return uow.repo.get_clinic()


def rems_form(uow: UnitOfWork, episode_id: str, session_id: str) -> rems.RemsForm:
    chart = episode_chart(uow, episode_id)
    session = chart.episode.find(ClinicalSession, session_id)
    if not rems.is_reportable(chart.episode, session):
        raise NotFound(
            f"Session {session_id} is not a completed outpatient esketamine session: it has no REMS form "
            "(racemic ketamine is not under the Spravato REMS)."
        )
    return rems.build_form(chart, session)


def submit_rems_form(
    uow: UnitOfWork,
    ctx: Context,
    episode_id: str,
    session_id: str,
    *,
    channel: RemsChannel,
    submitted_at: datetime,
    confirmation_number: str | None,
    submitted_by: str,
) -> tuple[RemsSubmission, rems.RemsForm, bool]:
    """Records that the form was sent. -> (submission, form, created). The same form sent again is the submission
    already recorded; a form changed since its submission is sent again as a corrected submission."""
    uow.repo.get_episode(episode_id, for_update=True)
    form = rems_form(uow, episode_id, session_id)
    episode = uow.repo.get_episode(episode_id)
    if form.missing:
        raise Incoherent(
            "The REMS form is not complete: record what is missing, then send it.",
            [FieldError(key, rems.FIELDS[key].missing_as) for key in form.missing_fields],
        )
    if form.submission is not None and form.submission.form_digest == form.digest:
        return form.submission, form, False
    if uow.repo.missing_practitioners({submitted_by}):
        raise Incoherent.at("submitted_by", f"no practitioner {submitted_by}")
    check_not_future("submitted_at", submitted_at, ctx.now, ctx.future_tolerance_min)
    session = episode.find(ClinicalSession, session_id)
    if submitted_at < rems.treatment_start(episode, session):
        raise Incoherent.at("submitted_at", "a form cannot be sent before the treatment it reports")
    submission = RemsSubmission(
        id=new_id(),
        session_id=session_id,
        channel=channel,
        submitted_at=submitted_at,
        confirmation_number=confirmation_number,
        submitted_by=submitted_by,
        form_digest=form.digest,
        recorded_at=ctx.now,
        recorded_by=ctx.actor,
    )
    episode.record_rems_submission(submission)  # saved with the episode
    form.submissions.append(submission)
    _reevaluate_and_save(uow, ctx, episode, episode.version)
    return submission, form, True


def list_rems_forms(uow: UnitOfWork, *, now: datetime, status: str | None) -> list[rems.RemsForm]:
    """The clinic's REMS forms; ``due``: what must still be sent (unsent, or changed since it was sent),
    ``overdue``: unsent past the due date, ``submitted``: sent and unchanged."""
    forms = []
    for episode_id in uow.repo.rems_episode_ids():
        for form in rems.forms_of(episode_chart(uow, episode_id)):
            state = form.submission_state
            wanted = {
                None: True,
                "due": state in (rems.UNSENT, rems.AMENDED),
                "overdue": form.is_overdue(now),
                "submitted": state == rems.SUBMITTED,
                "amended": state == rems.AMENDED,
            }[status]
            if wanted:
                forms.append(form)
    return sorted(forms, key=lambda f: (f.due_date, f.episode_id, f.session_id))


def _review_deadlines(uow: UnitOfWork, ctx: Context, episode_id: str) -> int:
    episode = uow.repo.get_episode(episode_id, for_update=True)
    before = episode.version
    changes = episode.evaluate_safety(ctx.policy, now=ctx.now)
    if not changes.raised and not changes.changed:
        return 0
    uow.repo.save_episode(episode, expected_version=before, actor=ctx.actor, now=ctx.now)
    _episode_changed(uow, ctx, episode_id, episode)
    return len(changes.raised) + len(changes.changed)


def review_rems_deadlines(uow: UnitOfWork, ctx: Context) -> int:
    """Brings the rems-form-due/-overdue flags of every episode up to the clock (flags otherwise change when the
    episode is written). -> the number of flags raised, reopened or resolved. Run it daily (cron, a scheduler)."""
    return sum(_review_deadlines(uow, ctx, episode_id) for episode_id in uow.repo.rems_episode_ids())
