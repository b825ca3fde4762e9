"""Fault injection in front of sekmet: whatever goes wrong on the wire, every resource lands exactly once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.exchange.client import FhirClient, FhirHttpError, FhirTransportError, RetryPolicy
from service.exchange.planner import Links
from service.exchange.push import CREATED, push_bundle
from tests.support.charts import bundle_of, unique_chart
from tests.support.exchange import assert_each_once, consent, sandbox_target
from tests.support.proxy import Fault, FaultProxy, without_interactions
from tests.support.sekmet import Sekmet

NOW = datetime(2026, 3, 10, tzinfo=UTC)
FAST = RetryPolicy(max_attempts=6, backoff_base=0.05, backoff_max=0.2, retry_after_cap=1.0, max_elapsed=20)


def client_for(proxy: FaultProxy, read_timeout: float = 1.5) -> FhirClient:
    return FhirClient(f"{proxy.url}/fhir", retry=FAST, connect_timeout=1.0, read_timeout=read_timeout)


def writes(method: str, path: str) -> bool:
    return method in ("POST", "PUT")


FAULTS = [
    Fault("status", 500, match=writes),
    Fault("status", 503, retry_after="1", match=writes),
    Fault("status", 429, retry_after="0", match=writes),
    Fault("status", 500, after_forward=True, match=writes),  # processed, then an error: retry must not duplicate
    Fault("reset", match=writes),
    Fault("reset", after_forward=True, match=writes),  # processed, connection reset before the answer
    Fault("hang", seconds=2.0, after_forward=True, match=writes),  # processed, answer later than the timeout
    Fault("delay", seconds=0.5, match=writes),  # slow but within the timeout
]


@pytest.mark.parametrize("mode", ["transaction", "single"])
def test_every_episode_lands_exactly_once_through_faults(sekmet: Sekmet, proxy: FaultProxy, mode: str) -> None:
    if mode == "single":
        proxy.capability_transform = without_interactions("transaction", "batch")
    charts = [unique_chart(name) for name in ("racemic-iv-trd", "esketamine-sud", "discontinued-pcl5")]
    base = f"{proxy.url}/fhir"
    with client_for(proxy) as client:
        for chart in charts:
            bundle = bundle_of(chart)
            # faults spread over the requests of this push (single mode) or hit the transaction repeatedly
            proxy.add(*FAULTS[:5] if mode == "transaction" else FAULTS)
            report = None
            for _ in range(4):  # the worker would retry a failed job later; bounded here
                report = push_bundle(
                    client,
                    sandbox_target(base),
                    bundle,
                    now=NOW,
                    consents=[consent(substance_use_disclosure=True)],
                    links=Links(remote=report.remote) if report else None,
                )
                if report.ok:
                    break
            assert report is not None and report.ok, report.as_dict()
            assert report.mode == mode
            assert_each_once(sekmet, bundle, report)
    injected = [entry for entry in proxy.log if not isinstance(entry[2], int) or entry[2] >= 429]
    assert len(injected) >= 5


def test_retry_after_is_honoured_and_attempts_are_bounded(sekmet: Sekmet, proxy: FaultProxy) -> None:
    slept: list[float] = []
    client = FhirClient(
        f"{proxy.url}/fhir",
        retry=RetryPolicy(max_attempts=3, backoff_base=0.01, retry_after_cap=30),
        sleep=slept.append,
    )
    proxy.add(Fault("status", 503, retry_after="7"), Fault("status", 429, retry_after="120"))
    assert client.request("GET", "Patient", params={"_count": "1"}).status == 200
    assert slept == [7.0, 30.0]  # seconds honoured, long values capped
    proxy.add(*[Fault("status", 500) for _ in range(3)])
    with pytest.raises(FhirHttpError) as err:
        client.request("GET", "Patient")
    assert err.value.status == 500 and err.value.attempts == 3
    assert err.value.outcome["issue"][0]["diagnostics"] == "injected fault"
    proxy.add(*[Fault("reset") for _ in range(3)])
    with pytest.raises(FhirTransportError):
        client.request("GET", "Patient")
    client.close()


def test_a_timeout_on_a_non_idempotent_create_is_not_retried(sekmet: Sekmet, proxy: FaultProxy) -> None:
    proxy.add(Fault("hang", seconds=1.5, after_forward=True))
    patient = {"resourceType": "Patient", "name": [{"family": "Once"}]}
    with client_for(proxy, read_timeout=0.5) as client, pytest.raises(FhirTransportError) as err:
        client.create(patient)  # no If-None-Exist: a blind retry could duplicate
    assert err.value.attempts == 1
    assert [e for e in proxy.log if e[0] == "POST"] == [("POST", "/fhir/Patient", "hang")]


def test_nothing_created_twice_when_every_write_is_answered_late(sekmet: Sekmet, proxy: FaultProxy) -> None:
    bundle = bundle_of(unique_chart("discontinued-pcl5"))
    proxy.add(Fault("hang", seconds=1.2, after_forward=True, match=writes))
    with client_for(proxy, read_timeout=0.6) as client:
        report = push_bundle(client, sandbox_target(f"{proxy.url}/fhir"), bundle, consents=[consent()], now=NOW)
    assert report.ok, report.as_dict()
    assert report.totals()[CREATED] == 0  # the first attempt created them; the retry found them
    assert_each_once(sekmet, bundle, report)
