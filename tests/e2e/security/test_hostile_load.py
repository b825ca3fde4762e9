"""Hostile load against gunicorn as the image starts it (issue 14): one clinic's bad input never fails another's
reads, slow clients cannot starve the service, and an unauthenticated flood is throttled with a bounded audit
trail. Every loop here is bounded in count and time; clients differ by loopback source address (127.0.0.x)."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import urllib3
from sqlalchemy import create_engine, select

from service.adapters import orm
from service.config import Settings
from service.entrypoints.cli import ensure_clinic
from tests.e2e.security.hostile import audit_rows, started_service, token

pytestmark = pytest.mark.e2e

PATIENT = {
    "mrn": {"system": "https://clinic-b.example.org/mrn", "value": "B-0001"},
    "name": {"family": "Bee", "given": ["Clinic"]},
    "birth_date": "1975-03-02",
    "gender": "female",
}


def _from(address: str) -> urllib3.PoolManager:
    """HTTP from another loopback source address: a different caller to the per-address budget."""
    return urllib3.PoolManager(source_address=(address, 0), retries=False, timeout=10)


@pytest.mark.postgres
def test_clinic_a_sending_bad_request_ids_and_tokens_never_fails_clinic_b_reads(request: pytest.FixtureRequest):
    with started_service(request, "postgresql") as (service, url):
        for clinic in ("clinic-a", "clinic-b"):
            ensure_clinic(Settings(database_url=url), clinic, clinic, f"https://{clinic}.example.org/fhir/id")
        b = requests.Session()
        b.headers["Authorization"] = f"Bearer {token(service, clinic='clinic-b', client_id='reader')}"
        created = b.post(f"{service.base_url}/api/v1/patients", json=PATIENT, timeout=10)
        assert created.status_code == 201, created.text
        patient_id = created.json()["id"]
        a_token = token(service, clinic="clinic-a", client_id="noisy")
        stop = threading.Event()
        a_statuses: Counter[int] = Counter()

        def clinic_a() -> None:
            http = _from("127.0.0.2")
            for i in range(2000):  # bounded; stops as soon as B is done
                if stop.is_set():
                    break
                headers = {"X-Request-ID": "r" * (101 + i % 8000)}
                headers["Authorization"] = f"Bearer {a_token}" if i % 2 else f"Bearer bad.{i}.token"
                path = "/api/v1/patients" if i % 3 else f"/fhir/Patient/{patient_id}"
                a_statuses[http.request("GET", service.base_url + path, headers=headers).status] += 1

        noisy = [threading.Thread(target=clinic_a, daemon=True) for _ in range(3)]
        for thread in noisy:
            thread.start()
        b_statuses: Counter[int] = Counter()
        try:
            for i in range(150):
                path = f"/api/v1/patients/{patient_id}" if i % 2 else "/fhir/Patient?identifier=B-0001"
                answer = b.get(service.base_url + path, timeout=10)
                b_statuses[answer.status_code] += 1
                if answer.status_code == 200 and i % 2 == 0:
                    assert answer.json()["total"] == 1  # B's own patient, found
        finally:
            stop.set()
            for thread in noisy:
                thread.join(timeout=30)
        assert b_statuses == Counter({200: 150}), b_statuses
        assert a_statuses[200] > 0 and a_statuses[401] > 0, a_statuses  # A was served and refused meanwhile
        assert not any(status >= 500 for status in a_statuses), a_statuses


def test_200_connections_trickling_headers_and_50_trickling_bodies_leave_healthz_and_reads_under_a_second(
    request: pytest.FixtureRequest,
):
    with started_service(request, "sqlite") as (service, _):
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token(service)}"
        assert http.get(f"{service.base_url}/api/v1/patients", timeout=10).status_code == 200
        slow: list[socket.socket] = []
        try:
            for i in range(250):
                sock = socket.create_connection(("127.0.0.1", service.port), timeout=5, source_address=("127.0.0.4", 0))
                if i < 200:  # headers one line at a time
                    sock.sendall(b"GET /api/v1/patients HTTP/1.1\r\nHost: slow\r\n")
                else:  # complete headers, then a body a few bytes at a time
                    sock.sendall(
                        b"POST /fhir HTTP/1.1\r\nHost: slow\r\nContent-Type: application/fhir+json\r\n"
                        b"Authorization: Bearer " + http.headers["Authorization"][7:].encode() + b"\r\n"
                        b"Content-Length: 100000\r\n\r\n{"
                    )
                slow.append(sock)
            timings = []
            for second in range(4):  # bounded: four rounds, one header line per slow connection each
                for i, sock in enumerate(slow):
                    try:
                        sock.sendall(f"X-Slow-{second}: still-sending\r\n".encode() if i < 200 else b'"a": 1,')
                    except OSError:
                        pass
                for path, session in (("/healthz", requests), ("/api/v1/patients", http)):
                    started = time.monotonic()
                    status = session.get(f"{service.base_url}{path}", timeout=5).status_code
                    timings.append((path, status, time.monotonic() - started))
                time.sleep(1)
        finally:
            for sock in slow:
                sock.close()
        assert all(status == 200 for _, status, _ in timings), timings
        assert max(elapsed for _, _, elapsed in timings) < 1.0, timings


def test_an_unauthenticated_flood_gets_429s_and_grows_the_audit_trail_by_a_bounded_number_of_rows(
    request: pytest.FixtureRequest,
):
    with started_service(request, "sqlite", KAPFHIR_RATE_LIMIT_PER_ADDRESS="100 per minute") as (service, url):
        before = audit_rows(url)

        def flood(worker: int) -> Counter[int]:
            http = _from("127.0.0.3")
            statuses: Counter[int] = Counter()
            for i in range(150):
                headers = {"Authorization": f"Bearer forged.{worker}.{i}", "X-Request-ID": "x" * 8000}
                statuses[http.request("GET", f"{service.base_url}/api/v1/patients", headers=headers).status] += 1
            return statuses

        with ThreadPoolExecutor(4) as pool:
            statuses = sum(pool.map(flood, range(4)), Counter())
        assert statuses[429] > 0 and set(statuses) <= {401, 429}, statuses
        # the budget holds across both workers (a shared count; each worker may overrun by its last 0.2 s of hits)
        assert statuses[401] <= 150, statuses
        grown = audit_rows(url) - before
        # first refusal per (address, status, route, minute) and worker, plus one row per minute for the rest
        assert 2 <= grown <= 16, grown
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    select(orm.audit_events).where(orm.audit_events.c.network_address == "127.0.0.3")
                ).all()
        finally:
            engine.dispose()
        assert {r.status for r in rows} == {401, 429}
        assert all(r.request_id is None or len(r.request_id) <= 100 for r in rows)
        # another address, with a valid token, is served; so is the probe
        other = requests.get(
            f"{service.base_url}/api/v1/patients", headers={"Authorization": f"Bearer {token(service)}"}, timeout=10
        )
        assert other.status_code == 200 and "Retry-After" not in other.headers
        assert requests.get(f"{service.base_url}/healthz", timeout=5).status_code == 200
        limited = _from("127.0.0.3").request("GET", f"{service.base_url}/api/v1/patients")
        assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
