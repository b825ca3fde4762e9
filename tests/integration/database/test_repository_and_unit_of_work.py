"""The repository and the unit of work on SQLite and on PostgreSQL: an aggregate added comes back the same in another
unit of work, a unit of work that fails or does not commit leaves nothing (neither the rows of the change nor its
FHIR projection nor its outbox job), the optimistic version check holds, and the aggregate's events decide what the
projection maps."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import sessionmaker

from service.adapters import orm, repository
from service.adapters.database import make_engine, make_session_factory
from service.adapters.fhir_store import fhir_resources
from service.config import Settings
from service.domain.errors import Conflict, NotFound
from service.domain.model import HealthcareSetting, HumanName, Identifier, MonitoringReading, Patient, Practitioner
from service.domain.vocabulary import AdministrativeGender, ReadingTiming
from service.entrypoints.cli import prepare_database
from service.fhir.projector import FhirProjector
from service.security.settings import SecuritySettings
from service.service_layer import services
from service.service_layer.unit_of_work import EpisodeChanges, Projected, UnitOfWork
from tests.support.builders import NOW, POLICY, T0, bp, consent, dosing_session, episode, iv_dose

CLINIC = "demo"  # the default clinic prepare_database registers
PRE = T0.replace(minute=5)


class RecordingProjector(FhirProjector):
    """The real FHIR projection, noting what each unit of work asked it to map."""

    def __init__(self) -> None:
        self.asked: list[EpisodeChanges] = []

    def project_episode(self, uow: UnitOfWork, episode_id: str, changes: EpisodeChanges, now) -> Projected:  # type: ignore[no-untyped-def]
        self.asked.append(changes)
        return super().project_episode(uow, episode_id, changes, now)


@pytest.fixture
def session_factory(database_url: str, tmp_path: Path) -> Iterator[sessionmaker]:
    prepare_database(
        Settings(database_url=database_url, security=SecuritySettings(signing_key_file=str(tmp_path / "key.pem")))
    )
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def projector() -> RecordingProjector:
    return RecordingProjector()


def patient() -> Patient:
    return Patient(
        id="pt-1",
        mrn=Identifier(system="https://clinic.example.org/mrn", value="SYN-REPO-1"),
        name=HumanName(family="Testperson", given=["Alex"]),
        birth_date=date(1984, 5, 17),
        gender=AdministrativeGender.OTHER,
    )


def stored_episode(session_factory: sessionmaker, projector: RecordingProjector) -> None:
    """Patient pt-1 and episode ep-1 (dosing phase) with a treatment consent, committed."""
    with UnitOfWork(session_factory, CLINIC, write=True, projector=projector) as uow:
        uow.repo.add_patient(patient(), actor="test", now=T0)
        ep = episode()
        uow.repo.add_episode(ep, actor="test", now=T0)
        ep.add(consent(), now=NOW)
        uow.repo.save_episode(ep, expected_version=ep.version, actor="test", now=NOW)
        uow.commit()


def count(session_factory: sessionmaker, table, **where: str) -> int:  # type: ignore[no-untyped-def]
    with session_factory() as session:
        query = select(func.count()).select_from(table)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        return session.execute(query).scalar_one()


def a_session() -> list[tuple[str, object]]:
    return [
        ("", dosing_session()),
        ("monitoring_readings[0].", bp("r-pre", PRE, ReadingTiming.PRE_DOSE)),
        ("doses[0].", iv_dose()),
    ]


def test_an_aggregate_added_comes_back_the_same_in_another_unit_of_work(session_factory, projector) -> None:
    stored_episode(session_factory, projector)
    with UnitOfWork(session_factory, CLINIC, write=False, projector=projector) as uow:
        assert uow.repo.get_patient("pt-1") == replace(patient(), recorded_at=T0, updated_at=T0)  # stamped when added
        ep = uow.repo.get_episode("ep-1")
    built = episode()
    assert (ep.id, ep.patient_id, ep.phase, ep.indications) == (
        built.id,
        built.patient_id,
        built.phase,
        built.indications,
    )
    assert ep.records == {"consent-1": consent(recorded_at=NOW, updated_at=NOW)}
    assert ep.version == 2


def test_practitioners_are_found_only_in_their_clinic(session_factory, projector) -> None:
    with UnitOfWork(session_factory, CLINIC, write=True, projector=projector) as uow:
        for pid in ("pr-b", "pr-a"):
            uow.repo.add_practitioner(Practitioner(id=pid, name=HumanName(family=pid)), actor="test", now=T0)
        uow.commit()
    with UnitOfWork(session_factory, CLINIC, write=False, projector=projector) as uow:
        assert uow.repo.get_practitioner("pr-a").name == HumanName(family="pr-a")
        assert uow.repo.missing_practitioners({"pr-a", "pr-b", "pr-x"}) == {"pr-x"}
        with pytest.raises(NotFound, match="pr-x"):
            uow.repo.get_practitioner("pr-x")
    with UnitOfWork(session_factory, "other-clinic", write=False, projector=projector) as uow:
        assert uow.repo.missing_practitioners({"pr-a", "pr-b"}) == {"pr-a", "pr-b"}
        with pytest.raises(NotFound):
            uow.repo.get_practitioner("pr-a")


def test_a_unit_of_work_reads_the_clinic_and_each_practitioner_once_and_forgets_what_a_savepoint_undid(
    session_factory, projector
) -> None:
    with UnitOfWork(session_factory, CLINIC, write=True, projector=projector) as uow:
        uow.repo.add_practitioner(Practitioner(id="pr-a", name=HumanName(family="A")), actor="test", now=T0)
        uow.commit()
    statements: list[str] = []

    def note(_conn, _cursor, statement, *_rest) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    with UnitOfWork(session_factory, CLINIC, write=True, projector=projector) as uow:
        event.listen(uow.session.get_bind(), "before_cursor_execute", note)
        try:
            for _ in range(3):
                assert uow.repo.missing_practitioners({"pr-a", "pr-x"}) == {"pr-x"}
                uow.repo.get_clinic()
                uow.repo.rems_ledger("ep-none")
            asked = [s for s in statements if "FROM practitioners" in s or "FROM clinics" in s]
            assert len(asked) == 1 + 3 + 1, asked  # pr-a once, pr-x (absent) each time, the clinic once
            uow.repo.update_clinic_setting(time_zone="America/Denver", setting=HealthcareSetting(city="Denver"))
            assert uow.repo.get_clinic().time_zone == "America/Denver"  # a change in this unit of work is seen
            assert uow.repo.rems_ledger("ep-none").time_zone == "America/Denver"
            with pytest.raises(RuntimeError), uow.savepoint():
                uow.repo.add_practitioner(Practitioner(id="pr-x", name=HumanName(family="X")), actor="t", now=T0)
                assert uow.repo.missing_practitioners({"pr-x"}) == set()
                raise RuntimeError("the entry fails")
            assert uow.repo.missing_practitioners({"pr-x"}) == {"pr-x"}  # undone with its savepoint
        finally:
            event.remove(uow.session.get_bind(), "before_cursor_execute", note)


def test_another_clinic_does_not_see_the_aggregate(session_factory, projector) -> None:
    stored_episode(session_factory, projector)
    with UnitOfWork(session_factory, "another-clinic", write=False, projector=projector) as uow:
        with pytest.raises(NotFound):
            uow.repo.get_episode("ep-1")
        with pytest.raises(NotFound):
            uow.repo.get_patient("pt-1")


@pytest.mark.parametrize("how", ["an error", "no commit"])
def test_a_unit_of_work_that_does_not_commit_leaves_nothing(session_factory, projector, how: str) -> None:
    stored_episode(session_factory, projector)
    ctx = services.Context(actor="test", now=NOW, policy=POLICY, sync_targets=("ehr",))
    resources_before = count(session_factory, fhir_resources)
    with pytest.raises(RuntimeError) if how == "an error" else contextlib.nullcontext():
        with UnitOfWork(session_factory, CLINIC, write=True, projector=projector) as uow:
            services.add_records(uow, ctx, "ep-1", a_session())  # type: ignore[arg-type]
            uow.run_pending()  # the projection and the outbox job are written in this transaction too
            assert count_in(uow, orm.sync_jobs) == 1
            if how == "an error":
                raise RuntimeError("the response could not be written")
    assert count(session_factory, orm.clinical_records, episode_id="ep-1") == 1  # the consent alone
    assert count(session_factory, orm.sync_jobs) == 0
    assert count(session_factory, fhir_resources) == resources_before
    with UnitOfWork(session_factory, CLINIC, write=False, projector=projector) as uow:
        assert uow.repo.get_episode("ep-1").version == 2


def test_a_committed_change_keeps_its_rows_its_projection_and_its_outbox_job(session_factory, projector) -> None:
    stored_episode(session_factory, projector)
    ctx = services.Context(actor="test", now=NOW, policy=POLICY, sync_targets=("ehr",))
    with UnitOfWork(session_factory, CLINIC, write=True, projector=projector) as uow:
        services.add_records(uow, ctx, "ep-1", a_session())  # type: ignore[arg-type]
        uow.commit()
    assert count(session_factory, orm.clinical_records, episode_id="ep-1") == 4
    assert count(session_factory, orm.sync_jobs, episode_id="ep-1", target="ehr") == 1
    assert count(session_factory, fhir_resources, resource_type="MedicationAdministration") == 1


def test_a_save_on_a_stale_version_is_refused(session_factory, projector) -> None:
    stored_episode(session_factory, projector)
    with UnitOfWork(session_factory, CLINIC, write=True, projector=projector) as uow:
        ep = uow.repo.get_episode("ep-1", for_update=True)
        ep.add(dosing_session(), now=NOW)
        with pytest.raises(Conflict):
            uow.repo.save_episode(ep, expected_version=ep.version - 1, actor="test", now=NOW)


def test_the_events_of_the_aggregate_decide_what_the_projection_maps(session_factory, projector) -> None:
    stored_episode(session_factory, projector)
    projector.asked.clear()
    ctx = services.Context(actor="test", now=NOW, policy=POLICY)
    with UnitOfWork(session_factory, CLINIC, write=True, projector=projector) as uow:
        services.add_records(uow, ctx, "ep-1", a_session())  # type: ignore[arg-type]
        services.add_records(uow, ctx, "ep-1", [("", dosing_session("s-2", start=T0.replace(day=3)))])
        uow.commit()
    (changes,) = projector.asked  # two commands, one projection at the commit
    assert changes.record_ids == {"s-1", "r-pre", "d-1", "s-2"} and not changes.full
    assert uow.projected  # the versions it stored, for answers that name them


def count_in(uow: UnitOfWork, table) -> int:  # type: ignore[no-untyped-def]
    return uow.session.execute(select(func.count()).select_from(table)).scalar_one()


# --- records decoded once per process (repository.DECODED) ------------------------------------------------------


def _shared(session_factory: sessionmaker) -> set[tuple[str, int]]:
    """(record id, version) of this database's records the process holds decoded."""
    store = str(session_factory.kw["bind"].url)
    with repository.DECODED._lock:
        held = dict(repository.DECODED._records or {})
    return {(rid, version) for (db, _clinic, rid, version) in held if db == store}


