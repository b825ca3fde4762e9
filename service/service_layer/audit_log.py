"""Group commit of read audits: the audit records of reads from all threads of a process go to the database
together, in one short write transaction, and each read answers only once its record is committed.

Why: every read must be audited, and an audit is a write. One write transaction per read would queue every
reader behind every writer (SQLite has one writer at a time). Batching turns N waits for the write lock into one.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import sessionmaker

from service import observability
from service.adapters import audit
from service.adapters.database import SQLITE_WRITE_BEGIN, write_lock
from service.service_layer.unit_of_work import UnitOfWork

MAX_BATCH = 500
log = logging.getLogger("kapfhir.audit")


class AuditUnavailableError(RuntimeError):
    """The audit record could not be committed: the read must not be answered."""


@dataclass
class _Pending:
    record: audit.AuditRecord
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class GroupCommitAuditLog:
    def __init__(self, session_factory: sessionmaker, *, wait_seconds: float = 10.0) -> None:
        self._session_factory = session_factory
        self._wait_seconds = wait_seconds
        self._queue: queue.Queue[_Pending] = queue.Queue()
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._connection: Connection | None = None  # the flusher's own, kept from batch to batch
        self._connection_pid: int | None = None

    def append(self, record: audit.AuditRecord) -> None:
        """Returns once ``record`` is committed; raises :class:`AuditUnavailableError` otherwise."""
        self._ensure_flusher()
        pending = _Pending(record)
        self._queue.put(pending)
        if not pending.done.wait(self._wait_seconds):
            raise AuditUnavailableError("audit write timed out")
        if pending.error is not None:
            raise AuditUnavailableError("audit write failed") from pending.error

    def _ensure_flusher(self) -> None:
        # One flusher thread per process, started lazily: a gunicorn worker forked after start-up gets its own.
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._queue = queue.Queue()
                threading.Thread(target=self._flush_forever, name="audit-group-commit", daemon=True).start()
                self._pid = os.getpid()

    def _flush_forever(self) -> None:
        pending_queue = self._queue
        while True:
            batch = [pending_queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(pending_queue.get_nowait())
                except queue.Empty:
                    break
            started = time.perf_counter()
            try:
                self._commit(batch)
                observability.AUDIT_BATCH_SECONDS.observe(time.perf_counter() - started)
                observability.AUDIT_BATCH_RECORDS.observe(len(batch))
            except Exception:  # noqa: BLE001 - one bad record must not fail the reads of other clients
                for pending in batch:
                    try:
                        self._commit([pending])
                    except Exception as exc:  # noqa: BLE001 - handed to its own reader, which answers 503
                        pending.error = exc
            for pending in batch:
                pending.done.set()

    def _commit(self, batch: list[_Pending]) -> None:
        # A Core connection kept by the flusher rather than a unit of work (a session, a pooled connection) per
        # batch: every read waits for this commit, and the unit of work's own cost was most of the batch's. Read by
        # id served side by side: 0.158 -> 0.189 of the ceiling (bench/CHANGES.md, sixth step).
        engine = self._session_factory.kw["bind"]
        records = [pending.record for pending in batch]
        try:
            connection = self._flusher_connection(engine)
            with write_lock(engine), connection.begin():
                audit.append_many(connection, records)
        except Exception:
            self._close_connection()  # the next batch starts on a fresh connection
            raise

    def _flusher_connection(self, engine: Engine) -> Connection:
        if self._connection is None or self._connection_pid != os.getpid():  # a forked worker opens its own
            self._connection = engine.connect().execution_options(sqlite_begin=SQLITE_WRITE_BEGIN)
            self._connection_pid = os.getpid()
        return self._connection

    def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and self._connection_pid == os.getpid():
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - a broken connection is dropped either way
                log.warning("audit connection not closed cleanly")


class RefusalAggregator:
    """Refusals of callers the service cannot hold to a budget of their own (no valid token, or over a rate limit)
    are recorded per (address, status, method, route) and minute: the first one as its own row, before it is
    answered; the others of that minute as one row carrying their number (``occurrences``), appended by a
    background thread once the minute is over (the trail is append-only: rows are never updated). So a flood adds
    at most two rows a minute per address, route and status in each worker, and costs no write per request."""

    WINDOW_SECONDS = 60
    FLUSH_SECONDS = 1.0
    METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

    def __init__(self, session_factory: sessionmaker) -> None:
        self._session_factory = session_factory
        self._lock = threading.Lock()
        self._counted: dict[tuple[str, int], tuple[audit.AuditRecord, int]] = {}  # (key, window) -> (last, n)
        self._pid: int | None = None

    def record(self, record: audit.AuditRecord, *, now: float | None = None) -> None:
        """Raises :class:`AuditUnavailableError` when the first refusal of its minute cannot be written."""
        window = int((time.time() if now is None else now) // self.WINDOW_SECONDS)
        method = record.method if record.method in self.METHODS else "OTHER"
        record = dataclasses.replace(record, method=method)
        # a known client's 429s are its own; anonymous refusals are the address's
        who = (record.clinic_id or "", record.client_id or "")
        key = "|".join((record.network_address or "?", str(record.status), method, record.route, *who))
        self._ensure_flusher()
        with self._lock:
            counted = self._counted.get((key, window))
            if counted is not None:
                self._counted[(key, window)] = (record, counted[1] + 1)
                return
            self._counted[(key, window)] = (record, 0)
        try:
            self._write(record, 1)
        except Exception as exc:
            raise AuditUnavailableError("refusal audit failed") from exc

    def flush(self, *, everything: bool = False) -> None:
        """Appends the counted refusals of every minute that is over (of every minute, with ``everything``)."""
        current = int(time.time() // self.WINDOW_SECONDS)
        with self._lock:
            done = [k for k in self._counted if everything or k[1] < current]
            finished = [self._counted.pop(k) for k in done]
        for record, count in finished:
            if count == 0:
                continue
            try:
                self._write(dataclasses.replace(record, id=str(uuid.uuid4())), count)
            except Exception as exc:  # noqa: BLE001 - the class only: counts are lost, the reason is logged
                log.error("refusal audit failed", extra={"error_class": type(exc).__name__, "occurrences": count})

    def _write(self, record: audit.AuditRecord, count: int) -> None:
        with UnitOfWork(self._session_factory, clinic_id="", write=True) as uow:
            audit.append(uow.session, record, occurrences=count)
            uow.commit()

    def _ensure_flusher(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._counted = {}
                threading.Thread(target=self._flush_forever, name="audit-refusals", daemon=True).start()
                atexit.register(self.flush, everything=True)
                self._pid = os.getpid()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.FLUSH_SECONDS)
            self.flush()
