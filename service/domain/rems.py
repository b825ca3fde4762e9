"""The Spravato REMS Patient Monitoring Form, derived from the record of an esketamine dosing session.

Every outpatient esketamine session must be reported to the REMS program within 7 calendar days. The form is
never typed in: each answer is computed from records (session, doses, readings, side effects, concomitant
medications, patient, clinic), and each names the records it came from. What the records cannot answer is listed
as missing, in clinical words, so that the missing fact gets recorded.

Fields and wording: the Patient Monitoring Form (Janssen 11/2021, transcribed at manualspro.net/445029 and
manuzoid.com "Spravato Patient Monitoring Operating instructions"), the program's form overview
(jnjmedicalconnect.com "video-spravato-rems-patient-monitoring-form-overview": first treatment, opioids, respiratory
depression) and the FDA REMS page (accessdata.fda.gov REMS=386: monitoring until resolution of sedation,
dissociation and respiratory depression; pulse oximeter on site). kap-fhir-reference.md S7 lists these sources.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from service.domain.model import (
    ClinicalSession,
    ConcomitantMedication,
    DosingRecord,
    MonitoringReading,
    Practitioner,
    RemsSubmission,
    SideEffect,
)
from service.domain.rules import Deviation
from service.domain.vocabulary import (
    AdministrativeGender,
    ConcomitantMedicationClass,
    DosingSetting,
    FlagSeverity,
    Medication,
    PractitionerRole,
    ReadingTiming,
    SessionKind,
    SessionStatus,
    SideEffectKind,
)

if TYPE_CHECKING:
    from service.domain.chart import EpisodeChart
    from service.domain.episode import Episode

# "Submit completed patient monitoring forms within 7 days" (form instructions); calendar days in the clinic's
# time zone. The reminder flag comes on day 5, leaving two days to send.
DUE_AFTER_DAYS = 7
REMINDER_ON_DAY = 5
# BP ~40 minutes after the dose (spravatohcp.com dosing page), the same window the safety rule uses.
BP_AFTER_DOSE_MIN = 40
BP_TOLERANCE_MIN = 10
# "Vital signs in acceptable range": the label asks to weigh the risks when BP is above 140/90 mmHg before
# dosing (SPRAVATO label §2.1/§5.6, "e.g., >140 mmHg systolic, >90 mmHg diastolic"). kapfhir answers "yes" when
# the reading is at or below it. A clinic with another policy changes these two numbers.
ACCEPTABLE_SYSTOLIC_MAX = 140
ACCEPTABLE_DIASTOLIC_MAX = 90
# MOAA/S 5 = responds readily to name spoken in a normal tone (alert); below it, the patient is sedated.
MOAAS_ALERT = 5

RULE_DUE = "rems-form-due"
RULE_OVERDUE = "rems-form-overdue"
DEADLINE_RULES = (RULE_DUE, RULE_OVERDUE)  # evaluated over every session on every evaluation: they follow the clock

COMPLETED, IN_PROGRESS = "completed", "in-progress"
UNSENT, SUBMITTED, AMENDED = "unsent", "submitted", "amended"

# --- the form's fields --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    key: str  # linkId in the Questionnaire
    text: str  # the form's wording
    kind: str  # text | date | integer | decimal | yes-no | choice
    required: bool = True
    missing_as: str = ""  # clinical words naming the fact to record when it is missing
    options: tuple[str, ...] = ()
    enabled_when: tuple[str, Any] | None = None  # (other key, value): asked only then


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    fields: tuple[Field, ...]


def _yes_no(key: str, text: str, missing_as: str, enabled_when: tuple[str, Any] | None = None) -> Field:
    return Field(key, text, "yes-no", True, missing_as, enabled_when=enabled_when)


SECTIONS: tuple[Section, ...] = (
    Section(
        "patient",
        "Patient Information",
        (
            Field("patient.first-name", "First Name", "text", True, "the patient's first name"),
            Field("patient.middle-initial", "MI", "text", False),
            Field("patient.last-name", "Last Name", "text", True, "the patient's last name"),
            Field("patient.birth-date", "Birthdate", "date", True, "the patient's birth date"),
            Field(
                "patient.sex",
                "Sex",
                "choice",
                True,
                "the patient's sex (male, female or other)",
                options=("male", "female", "other"),
            ),
            _yes_no(
                "patient.first-treatment",
                "Is this the patient's first treatment?",
                "whether this is the patient's first treatment",
            ),
            # Asked on a first treatment (form overview). kapfhir records no REMS enrolment yet: optional, left blank.
            Field(
                "patient.enrolled",
                "If first treatment: is the patient enrolled in the SPRAVATO REMS?",
                "yes-no",
                False,
                enabled_when=("patient.first-treatment", True),
            ),
        ),
    ),
    Section(
        "concomitant-medication",
        "Concomitant Medication: is the patient currently taking any of the following medication(s) that may cause "
        "sedation, dissociation, respiratory depression or blood pressure changes?",
        (
            _yes_no("medication.benzodiazepines", "Benzodiazepines", "concomitant medications"),
            _yes_no(
                "medication.non-benzodiazepine-sedative-hypnotics",
                "Non-benzodiazepine sedative hypnotics",
                "concomitant medications",
            ),
            _yes_no("medication.opioids", "Opioids", "concomitant medications"),
            _yes_no("medication.psychostimulants", "Psychostimulants", "concomitant medications"),
            _yes_no("medication.maois", "Monoamine oxidase inhibitors (MAOIs)", "concomitant medications"),
        ),
    ),
    Section(
        "provider",
        "Healthcare Provider Conducting Patient Monitoring",
        (
            Field("provider.first-name", "First Name", "text", True, "the clinician who monitored the session"),
            Field("provider.last-name", "Last Name", "text", True, "the clinician who monitored the session"),
            Field("provider.telephone", "Telephone", "text", True, "the healthcare setting's telephone number"),
            Field("provider.email", "Email", "text", True, "the healthcare setting's email address"),
        ),
    ),
    Section(
        "setting",
        "Healthcare Setting Information",
        (
            Field("setting.name", "Healthcare Setting Name", "text", True, "the healthcare setting's name"),
            Field(
                "setting.address-1", "Healthcare Setting Address 1", "text", True, "the healthcare setting's address"
            ),
            Field("setting.address-2", "Healthcare Setting Address 2", "text", False),
            Field("setting.city", "City", "text", True, "the healthcare setting's city"),
            Field("setting.state", "State", "text", True, "the healthcare setting's state"),
            Field("setting.zip", "ZIP", "text", True, "the healthcare setting's ZIP code"),
        ),
    ),
    Section(
        "session",
        "Patient Treatment Session Information (Administration and Monitoring)",
        (
            Field("session.treatment-date", "Treatment Date", "date", True, "the time of the first device"),
            Field(
                "session.dose",
                "Dose Administered",
                "choice",
                True,
                "the esketamine dose",
                options=("56 mg", "84 mg", "Other"),
            ),
            Field(
                "session.dose-other-mg",
                "Other dose (mg)",
                "decimal",
                True,
                "the esketamine dose",
                enabled_when=("session.dose", "Other"),
            ),
            Field("session.lot-number", "Lot Number", "text", True, "the lot number of the devices"),
            Field(
                "session.total-minutes",
                "Total time (minutes) from 1st device administration to completion of monitoring "
                "(the patient must be monitored for at least 2 hours)",
                "integer",
                True,
                "the discharge time (end of monitoring)",
            ),
            Field(
                "session.ready-minutes",
                "REMS evaluation question: if there was not a 2-hour minimum monitoring requirement, when would this "
                "patient have been ready to leave (minutes from start of administration)?",
                "integer",
                True,
                "a reading after the dose showing the patient alert and without dissociation",
            ),
            _yes_no(
                "session.vitals-before-dose",
                "Vital signs were in acceptable range prior to administration",
                "blood pressure before the dose",
            ),
            _yes_no(
                "session.vitals-before-completion",
                "Vital signs were in acceptable range prior to treatment session completion",
                "blood pressure before discharge",
            ),
            Field(
                "session.bp-before-dose",
                "Blood pressure prior to administration (mmHg)",
                "text",
                True,
                "blood pressure before the dose",
            ),
            Field(
                "session.bp-40-minutes",
                "Blood pressure 40 minutes post-administration (mmHg)",
                "text",
                True,
                "blood pressure about 40 minutes after the dose",
            ),
            Field(
                "session.bp-before-completion",
                "Blood pressure prior to treatment session completion (mmHg)",
                "text",
                True,
                "blood pressure before discharge",
            ),
            _yes_no(
                "session.pulse-oximetry",
                "Was the patient monitored with pulse oximetry?",
                "a pulse oximetry (SpO2) reading",
            ),
            _yes_no("session.sedation", "Did the patient experience sedation?", "sedation"),
            _yes_no(
                "session.sedation-resolved",
                "Did sedation resolve before the patient left?",
                "when the sedation resolved",
                enabled_when=("session.sedation", True),
            ),
            _yes_no("session.dissociation", "Did the patient experience dissociation?", "dissociation"),
            _yes_no(
                "session.dissociation-resolved",
                "Did dissociation resolve before the patient left?",
                "when the dissociation resolved",
                enabled_when=("session.dissociation", True),
            ),
            _yes_no(
                "session.respiratory-depression",
                "Did the patient experience respiratory depression?",
                "respiratory depression",
            ),
            _yes_no(
                "session.respiratory-depression-resolved",
                "Did respiratory depression resolve before the patient left?",
                "when the respiratory depression resolved",
                enabled_when=("session.respiratory-depression", True),
            ),
            _yes_no(
                "session.serious-adverse-event",
                "Did the patient experience a serious adverse event during the session?",
                "serious adverse events",
            ),
        ),
    ),
)
FIELDS: dict[str, Field] = {f.key: f for section in SECTIONS for f in section.fields}

_MEDICATION_FIELDS = {
    "medication.benzodiazepines": ConcomitantMedicationClass.BENZODIAZEPINE,
    "medication.non-benzodiazepine-sedative-hypnotics": ConcomitantMedicationClass.NON_BENZODIAZEPINE_SEDATIVE_HYPNOTIC,
    "medication.opioids": ConcomitantMedicationClass.OPIOID,
    "medication.psychostimulants": ConcomitantMedicationClass.PSYCHOSTIMULANT,
    "medication.maois": ConcomitantMedicationClass.MAOI,
}

# --- the derived form -------------------------------------------------------------------------------------------


@dataclass
class RemsForm:
    episode_id: str
    session_id: str
    patient_id: str
    treatment_date: date
    due_date: date
    time_zone: str = "UTC"
    answers: dict[str, Any] = field(default_factory=dict)  # key -> str | int | float | bool | date
    sources: dict[str, list[str]] = field(default_factory=dict)  # key -> record ids (or patient/clinic ids)
    missing: list[str] = field(default_factory=list)  # clinical words, one per missing fact
    missing_fields: list[str] = field(default_factory=list)  # the keys left unanswered
    monitoring_practitioner_id: str | None = None
    latest_change: datetime | None = None
    submissions: list[RemsSubmission] = field(default_factory=list)

    @property
    def status(self) -> str:
        return COMPLETED if not self.missing_fields else IN_PROGRESS

    @property
    def digest(self) -> str:
        """Fingerprint of the answers: what a submission sent, to notice a later change."""
        canonical = json.dumps({k: str(v) for k, v in sorted(self.answers.items())}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def is_overdue(self, now: datetime) -> bool:
        """Unsent after the due date, counted in the clinic's calendar days."""
        return self.submission is None and now.astimezone(ZoneInfo(self.time_zone)).date() > self.due_date

    @property
    def submission(self) -> RemsSubmission | None:
        return self.submissions[-1] if self.submissions else None

    @property
    def submission_state(self) -> str:
        latest = self.submission
        if latest is None:
            return UNSENT
        return SUBMITTED if latest.form_digest == self.digest else AMENDED


