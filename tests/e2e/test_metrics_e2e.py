"""/metrics scraped from the service started as the Dockerfile starts it (gunicorn, two workers), after some traffic:
request counts by route template and status from both workers, latency histograms, the outbox by status, audit batch
timings and the projection lag, in Prometheus text format."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from service.security.keys import ensure_local_signing_key
from service.security.settings import DEV_AUDIENCE, DEV_ISSUER
from service.security.tokens import TokenIssuer
from tests.support.app import REPO_ROOT
from tests.support.processes import RunningService, free_port, run_dockerfile_cmd, venv_bin

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    workdir = tmp_path_factory.mktemp("metrics")
    running = run_dockerfile_cmd(
        REPO_ROOT,
        {
            "KAPFHIR_DATABASE_URL": f"sqlite:///{workdir / 'kapfhir.db'}",
            "KAPFHIR_SIGNING_KEY_FILE": str(workdir / "signing-key.pem"),
            "KAPFHIR_WORKERS": "2",
            # A target where nothing listens: every change queues a job, the worker cannot deliver it.
            "KAPFHIR_TARGETS": "local",
            "KAPFHIR_TARGET_LOCAL_BASE_URL": f"http://127.0.0.1:{free_port()}/fhir",
            "KAPFHIR_TARGET_LOCAL_ORGANIZATION_IDENTIFIER": "http://hl7.org/fhir/sid/us-npi|1999999984",
        },
    )
    yield running
    running.stop()


def _samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def _value(samples: dict[str, list], name: str, **labels: str) -> float:
    return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_after_traffic(service: RunningService):
    key = ensure_local_signing_key(service.env["KAPFHIR_SIGNING_KEY_FILE"])
    token = TokenIssuer(key, issuer=DEV_ISSUER, audience=DEV_AUDIENCE).issue(
        client_id="metrics-test", clinic_id="demo", scope="system/*.cruds"
    )
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token.access_token}"
    api = f"{service.base_url}/api/v1"
    prescriber = {"name": {"family": "Okafor", "given": ["Nneka"]}, "npi": "1234567893", "roles": ["prescriber"]}
    practitioner = http.post(f"{api}/practitioners", json=prescriber, timeout=10)
    assert practitioner.status_code == 201, practitioner.text
    person = {
        "mrn": {"system": "https://demo-clinic.example.org/fhir/mrn", "value": "SYN-MET-1"},
        "name": {"family": "Example", "given": ["Sam"]},
        "birth_date": "1985-04-12",
        "gender": "female",
    }
    patient = http.post(f"{api}/patients", json=person, timeout=10).json()
    opened = {
        "patient_id": patient["id"],
        "period_start": "2026-03-02T09:00:00-05:00",
        "indications": [{"kind": "depression", "icd10cm": "F33.2", "snomed": "36474008"}],
        "care_team": [{"practitioner_id": practitioner.json()["id"], "role": "prescriber"}],
    }
    episode = http.post(f"{api}/episodes", json=opened, timeout=10)
    assert episode.status_code == 201, episode.text
    reads = 20
    for _ in range(reads):  # spread over both workers
        assert http.get(f"{api}/episodes/{episode.json()['id']}", timeout=10).status_code == 200
    assert requests.get(f"{api}/patients", timeout=10).status_code == 401  # no token

    before_worker = _samples(requests.get(f"{service.base_url}/metrics", timeout=10).text)
    assert _value(before_worker, "kapfhir_sync_jobs", status="queued") == 1  # the outbox depth
    kapfhir = str(venv_bin(REPO_ROOT) / "kapfhir")
    worked = subprocess.run(
        [kapfhir, "worker", "--once"], env=service.env, capture_output=True, text=True, timeout=120, check=False
    )
    assert worked.returncode == 0, worked.stdout + worked.stderr

    scraped = requests.get(f"{service.base_url}/metrics", timeout=10)
    assert scraped.status_code == 200 and scraped.headers["Content-Type"].startswith("text/plain")
    samples = _samples(scraped.text)
    route = "/api/v1/episodes/<episode_id>"
    assert _value(samples, "kapfhir_http_requests_total", method="GET", route=route, status="200") == reads
    assert _value(samples, "kapfhir_http_requests_total", route="/api/v1/patients", status="401") == 1
    assert _value(samples, "kapfhir_http_request_duration_seconds_count", method="GET", route=route) == reads
    assert _value(samples, "kapfhir_http_request_duration_seconds_bucket", route=route, le="+Inf") == reads
    # every read is audited through the group commit
    assert _value(samples, "kapfhir_audit_batch_records_sum") >= reads
    assert _value(samples, "kapfhir_audit_batch_duration_seconds_count") >= 1
    # the job left the queue: held (no privacy consent) or waiting to retry; none delivered, none lost
    by_status = {s: _value(samples, "kapfhir_sync_jobs", status=s) for s in ("queued", "held", "dead", "delivered")}
    assert sum(by_status.values()) == 1 and by_status["delivered"] == 0
    assert by_status["held"] == 1, (by_status, worked.stdout)
    assert _value(samples, "kapfhir_fhir_projection_lag_episodes") == 0
    assert _value(samples, "kapfhir_database_up") == 1
    assert "SYN-MET-1" not in scraped.text and patient["id"] not in scraped.text  # no patient data
