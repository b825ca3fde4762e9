"""The structure layer (fhirkit-rs for R4 4.0.1, plus calendar dates and ids from the typed walk) refuses everything
the fhir.resources R4B model pass it replaced refused, at the same element, and accepts every fixture bundle."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from validation import check_structure, validate_bundle

FIXTURE_BUNDLES = sorted((Path(__file__).resolve().parents[3] / "fixtures" / "fhir").glob("*.json"))

# (malformed resource, the element both validators must name)
MALFORMED = [
    ({"resourceType": "Patient", "birthDate": "2024-02-30"}, "birthDate"),
    ({"resourceType": "Patient", "id": "bad id!"}, "id"),
    ({"resourceType": "Patient", "name": {"family": "x"}}, "name"),
    ({"resourceType": "Patient", "name": [{"given": [""]}]}, "name[0].given[0]"),
    ({"resourceType": "Patient", "birthDate": "2020-01-01T10:00:00Z"}, "birthDate"),
    ({"resourceType": "Patient", "meta": {"lastUpdated": "2026-01-01"}}, "meta.lastUpdated"),
    ({"resourceType": "Patient", "extension": [{"valueString": "x"}]}, "extension[0].url"),
    ({"resourceType": "Patient", "contained": [{"resourceType": "Patient", "foo": 1}]}, "contained[0].foo"),
    (
        {"resourceType": "Patient", "managingOrganization": {"reference": "Organization/1", "foo": 2}},
        "managingOrganization.foo",
    ),
    ({"resourceType": "Encounter", "status": "finished"}, "class"),
    (
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": "abc"}},
        "valueQuantity.value",
    ),
    (
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "effectiveDateTime": "2026-01-01T10:00:00",
        },
        "effectiveDateTime",
    ),
    ({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "issued": "2026-01-01"}, "issued"),
    (
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "effectivePeriod": {"start": "2026-04-31T10:00:00Z"},
        },
        "effectivePeriod.start",
    ),
    (
        {
            "resourceType": "MedicationAdministration",
            "status": "completed",
            "subject": {"reference": "Patient/p"},
            "effectiveDateTime": "2026-01-01T10:00:00Z",
        },
        "medication[x]",
    ),
]

# Invalid FHIR JSON the R4B models let through (they coerce the string); the structure layer refuses it.
ONLY_NOW_REFUSED = [
    ({"resourceType": "Patient", "active": "yes"}, "active"),
    (
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "component": [{"code": {"text": "y"}, "valueInteger": "3"}],
        },
        "component[0].valueInteger",
    ),
]


def _collection(resource: dict) -> dict:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]}


def _r4b_paths(bundle: dict) -> set[str]:
    try:
        Bundle.model_validate(bundle)
    except ValidationError as error:
        return {".".join(str(p) for p in e["loc"]) for e in error.errors()}
    return set()


@pytest.mark.parametrize("path", FIXTURE_BUNDLES, ids=lambda p: p.stem)
def test_every_fixture_bundle_passes_both(path: Path) -> None:
    bundle = orjson.loads(path.read_bytes())
    assert _r4b_paths(bundle) == set()
    assert check_structure(bundle) == []


@pytest.mark.parametrize(("resource", "element"), MALFORMED, ids=lambda x: str(x)[:60])
def test_what_the_r4b_pass_refused_is_refused_at_the_same_element(resource: dict, element: str) -> None:
    bundle = _collection(resource)
    assert _r4b_paths(bundle), "the R4B model pass refuses this"
    expressions = {i.expression for i in check_structure(bundle) if i.severity == "error"}
    assert f"Bundle.entry[0].resource.{element}" in expressions


@pytest.mark.parametrize(("resource", "element"), ONLY_NOW_REFUSED, ids=lambda x: str(x)[:60])
def test_json_of_the_wrong_type_is_refused(resource: dict, element: str) -> None:
    bundle = _collection(resource)
    assert _r4b_paths(bundle) == set(), "the R4B models coerce this"
    expressions = {i.expression for i in check_structure(bundle)}
    assert f"Bundle.entry[0].resource.{element}" in expressions


def test_unknown_and_missing_resource_types_are_reported_not_raised() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Nope"}}, {"resource": {"gender": "male"}}],
    }
    issues = validate_bundle(bundle)
    assert {i.expression for i in issues} >= {"Bundle.entry[0].resource", "Bundle.entry[1].resource"}
    assert all(i.code == "structure" for i in issues)


def test_a_real_leap_day_is_accepted() -> None:
    assert check_structure(_collection({"resourceType": "Patient", "birthDate": "2024-02-29"})) == []
