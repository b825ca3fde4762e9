"""The service as deployed, for the reliability tests (tests/e2e/reliability/) and the benchmarks (bench/).

Everything runs on 127.0.0.1: kapfhir started exactly as the Dockerfile's CMD (gunicorn + gunicorn.conf.py), a
throwaway PostgreSQL cluster, a local sekmet-fhir server, a counting proxy. Tokens are minted with the service's own
signing key, as `kapfhir token` (and tests/e2e) do.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from service.fixture_loader import fixture_paths, load_fixture, replay
from service.security.keys import ensure_local_signing_key
from service.security.settings import DEV_AUDIENCE, DEV_ISSUER
from service.security.tokens import TokenIssuer
from tests.support.paths import REPO_ROOT
from tests.support.postgres import PostgresServer
from tests.support.processes import RunningService, run_dockerfile_cmd
from tests.support.sekmet import Sekmet, start_sekmet, stop_sekmet

FIXTURES = REPO_ROOT / "fixtures" / "episodes"
ORG_SYSTEM, ORG_VALUE = "http://hl7.org/fhir/sid/us-npi", "1999999984"
NOW = "2026-01-02T09:00:00-05:00"


def start_service(
    workdir: Path,
    database_url: str,
    *,
    workers: int = 2,
    threads: int = 4,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
) -> RunningService:
    """kapfhir under gunicorn, started with exactly the Dockerfile's CMD."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        "KAPFHIR_DATABASE_URL": database_url,
        "KAPFHIR_SIGNING_KEY_FILE": str(workdir / "signing-key.pem"),
        "KAPFHIR_WORKERS": str(workers),
        "KAPFHIR_THREADS": str(threads),
        "KAPFHIR_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    return run_dockerfile_cmd(REPO_ROOT, env, port=port)


def start_app_module(
    app: str, workers: int = 2, threads: int = 4, extra_env: dict[str, str] | None = None
) -> RunningService:
    """Another WSGI app (``module:attribute``, e.g. bench's trivial app: the stack's ceiling) under the same gunicorn
    command and config as kapfhir."""
    dockerfile = Path(tempfile.mkdtemp(prefix="kapfhir-trivial-")) / "Dockerfile"
    spec = (REPO_ROOT / "Dockerfile").read_text()
    cmd = re.findall(r"^CMD (\[.*\])$", spec, flags=re.M)[-1]
    argv = json.loads(cmd)
    argv[-1] = app
    dockerfile.write_text(f"FROM scratch\nCMD {json.dumps(argv)}\n")
    env = {"KAPFHIR_WORKERS": str(workers), "KAPFHIR_THREADS": str(threads), "KAPFHIR_MIGRATE_ON_START": "0"}
    return run_dockerfile_cmd(REPO_ROOT, {**env, **(extra_env or {})}, dockerfile=dockerfile)


def mint_token(
    service: RunningService,
    scope: str = "system/*.cruds",
    clinic: str = "demo",
    client_id: str = "bench",
    lifetime: int = 3600,
) -> str:
    key = ensure_local_signing_key(service.env["KAPFHIR_SIGNING_KEY_FILE"])
    issuer = TokenIssuer(key, issuer=DEV_ISSUER, audience=DEV_AUDIENCE)
    try:
        return issuer.issue(client_id=client_id, clinic_id=clinic, scope=scope, lifetime=lifetime).access_token
    except TypeError:  # an issuer without a lifetime argument
        return issuer.issue(client_id=client_id, clinic_id=clinic, scope=scope).access_token


