"""The e2e harness runs exactly what the Dockerfile says; check it reads it right."""

from __future__ import annotations

import http.server
import os
import runpy
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT
from tests.support.processes import HealthCheck, free_port, parse_dockerfile

DOCKERFILE = REPO_ROOT / "Dockerfile"


def test_cmd_from_real_dockerfile() -> None:
    spec = parse_dockerfile(DOCKERFILE)
    assert spec.cmd == [
        "gunicorn",
        "--config",
        "gunicorn.conf.py",
        "service.entrypoints.asgi:app",
    ]


def test_healthcheck_from_real_dockerfile() -> None:
    healthcheck = parse_dockerfile(DOCKERFILE).healthcheck
    assert healthcheck is not None
    assert healthcheck.options["timeout"] == "5s"
    assert healthcheck.timeout_seconds == 5.0
    assert healthcheck.argv[0] == "python"
    script = " ".join(healthcheck.argv)
    assert "KAPFHIR_BIND" in script
    assert "/healthz" in script
    assert "127.0.0.1" in script


def test_gunicorn_config_named_by_cmd_exists() -> None:
    assert (REPO_ROOT / "gunicorn.conf.py").is_file()


def test_parses_continuations_comments_and_both_healthcheck_forms(
    tmp_path: Path,
) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM scratch\n"
        'CMD ["old"]\n'
        "HEALTHCHECK --interval=1m30s \\\n"
        "  # a comment inside the continuation\n"
        "  --timeout=500ms \\\n"
        "  CMD curl -fsS http://127.0.0.1/healthz || exit 1\n"
        'CMD ["app", \\\n  "--flag"]\n'
    )
    spec = parse_dockerfile(dockerfile)
    assert spec.cmd == ["app", "--flag"]
    assert spec.healthcheck == HealthCheck(
        command="curl -fsS http://127.0.0.1/healthz || exit 1",
        options={"interval": "1m30s", "timeout": "500ms"},
    )
    assert spec.healthcheck.argv[:2] == ["/bin/sh", "-c"]
    assert spec.healthcheck.timeout_seconds == 0.5


def test_healthcheck_none_and_shell_form_cmd(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM scratch\nHEALTHCHECK NONE\nCMD ["app"]\n')
    assert parse_dockerfile(dockerfile).healthcheck is None

    dockerfile.write_text("FROM scratch\nCMD gunicorn app:app\n")
    with pytest.raises(ValueError, match="JSON exec form"):
        parse_dockerfile(dockerfile)


class _Healthz(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def healthz_server() -> Iterator[tuple[int, type[_Healthz]]]:
    handler = type("Handler", (_Healthz,), {})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def _run_healthcheck(bind: str) -> int:
    healthcheck = parse_dockerfile(DOCKERFILE).healthcheck
    assert healthcheck is not None
    # "python" in the image is its interpreter; here it is the one running the tests.
    argv = [sys.executable, *healthcheck.argv[1:]]
    env = {**os.environ, "KAPFHIR_BIND": bind}
    result = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
    return result.returncode


def test_healthcheck_command_takes_port_from_kapfhir_bind(
    healthz_server: tuple[int, type[_Healthz]],
) -> None:
    port, handler = healthz_server
    assert _run_healthcheck(f"0.0.0.0:{port}") == 0
    handler.status = 503
    assert _run_healthcheck(f"0.0.0.0:{port}") != 0
    assert _run_healthcheck(f"127.0.0.1:{free_port()}") != 0


def test_gunicorn_config_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAPFHIR_BIND", "127.0.0.1:9999")
    monkeypatch.setenv("KAPFHIR_WORKERS", "3")
    monkeypatch.setenv("KAPFHIR_THREADS", "1")
    monkeypatch.setenv("KAPFHIR_TIMEOUT", "12")
    config = runpy.run_path(str(REPO_ROOT / "gunicorn.conf.py"))
    assert config["bind"] == "127.0.0.1:9999"
    assert (config["workers"], config["timeout"]) == (3, 12)
    # asyncio worker (slow clients hold no thread); KAPFHIR_THREADS sizes the app's pool in service/entrypoints/asgi.py
    assert config["worker_class"] == "service.entrypoints.gunicorn_worker.ProblemJsonAsgiWorker"
    assert config["limit_request_field_size"] >= len("Authorization: Bearer ") + 16_384  # README: 16 kB tokens
    assert config["accesslog"] is None
    assert config["errorlog"] == "-"

    for name in (
        "KAPFHIR_BIND",
        "KAPFHIR_WORKERS",
        "KAPFHIR_THREADS",
        "KAPFHIR_TIMEOUT",
    ):
        monkeypatch.delenv(name)
    config = runpy.run_path(str(REPO_ROOT / "gunicorn.conf.py"))
    assert config["bind"] == "127.0.0.1:8000"
    assert (config["workers"], config["timeout"]) == (2, 30)
    assert config["worker_class"] == "service.entrypoints.gunicorn_worker.ProblemJsonAsgiWorker"
