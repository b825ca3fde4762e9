"""Builders of FHIR R4 datatypes as plain JSON dicts (validated once, at the end, never rebuilt)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from mappings import terminology as t


def instant(value: datetime) -> str:
    """FHIR dateTime/instant text of a stored timestamp (stored timestamps carry their offset)."""
    return value.isoformat()


def utc_instant(value: datetime) -> str:
    """FHIR instant in UTC with milliseconds (``2026-03-02T09:00:00.000Z``), as the /fhir API serves ``meta``."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def day(value: date) -> str:
    return value.isoformat()


def parse_datetime(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def parse_date(text: str) -> date:
    return date.fromisoformat(text[:10])


def codeable_concept(*codings: dict, text: str | None = None) -> dict:
    concept: dict = {}
    if codings:
        concept["coding"] = list(codings)
    if text:
        concept["text"] = text
    return concept


def identifier(system: str, value: str) -> dict:
    return {"system": system, "value": value}


def period(start: datetime | date | None, end: datetime | date | None = None) -> dict:
    result = {}
    if start is not None:
        result["start"] = start.isoformat()
    if end is not None:
        result["end"] = end.isoformat()
    return result


def quantity(value: float | int, ucum: str, unit: str | None = None) -> dict:
    return {"value": value, "unit": unit or ucum, "system": t.UCUM, "code": ucum}


def extension(url: str, **value: object) -> dict:
    """``extension(url, valueString="x")``: one value[x] element."""
    return {"url": url, **value}


def complex_extension(url: str, parts: list[dict]) -> dict:
    return {"url": url, "extension": parts}


def find_extension(element: dict, url: str) -> dict | None:
    return next((e for e in element.get("extension", ()) if e.get("url") == url), None)


def find_extensions(element: dict, url: str) -> list[dict]:
    return [e for e in element.get("extension", ()) if e.get("url") == url]


def coding_in(concept: dict | None, system: str) -> dict | None:
    if not concept:
        return None
    return next((c for c in concept.get("coding", ()) if c.get("system") == system), None)


def code_in(concept: dict | None, system: str) -> str | None:
    found = coding_in(concept, system)
    return found.get("code") if found else None


def narrative(xhtml_body: str) -> dict:
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{xhtml_body}</div>'}
