"""openapi.yaml is the contract: it is what the code serves, and the running app keeps to it."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import yaml
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis import checks

from service.entrypoints.openapi import build_spec
from tests.support.app import REPO_ROOT, Api, bearer, make_app, token_for
from tests.support.seed import seed_episode

OPENAPI = REPO_ROOT / "openapi.yaml"


@pytest.fixture(scope="module")
def contract_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    app = make_app(f"sqlite:///{tmp_path_factory.mktemp('contract')}/kapfhir.db")
    seed_episode(Api(app.test_client()))
    yield app
    app.extensions["kapfhir.engine"].dispose()


def test_openapi_yaml_is_what_the_code_serves(contract_app: Flask):
    assert yaml.safe_load(OPENAPI.read_text()) == build_spec(contract_app), (
        "openapi.yaml is stale: run `.venv/bin/kapfhir openapi --write` and review the diff"
    )


def test_every_route_the_app_serves_is_in_openapi_yaml(contract_app: Flask):
    documented = yaml.safe_load(OPENAPI.read_text())["paths"]
    missing = []
    for rule in contract_app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue  # files served as they are (the API docs' scripts), not operations
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            if method.lower() not in documented.get(path, {}):
                missing.append(f"{method} {path}")
    assert missing == []


def _fuzzed_app() -> Flask:
    # Built at import: schemathesis parametrizes at collection. A seeded episode gives the fuzzer real ids to hit.
    app = make_app(f"sqlite:///{tempfile.mkdtemp(prefix='kapfhir-contract-')}/kapfhir.db")
    seed_episode(Api(app.test_client()))
    return app


CONTRACT_CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.unsupported_method,
]
schema = schemathesis.openapi.from_path(OPENAPI)
schema.app = _fuzzed_app()


@schema.parametrize()
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_error_and_no_response_outside_the_contract(case: schemathesis.Case) -> None:
    # Schema-valid is not always acceptable (an unknown patient id, an end before a start): those are 404/409/422
    # by design, so "positive data acceptance" is not asked; every response must still keep to the contract.
    case.call_and_validate(checks=CONTRACT_CHECKS, headers=bearer(token_for(schema.app)))


def test_the_document_is_openapi_3_1():
    assert yaml.safe_load(Path(OPENAPI).read_text())["openapi"] == "3.1.0"
