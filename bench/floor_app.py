"""The stack's floor for kapfhir's read kinds: the least an audited FHIR read can do under this stack (diagnostic).

Not kapfhir: a Flask app under the same gunicorn command and config (bench/trivial_app.py's way) that does only what
no audited read can skip. A read by id reads one SQLite row by primary key and sends its stored bytes; a search reads
one page of 20 of a patient's stored Observations with their total (one statement on an index that holds the sort
keys) and joins the bytes into a searchset Bundle. Each waits until its audit record is committed durably: WAL,
synchronous=FULL, one group-commit thread per worker, writers of both workers serialised by kapfhir's own
WriterLock. No token check, rate limits, SQLAlchemy, unit of work, logs or metrics. `/floor/read-unaudited` leaves
out the audit, to show what the durable audit costs on its own.

bench/run_all.py measures these beside kapfhir's reads, as shares of the trivial ceiling: a goal above the floor's
share cannot be met by any app that keeps the audit and the stack.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from a2wsgi import WSGIMiddleware
from flask import Flask, Response, abort, request

from service.adapters.database import WriterLock

DATABASE = os.environ["FLOOR_DATABASE"]  # a SQLite file both workers share
OBSERVATIONS = 146  # fixture episode a's patient has this many Observations (the bench's search reads 20 of them)
PAGE = 20
AUDIT_WAIT_SECONDS = 10.0


def _connect(synchronous: str = "FULL") -> sqlite3.Connection:
    connection = sqlite3.connect(DATABASE, isolation_level=None, check_same_thread=False, timeout=30)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    return connection


def _body(resource_type: str, rid: str, size: int) -> bytes:
    """A stored body of about ``size`` bytes (kapfhir's Patient: ~1 kB; its Observations: ~1.7 kB)."""
    resource = {"resourceType": resource_type, "id": rid, "meta": {"versionId": "1"}, "text": {"div": ""}}
    resource["text"]["div"] = "x" * max(0, size - len(json.dumps(resource)))
    return json.dumps(resource, separators=(",", ":")).encode()


# kapfhir's own writer lock: one SQLite writer at a time across threads and worker processes
_writer = WriterLock(Path(DATABASE).with_suffix(".write-lock"))


def _create() -> None:
    connection = _connect()
    with _writer.held():
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("CREATE TABLE IF NOT EXISTS resources (id TEXT PRIMARY KEY, body BLOB NOT NULL)")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS observations (id TEXT PRIMARY KEY, patient TEXT NOT NULL, "
            "last_updated TEXT NOT NULL, body BLOB NOT NULL)"
        )
        connection.execute("CREATE INDEX IF NOT EXISTS ix_patient ON observations (patient, last_updated, id)")
        connection.execute("CREATE TABLE IF NOT EXISTS audit (id TEXT PRIMARY KEY, recorded TEXT, entity TEXT)")
        connection.execute("INSERT OR IGNORE INTO resources VALUES ('p1', ?)", (_body("Patient", "p1", 1040),))
        start = datetime(2026, 1, 1, tzinfo=UTC)
        connection.executemany(
            "INSERT OR IGNORE INTO observations VALUES (?, 'p1', ?, ?)",
            [
                (f"o{n}", (start + timedelta(minutes=n)).isoformat(), _body("Observation", f"o{n}", 1700))
                for n in range(OBSERVATIONS)
            ],
        )
        connection.execute("COMMIT")
    connection.close()


_create()


class _GroupCommit:
    """Each caller returns once its record is committed; records that queue together commit together."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[tuple[str, str, str], threading.Event]] = queue.Queue()
        self._pid: int | None = None
        self._lock = threading.Lock()

    def append(self, entity: str) -> None:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    threading.Thread(target=self._flush_forever, daemon=True).start()
                    self._pid = os.getpid()
        done = threading.Event()
        self._queue.put(((str(uuid.uuid4()), datetime.now(UTC).isoformat(), entity), done))
        if not done.wait(AUDIT_WAIT_SECONDS):
            abort(503)

    def _flush_forever(self) -> None:
        connection = _connect(os.environ.get("FLOOR_AUDIT_SYNCHRONOUS", "FULL"))
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            with _writer.held():
                connection.execute("BEGIN IMMEDIATE")
                connection.executemany("INSERT INTO audit VALUES (?, ?, ?)", [record for record, _ in batch])
                connection.execute("COMMIT")
            for _, done in batch:
                done.set()


_audit = _GroupCommit()
_local = threading.local()


def _reader() -> sqlite3.Connection:
    if getattr(_local, "pid", None) != os.getpid():  # a thread's own connection, never one from before a fork
        _local.connection, _local.pid = _connect(), os.getpid()
    return _local.connection


flask_app = Flask(__name__)
app = WSGIMiddleware(flask_app, workers=int(os.environ.get("KAPFHIR_THREADS", "4")))


@flask_app.get("/healthz")
def healthz() -> Response:
    return Response(b'{"status":"ok"}', mimetype="application/json")


def _read(rid: str) -> bytes:
    row = _reader().execute("SELECT body FROM resources WHERE id = ?", (rid,)).fetchone()
    if row is None:
        abort(404)
    return row[0]


@flask_app.get("/floor/read/<rid>")
def read(rid: str) -> Response:
    body = _read(rid)
    _audit.append(f"Patient/{rid}")
    return Response(body, mimetype="application/fhir+json")


@flask_app.get("/floor/read-unaudited/<rid>")
def read_unaudited(rid: str) -> Response:
    return Response(_read(rid), mimetype="application/fhir+json")


@flask_app.get("/floor/search")
def search() -> Response:
    patient = request.args.get("patient", "")
    rows = (
        _reader()
        .execute(
            "SELECT id, body, count(*) OVER () FROM observations WHERE patient = ? ORDER BY last_updated, id LIMIT ?",
            (patient, PAGE),
        )
        .fetchall()
    )
    base = request.host_url + "fhir/Observation/"
    entries = b",".join(
        b'{"fullUrl":"%s%s","resource":%s,"search":{"mode":"match"}}' % (base.encode(), rid.encode(), body)
        for rid, body, _ in rows
    )
    total = rows[0][2] if rows else 0
    _audit.append(f"Observation?patient={patient}")
    body = b'{"resourceType":"Bundle","type":"searchset","total":%d,"entry":[%s]}' % (total, entries)
    return Response(body, mimetype="application/fhir+json")
