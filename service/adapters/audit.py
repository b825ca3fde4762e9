"""The audit trail: one AuditEvent row per access to patient data, refusals included. Append-only."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, select
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


def append(session: Session, record: AuditRecord) -> None:
    session.execute(
        insert(orm.audit_events).values(
            id=record.id,
            clinic_id=record.clinic_id,
            recorded=record.recorded,
            type=record.type,
            subtype=record.subtype,
            action=record.action,
            outcome=record.outcome,
            client_id=record.client_id,
            network_address=record.network_address,
            request_id=record.request_id,
            method=record.method,
            route=record.route,
            status=record.status,
            entity=record.entity,
        )
    )


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
