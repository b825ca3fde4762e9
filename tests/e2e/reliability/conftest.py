"""Reliability tests: the service as the Dockerfile starts it (gunicorn), real HTTP, SQLite and PostgreSQL.

Each test is bounded (about a minute); `make soak` (KAPFHIR_SOAK=1) runs the longer variants.
"""

from __future__ import annotations

import os

import pytest

from tests.support import harness

SOAK = os.environ.get("KAPFHIR_SOAK") == "1"


@pytest.fixture
def service_url(database_url: str) -> str:
    """A database URL for a gunicorn-served kapfhir: a SQLite file or a fresh PostgreSQL database (tests/conftest)."""
    return database_url


@pytest.fixture
def http_factory():
    def make(service: harness.RunningService) -> harness.Http:
        return harness.Http(service.base_url, harness.mint_token(service))

    return make
