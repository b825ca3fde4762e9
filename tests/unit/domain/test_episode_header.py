"""The episode header's own version: what the EpisodeOfCare and Conditions carry follows the header (status,
period, indications, care team, discontinuation reason), not every session written into the episode."""

from datetime import timedelta

from service.domain.episode import Episode
from service.domain.model import CareTeamMember
from service.domain.vocabulary import EpisodeStatus, Phase, PractitionerRole
from tests.support.builders import T0, dosing_session, trd

LATER = T0 + timedelta(days=1)


def fresh() -> Episode:
    return Episode(id="ep", patient_id="pt", indications=[trd()], period_start=T0, updated_at=T0)


def test_a_new_episode_and_one_stored_before_the_header_version_start_at_the_episode_version() -> None:
    assert (fresh().header_version, fresh().header_updated_at) == (1, T0)
    stored = Episode(id="ep", patient_id="pt", indications=[trd()], period_start=T0, version=7, updated_at=LATER)
    assert (stored.header_version, stored.header_updated_at) == (7, LATER)


def test_a_record_added_moves_the_episode_version_and_not_the_header_version() -> None:
    ep = fresh()
    ep.add(dosing_session("s1", T0 + timedelta(hours=1)), now=LATER)
    ep.saved_as(2, LATER)
    assert (ep.version, ep.updated_at) == (2, LATER)
    assert (ep.header_version, ep.header_updated_at) == (1, T0)


def test_a_phase_transition_that_keeps_status_and_period_keeps_the_header_version() -> None:
    ep = fresh()
    ep.transition(Phase.PREPARATION, at=T0 + timedelta(hours=1), actor="dr")
    ep.saved_as(2, LATER)
    assert ep.header_version == 1


def test_ending_the_episode_and_amending_the_header_move_the_header_version() -> None:
    ep = fresh()
    ep.transition(Phase.DISCONTINUED, at=T0 + timedelta(hours=1), actor="dr", reason="moved away")
    ep.saved_as(2, LATER)
    assert (ep.header_version, ep.header_updated_at) == (2, LATER)
    ep.saved_as(3, LATER + timedelta(hours=1))  # a later save without a header change
    assert ep.header_version == 2

    amended = fresh()
    team = [CareTeamMember(practitioner_id="dr-a", role=PractitionerRole.PRESCRIBER)]
    amended.amend_header(indications=amended.indications, care_team=team, status=EpisodeStatus.ACTIVE)
    amended.saved_as(2, LATER)
    assert amended.header_version == 2


def test_an_amendment_that_changes_nothing_keeps_the_header_version() -> None:
    ep = fresh()
    ep.amend_header(indications=list(ep.indications), care_team=list(ep.care_team), status=ep.status)
    ep.saved_as(2, LATER)
    assert ep.header_version == 1
