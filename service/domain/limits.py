"""How long caller-supplied values may be, and which characters they may hold: one place for /api/v1 and /fhir.

Why: every value below reaches a column with a length limit (PostgreSQL refuses what SQLite stores), an index or
the logs. Refusing at the edge, with the same limit on both doors, keeps a hostile value from failing a shared
write (an audit batch) or storing a 900 kB name that the other door would refuse.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from service.domain.errors import FieldError

# Clinical values (columns in service/adapters/orm.py: patients.mrn_value 100, mrn_system 500).
MAX_NAME_PART = 100  # a family name, a given name, a name's text
MAX_IDENTIFIER_VALUE = 100  # an MRN, an NPI, any Identifier.value
MAX_IDENTIFIER_SYSTEM = 500  # Identifier.system, a URI

# Who is calling (audit_events: clinic_id 64, client_id 200, request_id 100).
MAX_CLINIC_ID = 64
MAX_CLIENT_ID = 200
MAX_REQUEST_ID = 100
# A request id is echoed in a header and stored: visible ASCII without spaces only.
REQUEST_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_REQUEST_ID}}}")

# Search and paging: offsets and counts end in a 64-bit integer column or LIMIT/OFFSET.
MAX_OFFSET = 1_000_000
MAX_SEARCH_VALUE = 1000  # one search value: a token system|value (500 + 1 + 100) fits

_ASCII_DIGITS = re.compile(r"[0-9]{1,18}")


def ascii_int(text: str) -> int | None:
    """The value of ``text`` if it is 1-18 ASCII digits (``str.isdigit`` also takes '²' and Arabic-Indic digits,
    which ``int`` then refuses or reads, and 19+ digits pass 2**63), else None."""
    return int(text) if _ASCII_DIGITS.fullmatch(text) else None


def bad_character(text: str) -> str | None:
    """Why ``text`` cannot be stored: NUL (PostgreSQL text refuses it) or a lone surrogate (not encodable as
    UTF-8); None when it can."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode)"
    return None


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, string) for every key and string value of a JSON value, iteratively (no recursion on deep input)."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict):
            for key, child in item.items():
                yield f"{where}.{key}" if where else str(key), str(key)
                stack.append((child, f"{where}.{key}" if where else str(key)))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))


# The JSON escapes that decode to NUL or to a UTF-16 surrogate (alone or in a pair).
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def json_text_may_hold_unstorable(raw: bytes) -> bool:
    """False when no string decoded from the JSON text ``raw`` (as ``json.loads`` decodes bytes) can hold NUL or a
    lone surrogate, so that ``json_character_errors`` need not walk the value: such a string comes only from a
    ``\\u0000`` or ``\\uD800``-``\\uDFFF`` escape or from UTF-8 surrogate bytes (0xED 0xA0-0xBF, which
    ``json.loads`` lets through). A text with NUL bytes (UTF-16 or UTF-32) is not judged. One scan in C."""
    return b"\x00" in raw or b"\xed" in raw or _UNSTORABLE_ESCAPE.search(raw) is not None


def json_character_errors(body: Any, limit: int = 20, *, raw: bytes | None = None) -> list[FieldError]:
    """Every string of a JSON body that cannot be stored (NUL, lone surrogate), at most ``limit`` of them. Given the
    ``raw`` text it was decoded from, the body is walked only if that text may hold one."""
    if raw is not None and not json_text_may_hold_unstorable(raw):
        return []
    errors = []
    for where, text in _strings(body, ""):
        reason = bad_character(text)
        if reason:
            errors.append(FieldError(where or "(body)", reason))
            if len(errors) >= limit:
                break
    return errors


def _too_long(errors: list[FieldError], where: str, value: Any, limit: int) -> None:
    if isinstance(value, str) and len(value) > limit:
        errors.append(FieldError(where, f"at most {limit} characters (got {len(value)})"))


def _identifier_errors(errors: list[FieldError], here: str, child: Any) -> None:
    """Identifier.value and .system of one ``identifier`` element (a list or a single Identifier)."""
    for i, ident in enumerate(child if isinstance(child, list) else [child]):
        if isinstance(ident, dict):
            at = f"{here}[{i}]" if isinstance(child, list) else here
            _too_long(errors, f"{at}.value", ident.get("value"), MAX_IDENTIFIER_VALUE)
            _too_long(errors, f"{at}.system", ident.get("system"), MAX_IDENTIFIER_SYSTEM)


def _human_name_errors(errors: list[FieldError], here: str, names: list) -> None:
    """HumanName.family, .text and each .given of a ``name`` list."""
    for i, name in enumerate(names):
        if isinstance(name, dict):
            _too_long(errors, f"{here}[{i}].family", name.get("family"), MAX_NAME_PART)
            _too_long(errors, f"{here}[{i}].text", name.get("text"), MAX_NAME_PART)
            given = name.get("given")
            for j, part in enumerate(given if isinstance(given, list) else []):
                _too_long(errors, f"{here}[{i}].given[{j}]", part, MAX_NAME_PART)


def fhir_length_errors(body: Any, root: str = "Bundle", limit: int = 20) -> list[FieldError]:
    """Identifiers and human names anywhere in a FHIR JSON body, held to the limits /api/v1 applies: every
    ``identifier`` (Identifier.value, .system) and every HumanName (``name`` entries with family/given/text)."""
    errors: list[FieldError] = []
    stack: list[tuple[Any, str]] = [(body, root)]
    while stack and len(errors) < limit:
        item, where = stack.pop()
        if isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
            continue
        if not isinstance(item, dict):
            continue
        for key, child in item.items():
            if key == "identifier":
                _identifier_errors(errors, f"{where}.{key}", child)
            elif key == "name" and isinstance(child, list):
                _human_name_errors(errors, f"{where}.{key}", child)
            if isinstance(child, (dict, list)):
                stack.append((child, f"{where}.{key}"))
    return errors[:limit]