def is_reportable(episode: Episode, session: ClinicalSession) -> bool:
    """Outpatient esketamine sessions are reported; racemic ketamine never is. (Esketamine at home is already a
    high safety flag of its own, and has no monitoring to report.)"""
    if session.entered_in_error or session.kind is not SessionKind.DOSING:
        return False
    if session.status is not SessionStatus.COMPLETED:
        return False
    return any(
        d.medication is Medication.ESKETAMINE and d.setting is DosingSetting.CLINIC
        for d in episode.doses_in(session.id)
    )


def reportable_sessions(episode: Episode) -> list[ClinicalSession]:
    # The sessions with an esketamine dose given in clinic, in one pass over the records (is_reportable per
    # session scans them all: quadratic in the episode's length, and this runs on every write).
    in_clinic = {
        r.session_id
        for r in episode.records.values()
        if isinstance(r, DosingRecord)
        and not r.entered_in_error
        and r.medication is Medication.ESKETAMINE
        and r.setting is DosingSetting.CLINIC
    }
    sessions = [
        s
        for s in episode.current(ClinicalSession)
        if s.id in in_clinic and s.kind is SessionKind.DOSING and s.status is SessionStatus.COMPLETED
    ]
    return sorted(sessions, key=lambda s: (s.start, s.id))


