"""The validator (``validation``) runs kapfhir's domain rules only as its caller passes them: ``$validate`` and the
write path with the app's safety policy (``service.entrypoints.fhir_validate``), nothing of the service otherwise."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

import validation
from service.domain.model import Route
from service.domain.rules import DEFAULT_MAX_MG_PER_KG, SafetyPolicy
from service.fhir.validate import DomainRules
from tests.support.app import authorized_app

ROOT = Path(__file__).resolve().parents[3]
# IV racemic ketamine at 0.5 mg/kg (fixture a): within the default 0.75 mg/kg maximum, above a 0.1 mg/kg one
STRICT = SafetyPolicy(max_mg_per_kg={**DEFAULT_MAX_MG_PER_KG, Route.INTRAVENOUS: 0.1})
ABOVE_MAX = "racemic-dose-above-max-mg-per-kg"


@pytest.fixture(scope="module")
def bundle() -> dict:
    return json.loads((ROOT / "fixtures" / "fhir" / "a-trd-iv-ketamine.json").read_text())


def _rules(issues: list) -> set[str]:
    """The ids of the safety rules the issues report."""
    return {i.diagnostics.split()[2] for i in issues if i.diagnostics.startswith("safety rule ")}


def test_without_domain_rules_the_validator_reports_no_safety_rule(bundle: dict) -> None:
    assert _rules(validation.validate(bundle)) == set()
    assert _rules(validation.validate(bundle, domain=DomainRules(SafetyPolicy()))) == {"dose-without-active-consent"}


def test_the_policy_passed_in_is_the_one_applied_by_validate_and_the_write_checks(bundle: dict) -> None:
    assert ABOVE_MAX not in _rules(validation.validate(bundle, domain=DomainRules(SafetyPolicy())))
    assert ABOVE_MAX in _rules(validation.validate(bundle, domain=DomainRules(STRICT)))
    collection = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": e["fullUrl"], "resource": e["resource"]} for e in bundle["entry"]],
    }
    assert ABOVE_MAX not in _rules(validation.validate_for_write(collection, domain=DomainRules(SafetyPolicy())))
    assert ABOVE_MAX in _rules(validation.validate_for_write(collection, domain=DomainRules(STRICT)))


@pytest.fixture(scope="module")
def strict_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    directory = tmp_path_factory.mktemp("fhir-validate-policy")
    app = authorized_app(f"sqlite:///{directory}/strict.db", safety=STRICT)
    try:
        yield app
    finally:
        app.extensions["kapfhir.engine"].dispose()


def test_validate_applies_the_apps_safety_policy(strict_app: Flask, bundle: dict) -> None:
    r = strict_app.test_client().post("/fhir/$validate", json=bundle)
    assert r.status_code == 200, r.get_data(as_text=True)
    found = [i for i in r.get_json()["issue"] if i["diagnostics"].startswith(f"safety rule {ABOVE_MAX}")]
    assert found and all(i["severity"] == "warning" and i["expression"][0].startswith("Bundle.entry[") for i in found)
