"""Settings that agree with each other: the base URL follows the bind address, a preset's token URL follows an
overridden base URL, and `kapfhir config show` masks secrets and names contradictions."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from service.config import Settings, base_url_from_bind
from service.entrypoints.cli import main as cli
from service.exchange.targets import load_targets


@pytest.mark.parametrize(
    ("bind", "base_url"),
    [
        (None, "http://127.0.0.1:8000"),
        ("127.0.0.1:8123", "http://127.0.0.1:8123"),
        ("0.0.0.0:9000", "http://127.0.0.1:9000"),
        ("[::]:9000", "http://127.0.0.1:9000"),
        ("[::1]:8081", "http://[::1]:8081"),
        ("localhost:5000", "http://localhost:5000"),
        ("unix:/run/kapfhir.sock", "http://127.0.0.1:8000"),
    ],
)
def test_base_url_defaults_from_the_bind_address(bind: str | None, base_url: str):
    assert base_url_from_bind(bind) == base_url


def test_an_explicit_base_url_wins(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KAPFHIR_BIND", "0.0.0.0:8000")
    monkeypatch.setenv("KAPFHIR_BASE_URL", "https://kap.example.org/")
    assert Settings.from_env().base_url == "https://kap.example.org"
    monkeypatch.delenv("KAPFHIR_BASE_URL")
    assert Settings.from_env().base_url == "http://127.0.0.1:8000"


def _medplum(**env: str) -> dict[str, str]:
    return {
        "KAPFHIR_TARGETS": "medplum",
        "KAPFHIR_TARGET_MEDPLUM_CLIENT_ID": "app",
        "KAPFHIR_TARGET_MEDPLUM_CLIENT_SECRET": "s3cret-value",
        **env,
    }


def test_a_presets_token_url_follows_an_overridden_base_url():
    hosted = load_targets(_medplum())["medplum"]
    assert hosted.auth.token_url == "https://api.medplum.com/oauth2/token"
    own = load_targets(_medplum(KAPFHIR_TARGET_MEDPLUM_BASE_URL="http://127.0.0.1:8103/fhir/R4"))["medplum"]
    assert own.auth.token_url == "http://127.0.0.1:8103/oauth2/token"
    pinned = load_targets(
        _medplum(
            KAPFHIR_TARGET_MEDPLUM_BASE_URL="http://127.0.0.1:8103/fhir/R4",
            KAPFHIR_TARGET_MEDPLUM_TOKEN_URL="http://127.0.0.1:9999/token",
        )
    )["medplum"]
    assert pinned.auth.token_url == "http://127.0.0.1:9999/token"


def test_an_epic_instance_keeps_the_presets_layout_or_discovers_its_token_url():
    env = {
        "KAPFHIR_TARGET_EPIC_PRESET": "epic-sandbox",
        "KAPFHIR_TARGET_EPIC_CLIENT_ID": "c",
        "KAPFHIR_TARGET_EPIC_PRIVATE_KEY_PATH": "/nonexistent.pem",
    }
    same_layout = load_targets({**env, "KAPFHIR_TARGET_EPIC_BASE_URL": "https://ehr.example.org/prd/api/FHIR/R4"})
    assert same_layout["epic"].auth.token_url == "https://ehr.example.org/prd/oauth2/token"
    other = load_targets({**env, "KAPFHIR_TARGET_EPIC_BASE_URL": "https://ehr.example.org/r4"})
    assert other["epic"].auth.token_url is None  # discovered from .well-known/smart-configuration


def _show(monkeypatch: pytest.MonkeyPatch, **env: str):
    for key in list(os.environ):
        if key.startswith("KAPFHIR_"):
            monkeypatch.delenv(key)
    return CliRunner().invoke(cli, ["config", "show"], env=env)


def test_config_show_masks_secrets_and_says_where_each_value_came_from(monkeypatch: pytest.MonkeyPatch):
    result = _show(
        monkeypatch,
        KAPFHIR_BIND="127.0.0.1:8123",
        KAPFHIR_DATABASE_URL="postgresql+psycopg://kap:db-password@db.internal/kapfhir",
        **_medplum(KAPFHIR_TARGET_MEDPLUM_ORGANIZATION_IDENTIFIER="http://hl7.org/fhir/sid/us-npi|1999999984"),
    )
    assert result.exit_code == 0, result.output
    assert "db-password" not in result.output and "s3cret-value" not in result.output
    assert "postgresql+psycopg://kap:****@db.internal/kapfhir" in result.output
    assert "http://127.0.0.1:8123/oauth2/token" in result.output
    assert "derived from KAPFHIR_BIND" in result.output
    assert "secret=****" in result.output
    assert "warning" not in result.output


def test_config_show_warns_about_contradictions(monkeypatch: pytest.MonkeyPatch):
    result = _show(monkeypatch, KAPFHIR_BIND="127.0.0.1:9000", KAPFHIR_BASE_URL="http://127.0.0.1:8000", **_medplum())
    assert result.exit_code == 0, result.output
    assert "names port 8000 on this machine but gunicorn binds 127.0.0.1:9000" in result.output
    assert "target medplum has no organization_identifier" in result.output
    wildcard = _show(monkeypatch, KAPFHIR_BIND="0.0.0.0:8000")
    assert "KAPFHIR_BASE_URL is not set" in wildcard.output


def test_env_example_loads_in_a_shell_gives_the_defaults_and_is_documented(tmp_path):
    import subprocess

    from tests.support.app import REPO_ROOT

    example = REPO_ROOT / ".env.example"
    shown = subprocess.run(
        ["/bin/sh", "-c", f'set -a; . "{example}"; set +a; env'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    ).stdout
    loaded = dict(line.split("=", 1) for line in shown.splitlines() if line.startswith("KAPFHIR_"))
    assert loaded["KAPFHIR_RATE_LIMIT"] == "1200 per minute"
    defaults = Settings()
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith("KAPFHIR_"):
                patch.delenv(key)
        for key, value in loaded.items():
            patch.setenv(key, value)
        from_file = Settings.from_env()
    for name in ("database_url", "base_url", "rate_limit", "default_clinic_id", "default_clinic_name", "log_level"):
        assert getattr(from_file, name) == getattr(defaults, name), name
    readme = (REPO_ROOT / "README.md").read_text()
    undocumented = [key for key in loaded if key not in readme]
    assert undocumented == []
