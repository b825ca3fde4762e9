"""compose.yaml, checked and run: `docker compose config` where Docker Compose is installed, and everywhere the same
stack without Docker: the services' own commands and environment from compose.yaml (host names and ports swapped
for loopback ones) on the throwaway PostgreSQL cluster: the one-shot migration, two instances started with the
Dockerfile's CMD sharing one database and one signing key, the outbox worker, and sekmet-fhir as the target."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from tests.support.app import REPO_ROOT
from tests.support.postgres import PostgresServer
from tests.support.processes import RunningService, free_port, run_dockerfile_cmd, venv_bin

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

COMPOSE = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
KAPFHIR_SERVICES = ("migrate", "kapfhir-1", "kapfhir-2", "worker")
ORG = "http://hl7.org/fhir/sid/us-npi|1999999984"


def _docker_compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    found = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30, check=False)
    return [docker, "compose"] if found.returncode == 0 else None


def test_the_compose_file_describes_the_stack():
    compose = _docker_compose()
    if compose is not None:
        checked = subprocess.run(
            [*compose, "-f", str(REPO_ROOT / "compose.yaml"), "config", "--quiet"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr
    # Without Docker (and with it): what the file promises, and commands that exist.
    assert set(SERVICES) == {"db", "migrate", "kapfhir-1", "kapfhir-2", "worker", "sekmet", "proxy"}
    proxy = COMPOSE["configs"]["proxy-config"]["content"]
    assert "server kapfhir-1:8000;" in proxy and "server kapfhir-2:8000;" in proxy
    for name in KAPFHIR_SERVICES:
        environment = SERVICES[name]["environment"]
        assert environment["KAPFHIR_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert environment["KAPFHIR_MIGRATE_ON_START"] == "0", name
    for name in ("kapfhir-1", "kapfhir-2"):
        assert "command" not in SERVICES[name], "the instances run the image's CMD"
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    kapfhir = str(venv_bin(REPO_ROOT) / "kapfhir")
    for name in ("migrate", "worker"):
        command = SERVICES[name]["command"]
        assert command[0] == "kapfhir"
        shown = subprocess.run([kapfhir, *command[1:], "--help"], capture_output=True, text=True, check=False)
        assert shown.returncode == 0, f"{name}: {command} is not a kapfhir command: {shown.stderr}"


def _environment(name: str, database_url: str, workdir: Path, sekmet_fhir: str, base_url: str) -> dict[str, str]:
    """The service's environment from compose.yaml, with what names Docker hosts and volumes made local."""
    env = {key: str(value) for key, value in SERVICES[name]["environment"].items()}
    env.update(
        KAPFHIR_DATABASE_URL=database_url,
        KAPFHIR_SIGNING_KEY_FILE=str(workdir / "var" / Path(env["KAPFHIR_SIGNING_KEY_FILE"]).name),
        KAPFHIR_TARGET_LOCAL_BASE_URL=sekmet_fhir,
        KAPFHIR_BASE_URL=base_url,
    )
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("compose")
    database_url = postgres.create_database("compose")
    started: list[Any] = []
    try:
        # sekmet: the compose settings and command, on a loopback port
        port = free_port()
        settings = yaml.safe_load(COMPOSE["configs"]["sekmet-settings"]["content"])
        settings.update(
            base_url=f"http://127.0.0.1:{port}/fhir",
            data_dir=str(workdir / "sekmet" / "data"),
            own_private_key_path=str(workdir / "sekmet" / "keys" / "own.pem"),
        )
        (workdir / "sekmet.yaml").write_text(yaml.safe_dump(settings))
        command = list(SERVICES["sekmet"]["command"])
        command[command.index("-c") + 1] = str(workdir / "sekmet.yaml")
        command[command.index("--host") + 1] = "127.0.0.1"
        command[command.index("--port") + 1] = str(port)
        command[0] = str(venv_bin(REPO_ROOT) / "sekmet")
        sekmet_log = (workdir / "sekmet.log").open("wb")
        sekmet = subprocess.Popen(command, cwd=workdir, stdout=sekmet_log, stderr=subprocess.STDOUT)
        started.append(sekmet)
        sekmet_fhir = settings["base_url"]
        deadline = time.monotonic() + 30
        while not _answers(f"{sekmet_fhir}/metadata"):
            assert sekmet.poll() is None and time.monotonic() < deadline, (workdir / "sekmet.log").read_text()
            time.sleep(0.2)

        # migrate: the one-shot command, to completion
        (workdir / "var").mkdir()
        migrate_env = _environment("migrate", database_url, workdir, sekmet_fhir, "http://127.0.0.1:8080")
        kapfhir = str(venv_bin(REPO_ROOT) / "kapfhir")
        migrated = subprocess.run(
            [kapfhir, *SERVICES["migrate"]["command"][1:]], env=migrate_env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert migrated.returncode == 0, migrated.stderr

        # two instances: the Dockerfile's CMD with each one's compose environment
        instances: list[RunningService] = []
        for name in ("kapfhir-1", "kapfhir-2"):
            instance_port = free_port()
            env = _environment(name, database_url, workdir, sekmet_fhir, f"http://127.0.0.1:{instance_port}")
            instance = run_dockerfile_cmd(REPO_ROOT, env, port=instance_port)
            started.append(instance)
            instances.append(instance)

        # the worker, long-running as in compose
        worker_env = _environment("worker", database_url, workdir, sekmet_fhir, "http://127.0.0.1:8080")
        worker_log = (workdir / "worker.log").open("wb")
        worker = subprocess.Popen(
            [kapfhir, *SERVICES["worker"]["command"][1:]], env=worker_env, stdout=worker_log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        started.append(worker)
        yield {"instances": instances, "worker": worker, "sekmet": sekmet_fhir, "env": migrate_env, "dir": workdir}
    finally:
        for process in reversed(started):
            if isinstance(process, RunningService):
                process.stop()
            elif process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)
        postgres.drop_database(database_url)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_the_stack_records_on_one_instance_reads_on_the_other_and_the_worker_delivers(stack: dict[str, Any]):
    one, two = stack["instances"]
    token = subprocess.run(
        [str(venv_bin(REPO_ROOT) / "kapfhir"), "token"], env=stack["env"], capture_output=True, text=True, check=True
    ).stdout.strip()
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    mrn = {"system": "https://demo-clinic.example.org/fhir/mrn", "value": f"SYN-COMPOSE-{time.time_ns()}"}
    prescriber = {"name": {"family": "Okafor", "given": ["Nneka"]}, "npi": "1234567893", "roles": ["prescriber"]}
    practitioner = http.post(f"{one.base_url}/api/v1/practitioners", json=prescriber, timeout=10)
    assert practitioner.status_code == 201, practitioner.text
    person = {"mrn": mrn, "name": {"family": "Example", "given": ["Sam"]}, "birth_date": "1985-04-12",
              "gender": "female"}  # fmt: skip
    patient = http.post(f"{one.base_url}/api/v1/patients", json=person, timeout=10).json()
    system, value = ORG.split("|")
    consent = {"recipient_name": "Local test EHR", "recipient_identifier": {"system": system, "value": value},
               "signed_at": "2026-01-02T09:00:00-05:00"}  # fmt: skip
    shared = http.post(f"{one.base_url}/api/v1/patients/{patient['id']}/privacy-consents", json=consent, timeout=10)
    assert shared.status_code == 201, shared.text
    opened = {"patient_id": patient["id"], "period_start": "2026-03-02T09:00:00-05:00",
              "indications": [{"kind": "depression", "icd10cm": "F33.2", "snomed": "36474008"}],
              "care_team": [{"practitioner_id": practitioner.json()["id"], "role": "prescriber"}]}  # fmt: skip
    episode = http.post(f"{one.base_url}/api/v1/episodes", json=opened, timeout=10)
    assert episode.status_code == 201, episode.text

    # the other instance: same database, same key
    read = http.get(f"{two.base_url}/api/v1/episodes/{episode.json()['id']}", timeout=10)
    assert read.status_code == 200 and read.json()["patient_id"] == patient["id"]
    smart = requests.get(f"{two.base_url}/.well-known/smart-configuration", timeout=10).json()
    assert urlsplit(smart["token_endpoint"]).port == urlsplit(two.base_url).port

    # the worker delivers to the target: the Patient appears on sekmet (bounded wait)
    deadline = time.monotonic() + 60
    found: list[Any] = []
    while time.monotonic() < deadline and not found:
        bundle = requests.get(
            f"{stack['sekmet']}/Patient", params={"identifier": f"{mrn['system']}|{mrn['value']}"}, timeout=10
        ).json()
        found = bundle.get("entry") or []
        if not found:
            assert stack["worker"].poll() is None, (stack["dir"] / "worker.log").read_text()
            time.sleep(0.5)
    assert len(found) == 1, (stack["dir"] / "worker.log").read_text()
    statuses: list[str] = []
    while time.monotonic() < deadline and statuses != ["delivered"]:  # the job's own commit follows the push
        status = http.get(f"{two.base_url}/api/v1/episodes/{episode.json()['id']}/sync", timeout=10).json()
        statuses = [item["status"] for item in status["items"]]
        time.sleep(0.2)
    assert statuses == ["delivered"], (stack["dir"] / "worker.log").read_text()
    # /metrics on PostgreSQL, from either instance: the delivered job, no lag, the database up
    scraped = requests.get(f"{one.base_url}/metrics", timeout=10).text
    assert 'kapfhir_sync_jobs{status="delivered"} 1.0' in scraped
    assert "kapfhir_fhir_projection_lag_episodes 0.0" in scraped and "kapfhir_database_up 1.0" in scraped
