"""Domain objects <-> JSON-ready dicts for storage, with cattrs.

Datetimes keep their UTC offset (ISO 8601 text), so a time stored is the time served.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from enum import Enum
from typing import Any, TypeVar

import cattrs

from service.domain.episode import Episode
from service.domain.model import RECORD_TYPES, Record, RemsLedger

T = TypeVar("T")

converter = cattrs.Converter(omit_if_default=False)
converter.register_unstructure_hook(datetime, datetime.isoformat)
converter.register_structure_hook(
    datetime, lambda value, _: value if isinstance(value, datetime) else datetime.fromisoformat(value)
)
converter.register_unstructure_hook(date, date.isoformat)
converter.register_unstructure_hook_func(lambda t: isinstance(t, type) and issubclass(t, Enum), lambda v: v.value)
converter.register_structure_hook(
    date, lambda value, _: value if isinstance(value, date) else date.fromisoformat(value)
)


def to_data(obj: Any) -> dict[str, Any]:
    return converter.unstructure(obj)


def from_data(cls: type[T], data: dict[str, Any]) -> T:
    return converter.structure(data, cls)


def record_from_data(kind: str, data: dict[str, Any]) -> Record:
    return from_data(RECORD_TYPES[kind], data)


def episode_header_data(episode: Episode) -> dict[str, Any]:
    """The episode's own fields: records and flags are stored in their own rows, REMS sendings in
    rems_form_submissions (the time zone is the clinic's)."""
    data = to_data(replace(episode, records={}, flags=[], rems=RemsLedger()))
    data.pop("records")
    data.pop("flags")
    data.pop("rems", None)
    return data
