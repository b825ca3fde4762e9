"""SQLite's write-ahead log is copied into the database by a thread beside the writers, not inside their commits,
and it stays bounded under steady writes."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from service.adapters.database import WalCheckpointer, make_engine, write_lock

ROW = "x" * 12_000  # three to four pages a row


def _wal_frames(database: Path) -> int:
    """Frames in the WAL since it was last started over (read from its size: header 32 bytes, frames of a page and a
    24-byte header), without checkpointing anything."""
    page_size = sqlite3.connect(database).execute("PRAGMA page_size").fetchone()[0]
    size = os.path.getsize(f"{database}-wal")
    return max(0, (size - 32) // (page_size + 24))


def _write(engine, rows: int, *, pause: float = 0.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(rows):
        with write_lock(engine), engine.begin() as connection:  # as a unit of work writes
            connection.execute(text("INSERT INTO t (body) VALUES (:body)"), {"body": ROW})
        time.sleep(pause)


def test_commits_leave_the_copying_of_the_wal_to_the_checkpoint_thread(tmp_path: Path) -> None:
    database = tmp_path / "k.db"
    engine = make_engine(f"sqlite:///{database}")
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)"))
            # a commit checkpoints only far past SQLite's default of 1,000 frames
            assert connection.execute(text("PRAGMA wal_autocheckpoint")).scalar() == (
                WalCheckpointer.WRITER_CHECKPOINTS_AFTER
            )
        _write(engine, 150)  # ~500 frames, ~1.8 MB
        deadline = time.monotonic() + 10
        while os.path.getsize(database) < 150 * len(ROW) and time.monotonic() < deadline:
            time.sleep(0.05)
        # the rows are in the database file: copied by the thread (no commit got near its own threshold)
        assert os.path.getsize(database) >= 150 * len(ROW)
    finally:
        engine.dispose()


def test_the_wal_stays_bounded_under_steady_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a small bound, so that the test writes a few MB; without starting over, the WAL would hold every frame written
    monkeypatch.setattr(WalCheckpointer, "RESTART_AFTER", 300)
    database = tmp_path / "k.db"
    engine = make_engine(f"sqlite:///{database}")
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)"))
        # ~2,800 frames; the pause stands for a request's work outside the write lock (a thread waiting for the lock
        # gets it only between two writes)
        _write(engine, 800, pause=0.0005)
        # started over while the writes went on: it holds about the frames written since the last start, not all
        assert _wal_frames(database) < 1_400
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM t")).scalar() == 800
    finally:
        engine.dispose()


def test_a_checkpoint_connection_is_closed_only_by_the_process_that_opened_it(tmp_path: Path) -> None:
    from service.adapters.database import _close_in_process

    connection = sqlite3.connect(tmp_path / "k.db")
    _close_in_process(connection, os.getpid() + 1)  # as in a forked worker that inherited it: left alone
    assert connection.execute("SELECT 1").fetchone() == (1,)
    _close_in_process(connection, os.getpid())
    with pytest.raises(sqlite3.ProgrammingError):
        connection.execute("SELECT 1")


def test_a_fork_waits_for_a_running_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gunicorn's master commits and forks its workers moments later: a fork while the checkpoint thread is inside
    SQLite would copy SQLite's mutexes locked into the worker, whose first database call would then wait forever."""
    events: list[str] = []
    started = threading.Event()

    def slow_checkpoint(self: WalCheckpointer) -> None:
        events.append("checkpoint started")
        started.set()
        time.sleep(0.3)
        events.append("checkpoint done")

    monkeypatch.setattr(WalCheckpointer, "checkpoint", slow_checkpoint)
    engine = make_engine(f"sqlite:///{tmp_path / 'k.db'}")
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))  # the commit makes it due
        assert started.wait(5)
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        events.append("forked")
        os.waitpid(pid, 0)
    finally:
        engine.dispose()
    # no checkpoint was running at the fork (others may follow it: engines of earlier tests are due too)
    before = events[: events.index("forked")]
    assert before.count("checkpoint started") == before.count("checkpoint done") >= 1
