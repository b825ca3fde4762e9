"""One unit of work per request: everything it writes commits together or not at all."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from service.adapters.database import SQLITE_WRITE_BEGIN, write_lock
from service.adapters.repository import Repository


class UnitOfWork:
    def __init__(self, session_factory: sessionmaker, clinic_id: str, *, write: bool) -> None:
        self._session_factory = session_factory
        self.clinic_id = clinic_id
        self.write = write
        self.session: Session
        self.repo: Repository

    def __enter__(self) -> UnitOfWork:
        self._stack = ExitStack()
        self._before_commit: dict[str, Callable[[], None]] = {}
        # (FHIR type, id) -> (version, changed) of what the follow-up work projected, for answers that name versions
        self.projected: dict[tuple[str, str], tuple[int, bool]] = {}
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
        finally:
            self.session.close()
            self._stack.close()

    def before_commit(self, key: str, action: Callable[[], None]) -> None:
        """Runs ``action`` once, just before the commit, however often it was asked for under ``key``: work that
        follows a change (the FHIR projection, the outbox) is done once per unit of work, not once per record."""
        self._before_commit[key] = action

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Part of the unit of work that can fail alone (a batch entry): on an error, its writes and the follow-up
        work it asked for are undone, and the error goes on to the caller."""
        pending = dict(self._before_commit)
        nested = self.session.begin_nested()
        try:
            yield
        except BaseException:
            nested.rollback()
            self._before_commit = pending
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
