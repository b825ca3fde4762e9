"""The privacy gate: may this patient's data go to this target now? Pure function, no I/O.

A treatment consent is not permission to share. Data go to a target only while an **active privacy consent**
allows it: FHIR ``Consent`` with ``scope = patient-privacy``, ``provision.type = permit``, naming the target's
organization as a recipient (``provision.actor`` with role ``IRCP``, referenced by identifier), within its
period. An active ``deny`` naming the organization wins over any permit. Data of a **substance-use** indication
(42 CFR Part 2) need that consent to say so explicitly (``substance_use_disclosure``; in FHIR a
``provision.securityLabel`` or ``provision.class`` carrying ``ETH``/the SUD code). Otherwise the push is held
with a reason a clinician can act on.

The gate's input is :class:`PrivacyConsent`, one field per element of the FHIR Consent it stands for; the domain's
privacy consent records (``service.domain.model.PrivacyConsent``) become gate consents in
``service.service_layer.sync.gate_consents``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mappings import terminology as t

PATIENT_PRIVACY = t.CONSENT_SCOPE_PATIENT_PRIVACY["code"]  # Consent.scope
PERMIT, DENY = "permit", "deny"
ACTIVE = "active"


@dataclass(frozen=True)
class OrganizationRef:
    """A recipient organization by business identifier (``Consent.provision.actor.reference.identifier``)."""

    system: str
    value: str


@dataclass(frozen=True)
class PrivacyConsent:
    """One patient's privacy consent (FHIR Consent, scope patient-privacy), as the gate needs it.

    ``status``: Consent.status (draft | proposed | active | rejected | inactive | entered-in-error);
    ``scope``: Consent.scope code; ``decision``: Consent.provision.type (permit | deny);
    ``recipients``: provision.actor (role IRCP) organizations; ``period_start``/``period_end``:
    provision.period; ``substance_use_disclosure``: the consent explicitly covers 42 CFR Part 2 (SUD) records.
    """

    id: str
    status: str
    decision: str
    recipients: tuple[OrganizationRef, ...]
    scope: str = PATIENT_PRIVACY
    period_start: datetime | None = None
    period_end: datetime | None = None
    substance_use_disclosure: bool = False

    def in_force(self, now: datetime) -> bool:
        if self.status != ACTIVE or self.scope != PATIENT_PRIVACY:
            return False
        if self.period_start is not None and now < self.period_start:
            return False
        return not (self.period_end is not None and now >= self.period_end)

    def names(self, org: OrganizationRef) -> bool:
        return org in self.recipients


@dataclass(frozen=True)
class PrivacyDecision:
    allowed: bool
    reason: str | None = None  # why the push is held (None when allowed)
    consent_id: str | None = None  # the consent that allowed (or denied) it


def evaluate_privacy(
    consents: Iterable[PrivacyConsent],
    organization: OrganizationRef | None,
    *,
    substance_use: bool,
    now: datetime,
) -> PrivacyDecision:
    """Allowed only by an in-force permit naming ``organization``; SUD data need explicit Part 2 permission."""
    if organization is None:
        return PrivacyDecision(False, "the target has no organization identifier, so no privacy consent can name it")
    in_force = [c for c in consents if c.in_force(now) and c.names(organization)]
    denial = next((c for c in in_force if c.decision == DENY), None)
    if denial is not None:
        return PrivacyDecision(
            False,
            f"privacy consent {denial.id} denies sharing with {organization.system}|{organization.value}",
            denial.id,
        )
    permits = [c for c in in_force if c.decision == PERMIT]
    if not permits:
        return PrivacyDecision(
            False,
            "held: no active patient-privacy consent permits sharing with "
            f"{organization.system}|{organization.value} (a treatment consent is not permission to share)",
        )
    if substance_use:
        explicit = next((c for c in permits if c.substance_use_disclosure), None)
        if explicit is None:
            return PrivacyDecision(
                False,
                "held: the episode has a substance-use indication (42 CFR Part 2) and no active privacy consent "
                "explicitly permits disclosing substance-use records to this organization",
                permits[0].id,
            )
        return PrivacyDecision(True, None, explicit.id)
    return PrivacyDecision(True, None, permits[0].id)


def bundle_has_substance_use(bundle: Mapping[str, Any]) -> bool:
    """True when the Bundle is labelled ETH (mappings label every episode with a substance-use indication)."""
    labels = (bundle.get("meta") or {}).get("security", []) or []
    eth = t.SECURITY_ETH
    return any(label.get("code") == eth["code"] and label.get("system") == eth["system"] for label in labels)
