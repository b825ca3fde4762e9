"""Eight HTTP clients record dosing sessions into one episode at once, against gunicorn (the Dockerfile's CMD), on
SQLite and on PostgreSQL: no lost write, no duplicate, and a conflict only ever answers 409 or 412."""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support import harness
from tests.support.seed import seed_episodes, session_bodies

CLIENTS = 8
SESSIONS_EACH = 5
MAX_RETRIES = 20
DEADLINE_S = 60


def test_eight_http_clients_on_one_episode_lose_nothing_and_duplicate_nothing(tmp_path: Path, service_url: str):
    service = harness.start_service(
        tmp_path, service_url, workers=2, threads=4, extra_env={"KAPFHIR_RATE_LIMIT": "100000 per minute"}
    )
    try:
        token = harness.mint_token(service)
        (ids,) = seed_episodes(harness.Http(service.base_url, token), 1)
        bodies = session_bodies([ids], CLIENTS * SESSIONS_EACH, 0)
        deadline = time.monotonic() + DEADLINE_S

        def client(number: int) -> list[tuple[int, list[int], dict | None]]:
            http = harness.Http(service.base_url, token)
            results = []
            for n in range(SESSIONS_EACH):
                path, body = bodies[number * SESSIONS_EACH + n]
                statuses: list[int] = []
                answer = None
                for _ in range(MAX_RETRIES):  # a conflict is retried: the write must land eventually
                    response = http.http.post(
                        f"{service.base_url}{path}", data=body, headers={"Content-Type": "application/json"}, timeout=30
                    )
                    statuses.append(response.status_code)
                    if response.status_code not in (409, 412) or time.monotonic() > deadline:
                        answer = response.json() if response.status_code == 201 else None
                        break
                results.append((number * SESSIONS_EACH + n, statuses, answer))
            return results

        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [r for rs in pool.map(client, range(CLIENTS)) for r in rs]

        every_status = {s for _, statuses, _ in results for s in statuses}
        assert every_status <= {201, 409, 412}, every_status
        assert all(answer is not None for _, _, answer in results), [s for _, s, a in results if a is None]

        http = harness.Http(service.base_url, token)
        status, episode = http.send("GET", f"/episodes/{ids['episode']}")
        assert status == 200
        sessions = [s for s in episode["sessions"] if s["kind"] == "dosing"]
        starts = [dt.datetime.fromisoformat(s["start"]) for s in sessions]
        assert len(starts) == len(set(starts)) == CLIENTS * SESSIONS_EACH, "a lost or duplicated session"
        stored = {s["id"] for s in sessions}
        answered = {answer["id"] for _, _, answer in results if answer}
        assert answered == stored
        doses_by_session: dict[str, int] = {}
        for dose in episode["doses"]:
            doses_by_session[dose["session_id"]] = doses_by_session.get(dose["session_id"], 0) + 1
        assert doses_by_session == dict.fromkeys(stored, 1), "a session without its dose, or a dose twice"
    finally:
        service.stop()
