"""Commits are durable before they are answered: SQLite in WAL with synchronous=FULL, PostgreSQL with
synchronous_commit on, on every connection the service's engine opens."""

from __future__ import annotations

from sqlalchemy import text

from service.adapters.database import make_engine


def test_every_connection_commits_durably(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
                assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
            else:
                assert connection.execute(text("SHOW synchronous_commit")).scalar() == "on"
    finally:
        engine.dispose()