def _esketamine_doses(episode: Episode, session_id: str) -> list[DosingRecord]:
    doses = [d for d in episode.doses_in(session_id) if d.medication is Medication.ESKETAMINE]
    return sorted(doses, key=lambda d: (d.start, d.id))


def treatment_start(episode: Episode, session: ClinicalSession) -> datetime:
    doses = _esketamine_doses(episode, session.id)
    return doses[0].start if doses else session.start


def treatment_date(episode: Episode, session: ClinicalSession, time_zone: str) -> date:
    return treatment_start(episode, session).astimezone(ZoneInfo(time_zone)).date()


def due_date(episode: Episode, session: ClinicalSession, time_zone: str) -> date:
    return treatment_date(episode, session, time_zone) + timedelta(days=DUE_AFTER_DAYS)


def submissions_of(episode: Episode, session_id: str) -> list[RemsSubmission]:
    found = [s for s in episode.rems.submissions if s.session_id == session_id]
    return sorted(found, key=lambda s: (s.recorded_at, s.id))


def deadline_deviations(episode: Episode, *, now: datetime) -> Iterator[Deviation]:
    """Unsent forms: a reminder from day 5, a high flag once the 7 days have passed (clinic calendar days)."""
    zone = ZoneInfo(episode.rems.time_zone)
    today = now.astimezone(zone).date()
    for session in reportable_sessions(episode):
        if submissions_of(episode, session.id):
            continue
        treated = treatment_start(episode, session).astimezone(zone).date()
        due = treated + timedelta(days=DUE_AFTER_DAYS)
        if today > due:
            yield Deviation(
                RULE_OVERDUE,
                FlagSeverity.HIGH,
                f"The Spravato REMS Patient Monitoring Form of the session of {treated.isoformat()} was due by "
                f"{due.isoformat()} and has not been sent.",
                (session.id,),
            )
        elif (today - treated).days >= REMINDER_ON_DAY:
            yield Deviation(
                RULE_DUE,
                FlagSeverity.MODERATE,
                f"The Spravato REMS Patient Monitoring Form of the session of {treated.isoformat()} is due by "
                f"{due.isoformat()} and has not been sent.",
                (session.id,),
            )


