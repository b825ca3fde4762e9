"""Search values: extraction from a resource (what the index stores) and parsing of query values."""

from __future__ import annotations

import functools
import re
from calendar import isleap, monthrange
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from service.fhir.registry import Param

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$")


class BadValue(ValueError):
    pass


def date_range(text: str) -> tuple[datetime, datetime]:
    """The [lower, upper] instants a FHIR date/dateTime/instant text covers, by its precision (UTC)."""
    m = _DATE.match(text.strip())
    if m is None:
        raise BadValue(f"{text!r} is not a FHIR date or dateTime")
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    try:
        if hour is not None:
            tz = UTC if zone in (None, "Z") else _zone(zone)
            base = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), tzinfo=tz)
            if fraction:
                base = base.replace(microsecond=int((fraction[1:] + "000000")[:6]))
                return _utc(base), _utc(base)
            step = timedelta(seconds=1) if second is not None else timedelta(minutes=1)
            return _utc(base), _utc(base, step - timedelta(microseconds=1))
        if day is not None:
            start = datetime(int(year), int(month), int(day), tzinfo=UTC)
            return start, _utc(start, timedelta(days=1) - timedelta(microseconds=1))
        if month is not None:
            start = datetime(int(year), int(month), 1, tzinfo=UTC)
            return start, _utc(start, timedelta(days=monthrange(int(year), int(month))[1], microseconds=-1))
        start = datetime(int(year), 1, 1, tzinfo=UTC)
        return start, _utc(start, timedelta(days=366 if isleap(int(year)) else 365, microseconds=-1))
    except ValueError as exc:
        raise BadValue(f"{text!r} is not a valid date: {exc}") from None


@functools.cache
def _zone(offset: str) -> tzinfo | None:
    """``+05:30`` -> its fixed offset (strptime costs ~20 us a call, and a write indexes a dozen dates; a clinic's
    dates carry a handful of offsets)."""
    return datetime.strptime(offset.replace(":", ""), "%z").tzinfo


_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)


def _utc(when: datetime, plus: timedelta = timedelta(0)) -> datetime:
    """``when + plus`` in UTC, held to the instants Python can hold: 9999-12-31 ends at datetime.max, and
    0001-01-01T00:00:00+14:00 (before year 1 in UTC) starts at datetime.min, instead of overflowing."""
    try:
        return (when + plus).astimezone(UTC)
    except OverflowError:
        return _LAST if when.year > 1 else _FIRST


def _elements(value: Any, path: list[str]) -> list[Any]:
    if not path:
        return value if isinstance(value, list) else [value]
    items = value if isinstance(value, list) else [value]
    out: list[Any] = []
    head, rest = path[0], path[1:]
    for item in items:
        if not isinstance(item, dict):
            continue
        if head in item:
            out += _elements(item[head], rest)
            continue
        for key, child in item.items():  # a choice element by its stem: effective -> effectiveDateTime
            if key.startswith(head) and len(key) > len(head) and key[len(head)].isupper():
                out += _elements(child, rest)
    return out


def extract(resource: dict, param: Param) -> list[dict[str, Any]]:
    """Index rows (system, code, start, end) of one parameter of a resource."""
    rows: list[dict[str, Any]] = []
    for path in param.paths:
        for element in _elements(resource, path.split(".")):
            rows += _rows(param, element)
    return rows


def _rows(param: Param, element: Any) -> list[dict[str, Any]]:
    """Index rows of one element, read by the parameter's search type."""
    if param.type == "token":
        return _token_rows(element)
    if param.type == "reference":
        return _reference_rows(param, element)
    if param.type == "date":
        return _date_rows(element)
    if param.type == "string":
        return _string_rows(element)
    if param.type == "uri" and isinstance(element, str):
        return [{"code": element}]
    return []


def _token_rows(element: Any) -> list[dict[str, Any]]:
    """A CodeableConcept's codings, an Identifier, a Coding, a boolean or a code."""
    if isinstance(element, dict):
        if "coding" in element:
            return [{"system": c.get("system"), "code": c.get("code")} for c in element["coding"] if c.get("code")]
        if "value" in element and "code" not in element:  # Identifier
            return [{"system": element.get("system"), "code": str(element["value"])}]
        if "code" in element:  # Coding
            return [{"system": element.get("system"), "code": element["code"]}]
        return []
    if isinstance(element, bool):
        return [{"system": None, "code": "true" if element else "false"}]
    if isinstance(element, str):
        return [{"system": None, "code": element}]
    return []


def _reference_rows(param: Param, element: Any) -> list[dict[str, Any]]:
    """A Reference (or canonical text) with its target type, when the parameter accepts that target."""
    text = element.get("reference") if isinstance(element, dict) else element if isinstance(element, str) else None
    if not text or (param.only_target and not text.startswith(param.only_target + "/")):
        return []
    target = text.split("/")[-2] if text.count("/") >= 1 and not text.startswith("http") else None
    return [{"system": target, "code": text}]


def _date_rows(element: Any) -> list[dict[str, Any]]:
    """A Period (open ends reach the far past/future) or a date/dateTime by its precision."""
    if isinstance(element, dict):
        start = element.get("start")
        end = element.get("end")
        lo = date_range(start)[0] if start else datetime(1, 1, 2, tzinfo=UTC)
        hi = date_range(end)[1] if end else datetime(9999, 12, 30, tzinfo=UTC)
        return [{"start": lo, "end": hi}]
    if isinstance(element, str):
        try:
            lo, hi = date_range(element)
        except BadValue:
            return []
        return [{"start": lo, "end": hi}]
    return []


def _string_rows(element: Any) -> list[dict[str, Any]]:
    """A HumanName or Address by its parts, or a string, lower-cased."""
    if isinstance(element, dict):  # HumanName, Address
        parts = [element.get("family"), *(element.get("given") or []), element.get("text")]
        return [{"code": p.lower()} for p in parts if isinstance(p, str)]
    if isinstance(element, str):
        return [{"code": element.lower()}]
    return []


def index_rows(resource: dict, params: dict[str, Param]) -> list[dict[str, Any]]:
    rows = []
    for code, param in params.items():
        if code.startswith("_"):
            continue
        for row in extract(resource, param):
            rows.append({"param": code, "system": None, "code": None, "start": None, "end": None, **row})
    return rows
