"""The app of the durable-outbox tests: one target named ehr at a FHIR server, a seeded episode whose patient has an
MRN of its own (the tests share one server), and the privacy consent that lets it go out."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from flask import Flask

from service.exchange.targets import Target
from tests.support.app import Api, make_app
from tests.support.exchange import ORG
from tests.support.seed import seed_episode

__all__ = ["SIGNED_AT", "app_with_ehr_target", "consent_to_share", "seed_with_own_mrn", "unique_mrn"]

SIGNED_AT = "2026-01-02T09:00:00-05:00"  # when the privacy consent of consent_to_share was signed


def app_with_ehr_target(tmp_path: Path, base_url: str, *, policy: str = "sandbox", **target: Any) -> Flask:
    """The app on SQLite in tmp_path with one target, ehr, at base_url for ORG and an identifier system of its own."""
    tag = uuid.uuid4().hex[:8]
    targets = {
        "ehr": Target(
            name="ehr",
            base_url=base_url,
            write_policy=policy,
            organization_identifier=ORG,
            connect_timeout=2,
            read_timeout=10,
            **target,
        )
    }
    return make_app(
        f"sqlite:///{tmp_path}/kapfhir.db",
        targets=targets,
        default_identifier_system=f"https://clinic-{tag}.example.org/fhir/id",
    )


def consent_to_share(api: Api, patient_id: str, **extra: Any) -> None:
    """Records the patient's privacy consent to share with ORG (signed at SIGNED_AT); extra overrides fields."""
    api.created(
        f"/patients/{patient_id}/privacy-consents",
        {
            "recipient_name": "Example EHR",
            "recipient_identifier": {"system": ORG.system, "value": ORG.value},
            "signed_at": SIGNED_AT,
            **extra,
        },
    )


def unique_mrn(body: dict[str, Any]) -> dict[str, Any]:
    """The patient body with an MRN value no other test uses."""
    return {**body, "mrn": {**body["mrn"], "value": f"SYN-{uuid.uuid4().hex[:10]}"}}


def seed_with_own_mrn(api: Api) -> dict[str, str]:
    """The seed episode, its patient given an MRN of its own: every test shares one FHIR server."""
    ids = seed_episode(api)
    patient = api.get(f"/patients/{ids['patient']}").get_json()
    body = {k: v for k, v in patient.items() if k not in ("id", "version", "recorded_at", "updated_at")}
    assert api.put(f"/patients/{ids['patient']}", {**unique_mrn(body), "amendment_reason": "test"}).status_code == 200
    return ids
