"""Layer 4, profile: the kapfhir profile rules on the entries of a Bundle we emit or receive (unique urn:uuid
fullUrls, distinct conditional-create conditions, the security labels, a claimed kapfhir profile, a business
identifier, the US Core CarePlan narrative). The core and US Core profiles are ``validation.profiles``."""

from __future__ import annotations

from mappings import terminology as t
from validation.issues import Issue

_REQUIRED_LABELS = tuple((label["system"], label["code"]) for label in (t.SECURITY_RESTRICTED, t.SECURITY_PSY))


class BundleRules:
    """The rules of one Bundle, entry by entry (fullUrls and conditions must not repeat across entries)."""

    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self.seen_urls: set[str] = set()
        self.seen_conditions: set[str] = set()

    def entry(self, i: int, entry: dict) -> None:
        path = f"Bundle.entry[{i}]"
        resource = entry["resource"]
        self._full_url(path, entry.get("fullUrl", ""))
        request = entry.get("request")
        if request is not None:
            self._condition(path, request.get("ifNoneExist") or request["url"])
        self.issues += resource_rules(resource, f"{path}.resource")

    def _full_url(self, path: str, url: str) -> None:
        if not url.startswith("urn:uuid:") or url in self.seen_urls:
            self.issues.append(
                Issue("error", "business-rule", f"{path}.fullUrl", f"{url!r}: expected a unique urn:uuid")
            )
        self.seen_urls.add(url)

    def _condition(self, path: str, condition: str) -> None:
        if condition in self.seen_conditions:
            self.issues.append(
                Issue("error", "business-rule", f"{path}.request", f"two entries share the condition {condition!r}")
            )
        self.seen_conditions.add(condition)


def resource_rules(resource: dict, where: str) -> list[Issue]:
    """The rules on one resource of a kapfhir profile: security labels, claimed profile, identifier, narrative."""
    issues: list[Issue] = []
    rtype = resource["resourceType"]
    meta = resource.get("meta", {})
    codes = {(c.get("system"), c.get("code")) for c in meta.get("security", ())}
    for system, code in _REQUIRED_LABELS:
        if (system, code) not in codes:
            issues.append(
                Issue("error", "security", f"{where}.meta.security", f"the {code} security label is required")
            )
    if not any(p.startswith(t.SD + "/") for p in meta.get("profile", ())):
        issues.append(Issue("error", "business-rule", f"{where}.meta.profile", "a kapfhir profile must be claimed"))
    if rtype != "Provenance" and not _has_business_identifier(resource):
        issues.append(
            Issue("error", "required", f"{where}.identifier", "a business identifier with system and value is required")
        )
    if rtype == "CarePlan" and "text" not in resource:
        issues.append(Issue("error", "required", f"{where}.text", "US Core CarePlan needs a narrative"))
    return issues


def _has_business_identifier(resource: dict) -> bool:
    ident = resource.get("identifier")
    found = [ident] if isinstance(ident, dict) else (ident or [])
    return any(x.get("system") and x.get("value") for x in found)
