"""Layer 1, structure: fhirkit-rs, a structural validator generated from the FHIR R4 4.0.1 specification (elements,
cardinality, JSON datatypes, primitive formats, choice types; every issue with its path), plus the two checks it
lacks, made on the primitives the typed walk (``validation.typed``) finds: real calendar dates in date/dateTime/instant
elements and the id syntax. It replaced a pass through the fhir.resources R4B models, which cost as much as parsing
the bundle, accepted JSON of the wrong type (``"active": "yes"``) and checks 4.3.0 rather than the 4.0.1 we serve;
tests/mappings/test_structure_layer.py shows it refuses everything that pass refused.
"""

from __future__ import annotations

import re
from datetime import date

import fhirkit

from validation.issues import Issue

RESOURCE_TYPES = frozenset(fhirkit.RESOURCE_TYPES)


def fhirkit_issues(bundle: dict) -> list[Issue]:
    return [
        Issue("error" if i.severity == "error" else "warning", "structure", i.path, i.message)
        for i in fhirkit.validate(bundle)
    ]


_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_ID_CHARS = re.compile(r"[A-Za-z0-9\-.]+")
_CONTAINED_ID = re.compile(r"\.contained\[\d+\]\.id$")
_DATE_PART = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def primitive_issue(kind: str, value: str, where: str) -> Issue | None:
    r"""What fhirkit does not check: ids against the id syntax (R4 §2.24.0.1 ``[A-Za-z0-9\-\.]{1,64}``) and that a
    date is on the calendar (fhirkit accepts 2024-02-30). The format itself is fhirkit's."""
    if kind == "id":
        if _ID.fullmatch(value):
            return None
        if _CONTAINED_ID.search(where) and _ID_CHARS.fullmatch(value):
            return None  # the reference validator checks a contained resource's id characters, not its length
        return Issue("error", "structure", where, f"{value!r} is not a valid id")
    match = _DATE_PART.match(value)
    if match is None:
        return None
    try:
        date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return Issue("error", "structure", where, f"{value!r} is not a real calendar date")
    return None
