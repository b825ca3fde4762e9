"""Benchmark (not a test): map + validate + serialize an episode, beside fhir.resources R4B parsing the result.

For each fixture chart (tests/support/charts.py) and a generated batch of about 10,000 resources it prints:
- ``produce``: to_transaction_bundle + validate_bundle(layers) + orjson.dumps, with the layers ``$validate``
  applies (validation.LAYERS: structure, bindings, invariants, profile), and again with the fast
  layers only (bindings, invariants, profile: no structural pass);
- ``parse``: ``Bundle.model_validate_json`` of the produced bytes (fhir.resources R4B);
- ``dumps``: ``orjson.dumps`` of the produced bundle alone;
and the ratios produce / parse (median, min, max over the repeats) and peak memory (tracemalloc, one run each).
Nothing is cached across iterations: each run maps the chart anew and validates the new bundle. What lives for the
process, as in the service, is built on first use and reused: imports and the per-model element tables of the
typed walk (built from the R4B model metadata). The invariants are direct Python checks (validation.DIRECT,
tested to agree with fhirpathpy); fhirpathpy is not on this path.
The structure layer is fhirkit-rs (R4 4.0.1, in Rust) plus the calendar and id checks of the typed walk; until it
replaced a pass through the R4B models (``Bundle.model_validate``), that pass alone cost about as much as the parse it
is compared with. The "fast layers" ratio is the mapping and our own checks.

    .venv/bin/python bench/mapping.py [--repeats 5] [--batch-resources 10000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fhir.resources.R4B.bundle import Bundle

from mappings.bundle import to_transaction_bundle
from service.domain.chart import EpisodeChart
from service.domain.model import MonitoringReading
from service.domain.vocabulary import ReadingTiming
from tests.support.charts import CHARTS, T0
from validation import FAST_LAYERS, LAYERS, validate_bundle

FAST = FAST_LAYERS


def batch_chart(resources: int) -> EpisodeChart:
    """The IV chart plus readings of six values each (six Observations per reading) up to ~N resources."""
    chart = CHARTS["racemic-iv-trd"]()
    base = len(to_transaction_bundle(chart)["entry"])
    records = dict(chart.episode.records)
    for n in range(max(0, (resources - base) // 6)):
        records[f"bench-r{n}"] = MonitoringReading(
            id=f"bench-r{n}",
            session_id="s-dose-1",
            taken_at=T0 + timedelta(seconds=n),
            timing=ReadingTiming.DURING,
            systolic_mmhg=120 + n % 20,
            diastolic_mmhg=80,
            heart_rate_per_min=70,
            spo2_percent=97,
            respiratory_rate_per_min=14,
            cadss_total=n % 30,
            recorded_at=T0,
            updated_at=T0,
        )
    return replace(chart, episode=replace(chart.episode, records=records))


def produce(chart: EpisodeChart, layers: tuple[str, ...]) -> bytes:
    bundle = to_transaction_bundle(chart)
    issues = validate_bundle(bundle, layers)
    if any(i.severity in ("fatal", "error") for i in issues):
        raise SystemExit(f"validation failed: {issues[:3]}")
    return orjson.dumps(bundle)


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return runs


def peak(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    fn()
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top / 1e6


def stats(runs: list[float]) -> str:
    return f"median {statistics.median(runs) * 1000:8.1f} ms  min {min(runs) * 1000:8.1f}  max {max(runs) * 1000:8.1f}"


def report(name: str, chart: EpisodeChart, repeats: int) -> None:
    payload = produce(chart, LAYERS)
    bundle = orjson.loads(payload)
    print(f"\n== {name}: {len(bundle['entry'])} resources, {len(payload) / 1e6:.2f} MB")
    full = timed(lambda: produce(chart, LAYERS), repeats)
    fast = timed(lambda: produce(chart, FAST), repeats)
    parse = timed(lambda: Bundle.model_validate_json(payload), repeats)
    dumps = timed(lambda: orjson.dumps(bundle), repeats)
    rows = (
        (f"produce ($validate layers: {', '.join(LAYERS)})", full, lambda: produce(chart, LAYERS)),
        (f"produce (fast layers: {', '.join(FAST)})", fast, lambda: produce(chart, FAST)),
        ("parse (R4B Bundle.model_validate_json)", parse, lambda: Bundle.model_validate_json(payload)),
        ("dumps (orjson.dumps)", dumps, lambda: orjson.dumps(bundle)),
    )
    for label, runs, fn in rows:
        print(f"  {label:<70} {stats(runs)}  peak {peak(fn):6.1f} MB")
    for label, runs in (("$validate layers", full), ("fast layers", fast)):
        ratios = [a / b for a, b in zip(runs, parse, strict=True)]
        print(
            f"  ratio produce/parse, {label}: median {statistics.median(ratios):.2f}  "
            f"min {min(ratios):.2f}  max {max(ratios):.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-resources", type=int, default=10_000)
    args = parser.parse_args()
    for name, make in CHARTS.items():
        report(name, make(), args.repeats)
    report(
        f"generated batch (~{args.batch_resources} resources)",
        batch_chart(args.batch_resources),
        max(1, min(args.repeats, 3)),
    )


if __name__ == "__main__":
    main()