def test_records_are_shared_only_once_their_unit_of_work_committed(session_factory, projector) -> None:
    repository.DECODED.resize(1000)
    stored_episode(session_factory, projector)
    assert ("consent-1", 1) in _shared(session_factory)  # written and committed
    ctx = services.Context(actor="test", now=NOW, policy=POLICY)
    with pytest.raises(RuntimeError), UnitOfWork(session_factory, CLINIC, write=True, projector=projector) as uow:
        services.add_records(uow, ctx, "ep-1", a_session())  # type: ignore[arg-type]
        uow.run_pending()  # the projection reads the aggregate back, as a commit would
        raise RuntimeError("the request fails before its commit")
    assert not {rid for rid, _ in _shared(session_factory)} & {"s-1", "r-pre", "d-1"}  # never stored: not shared
    with UnitOfWork(session_factory, CLINIC, write=True, projector=projector) as uow:
        services.add_records(uow, ctx, "ep-1", a_session())  # type: ignore[arg-type]
        uow.commit()
    shared = _shared(session_factory)
    with UnitOfWork(session_factory, CLINIC, write=False, projector=projector) as uow:
        stored = {(r.id, r.version): r for r in uow.repo.get_episode("ep-1").records.values()}
    assert set(stored) <= shared  # every record of the episode is held, at the version stored
    repository.DECODED.clear()
    with UnitOfWork(session_factory, CLINIC, write=False, projector=projector) as uow:
        decoded_again = {(r.id, r.version): r for r in uow.repo.get_episode("ep-1").records.values()}
    assert decoded_again == stored  # what was shared equals what the rows decode to


