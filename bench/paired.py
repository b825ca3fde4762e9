"""Paired A/B of one read kind, served: two kapfhir services from this tree (gunicorn, as the Dockerfile starts it),
each with its own environment, measured in turns against the trivial ceiling measured just before each run.

Why paired: the shared VM's speed drifts by 30% within minutes, so two runs of `make bench` cannot tell a 10% change;
alternating the two sides in one run can. A variant is switched by an environment variable the code under test reads
(the sixth step of bench/CHANGES.md was measured this way).

    .venv/bin/python bench/paired.py --kind fhir_read --a KAPFHIR_THREADS=4 --b KAPFHIR_THREADS=8 [--runs 4]

Each service holds fixture episode a (the episode every read kind reads), and with ``--sessions N`` also N dosing
sessions in two other episodes, as the bench's clinic does by the time it searches (about 180).

Prints each run's rate, share of the ceiling and the service's CPU per request (every process of the service, read
from /proc), then each side's medians. SQLite files in a temporary directory; loopback only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import run_all as ra
from tests.support import harness
from tests.support.processes import RunningService
from tests.support.seed import seed_episodes, session_bodies

KINDS = ("fhir_read", "obs_search", "episode_read")


def _environment(pairs: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in pairs.split(",") if pair)


def _cpu_seconds(service: RunningService) -> float:
    """User and system CPU of the service's processes (gunicorn's workers and anything else the master started)."""
    children = subprocess.run(
        ["pgrep", "-P", str(service.process.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    ticks = 0
    for pid in children:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _target(service: RunningService, kind: str, sessions: int) -> tuple[str, dict[str, str]]:
    token = harness.mint_token(service)
    http = harness.Http(service.base_url, token)
    ids = harness.replay_fixture(http, harness.FIXTURES / "a-trd-iv-ketamine.json")
    if sessions:
        for path, body in session_bodies(seed_episodes(http, 2), min(sessions, 1000), 0):
            status = http.http.post(f"{service.base_url}{path}", data=body, headers=ra.JSON, timeout=60).status_code
            assert status == 201, (path, status)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    return ra.read_targets(service.base_url, http, ids, headers)[kind], headers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=KINDS, default="fhir_read")
    parser.add_argument("--a", default="", help="environment of side A: NAME=value,NAME=value")
    parser.add_argument("--b", default="", help="environment of side B")
    parser.add_argument("--runs", type=int, default=4, help="runs per side (bounded: at most 20)")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument(
        "--sessions", type=int, default=0, help="dosing sessions written into two other episodes first (at most 1000)"
    )
    args = parser.parse_args()
    plain = ra.write_script(Path(tempfile.mkdtemp(prefix="kapfhir-paired-")) / "plain.lua", "")
    trivial = harness.start_app_module("bench.trivial_app:app")
    services: dict[str, RunningService] = {}
    try:
        targets = {}
        for side, pairs in (("A", args.a), ("B", args.b)):
            workdir = Path(tempfile.mkdtemp(prefix=f"kapfhir-paired-{side}-"))
            services[side] = harness.start_service(
                workdir, f"sqlite:///{workdir}/kapfhir.db", extra_env={**ra.RATE_ENV, **_environment(pairs)}
            )
            targets[side] = _target(services[side], args.kind, args.sessions)
        results: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
        for run in range(min(args.runs, 20)):
            for side in ("A", "B") if run % 2 == 0 else ("B", "A"):
                ceiling = ra.wrk(f"{trivial.base_url}/trivial", plain, args.seconds, 16)["rps"]
                before = _cpu_seconds(services[side])
                url, headers = targets[side]
                measured = ra.wrk(url, plain, args.seconds, 16, headers=headers)
                cpu_ms = 1000 * (_cpu_seconds(services[side]) - before) / max(measured["requests"], 1)
                share = measured["rps"] / ceiling
                results[side].append((share, cpu_ms))
                print(
                    f"{side}: {measured['rps']:.0f} req/s, share {share:.3f}, CPU {cpu_ms:.2f} ms/request", flush=True
                )
        for side in ("A", "B"):
            shares, cpus = zip(*results[side], strict=True)
            print(f"{side} median: share {statistics.median(shares):.3f}, CPU {statistics.median(cpus):.2f} ms/request")
    finally:
        for service in services.values():
            service.stop()
        trivial.stop()


if __name__ == "__main__":
    main()
