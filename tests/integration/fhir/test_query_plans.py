"""SQLite query plans of the projection's hot statements: a lookup of a current row by id probes the index of current
rows by id, and of a version the primary key, not a scan of every current resource of the type (what the old
``(clinic, type, is_current, last_updated)`` index made SQLite do, so that writes, ingest and searches slowed down as
the clinic grew) nor of every version of the id; no statement of the frequent requests walks every row of the clinic
in a table. PostgreSQL chooses plans from statistics: its plans are checked on an
analysed clinic in test_query_plans_postgres.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from service.adapters.database import make_engine
from service.adapters.fhir_store import fhir_resources
from service.config import Settings
from service.entrypoints.cli import prepare_database
from service.fhir import projection, search
from tests.integration.fhir.fhir_support import load_episodes, plans_of_what_runs, plans_while
from tests.support.app import authorized_app
from tests.support.seed import session_bodies

PRIMARY_KEY = "sqlite_autoindex_fhir_resources_1"
CURRENT_BY_ID = "USING INDEX ix_fhir_resources_current_id (clinic_id=? AND resource_type=? AND id=?)"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path_factory.mktemp('plans')}/kapfhir.db"
    prepare_database(Settings(database_url=url))
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _plan(engine: Engine, statement: Any) -> list[str]:
    sql = str(statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        return [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]


def _resource_table_steps(plan: list[str]) -> list[str]:
    return [step for step in plan if "fhir_resources " in step or step.endswith("fhir_resources")]


def test_current_rows_by_id_probe_the_index_of_current_rows_by_id(engine: Engine) -> None:
    t = fhir_resources
    statement = projection.current_rows_statement(
        "c1", ["Encounter", "Observation"], ["a", "b", "c"], (t.c.version_id, t.c.content_hash)
    )
    steps = _resource_table_steps(_plan(engine, statement))
    assert steps and all(CURRENT_BY_ID in step for step in steps), steps


def _sqlite_plan(cursor: Any, statement: str, parameters: Any) -> list[str]:
    return [row[3] for row in cursor.connection.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]


def _plans_of_what_runs(engine: Engine, action: Callable[[Session], None]) -> dict[str, list[str]]:
    return plans_of_what_runs(engine, action, _sqlite_plan)


REPLACED = [("Observation", "a"), ("Encounter", "b"), ("Observation", "c")]


def test_retiring_current_versions_probes_the_index_of_current_rows_by_id(engine: Engine) -> None:
    # The earlier ``(type, id) IN (VALUES ...)`` walked every current resource of the clinic on each write.
    plans = _plans_of_what_runs(engine, lambda session: projection._retire(session, "c1", REPLACED))
    for plan in plans.values():
        steps = _resource_table_steps(plan)
        assert steps and all(CURRENT_BY_ID in step for step in steps), steps
    assert len(plans) == 2, plans  # one per type


def test_dropping_index_rows_of_replaced_resources_probes_by_type_and_id(engine: Engine) -> None:
    # The earlier ``(type, id) IN (VALUES ...)`` walked every search index row of the clinic on each write.
    plans = _plans_of_what_runs(engine, lambda session: projection._reindex(session, "c1", [], replaced=REPLACED))
    for plan in plans.values():
        assert plan and all("(clinic_id=? AND resource_type=? AND id=?)" in step for step in plan), plan
    assert len(plans) == 2, plans  # one per type


def test_read_by_id_probes_the_current_row_and_vread_the_version(engine: Engine) -> None:
    steps = _resource_table_steps(_plan(engine, projection.read_statement("c1", "Observation", "a")))
    assert steps and all(CURRENT_BY_ID in step for step in steps), steps
    steps = _resource_table_steps(_plan(engine, projection.read_statement("c1", "Observation", "a", 2)))
    assert steps and all(PRIMARY_KEY in step and "version_id=?" in step for step in steps), steps


def test_search_by_patient_starts_from_the_index_and_looks_up_by_id(engine: Engine) -> None:
    query = search.parse("Observation", [("patient", "Patient/p1")])
    plan = _plan(engine, search.search_statement("c1", query))
    # the page: the current rows of the matching ids; then the page's rows whole, by primary key
    assert [step for step in plan if "fhir_resources " in step or step.endswith("fhir_resources")] == [
        f"SEARCH fhir_resources {CURRENT_BY_ID}"
    ], plan
    whole = [step for step in plan if step.startswith("SEARCH whole")]
    assert whole and all(PRIMARY_KEY in step and "version_id=?" in step for step in whole), plan


def test_search_by_a_bare_patient_id_probes_the_index_by_reference(engine: Engine) -> None:
    # `patient=<id>` matched references by LIKE '%/<id>', which read every patient reference of the clinic's
    # observations; it is now `code IN ('<id>', 'Patient/<id>')`, two probes of the token index.
    for value in ("p1", "Patient/p1"):
        plan = _plan(engine, search.search_statement("c1", search.parse("Observation", [("patient", value)])))
        index_steps = [step for step in plan if "fhir_search_index" in step]
        assert index_steps and all("code=?" in step for step in index_steps), plan


@pytest.mark.parametrize("prefix", ["eq", "ne", "gt", "lt", "ge", "le"])
def test_a_date_criterion_probes_the_index_of_dates(engine: Engine, prefix: str) -> None:
    # the date index holds date rows only (start IS NOT NULL): every prefix's condition must let SQLite use it
    query = search.parse("Observation", [("date", f"{prefix}2026-02-10")])
    plan = _plan(engine, search.search_statement("c1", query))
    index_steps = [step for step in plan if "fhir_search_index" in step]
    assert index_steps and all(
        "ix_fhir_search_date (clinic_id=? AND resource_type=? AND param=?" in step for step in index_steps
    ), plan


def test_listing_current_resources_uses_the_partial_index(engine: Engine) -> None:
    query = search.parse("Observation", [("_sort", "-_lastUpdated")])
    steps = _resource_table_steps(_plan(engine, search.search_statement("c1", query)))
    assert steps and all("ix_fhir_resources_current" in step for step in steps), steps


@pytest.mark.parametrize(
    ("index", "rows"),
    [
        ("ix_fhir_resources_current", "WHERE is_current IS 1"),  # current resources only
        ("ix_fhir_search_date", "WHERE start IS NOT NULL"),  # date rows only
    ],
)
def test_the_migrations_leave_partial_indexes(tmp_path: Path, index: str, rows: str) -> None:
    url = f"sqlite:///{tmp_path}/kapfhir.db"
    prepare_database(Settings(database_url=url))
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = ?", (index,)).scalar_one()
    finally:
        engine.dispose()
    assert rows in sql


# --- every statement of the frequent requests ---------------------------------------------------------------------

# Statements that read all rows of a clinic in one table, on purpose: a clinic has few practitioners, and the
# projection's fingerprint of an episode covers all of them (a practitioner's change reaches every episode).
WHOLE_CLINIC_ON_PURPOSE = ("max(practitioners.updated_at)",)


def _walks_the_clinic(step: str) -> bool:
    """A step that reads every row of a table, or every row of the clinic in it: its cost grows with the clinic."""
    # a subquery's rows, or a search's page (materialized, at most _count rows), are not a table of the clinic
    if step.startswith("SCAN ") and not step.startswith(("SCAN CONSTANT", "SCAN (subquery", "SCAN page")):
        return "CONSTANT ROWS" not in step
    return step.endswith("(clinic_id=?)")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    url = f"sqlite:///{tmp_path_factory.mktemp('requests')}/kapfhir.db"
    application = authorized_app(url, rate_limit="100000 per minute", rate_limit_per_address="100000 per minute")
    application.config["EPISODE_IDS"] = load_episodes(application)
    yield application


def _plans_of_requests(app: Flask, send: Callable[[Any], None]) -> dict[str, list[str]]:
    with plans_while(app.extensions["kapfhir"].session_factory.kw["bind"], _sqlite_plan) as plans:
        send(app.test_client())
    return plans


def _walking_the_clinic(plans: dict[str, list[str]]) -> dict[str, list[str]]:
    return {
        statement: plan
        for statement, plan in plans.items()
        if any(map(_walks_the_clinic, plan)) and not any(s in statement for s in WHOLE_CLINIC_ON_PURPOSE)
    }


def test_no_statement_of_a_frequent_request_walks_the_clinic(app: Flask) -> None:
    ids = app.config["EPISODE_IDS"]["a-trd-iv-ketamine"]

    def send(client: Any) -> None:
        episode = client.get(f"/api/v1/episodes/{ids['episode']}")
        assert episode.status_code == 200
        [(path, body)] = session_bodies([ids], 1, 0)
        assert client.post(path, data=body, content_type="application/json").status_code == 201, path
        bundle = client.get(f"/api/v1/episodes/{ids['episode']}/fhir").get_json()
        assert client.post("/fhir/", json={**bundle, "type": "transaction"}).status_code == 200
        [patient_url] = [e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
        patient_id = patient_url.removeprefix("urn:uuid:")
        read = client.get(f"/fhir/Patient/{patient_id}")
        assert read.status_code == 200
        updated = {**read.get_json(), "gender": "other"}
        assert client.put(f"/fhir/Patient/{patient_id}", json=updated).status_code == 200
        found = client.get("/fhir/Observation", query_string={"patient": f"Patient/{patient_id}"})
        assert found.status_code == 200 and found.get_json()["entry"]

    plans = _plans_of_requests(app, send)
    assert len(plans) > 20, plans  # the requests ran their statements here
    walking = _walking_the_clinic(plans)
    assert not walking, walking


def test_no_statement_of_a_patient_or_phase_command_walks_the_clinic(app: Flask) -> None:
    client = app.test_client()
    ids = next(  # a fixture episode still open
        ids
        for ids in app.config["EPISODE_IDS"].values()
        if client.get(f"/api/v1/episodes/{ids['episode']}").get_json()["phase"] not in ("completed", "discontinued")
    )

    def send(client: Any) -> None:
        weight = {"measured_at": "2026-02-01T09:00:00-05:00", "weight_kg": 80}  # re-projects the patient's episodes
        assert client.post(f"/api/v1/patients/{ids['patient']}/body-weights", json=weight).status_code == 201
        ended = {"to_phase": "discontinued", "reason": "Moved away"}
        path = f"/api/v1/episodes/{ids['episode']}/phase-transitions"
        assert client.post(path, json=ended).status_code == 201

    plans = _plans_of_requests(app, send)
    assert len(plans) > 15, plans  # the requests ran their statements here (20 distinct ones when written)
    walking = _walking_the_clinic(plans)
    assert not walking, walking
