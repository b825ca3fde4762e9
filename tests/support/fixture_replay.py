"""Replaying the fixtures (fixtures/episodes, fixtures/invalid) with service.fixture_loader.replay against the app
in-process, on SQLite in a test's tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask

from tests.support.app import authorized_app
from tests.support.paths import REPO_ROOT

__all__ = ["INVALID", "api_sender", "sqlite_app"]

INVALID = REPO_ROOT / "fixtures" / "invalid"  # refused requests, replayed after INVALID / "_base.json"


def sqlite_app(tmp_path: Path) -> Flask:
    """The app on SQLite in tmp_path, its test client sending the clinic's bearer token."""
    return authorized_app(f"sqlite:///{tmp_path}/k.db")


def api_sender(client: Any) -> Callable[[str, str, Any], tuple[int, Any]]:
    """The send(method, path, body) -> (status, JSON body) that replay calls, over /api/v1 of a test client."""

    def send(method: str, path: str, body: Any) -> tuple[int, Any]:
        r = client.open("/api/v1" + path, method=method, json=body)
        return r.status_code, r.get_json(silent=True)

    return send
