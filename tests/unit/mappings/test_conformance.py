"""Conformance resources: up to date, valid R4B, and covering every profile, extension and local code we send."""

from __future__ import annotations

import json

import pytest
from fhir.resources.R4B import get_fhir_model_class

from mappings import terminology as t
from mappings.bundle import to_transaction_bundle
from mappings.conformance import HERE, load_all
from mappings.conformance.build import build, render
from tests.support.charts import CHARTS


def test_conformance_files_are_those_the_builder_writes() -> None:
    expected = build()
    assert sorted(p.name for p in HERE.glob("*.json")) == sorted(expected)
    for name, resource in expected.items():
        assert (HERE / name).read_text() == render(resource), f"{name}: run python -m mappings.conformance.build"


@pytest.mark.parametrize("name", sorted(build()))
def test_conformance_resources_are_valid_r4b(name: str) -> None:
    data = json.loads((HERE / name).read_text())
    get_fhir_model_class(data["resourceType"]).model_validate(data)


def _walk(value: object, found: list[dict]) -> None:
    if isinstance(value, dict):
        if "system" in value and "code" in value:
            found.append(value)
        for item in value.values():
            _walk(item, found)
    elif isinstance(value, list):
        for item in value:
            _walk(item, found)


def _extension_urls(value: object, found: set[str]) -> None:
    if isinstance(value, dict):
        for ext in value.get("extension", ()):
            if ext["url"].startswith(t.KAPFHIR_BASE):
                found.add(ext["url"])
        for item in value.values():
            _extension_urls(item, found)
    elif isinstance(value, list):
        for item in value:
            _extension_urls(item, found)


def test_every_claimed_profile_extension_local_code_and_questionnaire_is_published() -> None:
    published = load_all()
    concepts = {
        (url, c["code"]) for url, r in published.items() if r["resourceType"] == "CodeSystem" for c in r["concept"]
    }
    for make in CHARTS.values():
        bundle = to_transaction_bundle(make())
        for entry in bundle["entry"]:
            resource = entry["resource"]
            for claimed in resource["meta"]["profile"]:
                if claimed.startswith(t.KAPFHIR_BASE):
                    assert published[claimed]["type"] == resource["resourceType"]
            if resource["resourceType"] == "QuestionnaireResponse":
                assert published[resource["questionnaire"]]["resourceType"] == "Questionnaire"
        codings: list[dict] = []
        _walk(bundle, codings)
        for coding in codings:
            if coding["system"].startswith(t.KAPFHIR_BASE) and not coding["system"].startswith(t.SD):
                assert (coding["system"], coding["code"]) in concepts, coding
        urls: set[str] = set()
        _extension_urls(bundle, urls)
        assert urls <= set(published)


def test_no_local_concept_is_sent_under_a_standard_system() -> None:
    local_codes = {c["code"] for r in load_all().values() if r["resourceType"] == "CodeSystem" for c in r["concept"]}
    for make in CHARTS.values():
        codings: list[dict] = []
        _walk(to_transaction_bundle(make()), codings)
        for coding in codings:
            if coding["system"] in (t.LOINC, t.SNOMED):
                assert coding["code"] not in local_codes