def _shared_episode_with_a_session(session_factory: sessionmaker, projector: RecordingProjector) -> services.Context:
    """The stored episode with a session written into it, its records shared by the process. -> the command context"""
    repository.DECODED.resize(1000)
    stored_episode(session_factory, projector)
    ctx = services.Context(actor="test", now=NOW, policy=POLICY)
    with UnitOfWork(session_factory, CLINIC, write=True, projector=projector) as uow:
        services.add_records(uow, ctx, "ep-1", a_session())  # type: ignore[arg-type]
        uow.commit()
    return ctx


def test_an_amended_record_is_a_new_version_and_the_shared_one_stays_as_it_was(session_factory, projector) -> None:
    ctx = _shared_episode_with_a_session(session_factory, projector)
    with UnitOfWork(session_factory, CLINIC, write=False, projector=projector) as uow:
        before = uow.repo.get_episode("ep-1").records["r-pre"]
    snapshot = replace(before)
    with UnitOfWork(session_factory, CLINIC, write=True, projector=projector) as uow:
        services.mark_entered_in_error(
            uow, ctx, "ep-1", MonitoringReading, "r-pre", reason="wrong", expected_version=None
        )
        uow.commit()
    assert before == snapshot and not before.entered_in_error  # the shared object was not changed in place
    with UnitOfWork(session_factory, CLINIC, write=False, projector=projector) as uow:
        after = uow.repo.get_episode("ep-1").records["r-pre"]
    assert after.entered_in_error and after.version == before.version + 1


