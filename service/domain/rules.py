"""Safety rules. They read clinical timestamps and look at a completed session as a whole.

A broken rule never refuses a record: it yields a :class:`Deviation`, which the episode turns into a safety
flag for a clinician to acknowledge. Evaluation is a pure function of the episode's current records, so the
order in which requests arrived cannot change the outcome.

Each rule looks at one dosing session (its doses and readings, with the episode's consents and phase history) or
at one outcome measure: a change that touches only some sessions and measures needs only theirs evaluated again
(:func:`evaluate` with ``only``), which keeps the cost of a write from growing with the episode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from service.domain.model import (
    ClinicalSession,
    Consent,
    DosingOrder,
    DosingRecord,
    MonitoringReading,
    OutcomeMeasure,
)
from service.domain.scales import is_suicide_risk_positive
from service.domain.vocabulary import (
    DosingSetting,
    FlagSeverity,
    Medication,
    Phase,
    ReadingTiming,
    Route,
    SessionKind,
    SessionStatus,
)

if TYPE_CHECKING:
    from service.domain.episode import Episode

# Upper mg/kg bounds of racemic ketamine per route (kap-fhir-reference.md §4.2):
# - IV: Andrade, J Clin Psychiatry 2017;78(7):e852 — 0.5 mg/kg over 40 min is conventional, benefits and adverse
#   effects are dose-dependent over 0.1-0.75 mg/kg.
# - IM: NCT05468047 used 0.5-0.75 mg/kg.
# - Oral: Andrade, "Oral ketamine for depression" — reported doses 0.25-7 mg/kg.
# - Sublingual: no mg/kg source; lozenges are partly swallowed, so the oral bound applies.
# - Intranasal racemic ketamine: no source; 1.0 mg/kg is a clinic-policy placeholder. Configure it.
DEFAULT_MAX_MG_PER_KG: dict[Route, float] = {
    Route.INTRAVENOUS: 0.75,
    Route.INTRAMUSCULAR: 0.75,
    Route.ORAL: 7.0,
    Route.SUBLINGUAL: 7.0,
    Route.INTRANASAL: 1.0,
}

# Spravato (esketamine) nasal spray: 28 mg per device; 56 or 84 mg per session (label, reference §4.1).
ESKETAMINE_DEVICE_MG = 28.0
ESKETAMINE_USUAL_DOSES_MG = (56.0, 84.0)


@dataclass(frozen=True)
class SafetyPolicy:
    max_mg_per_kg: dict[Route, float] = field(default_factory=lambda: dict(DEFAULT_MAX_MG_PER_KG))
    # At-home dosing: the telehealth check-in must fall within this many minutes of the dose.
    home_check_in_window_min: int = 60
    # Spravato REMS: observe at least 2 hours; BP about 40 minutes after the dose.
    esketamine_observation_min: int = 120
    esketamine_bp_after_dose_min: int = 40
    esketamine_bp_tolerance_min: int = 10
    pcl5_cut_point: int = 33


@dataclass(frozen=True)
class Deviation:
    rule_id: str
    severity: FlagSeverity
    explanation: str
    record_ids: tuple[str, ...]


RULE_IDS = (
    "dose-without-active-consent",
    "off-label-use-not-acknowledged",
    "dose-outside-dosing-phase",
    "no-pre-dose-blood-pressure",
    "home-dose-without-check-in",
    "home-dose-route",
    "racemic-dose-above-max-mg-per-kg",
    "racemic-dose-without-weight",
    "esketamine-dose-not-usual",
    "esketamine-route",
    "esketamine-at-home",
    "esketamine-observation-too-short",
    "esketamine-blood-pressure-missing",
    "esketamine-no-pulse-oximetry",
    "suicide-risk-positive",
    # Deadlines of the Spravato REMS Patient Monitoring Form (service/domain/rems.py): they follow the clock.
    "rems-form-due",
    "rems-form-overdue",
)

_DOSING_PHASES = (Phase.DOSING, Phase.MAINTENANCE)


def _code_digest() -> str:
    """The rules' code (this module, the scales it reads, the records' derived values): part of every episode's
    ``safety_basis``, so that after a release that changed them each episode's flags are evaluated in full again on
    its next write (a write otherwise evaluates only the sessions it touched), with no revision to remember."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in ("rules.py", "scales.py", "model.py", "rems.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


RULES_CODE = _code_digest()


def basis(policy: SafetyPolicy) -> str:
    """What a full evaluation depended on besides the records: the rules' code and the policy."""
    return hashlib.sha256(f"{RULES_CODE}|{policy!r}".encode()).hexdigest()[:16]


