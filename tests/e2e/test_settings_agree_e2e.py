"""Settings that agree: the service started as the Dockerfile starts it, on another port set with KAPFHIR_BIND only
(no KAPFHIR_BASE_URL), advertises that port and accepts a private_key_jwt assertion made out to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from click.testing import CliRunner

from service.entrypoints.cli import main as cli
from service.exchange.auth import ASSERTION_TYPE, SmartBackendAuth, client_assertion
from service.exchange.client import FhirClient
from service.security.keys import SigningKey, load_private_key
from tests.support.app import REPO_ROOT
from tests.support.processes import RunningService, free_port, run_dockerfile_cmd

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bound_elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningService, SigningKey]]:
    workdir = tmp_path_factory.mktemp("bind")
    port = free_port()
    assert port != 8000
    # Where the data lives, and the port: nothing else (KAPFHIR_BASE_URL is not set).
    env = {
        "KAPFHIR_DATABASE_URL": f"sqlite:///{workdir / 'kapfhir.db'}",
        "KAPFHIR_SIGNING_KEY_FILE": str(workdir / "signing-key.pem"),
        "KAPFHIR_BIND": f"127.0.0.1:{port}",
    }
    runner = CliRunner()
    key_path = workdir / "client.pem"
    generated = runner.invoke(cli, ["keys", "generate", "--alg", "ES384", "--out", str(key_path)], env=env)
    assert generated.exit_code == 0, generated.output
    (workdir / "jwks.json").write_text(generated.output)
    args = ["clients", "add", "--client-id", "ehr", "--clinic", "demo", "--scopes", "system/Patient.rs"]
    added = runner.invoke(cli, [*args, "--jwks", str(workdir / "jwks.json")], env=env)
    assert added.exit_code == 0, added.output
    service = run_dockerfile_cmd(REPO_ROOT, env, port=port)
    yield service, SigningKey.from_private_key(load_private_key(key_path), "ES384")
    service.stop()


def test_smart_configuration_advertises_the_bound_port(bound_elsewhere: tuple[RunningService, SigningKey]):
    service, _ = bound_elsewhere
    config = requests.get(f"{service.base_url}/.well-known/smart-configuration", timeout=10).json()
    assert config["token_endpoint"] == f"{service.base_url}/oauth2/token"


def test_a_private_key_jwt_token_request_succeeds(bound_elsewhere: tuple[RunningService, SigningKey]):
    service, key = bound_elsewhere
    fhir_base = f"{service.base_url}/fhir"
    auth = SmartBackendAuth(base_url=fhir_base, client_id="ehr", key=key, scope="system/Patient.rs")
    bundle = FhirClient(fhir_base, auth=auth).search("Patient", {"_count": "1"})
    assert bundle["resourceType"] == "Bundle"
    assert auth.resolve_token_url() == f"{service.base_url}/oauth2/token"


def test_an_assertion_for_another_url_is_refused_naming_the_expected_one(
    bound_elsewhere: tuple[RunningService, SigningKey],
):
    service, key = bound_elsewhere
    wrong = "http://127.0.0.1:8000/oauth2/token"
    answer = requests.post(
        f"{service.base_url}/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "scope": "system/Patient.rs",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(key, client_id="ehr", token_url=wrong),
        },
        timeout=10,
    )
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"
    assert f"{service.base_url}/oauth2/token" in answer.json()["error_description"]
