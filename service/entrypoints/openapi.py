"""Builds the OpenAPI 3.1 document from the app's URL map and the marshmallow schemas.

``openapi.yaml`` is this document written out (``kapfhir openapi --write``); a test fails when the file and the
code disagree, so the contract cannot drift from what is served.
"""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema
from werkzeug.routing import Rule

from service.entrypoints import schemas as s
from service.entrypoints.http import query_schema_for
from service.entrypoints.rate_limits import EXEMPT_ENDPOINTS
from service.entrypoints.routes import OAUTH_ERROR, ROUTES, Route

WRITE_ERRORS = (400, 404, 409, 412, 413, 415, 422)
READ_ERRORS = (404, 422)


def _status_text(code: int) -> str:
    return {
        200: "OK",
        201: "Created",
        400: "Malformed request",
        401: "No valid bearer token",
        403: "The token's scopes do not cover the request",
        404: "Not found",
        409: "Conflict",
        412: "Stale If-Match",
        413: "Body too large",
        415: "Unsupported media type",
        422: "Invalid or incoherent content",
        429: "Rate limit exceeded",
        503: "Not ready",
    }[code]


def _schema_name(schema: type[Schema] | Schema) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__.removesuffix("Schema")
    # Nested in a session request, a record leaves out its reference to the session.
    return f"{name}InSession" if not isinstance(schema, type) and schema.exclude else name


def build_spec(app: Flask) -> dict[str, Any]:
    spec = APISpec(
        title="kapfhir",
        version="0.1.0",
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin(schema_name_resolver=_schema_name)],
        info={
            "description": "Records ketamine-assisted psychotherapy episodes. Errors are RFC 9457 problem+json. "
            "POSTs accept an Idempotency-Key; updates accept If-Match with the ETag of a read."
        },
    )
    spec.components.schema("Problem", schema=s.ProblemSchema)
    spec.components.security_scheme(
        "bearer",
        {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "SMART Backend Services access token",
        },
    )
    spec.options["security"] = [{"bearer": []}]
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue  # files (the API docs' scripts and styles), not operations
        declared = ROUTES.get(rule.endpoint)
        if declared is None:
            raise LookupError(f"route {rule.endpoint} ({rule.rule}) has no declaration in service.entrypoints.routes")
        op = declared.for_rule(rule.defaults)
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if op.operation is not None:  # the FHIR API writes its own operation objects
                paths.setdefault(path, {})[method.lower()] = op.operation(rule, method)
            else:
                paths.setdefault(path, {})[method.lower()] = _operation(rule, op, path, method)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _operation(rule: Rule, op: Route, path: str, method: str) -> dict[str, Any]:
    """The operation object of one method of a declared /api route: its parameters, body and answers."""
    operation: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{rule.endpoint.removeprefix('api.')}_{rule.defaults['collection'].replace('-', '_')}"
        if rule.defaults and "collection" in rule.defaults
        else rule.endpoint.removeprefix("api."),
        "responses": {},
    }
    parameters = _parameters(rule, method)
    if parameters:
        operation["parameters"] = parameters
    if op.public:
        operation["security"] = []
    if op.request is not None:
        media = "application/x-www-form-urlencoded" if rule.endpoint == "auth.token" else "application/json"
        operation["requestBody"] = {"required": True, "content": {media: {"schema": op.request}}}
    operation["responses"][str(op.status)] = _success(rule, op)
    if rule.endpoint == "auth.token":
        for code in (400, 401):
            operation["responses"][str(code)] = {
                "description": "OAuth 2.0 error (RFC 6749 §5.2)",
                "content": {"application/json": {"schema": OAUTH_ERROR}},
            }
    for code in _error_statuses(rule, op, method):
        if path.startswith("/fhir"):  # under the FHIR base every error is an OperationOutcome
            content = {"application/fhir+json": {"schema": {"type": "object", "required": ["resourceType"]}}}
        else:
            content = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        operation["responses"][str(code)] = {"description": _status_text(code), "content": content}
    return operation


def _parameters(rule: Rule, method: str) -> list[dict[str, Any]]:
    """Path arguments, the query schema, Idempotency-Key on POST and If-Match on updates."""
    parameters: list[dict[str, Any]] = [
        {"name": arg, "in": "path", "required": True, "schema": {"type": "string"}}
        for arg in sorted(rule.arguments - set(rule.defaults or {}))
    ]
    query = query_schema_for(rule.endpoint, rule.defaults)
    if query().fields:
        parameters.append({"in": "query", "schema": query})
    if method == "POST":
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
            }
        )
    if method == "PUT" or rule.endpoint in (
        "api.transition_phase",
        "api.mark_entered_in_error",
        "api.withdraw_consent",
        "api.withdraw_privacy_consent",
    ):
        parameters.append({"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"}})
    return parameters


def _success(rule: Rule, op: Route) -> dict[str, Any]:
    """The success answer: a FHIR Bundle for exports, else the declared response schema or media type."""
    success: dict[str, Any] = {"description": _status_text(op.status)}
    if op.export:
        success["content"] = {
            "application/fhir+json": {
                "schema": {
                    "type": "object",
                    "required": ["resourceType"],
                    "properties": {"resourceType": {"const": "Bundle"}},
                }
            }
        }
    elif op.response is not None:
        success["content"] = {op.media: {"schema": op.response}}
        if rule.endpoint == "api.get_rems_form":
            success["content"]["application/pdf"] = {"schema": {"type": "string", "format": "binary"}}
    elif op.media != "application/json":
        success["content"] = {op.media: {"schema": {"type": "string"}}}
    return success


def _error_statuses(rule: Rule, op: Route, method: str) -> tuple[int, ...]:
    """The error statuses a route can answer: by method, by who may call it, and the rate limit."""
    errors: tuple[int, ...] = WRITE_ERRORS if method in ("POST", "PUT") else READ_ERRORS
    if rule.endpoint == "readyz":
        errors = (503,)
    elif rule.endpoint == "metrics.metrics":
        errors = (404,)  # to addresses outside KAPFHIR_METRICS_ALLOW
    elif op.public:
        errors = op.public_errors
    else:
        errors = (401, 403, *errors)
    if rule.endpoint not in EXEMPT_ENDPOINTS:
        errors = (*errors, 429)  # the per-address limit runs before everything, public routes included
    return errors
