"""``bulk_insert`` (COPY on PostgreSQL, executemany elsewhere) stores exactly the rows an INSERT would, in the
caller's transaction, and a value the database refuses raises SQLAlchemy's ``DataError`` with nothing stored."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

from service.adapters.database import bulk_insert, make_engine
from service.adapters.fhir_store import fhir_search_index
from service.adapters.orm import metadata
from tests.support.postgres import PostgresServer

S = fhir_search_index
EAST = timezone(timedelta(hours=5, minutes=30))


def _rows() -> list[dict]:
    absent = {"system": None, "code": None, "start": None, "end": None}
    return [{**absent, **row} for row in _given()]


def _given() -> list[dict]:
    return [
        {
            "clinic_id": "demo",
            "resource_type": "Observation",
            "id": "obs-1",
            "param": "code",
            "system": "http://loinc.org",
            "code": "44249-1",
        },
        {
            "clinic_id": "demo",
            "resource_type": "Observation",
            "id": "obs-1",
            "param": "date",  # an aware time in another zone is stored as the same instant, read back in UTC
            "start": datetime(2026, 3, 2, 9, 30, tzinfo=EAST),
            "end": datetime(2026, 3, 2, 9, 30, 59, 999999, tzinfo=EAST),
        },
        {
            "clinic_id": "demo",
            "resource_type": "Patient",
            "id": "pat-1",
            "param": "name",
            "code": 'o\'brien \\ tab\there "quoted" ünïcode',  # characters COPY's text format escapes
        },
    ]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    metadata.create_all(engine, tables=[S])
    yield engine
    engine.dispose()


def _stored(engine: Engine) -> list[tuple]:
    with Session(engine) as session:
        return sorted(tuple(r) for r in session.execute(select(S)))


def test_stores_the_rows_as_given(engine: Engine) -> None:
    with Session(engine) as session:
        bulk_insert(session, S, _rows())
        session.commit()
    stored = _stored(engine)
    assert stored == sorted(
        (r["clinic_id"], r["resource_type"], r["id"], r["param"], r["system"], r["code"], *times)
        for r in _rows()
        for times in [tuple(r[k] and r[k].astimezone(UTC) for k in ("start", "end"))]
    )
    assert all(t is None or t.tzinfo == UTC for row in stored for t in row[6:])


def test_rows_are_part_of_the_callers_transaction(engine: Engine) -> None:
    with Session(engine) as session:
        bulk_insert(session, S, _rows())
        assert len(session.execute(select(S)).all()) == 3  # visible inside it
        session.rollback()
    assert _stored(engine) == []


def test_no_rows_is_no_statement(engine: Engine) -> None:
    with Session(engine) as session:
        bulk_insert(session, S, [])
        session.commit()
    assert _stored(engine) == []


@pytest.mark.parametrize("code", ["x" * 501, "nul\x00byte"], ids=["longer than VARCHAR(500)", "NUL character"])
def test_a_value_postgresql_refuses_raises_data_error_and_stores_nothing(postgres: PostgresServer, code: str) -> None:
    url = postgres.create_database("bulk")
    engine = make_engine(url)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    try:
        metadata.create_all(engine, tables=[S])
        with Session(engine) as session:
            bulk_insert(session, S, _rows())
            session.commit()
        assert not [s for s in statements if s.lstrip().upper().startswith("INSERT")]  # one COPY, not INSERTs
        with Session(engine) as session, pytest.raises(DataError):
            bulk_insert(session, S, [{**_rows()[0], "id": "obs-2"}, {**_rows()[0], "id": "obs-3", "code": code}])
        assert {row[2] for row in _stored(engine)} == {"obs-1", "pat-1"}
    finally:
        engine.dispose()
        postgres.drop_database(url)
