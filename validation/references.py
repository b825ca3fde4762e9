"""Reference target types from the R4B model metadata (``enum_reference_types``): a Reference whose type (stated,
or read from a relative ``Type/id``) is not one the element allows. What the write path (and ``$validate`` without
the R4 definitions) checks; with the definitions, ``validation.base`` checks targets and resolution."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from validation.issues import Issue
from validation.typed import fields, model_of

_TYPED_REFERENCE = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}(/_history/.+)?")
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}")


def known_type(name: Any) -> bool:
    """Whether the R4B models know a resource type of this name."""
    if not isinstance(name, str) or not _TYPE_NAME.fullmatch(name):
        return False
    try:
        model_of(name)
    except (KeyError, ValueError, AttributeError, ImportError):
        return False
    return True


@cache
def _reference_fields(model: type) -> dict[str, tuple[tuple[str, ...] | None, type | None]]:
    """Element name -> (allowed reference target types, child model), from the R4B model metadata."""
    children = fields(model)  # element name -> (child model, required codes)
    table = {}
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        targets = extra.get("enum_reference_types")
        alias = info.alias or name
        table[alias] = (tuple(targets) if targets else None, children[alias][0])
    return table


def check(resource: dict, root: str) -> list[Issue]:
    """Reference targets against each element's allowed types, from the R4B models: an R4 type they lack
    (MedicinalProduct, ...) is not checked here (the structural layers check it)."""
    issues: list[Issue] = []
    if known_type(resource.get("resourceType")):
        _check(resource, model_of(resource["resourceType"]), root, issues)
    return issues


def _check(value: Any, model: type, path: str, issues: list[Issue]) -> None:
    if not isinstance(value, dict):
        return
    table = _reference_fields(model)
    for key, item in value.items():
        spec = table.get(key)
        if spec is None:
            continue
        targets, child = spec
        items = item if isinstance(item, list) else [item]
        for index, element in enumerate(items):
            if isinstance(element, dict):
                where = f"{path}.{key}" + (f"[{index}]" if isinstance(item, list) else "")
                _element(element, targets, child, where, issues)


def _element(element: dict, targets: tuple[str, ...] | None, child: type | None, where: str, issues: list) -> None:
    if targets and "Resource" not in targets:
        _target(element, targets, where, issues)
    if "resourceType" in element and known_type(element["resourceType"]):
        _check(element, model_of(element["resourceType"]), where, issues)
    elif child is not None:
        _check(element, child, where, issues)


def _target(element: dict, targets: tuple[str, ...], where: str, issues: list[Issue]) -> None:
    ref = element.get("reference")
    rtype = element.get("type")
    if isinstance(ref, str) and _TYPED_REFERENCE.fullmatch(ref):
        rtype = ref.split("/")[0]
    if isinstance(rtype, str) and rtype not in targets:
        issues.append(
            Issue(
                "error",
                "structure",
                f"{where}.reference" if "reference" in element else f"{where}.type",
                f"a reference to {rtype} is not allowed here; allowed: {', '.join(targets)}",
            )
        )
