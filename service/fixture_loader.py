"""Loads fixture episodes (fixtures/episodes/*.json) by replaying their requests against the API.

A fixture is API input: practitioners, a patient, an episode and a list of steps, each a request whose body
may refer to ids created earlier as "{{name}}". Going through the API means fixtures obey exactly the rules
clinic software does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

PLACEHOLDER = re.compile(r"\{\{([a-zA-Z0-9_.-]+)\}\}")

# (method, path, body) -> (status, parsed JSON body)
Send = Callable[[str, str, Any], tuple[int, Any]]


class FixtureError(Exception):
    pass


def resolve(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in ids:
                raise FixtureError(f"unknown placeholder {{{{{name}}}}}")
            return ids[name]

        return PLACEHOLDER.sub(substitute, value)
    if isinstance(value, list):
        return [resolve(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, ids) for k, v in value.items()}
    return value


def fixture_paths(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.json"))


def load_fixture(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def replay(fixture: dict[str, Any], send: Send) -> dict[str, str]:
    """Sends every request of a fixture; returns the ids it created by name. Raises on any unexpected status."""
    ids: dict[str, str] = {}
    for step in fixture["steps"]:
        path = resolve(step["path"], ids)
        body = resolve(step.get("body"), ids)
        status, response = send(step.get("method", "POST"), path, body)
        expected = step.get("expect_status", 201 if step.get("method", "POST") == "POST" else 200)
        if status != expected:
            raise FixtureError(
                f"{fixture.get('name')}: step {step.get('save_as') or path} answered {status}, "
                f"expected {expected}: {json.dumps(response)[:500]}"
            )
        if step.get("save_as"):
            ids[step["save_as"]] = response["id"]
        for name, where in (step.get("save_item") or {}).items():
            # e.g. pick the safety flag a rule raised: {"flag": {"rule_id": "dose-without-active-consent"}}
            match = next((i for i in response["items"] if all(i.get(k) == v for k, v in where.items())), None)
            if match is None:
                raise FixtureError(f"{fixture.get('name')}: no item matching {where} at {path}")
            ids[name] = match["id"]
        for name, index_path in (step.get("save_children") or {}).items():
            collection, index = index_path.split(".")
            ids[name] = response[collection][int(index)]["id"]
    return ids
