"""Engine set-up for the embedded SQLite default and for PostgreSQL."""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import sqlite3
import threading
import time
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
log = logging.getLogger("kapfhir.database")


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
    checkpointer = None
    if parsed.database and parsed.database != ":memory:":
        lock = _WRITE_LOCKS[engine] = WriterLock(Path(parsed.database).with_suffix(".write-lock"))
        checkpointer = WalCheckpointer(parsed.database, lock)
        event.listen(engine, "commit", lambda _connection: checkpointer.commit_done())

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
        if checkpointer is not None:
            # The WalCheckpointer copies the WAL into the database beside the writers; a commit checkpoints only
            # if the WAL grew this long anyway (the checkpointer could not keep up).
            cursor.execute(f"PRAGMA wal_autocheckpoint={WalCheckpointer.WRITER_CHECKPOINTS_AFTER}")
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


class WalCheckpointer:
    """Copies a SQLite database's write-ahead log into the database file beside the writers, not in their commits.

    SQLite checkpoints the WAL inside the commit that makes it 1,000 frames long, with the write lock held: one
    session write in ~15 took ~5 ms longer (copying the WAL's pages into the file and syncing both), and every writer
    queued behind it waited as long. Here a commit only marks its database as due, and one thread per process runs a
    PASSIVE checkpoint (which waits for no reader or writer) on a connection of its own soon after. Commits are as
    durable as before: each is synced in the WAL before it is answered, whoever copies it later."""

    WRITER_CHECKPOINTS_AFTER = 10_000  # frames (~40 MB): a commit checkpoints as before if this thread falls behind
    RESTART_AFTER = 4_000  # frames (~16 MB): about the longest the WAL grows
    DELAY = 0.05  # seconds after a commit: the commits of one busy moment are copied by one checkpoint

    def __init__(self, database: str, lock: WriterLock) -> None:
        self.database = database
        self.lock = lock
        self._connection: sqlite3.Connection | None = None
        self._pid: int | None = None

    def commit_done(self) -> None:
        _checkpoints.due(self)

    def checkpoint(self) -> None:
        if self._connection is None or self._pid != os.getpid():
            # mode=rw: a database removed meanwhile is not created again, empty
            uri = f"{Path(self.database).resolve().as_uri()}?mode=rw"
            self._connection = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            self._connection.execute("PRAGMA synchronous=FULL")
            self._pid = os.getpid()
            weakref.finalize(self, _close_in_process, self._connection, self._pid)
        _, frames, _ = self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames >= self.RESTART_AFTER:
            # A writer starts the WAL over only if it finds all of it copied, which under steady writes it never
            # does after a checkpoint beside them: copy the last few frames with the writers held off, and the next
            # writer starts it over.
            with self.lock.held():
                self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()


def _close_in_process(connection: sqlite3.Connection, pid: int) -> None:
    # A connection inherited by a forked process is left alone there: SQLite forbids using it across fork, and
    # closing it would drop that process's own POSIX locks on the database file.
    if os.getpid() == pid:
        connection.close()


class _CheckpointThread:
    """The one thread of a process that runs the checkpoints of its databases (started at the first commit)."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._due: set[WalCheckpointer] = set()
        self._started = False
        # Held while the thread is inside SQLite: a fork waits for it (see _before_fork)
        self.checkpointing = threading.Lock()

    def due(self, checkpointer: WalCheckpointer) -> None:
        with self._wake:
            self._due.add(checkpointer)
            if not self._started:
                self._started = True
                threading.Thread(target=self._run_forever, name="sqlite-wal-checkpoints", daemon=True).start()
            self._wake.notify()

    def _run_forever(self) -> None:
        while True:
            with self._wake:
                while not self._due:
                    self._wake.wait()
            time.sleep(WalCheckpointer.DELAY)
            with self.checkpointing:
                self._checkpoint_all(
                    self._take_due()
                )  # keeps none after: a checkpointer lives no longer than its engine

    def _take_due(self) -> set[WalCheckpointer]:
        with self._wake:
            due, self._due = self._due, set()
            return due

    @staticmethod
    def _checkpoint_all(due: set[WalCheckpointer]) -> None:
        for checkpointer in due:
            try:
                checkpointer.checkpoint()
            except (sqlite3.Error, OSError) as exc:  # e.g. a database removed; writers checkpoint past the limit
                log.warning("WAL checkpoint failed", extra={"error_class": type(exc).__name__})


def _reset_checkpoint_thread() -> None:
    global _checkpoints
    _checkpoints = _CheckpointThread()


def _before_fork() -> None:
    # gunicorn's master commits (migrations, the default clinic) and forks its workers moments later. A fork while
    # this thread is inside SQLite copies SQLite's own mutexes locked into the child, where nothing unlocks them: the
    # worker's first database call then waits forever. So a fork waits until a running checkpoint is done.
    _checkpoints.checkpointing.acquire()


def _after_fork_in_parent() -> None:
    _checkpoints.checkpointing.release()


_checkpoints = _CheckpointThread()
# A forked worker starts its own thread, with locks no thread of the parent may have held at the fork.
os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_reset_checkpoint_thread)


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
        session.execute(_insert_into(table), rows)
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


@functools.cache
def _insert_into(table: Table) -> Any:
    """A table's INSERT, built once: building a statement costs twice what running a cached one does."""
    return insert(table)


def upsert_insert(session: Any) -> Any:
    """The dialect's INSERT that supports ``on_conflict_do_*`` (PostgreSQL and SQLite both have one)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
