"""One unit of work per request: everything it writes commits together or not at all."""

from __future__ import annotations

from contextlib import ExitStack
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

    def commit(self) -> None:
        self.session.commit()
