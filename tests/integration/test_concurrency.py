"""Concurrent clients on one episode, on SQLite and PostgreSQL: no lost write, no duplicate."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from flask import Flask

from tests.support.app import Api
from tests.support.seed import dosing_session_body, seed_episode

CLIENTS = 8
SESSIONS_EACH = 4


def test_eight_clients_recording_sessions_into_one_episode_lose_nothing(app: Flask):
    ids = seed_episode(Api(app.test_client()))
    before = Api(app.test_client()).get(f"/episodes/{ids['episode']}").get_json()["version"]

    def record(client_number: int) -> list[int]:
        api = Api(app.test_client())
        statuses = []
        for n in range(SESSIONS_EACH):
            start = f"2026-02-{10 + n:02d}T{9 + client_number:02d}:00:00-05:00"
            body = dosing_session_body(ids, start=start)
            statuses.append(api.post(f"/episodes/{ids['episode']}/sessions", body).status_code)
        return statuses

    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses = [s for result in pool.map(record, range(CLIENTS)) for s in result]
    assert set(statuses) <= {201, 409}, statuses
    created = statuses.count(201)
    episode = Api(app.test_client()).get(f"/episodes/{ids['episode']}").get_json()
    assert len(episode["sessions"]) == created == CLIENTS * SESSIONS_EACH
    assert len(episode["doses"]) == created
    assert episode["version"] == before + created


def test_the_same_idempotency_key_from_eight_clients_at_once_creates_one_record(app: Flask):
    ids = seed_episode(Api(app.test_client()))
    body = dosing_session_body(ids)

    def post(_: int) -> tuple[int, str]:
        response = Api(app.test_client()).post(
            f"/episodes/{ids['episode']}/sessions", body, headers={"Idempotency-Key": "same-key"}
        )
        return response.status_code, response.get_data(as_text=True)

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(post, range(CLIENTS)))
    assert {status for status, _ in answers} == {201}
    assert len({text for _, text in answers}) == 1
    assert len(Api(app.test_client()).get(f"/episodes/{ids['episode']}/sessions").get_json()["items"]) == 1
