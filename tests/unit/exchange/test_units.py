"""Pure pieces: privacy gate, target configuration, Retry-After parsing, response identities."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.exchange.client import FhirClient, identity_from_location, identity_of, parse_retry_after
from service.exchange.planner import PlannedRequest
from service.exchange.privacy import OrganizationRef, PrivacyConsent, bundle_has_substance_use, evaluate_privacy
from service.exchange.push import _Run
from service.exchange.targets import TargetConfigError, build_client, load_targets

NOW = datetime(2026, 3, 10, tzinfo=UTC)
ORG = OrganizationRef("urn:oid:1.2.3", "org-1")


def pc(**kw) -> PrivacyConsent:
    return PrivacyConsent(**{"id": "c1", "status": "active", "decision": "permit", "recipients": (ORG,), **kw})


def test_privacy_gate() -> None:
    assert evaluate_privacy([pc()], ORG, substance_use=False, now=NOW).allowed
    assert not evaluate_privacy([], ORG, substance_use=False, now=NOW).allowed
    assert not evaluate_privacy([pc(status="inactive")], ORG, substance_use=False, now=NOW).allowed
    assert not evaluate_privacy([pc(scope="treatment")], ORG, substance_use=False, now=NOW).allowed
    assert not evaluate_privacy(
        [pc(recipients=(OrganizationRef("x", "y"),))], ORG, substance_use=False, now=NOW
    ).allowed
    assert not evaluate_privacy([pc(period_start=NOW + timedelta(days=1))], ORG, substance_use=False, now=NOW).allowed
    held = evaluate_privacy([pc()], ORG, substance_use=True, now=NOW)
    assert not held.allowed and "42 CFR Part 2" in held.reason
    assert evaluate_privacy([pc(substance_use_disclosure=True)], ORG, substance_use=True, now=NOW).allowed
    denied = evaluate_privacy([pc(), pc(id="c2", decision="deny")], ORG, substance_use=False, now=NOW)
    assert not denied.allowed and denied.consent_id == "c2"
    assert not evaluate_privacy([pc()], None, substance_use=False, now=NOW).allowed


def test_only_an_eth_security_label_marks_a_bundle_as_substance_use() -> None:
    eth = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "ETH"}
    assert bundle_has_substance_use({"meta": {"security": [eth]}})
    assert not bundle_has_substance_use({"meta": {"security": [{**eth, "code": "PSY"}]}})
    assert not bundle_has_substance_use({"meta": {"security": [{**eth, "system": "urn:other"}]}})
    assert not bundle_has_substance_use({})


def test_targets_from_file_and_env(tmp_path) -> None:
    (tmp_path / "t.yaml").write_text(
        "targets:\n"
        "  epic:\n    preset: epic-sandbox\n    organization_identifier: 'urn:oid:1|o'\n"
        "    auth: {client_id: abc, private_key_path: /k.pem}\n"
        "  medplum:\n    preset: medplum\n    auth: {client_id: mp, client_secret_env: MP_SECRET}\n"
    )
    env = {
        "KAPFHIR_TARGETS_FILE": str(tmp_path / "t.yaml"),
        "MP_SECRET": "shh",
        "KAPFHIR_TARGETS": "local",
        "KAPFHIR_TARGET_LOCAL_BASE_URL": "http://127.0.0.1:9999/fhir",
        "KAPFHIR_TARGET_EPIC_READ_TIMEOUT": "12",
    }
    targets = load_targets(env)
    assert set(targets) == {"epic", "medplum", "local"}
    assert targets["epic"].write_policy == "ehr" and targets["epic"].auth.type == "smart"
    assert targets["epic"].read_timeout == 12.0 and targets["epic"].organization_identifier.value == "o"
    assert targets["medplum"].auth.client_secret == "shh"
    assert "shh" not in repr(targets["medplum"]) and "shh" not in str(targets["medplum"].public_view())
    assert targets["local"].base_url == "http://127.0.0.1:9999/fhir" and targets["local"].write_policy == "sandbox"
    client = build_client(
        targets["local"],
    )
    assert client.session.verify is True and client.timeout == (5.0, 30.0)
    (tmp_path / "bad.yaml").write_text("targets:\n  x:\n    base_url: https://e\n    auth: {type: bearer, token: s}\n")
    with pytest.raises(TargetConfigError, match="must not be written"):
        load_targets({"KAPFHIR_TARGETS_FILE": str(tmp_path / "bad.yaml")})
    env_bearer = load_targets(
        {
            "KAPFHIR_TARGET_X_BASE_URL": "https://e.example/fhir",
            "KAPFHIR_TARGET_X_AUTH": "bearer",
            "KAPFHIR_TARGET_X_TOKEN": "tok",
        }
    )
    assert env_bearer["x"].auth.token == "tok"


def test_ca_bundle_keeps_verification_on(tmp_path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert FhirClient("https://ehr.example/fhir", ca_bundle=str(ca)).session.verify == str(ca)


def test_retry_after_and_identities() -> None:
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after("Tue, 10 Mar 2026 00:00:30 GMT", now=NOW) == 30.0
    assert parse_retry_after("garbage") is None
    ident = identity_from_location("http://h/fhir/Observation/abc/_history/3")
    assert (ident.resource_type, ident.id, ident.version) == ("Observation", "abc", "3")
    # 200 without Location: the id comes from the body, the version from the ETag
    assert identity_of("Patient", headers={"ETag": 'W/"2"'}, body={"resourceType": "Patient", "id": "p"}).version == "2"
    assert identity_of("Patient", headers={}, body=None) is None


@pytest.mark.parametrize(
    ("status", "retried"),
    [(408, True), (429, True), (500, True), (503, True), (400, False), (404, False), (409, False), (422, False)],
)
def test_a_refused_entry_is_retried_on_the_statuses_a_whole_request_is(status: int, retried: bool) -> None:
    """An entry of a batch or transaction answered 408 (the server gave up waiting) is tried again like a request
    answered 408, not given up: the same statuses count for both."""
    plan = type("Plan", (), {"mode": "batch", "held": None, "notes": [], "patient_key": None, "adaptations": []})()
    run = _Run(FhirClient("http://127.0.0.1:9/fhir"), plan)  # type: ignore[arg-type]
    req = PlannedRequest("Patient/p", "Patient", "urn:uuid:p", {}, "create", "POST", "Patient", None)
    run.entry_refused(req, status, f"{status}", None, adaptable=False)
    assert run.report.results[-1].retryable is retried
