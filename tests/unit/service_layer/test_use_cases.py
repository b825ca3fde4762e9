"""The use cases of service/service_layer/services.py on a fake unit of work (no database, no HTTP): what they store,
what they flag, what they refuse, and that a refused or failed command leaves nothing behind."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from service.domain.errors import Incoherent, NotFound, StaleVersion
from service.domain.model import DosingRecord, HumanName, Identifier, Patient, Practitioner
from service.domain.vocabulary import (
    AdministrativeGender,
    EpisodeStatus,
    FlagStatus,
    Phase,
    PractitionerRole,
    ReadingTiming,
)
from service.service_layer import services
from tests.support.builders import NOW, POLICY, T0, bp, consent, dosing_session, episode, iv_dose, trd, with_records
from tests.unit.service_layer.fakes import FakeRepository, FakeUnitOfWork

CTX = services.Context(actor="test-client", now=NOW, policy=POLICY)
PRE = T0 + timedelta(minutes=5)
NO_CONSENT = "dose-without-active-consent"


def prescriber(practitioner_id: str = "pr-1") -> Practitioner:
    return Practitioner(
        id=practitioner_id, name=HumanName(family="Okafor", given=["Nneka"]), roles=[PractitionerRole.PRESCRIBER]
    )


def stored_episode(*records: object) -> FakeUnitOfWork:
    """A unit of work whose repository holds episode ep-1 (patient pt-1, in the dosing phase) with ``records`` and a
    registered prescriber pr-1."""
    repo = FakeRepository()
    repo.add_practitioner(prescriber(), actor="seed", now=T0)
    repo.add_episode(with_records(episode(), *records), actor="seed", now=T0)
    return FakeUnitOfWork(repo)


def a_dosing_session() -> list[tuple[str, object]]:
    """A session with its pre-dose reading and dose, each with the place in the request a refusal would name."""
    return [
        ("", dosing_session()),
        ("monitoring_readings[0].", bp("r-pre", PRE, ReadingTiming.PRE_DOSE)),
        ("doses[0].", iv_dose(administered_by_id="pr-1")),
    ]


def record_session(uow: FakeUnitOfWork, records: list[tuple[str, object]]):
    with uow:
        stored, ep = services.add_records(uow, CTX, "ep-1", records)  # type: ignore[arg-type]
        uow.commit()
    return stored, ep


def test_an_episode_opened_through_the_use_cases_is_stored_in_the_phase_it_was_moved_to() -> None:
    uow = FakeUnitOfWork()
    with uow:
        services.register_practitioner(uow, CTX, prescriber())
        patient = services.register_patient(
            uow,
            CTX,
            Patient(
                id="pt-1",
                mrn=Identifier(system="https://clinic.example.org/mrn", value="SYN-1"),
                name=HumanName(family="Testperson", given=["Alex"]),
                birth_date=date(1984, 5, 17),
                gender=AdministrativeGender.OTHER,
            ),
        )
        opened = services.open_episode(
            uow,
            CTX,
            patient_id=patient.id,
            indications=[trd()],
            care_team=[],
            period_start=T0 - timedelta(days=30),
            status=EpisodeStatus.ACTIVE,
        )
        for to_phase in (Phase.PREPARATION, Phase.DOSING):
            services.transition_phase(
                uow, CTX, opened.id, to_phase=to_phase, at=None, reason=None, expected_version=None
            )
        uow.commit()
    stored = uow.repo.get_episode(opened.id)
    assert stored.patient_id == "pt-1" and stored.phase is Phase.DOSING
    assert stored.version == 3  # created, then one version per transition
    assert uow.recorder.practitioners_alone == ["pr-1"]  # served under /fhir from registration on
    assert [episode_id for episode_id, _ in uow.recorder.episodes] == [opened.id]  # projected once, at the commit


def test_recording_a_clean_dosing_session_stores_it_without_a_flag_and_projects_what_changed() -> None:
    uow = stored_episode(consent())
    stored, _ = record_session(uow, a_dosing_session())
    assert [r.id for r in stored] == ["s-1", "r-pre", "d-1"]
    ep = uow.repo.get_episode("ep-1")
    assert {"s-1", "r-pre", "d-1"} <= set(ep.records) and ep.version == 2
    assert ep.open_flags() == []
    ((episode_id, changes),) = uow.recorder.episodes
    assert episode_id == "ep-1" and changes.record_ids == {"s-1", "r-pre", "d-1"} and not changes.full
    assert uow.commits == 1


def test_a_dose_without_consent_is_stored_and_flagged_not_refused() -> None:
    uow = stored_episode()  # no treatment consent on file
    record_session(uow, a_dosing_session())
    ep = uow.repo.get_episode("ep-1")
    assert "d-1" in ep.records  # the dose is what happened: stored whatever the rule says
    (flag,) = ep.open_flags()
    assert flag.rule_id == NO_CONSENT and flag.record_ids == ["d-1"] and flag.raised_at == NOW
    ((_, changes),) = uow.recorder.episodes
    assert changes.flag_ids == {flag.id}  # the new flag goes out with the records


def test_acknowledging_a_flag_stores_who_acknowledged_it_and_when() -> None:
    uow = stored_episode(dosing_session(), bp("r-pre", PRE, ReadingTiming.PRE_DOSE), iv_dose())
    uow.repo.episodes["ep-1"].evaluate_safety(POLICY, now=NOW)
    (flag,) = uow.repo.episodes["ep-1"].open_flags()
    with uow:
        services.acknowledge_flag(uow, CTX, "ep-1", flag.id, by="pr-1", comment="Consent signed on paper; scanning.")
        uow.commit()
    (stored,) = uow.repo.get_episode("ep-1").flags
    assert stored.status is FlagStatus.ACKNOWLEDGED
    assert (stored.acknowledgement.by, stored.acknowledgement.at) == ("pr-1", NOW)
    assert stored.acknowledgement.comment == "Consent signed on paper; scanning."


def test_a_flag_acknowledged_by_someone_not_registered_is_refused_and_stays_open() -> None:
    uow = stored_episode(dosing_session(), bp("r-pre", PRE, ReadingTiming.PRE_DOSE), iv_dose())
    uow.repo.episodes["ep-1"].evaluate_safety(POLICY, now=NOW)
    (flag,) = uow.repo.episodes["ep-1"].open_flags()
    with pytest.raises(Incoherent) as refused, uow:
        services.acknowledge_flag(uow, CTX, "ep-1", flag.id, by="pr-unknown", comment=None)
        uow.commit()
    assert [e.field for e in refused.value.field_errors] == ["by"]
    assert [f.status for f in uow.repo.get_episode("ep-1").flags] == [FlagStatus.OPEN]
    assert uow.commits == 0


def test_a_dose_marked_entered_in_error_no_longer_raises_its_flag() -> None:
    uow = stored_episode()
    record_session(uow, a_dosing_session())
    assert [f.rule_id for f in uow.repo.get_episode("ep-1").open_flags()] == [NO_CONSENT]
    with uow:
        marked = services.mark_entered_in_error(
            uow, CTX, "ep-1", DosingRecord, "d-1", reason="charted on the wrong patient", expected_version=1
        )
        uow.commit()
    assert marked.entered_in_error and marked.version == 2
    ep = uow.repo.get_episode("ep-1")
    assert ep.records["d-1"].entered_in_error  # kept, marked: the record says what was once charted
    assert ep.open_flags() == [] and [f.status for f in ep.flags] == [FlagStatus.RESOLVED]


def test_a_dose_given_by_an_unregistered_practitioner_is_refused_naming_its_place_and_nothing_is_stored() -> None:
    uow = stored_episode(consent())
    records = a_dosing_session()
    records[2] = ("doses[0].", iv_dose(administered_by_id="pr-nobody"))
    with pytest.raises(Incoherent) as refused:
        record_session(uow, records)
    assert [e.field for e in refused.value.field_errors] == ["doses[0].administered_by_id"]
    ep = uow.repo.get_episode("ep-1")
    assert set(ep.records) == {"consent-1"} and ep.version == 1  # the session and reading went with the dose
    assert uow.recorder.episodes == [] and uow.commits == 0


def test_a_dose_ending_before_it_starts_is_refused() -> None:
    uow = stored_episode(consent())
    records = a_dosing_session()
    records[2] = ("doses[0].", iv_dose(end=T0))  # starts at T0 + 15 min
    with pytest.raises(Incoherent) as refused:
        record_session(uow, records)
    assert [e.field for e in refused.value.field_errors] == ["doses[0].end"]
    assert set(uow.repo.get_episode("ep-1").records) == {"consent-1"}


def test_a_unit_of_work_left_without_a_commit_keeps_nothing_of_what_its_commands_did() -> None:
    uow = stored_episode(consent())
    with pytest.raises(RuntimeError), uow:
        services.add_records(uow, CTX, "ep-1", a_dosing_session())  # type: ignore[arg-type]
        raise RuntimeError("the response could not be written")  # after the use case, before the commit
    ep = uow.repo.get_episode("ep-1")
    assert set(ep.records) == {"consent-1"} and ep.version == 1
    assert uow.recorder.episodes == []  # the follow-up work runs at the commit only


def test_a_change_made_on_a_stale_version_is_refused() -> None:
    uow = stored_episode()
    with pytest.raises(StaleVersion), uow:
        services.transition_phase(
            uow, CTX, "ep-1", to_phase=Phase.MAINTENANCE, at=None, reason=None, expected_version=7
        )
    assert uow.repo.get_episode("ep-1").phase is Phase.DOSING


def test_an_episode_for_a_patient_not_registered_is_refused_naming_the_patient() -> None:
    uow = FakeUnitOfWork()
    with pytest.raises(Incoherent) as refused, uow:
        services.open_episode(
            uow,
            CTX,
            patient_id="pt-nobody",
            indications=[trd()],
            care_team=[],
            period_start=T0,
            status=EpisodeStatus.ACTIVE,
        )
    assert [e.field for e in refused.value.field_errors] == ["patient_id"]
    with pytest.raises(NotFound):
        uow.repo.get_episode("ep-1")
    assert uow.repo.episodes == {}