def test_the_process_holds_the_composition_of_the_latest_version_of_an_episode_only(session_factory, projector) -> None:
    # each composition lists every record of its episode: one per version held filled memory as episodes grew
    ctx = _shared_episode_with_a_session(session_factory, projector)
    store = str(session_factory.kw["bind"].url)
    with UnitOfWork(session_factory, CLINIC, write=False, projector=projector) as uow:
        before = uow.repo.get_episode("ep-1").version
    with UnitOfWork(session_factory, CLINIC, write=True, projector=projector) as uow:
        services.mark_entered_in_error(
            uow, ctx, "ep-1", MonitoringReading, "r-pre", reason="wrong", expected_version=None
        )
        uow.commit()
    with UnitOfWork(session_factory, CLINIC, write=False, projector=projector) as uow:
        latest = uow.repo.get_episode("ep-1")
    assert latest.version > before
    with repository.DECODED._lock:
        held = [key for key in repository.DECODED._compositions if key[:3] == (store, CLINIC, "ep-1")]
    assert len(held) == 1
    version, records = repository.DECODED.composition(store, CLINIC, "ep-1") or (None, None)
    assert version != before
    assert (version, records) == (latest.version, latest.records)


def test_with_no_shared_records_every_unit_of_work_decodes_its_own(session_factory, projector) -> None:
    repository.DECODED.resize(0)
    try:
        stored_episode(session_factory, projector)
        assert _shared(session_factory) == set() and len(repository.DECODED) == 0
        with UnitOfWork(session_factory, CLINIC, write=False, projector=projector) as uow:
            assert uow.repo.get_episode("ep-1").records == {"consent-1": consent(recorded_at=NOW, updated_at=NOW)}
    finally:
        repository.DECODED.resize(10_000)


