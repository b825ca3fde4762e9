"""The audit trail: one AuditEvent row per access to patient data, refusals included. Append-only."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from service.adapters import orm


@dataclass(frozen=True)
class AuditRecord:
    recorded: datetime
    type: str
    subtype: str
    action: str
    outcome: str
    method: str
    route: str
    status: int
    clinic_id: str | None
    client_id: str | None
    network_address: str | None
    request_id: str | None
    entity: list[dict[str, str]] = field(default_factory=list)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


# Column widths (orm.audit_events): values are bounded at the edge; this keeps a value that slipped through from
# failing the row (PostgreSQL refuses an over-long value where SQLite stores it).
_WIDTHS = {"client_id": 200, "network_address": 64, "request_id": 100, "method": 10, "route": 300, "clinic_id": 64}


def _bounded(value: str | None, column: str) -> str | None:
    if value is None:
        return None
    value = value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return value[: _WIDTHS[column]]


def _values(record: AuditRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "clinic_id": _bounded(record.clinic_id, "clinic_id"),
        "recorded": record.recorded,
        "type": record.type,
        "subtype": record.subtype,
        "action": record.action,
        "outcome": record.outcome,
        "client_id": _bounded(record.client_id, "client_id"),
        "network_address": _bounded(record.network_address, "network_address"),
        "request_id": _bounded(record.request_id, "request_id"),
        "method": _bounded(record.method, "method"),
        "route": _bounded(record.route, "route"),
        "status": record.status,
        "entity": record.entity,
    }


_APPEND = insert(orm.audit_events)  # built once: every request appends


def append(session: Session, record: AuditRecord, *, occurrences: int = 1) -> None:
    """Appends ``record``; ``occurrences`` > 1 when the row stands for that many alike refusals."""
    session.execute(_APPEND, [{**_values(record), "occurrences": occurrences}])


def append_many(connection: Connection | Session, records: list[AuditRecord]) -> None:
    """Appends the records in one statement, in the current transaction of ``connection`` (the reads answered
    together share one audit transaction)."""
    if records:
        connection.execute(_APPEND, [{**_values(r), "occurrences": 1} for r in records])


def list_for_clinic(
    session: Session, clinic_id: str, *, since: datetime | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    t = orm.audit_events
    conditions = [t.c.clinic_id == clinic_id]
    if since is not None:
        conditions.append(t.c.recorded >= since)
    where = and_(*conditions)
    total = session.execute(select(func.count()).select_from(t).where(where)).scalar_one()
    rows = session.execute(select(t).where(where).order_by(t.c.recorded, t.c.id).limit(limit).offset(offset))
    return [dict(row._mapping) for row in rows], total
