"""Measurement-based care: response and remission measures over episodes (pure; no framework).

What each measure follows (verified November 2026):
- NCQA HEDIS **Depression Remission or Response for Adolescents and Adults (DRR-E)** (ECDS): among members with
  a depression diagnosis and an elevated PHQ-9 (> 9), the index episode start date (IESD) is the first elevated
  score of the intake period; the follow-up period is 120-240 days after it; the *most recent* PHQ-9 of the
  follow-up period counts. Numerator 1 follow-up (any PHQ-9 there), 2 remission (< 5), 3 response (at least 50 %
  lower than the IESD score). https://www.ncqa.org/hedis/measures/depression-remission-or-response-for-adolescents-and-adults/
- CMS eCQM **CMS159v14 Depression Remission at Twelve Months** (CBE 0710e, 2026 performance period, MN Community
  Measurement): initial PHQ-9 > 9 at an index event, remission when the most recent PHQ-9 twelve months
  (+/- 60 days) after it is < 5. https://ecqi.healthit.gov/ecqm/ec/2026/cms0159v14
- GAD-7 and PCL-5: the same logic with their own thresholds (not NCQA or CMS measures; kapfhir's analogues).
  GAD-7 (Spitzer 2006): elevated at >= 10 (moderate), remission < 5, response a 50 % drop.
  PCL-5 (National Center for PTSD, "Using the PTSD Checklist for DSM-5"): elevated at or above the provisional-PTSD
  cut-point (``KAPFHIR_PCL5_CUT_POINT``, default 33), a 10-point drop is a clinically meaningful change (response),
  remission below the cut-point.

Where kapfhir simplifies (also in the README):
- The unit is the **episode**, not the member or patient: each episode has its own index score.
- The report period is the **intake period**: an episode is in the initial population when its first elevated
  score lies in the period; its follow-up may lie after the period end (HEDIS fixes the intake period to
  January-August so that follow-up falls in the measurement year).
- Days are counted between the **local calendar dates** of the scores (as recorded, with their offset).
- The index score must belong to an episode with the measure's indication (depression for PHQ-9, anxiety for GAD-7,
  PTSD for PCL-5); the specs' diagnosis value sets are replaced by kapfhir's indication kinds.
- Exclusions: kapfhir has no death, hospice or palliative-care data. It excludes episodes of patients with an
  ICD-10-CM code of bipolar disorder (F31), schizophrenia spectrum and other psychotic disorders (F20-F29),
  pervasive developmental disorders (F84) or borderline (emotionally labile) personality disorder (F60.3) on any of
  their episodes: CMS159's exclusions by ICD-10-CM category rather than by the VSAC value sets.
- Episodes withdrawn or discontinued after treatment started stay in the denominator, as in both specs (no
  follow-up score means the numerator is not met). A *cancelled* episode (ended before any completed session) is
  not a course of treatment: it is not in the initial population.
- No age strata (CMS159 reports 12-17 and 18+); kapfhir treats adults.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

from service.domain.episode import Episode
from service.domain.model import ClinicalSession, OutcomeMeasure
from service.domain.scales import PCL5_DEFAULT_CUT_POINT
from service.domain.vocabulary import EpisodeStatus, IndicationKind, Instrument, SessionKind, SessionStatus

# CMS159 denominator exclusions kapfhir can see, as ICD-10-CM code prefixes: F20-F29 "Schizophrenia, schizotypal,
# delusional, and other non-mood psychotic disorders", F31 "Bipolar disorder", F60.3 "Borderline personality
# disorder" (inclusion term: emotionally unstable personality disorder; V3: emedcodes.com/ICD10/F603, with its
# block F60-F69), F84 "Pervasive developmental disorders". Checked in third-party ICD-10-CM listings (docs/pages
# search, November 2026), not against the VSAC value sets CMS159 uses.
EXCLUDING_ICD10CM_PREFIXES: dict[str, str] = {
    "F20": "psychotic disorder",
    "F21": "psychotic disorder",
    "F22": "psychotic disorder",
    "F23": "psychotic disorder",
    "F24": "psychotic disorder",
    "F25": "psychotic disorder",
    "F28": "psychotic disorder",
    "F29": "psychotic disorder",
    "F31": "bipolar disorder",
    "F60.3": "personality disorder, emotionally labile",
    "F84": "pervasive developmental disorder",
}


class Group(StrEnum):
    """A rate of a measure (a Measure.group): each has the same denominator and its own numerator."""

    FOLLOW_UP = "follow-up"
    RESPONSE = "response"
    REMISSION = "remission"


@dataclass(frozen=True)
class ScaleCriteria:
    """Thresholds of one instrument."""

    elevated_from: int  # an index score is at least this
    remission_below: int  # remission: the follow-up score is below this
    response_drop_percent: float | None = None  # response: at least this % lower than the index score
    response_drop_points: int | None = None  # ... or at least this many points lower

    def is_response(self, index_total: int, total: int) -> bool:
        if self.response_drop_points is not None:
            return index_total - total >= self.response_drop_points
        assert self.response_drop_percent is not None
        # Integers only: total <= index * (1 - p/100), i.e. 100 * total <= (100 - p) * index.
        return 100 * total <= (100 - self.response_drop_percent) * index_total

    def is_remission(self, total: int) -> bool:
        return total < self.remission_below


def criteria(instrument: Instrument, pcl5_cut_point: int = PCL5_DEFAULT_CUT_POINT) -> ScaleCriteria:
    if instrument is Instrument.PHQ9:
        return ScaleCriteria(elevated_from=10, remission_below=5, response_drop_percent=50)
    if instrument is Instrument.GAD7:
        return ScaleCriteria(elevated_from=10, remission_below=5, response_drop_percent=50)
    if instrument is Instrument.PCL5:
        return ScaleCriteria(elevated_from=pcl5_cut_point, remission_below=pcl5_cut_point, response_drop_points=10)
    raise ValueError(f"{instrument} has no response or remission criteria")


@dataclass(frozen=True)
class MeasureDefinition:
    id: str
    instrument: Instrument
    indication: IndicationKind
    title: str
    description: str
    follows: str  # the specification (and version) whose logic the measure follows
    window_days: tuple[int, int]  # follow-up window, days after the index score (inclusive)
    groups: tuple[Group, ...]


_FOLLOW_UP_4_8 = (120, 240)
_TWELVE_MONTHS = (365 - 60, 365 + 60)

MEASURES: dict[str, MeasureDefinition] = {
    m.id: m
    for m in (
        MeasureDefinition(
            id="phq9-response-remission-4-8-months",
            instrument=Instrument.PHQ9,
            indication=IndicationKind.DEPRESSION,
            title="Depression response or remission at 4-8 months (PHQ-9)",
            description="Episodes for depression with a PHQ-9 above 9: a follow-up PHQ-9 120-240 days later, "
            "remission (most recent follow-up PHQ-9 below 5) and response (at least 50 % below the index score).",
            follows="NCQA HEDIS Depression Remission or Response for Adolescents and Adults (DRR-E), ECDS",
            window_days=_FOLLOW_UP_4_8,
            groups=(Group.FOLLOW_UP, Group.RESPONSE, Group.REMISSION),
        ),
        MeasureDefinition(
            id="phq9-remission-12-months",
            instrument=Instrument.PHQ9,
            indication=IndicationKind.DEPRESSION,
            title="Depression remission at twelve months (PHQ-9)",
            description="Episodes for depression with a PHQ-9 above 9: remission when the most recent PHQ-9 twelve "
            "months (+/- 60 days) later is below 5.",
            follows="CMS eCQM CMS159v14 Depression Remission at Twelve Months (CBE 0710e), 2026 performance period",
            window_days=_TWELVE_MONTHS,
            groups=(Group.REMISSION,),
        ),
        MeasureDefinition(
            id="gad7-response-remission-4-8-months",
            instrument=Instrument.GAD7,
            indication=IndicationKind.ANXIETY,
            title="Anxiety response or remission at 4-8 months (GAD-7)",
            description="Episodes for anxiety with a GAD-7 of 10 or more: a follow-up GAD-7 120-240 days later, "
            "remission (below 5) and response (at least 50 % below the index score).",
            follows="kapfhir analogue of NCQA HEDIS DRR-E, GAD-7 thresholds from Spitzer et al. 2006",
            window_days=_FOLLOW_UP_4_8,
            groups=(Group.FOLLOW_UP, Group.RESPONSE, Group.REMISSION),
        ),
        MeasureDefinition(
            id="gad7-remission-12-months",
            instrument=Instrument.GAD7,
            indication=IndicationKind.ANXIETY,
            title="Anxiety remission at twelve months (GAD-7)",
            description="Episodes for anxiety with a GAD-7 of 10 or more: remission when the most recent GAD-7 "
            "twelve months (+/- 60 days) later is below 5.",
            follows="kapfhir analogue of CMS159v14, GAD-7 thresholds from Spitzer et al. 2006",
            window_days=_TWELVE_MONTHS,
            groups=(Group.REMISSION,),
        ),
        MeasureDefinition(
            id="pcl5-response-remission-4-8-months",
            instrument=Instrument.PCL5,
            indication=IndicationKind.PTSD,
            title="PTSD response or remission at 4-8 months (PCL-5)",
            description="Episodes for PTSD with a PCL-5 at or above the provisional-PTSD cut-point: a follow-up "
            "PCL-5 120-240 days later, response (10 points or more below the index score) and remission (below "
            "the cut-point).",
            follows="kapfhir analogue of NCQA HEDIS DRR-E; PCL-5 change and cut-point from the National "
            "Center for PTSD (PTSD Checklist for DSM-5)",
            window_days=_FOLLOW_UP_4_8,
            groups=(Group.FOLLOW_UP, Group.RESPONSE, Group.REMISSION),
        ),
        MeasureDefinition(
            id="pcl5-remission-12-months",
            instrument=Instrument.PCL5,
            indication=IndicationKind.PTSD,
            title="PTSD remission at twelve months (PCL-5)",
            description="Episodes for PTSD with a PCL-5 at or above the provisional-PTSD cut-point: remission when "
            "the most recent PCL-5 twelve months (+/- 60 days) later is below the cut-point.",
            follows="kapfhir analogue of CMS159v14; PCL-5 cut-point from the National Center for PTSD",
            window_days=_TWELVE_MONTHS,
            groups=(Group.REMISSION,),
        ),
    )
}


# --- evaluation ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScorePoint:
    measure_id: str  # the OutcomeMeasure record
    at: datetime
    total: int

    @property
    def day(self) -> date:
        return self.at.date()  # the local date, in the offset it was recorded with


@dataclass(frozen=True)
class EpisodeOutcome:
    """How one episode fares on one measure."""

    episode_id: str
    patient_id: str
    indications: tuple[IndicationKind, ...]
    index: ScorePoint
    follow_up: ScorePoint | None  # the most recent score in the follow-up window
    exclusion: str | None  # why the episode is excluded from the denominator
    met: dict[Group, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Population:
    initial_population: int
    denominator: int
    denominator_exclusion: int
    numerator: int

    @property
    def score(self) -> float | None:
        """numerator / (denominator - exclusions), the proportion R4 MeasureReport reports; None when empty."""
        eligible = self.denominator - self.denominator_exclusion
        return round(self.numerator / eligible, 4) if eligible else None


@dataclass(frozen=True)
class MeasureResult:
    definition: MeasureDefinition
    period_start: date
    period_end: date
    outcomes: tuple[EpisodeOutcome, ...]

    def population(self, group: Group) -> Population:
        included = [o for o in self.outcomes if o.exclusion is None]
        return Population(
            initial_population=len(self.outcomes),
            denominator=len(self.outcomes),
            denominator_exclusion=len(self.outcomes) - len(included),
            numerator=sum(1 for o in included if o.met[group]),
        )


def _scores(episode: Episode, instrument: Instrument) -> list[ScorePoint]:
    found = [
        ScorePoint(m.id, m.administered_at, m.total)
        for m in episode.current(OutcomeMeasure)
        if m.instrument is instrument and m.total is not None
    ]
    return sorted(found, key=lambda p: (p.at, p.measure_id))


def exclusion_reason(episode: Episode, all_episodes: Iterable[Episode]) -> str | None:
    """A CMS159 exclusion kapfhir can see: a diagnosis on any episode of the same patient."""
    for other in all_episodes:
        if other.patient_id != episode.patient_id:
            continue
        for indication in other.indications:
            code = (indication.icd10cm or "").upper()
            for prefix, reason in EXCLUDING_ICD10CM_PREFIXES.items():
                if code.startswith(prefix):
                    return reason
    return None


def index_score(episode: Episode, instrument: Instrument, rules: ScaleCriteria) -> ScorePoint | None:
    """The first elevated score of the episode (HEDIS: the IESD is the earliest elevated score)."""
    return next((p for p in _scores(episode, instrument) if p.total >= rules.elevated_from), None)


def evaluate(
    definition: MeasureDefinition,
    episodes: Sequence[Episode],
    period_start: date,
    period_end: date,
    *,
    pcl5_cut_point: int = PCL5_DEFAULT_CUT_POINT,
    any_indication: bool = False,
    patients_episodes: Sequence[Episode] | None = None,
) -> MeasureResult:
    """The measure over a cohort. ``any_indication`` drops the indication criterion (the per-indication breakdown
    of the outcomes summary asks how, say, PHQ-9 moves in episodes for PTSD). Exclusions look at every episode of
    the patient: ``patients_episodes`` when the cohort is a part of them."""
    rules = criteria(definition.instrument, pcl5_cut_point)
    low, high = definition.window_days
    outcomes = []
    for episode in sorted(episodes, key=lambda e: e.id):
        if episode.status is EpisodeStatus.CANCELLED:
            continue
        kinds = tuple(dict.fromkeys(i.kind for i in episode.indications))
        if not any_indication and definition.indication not in kinds:
            continue
        index = index_score(episode, definition.instrument, rules)
        if index is None or not period_start <= index.day <= period_end:
            continue
        window = [p for p in _scores(episode, definition.instrument) if low <= (p.day - index.day).days <= high]
        follow_up = window[-1] if window else None
        met = {
            Group.FOLLOW_UP: follow_up is not None,
            Group.RESPONSE: follow_up is not None and rules.is_response(index.total, follow_up.total),
            Group.REMISSION: follow_up is not None and rules.is_remission(follow_up.total),
        }
        outcomes.append(
            EpisodeOutcome(
                episode_id=episode.id,
                patient_id=episode.patient_id,
                indications=kinds,
                index=index,
                follow_up=follow_up,
                exclusion=exclusion_reason(episode, patients_episodes or episodes),
                met={g: met[g] for g in definition.groups},
            )
        )
    return MeasureResult(definition, period_start, period_end, tuple(outcomes))


# --- time to first response ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FirstResponse:
    episode_id: str
    days: int
    dosing_sessions: int  # completed dosing sessions up to the responding score


@dataclass(frozen=True)
class TimeToResponse:
    instrument: Instrument
    episodes: int  # episodes with an elevated score in the period
    responders: int
    median_days: float | None
    median_dosing_sessions: float | None
    first_responses: tuple[FirstResponse, ...]


def first_response(episode: Episode, instrument: Instrument, rules: ScaleCriteria) -> FirstResponse | None:
    """The first score after the index that meets the response criterion, at any time (not only 4-8 months)."""
    index = index_score(episode, instrument, rules)
    if index is None:
        return None
    later = [p for p in _scores(episode, instrument) if p.at > index.at]
    hit = next((p for p in later if rules.is_response(index.total, p.total)), None)
    if hit is None:
        return None
    sessions = sum(
        1
        for s in episode.current(ClinicalSession)
        if s.kind is SessionKind.DOSING and s.status is SessionStatus.COMPLETED and s.start <= hit.at
    )
    return FirstResponse(episode.id, (hit.day - index.day).days, sessions)


def time_to_first_response(
    instrument: Instrument,
    episodes: Sequence[Episode],
    period_start: date,
    period_end: date,
    *,
    indication: IndicationKind | None = None,
    pcl5_cut_point: int = PCL5_DEFAULT_CUT_POINT,
) -> TimeToResponse:
    rules = criteria(instrument, pcl5_cut_point)
    eligible = 0
    found = []
    for episode in sorted(episodes, key=lambda e: e.id):
        if episode.status is EpisodeStatus.CANCELLED:
            continue
        if indication is not None and indication not in {i.kind for i in episode.indications}:
            continue
        index = index_score(episode, instrument, rules)
        if index is None or not period_start <= index.day <= period_end:
            continue
        eligible += 1
        response = first_response(episode, instrument, rules)
        if response is not None:
            found.append(response)
    return TimeToResponse(
        instrument=instrument,
        episodes=eligible,
        responders=len(found),
        median_days=statistics.median(r.days for r in found) if found else None,
        median_dosing_sessions=statistics.median(r.dosing_sessions for r in found) if found else None,
        first_responses=tuple(found),
    )
