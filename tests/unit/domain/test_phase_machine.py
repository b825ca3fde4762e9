from datetime import timedelta

import pytest

from service.domain.episode import Episode, allowed_next
from service.domain.errors import Incoherent, TransitionRefused
from service.domain.vocabulary import EpisodeStatus, Phase
from tests.support.builders import T0, dosing_session, episode, trd, with_records


def fresh() -> Episode:
    return Episode(id="ep", patient_id="pt", indications=[trd()], period_start=T0)


def test_the_whole_course_with_a_second_dosing_block_reaches_completed():
    ep = fresh()
    for hours, phase in enumerate(
        [
            Phase.PREPARATION,
            Phase.DOSING,
            Phase.INTEGRATION,
            Phase.DOSING,
            Phase.INTEGRATION,
            Phase.MAINTENANCE,
            Phase.COMPLETED,
        ],
        start=1,
    ):
        ep.transition(phase, at=T0 + timedelta(hours=hours), actor="dr")
    assert ep.phase is Phase.COMPLETED
    assert [t.to_phase for t in ep.phase_history][-1] is Phase.COMPLETED
    assert ep.period_end == T0 + timedelta(hours=7)


def test_a_refused_transition_names_the_current_phase_and_the_allowed_ones():
    ep = fresh()
    with pytest.raises(TransitionRefused) as refused:
        ep.transition(Phase.DOSING, at=T0, actor="dr")
    assert refused.value.current == "assessment"
    assert refused.value.allowed == ["preparation", "discontinued"]
    assert "assessment" in refused.value.detail and "preparation" in refused.value.detail
    assert ep.phase is Phase.ASSESSMENT and ep.phase_history == []


@pytest.mark.parametrize("phase", [p for p in Phase if p not in (Phase.COMPLETED, Phase.DISCONTINUED)])
def test_discontinued_is_reachable_from_every_open_phase(phase):
    assert Phase.DISCONTINUED in allowed_next(phase)


def test_nothing_follows_an_ended_episode():
    assert allowed_next(Phase.COMPLETED) == [] and allowed_next(Phase.DISCONTINUED) == []


def test_discontinuation_needs_a_reason_and_keeps_it():
    ep = fresh()
    with pytest.raises(Incoherent):
        ep.transition(Phase.DISCONTINUED, at=T0, actor="dr")
    ep.transition(Phase.DISCONTINUED, at=T0, actor="dr", reason="patient moved away")
    assert ep.discontinuation_reason == "patient moved away"
    # Nothing took place: the episode is cancelled rather than finished.
    assert ep.status is EpisodeStatus.CANCELLED


def test_discontinuing_after_sessions_took_place_finishes_the_episode():
    ep = with_records(episode(), dosing_session())
    ep.transition(Phase.DISCONTINUED, at=T0 + timedelta(days=1), actor="dr", reason="adverse reaction")
    assert ep.status is EpisodeStatus.FINISHED


def test_each_transition_is_kept_with_time_and_actor():
    ep = fresh()
    transition = ep.transition(Phase.PREPARATION, at=T0 + timedelta(hours=1), actor="client-7")
    assert (transition.from_phase, transition.to_phase, transition.actor) == (
        Phase.ASSESSMENT,
        Phase.PREPARATION,
        "client-7",
    )


def test_transitions_must_follow_clinical_order():
    ep = fresh()
    ep.transition(Phase.PREPARATION, at=T0 + timedelta(hours=2), actor="dr")
    with pytest.raises(Incoherent):
        ep.transition(Phase.DOSING, at=T0 + timedelta(hours=1), actor="dr")


def test_phase_at_reads_the_history_not_the_current_phase():
    ep = episode(in_dosing_from=T0)
    assert ep.phase_at(T0 - timedelta(days=10)) is Phase.ASSESSMENT
    assert ep.phase_at(T0 - timedelta(days=3)) is Phase.PREPARATION
    assert ep.phase_at(T0) is Phase.DOSING
