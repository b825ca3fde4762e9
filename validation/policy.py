"""The write policy on extensions, separate from what ``$validate`` reports.

``$validate`` answers as the reference validator does: an extension nobody defines is an error there. A write is a
different question: an EHR's own extension (one kapfhir has no definition for) carries information we keep but do
not interpret, so it is never a reason to refuse the write. An unknown ``modifierExtension`` is: it changes the
meaning of the element that holds it, and storing that element without understanding it would misstate the record
(FHIR R4 §2.4.1 "Modifier Extensions": a system that does not understand a modifier extension SHALL NOT process
the element as if it were absent). The write path (POST /fhir) calls ``write_issues``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from validation import base
from validation.issues import Issue


def write_issues(resource: Any) -> list[Issue]:
    """Errors for every unknown modifierExtension in ``resource`` (a Bundle's entries included); information for
    unknown extensions, which are kept."""
    walker = _walker()
    issues: list[Issue] = []
    label = str(resource.get("resourceType", "Resource")) if isinstance(resource, dict) else "Resource"
    for where, ext, modifier in _extensions(resource, label):
        url = ext.get("url")
        if not isinstance(url, str) or ("://" not in url and not url.startswith("urn:")):
            continue  # a sub-extension's relative url: its parent decides
        if walker is not None and walker._extension_definition(url) is not None:
            continue
        if modifier:
            issues.append(
                Issue(
                    "error",
                    "not-supported",
                    where,
                    f"Unknown modifier extension {url}: it may "
                    "change the meaning of this element, which kapfhir cannot interpret; nothing "
                    "was stored",
                )
            )
        else:
            issues.append(
                Issue(
                    "information", "informational", where, f"Unknown extension {url}: stored as sent, not interpreted"
                )
            )
    return issues


def refuses(issues: list[Issue]) -> bool:
    return any(i.severity in ("error", "fatal") for i in issues)


def _walker() -> base.Walker | None:
    from validation import definitions

    if not definitions.available():
        return base.Walker(definitions.Definitions(), base.own_extensions())
    return base.Walker(definitions.load(), base.own_extensions())


def _extensions(value: Any, where: str) -> Iterator[tuple[str, dict, bool]]:
    if isinstance(value, dict):
        for key, item in value.items():
            items = item if isinstance(item, list) else [item]
            for i, element in enumerate(items):
                here = f"{where}.{key}[{i}]" if isinstance(item, list) else f"{where}.{key}"
                if key in ("extension", "modifierExtension") and isinstance(element, dict):
                    yield here, element, key == "modifierExtension"
                if isinstance(element, dict | list):
                    yield from _extensions(element, here)
    elif isinstance(value, list):
        for i, element in enumerate(value):
            yield from _extensions(element, f"{where}[{i}]")
