"""Fast checks of a Bundle, as OperationOutcome issues, by layer (``LAYERS``, the order ``$validate`` applies them):
``structure`` (``validation.structure``), ``bindings`` (``validation.bindings``), ``invariants``
(``validation.invariants``) and ``profile`` (the kapfhir profile rules, ``validation.kapfhir_profile``).

The typed part of structure, and bindings, invariants and profile (``FAST_LAYERS``) run in one pass over the
bundle: one walk of each resource typed by the R4B model metadata (``validation.typed``).
"""

from __future__ import annotations

from collections.abc import Iterable

from validation.bindings import concept_bindings
from validation.invariants import resource_invariants
from validation.issues import Issue
from validation.kapfhir_profile import BundleRules
from validation.structure import fhirkit_issues
from validation.typed import Found, entries, model_of, walk

LAYERS = ("structure", "bindings", "invariants", "profile")
FAST_LAYERS = ("bindings", "invariants", "profile")


def check_structure(bundle: dict) -> list[Issue]:
    """fhirkit's structural issues, then the calendar and id checks of the typed walk."""
    return validate_bundle(bundle, ("structure",))


def check_bindings(bundle: dict) -> list[Issue]:
    return _fast(bundle, ("bindings",))["bindings"]


def check_invariants(bundle: dict) -> list[Issue]:
    return _fast(bundle, ("invariants",))["invariants"]


def check_profile(bundle: dict) -> list[Issue]:
    return _fast(bundle, ("profile",))["profile"]


def invariant_failures(resource: dict) -> set[str]:
    """Keys of the invariants one resource breaks, by the direct checks (for tests against fhirpathpy)."""
    found = Found([], [], [], check_bindings=False, check_invariants=True)
    resource_invariants(resource, resource["resourceType"], "R", found.invariants)
    walk(resource, model_of(resource["resourceType"]), "R", found)
    return {i.diagnostics.split(":")[0] for i in found.invariants}


def _fast(bundle: dict, layers: Iterable[str]) -> dict[str, list[Issue]]:
    """The typed part of structure, bindings, invariants and profile over one walk of the bundle, by layer."""
    wanted = set(layers)
    found = Found(
        [],
        [],
        [],
        check_bindings="bindings" in wanted,
        check_invariants="invariants" in wanted,
        check_primitives="structure" in wanted,
    )
    profile = BundleRules()
    typed = found.check_bindings or found.check_invariants or found.check_primitives
    for i, entry in enumerate(entries(bundle)):
        resource = entry["resource"]
        rtype = resource["resourceType"]
        path = f"Bundle.entry[{i}].resource"
        if typed:
            walk(resource, model_of(rtype), path, found)
        if found.check_bindings:
            concept_bindings(resource, rtype, path, found.bindings)
        if found.check_invariants:
            resource_invariants(resource, rtype, path, found.invariants)
        if "profile" in wanted:
            profile.entry(i, entry)
    return {
        "structure": found.primitives,
        "bindings": found.bindings,
        "invariants": found.invariants,
        "profile": profile.issues,
    }


CHECKS = {
    "structure": check_structure,
    "bindings": check_bindings,
    "invariants": check_invariants,
    "profile": check_profile,
}


def validate_layers(bundle: dict, layers: Iterable[str] = LAYERS) -> dict[str, list[Issue]]:
    """Issues of the layers asked for, by layer; the typed checks of every layer share one walk."""
    layers = tuple(layers)
    structural = fhirkit_issues(bundle) if "structure" in layers else []
    by_layer = _fast(bundle, layers)
    by_layer["structure"] = structural + by_layer["structure"]
    return {layer: by_layer[layer] for layer in layers}


def validate_bundle(bundle: dict, layers: Iterable[str] = LAYERS) -> list[Issue]:
    """Issues of the layers asked for, layer by layer in the order given."""
    by_layer = validate_layers(bundle, layers)
    return [issue for issues in by_layer.values() for issue in issues]
