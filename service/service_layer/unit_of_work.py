"""One unit of work per request: everything it writes commits together or not at all."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from service.adapters.database import SQLITE_WRITE_BEGIN, write_lock
from service.adapters.repository import Repository
from service.domain.episode import EpisodeEvent, FlagChanged, HeaderChanged, PhaseChanged, RecordChanged
from service.domain.model import Record

# (FHIR type, id) -> (version, changed): what a projection stored, for answers that name versions.
Projected = dict[tuple[str, str], tuple[int, bool]]


@dataclass
class EpisodeChanges:
    """What the commands of one unit of work changed in one episode, from the aggregate's events: the projection
    maps only that. ``full``: the context of every resource may have changed (a new episode, the patient, the
    indications, a REMS sending, ...), or the change is not known: map everything."""

    record_ids: set[str] = field(default_factory=set)
    previous: list[Record] = field(default_factory=list)  # the versions amended or marked records had before
    flag_ids: set[str] = field(default_factory=set)
    full: bool = False

    def add(self, events: Iterable[EpisodeEvent]) -> None:
        for event in events:
            if isinstance(event, RecordChanged):
                self.record_ids.add(event.record_id)
                if event.previous is not None:
                    self.previous.append(event.previous)
            elif isinstance(event, FlagChanged):
                self.flag_ids.add(event.flag_id)
            elif isinstance(event, PhaseChanged):
                pass  # the episode-level resources (always mapped) carry the phase
            elif isinstance(event, HeaderChanged):
                self.full = True  # security labels and references of every resource follow the header
            else:
                self.full = True  # not known here: be safe


class Projector(Protocol):
    """The read model that follows the commands (the FHIR projection). Injected by the app's wiring, so the use
    cases do not depend on it."""

    def project_episode(self, uow: UnitOfWork, episode_id: str, changes: EpisodeChanges, now: datetime) -> Projected:
        """Stores new versions of what ``changes`` affects, in the unit of work's transaction."""
        ...

    def project_patient_alone(self, uow: UnitOfWork, patient_id: str, now: datetime) -> None: ...

    def project_practitioner_alone(self, uow: UnitOfWork, practitioner_id: str, now: datetime) -> None: ...


_installed: Projector | None = None


def install_projector(projector: Projector | None) -> None:
    """The projector every unit of work uses unless given one (set once by the app's wiring)."""
    global _installed
    _installed = projector


class UnitOfWork:
    def __init__(
        self, session_factory: sessionmaker, clinic_id: str, *, write: bool, projector: Projector | None = None
    ) -> None:
        self._session_factory = session_factory
        self._projector = projector
        self.clinic_id = clinic_id
        self.write = write
        self.session: Session
        self.repo: Repository

    def __enter__(self) -> UnitOfWork:
        self._stack = ExitStack()
        self._before_commit: dict[str, Callable[[], None]] = {}
        # (FHIR type, id) -> (version, changed) of what the follow-up work projected, for answers that name versions
        self.projected: Projected = {}
        self._changes: dict[str, EpisodeChanges] = {}
        self._whole: set[str] = set()
        self.session = self._session_factory()
        engine = self.session.get_bind()
        if self.write and engine.dialect.name == "sqlite":
            self._stack.enter_context(write_lock(engine))  # type: ignore[arg-type]
            self.session.connection(execution_options={"sqlite_begin": SQLITE_WRITE_BEGIN})
        self.repo = Repository(self.session, self.clinic_id)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.session.rollback()  # no-op after commit; undoes everything otherwise
            if exc_type is None and not self.write:
                self.repo.publish_decoded()  # a reader decodes only what is committed
        finally:
            self.session.close()
            self._stack.close()

    def before_commit(self, key: str, action: Callable[[], None]) -> None:
        """Runs ``action`` once, just before the commit, however often it was asked for under ``key``: work that
        follows a change (the FHIR projection, the outbox) is done once per unit of work, not once per record."""
        self._before_commit[key] = action

    @property
    def projector(self) -> Projector:
        projector = self._projector or _installed
        if projector is None:
            raise RuntimeError("No projector: the app's wiring installs one (unit_of_work.install_projector).")
        return projector

    def note_changes(self, episode_id: str, events: Iterable[EpisodeEvent], *, full: bool = False) -> None:
        """Collects what a command changed in an episode, for the projection just before the commit."""
        changes = self._changes.setdefault(episode_id, EpisodeChanges())
        changes.add(events)
        changes.full = changes.full or full

    def project_whole(self, episode_id: str) -> None:
        """Every projection of the episode in this unit of work maps all of it: a caller answers for every
        resource of the episode from ``projected`` (a whole-episode Bundle)."""
        self._whole.add(episode_id)

    def project_episode(self, episode_id: str, now: datetime) -> Projected:
        """Projects what was collected for the episode (everything when nothing was: a caller that asks without
        saying what changed)."""
        changes = self._changes.pop(episode_id, None) or EpisodeChanges(full=True)
        changes.full = changes.full or episode_id in self._whole
        return self.projector.project_episode(self, episode_id, changes, now)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Part of the unit of work that can fail alone (a batch entry): on an error, its writes and the follow-up
        work it asked for are undone, and the error goes on to the caller."""
        pending = dict(self._before_commit)
        changes = copy.deepcopy(self._changes)
        nested = self.session.begin_nested()
        try:
            yield
        except BaseException:
            nested.rollback()
            self.repo.forget_unsaved()
            self._before_commit = pending
            self._changes = changes
            raise
        nested.commit()

    def run_pending(self) -> None:
        """Runs the follow-up work now, for a reader inside this unit of work that needs it current."""
        while self._before_commit:
            _, action = self._before_commit.popitem()
            action()

    def commit(self) -> None:
        self.run_pending()
        self.session.commit()
        self.repo.publish_decoded()
