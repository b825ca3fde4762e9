"""The CLI's own commands against a real database: clinics, clients (list, revoke, rotate-secret), token checks,
quiet load-fixtures and pull-patient's messages. Each command runs with only the environment, as a shell would."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from flask import Flask

from service.entrypoints.cli import main as cli
from tests.support.app import make_app


@pytest.fixture
def app(sqlite_url: str) -> Flask:
    return make_app(sqlite_url)


def _env(app: Flask) -> dict[str, str]:
    settings = app.extensions["kapfhir"].settings
    return {
        "KAPFHIR_DATABASE_URL": settings.database_url,
        "KAPFHIR_SIGNING_KEY_FILE": settings.security.signing_key_file,
        "KAPFHIR_LOG_LEVEL": "",
        "KAPFHIR_TARGETS": "",
        "KAPFHIR_TARGETS_FILE": "",
    }


def run(app: Flask, *args: str, **env: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={**_env(app), **env})


def _token_request(app: Flask, client_id: str, secret: str) -> int:
    answer = app.test_client().post(
        "/oauth2/token", data={"grant_type": "client_credentials", "scope": "system/*.rs"}, auth=(client_id, secret)
    )
    return answer.status_code


def test_clinics_add_and_list(app: Flask):
    added = run(app, "clinics", "add", "--id", "northside", "--name", "Northside KAP", "--identifier-system",
                "https://northside.example.org/fhir/id")  # fmt: skip
    assert added.exit_code == 0 and "clinic northside registered" in added.output
    listed = run(app, "clinics", "list")
    assert listed.exit_code == 0
    rows = {line.split()[0]: line for line in listed.output.splitlines()[1:]}
    assert set(rows) == {"demo", "northside"}
    assert "https://northside.example.org/fhir/id" in rows["northside"]
    bad = run(app, "clinics", "add", "--id", "x", "--name", "X", "--identifier-system", "not a uri")
    assert bad.exit_code == 2 and "must be a URI" in bad.output


def test_clients_list_revoke_and_rotate_secret(app: Flask):
    added = run(app, "clients", "add", "--client-id", "front-desk", "--clinic", "demo", "--scopes", "system/*.rs",
                "--secret")  # fmt: skip
    assert added.exit_code == 0, added.output
    first = added.output.split("(shown once): ")[1].strip()
    assert _token_request(app, "front-desk", first) == 200

    rotated = run(app, "clients", "rotate-secret", "front-desk")
    assert rotated.exit_code == 0, rotated.output
    second = rotated.output.split("(shown once): ")[1].strip()
    assert second != first
    assert _token_request(app, "front-desk", first) == 401  # the old secret stops working at once
    assert _token_request(app, "front-desk", second) == 200

    listed = run(app, "clients", "list")
    (row,) = [line for line in listed.output.splitlines() if line.startswith("front-desk")]
    assert row.split()[1:4] == ["demo", "secret", "enabled"]

    revoked = run(app, "clients", "revoke", "front-desk")
    assert revoked.exit_code == 0, revoked.output
    assert _token_request(app, "front-desk", second) == 401
    (row,) = [line for line in run(app, "clients", "list").output.splitlines() if line.startswith("front-desk")]
    assert "revoked" in row

    unknown = run(app, "clients", "revoke", "nobody")
    assert unknown.exit_code == 1 and "no client nobody" in unknown.output
    assert "no client nobody" in run(app, "clients", "rotate-secret", "nobody").output


def test_a_key_client_has_no_secret_to_rotate(app: Flask, tmp_path: Path):
    generated = run(app, "keys", "generate", "--out", str(tmp_path / "k.pem"))
    (tmp_path / "jwks.json").write_text(generated.output)
    added = run(app, "clients", "add", "--client-id", "ehr", "--clinic", "demo", "--scopes", "system/*.rs",
                "--jwks", str(tmp_path / "jwks.json"))  # fmt: skip
    assert added.exit_code == 0, added.output
    refused = run(app, "clients", "rotate-secret", "ehr")
    assert refused.exit_code == 1 and "authenticates with a key" in refused.output


def test_token_refuses_an_unknown_clinic_and_a_malformed_scope(app: Flask):
    typo = run(app, "token", "--clinic", "othr")
    assert typo.exit_code == 2
    assert "no clinic 'othr'; registered: demo" in typo.output
    for malformed, why in (
        ("system/Patient.xyz", "bad permissions"),
        ("system/Patinet.rs", "Patinet is not a FHIR R4 resource type"),
        ("system/HumanName.rs", "HumanName is not a FHIR R4 resource type"),
        ("Patient.rs", "not a SMART resource scope: Patient.rs"),
    ):
        refused = run(app, "token", "--scope", malformed)
        assert refused.exit_code == 2 and why in refused.output, refused.output
    issued = run(app, "token", "--clinic", "demo", "--scope", "system/Patient.rs")
    assert issued.exit_code == 0 and issued.output.count(".") == 2  # a JWT, nothing else


def test_load_fixtures_is_quiet_and_says_what_it_loaded(app: Flask):
    loaded = run(app, "load-fixtures")
    assert loaded.exit_code == 0, loaded.output
    lines = loaded.output.splitlines()
    assert not [line for line in lines if line.startswith("{")], "JSON log lines in the output"
    assert lines[-1].startswith("loaded 4 fixture episode(s) into clinic demo (")
    assert len(lines) == 5
    verbose = run(app, "-v", "load-fixtures", "--if-empty")
    assert "fixtures not loaded" in verbose.output


def test_pull_patient_explains_an_unknown_mrn(app: Flask):
    unknown = run(
        app,
        "pull-patient",
        "--target",
        "local",
        "--mrn",
        "NO-SUCH-MRN",
        KAPFHIR_TARGETS="local",
        KAPFHIR_TARGET_LOCAL_BASE_URL="http://127.0.0.1:9/fhir",
    )
    assert unknown.exit_code == 2
    assert "clinic demo has no patient with MRN NO-SUCH-MRN" in unknown.output
    assert "give --system" in unknown.output
    unreachable = run(
        app,
        "pull-patient",
        "--target",
        "local",
        "--mrn",
        "NO-SUCH-MRN",
        "--system",
        "https://demo-clinic.example.org/fhir/id",
        KAPFHIR_TARGETS="local",
        KAPFHIR_TARGET_LOCAL_BASE_URL="http://127.0.0.1:9/fhir",
    )
    assert unreachable.exit_code == 1
    assert "could not be searched" in unreachable.output and "connection refused" in unreachable.output
