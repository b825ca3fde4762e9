"""What the push tests against a real FHIR server (sekmet-fhir) share: the clinic's organization, a fixed clock, a
sandbox target, a privacy consent permitting the share, and the check that every pushed resource is there once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from service.exchange.planner import entry_key
from service.exchange.privacy import OrganizationRef, PrivacyConsent
from service.exchange.push import CREATED, EXISTING, UPDATED
from service.exchange.targets import OrganizationIdentifier, Target
from tests.support.sekmet import Sekmet

__all__ = ["NOW", "ORG", "assert_each_once", "consent", "keyed_entries", "sandbox_target"]

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