# --- building the form --------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self, form: RemsForm) -> None:
        self.form = form

    def answer(self, key: str, value: Any, *sources: str) -> None:
        if value is None or value == "":
            return
        self.form.answers[key] = value
        self.form.sources[key] = sorted({s for s in sources if s})

    def finish(self) -> None:
        """Lists every required field without an answer (and enabled), once per clinical fact."""
        for f in FIELDS.values():
            if not f.required or f.key in self.form.answers:
                continue
            if f.enabled_when is not None and self.form.answers.get(f.enabled_when[0]) != f.enabled_when[1]:
                continue
            self.form.missing_fields.append(f.key)
            if f.missing_as not in self.form.missing:
                self.form.missing.append(f.missing_as)


def _bp(reading: MonitoringReading) -> str:
    return f"{reading.systolic_mmhg:g}/{reading.diastolic_mmhg:g}"


def _acceptable(reading: MonitoringReading) -> bool:
    return (
        reading.systolic_mmhg is not None
        and reading.diastolic_mmhg is not None
        and reading.systolic_mmhg <= ACCEPTABLE_SYSTOLIC_MAX
        and reading.diastolic_mmhg <= ACCEPTABLE_DIASTOLIC_MAX
    )


def _monitoring_practitioner(chart: EpisodeChart, session: ClinicalSession) -> Practitioner | None:
    """The session's clinician who monitors (monitor or nurse role), else its first clinician."""
    by_id = {p.id: p for p in chart.practitioners}
    clinicians = [by_id[c] for c in session.clinician_ids if c in by_id]
    for wanted in (PractitionerRole.MONITOR, PractitionerRole.NURSE):
        for practitioner in clinicians:
            if wanted in practitioner.roles:
                return practitioner
    return clinicians[0] if clinicians else None


