"""Reliability tests: the service as the Dockerfile starts it (gunicorn), real HTTP, SQLite and PostgreSQL.

Each test is bounded (about a minute); `make soak` (KAPFHIR_SOAK=1) runs the longer variants.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import harness
from tests.exchange.conftest import sekmet  # noqa: F401 - the session's sekmet-fhir server
from tests.support.postgres import PostgresServer

SOAK = os.environ.get("KAPFHIR_SOAK") == "1"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def service_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL for a gunicorn-served kapfhir: a SQLite file or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/kapfhir.db"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    url = server.create_database("rel")
    yield url
    server.drop_database(url)


@pytest.fixture
def http_factory():
    def make(service: harness.RunningService) -> harness.Http:
        return harness.Http(service.base_url, harness.mint_token(service))

    return make
