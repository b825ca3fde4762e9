"""The constraints kapfhir's own StructureDefinitions declare (mappings/conformance): those of an extension apply
wherever the extension is used, those of a profile to a resource that claims it. FHIRPath by fhirpathpy; an
expression that cannot run on the content fails its constraint."""

from __future__ import annotations

import typing
from functools import cache
from typing import Any

import fhirpathpy
from fhirpathpy.models import models as fhirpath_models

from mappings.conformance import load_all
from validation.issues import Issue


@cache
def sd_constraints() -> list[tuple[dict, dict, dict]]:
    """(StructureDefinition, element, constraint) for every constraint our StructureDefinitions declare."""
    out = []
    for sd in load_all().values():
        if sd.get("resourceType") != "StructureDefinition":
            continue
        for element in sd.get("differential", {}).get("element", []):
            for constraint in element.get("constraint", []) or []:
                out.append((sd, element, constraint))
    return out


@cache
def sd_keys() -> frozenset[str]:
    """The keys of those constraints (an invariant of the fast layers with the same key is reported by them)."""
    return frozenset(c["key"] for _, _, c in sd_constraints())


@cache
def kap_profiles() -> frozenset[str]:
    """The canonical urls of kapfhir's profiles (its StructureDefinitions other than extensions)."""
    return frozenset(
        url
        for url, sd in load_all().items()
        if sd.get("resourceType") == "StructureDefinition" and sd.get("type") != "Extension"
    )


@cache
def _compiled(expression: str) -> Any:
    return fhirpathpy.compile(expression, fhirpath_models["r4"])


def _descend(value: Any, path: str) -> typing.Iterator[tuple[Any, str]]:
    yield value, path
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, list):
                for i, element in enumerate(item):
                    yield from _descend(element, f"{path}.{key}[{i}]")
            else:
                yield from _descend(item, f"{path}.{key}")


@cache
def _constraints_by_extension() -> dict[str, list[tuple[dict, dict]]]:
    out: dict[str, list[tuple[dict, dict]]] = {}
    for sd, _element, constraint in sd_constraints():
        if sd.get("type") == "Extension":
            out.setdefault(sd["url"], []).append((sd, constraint))
    return out


def check(resource: dict, root: str) -> list[Issue]:
    """The constraints of the extensions ``resource`` uses and of the kapfhir profiles it claims."""
    targets = _extension_targets(resource, root) + _profile_targets(resource, root)
    issues = []
    for constraint, value, path in targets:
        try:
            ok = _compiled(constraint["expression"])(value, {"resource": resource}) == [True]
        except Exception:  # noqa: BLE001 - an expression that cannot run on this content fails the constraint
            ok = False
        if not ok:
            issues.append(
                Issue(
                    constraint.get("severity", "error"),
                    "invariant",
                    path,
                    f"{constraint['key']}: {constraint.get('human', '')} (failed: {constraint['expression']})",
                )
            )
    return issues


def _extension_targets(resource: dict, root: str) -> list[tuple[dict, Any, str]]:
    """(constraint, extension, path) of every extension present that declares constraints: one walk for all."""
    by_extension = _constraints_by_extension()
    if not by_extension:
        return []
    return [
        (constraint, value, path)
        for value, path in _descend(resource, root)
        if path != root
        and isinstance(value, dict)
        and isinstance(value.get("url"), str)
        and value["url"] in by_extension
        for _sd, constraint in by_extension[value["url"]]
    ]


def _profile_targets(resource: dict, root: str) -> list[tuple[dict, Any, str]]:
    meta = resource.get("meta")
    claimed = meta.get("profile") if isinstance(meta, dict) else None
    profiles = {p for p in claimed if isinstance(p, str)} if isinstance(claimed, list) else set()
    return [
        (constraint, resource, root)
        for sd, element, constraint in sd_constraints()
        if sd.get("type") != "Extension" and sd["url"] in profiles and element["path"] == sd.get("type")
    ]
