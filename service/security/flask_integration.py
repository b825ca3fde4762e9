"""Thin glue for the Flask app. Only this module of ``service.security`` may import Flask (and does so lazily).

Typical wiring (the lead's)::

    validator = build_token_validator(settings, local_key=key)

    @app.before_request
    def _auth():
        if request.path in PUBLIC or request.path.startswith("/.well-known/"):
            return None
        try:
            g.principal = authenticate_request(request.headers, validator)
        except AuthenticationError as err:
            return unauthorized_response(err)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from service.security.scopes import requirement_for
from service.security.tokens import (
    AuthenticationError,
    InsufficientScopeError,
    MissingTokenError,
    Principal,
    TokenValidator,
)

__all__ = [
    "AuthenticationError",
    "InsufficientScopeError",
    "authenticate_request",
    "bearer_token",
    "check_scope",
    "unauthorized_response",
    "www_authenticate_header",
]


def _get_header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return value


_WHITESPACE = re.compile(r"\s")


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of ``Authorization: Bearer <token>``.

    No header or another scheme -> :class:`MissingTokenError` (``Bearer realm="kapfhir"``, no error code, as RFC 6750
    §3.1 asks); ``Bearer`` with an empty or malformed value -> ``invalid_token``.
    """
    value = _get_header(headers, "Authorization")
    if not value or not value.strip():
        raise MissingTokenError()
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise MissingTokenError()
    token = token.strip()
    if not token or _WHITESPACE.search(token):
        raise AuthenticationError("invalid_token", "malformed bearer credentials")
    return token


def authenticate_request(request_headers: Mapping[str, str], validator: TokenValidator) -> Principal:
    """Validate the request's bearer token; raises :class:`AuthenticationError` (401)."""
    return validator.validate(bearer_token(request_headers))


def www_authenticate_header(error: AuthenticationError | InsufficientScopeError | None = None) -> str:
    """``WWW-Authenticate`` value for a refusal; ``None`` -> ``Bearer realm="kapfhir"``."""
    return (error or MissingTokenError()).www_authenticate()


def check_scope(principal: Principal, method: str, resource_types: Iterable[str], *, item: bool = False) -> None:
    """Raise :class:`InsufficientScopeError` (403) unless the token's scopes cover the route."""
    requirement = requirement_for(method, resource_types, item=item)
    missing = principal.scopes.missing(requirement)
    if missing:
        needed = [f"system/{t}.{requirement.interaction}" for t in missing]
        raise InsufficientScopeError(needed, f"scope {' '.join(needed)} required")


def unauthorized_response(error: AuthenticationError) -> Any:
    """A Flask response: 401, ``application/problem+json``, ``WWW-Authenticate``, ``Cache-Control: no-store``."""
    # imported here so the rest of the package never needs Flask
    from flask import jsonify

    body = {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": error.status,
        "detail": error.description or "bearer token required",
    }
    response = jsonify(body)
    response.status_code = error.status
    response.mimetype = "application/problem+json"
    response.headers["WWW-Authenticate"] = error.www_authenticate()
    response.headers["Cache-Control"] = "no-store"
    return response
