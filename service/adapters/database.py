"""Engine set-up for the embedded SQLite default and for PostgreSQL."""

from __future__ import annotations

import fcntl
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_WRITE_BEGIN = "BEGIN IMMEDIATE"
_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, WriterLock] = weakref.WeakKeyDictionary()


def make_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # Durable commits: a 2xx answer is never rolled back by a crash (the server default, made explicit so that
        # a database configured otherwise does not weaken it for kapfhir).
        connect_args = {"options": "-c synchronous_commit=on"} if parsed.get_backend_name() == "postgresql" else {}
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
    if parsed.database and parsed.database != ":memory:":
        _WRITE_LOCKS[engine] = WriterLock(Path(parsed.database).with_suffix(".write-lock"))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from pysqlite, so that writers can BEGIN IMMEDIATE: a write request holds
        # the write lock from its first statement and concurrent writers queue (busy_timeout) instead of failing
        # halfway with "database is locked" on lock upgrade.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        # FULL: a commit is on disk before it is answered (NORMAL in WAL mode may lose the last commits on power loss)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(connection.get_execution_options().get("sqlite_begin", "BEGIN"))

    return engine


def make_session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(bind=engine, expire_on_commit=False)


class WriterLock:
    """Serialises SQLite writers of all threads and processes on one database.

    SQLite allows one writer at a time and makes the others poll with growing sleeps (up to 100 ms) on a busy
    database. Queueing writers on a thread lock plus an flock() on a lock file instead wakes the next writer the
    moment the previous one commits, which keeps tail latency of short writes (such as read audits) low.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._pid: int | None = None

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked worker opens its own description
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            fd = self._descriptor()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def write_lock(engine: Engine) -> Iterator[None]:
    """The SQLite writer lock of an engine; nothing for PostgreSQL (its row locks do the work)."""
    lock = _WRITE_LOCKS.get(engine)
    if lock is None:
        yield
        return
    with lock.held():
        yield


def bulk_insert(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Inserts ``rows`` (dicts with every column of the table) into ``table`` in the session's transaction.

    PostgreSQL with psycopg: one COPY. The driver's executemany sends and parses one statement per row in Python
    (~20 ms of CPU for the ~1,000 search-index rows of one ingested episode; COPY ~4 ms). Values go through each
    column type's bind processing, as an INSERT's would, and a refused value raises the same SQLAlchemy error
    (``DataError`` for a value too long). Elsewhere: an executemany INSERT."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        session.execute(insert(table), rows)
        return
    names = [column.name for column in table.columns]
    processors = [column.type.bind_processor(dialect) for column in table.columns]
    quote = dialect.identifier_preparer
    statement = f"COPY {quote.format_table(table)} ({', '.join(map(quote.quote, names))}) FROM STDIN"
    try:
        with connection.connection.driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                values = (row[name] for name in names)
                copy.write_row([v if p is None else p(v) for v, p in zip(values, processors, strict=True)])
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(
            statement, None, exc, dialect.loaded_dbapi.Error, hide_parameters=True, dialect=dialect
        ) from exc


def upsert_insert(session: Any) -> Any:
    """The dialect's INSERT that supports ``on_conflict_do_*`` (PostgreSQL and SQLite both have one)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
