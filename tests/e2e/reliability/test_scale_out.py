"""Scale-out on PostgreSQL: two gunicorn instances and three `kapfhir worker` processes on one database push every
episode to a test FHIR server (sekmet-fhir, behind a counting proxy) exactly once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.reliability.conftest import SOAK
from tests.support import harness
from tests.support.postgres import PostgresServer
from tests.support.processes import venv_bin
from tests.support.proxy import FaultProxy
from tests.support.sekmet import Sekmet

pytestmark = pytest.mark.postgres

EPISODES = 16 if SOAK else 6
DEADLINE_S = 120 if SOAK else 45


def test_two_instances_and_three_workers_push_every_episode_exactly_once(
    tmp_path: Path, postgres: PostgresServer, sekmet: Sekmet
):
    url = postgres.create_database("scale")
    proxy = FaultProxy(sekmet.root_url)
    targets = harness.write_targets_file(tmp_path / "targets.json", f"{proxy.url}/fhir")
    env = {
        "KAPFHIR_TARGETS_FILE": str(targets),
        "KAPFHIR_SIGNING_KEY_FILE": str(tmp_path / "key.pem"),
        "KAPFHIR_RATE_LIMIT": "100000 per minute",
    }
    services: list[harness.RunningService] = []
    delivered, pending, alive, logs = False, [], [], []
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(2):
            services.append(harness.start_service(tmp_path / f"svc{n}", url, workers=2, threads=4, extra_env=env))
        worker_env = {**harness.env_without_kapfhir(), **env, "KAPFHIR_DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
        for n in range(3):
            workers.append(
                subprocess.Popen(
                    [str(venv_bin(harness.REPO_ROOT) / "kapfhir"), "worker", "--poll", "0.2", "--name", f"w{n}"],
                    cwd=harness.REPO_ROOT,
                    env=worker_env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
            )
        # Episodes recorded through both instances, alternately, while the workers run.
        https = [harness.Http(s.base_url, harness.mint_token(s)) for s in services]
        episodes: list[dict[str, Any]] = []
        fixtures = harness.all_fixtures()
        for n in range(EPISODES):
            http = https[n % 2]
            ids = harness.replay_fixture(http, fixtures[n % len(fixtures)])
            harness.consent_to_share(http, ids["patient"])
            mrn = http.send("GET", f"/patients/{ids['patient']}")[1]["mrn"]
            episodes.append({"ids": ids, "mrn": mrn, "http": http})

        def status_of(e: dict[str, Any]) -> str:
            try:
                items = e["http"].send("GET", f"/episodes/{e['ids']['episode']}/sync")[1]["items"]
            except requests.RequestException as exc:
                return f"unreachable: {exc}"
            return items[0]["status"] if items else "none"

        delivered = harness.wait_until(lambda: all(status_of(e) == "delivered" for e in episodes), DEADLINE_S, 0.5)
        pending = [] if delivered else [status_of(e) for e in episodes]
        time.sleep(1.0)  # a late duplicate delivery would show up in the proxy log now
        for e in episodes:  # what each target holds of ours, read while the service still runs
            e["remote"] = e["http"].send("GET", f"/episodes/{e['ids']['episode']}/sync")[1]["items"][0]["resources"]
    finally:
        outputs = []
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                out, _ = w.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(w.pid, signal.SIGKILL)
                out, _ = w.communicate(timeout=10)
            outputs.append(out.decode(errors="replace"))
        alive = [s.process.poll() is None for s in services]
        for s in services:
            s.stop()
        proxy.close()
        logs = [s.logs().stderr[-3000:] for s in services]

    assert all(alive), f"a gunicorn instance died: {logs}"
    assert delivered, f"not delivered: {pending}\nworkers: {outputs}"

    handled = [int(m) for o in outputs for m in re.findall(r"(\d+) job\(s\) handled", o)]
    assert len(handled) == 3, outputs
    transactions = [entry for entry in proxy.log if entry[0] == "POST" and entry[1].rstrip("/") == "/fhir"]
    # one transaction per episode (jobs handled also count deliveries held until the consent arrived), and one more:
    # fixture c records the clinic's healthcare setting (REMS), a change of the clinic's Organization, so the episode
    # that carries the Organization is sent again once; every resource still lands exactly once (below)
    assert EPISODES <= len(transactions) <= EPISODES + 1, (
        len(transactions),
        handled,
        Counter(f"{m} {p.split('?')[0]}" for m, p, _ in proxy.log),
    )
    for e in episodes:
        found = sekmet.search("Patient", f"identifier={e['mrn']['system']}|{e['mrn']['value']}")
        assert len(found) == 1, f"patient of episode {e['ids']['episode']} on the server {len(found)} times"
        for record in e["remote"]:
            if "identifier=" in record["key"]:
                query = record["key"].split("?", 1)[1]
                assert len(sekmet.search(record["resource_type"], query)) == 1, record["key"]
    postgres.drop_database(url)
