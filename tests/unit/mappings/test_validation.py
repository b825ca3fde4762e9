"""The direct invariant checks of validation.invariants agree with the compiled fhirpathpy expressions (R4 FHIRPath)
on every resource of the fixture bundles (passing) and on a mutated resource per invariant (failing)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from mappings import terminology as t
from mappings.bundle import to_transaction_bundle
from tests.support.charts import CHARTS
from validation import INVARIANTS, compiled_invariants, invariant_failures


def _resources() -> list[dict]:
    return [e["resource"] for make in CHARTS.values() for e in to_transaction_bundle(make())["entry"]]


RESOURCES = _resources()


def _fhirpath_failures(resource: dict) -> set[str]:
    failing = set()
    for key, _, types, fn, _, _ in compiled_invariants():
        if (types is None or resource["resourceType"] in types) and fn(resource, {"resource": resource}) != [True]:
            failing.add(key)
    return failing


def _first(resource_type: str, where: Callable[[dict], bool] = lambda r: True) -> dict:
    return copy.deepcopy(next(r for r in RESOURCES if r["resourceType"] == resource_type and where(r)))


def _bp() -> dict:
    return _first("Observation", lambda r: r["code"]["coding"][0]["code"] == t.BP_PANEL["code"])


def _mutated(key: str) -> dict:
    if key.startswith("dom-") or key in ("qty-3", "mad-1"):
        resource = _first("MedicationAdministration")
        contained = resource["contained"][0]
        if key == "dom-2":
            contained["contained"] = [{"resourceType": "Medication", "id": "inner"}]
        elif key == "dom-3":
            contained["id"] = "not-referenced"
        elif key == "dom-4":
            contained["meta"] = {"lastUpdated": "2026-03-02T09:00:00+00:00"}
        elif key == "dom-5":
            contained["meta"] = {"security": [t.SECURITY_RESTRICTED]}
        elif key == "qty-3":
            del resource["dosage"]["dose"]["system"]
        else:
            resource["dosage"] = {"route": resource["dosage"]["route"]}
        return resource
    if key == "per-1":
        resource = _first("Encounter")
        resource["period"] = {"start": "2026-03-02T10:00:00+00:00", "end": "2026-03-02T09:00:00+00:00"}
        return resource
    if key == "obs-6":
        resource = _first("Observation", lambda r: "valueQuantity" in r)
        resource["dataAbsentReason"] = {"coding": [t.DATA_ABSENT_UNKNOWN]}
        return resource
    if key == "obs-7":
        resource = _bp()
        resource["valueQuantity"] = {"value": 1}
        resource["component"][0]["code"] = copy.deepcopy(resource["code"])
        return resource
    if key == "vs-2":
        resource = _bp()
        del resource["component"]
        return resource
    if key == "vs-3":
        resource = _bp()
        resource["component"][0] = {"code": resource["component"][0]["code"]}
        return resource
    if key in ("ppc-1", "ppc-5"):
        resource = _first("Consent")
        del resource["policy" if key == "ppc-1" else "patient"]
        return resource
    if key in ("con-3", "con-5"):
        resource = _first("Condition")
        if key == "con-3":
            del resource["clinicalStatus"]
        else:
            resource["verificationStatus"] = {"coding": [t.VERIFICATION_ENTERED_IN_ERROR]}
        return resource
    if key == "cpl-3":
        resource = _first("CarePlan")
        resource["activity"][0]["reference"] = {"reference": "urn:uuid:x"}
        return resource
    if key == "us-core-8":
        resource = _first("Patient")
        resource["name"] = [{"text": "only text"}]
        return resource
    assert key == "kap-off-label-1"
    resource = _first("MedicationRequest")
    ext = next(e for e in resource["extension"] if e["url"] == t.EXT_OFF_LABEL)
    ext["extension"] = [{"url": "isOffLabelUse", "valueBoolean": True}]
    return resource


def test_direct_checks_agree_with_fhirpathpy_on_every_fixture_resource() -> None:
    for resource in RESOURCES:
        assert invariant_failures(resource) == _fhirpath_failures(resource) == set(), resource["resourceType"]


@pytest.mark.parametrize("key", [key for key, *_ in INVARIANTS])
def test_direct_check_and_fhirpathpy_both_catch_a_resource_breaking_the_invariant(key: str) -> None:
    resource = _mutated(key)
    assert key in _fhirpath_failures(resource)
    assert invariant_failures(resource) == _fhirpath_failures(resource)


@pytest.mark.parametrize(
    ("start", "end", "fails"),
    [
        ("2026-03-02T09:00:00+00:00", "2026-03-02T08:00:00+00:00", True),
        ("2026-03-02T08:00:00+00:00", "2026-03-02T09:00:00+00:00", False),
        ("2026-03-02", "2026-03-01T09:00:00+00:00", True),  # compared at the shared precision (day)
        ("2026-03-02", "2026-03-02T09:00:00+00:00", False),  # equal at the shared precision: empty
        ("2026-03-02", "2026-03-01", True),
    ],
)
def test_period_order_agrees_with_fhirpathpy(start: str, end: str, fails: bool) -> None:
    resource = _first("Encounter")
    resource["period"] = {"start": start, "end": end}
    assert ("per-1" in invariant_failures(resource)) is fails
    assert invariant_failures(resource) == _fhirpath_failures(resource)


@pytest.mark.parametrize(
    ("start", "end"),
    [("2026-03-02T10:00:00+02:00", "2026-03-02T09:00:00+00:00"), ("2026-03-02T09:00:00Z", "2026-03-02T09:00:00+00:00")],
)
def test_period_order_compares_instants_where_fhirpathpy_compares_text(start: str, end: str) -> None:
    """Known fhirpathpy 2.2.4 difference: it orders these as text; FHIRPath orders instants, as the direct check."""
    resource = _first("Encounter")
    resource["period"] = {"start": start, "end": end}
    assert "per-1" not in invariant_failures(resource)
    assert "per-1" in _fhirpath_failures(resource)
