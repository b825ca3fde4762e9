"""The durable outbox of EHR exchange: sync jobs, what each target holds of ours, and patient links.

One job per (clinic, episode, target), kept up to date: a change re-queues it (in the transaction of the
change), a worker claims it with a lease, pushes the episode as it is then, and marks it delivered only if no
change arrived meanwhile (``updated_at`` unchanged), so a change during a push is never lost.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.orm import Session

from service.adapters import orm
from service.adapters.database import upsert_insert

QUEUED, HELD, DELIVERED, DEAD = "queued", "held", "delivered", "dead"


@dataclass(frozen=True)
class SyncJob:
    id: str
    clinic_id: str
    episode_id: str
    target: str
    status: str
    attempts: int
    next_attempt_at: datetime
    held_reason: str | None
    last_error: Any
    updated_at: datetime


def _job(row: Any) -> SyncJob:
    return SyncJob(
        row.id,
        row.clinic_id,
        row.episode_id,
        row.target,
        row.status,
        row.attempts,
        row.next_attempt_at,
        row.held_reason,
        row.last_error,
        row.updated_at,
    )


def enqueue(session: Session, clinic_id: str, episode_id: str, targets: tuple[str, ...], now: datetime) -> None:
    """(Re-)queue the episode for every target. Runs inside the transaction of the change it follows; writers of
    one episode are serialised (row lock or SQLite's single writer), so there is one job per episode and target."""
    t = orm.sync_jobs
    for target in targets:
        existing = session.execute(
            select(t.c.id).where(t.c.clinic_id == clinic_id, t.c.episode_id == episode_id, t.c.target == target)
        ).scalar_one_or_none()
        if existing is None:
            session.execute(
                insert(t).values(
                    id=str(uuid.uuid4()),
                    clinic_id=clinic_id,
                    episode_id=episode_id,
                    target=target,
                    status=QUEUED,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
        else:
            session.execute(
                update(t)
                .where(t.c.id == existing)
                .values(
                    status=QUEUED,
                    attempts=0,
                    next_attempt_at=now,
                    held_reason=None,
                    updated_at=now,
                )
            )


def claim(session: Session, worker: str, now: datetime, lease: timedelta) -> SyncJob | None:
    """The next due job, leased to ``worker``. PostgreSQL: FOR UPDATE SKIP LOCKED lets workers run side by side;
    SQLite: the caller's write transaction (BEGIN IMMEDIATE) serialises claims."""
    t = orm.sync_jobs
    due = (
        select(t)
        .where(
            t.c.status == QUEUED, t.c.next_attempt_at <= now, or_(t.c.locked_until.is_(None), t.c.locked_until < now)
        )
        .order_by(t.c.next_attempt_at, t.c.id)
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    row = session.execute(due).one_or_none()
    if row is None:
        return None
    session.execute(update(t).where(t.c.id == row.id).values(locked_by=worker, locked_until=now + lease))
    return _job(row)


def finish(
    session: Session,
    job: SyncJob,
    *,
    status: str,
    now: datetime,
    held_reason: str | None = None,
    last_error: Any = None,
    attempts: int | None = None,
    next_attempt_at: datetime | None = None,
) -> bool:
    """Records the outcome of a claimed job, unless the episode changed during the push: then the job stays
    queued for another round. Returns whether the outcome was recorded."""
    t = orm.sync_jobs
    values: dict[str, Any] = {"locked_by": None, "locked_until": None}
    changed = session.execute(
        update(t)
        .where(t.c.id == job.id, t.c.updated_at == job.updated_at)
        .values(
            status=status,
            held_reason=held_reason,
            last_error=last_error,
            attempts=job.attempts if attempts is None else attempts,
            next_attempt_at=next_attempt_at or now,
            **values,
        )
    ).rowcount
    if not changed:
        session.execute(update(t).where(t.c.id == job.id).values(**values))
    return bool(changed)


def jobs_of(session: Session, clinic_id: str, episode_id: str) -> list[SyncJob]:
    t = orm.sync_jobs
    rows = session.execute(
        select(t).where(t.c.clinic_id == clinic_id, t.c.episode_id == episode_id).order_by(t.c.target)
    )
    return [_job(r) for r in rows]


def requeue(session: Session, clinic_id: str, episode_id: str, now: datetime, statuses: tuple[str, ...]) -> int:
    t = orm.sync_jobs
    return session.execute(
        update(t)
        .where(t.c.clinic_id == clinic_id, t.c.episode_id == episode_id, t.c.status.in_(statuses))
        .values(status=QUEUED, attempts=0, next_attempt_at=now, held_reason=None, updated_at=now)
    ).rowcount


def all_episode_keys(session: Session) -> list[tuple[str, str]]:
    rows = session.execute(select(orm.episodes.c.clinic_id, orm.episodes.c.id).order_by(orm.episodes.c.created_at))
    return [(r.clinic_id, r.id) for r in rows]


# --- what the target holds ----------------------------------------------------------------------------------------


def remote_records(session: Session, clinic_id: str, target: str, episode_id: str) -> dict[str, dict[str, Any]]:
    """entry key -> {id, version, content_hash} of what the last pushes of this episode left on the target
    (plus the patient-level resources shared by the patient's episodes, keyed without an episode)."""
    t = orm.sync_resources
    rows = session.execute(
        select(t).where(
            t.c.clinic_id == clinic_id,
            t.c.target == target,
            or_(t.c.episode_id == episode_id, t.c.episode_id.is_(None)),
        )
    )
    return {
        r.identifier: {
            "id": r.remote_id,
            "version": r.remote_version,
            "content_hash": r.content_hash,
            "outcome": r.outcome,
            "resource_type": r.resource_type,
        }
        for r in rows
    }


def _upsert(session: Session, table: Any, keys: dict[str, Any], values: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT DO UPDATE: workers pushing episodes of one clinic share rows (the clinic's
    Organization, the patient), and a check-then-insert would race."""
    statement = upsert_insert(session)(table).values(**keys, **values)
    session.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=values))


def store_remote(
    session: Session,
    clinic_id: str,
    target: str,
    episode_id: str | None,
    key: str,
    resource_type: str,
    remote_id: str | None,
    version: str | None,
    content_hash: str,
    outcome: str,
    now: datetime,
) -> None:
    _upsert(
        session,
        orm.sync_resources,
        {"clinic_id": clinic_id, "target": target, "resource_type": resource_type, "identifier": key},
        {
            "episode_id": episode_id,
            "remote_id": remote_id,
            "remote_version": version,
            "content_hash": content_hash,
            "outcome": outcome,
            "updated_at": now,
        },
    )


def patient_link(session: Session, clinic_id: str, patient_id: str, target: str) -> str | None:
    t = orm.patient_links
    return session.execute(
        select(t.c.remote_id).where(t.c.clinic_id == clinic_id, t.c.patient_id == patient_id, t.c.target == target)
    ).scalar_one_or_none()


def link_patient(session: Session, clinic_id: str, patient_id: str, target: str, remote_id: str, now: datetime) -> None:
    _upsert(
        session,
        orm.patient_links,
        {"clinic_id": clinic_id, "patient_id": patient_id, "target": target},
        {"remote_id": remote_id, "linked_at": now},
    )
