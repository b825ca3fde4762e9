"""The typed walk: one pass over a resource typed by the R4B model metadata (built once per model and cached, no
fhir.resources object construction), which finds for the layers what they check on typed elements: the primitives
of the structure layer (calendar dates, ids), the ``code`` elements of the bindings layer and the Period and
Quantity elements of the invariants layer (per-1, qty-3). The issues are kept per layer (``Found``)."""

from __future__ import annotations

import typing
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from validation.bindings import ENUM_NOT_R4, ENUM_SUPPLEMENT, code_issue
from validation.invariants import typed_invariant
from validation.issues import Issue
from validation.structure import RESOURCE_TYPES, primitive_issue


def entries(bundle: dict) -> list[dict]:
    """The entries of a Bundle the typed walk can type."""
    found = bundle.get("entry")
    if not isinstance(found, list):
        return []
    return [
        e
        for e in found
        if isinstance(e, dict) and isinstance(e.get("resource"), dict) and walkable(e["resource"].get("resourceType"))
    ]


def walkable(resource_type: object) -> bool:
    """Whether the typed walk can type this resource (fhirkit reports a missing or unknown resourceType)."""
    if not isinstance(resource_type, str) or resource_type not in RESOURCE_TYPES:
        return False
    try:
        model_of(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError):
        return False
    return True


def preload_models(resource_types: Iterable[str]) -> None:
    """Imports the R4B model classes (and the datatypes they use) of these resource types ahead of use."""
    for resource_type in resource_types:
        typed_fields(model_of(resource_type))


@cache
def model_of(resource_type: str) -> type:
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(resource_type)


@cache
def fields(model: type) -> dict[str, tuple[type | None, frozenset[str] | None]]:
    """Element name -> (child model, required codes) from the R4B model metadata."""
    return {
        info.alias or name: (_child(info), _enum(model, info.alias or name, info))
        for name, info in model.model_fields.items()
    }


def _enum(model: type, alias: str, info: Any) -> frozenset[str] | None:
    """The required codes of an element (R4B ``enum_values``, completed to the R4 value set)."""
    extra = info.json_schema_extra or {}
    if not (isinstance(extra, dict) and extra.get("enum_values")) or (model.__name__, alias) in ENUM_NOT_R4:
        return None
    return (frozenset(extra["enum_values"]) - {"+"}) | ENUM_SUPPLEMENT.get((model.__name__, alias), frozenset())


def _child(info: Any) -> type | None:
    """The model of a complex element (the last one its annotation names)."""
    child = None
    for arg in typing.get_args(info.annotation) or (info.annotation,):
        for inner in typing.get_args(arg) or (arg,):
            getter = getattr(inner, "get_model_klass", None)
            if getter is not None:
                child = getter()
    return child


_PRIMITIVES_CHECKED = {"Date": "date", "DateTime": "dateTime", "Instant": "instant", "Id": "id"}


@cache
def _primitive_kinds(model: type) -> dict[str, str]:
    """Element name -> date, dateTime, instant or id, for the elements of those types (from the annotations)."""
    table = {}
    for name, info in model.model_fields.items():
        for arg in typing.get_args(info.annotation) or (info.annotation,):
            for meta in getattr(arg, "__metadata__", ()):
                kind = _PRIMITIVES_CHECKED.get(type(meta).__name__)
                if kind is not None:
                    table[info.alias or name] = kind
    return table


def _kind(child: type | None) -> str | None:
    """Which typed invariants apply to an element of this datatype: per-1 (Period) or qty-3 (Quantity and the
    datatypes derived from it: Age, Count, Distance, Duration)."""
    if child is None:
        return None
    if child.__name__ == "Period":
        return "Period"
    if any(base.__name__ == "Quantity" for base in child.__mro__):
        return "Quantity"
    return None


@cache
def typed_fields(model: type) -> dict[str, tuple[type | None, frozenset[str] | None, str | None, str | None]]:
    primitives = _primitive_kinds(model)
    return {key: (child, enum, _kind(child), primitives.get(key)) for key, (child, enum) in fields(model).items()}


@dataclass
class Found:
    """Issues of one typed walk, kept per layer so that each layer reports in its own order."""

    bindings: list[Issue]
    invariants: list[Issue]
    primitives: list[Issue]
    check_bindings: bool
    check_invariants: bool
    check_primitives: bool = False


def walk(value: dict, model: type, path: str, found: Found) -> None:
    """One pass over an element tree typed by the R4B models: required code bindings, per-1 and qty-3, and the
    calendar and id checks of the structure layer."""
    table = typed_fields(model)
    for key, item in value.items():
        spec = table.get(key)
        if spec is None:
            continue  # resourceType, _primitive extensions, unknown elements (the structure layer reports those)
        if spec[3] is not None and found.check_primitives:
            _primitives(spec[3], key, item, path, found)
            continue
        many = isinstance(item, list)
        for index, element in enumerate(item) if many else ((0, item),):
            if isinstance(element, dict):
                _element(element, spec[0], spec[2], f"{path}.{key}[{index}]" if many else f"{path}.{key}", found)
            elif spec[1] is not None and found.check_bindings and isinstance(element, str) and element not in spec[1]:
                where = f"{path}.{key}[{index}]" if many else f"{path}.{key}"
                found.bindings.append(code_issue(element, spec[1], where))


def _at(path: str, key: str, index: int, item: Any) -> str:
    return f"{path}.{key}[{index}]" if isinstance(item, list) else f"{path}.{key}"


def _primitives(kind: str, key: str, item: Any, path: str, found: Found) -> None:
    for index, element in enumerate(item) if isinstance(item, list) else ((0, item),):
        if isinstance(element, str):
            issue = primitive_issue(kind, element, _at(path, key, index, item))
            if issue is not None:
                found.primitives.append(issue)


def _element(element: dict, child: type | None, kind: str | None, where: str, found: Found) -> None:
    if kind is not None and found.check_invariants:
        typed_invariant(kind, element, where, found.invariants)
    if "resourceType" in element:
        # a nested resource (contained, Parameters, Bundle) of a type the R4B models lack (R4's MedicinalProduct,
        # SubstanceProtein, ...) is left to fhirkit, as an entry of such a type is (``entries``)
        if walkable(element["resourceType"]):
            walk(element, model_of(element["resourceType"]), where, found)
    elif child is not None:
        walk(element, child, where, found)