def evaluate(episode: Episode, policy: SafetyPolicy, only: Collection[str] | None = None) -> list[Deviation]:
    """The deviations the episode's records show; ``only``: of these sessions and outcome measures (by id)."""
    deviations: list[Deviation] = []
    sessions, measures, doses, readings = _current_records(episode, only)
    consents = episode.current(Consent)
    for session in sessions:
        if session.kind is SessionKind.DOSING and session.status is SessionStatus.COMPLETED:
            deviations.extend(
                _dosing_session(
                    episode, session, policy, doses.get(session.id, []), readings.get(session.id, []), consents
                )
            )
    for measure in measures:
        if is_suicide_risk_positive(measure.instrument, measure.items):
            deviations.append(
                Deviation(
                    "suicide-risk-positive",
                    FlagSeverity.HIGH,
                    f"{measure.instrument} administered {measure.administered_at.isoformat()} screens positive for "
                    "suicide risk: assess the patient before any further dosing.",
                    (measure.id,),
                )
            )
    return deviations


def _current_records(
    episode: Episode, only: Collection[str] | None
) -> tuple[
    list[ClinicalSession], list[OutcomeMeasure], dict[str, list[DosingRecord]], dict[str, list[MonitoringReading]]
]:
    """The sessions and measures to evaluate, and the doses and readings of each session, in one pass over the
    records, not one pass per session: an evaluation follows every write."""
    sessions: list[ClinicalSession] = []
    measures: list[OutcomeMeasure] = []
    doses: dict[str, list[DosingRecord]] = {}
    readings: dict[str, list[MonitoringReading]] = {}
    for record in episode.records.values():
        if record.entered_in_error:
            continue
        if isinstance(record, DosingRecord):
            doses.setdefault(record.session_id, []).append(record)
        elif isinstance(record, MonitoringReading):
            readings.setdefault(record.session_id, []).append(record)
        elif isinstance(record, ClinicalSession) and (only is None or record.id in only):
            sessions.append(record)
        elif isinstance(record, OutcomeMeasure) and (only is None or record.id in only):
            measures.append(record)
    return sessions, measures, doses, readings


def _dosing_session(
    episode: Episode,
    session: ClinicalSession,
    policy: SafetyPolicy,
    session_doses: list[DosingRecord],
    session_readings: list[MonitoringReading],
    consents: list[Consent],
) -> Iterator[Deviation]:
    doses = sorted(session_doses, key=lambda d: d.start)
    readings = sorted(session_readings, key=lambda r: r.taken_at)
    for dose in doses:
        yield from _consent(dose, consents)
        phase = episode.phase_at(dose.start)
        if phase not in _DOSING_PHASES:
            yield Deviation(
                "dose-outside-dosing-phase",
                FlagSeverity.MODERATE,
                f"Dose given at {dose.start.isoformat()} while the episode was in phase '{phase}', "
                "not dosing or maintenance.",
                (dose.id,),
            )
        if dose.setting is DosingSetting.HOME:
            yield from _home_dose(session, dose, policy)
        elif dose.medication is Medication.RACEMIC_KETAMINE and not any(
            r.timing is ReadingTiming.PRE_DOSE and r.has_blood_pressure and r.taken_at <= dose.start for r in readings
        ):
            yield Deviation(
                "no-pre-dose-blood-pressure",
                FlagSeverity.HIGH,
                f"In-clinic dose at {dose.start.isoformat()} has no pre-dose blood pressure reading.",
                (dose.id, session.id),
            )
        if dose.medication is Medication.RACEMIC_KETAMINE:
            yield from _racemic_dose(dose, episode, policy)
        else:
            yield from _esketamine_dose(dose)
    esketamine_doses = [d for d in doses if d.medication is Medication.ESKETAMINE]
    if esketamine_doses and any(d.setting is DosingSetting.CLINIC for d in esketamine_doses):
        yield from _rems_monitoring(session, esketamine_doses, readings, policy)


def _consent(dose: DosingRecord, consents: list[Consent]) -> Iterator[Deviation]:
    covering = [
        c
        for c in consents
        if c.is_active_at(dose.start) and c.covers_ketamine_for_psychotherapy and dose.route in c.routes_covered
    ]
    if not covering:
        yield Deviation(
            "dose-without-active-consent",
            FlagSeverity.HIGH,
            f"No consent was active at {dose.start.isoformat()} covering ketamine for psychotherapy by the "
            f"{dose.route} route.",
            (dose.id,),
        )
    elif dose.off_label and not any(c.off_label_use_acknowledged for c in covering):
        yield Deviation(
            "off-label-use-not-acknowledged",
            FlagSeverity.MODERATE,
            "This dose is off-label and the consent active at the time does not record the patient's "
            "acknowledgement of off-label use.",
            (dose.id, *(c.id for c in covering)),
        )


def _home_dose(session: ClinicalSession, dose: DosingRecord, policy: SafetyPolicy) -> Iterator[Deviation]:
    if dose.medication is Medication.ESKETAMINE:
        yield Deviation(
            "esketamine-at-home",
            FlagSeverity.HIGH,
            "Esketamine was recorded as taken at home; the Spravato REMS allows administration only in a "
            "certified healthcare setting under supervision.",
            (dose.id,),
        )
    if dose.route not in (Route.SUBLINGUAL, Route.ORAL):
        yield Deviation(
            "home-dose-route",
            FlagSeverity.HIGH,
            f"At-home dosing is for self-administered sublingual or oral ketamine; this dose was {dose.route}.",
            (dose.id,),
        )
    window = timedelta(minutes=policy.home_check_in_window_min)
    last = dose.end or dose.start
    if session.check_in_at is None or not (dose.start - window <= session.check_in_at <= last + window):
        yield Deviation(
            "home-dose-without-check-in",
            FlagSeverity.MODERATE,
            f"At-home dose has no telehealth check-in within {policy.home_check_in_window_min} minutes of the dose.",
            (dose.id, session.id),
        )


