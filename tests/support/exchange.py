"""What the push tests against a real FHIR server (sekmet-fhir) share: the clinic's organization, a fixed clock, a
sandbox target, a privacy consent permitting the share, a push again after a first one, and the check that every
pushed resource is there once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from service.exchange.client import FhirClient
from service.exchange.planner import Links, entry_key
from service.exchange.privacy import OrganizationRef, PrivacyConsent
from service.exchange.push import CREATED, EXISTING, UPDATED, PushReport, push_bundle
from service.exchange.targets import OrganizationIdentifier, Target
from tests.support.sekmet import Sekmet

__all__ = ["NOW", "ORG", "assert_each_once", "consent", "keyed_entries", "push_again", "sandbox_target"]

NOW = datetime(2026, 3, 10, tzinfo=UTC)  # the push's clock: consents are judged at this instant
ORG = OrganizationIdentifier("http://hl7.org/fhir/sid/us-npi", "1999999984")  # the receiving organization (NPI)


def sandbox_target(base_url: str) -> Target:
    """A target named sekmet at base_url that may create patients (write policy sandbox), for ORG."""
    return Target(name="sekmet", base_url=base_url, write_policy="sandbox", organization_identifier=ORG)


def consent(**kw: Any) -> PrivacyConsent:
    """An active privacy consent permitting the share with ORG since 30 days before NOW; kw overrides fields."""
    base = {
        "id": "pc-1",
        "status": "active",
        "decision": "permit",
        "recipients": (OrganizationRef(ORG.system, ORG.value),),
        "period_start": NOW - timedelta(days=30),
    }
    return PrivacyConsent(**{**base, **kw})


def push_again(client: FhirClient, target: Target, bundle: dict, first: PushReport, **kw: Any) -> PushReport:
    """``bundle`` pushed as the outbox pushes an episode again: with the links (the target's patient, the remote ids
    and versions) that ``first`` left, under the same consent and clock; ``kw`` goes on to ``push_bundle``."""
    return push_bundle(
        client,
        target,
        bundle,
        consents=[consent()],
        now=NOW,
        links=Links(patient_id=first.patient_id, remote=first.remote),
        **kw,
    )


def keyed_entries(bundle: dict) -> list[tuple[str, str, str | None]]:
    """(resource type, entry key, conditional query or None) of every entry of a transaction bundle."""
    out = []
    for e in bundle["entry"]:
        req = e["request"]
        query = req.get("ifNoneExist") or (req["url"].split("?", 1)[1] if "?" in req["url"] else None)
        out.append((e["resource"]["resourceType"], entry_key(e), query))
    return out


def assert_each_once(server: Sekmet, bundle: dict, report: Any) -> None:
    """Every resource the push reports as on the server is there exactly once, by business identifier."""
    on_server = {r.key for r in report.results if r.outcome in (CREATED, EXISTING, UPDATED)}
    assert on_server
    for rtype, key, query in keyed_entries(bundle):
        if key in on_server and query:
            assert server.count(rtype, query) == 1, key
