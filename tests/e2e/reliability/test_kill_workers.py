"""kill -9 of gunicorn workers during a stream of POSTs (each with an Idempotency-Key), on SQLite and PostgreSQL.

Every write that was answered 2xx is there after a restart of the whole service, exactly as answered; a write whose
answer was lost (connection reset by the kill) is retried with the same key and lands once; nothing is half-written:
every stored session has its dose and both readings, and no dose or reading exists without its session.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.e2e.reliability.conftest import SOAK
from tests.support import harness
from tests.support.seed import seed_episodes, session_bodies

CLIENTS = 4
WRITES = 160 if SOAK else 48
KILLS = 20 if SOAK else 6
KILL_EVERY_S = 0.3  # at least this apart, so that gunicorn has begun to replace the worker killed before
MAX_ATTEMPTS = 30
DEADLINE_S = 150 if SOAK else 60


def _worker_pids(service: harness.RunningService) -> list[int]:
    return sorted(harness.worker_rss_kb(service))


def test_kill_9_of_workers_loses_no_acknowledged_write_and_leaves_nothing_half_written(
    tmp_path: Path, service_url: str
):
    env = {"KAPFHIR_RATE_LIMIT": "100000 per minute", "KAPFHIR_SIGNING_KEY_FILE": str(tmp_path / "key.pem")}
    service = harness.start_service(tmp_path, service_url, workers=2, threads=4, extra_env=env)
    stop = threading.Event()
    kills: list[int] = []
    try:
        token = harness.mint_token(service)
        (ids,) = seed_episodes(harness.Http(service.base_url, token), 1)
        bodies = session_bodies([ids], WRITES, 0)
        keys = [f"kill9-{uuid.uuid4()}" for _ in bodies]
        deadline = time.monotonic() + DEADLINE_S

        acknowledged = [0]  # writes answered 2xx so far (the clients add to it)
        every = max(1, WRITES // (KILLS + 1))

        def killer() -> None:
            # A kill after every `every` acknowledged writes (and at least KILL_EVERY_S apart): the kills fall in the
            # middle of the stream however fast the service writes, with the other clients' writes in flight.
            last = 0.0
            while not stop.is_set() and len(kills) < KILLS and time.monotonic() < deadline:
                time.sleep(0.05)
                if acknowledged[0] < every * (len(kills) + 1) or time.monotonic() - last < KILL_EVERY_S:
                    continue
                last = time.monotonic()
                pids = _worker_pids(service)
                if pids:
                    pid = random.choice(pids)
                    try:
                        os.kill(pid, signal.SIGKILL)
                        kills.append(pid)
                    except ProcessLookupError:
                        pass

        def client(number: int) -> list[tuple[int, list[int | str], dict | None]]:
            session = requests.Session()
            session.headers.update({"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            out = []
            for i in range(number, len(bodies), CLIENTS):
                path, body = bodies[i]
                seen: list[int | str] = []
                answer = None
                for _ in range(MAX_ATTEMPTS):  # lost answers are retried with the same key
                    try:
                        r = session.post(
                            f"{service.base_url}{path}", data=body, headers={"Idempotency-Key": keys[i]}, timeout=20
                        )
                    except requests.RequestException as exc:
                        seen.append(type(exc).__name__)
                        time.sleep(0.1)
                        continue
                    seen.append(r.status_code)
                    if 200 <= r.status_code < 300:
                        answer = r.json()
                        acknowledged[0] += 1
                        break
                    if r.status_code in (409, 412, 502, 503):
                        time.sleep(0.05)
                        continue
                    break  # anything else is a failure the assertions below report
                if time.monotonic() > deadline:
                    out.append((i, seen, answer))
                    break
                out.append((i, seen, answer))
            return out

        killing = threading.Thread(target=killer, daemon=True)
        killing.start()
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [r for rs in pool.map(client, range(CLIENTS)) for r in rs]
        stop.set()
        killing.join(timeout=10)
    finally:
        service.stop()

    assert len(kills) >= 3, f"only {len(kills)} workers were killed"
    interrupted = [seen for _, seen, _ in results if any(isinstance(s, str) for s in seen)]
    bad = [(i, seen) for i, seen, answer in results if answer is None]
    assert not bad, f"writes never answered 2xx: {bad[:5]}"

    # Restart on the same database: what was acknowledged must be there, whole.
    restarted = harness.start_service(tmp_path, service_url, workers=2, threads=4, extra_env=env)
    try:
        http = harness.Http(restarted.base_url, harness.mint_token(restarted))
        status, episode = http.send("GET", f"/episodes/{ids['episode']}")
        assert status == 200
        sessions = {s["id"]: s for s in episode["sessions"] if s["kind"] == "dosing"}
        for _, _, answer in results:
            assert answer["id"] in sessions, "an acknowledged session is gone"
            status, stored = http.send("GET", f"/episodes/{ids['episode']}/sessions/{answer['id']}")
            assert status == 200
            assert {k: stored[k] for k in ("start", "end", "status")} == {
                k: answer[k] for k in ("start", "end", "status")
            }
        # no duplicate: one session per idempotency key, even where the answer was lost and retried
        assert len(sessions) == len(results), (len(sessions), len(results))
        # nothing half-written: each session with exactly its dose and both readings, no orphans
        doses: dict[str, int] = {}
        for dose in episode["doses"]:
            doses[dose["session_id"]] = doses.get(dose["session_id"], 0) + 1
        readings: dict[str, int] = {}
        for reading in episode["monitoring_readings"]:
            readings[reading["session_id"]] = readings.get(reading["session_id"], 0) + 1
        assert doses == dict.fromkeys(sessions, 1)
        assert readings == dict.fromkeys(sessions, 2)
    finally:
        restarted.stop()
    print(f"{len(kills)} kills, {len(interrupted)} writes interrupted and retried")
