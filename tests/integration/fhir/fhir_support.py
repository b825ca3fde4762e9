"""Shared helpers of the /fhir tests: an app with every fixture episode recorded through the domain API, on
SQLite or on PostgreSQL (the ``postgres`` fixture of tests/conftest.py), and small readers of FHIR answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from service.fixture_loader import fixture_paths, load_fixture, replay
from tests.support.app import authorized_app, bearer, token_for
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
EPISODES = ROOT / "fixtures" / "episodes"
INVALID = ROOT / "fixtures" / "invalid-fhir"
FHIR_JSON = "application/fhir+json"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def sender(client: Any):
    def send(method: str, path: str, body: Any) -> tuple[int, Any]:
        r = client.open("/api/v1" + path, method=method, json=body)
        return r.status_code, r.get_json(silent=True)

    return send


def load_episodes(app: Flask) -> dict[str, dict[str, str]]:
    client = app.test_client()
    return {path.stem: replay(load_fixture(path), sender(client)) for path in fixture_paths(EPISODES)}


@contextmanager
def database(request: pytest.FixtureRequest, backend: str, directory: Path, name: str) -> Iterator[str]:
    """A fresh, empty database of the backend: a SQLite file, or a new database of the session's cluster."""
    if backend == "sqlite":
        yield f"sqlite:///{directory}/{name}.db"
        return
    server = request.getfixturevalue("postgres")
    url = server.create_database(name)
    try:
        yield url
    finally:
        server.drop_database(url)


@contextmanager
def app_on(request: pytest.FixtureRequest, backend: str, directory: Path, name: str) -> Iterator[Flask]:
    with database(request, backend, directory, name) as url:
        # these modules send thousands of requests a minute as one client; the budgets have tests of their own
        app = authorized_app(url, rate_limit="1000000 per minute", rate_limit_per_address="1000000 per minute")
        try:
            yield app
        finally:
            app.extensions["kapfhir.engine"].dispose()


def clinic_b(app: Flask) -> dict[str, str]:
    return bearer(token_for(app, clinic="clinic-b"))


def entries(bundle: dict) -> list[dict]:
    """The matches of a searchset (not the _include'd resources)."""
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]


# (DB-API cursor, statement, parameters) -> the plan of that statement as the test reads it
PlanOf = Callable[[Any, str, Any], Any]


@contextmanager
def plans_while(engine: Engine, plan_of: PlanOf) -> Iterator[dict[str, Any]]:
    """Collects the plan of each SELECT, UPDATE and DELETE run on ``engine`` meanwhile, with the values it is sent."""
    plans: dict[str, Any] = {}

    def explain(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith(("UPDATE", "DELETE", "SELECT")):
            plans[statement] = plan_of(cursor, statement, parameters)

    event.listen(engine, "before_cursor_execute", explain)
    try:
        yield plans
    finally:
        event.remove(engine, "before_cursor_execute", explain)


def plans_of_what_runs(engine: Engine, action: Callable[[Session], None], plan_of: PlanOf) -> dict[str, Any]:
    """The plan of each statement ``action`` executes (then rolled back)."""
    with Session(engine) as session, plans_while(engine, plan_of) as plans:
        try:
            action(session)
        finally:
            session.rollback()
    return plans