def build_form(
    chart: EpisodeChart, session: ClinicalSession, reportable: list[ClinicalSession] | None = None
) -> RemsForm:
    """The form of one reportable session (``reportable``: the episode's reportable sessions, when known)."""
    episode, patient, clinic = chart.episode, chart.patient, chart.clinic
    reportable = reportable_sessions(episode) if reportable is None else reportable
    zone = ZoneInfo(episode.rems.time_zone)
    doses = _esketamine_doses(episode, session.id)
    first = doses[0].start if doses else session.start
    form = RemsForm(
        episode_id=episode.id,
        session_id=session.id,
        patient_id=patient.id,
        treatment_date=first.astimezone(zone).date(),
        due_date=first.astimezone(zone).date() + timedelta(days=DUE_AFTER_DAYS),
        time_zone=episode.rems.time_zone,
        submissions=submissions_of(episode, session.id),
    )
    b = _Builder(form)
    _patient(b, chart, session, first, reportable)
    _medications(b, episode, form.treatment_date)
    practitioner = _monitoring_practitioner(chart, session)
    if practitioner is not None:
        form.monitoring_practitioner_id = practitioner.id
        b.answer("provider.first-name", " ".join(practitioner.name.given), practitioner.id)
        b.answer("provider.last-name", practitioner.name.family, practitioner.id)
    setting = clinic.setting
    # The practitioner record holds no telephone or email: the form gets the healthcare setting's contact.
    if setting is not None:
        b.answer("provider.telephone", setting.phone, clinic.id)
        b.answer("provider.email", setting.email, clinic.id)
    b.answer("setting.name", clinic.name, clinic.id)
    if setting is not None:
        b.answer("setting.address-1", setting.address_line_1, clinic.id)
        b.answer("setting.address-2", setting.address_line_2, clinic.id)
        b.answer("setting.city", setting.city, clinic.id)
        b.answer("setting.state", setting.state, clinic.id)
        b.answer("setting.zip", setting.postal_code, clinic.id)
    _session(b, episode, session, doses, first)
    b.finish()
    records = [session, *doses, *episode.readings_in(session.id), *_side_effects(episode, session.id)]
    changes = [r.updated_at for r in records if r.updated_at is not None]
    form.latest_change = max(changes) if changes else None
    return form


def _patient(
    b: _Builder, chart: EpisodeChart, session: ClinicalSession, first: datetime, reportable: list[ClinicalSession]
) -> None:
    patient, episode = chart.patient, chart.episode
    given = patient.name.given
    b.answer("patient.first-name", given[0] if given else None, patient.id)
    b.answer("patient.middle-initial", given[1][:1] if len(given) > 1 and given[1] else None, patient.id)
    b.answer("patient.last-name", patient.name.family, patient.id)
    b.answer("patient.birth-date", patient.birth_date, patient.id)
    if patient.gender is not AdministrativeGender.UNKNOWN:
        b.answer("patient.sex", str(patient.gender), patient.id)
    earlier = [s for s in reportable if s.id != session.id and treatment_start(episode, s) < first]
    b.answer("patient.first-treatment", not earlier, session.id, *(s.id for s in earlier))


def _medications(b: _Builder, episode: Episode, on: date) -> None:
    """Yes when a medication of the class is taken on the treatment date. With no concomitant medication recorded
    at all, the section stays unanswered: "none taken" and "never asked" look alike in the record."""
    medications = episode.current(ConcomitantMedication)
    if not medications:
        return
    taking = [m for m in medications if (m.start is None or m.start <= on) and (m.end is None or m.end >= on)]
    for key, cls in _MEDICATION_FIELDS.items():
        matching = [m.id for m in taking if m.medication_class is cls]
        b.answer(key, bool(matching), *(matching or [m.id for m in medications]))


