"""Fixtures every layer uses: the app on SQLite and on a real PostgreSQL cluster the harness starts. The helpers
they build on live in tests/support (the one harness, which bench/ uses too)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.app import Api, make_app
from tests.support.postgres import PostgresServer

# Fixtures shared by several layers, as plugins: signing keys and a JWKS server (unit and integration security
# tests), a sekmet-fhir FHIR server and the fault proxy (e2e exchange and reliability tests).
pytest_plugins = ["tests.support.keys", "tests.support.sekmet"]


def pytest_configure(config: pytest.Config) -> None:
    """A CI timeout or ``kill`` sends SIGTERM, which would end pytest without tearing fixtures down and leave the
    gunicorn, PostgreSQL and sekmet processes they started running: end as on Ctrl-C instead, fixtures torn down."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/kapfhir.db"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    url = server.create_database("kapfhir")
    yield url
    server.drop_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/kapfhir.db"


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    application = make_app(database_url)
    yield application
    application.extensions["kapfhir.engine"].dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def api(client: FlaskClient) -> Api:
    return Api(client)
