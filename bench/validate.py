"""Benchmark (not a test): ``$validate`` latency, per resource type and per fixture bundle.

``$validate`` sits on the request path (``POST /fhir/$validate``, and every ``POST /fhir`` transaction validates each
entry first), so it must answer in request time. For each fixture bundle in ``fixtures/fhir/`` this prints the time
``validation.validate`` needs for the whole Bundle and, grouped by resource type, for each of its
resources validated alone (as ``POST /fhir/{type}/$validate`` does), plus the invalid fixtures of
``fixtures/invalid-fhir/``: median, min and max over the repeats, and the layers applied:

- structure (fhir.resources R4B), bindings (required bindings: our ValueSets and the R4 core ones), invariants
  (core invariants, direct checks), own (impossible dates, reference target types, the constraints of our
  StructureDefinitions by compiled fhirpathpy) -- always;
- profile (our kapfhir profile rules) -- when a kapfhir profile is claimed;
- domain -- a Bundle carrying an EpisodeOfCare is mapped into the domain and the safety rules run; a Patient or
  Condition claiming a kapfhir profile is reverse-mapped.

Nothing is cached across iterations: each run parses the JSON bytes anew (``orjson.loads``, timed, as the endpoint
does) and validates the fresh dict; no result is memoised. What lives for the process, as in the service, is built
on first use (one warm-up run, not timed) and reused: imports, the R4B model tables, the compiled FHIRPath
expressions of our constraints. ``--cold`` clears those process-level caches before every iteration as well, to
show the first-request cost.

    .venv/bin/python bench/validate.py [--repeats 20] [--cold]

``--compare`` (what ``make bench`` runs): ms per resource, p50 and p99, of ``$validate`` (``validate``, the function
the endpoint calls, after the JSON is parsed) and of pyfhircheck 0.2.0 (``Validator().validate_resource``, its
defaults) on the same resources in the same run: the HL7 validator sample cases (``../shared/hl7-validator-cases``,
when present) and every resource of the fixture bundles; plus how many of the sample cases each gets to the
reference validator's verdict.

    .venv/bin/python bench/validate.py --compare [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import validation as fv  # noqa: E402
from service.domain.rules import SafetyPolicy  # noqa: E402
from service.fhir.validate import DomainRules  # noqa: E402
from validation.operation import KAP_PREFIX  # noqa: E402

DOMAIN = DomainRules(SafetyPolicy())  # the domain rules $validate runs, under the default policy

BUNDLES = ROOT / "fixtures" / "fhir"
INVALID = ROOT / "fixtures" / "invalid-fhir"


def layers_of(resource: dict) -> str:
    def kap(r: dict) -> bool:
        return any(str(p).startswith(KAP_PREFIX) for p in r.get("meta", {}).get("profile", []) or [])

    base = ["structure", "bindings", "invariants", "own"]
    if resource.get("resourceType") == "Bundle":
        inner = [e.get("resource", {}) for e in resource.get("entry", [])]
        if any(kap(r) for r in inner):
            base.append("profile")
        if any(r.get("resourceType") == "EpisodeOfCare" for r in inner):
            base.append("domain")
    elif kap(resource):
        base.append("profile")
        if resource.get("resourceType") in ("Patient", "Condition"):
            base.append("domain")
    return "+".join(base)


def clear_process_caches() -> None:
    from validation import base, definitions, invariants, kapfhir_constraints, typed

    for fn in (
        kapfhir_constraints.sd_constraints,
        kapfhir_constraints.sd_keys,
        kapfhir_constraints._compiled,
        typed.model_of,
        typed.fields,
        typed.typed_fields,
        invariants.compiled_invariants,
        definitions.load,
        base._compiled,
    ):
        fn.cache_clear()


def timed(raw: bytes, repeats: int, cold: bool, expected: str | None = None) -> tuple[list[float], int]:
    run: Callable[[], list] = lambda: fv.validate(orjson.loads(raw), expected_type=expected, domain=DOMAIN)  # noqa: E731
    issues = len(run())  # warm-up: imports and process-level tables, as a running service has them
    times = []
    for _ in range(repeats):
        if cold:
            clear_process_caches()
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return times, issues


def row(label: str, times: list[float], issues: int, layers: str, n: int = 1) -> str:
    med = statistics.median(times) / n
    return f"{label:<44} {n:>5} {med:>9.2f} {min(times) / n:>9.2f} {max(times) / n:>9.2f} {issues:>6}  {layers}"


CASES = ROOT.parent / "shared" / "hl7-validator-cases" / "cases.json"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def compare(repeats: int) -> None:
    """kapfhir's $validate beside pyfhircheck 0.2.0 on the same resources, in this process, one after the other."""
    from pyfhircheck import Validator

    samples: list[tuple[str, dict, bool | None]] = []
    if CASES.is_file():
        samples += [(f"case {c['name']}", c["resource"], c["expect_error"]) for c in orjson.loads(CASES.read_bytes())]
    else:
        print(f"(sample cases not found at {CASES}: fixture resources only)")
    for path in sorted(BUNDLES.glob("*.json")):
        bundle = orjson.loads(path.read_bytes())
        samples += [(f"{path.stem} {e['resource']['resourceType']}", e["resource"], None) for e in bundle["entry"]]
    checker = Validator()
    engines: dict[str, Callable[[dict], bool]] = {
        "kapfhir $validate": lambda r: any(i.severity in ("error", "fatal") for i in fv.validate(r, domain=DOMAIN)),
        "pyfhircheck 0.2.0": lambda r: any(
            i.severity in ("error", "fatal") for i in checker.validate_resource(r).issues
        ),
    }
    print(
        f"$validate beside pyfhircheck: ms per resource over {len(samples)} resources "
        f"({sum(1 for s in samples if s[2] is not None)} HL7 sample cases + fixture resources), best of {repeats}"
    )
    header = f"{'validator':<20} {'p50':>8} {'p99':>8} {'max':>9} {'total s':>8}  agreement with the reference"
    print(header)
    print("-" * len(header))
    for name, run in engines.items():
        for _, resource, _ in samples:
            # warm-up pass, not timed: imports, definitions, the FHIRPath expressions compiled once per process
            run(orjson.loads(orjson.dumps(resource)))
        per_resource: list[float] = []
        agree = cases = 0
        for _, resource, expected in samples:
            raw = orjson.dumps(resource)
            best = float("inf")
            verdict = False
            for _ in range(repeats):
                fresh = orjson.loads(raw)
                start = time.perf_counter()
                verdict = run(fresh)
                best = min(best, (time.perf_counter() - start) * 1000)
            per_resource.append(best)
            if expected is not None:
                cases += 1
                agree += verdict == expected
        print(
            f"{name:<20} {percentile(per_resource, 0.5):>8.2f} {percentile(per_resource, 0.99):>8.2f} "
            f"{max(per_resource):>9.1f} {sum(per_resource) / 1000:>8.2f}  {agree}/{cases} sample cases"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--cold", action="store_true", help="clear process-level caches before every iteration")
    parser.add_argument("--compare", action="store_true", help="only: ms per resource beside pyfhircheck 0.2.0")
    args = parser.parse_args()
    if args.compare:
        compare(args.repeats)
        return
    header = f"{'input':<44} {'n':>5} {'median':>9} {'min':>9} {'max':>9} {'issues':>6}  layers"
    print(
        f"$validate latency in ms ({args.repeats} repeats, {'cold' if args.cold else 'warm process'}); "
        "per-type rows: ms per resource"
    )
    print(header)
    print("-" * len(header))
    for path in sorted(BUNDLES.glob("*.json")):
        raw = path.read_bytes()
        bundle = orjson.loads(raw)
        times, issues = timed(raw, args.repeats, args.cold)
        print(row(f"Bundle {path.stem}", times, issues, layers_of(bundle), 1))
        by_type: dict[str, list[dict]] = {}
        for entry in bundle.get("entry", []):
            by_type.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
        for rtype, resources in sorted(by_type.items()):
            total = [0.0] * args.repeats
            found = 0
            for resource in resources:
                t, n = timed(orjson.dumps(resource), args.repeats, args.cold, rtype)
                total = [a + b for a, b in zip(total, t, strict=True)]
                found += n
            print(row(f"  {rtype}", total, found, layers_of(resources[0]), len(resources)))
    print()
    for path in sorted(INVALID.glob("*.json")):
        case = orjson.loads(path.read_bytes())
        raw = orjson.dumps(case["resource"])
        times, issues = timed(raw, args.repeats, args.cold)
        print(row(f"invalid {path.stem}", times, issues, layers_of(case["resource"])))


if __name__ == "__main__":
    main()
