"""The FHIR R4 REST API under /fhir (issue: FHIR REST API). Being built: only the hooks the app needs exist yet."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response

from service.security.scopes import Requirement

bp = Blueprint("fhir", __name__, url_prefix="/fhir")

# Endpoints under /fhir that need no token (the CapabilityStatement).
PUBLIC_ENDPOINTS: set[str] = set()


def requirement(endpoint: str, view_args: Mapping[str, Any], method: str) -> Requirement | None:
    """The SMART permission a /fhir request needs (None: no declared requirement, which a test forbids)."""
    return None


def error_response(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Every error under /fhir is an OperationOutcome (filled in with the FHIR API)."""
    raise NotImplementedError


def openapi_operation(rule: Any, method: str) -> dict[str, Any]:
    """The OpenAPI operation object of a /fhir route (filled in with the FHIR API)."""
    raise NotImplementedError
