"""Response and remission measures on hand-made cohorts; every expected figure is worked out in the comments."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from service.domain import measures as m
from service.domain.episode import Episode
from service.domain.measures import Group
from service.domain.model import ClinicalSession, Indication, OutcomeMeasure
from service.domain.vocabulary import (
    EpisodeStatus,
    IndicationKind,
    Instrument,
    Phase,
    SessionKind,
    SessionStatus,
)

DAY0 = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
PERIOD = (date(2026, 1, 1), date(2026, 3, 31))
DRR = m.MEASURES["phq9-response-remission-4-8-months"]
CMS159 = m.MEASURES["phq9-remission-12-months"]


def depression(icd10cm: str = "F33.2") -> Indication:
    return Indication(kind=IndicationKind.DEPRESSION, icd10cm=icd10cm)


def ep(
    eid: str,
    scores: list[tuple[int, int]],
    *,
    instrument: Instrument = Instrument.PHQ9,
    indications: list[Indication] | None = None,
    patient: str | None = None,
    status: EpisodeStatus = EpisodeStatus.ACTIVE,
    dosing_days: tuple[int, ...] = (),
) -> Episode:
    """An episode whose scores are (day after DAY0, total)."""
    episode = Episode(
        id=eid,
        patient_id=patient or f"pt-{eid}",
        indications=indications or [depression()],
        period_start=DAY0 - timedelta(days=7),
        status=status,
    )
    for n, (day, total) in enumerate(scores):
        rid = f"{eid}-score-{n}"
        episode.records[rid] = OutcomeMeasure(
            id=rid, instrument=instrument, administered_at=DAY0 + timedelta(days=day), items=[], total=total
        )
    for n, day in enumerate(dosing_days):
        sid = f"{eid}-session-{n}"
        episode.records[sid] = ClinicalSession(
            id=sid, kind=SessionKind.DOSING, status=SessionStatus.COMPLETED, start=DAY0 + timedelta(days=day)
        )
    return episode


def counts(result: m.MeasureResult, group: Group) -> tuple[int, int, int, int, float | None]:
    p = result.population(group)
    return p.initial_population, p.denominator, p.denominator_exclusion, p.numerator, p.score


def test_follow_up_window_edges_day_119_120_240_241():
    cohort = [
        ep("d119", [(0, 20), (119, 2)]),  # 119 days: before the window -> no follow-up
        ep("d120", [(0, 20), (120, 2)]),  # first day of the window: follow-up, 2 < 5 remission, 2 <= 10 response
        ep("d240", [(0, 20), (240, 10)]),  # last day: follow-up, 10 is not < 5, 10 <= 50 % of 20: response
        ep("d241", [(0, 20), (241, 2)]),  # one day late -> no follow-up
    ]
    result = m.evaluate(DRR, cohort, *PERIOD)
    by_id = {o.episode_id: o for o in result.outcomes}
    assert [by_id[e].follow_up is not None for e in ("d119", "d120", "d240", "d241")] == [False, True, True, False]
    # 4 in the population and denominator, no exclusions; follow-up 2/4, response 2/4 (d120, d240), remission 1/4.
    assert counts(result, Group.FOLLOW_UP) == (4, 4, 0, 2, 0.5)
    assert counts(result, Group.RESPONSE) == (4, 4, 0, 2, 0.5)
    assert counts(result, Group.REMISSION) == (4, 4, 0, 1, 0.25)


def test_baseline_exactly_9_is_not_elevated_and_10_is():
    cohort = [ep("nine", [(0, 9), (150, 1)]), ep("ten", [(0, 10), (150, 5)])]
    result = m.evaluate(DRR, cohort, *PERIOD)
    assert [o.episode_id for o in result.outcomes] == ["ten"]
    # ten: 5 is not < 5 (no remission); 5 <= 50 % of 10 (response: exactly half counts as "at least 50 % lower").
    assert counts(result, Group.REMISSION) == (1, 1, 0, 0, 0.0)
    assert counts(result, Group.RESPONSE) == (1, 1, 0, 1, 1.0)


def test_several_elevated_scores_index_on_the_first_and_the_most_recent_follow_up_counts():
    # Index = day 0 (18), not day 30 (22) nor day 60 (12). Window 120-240 after day 0: days 130 (4) and 200 (11)
    # are in it, day 250 (3) is not. The most recent in the window is 11: not < 5, and 11 > 9 (50 % of 18):
    # neither remission nor response, though an earlier follow-up (4) was both.
    cohort = [ep("many", [(0, 18), (30, 22), (60, 12), (130, 4), (200, 11), (250, 3)])]
    result = m.evaluate(DRR, cohort, *PERIOD)
    (outcome,) = result.outcomes
    assert (outcome.index.total, outcome.index.day) == (18, DAY0.date())
    assert outcome.follow_up is not None and outcome.follow_up.total == 11
    assert outcome.met == {Group.FOLLOW_UP: True, Group.RESPONSE: False, Group.REMISSION: False}


def test_missing_follow_up_stays_in_the_denominator():
    cohort = [ep("lost", [(0, 15)]), ep("seen", [(0, 15), (180, 7)])]
    result = m.evaluate(DRR, cohort, *PERIOD)
    # seen: 7 <= 7.5 (50 % of 15) -> response; 7 not < 5. lost: nothing. Denominator 2.
    assert counts(result, Group.FOLLOW_UP) == (2, 2, 0, 1, 0.5)
    assert counts(result, Group.RESPONSE) == (2, 2, 0, 1, 0.5)
    assert counts(result, Group.REMISSION) == (2, 2, 0, 0, 0.0)


def test_withdrawn_episodes_stay_in_the_denominator_and_cancelled_ones_are_not_counted():
    withdrawn = ep("withdrawn", [(0, 16)], status=EpisodeStatus.FINISHED)
    withdrawn.phase = Phase.DISCONTINUED
    withdrawn_later = ep("withdrawn-later", [(0, 16), (125, 3)], status=EpisodeStatus.FINISHED)
    withdrawn_later.phase = Phase.DISCONTINUED
    cancelled = ep("cancelled", [(0, 16), (125, 3)], status=EpisodeStatus.CANCELLED)
    result = m.evaluate(DRR, [withdrawn, withdrawn_later, cancelled], *PERIOD)
    # Population: the two discontinued episodes (cancelled never started treatment). withdrawn-later: 3 < 5
    # remission, 3 <= 8 response. 1 of 2 each.
    assert sorted(o.episode_id for o in result.outcomes) == ["withdrawn", "withdrawn-later"]
    assert counts(result, Group.REMISSION) == (2, 2, 0, 1, 0.5)
    assert counts(result, Group.RESPONSE) == (2, 2, 0, 1, 0.5)


def test_exclusions_come_from_any_episode_of_the_patient_and_leave_the_score_denominator():
    # Patient p1 has a bipolar episode besides the depression one; p2's depression episode is unaffected.
    bipolar = ep("p1-bipolar", [], patient="p1", indications=[Indication(kind=IndicationKind.OTHER, icd10cm="F31.81")])
    excluded = ep("p1-dep", [(0, 20), (150, 2)], patient="p1")
    kept = ep("p2-dep", [(0, 20), (150, 12)], patient="p2")
    result = m.evaluate(DRR, [bipolar, excluded, kept], *PERIOD)
    by_id = {o.episode_id: o for o in result.outcomes}
    assert by_id["p1-dep"].exclusion == "bipolar disorder" and by_id["p2-dep"].exclusion is None
    # IP 2, denominator 2, 1 excluded; p1-dep's remission is not counted; p2-dep: 12 not < 5 -> 0 / (2 - 1) = 0.0;
    # follow-up: p2-dep has one -> 1 / 1.
    assert counts(result, Group.REMISSION) == (2, 2, 1, 0, 0.0)
    assert counts(result, Group.FOLLOW_UP) == (2, 2, 1, 1, 1.0)


def test_index_outside_the_period_and_other_indications_are_not_in_the_population():
    late = ep("late", [(100, 20), (230, 2)])  # index on 2026-04-20: after the period end 2026-03-31
    ptsd = ep("ptsd", [(0, 20), (150, 2)], indications=[Indication(kind=IndicationKind.PTSD, icd10cm="F43.10")])
    result = m.evaluate(DRR, [late, ptsd], *PERIOD)
    assert result.outcomes == ()
    assert counts(result, Group.REMISSION) == (0, 0, 0, 0, None)
    # The per-indication breakdown drops the indication criterion: the PTSD episode is then counted.
    broad = m.evaluate(DRR, [late, ptsd], *PERIOD, any_indication=True)
    assert counts(broad, Group.REMISSION) == (1, 1, 0, 1, 1.0)


def test_entered_in_error_scores_do_not_count():
    episode = ep("eie", [(0, 20), (150, 2)])
    follow_up = episode.records["eie-score-1"]
    follow_up.entered_in_error = True
    result = m.evaluate(DRR, [episode], *PERIOD)
    assert counts(result, Group.FOLLOW_UP) == (1, 1, 0, 0, 0.0)


def test_cms159_remission_at_twelve_months_plus_minus_60_days():
    cohort = [
        ep("d304", [(0, 14), (304, 1)]),  # 365 - 61: too early
        ep("d305", [(0, 14), (305, 1)]),  # 365 - 60: in, 1 < 5 remission
        ep("d425", [(0, 14), (425, 6)]),  # 365 + 60: in, 6 not < 5
        ep("d426", [(0, 14), (426, 1)]),  # 365 + 61: too late
    ]
    result = m.evaluate(CMS159, cohort, *PERIOD)
    assert counts(result, Group.REMISSION) == (4, 4, 0, 1, 0.25)
    assert [o.follow_up is not None for o in result.outcomes] == [False, True, True, False]


def test_gad7_analogue():
    anxiety = [Indication(kind=IndicationKind.ANXIETY, icd10cm="F41.1")]
    cohort = [
        ep("a", [(0, 9), (150, 0)], instrument=Instrument.GAD7, indications=anxiety),  # 9 < 10: not elevated
        ep("b", [(0, 16), (150, 8)], instrument=Instrument.GAD7, indications=anxiety),  # 8 <= 8 response; not < 5
        ep("c", [(0, 12), (150, 4)], instrument=Instrument.GAD7, indications=anxiety),  # 4 < 5 and 4 <= 6: both
    ]
    result = m.evaluate(m.MEASURES["gad7-response-remission-4-8-months"], cohort, *PERIOD)
    assert counts(result, Group.RESPONSE) == (2, 2, 0, 2, 1.0)
    assert counts(result, Group.REMISSION) == (2, 2, 0, 1, 0.5)


def test_pcl5_analogue_uses_the_configured_cut_point_and_a_10_point_change():
    ptsd = [Indication(kind=IndicationKind.PTSD, icd10cm="F43.10")]
    cohort = [
        ep("x", [(0, 50), (150, 41)], instrument=Instrument.PCL5, indications=ptsd),  # drop 9: no response
        ep("y", [(0, 50), (150, 40)], instrument=Instrument.PCL5, indications=ptsd),  # drop 10: response; 40 >= 33
        ep("z", [(0, 34), (150, 30)], instrument=Instrument.PCL5, indications=ptsd),  # drop 4; 30 < 33 remission
        ep("w", [(0, 32), (150, 5)], instrument=Instrument.PCL5, indications=ptsd),  # 32 < 33: not elevated
    ]
    result = m.evaluate(m.MEASURES["pcl5-response-remission-4-8-months"], cohort, *PERIOD, pcl5_cut_point=33)
    assert counts(result, Group.RESPONSE) == (3, 3, 0, 1, round(1 / 3, 4))
    assert counts(result, Group.REMISSION) == (3, 3, 0, 1, round(1 / 3, 4))
    # With the cut-point at 31, w (32) is elevated too: 5 < 31 remission and a 27-point drop: response.
    # z: 30 < 31 still remission. Response 2/4, remission 2/4.
    lower = m.evaluate(m.MEASURES["pcl5-response-remission-4-8-months"], cohort, *PERIOD, pcl5_cut_point=31)
    assert counts(lower, Group.RESPONSE) == (4, 4, 0, 2, 0.5)
    assert counts(lower, Group.REMISSION) == (4, 4, 0, 2, 0.5)


def test_time_to_first_response_median_days_and_dosing_sessions():
    cohort = [
        # responds on day 14 (9 <= 10), after dosing sessions on days 1, 4, 8, 11 -> 4 sessions
        ep("fast", [(0, 20), (7, 15), (14, 9), (21, 4)], dosing_days=(1, 4, 8, 11, 15)),
        # responds on day 35 (8 <= 8), sessions up to then: days 1, 4, 8, 11, 15, 18 -> 6
        ep("slow", [(0, 16), (14, 12), (35, 8)], dosing_days=(1, 4, 8, 11, 15, 18)),
        # responds on day 60 (6 <= 7.5 of 15), sessions days 2, 30 and 59 -> 3
        ep("late", [(0, 15), (60, 6)], dosing_days=(2, 30, 59)),
        # never responds
        ep("none", [(0, 20), (30, 18)], dosing_days=(1, 2)),
    ]
    result = m.time_to_first_response(Instrument.PHQ9, cohort, *PERIOD)
    assert (result.episodes, result.responders) == (4, 3)
    assert sorted((r.episode_id, r.days, r.dosing_sessions) for r in result.first_responses) == [
        ("fast", 14, 4),
        ("late", 60, 3),
        ("slow", 35, 6),
    ]
    # medians of (14, 35, 60) and (4, 6, 3)
    assert (result.median_days, result.median_dosing_sessions) == (35, 4)


@pytest.mark.parametrize(
    ("index", "total", "response"), [(20, 10, True), (20, 11, False), (15, 7, True), (15, 8, False), (11, 5, True)]
)
def test_response_is_at_least_a_50_percent_drop(index, total, response):
    assert m.criteria(Instrument.PHQ9).is_response(index, total) is response
