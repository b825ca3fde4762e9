"""Group commit of read audits: the audit records of reads from all threads of a process go to the database
together, in one short write transaction, and each read answers only once its record is committed.

Why: every read must be audited, and an audit is a write. One write transaction per read would queue every
reader behind every writer (SQLite has one writer at a time). Batching turns N waits for the write lock into one.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy.orm import sessionmaker

from service import observability
from service.adapters import audit
from service.service_layer.unit_of_work import UnitOfWork

MAX_BATCH = 500


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
            error: BaseException | None = None
            started = time.perf_counter()
            try:
                with UnitOfWork(self._session_factory, clinic_id="", write=True) as uow:
                    for pending in batch:
                        audit.append(uow.session, pending.record)
                    uow.commit()
                observability.AUDIT_BATCH_SECONDS.observe(time.perf_counter() - started)
                observability.AUDIT_BATCH_RECORDS.observe(len(batch))
            except Exception as exc:  # noqa: BLE001 - handed to every waiting reader, which answers 503
                error = exc
            for pending in batch:
                pending.error = error
                pending.done.set()
