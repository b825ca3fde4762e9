"""The app in-process for tests and benchmarks: built on a database URL, a bearer token of a clinic, and the
domain API over the Flask test client."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from service.config import Settings
from service.entrypoints.app import create_app
from service.entrypoints.cli import ensure_clinic, prepare_database
from service.security.settings import SecuritySettings
from tests.support.paths import REPO_ROOT

__all__ = ["REPO_ROOT", "Api", "TokenClient", "authorized_app", "bearer", "make_app", "token_for"]


def make_app(database_url: str, *, signing_key_file: str | None = None, **overrides: Any) -> Flask:
    key_file = signing_key_file or str(Path(tempfile.mkdtemp(prefix="kapfhir-key-")) / "signing-key.pem")
    settings = Settings(database_url=database_url, security=SecuritySettings(signing_key_file=key_file), **overrides)
    prepare_database(settings)
    return create_app(settings)


def token_for(
    app: Flask, *, clinic: str = "demo", scope: str = "system/*.cruds", client_id: str = "test-client"
) -> str:
    """A bearer token from the app's embedded issuer, for a clinic registered on the app (tokens of clinics the
    service does not hold are refused)."""
    if clinic != app.extensions["kapfhir"].settings.default_clinic_id:
        ensure_clinic(app.extensions["kapfhir"].settings, clinic, clinic, f"https://{clinic}.example.org/fhir/id")
    issuer = app.extensions["kapfhir.security"].issuer
    return issuer.issue(client_id=client_id, clinic_id=clinic, scope=scope).access_token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TokenClient(FlaskClient):
    """A test client that sends the clinic's bearer token unless the request brings its own headers."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", None) or {})
        headers.setdefault("Authorization", f"Bearer {token_for(self.application)}")
        return super().open(*args, headers=headers, **kwargs)


def authorized_app(database_url: str, **overrides: Any) -> Flask:
    app = make_app(database_url, **overrides)
    app.test_client_class = TokenClient
    return app


class Api:
    """The domain API over the Flask test client, as a client of one clinic with a bearer token."""

    def __init__(self, client: FlaskClient, token: str | None = None) -> None:
        self.client = client
        self.token = token or token_for(client.application)

    def _headers(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return {"headers": headers, **kwargs}

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.client.post(f"/api/v1{path}", json=body, **self._headers(kwargs))

    def put(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.client.put(f"/api/v1{path}", json=body, **self._headers(kwargs))

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(f"/api/v1{path}", **self._headers(kwargs))

    def created(self, path: str, body: Any, **kwargs: Any) -> dict[str, Any]:
        response = self.post(path, body, **kwargs)
        assert response.status_code == 201, response.get_json()
        return response.get_json()
