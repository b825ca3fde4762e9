"""How /fhir answers: FHIR JSON (``_pretty`` honoured) and every error as an OperationOutcome naming the element.
Used by the FHIR views and by the HTTP plumbing for errors raised under /fhir."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from flask import Response, has_request_context, request

from mappings.resources.operation_outcome import issue, operation_outcome

FHIR_JSON = "application/fhir+json"

_ISSUE_CODE = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    412: "conflict",
    413: "too-long",
    415: "not-supported",
    422: "processing",
    429: "throttled",
    503: "transient",
}


def fhir_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """``body`` as FHIR JSON; bytes (a stored resource's JSON) are sent as they are."""
    if isinstance(body, bytes):
        data = body
    else:
        option = orjson.OPT_NON_STR_KEYS
        if has_request_context() and request.args.get("_pretty") == "true":
            option |= orjson.OPT_INDENT_2
        data = orjson.dumps(body, option=option)
    response = Response(data, status=status, mimetype=FHIR_JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_response(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Every error under /fhir is an OperationOutcome; each field error is an issue pointing at its element."""
    code = _ISSUE_CODE.get(status, "exception")
    issues = [
        issue(e.get("severity", "error"), e.get("code", code), e.get("message", detail), e["field"])
        for e in errors or []
        if e.get("field")
    ]
    if not issues:
        issues = [issue("error", code, f"{title}: {detail}")]
    return fhir_response(operation_outcome(issues), status, headers)
