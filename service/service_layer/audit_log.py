"""Group commit of read audits: the audit records of reads from all threads of a process go to the database
together, in one short write transaction, and each read answers only once its record is committed.

Why: every read must be audited, and an audit is a write. One write transaction per read would queue every
reader behind every writer (SQLite has one writer at a time). Batching turns N waits for the write lock into one.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy.orm import sessionmaker

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
            try:
                self._commit(batch)
            except Exception:  # noqa: BLE001 - one bad record must not fail the reads of other clients
                for pending in batch:
                    try:
                        self._commit([pending])
                    except Exception as exc:  # noqa: BLE001 - handed to its own reader, which answers 503
                        pending.error = exc
            for pending in batch:
                pending.done.set()

    def _commit(self, batch: list[_Pending]) -> None:
        with UnitOfWork(self._session_factory, clinic_id="", write=True) as uow:
            for pending in batch:
                audit.append(uow.session, pending.record)
            uow.commit()


class RefusalAggregator:
    """Refusals of callers the service cannot hold to a budget of their own (no valid token, or over a rate limit)
    are recorded as one audit row per (address, status, route, minute) with the number of requests it stands
    for. The first refusal of a row is written before it is answered; later ones are counted in memory and added
    by a background thread about once a second, so a flood costs neither a row nor a write per request."""

    WINDOW_SECONDS = 60
    FLUSH_SECONDS = 1.0

    def __init__(self, session_factory: sessionmaker) -> None:
        self._session_factory = session_factory
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[audit.AuditRecord, int]] = {}
        self._seen: dict[str, int] = {}  # row id -> its window, for rows already written
        self._pid: int | None = None

    def record(self, record: audit.AuditRecord, *, now: float | None = None) -> None:
        """Raises :class:`AuditUnavailableError` when the first refusal of a row cannot be written."""
        window = int((time.time() if now is None else now) // self.WINDOW_SECONDS)
        key = "|".join(
            (record.network_address or "?", str(record.status), record.route, record.method, record.clinic_id or "")
        )
        row_id = str(uuid.uuid5(_AGGREGATE_NAMESPACE, f"{key}|{window}"))
        aggregated = dataclasses.replace(record, id=row_id)
        self._ensure_flusher()
        with self._lock:
            first = row_id not in self._seen
            if not first:
                previous = self._pending.get(row_id)
                self._pending[row_id] = (aggregated, (previous[1] if previous else 0) + 1)
                return
            if len(self._seen) > 10_000:
                self._seen = {k: w for k, w in self._seen.items() if w >= window - 1}
            self._seen[row_id] = window
        try:
            self._write(aggregated, 1)
        except Exception as exc:
            with self._lock:
                self._seen.pop(row_id, None)
            raise AuditUnavailableError("refusal audit failed") from exc

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for record, count in pending.values():
            try:
                self._write(record, count)
            except Exception:  # noqa: BLE001 - retried at the next flush
                with self._lock:
                    previous = self._pending.get(record.id)
                    self._pending[record.id] = (record, count + (previous[1] if previous else 0))

    def _write(self, record: audit.AuditRecord, count: int) -> None:
        with UnitOfWork(self._session_factory, clinic_id="", write=True) as uow:
            audit.add_occurrences(uow.session, record, count)
            uow.commit()

    def _ensure_flusher(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._pending, self._seen = {}, {}
                threading.Thread(target=self._flush_forever, name="audit-refusals", daemon=True).start()
                self._pid = os.getpid()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.FLUSH_SECONDS)
            self.flush()


_AGGREGATE_NAMESPACE = uuid.UUID("6f1d3c2a-8b7e-4c55-9a0e-1c2b3d4e5f60")