def _racemic_dose(dose: DosingRecord, episode: Episode, policy: SafetyPolicy) -> Iterator[Deviation]:
    mg_per_kg = dose.dose_mg_per_kg
    if mg_per_kg is None:
        yield Deviation(
            "racemic-dose-without-weight",
            FlagSeverity.MODERATE,
            "Racemic ketamine is dosed by weight, and no body weight is known for this dose.",
            (dose.id,),
        )
        return
    maximum = policy.max_mg_per_kg.get(dose.route)
    if maximum is not None and mg_per_kg > maximum and not dose.override_reason:
        yield Deviation(
            "racemic-dose-above-max-mg-per-kg",
            FlagSeverity.HIGH,
            f"{dose.dose_mg} mg at {dose.weight_kg} kg is {mg_per_kg} mg/kg, above the {maximum} mg/kg "
            f"maximum for the {dose.route} route, and no override reason was recorded.",
            (dose.id,),
        )


def _esketamine_dose(dose: DosingRecord) -> Iterator[Deviation]:
    if dose.route is not Route.INTRANASAL:
        yield Deviation(
            "esketamine-route",
            FlagSeverity.HIGH,
            f"Esketamine is a nasal spray; this dose was recorded as {dose.route}.",
            (dose.id,),
        )
    if dose.dose_mg not in ESKETAMINE_USUAL_DOSES_MG:
        devices = dose.dose_mg / ESKETAMINE_DEVICE_MG
        what = (
            f"{int(devices)} device(s)"
            if devices.is_integer()
            else f"not a whole number of {ESKETAMINE_DEVICE_MG:g} mg devices"
        )
        yield Deviation(
            "esketamine-dose-not-usual",
            FlagSeverity.MODERATE,
            f"Esketamine {dose.dose_mg:g} mg ({what}); the usual session doses are 56 mg or 84 mg.",
            (dose.id,),
        )


def _rems_monitoring(
    session: ClinicalSession,
    doses: list[DosingRecord],
    readings: list[MonitoringReading],
    policy: SafetyPolicy,
) -> Iterator[Deviation]:
    first = doses[0].start
    ids = (session.id, *(d.id for d in doses))
    observed = (session.discharge_at - first) if session.discharge_at else None
    if observed is None or observed < timedelta(minutes=policy.esketamine_observation_min):
        how_long = "no discharge time was recorded" if observed is None else f"discharge came after {observed}"
        yield Deviation(
            "esketamine-observation-too-short",
            FlagSeverity.HIGH,
            f"REMS monitoring requires at least {policy.esketamine_observation_min} minutes from the first device "
            f"to discharge; {how_long}.",
            ids,
        )
    missing = _missing_blood_pressures(readings, first, policy)
    if missing:
        yield Deviation(
            "esketamine-blood-pressure-missing",
            FlagSeverity.HIGH,
            "REMS blood pressure reading missing: " + "; ".join(missing) + ".",
            ids,
        )
    if not any(r.spo2_percent is not None for r in readings):
        yield Deviation(
            "esketamine-no-pulse-oximetry",
            FlagSeverity.MODERATE,
            "REMS monitoring includes pulse oximetry; no SpO2 reading was recorded in this session.",
            ids,
        )


def _missing_blood_pressures(readings: list[MonitoringReading], first: datetime, policy: SafetyPolicy) -> list[str]:
    """Which of the three REMS blood pressures (before the dose, about 40 minutes after it, before discharge) no
    reading holds, in clinical words."""
    bp = [r for r in readings if r.has_blood_pressure]
    target = first + timedelta(minutes=policy.esketamine_bp_after_dose_min)
    tolerance = timedelta(minutes=policy.esketamine_bp_tolerance_min)
    missing = []
    if not any(r.taken_at <= first for r in bp):
        missing.append("before the dose")
    if not any(abs(r.taken_at - target) <= tolerance for r in bp):
        missing.append(f"about {policy.esketamine_bp_after_dose_min} minutes after the dose")
    if not any(r.timing is ReadingTiming.DISCHARGE for r in bp):
        missing.append("before discharge")
    return missing


def is_off_label(dose: DosingRecord | DosingOrder, episode: Episode) -> bool:
    """Esketamine nasal spray is on-label for TRD and for MDD with acute suicidal ideation or behaviour; racemic
    ketamine for psychotherapy never is. Applies to a dose and to the order it follows alike."""
    if dose.medication is not Medication.ESKETAMINE or dose.route is not Route.INTRANASAL:
        return True
    return not any(i.treatment_resistant or i.acute_suicidal_ideation for i in episode.depression_indications())
