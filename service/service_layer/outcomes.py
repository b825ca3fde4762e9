"""Use cases of measurement-based care: measure reports, the clinic's outcome figures, the episode in pictures.

Reads only; the measures themselves are pure functions in ``service.domain.measures``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from service.domain import measures as m
from service.domain.chart import EpisodeChart
from service.domain.episode import Episode
from service.domain.errors import NotFound
from service.domain.model import Clinic
from service.domain.vocabulary import EpisodeStatus, IndicationKind, Instrument
from service.service_layer.services import episode_chart
from service.service_layer.unit_of_work import UnitOfWork

_PAGE = 500
SCALES = (Instrument.PHQ9, Instrument.GAD7, Instrument.PCL5)
# The 4-8 month measure of each scale: the one the per-indication breakdown and the monthly trend use.
SHORT_TERM = {d.instrument: d for d in m.MEASURES.values() if d.window_days == (120, 240)}
INDICATION_OF = {d.instrument: d.indication for d in SHORT_TERM.values()}


def clinic_episodes(uow: UnitOfWork) -> list[Episode]:
    """Every episode of the clinic with its records (one query per episode: a clinic has hundreds, not millions)."""
    ids: list[str] = []
    offset = 0
    while True:  # bounded: each page moves the offset on by its size, and the total is finite
        page = uow.repo.list_episodes(patient_id=None, status=None, phase=None, limit=_PAGE, offset=offset)
        ids.extend(e.id for e in page.items)
        offset += _PAGE
        if offset >= page.total or not page.items:
            break
    return [uow.repo.get_episode(episode_id) for episode_id in ids]


def find_measure(measure_id: str) -> m.MeasureDefinition:
    definition = m.MEASURES.get(measure_id)
    if definition is None:
        raise NotFound(f"No Measure {measure_id}.")
    return definition


@dataclass(frozen=True)
class Evaluation:
    result: m.MeasureResult
    clinic: Clinic
    patient_id: str | None = None


def evaluate_measure(
    uow: UnitOfWork,
    measure_id: str,
    period_start: date,
    period_end: date,
    *,
    pcl5_cut_point: int,
    patient_id: str | None = None,
) -> Evaluation:
    """A summary over the clinic, or the episodes of one patient (an individual report)."""
    definition = find_measure(measure_id)
    episodes = clinic_episodes(uow)
    cohort = [e for e in episodes if patient_id is None or e.patient_id == patient_id]
    result = m.evaluate(
        definition, cohort, period_start, period_end, pcl5_cut_point=pcl5_cut_point, patients_episodes=episodes
    )
    return Evaluation(result, uow.repo.get_clinic(), patient_id)


def patient_ids(uow: UnitOfWork) -> list[str]:
    return sorted({e.patient_id for e in clinic_episodes(uow)})


# --- the clinic's outcome figures --------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndicationOutcomes:
    indication: IndicationKind
    episodes: int
    results: list[m.MeasureResult]
    time_to_response: list[m.TimeToResponse]


@dataclass(frozen=True)
class MonthFigures:
    month: date  # first day of the month
    results: list[m.MeasureResult]


@dataclass(frozen=True)
class OutcomesSummary:
    period_start: date
    period_end: date
    results: list[m.MeasureResult]
    time_to_response: list[m.TimeToResponse]
    by_indication: list[IndicationOutcomes]
    by_month: list[MonthFigures] = field(default_factory=list)


def _months(start: date, end: date) -> list[tuple[date, date]]:
    """The calendar months the period touches, each clipped to the period."""
    out = []
    first = start.replace(day=1)
    while first <= end and len(out) < 240:  # at most 20 years of months
        following = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
        out.append((max(first, start), min(_day_before(following), end)))
        first = following
    return out


def _day_before(value: date) -> date:
    return date.fromordinal(value.toordinal() - 1)


def outcomes_summary(
    uow: UnitOfWork, period_start: date, period_end: date, *, pcl5_cut_point: int, by_month: bool = False
) -> OutcomesSummary:
    episodes = clinic_episodes(uow)
    kw = {"pcl5_cut_point": pcl5_cut_point}
    results = [m.evaluate(d, episodes, period_start, period_end, **kw) for d in m.MEASURES.values()]
    times = [
        m.time_to_first_response(i, episodes, period_start, period_end, indication=INDICATION_OF[i], **kw)
        for i in SCALES
    ]
    by_indication = _by_indication(episodes, period_start, period_end, pcl5_cut_point)
    months = _by_month(episodes, period_start, period_end, pcl5_cut_point) if by_month else []
    return OutcomesSummary(period_start, period_end, results, times, by_indication, months)


def _by_indication(
    episodes: list[Episode], period_start: date, period_end: date, pcl5_cut_point: int
) -> list[IndicationOutcomes]:
    """The short-term measures and the time to response for each indication kind among the episodes not
    cancelled (an episode with two indications counts in both cohorts)."""
    kw = {"pcl5_cut_point": pcl5_cut_point}
    treated = [e for e in episodes if e.status is not EpisodeStatus.CANCELLED]
    kinds = sorted({i.kind for e in treated for i in e.indications}, key=list(IndicationKind).index)
    by_indication = []
    for kind in kinds:
        cohort = [e for e in treated if any(i.kind is kind for i in e.indications)]
        by_indication.append(
            IndicationOutcomes(
                indication=kind,
                episodes=len(cohort),
                results=[
                    m.evaluate(
                        d, cohort, period_start, period_end, any_indication=True, patients_episodes=episodes, **kw
                    )
                    for d in SHORT_TERM.values()
                ],
                time_to_response=[m.time_to_first_response(i, cohort, period_start, period_end, **kw) for i in SCALES],
            )
        )
    return by_indication


def _by_month(episodes: list[Episode], period_start: date, period_end: date, pcl5_cut_point: int) -> list[MonthFigures]:
    """The short-term measures for each calendar month the period touches."""
    return [
        MonthFigures(
            first, [m.evaluate(d, episodes, first, last, pcl5_cut_point=pcl5_cut_point) for d in SHORT_TERM.values()]
        )
        for first, last in _months(period_start, period_end)
    ]


# --- the episode page ---------------------------------------------------------------------------------------------


def episode_for_view(uow: UnitOfWork, episode_id: str) -> EpisodeChart:
    return episode_chart(uow, episode_id)
