"""Rate-limit counters in the service's own database, shared by every worker and process that uses it."""

from __future__ import annotations

import time

from sqlalchemy import case, delete
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.adapters import orm
from service.adapters.database import SQLITE_WRITE_BEGIN, upsert_insert, write_lock

MAX_KEY = 400  # the column; keys are built from bounded parts (address, clinic, client)


class DatabaseCounters:
    """``incr(key, expiry, amount) -> total``, as ``limits`` storages have it: a fixed-window counter that starts
    afresh once ``expiry`` seconds have passed since its window opened."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._next_purge = 0.0

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        t = orm.rate_limit_counters
        with write_lock(self._engine), Session(self._engine) as session:
            if self._engine.dialect.name == "sqlite":
                session.connection(execution_options={"sqlite_begin": SQLITE_WRITE_BEGIN})
            if now >= self._next_purge:  # expired windows go, at most once a minute per process
                session.execute(delete(t).where(t.c.expires_at < now))
                self._next_purge = now + 60
            insert = upsert_insert(session)(t).values(key=key[:MAX_KEY], hits=amount, expires_at=now + expiry)
            statement = insert.on_conflict_do_update(
                index_elements=[t.c.key],
                set_={
                    # a window that has ended starts again at this hit
                    "hits": case((t.c.expires_at <= now, amount), else_=t.c.hits + amount),
                    "expires_at": case((t.c.expires_at <= now, now + expiry), else_=t.c.expires_at),
                },
            ).returning(t.c.hits)
            total = int(session.execute(statement).scalar_one())
            session.commit()
            return total
