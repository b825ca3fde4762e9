"""SMART Backend Services end to end against kapfhir's own token endpoint: an EHR-side client registered with
`kapfhir clients add` discovers the token endpoint under the FHIR base, signs an assertion, gets a token and reads
/fhir, all over real HTTP to the service started as the Dockerfile starts it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from service.entrypoints.cli import main as cli
from service.exchange.auth import SmartBackendAuth
from service.exchange.client import FhirClient, FhirHttpError
from service.security.keys import SigningKey, load_private_key
from tests.support.app import REPO_ROOT
from tests.support.processes import RunningService, free_port, run_dockerfile_cmd

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningService, dict[str, SigningKey]]]:
    workdir = tmp_path_factory.mktemp("smart")
    port = free_port()
    env = {
        "KAPFHIR_DATABASE_URL": f"sqlite:///{workdir / 'kapfhir.db'}",
        "KAPFHIR_SIGNING_KEY_FILE": str(workdir / "signing-key.pem"),
        "KAPFHIR_BASE_URL": f"http://127.0.0.1:{port}",
    }
    runner = CliRunner()
    keys: dict[str, SigningKey] = {}
    for alg in ("RS384", "ES384"):
        key_path = workdir / f"client-{alg}.pem"
        generated = runner.invoke(cli, ["keys", "generate", "--alg", alg, "--out", str(key_path)], env=env)
        assert generated.exit_code == 0, generated.output
        (workdir / f"jwks-{alg}.json").write_text(generated.output)
        added = runner.invoke(
            cli,
            [
                "clients",
                "add",
                "--client-id",
                f"ehr-{alg}",
                "--clinic",
                "demo",
                "--scopes",
                "system/Patient.rs",
                "--jwks",
                str(workdir / f"jwks-{alg}.json"),
            ],
            env=env,
        )
        assert added.exit_code == 0, added.output
        keys[alg] = SigningKey.from_private_key(load_private_key(key_path), alg)
    service = run_dockerfile_cmd(REPO_ROOT, env, port=port)
    yield service, keys
    service.stop()


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_a_backend_client_gets_a_token_from_kapfhir_and_reads_fhir(
    registered: tuple[RunningService, dict[str, SigningKey]], alg: str
):
    service, keys = registered
    fhir_base = f"{service.base_url}/fhir"
    auth = SmartBackendAuth(base_url=fhir_base, client_id=f"ehr-{alg}", key=keys[alg], scope="system/Patient.rs")
    client = FhirClient(fhir_base, auth=auth)
    bundle = client.search("Patient", {"_count": "5"})
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert auth.resolve_token_url() == f"{service.base_url}/oauth2/token"
    # The token carries only what the client was allowed: reading Observations is refused.
    with pytest.raises(FhirHttpError) as refused:
        client.search("Observation", {"_count": "1"})
    assert refused.value.status == 403


def test_an_unregistered_key_gets_no_token(registered: tuple[RunningService, dict[str, SigningKey]]):
    service, keys = registered
    fhir_base = f"{service.base_url}/fhir"
    # ES384 key presented under the RS384 client's id: the signature does not verify against its JWKS.
    auth = SmartBackendAuth(base_url=fhir_base, client_id="ehr-RS384", key=keys["ES384"], scope="system/Patient.rs")
    with pytest.raises(Exception) as failed:
        FhirClient(fhir_base, auth=auth).search("Patient", {"_count": "1"})
    assert "invalid_client" in str(failed.value) or "401" in str(failed.value)


def test_the_smart_configuration_is_discoverable_under_the_fhir_base(
    registered: tuple[RunningService, dict[str, SigningKey]],
):
    import requests

    service, _ = registered
    doc = requests.get(f"{service.base_url}/fhir/.well-known/smart-configuration", timeout=10).json()
    assert doc["token_endpoint"] == f"{service.base_url}/oauth2/token"
    assert "private_key_jwt" in doc["token_endpoint_auth_methods_supported"]
