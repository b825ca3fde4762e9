"""Audited reads beside writes: do readers wait behind the writer?

Every read is audited in a short transaction of its own after the read (service/entrypoints/http.py::read).
This benchmark measures, in one run and side by side, the read throughput of R reader threads
(a) alone, (b) while a writer thread records dosing sessions as fast as it can, on SQLite (WAL) — the worst
case, since SQLite has one writer at a time. Every request goes through the real app: token check, scope check,
validation, persistence, audit. Nothing is cached across iterations.

Run: .venv/bin/python bench/audit_reads.py [--seconds 5] [--readers 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.app import Api, make_app
from tests.support.seed import dosing_session_body, seed_episode


def _run(seconds: float, readers: int, with_writer: bool) -> tuple[float, float, list[float]]:
    app = make_app(f"sqlite:///{tempfile.mkdtemp(prefix='kapfhir-bench-')}/k.db")
    api = Api(app.test_client())
    ids = seed_episode(api)
    stop = threading.Event()
    reads: list[int] = [0] * readers
    latencies: list[list[float]] = [[] for _ in range(readers)]
    writes = [0]

    def reader(index: int) -> None:
        client = Api(app.test_client(), api.token)
        while not stop.is_set():
            started = time.perf_counter()
            assert client.get(f"/patients/{ids['patient']}").status_code == 200
            latencies[index].append(time.perf_counter() - started)
            reads[index] += 1

    def writer() -> None:
        client = Api(app.test_client(), api.token)
        day = 0
        while not stop.is_set():
            day += 1
            start = f"2026-02-{10 + day % 15:02d}T09:00:00-05:00"
            assert (
                client.post(f"/episodes/{ids['episode']}/sessions", dosing_session_body(ids, start=start)).status_code
                == 201
            )
            writes[0] += 1

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(readers)]
    if with_writer:
        threads.append(threading.Thread(target=writer))
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    app.extensions["kapfhir.engine"].dispose()
    all_latencies = sorted(x for per in latencies for x in per)
    return sum(reads) / seconds, writes[0] / seconds, all_latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    alone, mixed, write_rates, p99_alone, p99_mixed = [], [], [], [], []
    for _ in range(args.repeats):
        rate, _, lat = _run(args.seconds, args.readers, with_writer=False)
        alone.append(rate)
        p99_alone.append(lat[int(len(lat) * 0.99)] * 1000)
        rate, writes, lat = _run(args.seconds, args.readers, with_writer=True)
        mixed.append(rate)
        write_rates.append(writes)
        p99_mixed.append(lat[int(len(lat) * 0.99)] * 1000)

    def fmt(values: list[float]) -> str:
        return f"{statistics.median(values):8.1f} (min {min(values):.1f}, max {max(values):.1f})"

    print(f"audited reads/s, {args.readers} readers alone:        {fmt(alone)}   p99 ms {fmt(p99_alone)}")
    print(f"audited reads/s, {args.readers} readers + 1 writer:   {fmt(mixed)}   p99 ms {fmt(p99_mixed)}")
    print(f"writes/s beside them:                      {fmt(write_rates)}")
    print(f"ratio reads with writer / alone:           {statistics.median(mixed) / statistics.median(alone):.2f}")


if __name__ == "__main__":
    main()