def _side_effects(episode: Episode, session_id: str) -> list[SideEffect]:
    doses = {d.id for d in episode.doses_in(session_id)}
    return [s for s in episode.current(SideEffect) if s.session_id == session_id or s.dose_id in doses]


def _session(
    b: _Builder, episode: Episode, session: ClinicalSession, doses: list[DosingRecord], first: datetime
) -> None:
    if doses:
        _dose(b, doses)
    if session.discharge_at is not None and doses:
        minutes = int((session.discharge_at - first).total_seconds() // 60)
        b.answer("session.total-minutes", minutes, session.id, doses[0].id)
    readings = sorted(episode.readings_in(session.id), key=lambda r: (r.taken_at, r.id))
    _blood_pressures(b, readings, first)
    _pulse_oximetry(b, readings)
    effects = _side_effects(episode, session.id)
    after = [r for r in readings if r.taken_at >= first]
    _adverse_effects(b, session, effects, after)
    if readings or effects:
        serious = [e.id for e in effects if e.serious]
        b.answer("session.serious-adverse-event", bool(serious), *(serious or [session.id]))
    _ready(b, session, effects, after, first)


def _dose(b: _Builder, doses: list[DosingRecord]) -> None:
    """Treatment date, total dose (56 or 84 mg, else Other with the amount) and the devices' lot numbers."""
    b.answer("session.treatment-date", b.form.treatment_date, doses[0].id)
    total = sum(d.dose_mg for d in doses)
    dose_ids = [d.id for d in doses]
    if total in (56, 84):
        b.answer("session.dose", f"{total:g} mg", *dose_ids)
    else:
        b.answer("session.dose", "Other", *dose_ids)
        b.answer("session.dose-other-mg", float(total), *dose_ids)
    lots = sorted({d.controlled_substance.lot_number for d in doses if d.controlled_substance.lot_number})
    # Every dose needs its lot: a form naming only some of the devices' lots is not complete.
    if lots and all(d.controlled_substance.lot_number for d in doses):
        b.answer("session.lot-number", ", ".join(lots), *dose_ids)


def _blood_pressures(b: _Builder, readings: list[MonitoringReading], first: datetime) -> None:
    """Blood pressure (and acceptable vitals) before the dose, about 40 minutes after it, and at discharge."""
    with_bp = [r for r in readings if r.has_blood_pressure]
    before = [r for r in with_bp if r.taken_at <= first]
    if before:
        b.answer("session.bp-before-dose", _bp(before[-1]), before[-1].id)
        b.answer("session.vitals-before-dose", _acceptable(before[-1]), before[-1].id)
    target = first + timedelta(minutes=BP_AFTER_DOSE_MIN)
    near = [r for r in with_bp if abs(r.taken_at - target) <= timedelta(minutes=BP_TOLERANCE_MIN)]
    if near:
        closest = min(near, key=lambda r: abs(r.taken_at - target))
        b.answer("session.bp-40-minutes", _bp(closest), closest.id)
    at_discharge = [r for r in with_bp if r.timing is ReadingTiming.DISCHARGE]
    if at_discharge:
        b.answer("session.bp-before-completion", _bp(at_discharge[-1]), at_discharge[-1].id)
        b.answer("session.vitals-before-completion", _acceptable(at_discharge[-1]), at_discharge[-1].id)


def _pulse_oximetry(b: _Builder, readings: list[MonitoringReading]) -> None:
    """Yes when any reading has an SpO2; no when readings exist without one; unanswered with no reading."""
    oximetry = [r.id for r in readings if r.spo2_percent is not None]
    if oximetry:
        b.answer("session.pulse-oximetry", True, *oximetry)
    elif readings:
        b.answer("session.pulse-oximetry", False, *(r.id for r in readings))


def _adverse_effects(
    b: _Builder, session: ClinicalSession, effects: list[SideEffect], after: list[MonitoringReading]
) -> None:
    """Sedation (MOAA/S below 5), dissociation (CADSS above 0) and respiratory depression (recorded side effects
    only: no reading measures it), each experienced and resolved."""
    _effect(
        b,
        "session.sedation",
        session,
        [e for e in effects if e.kind is SideEffectKind.SEDATION],
        after,
        lambda r: None if r.moaas_score is None else r.moaas_score < MOAAS_ALERT,
    )
    _effect(
        b,
        "session.dissociation",
        session,
        [e for e in effects if e.kind is SideEffectKind.DISSOCIATION],
        after,
        lambda r: None if r.cadss_total is None else r.cadss_total > 0,
    )
    _effect(
        b,
        "session.respiratory-depression",
        session,
        [e for e in effects if e.kind is SideEffectKind.RESPIRATORY_DEPRESSION],
        after,
        lambda r: None,
    )


def _effect(
    b: _Builder,
    key: str,
    session: ClinicalSession,
    effects: list[SideEffect],
    readings: list[MonitoringReading],
    sign: Any,
) -> None:
    """Experienced when a side effect of the kind was recorded or a reading after the dose shows it (MOAA/S below 5,
    CADSS above 0); resolved when every such side effect resolved by discharge and the last reading that
    measured it shows it gone."""
    measured = [(r, sign(r)) for r in readings if sign(r) is not None]
    showing = [r.id for r, s in measured if s]
    if not effects and not showing:
        _not_experienced(b, key, measured, readings)
        return
    b.answer(key, True, *(e.id for e in effects), *showing)
    if effects and not all(e.resolved_at is not None for e in effects):
        return  # unknown until the resolution is recorded
    _effect_resolved(b, key, session, effects, measured, showing)


def _not_experienced(
    b: _Builder, key: str, measured: list[tuple[MonitoringReading, bool]], readings: list[MonitoringReading]
) -> None:
    """No, from the readings that measured the sign (or every reading after the dose when none did); unanswered
    when nothing was read after the dose."""
    if measured or readings:
        b.answer(key, False, *(r.id for r, _ in measured), *([] if measured else [r.id for r in readings]))


def _effect_resolved(
    b: _Builder,
    key: str,
    session: ClinicalSession,
    effects: list[SideEffect],
    measured: list[tuple[MonitoringReading, bool]],
    showing: list[str],
) -> None:
    """Resolved: every side effect resolved by discharge (or the session's end) and the last reading that measured
    the sign no longer shows it."""
    end = session.discharge_at or session.end
    effects_resolved = all(e.resolved_at is not None and (end is None or e.resolved_at <= end) for e in effects)
    last_measured = measured[-1] if measured else None
    signs_resolved = last_measured is None or not last_measured[1]
    if showing and last_measured is not None and last_measured[0].id in showing:
        signs_resolved = False
    sources = [e.id for e in effects] + ([last_measured[0].id] if last_measured else [])
    b.answer(f"{key}-resolved", effects_resolved and signs_resolved, *sources)


def _settled_from(readings: list[MonitoringReading]) -> MonitoringReading | None:
    """The first reading that measured alertness or dissociation from which on every reading shows the patient
    alert (MOAA/S 5) and without dissociation (CADSS 0)."""
    for index, reading in enumerate(readings):
        if reading.moaas_score is None and reading.cadss_total is None:
            continue
        if all(
            (r.moaas_score is None or r.moaas_score >= MOAAS_ALERT) and (r.cadss_total is None or r.cadss_total == 0)
            for r in readings[index:]
        ):
            return reading
    return None


def _ready(
    b: _Builder, session: ClinicalSession, effects: list[SideEffect], readings: list[MonitoringReading], first: datetime
) -> None:
    """When the record shows the patient ready: the first reading after the dose from which on every reading shows
    the patient alert (MOAA/S 5) and without dissociation (CADSS 0), and no earlier than every side effect's
    resolution."""
    ready_at = _settled_from(readings)
    if ready_at is None:
        return
    resolved = [e.resolved_at for e in effects]
    if any(r is None for r in resolved):
        return
    when = max([ready_at.taken_at, *(r for r in resolved if r is not None)])
    minutes = int((when - first).total_seconds() // 60)
    b.answer("session.ready-minutes", minutes, ready_at.id, *(e.id for e in effects))


def forms_of(chart: EpisodeChart) -> list[RemsForm]:
    reportable = reportable_sessions(chart.episode)
    return [build_form(chart, s, reportable) for s in reportable]
