"""The service started exactly as the Dockerfile starts it (gunicorn, its config), over real HTTP."""

from __future__ import annotations

import json
import os
import re
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from service.fixture_loader import fixture_paths, load_fixture, replay
from service.security.keys import ensure_local_signing_key
from service.security.settings import DEV_AUDIENCE, DEV_ISSUER
from service.security.tokens import TokenIssuer
from tests.support.app import REPO_ROOT
from tests.support.processes import RunningService, run_dockerfile_cmd

pytestmark = pytest.mark.e2e

EPISODE_FIXTURES = fixture_paths(REPO_ROOT / "fixtures" / "episodes")
NESTED = {"doses": "doses", "monitoring_readings": "monitoring-readings", "side_effects": "side-effects"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    workdir = tmp_path_factory.mktemp("e2e")
    running = run_dockerfile_cmd(
        REPO_ROOT,
        {
            "KAPFHIR_DATABASE_URL": f"sqlite:///{workdir / 'kapfhir.db'}",
            "KAPFHIR_SIGNING_KEY_FILE": str(workdir / "signing-key.pem"),
            "KAPFHIR_WORKERS": "2",
        },
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def token(service: RunningService) -> str:
    """A token signed with the service's own key, as `kapfhir token` makes it."""
    key = ensure_local_signing_key(service.env["KAPFHIR_SIGNING_KEY_FILE"])
    issuer = TokenIssuer(key, issuer=DEV_ISSUER, audience=DEV_AUDIENCE)
    return issuer.issue(client_id="e2e", clinic_id="demo", scope="system/*.cruds").access_token


class Recorder:
    """Sends fixture requests over HTTP and remembers the last representation of every record it saw."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.records: dict[str, tuple[str, dict[str, Any]]] = {}  # id -> (read path, last body)

    def send(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        response = self.http.request(method, f"{self.base_url}/api/v1{path}", json=body, timeout=30)
        data = response.json()
        if response.ok and isinstance(data, dict) and "id" in data and method in ("POST", "PUT"):
            self._remember(method, path, data)
        return response.status_code, data

    def _remember(self, method: str, path: str, data: dict[str, Any]) -> None:
        collection_path = path if method == "POST" else path.rsplit("/", 1)[0]
        collection_path = re.sub(r"/entered-in-error$|/withdrawal$|/acknowledgement$", "", collection_path)
        if collection_path.endswith(data["id"]):
            collection_path = collection_path.rsplit("/", 1)[0]
        if collection_path.endswith(("/phase-transitions", "/acknowledgement")) or "safety-flags" in collection_path:
            return
        body = {k: v for k, v in data.items() if k not in NESTED}
        self.records[data["id"]] = (f"{collection_path}/{data['id']}", body)
        episode = re.match(r"(/episodes/[^/]+)/sessions$", collection_path)
        for key, collection in NESTED.items():
            for child in data.get(key, []) if episode else []:
                self.records[child["id"]] = (f"{episode.group(1)}/{collection}/{child['id']}", child)


def test_healthcheck_of_the_dockerfile_passes_against_the_running_service(service: RunningService):
    assert service.run_healthcheck() == 0
    ready = requests.get(f"{service.base_url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def _worker_of_connection(service: RunningService) -> dict[int, int]:
    """Client port of each established connection to the service -> pid of the worker process holding it."""
    children = Path(f"/proc/{service.process.pid}/task/{service.process.pid}/children").read_text().split()
    owner = {}
    for pid in map(int, children):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:  # closed meanwhile (the worker's own files come and go)
                continue
            if target.startswith("socket:["):
                owner[int(target[8:-1])] = pid
    held = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, remote_port = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        if local_port == service.port and fields[3] == "01" and int(fields[9]) in owner:  # 01: ESTABLISHED
            held[remote_port] = owner[int(fields[9])]
    return held


def test_a_clients_keep_alive_connections_are_spread_over_the_workers(service: RunningService):
    """An EHR's connection pool opens its connections at once and keeps them: they must not all land on one worker
    (gunicorn.conf.py: reuse_port), which would leave the other workers idle under its load."""
    connections = [socket.socket() for _ in range(16)]
    try:
        for connection in connections:  # all at once, as a pool (or wrk) opens them
            connection.setblocking(False)
            connection.connect_ex(("127.0.0.1", service.port))
        for connection in connections:
            select.select([], [connection], [], 10)
            connection.setblocking(True)
            connection.settimeout(10)
        for connection in connections:  # a request on each, so that every connection has been accepted
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: kapfhir\r\n\r\n")
            assert connection.recv(4096).startswith(b"HTTP/1.1 200")
        mine = {c.getsockname()[1] for c in connections}
        held = {port: pid for port, pid in _worker_of_connection(service).items() if port in mine}
        assert len(held) == 16, held
        assert len(set(held.values())) == 2, f"all 16 connections on one worker: {held}"
    finally:
        for connection in connections:
            connection.close()


@pytest.mark.parametrize("path", EPISODE_FIXTURES, ids=[p.stem for p in EPISODE_FIXTURES])
def test_every_fixture_episode_posted_over_http_reads_back_equal(service: RunningService, token: str, path: Path):
    fixture = load_fixture(path)
    recorder = Recorder(service.base_url, token)
    ids = replay(fixture, recorder.send)
    assert recorder.records, "the fixture created nothing"
    for read_path, last_seen in recorder.records.values():
        current = recorder.http.get(f"{service.base_url}/api/v1{read_path}", timeout=30)
        assert current.status_code == 200, read_path
        body = current.json()
        if "/episodes/" in read_path and read_path.count("/") == 2:
            # The episode itself changes with every record: compare its own fields.
            assert {k: body[k] for k in ("patient_id", "indications", "period_start")} == {
                k: last_seen[k] for k in ("patient_id", "indications", "period_start")
            }
        else:
            assert body == last_seen, f"{read_path} changed between write and read"
    episode = recorder.http.get(f"{service.base_url}/api/v1/episodes/{ids['episode']}", timeout=30).json()
    raised = {
        f["rule_id"]
        for f in recorder.http.get(
            f"{service.base_url}/api/v1/episodes/{ids['episode']}/safety-flags", timeout=30
        ).json()["items"]
        if f["status"] in ("open", "acknowledged")
    }
    assert raised == set(fixture["expected_flags"])
    assert "SYNTHETIC NOTE" not in json.dumps(episode)


def test_logs_carry_route_templates_and_no_patient_data(service: RunningService):
    logs = service.logs().stderr
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert lines, logs[-2000:]
    request_lines = [line for line in lines if line.get("msg") == "request"]
    assert request_lines and all(
        "<" in line["route"]
        or line["route"]
        in (
            "/healthz",
            "/readyz",
            "/api/v1/patients",
            "/api/v1/practitioners",
            "/api/v1/episodes",
            "/api/v1/clinic/healthcare-setting",  # fixture c records the clinic's REMS healthcare setting
        )
        for line in request_lines
    )
    for fixture_path in EPISODE_FIXTURES:
        patient = load_fixture(fixture_path)["steps"][0:6]
        for step in patient:
            body = step.get("body") or {}
            if "mrn" in body:
                assert body["mrn"]["value"] not in logs and body["name"]["family"] not in logs