class Http:
    """A requests session on a running service with a bearer token."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def send(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        r = self.http.request(method, f"{self.base_url}/api/v1{path}", json=body, timeout=60, **kw)
        return r.status_code, r.json() if r.content else None

    def post(self, path: str, body: Any = None) -> requests.Response:
        return self.http.post(f"{self.base_url}/api/v1{path}", json=body, timeout=60)

    def created(self, path: str, body: Any, **kw: Any) -> dict:
        status, data = self.send("POST", path, body, **kw)
        if status != 201:
            raise AssertionError(f"POST {path}: {status} {data}")
        return data


def unique_fixture(path: Path, tag: str | None = None) -> dict:
    """A fixture episode whose patient MRN (and practitioner NPIs' uniqueness aside) is fresh."""
    tag = tag or uuid.uuid4().hex[:10]
    fixture = load_fixture(path)
    for step in fixture["steps"]:
        if step.get("path") == "/patients":
            step["body"] = {**step["body"], "mrn": {**step["body"]["mrn"], "value": f"SYN-{tag}"}}
        if step.get("path") == "/practitioners" and "npi" in step.get("body", {}):
            step["body"] = {**step["body"], "npi": fresh_npi()}
    return fixture


def fresh_npi() -> str:
    """A random NPI with a valid check digit (Luhn over the 80840 prefix)."""
    import random

    base = f"{random.randint(1, 2)}{random.randint(0, 99_999_999):08d}"
    digits = [int(d) for d in "80840" + base]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return base + str((10 - total % 10) % 10)


def replay_fixture(http: Http, path: Path, tag: str | None = None) -> dict[str, str]:
    return replay(unique_fixture(path, tag), http.send)


def consent_to_share(http: Http, patient_id: str) -> None:
    http.created(
        f"/patients/{patient_id}/privacy-consents",
        {
            "recipient_name": "Example EHR",
            "recipient_identifier": {"system": ORG_SYSTEM, "value": ORG_VALUE},
            "signed_at": NOW,
        },
    )


def write_targets_file(path: Path, base_url: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "targets": {
                    "ehr": {
                        "base_url": base_url,
                        "write_policy": "sandbox",
                        "organization_identifier": f"{ORG_SYSTEM}|{ORG_VALUE}",
                        "connect_timeout": 2,
                        "read_timeout": 30,
                    }
                }
            }
        )
    )
    return path


def commit_settings(url: str) -> tuple[dict[str, str], bool]:
    """(the commit settings a connection of kapfhir's engine gets on the database at ``url``, whether a commit it
    answers is on disk): SQLite's journal mode and synchronous level; PostgreSQL's fsync, synchronous_commit and
    full_page_writes."""
    from service.adapters.database import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                level = conn.exec_driver_sql("PRAGMA synchronous").scalar()
                settings = {
                    "journal_mode": str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()),
                    "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(level, str(level)),
                }
                return settings, settings["synchronous"] in ("FULL", "EXTRA")
            names = ("fsync", "synchronous_commit", "full_page_writes")
            settings = {name: str(conn.exec_driver_sql(f"SHOW {name}").scalar()) for name in names}
            return settings, all(value == "on" for value in settings.values())
    finally:
        engine.dispose()


@contextlib.contextmanager
def postgres(*, durable: bool = False) -> Iterator[PostgresServer]:
    """A throwaway cluster; ``durable``: commits flushed to disk as in production (benchmarks), not for speed."""
    server = PostgresServer(durable=durable).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def sekmet() -> Iterator[Sekmet]:
    server = start_sekmet(Path(tempfile.mkdtemp(prefix="kapfhir-sekmet-")), smart=False)
    try:
        yield server
    finally:
        stop_sekmet(server)


def worker_rss_kb(service: RunningService) -> dict[int, dict[str, int]]:
    """VmHWM (peak) and VmRSS of every gunicorn worker (children of the master), from /proc."""
    out: dict[int, dict[str, int]] = {}
    master = service.process.pid
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
        if int(fields.get("PPid", "0").strip()) != master:
            continue
        out[int(status.parent.name)] = {k: int(fields.get(k, "0 kB").split()[0]) for k in ("VmHWM", "VmRSS")}
    return out


def wait_until(predicate: Any, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def all_fixtures() -> list[Path]:
    return fixture_paths(FIXTURES)


def env_without_kapfhir() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KAPFHIR_")}
