"""Shared fixtures: the app on SQLite and on a real PostgreSQL cluster the harness starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.config import Settings
from service.entrypoints.app import create_app
from service.entrypoints.cli import prepare_database
from tests.support.postgres import PostgresServer

REPO_ROOT = Path(__file__).resolve().parents[1]


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


def make_app(database_url: str, **overrides: Any) -> Flask:
    settings = Settings(database_url=database_url, **overrides)
    prepare_database(settings)
    return create_app(settings)


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    application = make_app(database_url)
    yield application
    application.extensions["kapfhir.engine"].dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class Api:
    """The domain API over the Flask test client, with the ids of a seeded clinic."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.client.post(f"/api/v1{path}", json=body, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.client.put(f"/api/v1{path}", json=body, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(f"/api/v1{path}", **kwargs)

    def created(self, path: str, body: Any, **kwargs: Any) -> dict[str, Any]:
        response = self.post(path, body, **kwargs)
        assert response.status_code == 201, response.get_json()
        return response.get_json()


@pytest.fixture
def api(client: FlaskClient) -> Api:
    return Api(client)