def test_an_episode_version_the_process_holds_is_read_without_its_records_rows(session_factory, projector) -> None:
    """Once a write committed, the next command on that episode version reads no clinical_records row; a version it
    does not hold (the table changed under another process) is read from the table."""
    from sqlalchemy import event, update

    _shared_episode_with_a_session(session_factory, projector)
    engine = session_factory.kw["bind"]
    statements: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        with UnitOfWork(session_factory, CLINIC, write=False, projector=projector) as uow:
            held = uow.repo.get_episode("ep-1")
        assert not [s for s in statements if "FROM clinical_records" in s]
        assert set(held.records) == {"consent-1", "s-1", "r-pre", "d-1"}
        with session_factory() as session:  # another process bumps the episode (its records with it)
            session.execute(update(orm.episodes).where(orm.episodes.c.id == "ep-1").values(version=99))
            session.commit()
        statements.clear()
        with UnitOfWork(session_factory, CLINIC, write=False, projector=projector) as uow:
            again = uow.repo.get_episode("ep-1")
        assert [s for s in statements if "FROM clinical_records" in s]
        assert again.records == held.records
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def test_an_episode_another_process_wrote_takes_its_unchanged_records_from_the_earlier_composition(
    session_factory, projector
) -> None:
    """The process holds version n of the episode; another process amended a record and added one (version n+1):
    the changed and new records come from the table, at their stored versions, the others from what was held."""
    ctx = _shared_episode_with_a_session(session_factory, projector)
    store = str(session_factory.kw["bind"].url)
    held = repository.DECODED.composition(store, CLINIC, "ep-1")
    assert held is not None
    with UnitOfWork(session_factory, CLINIC, write=True, projector=projector) as uow:
        services.mark_entered_in_error(
            uow, ctx, "ep-1", MonitoringReading, "r-pre", reason="wrong", expected_version=None
        )
        services.add_records(uow, ctx, "ep-1", [("", bp("r-post", PRE + timedelta(hours=1), ReadingTiming.POST_DOSE))])
        uow.commit()
    # as in a process that did not see that write: only version n held, none of the records written since
    repository.DECODED.clear()
    with repository.DECODED._lock:
        repository.DECODED._compositions[(store, CLINIC, "ep-1")] = held
    with UnitOfWork(session_factory, CLINIC, write=False, projector=projector) as uow:
        records = uow.repo.get_episode("ep-1").records
    assert records["r-pre"].entered_in_error and records["r-pre"].version == held[1]["r-pre"].version + 1
    assert records["r-post"].timing is ReadingTiming.POST_DOSE
    assert all(records[rid] is held[1][rid] for rid in ("consent-1", "s-1", "d-1"))
    repository.DECODED.clear()
    with UnitOfWork(session_factory, CLINIC, write=False, projector=projector) as uow:
        assert uow.repo.get_episode("ep-1").records == records  # what the rows alone give


def test_compositions_are_held_up_to_as_many_records_as_the_process_may_hold() -> None:
    held = repository.DecodedRecords(max_records=5)
    four = {f"r-{i}": consent(id=f"r-{i}") for i in range(4)}
    held.add("db", CLINIC, list(four.values()), {("ep-1", 1): four})
    assert held.composition("db", CLINIC, "ep-1") == (1, four)
    held.add("db", CLINIC, [], {("ep-2", 1): {"r-9": consent(id="r-9")}, ("ep-1", 2): {**four, "r-4": consent()}})
    assert held.composition("db", CLINIC, "ep-1") == (2, {**four, "r-4": consent()})  # 5: ep-2's went (least recent)
    assert held.composition("db", CLINIC, "ep-2") is None
    six = {f"s-{i}": consent(id=f"s-{i}") for i in range(6)}
    held.add("db", CLINIC, [], {("ep-1", 3): six})  # more than may be held at all
    assert held.composition("db", CLINIC, "ep-1") is None
