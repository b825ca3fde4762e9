"""A real FHIR server (sekmet-fhir) on a free loopback port for the exchange and reliability tests and bench/, and
the pytest fixtures on it (a plugin of tests/conftest.py): the open server, one with SMART Backend Services clients,
the fault proxy in front of it, unique charts."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from service.domain.chart import EpisodeChart
from service.security.keys import SigningKey, generate_private_key, write_private_key
from tests.support.charts import unique_chart
from tests.support.processes import free_port
from tests.support.proxy import FaultProxy

SEKMET = shutil.which("sekmet") or str(Path(sys.executable).with_name("sekmet"))
READY_TIMEOUT = 30.0


@dataclass
class Sekmet:
    base_url: str
    root_url: str
    process: subprocess.Popen
    keys: dict[str, SigningKey]

    def count(self, resource_type: str, query: str | None = None) -> int:
        params: list[tuple[str, str]] = [("_summary", "count")]
        if query:
            key, _, value = query.partition("=")
            params.append((key, value))
        resp = requests.get(f"{self.base_url}/{resource_type}", params=params, headers=self.headers(), timeout=10)
        resp.raise_for_status()
        return resp.json()["total"]

    def search(self, resource_type: str, query: str) -> list[dict]:
        key, _, value = query.partition("=")
        resp = requests.get(f"{self.base_url}/{resource_type}", params={key: value}, headers=self.headers(), timeout=10)
        resp.raise_for_status()
        return [e["resource"] for e in resp.json().get("entry", []) if e.get("search", {}).get("mode") == "match"]

    def read(self, reference: str) -> dict:
        resp = requests.get(f"{self.base_url}/{reference}", headers=self.headers(), timeout=10)
        resp.raise_for_status()
        return resp.json()

    def create(self, resource: dict) -> dict:
        resp = requests.post(
            f"{self.base_url}/{resource['resourceType']}",
            json=resource,
            headers={**self.headers(), "Content-Type": "application/fhir+json"},
            timeout=10,
        )
        resp.raise_for_status()
        return resp.json()

    def headers(self) -> dict[str, str]:
        return {"Authorization": "Bearer static-test-token"} if self.keys else {}


def start_sekmet(workdir: Path, *, smart: bool) -> Sekmet:
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    keys: dict[str, SigningKey] = {}
    settings: dict = {
        "base_url": f"{root}/fhir",
        "data_dir": str(workdir / "data"),
        "own_private_key_path": str(workdir / "keys" / "own.pem"),
        "simulator": {"enabled": False},
        "log_inbound": False,
        "validation": {"inbound": "strict"},
    }
    if smart:
        clients = []
        for client_id, alg in (("kap-rsa", "RS384"), ("kap-ec", "ES384")):
            key = generate_private_key(alg)
            write_private_key(key, workdir / f"{client_id}.pem")
            signing = SigningKey.from_private_key(key, alg)
            keys[client_id] = signing
            # one key type per client: sekmet 0.1.1 answers 500 to a JWKS mixing RSA and EC keys
            clients.append({"client_id": client_id, "jwks": signing.public_jwks(), "scopes": "system/*.*"})
        clients.append({"client_id": "kap-secret", "client_secret": "s3cret-for-tests", "scopes": "system/*.*"})
        settings["server_auth"] = {
            "types": ["smart", "bearer"],
            "tokens": ["static-test-token"],
            "smart_clients": clients,
            "token_lifetime": 300,
        }
    (workdir / "settings.yaml").write_text(yaml.safe_dump(settings))
    log = open(workdir / "sekmet.log", "wb")
    proc = subprocess.Popen(
        [SEKMET, "serve", "-c", str(workdir / "settings.yaml"), "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"sekmet exited: {(workdir / 'sekmet.log').read_text()[-2000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{root}/fhir/metadata", timeout=1).status_code == 200:
                    return Sekmet(f"{root}/fhir", root, proc, keys)
            time.sleep(0.1)
        raise RuntimeError("sekmet did not become ready in time")
    except BaseException:  # not ready, or interrupted while starting: do not leave it running
        proc.kill()
        proc.wait(timeout=10)
        raise


def stop_sekmet(server: Sekmet) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


@pytest.fixture(scope="session")
def sekmet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sekmet]:
    server = start_sekmet(tmp_path_factory.mktemp("sekmet-open"), smart=False)
    yield server
    stop_sekmet(server)


@pytest.fixture(scope="session")
def sekmet_smart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sekmet]:
    workdir = tmp_path_factory.mktemp("sekmet-smart")
    server = start_sekmet(workdir, smart=True)
    server.workdir = workdir  # type: ignore[attr-defined]
    yield server
    stop_sekmet(server)


@pytest.fixture
def proxy(sekmet: Sekmet) -> Iterator[FaultProxy]:
    p = FaultProxy(sekmet.root_url)
    yield p
    p.close()


@pytest.fixture
def chart_factory() -> Callable[..., EpisodeChart]:
    return unique_chart
