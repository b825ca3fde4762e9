"""HTTP plumbing shared by the views: parsing, problem+json, units of work, idempotency, ETags."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson
from flask import Response, current_app, g, request
from marshmallow import Schema, ValidationError
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import sessionmaker
from werkzeug.exceptions import HTTPException

from service.adapters import audit
from service.config import Settings
from service.domain import limits
from service.domain.errors import Conflict, DomainError, Incoherent, NotFound, StaleVersion, TransitionRefused
from service.security.tokens import Principal
from service.service_layer.audit_log import AuditUnavailableError, GroupCommitAuditLog, RefusalAggregator
from service.service_layer.services import Context
from service.service_layer.unit_of_work import UnitOfWork

log = logging.getLogger("kapfhir.http")

PROBLEM_JSON = "application/problem+json"
ETAG = re.compile(r'(?:W/)?"([\x21\x23-\x7e]*)"')
PROBLEM_BASE = "https://kapfhir.example.org/problems/"


@dataclass
class AppState:
    settings: Settings
    session_factory: sessionmaker
    audit_log: GroupCommitAuditLog
    refusals: RefusalAggregator


def state() -> AppState:
    return current_app.extensions["kapfhir"]


def principal() -> Principal:
    found: Principal | None = g.get("principal")
    if found is None:  # every non-public route is authenticated before its view runs
        raise RuntimeError("no authenticated principal for a protected route")
    return found


# --- problems ---------------------------------------------------------------------------------------------


class ApiProblem(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: list[dict[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.errors = errors or []
        self.headers = dict(headers or {})


def problem_response(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An error answer: RFC 9457 problem+json, or an OperationOutcome under /fhir."""
    if request.path == "/fhir" or request.path.startswith("/fhir/"):
        from service.entrypoints.fhir_http import error_response

        return error_response(status, title, detail, errors, headers)
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + title.lower().replace(" ", "-"),
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.path,
    }
    if errors:
        body["errors"] = errors
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


_DOMAIN_STATUS: tuple[tuple[type[DomainError], int], ...] = (
    (NotFound, 404),
    (StaleVersion, 412),
    (TransitionRefused, 409),
    (Conflict, 409),
    (Incoherent, 422),
    (DomainError, 422),
)


def domain_problem(exc: DomainError) -> Response:
    status = next(code for cls, code in _DOMAIN_STATUS if isinstance(exc, cls))
    errors = [{"field": e.field, "message": e.message} for e in exc.field_errors]
    extra = {}
    if isinstance(exc, TransitionRefused):
        extra = {"current_phase": exc.current, "allowed_next_phases": exc.allowed}
    response = problem_response(status, exc.title, exc.detail, errors)
    if extra:
        body = json.loads(response.get_data())
        body.update(extra)
        response.set_data(json.dumps(body))
    return response


def flatten_messages(messages: Any, prefix: str = "") -> list[dict[str, str]]:
    """marshmallow's nested error dict -> [{field: "a.b[0].c", message}]"""
    out: list[dict[str, str]] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            if key == "_schema":
                path = prefix or "(body)"
            elif isinstance(key, int):
                path = f"{prefix}[{key}]"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            if key == "_schema":
                out.extend({"field": path, "message": str(m)} for m in _as_list(value))
            else:
                out.extend(flatten_messages(value, path))
    else:
        out.extend({"field": prefix or "(body)", "message": str(m)} for m in _as_list(messages))
    return out


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def register_error_handlers(app: Any) -> None:
    @app.errorhandler(ApiProblem)
    def _api_problem(exc: ApiProblem) -> Response:
        return problem_response(exc.status, exc.title, exc.detail, exc.errors, exc.headers)

    @app.errorhandler(DomainError)
    def _domain(exc: DomainError) -> Response:
        return domain_problem(exc)

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> Response:
        errors = flatten_messages(exc.messages)
        said = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3]) + ("; ..." if len(errors) > 3 else "")
        return problem_response(422, "Invalid content", f"The request body does not match the schema: {said}", errors)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        headers = {}
        if exc.code == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return problem_response(exc.code or 500, exc.name, exc.description or exc.name, headers=headers)

    @app.errorhandler(OperationalError)
    def _database(exc: OperationalError) -> Response:
        log.error("database unavailable", extra={"error_class": type(exc.orig).__name__})
        return problem_response(
            503, "Service unavailable", "The database is not reachable; retry later.", headers={"Retry-After": "5"}
        )

    @app.errorhandler(DataError)
    def _unstorable(exc: DataError) -> Response:
        # A value the database refused (too long, out of range): the caller's input, never logged (it can be
        # patient data). Limits at the edge (service/domain/limits.py) should have refused it first.
        log.warning("value refused by the database", extra={"error_class": type(exc.orig).__name__})
        return problem_response(400, "Invalid value", "A value in the request cannot be stored; nothing was stored.")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # The class name only: an exception message can carry patient data.
        log.error("unhandled error", extra={"error_class": type(exc).__name__})
        return problem_response(500, "Internal error", "The request failed; nothing was stored.")


# --- parsing ----------------------------------------------------------------------------------------------


def _depth(value: Any, limit: int) -> bool:
    """True if the JSON value nests deeper than ``limit`` (iterative: no recursion on hostile input)."""
    if limit < 1:
        return True
    if not isinstance(value, (dict, list)):
        return False
    stack = [(value, 1)]  # containers only: a container's scalars sit one level below it
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if children and depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def request_id() -> str:
    """The caller's X-Request-ID if it is a short run of visible ASCII, else a fresh one: the id is echoed in a
    header, logged and stored in the audit trail (service/domain/limits.py)."""
    given = request.headers.get("X-Request-ID")
    return given if given is not None and limits.REQUEST_ID.fullmatch(given) else str(uuid.uuid4())


def refuse_unstorable_input() -> None:
    """before_request, ahead of authentication: a path or query value that no database could store or compare
    (NUL, a lone surrogate) is a 400, not a failed query."""
    errors = []
    reason = limits.bad_character(request.path)
    if reason:
        errors.append({"field": "(path)", "message": reason})
    for key, value in request.args.items(multi=True):
        reason = limits.bad_character(key) or limits.bad_character(value)
        if reason:
            errors.append({"field": key if not limits.bad_character(key) else "(query)", "message": reason})
    if errors:
        raise ApiProblem(400, "Invalid characters", "The request holds characters that cannot be stored.", errors[:20])


def json_body() -> Any:
    """The request body parsed as JSON, once per request: checked for depth and storable characters."""
    if "json_body" in g:
        return g.json_body
    mimetype = request.mimetype or ""
    if not (mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))):
        raise ApiProblem(
            415, "Unsupported media type", f"Send the body as application/json (got '{mimetype or 'no content type'}')."
        )
    raw = request.get_data(cache=True)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A chunked body is read up to the limit and cut there (werkzeug): one that reaches it is too large.
        raise ApiProblem(413, "Content too large", f"The body is larger than {limit} bytes.")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        where = f" at line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ApiProblem(400, "Malformed JSON", f"The body is not valid JSON{where}.") from None
    if _depth(body, state().settings.max_json_depth):
        raise ApiProblem(400, "Malformed JSON", f"The body nests deeper than {state().settings.max_json_depth} levels.")
    bad = limits.json_character_errors(body, raw=raw)
    if bad:
        raise ApiProblem(
            400,
            "Invalid characters",
            "The body holds strings that cannot be stored.",
            [{"field": e.field, "message": e.message} for e in bad],
        )
    g.json_body = body
    return body


def json_body_for_permissions() -> Any:
    """The body, for a hook that decides what a request needs before its view runs (the scope check): None when
    it is not JSON; a body too deep or malformed is refused here, before anything else parses it."""
    mimetype = request.mimetype or ""
    if not (mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))):
        return None
    return json_body()


def load(schema: Schema) -> dict[str, Any]:
    body = json_body()
    if not isinstance(body, dict):
        raise ApiProblem(422, "Invalid content", "The body must be a JSON object.")
    return schema.load(body)


def query_schema_for(endpoint: str | None, defaults: Mapping[str, Any] | None) -> type[Schema]:
    """The query parameters a route accepts (its declaration); any other is refused (422)."""
    from service.entrypoints import schemas as s
    from service.entrypoints.routes import facts_of

    facts = facts_of(endpoint)
    return facts.query_schema(defaults) if facts is not None else s.NoQuerySchema


def query_args() -> dict[str, Any]:
    """The route's query parameters, parsed once per request."""
    if "query" not in g:
        rule = request.url_rule
        try:
            g.query = query_schema_for(request.endpoint, rule.defaults if rule else None)().load(request.args)
        except ValidationError as exc:
            raise query_problem(exc) from None
    return g.query


def query_problem(exc: ValidationError) -> ApiProblem:
    """Query-string mistakes name the parameter: "query parameter `limit`: not a valid integer"."""
    errors = flatten_messages(exc.messages)
    said = "; ".join(f"query parameter `{e['field']}`: {e['message'][:1].lower()}{e['message'][1:]}" for e in errors)
    return ApiProblem(422, "Invalid query parameter", said.replace(".;", ";").rstrip("."), errors)


def if_match_version() -> int | None:
    """The version an update is conditional on, from If-Match (``"3"`` or ``W/"3"``); None when absent or *."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    match = ETAG.fullmatch(header.strip())
    if match is None:
        raise ApiProblem(400, "Malformed If-Match", f'If-Match {header!r} is not an entity tag such as W/"3".')
    version = limits.ascii_int(match.group(1))
    if version is None:
        raise ApiProblem(412, "Precondition failed", f"If-Match {header!r} is not an ETag this service issued.")
    return version


def etag(version: int) -> str:
    return f'W/"{version}"'


@cache
def dumper(schema: type[Schema], *, many: bool = False) -> Schema:
    """One instance per schema class: marshmallow schemas keep no state between dumps, and building one copies every
    declared field (it was a third of an episode read)."""
    return schema(many=many)


def json_response(body: Any, status: int = 200, *, version: int | None = None, location: str | None = None) -> Response:
    response = Response(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), status=status, mimetype="application/json")
    if version is not None:
        response.headers["ETag"] = etag(version)
    if location:
        response.headers["Location"] = location
    return response


# --- units of work ------------------------------------------------------------------------------------------


def _context() -> Context:
    settings = state().settings
    return Context(
        actor=principal().client_id,
        now=datetime.now(UTC),
        policy=settings.safety,
        future_tolerance_min=settings.future_tolerance_min,
        sync_targets=tuple(settings.targets),
    )


def read(fn: Callable[[UnitOfWork], Response]) -> Response:
    """Runs a query in a read transaction, then audits it through the group-commit audit log: readers never hold
    the write lock while they read, and share one short audit transaction with the reads answered beside them."""
    from service.entrypoints.audit_trail import audit_record

    query_args()
    with UnitOfWork(state().session_factory, principal().clinic_id, write=False) as uow:
        response = fn(uow)
    try:
        state().audit_log.append(audit_record(response.status_code))
    except AuditUnavailableError:
        log.error("audit unavailable", extra={"error_class": "AuditUnavailableError"})
        raise ApiProblem(
            503, "Service unavailable", "The access could not be audited; retry later.", headers={"Retry-After": "5"}
        ) from None
    g.audited = True
    return response


_REPLAYED_HEADERS = ("ETag", "Location", "Content-Type")


def write(fn: Callable[[UnitOfWork, Context], Response], *, idempotent: bool = False) -> Response:
    """Runs a use case in one transaction; with an Idempotency-Key, stores the response in the same
    transaction so that a retry gets the first response and creates nothing. ``idempotent``: running the request
    again gives the answer it should have had (a conditional create): when a request stored at the same time made it
    conflict, it runs once more, in a new transaction, and finds what that request stored."""
    if idempotent:
        try:
            return _write(fn)
        except ConflictingWrite:
            log.info("write retried after a concurrent write", extra={"route": request.url_rule.rule})
    try:
        return _write(fn)
    except ConflictingWrite as exc:
        raise exc.answer or ApiProblem(
            409, "Conflict", "The request conflicts with data stored at the same time; retry."
        ) from None


class ConflictingWrite(Exception):
    """A write refused because another request stored the same thing at the same time (the database's constraint,
    or a use case's check that ran after it). ``answer``: the refusal to give if the write is not run again."""

    def __init__(self, answer: ApiProblem | None = None) -> None:
        super().__init__()
        self.answer = answer


def _write(fn: Callable[[UnitOfWork, Context], Response]) -> Response:
    query_args()
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 200:
        raise ApiProblem(400, "Invalid Idempotency-Key", "An Idempotency-Key has 1 to 200 characters.")
    body_hash = hashlib.sha256(request.get_data(cache=True)).hexdigest()
    who = principal()
    try:
        with UnitOfWork(state().session_factory, who.clinic_id, write=True) as uow:
            if key is not None:
                replay = _replay(uow, who.client_id, key, body_hash)
                if replay is not None:
                    _audit_and_commit(uow, replay)
                    return replay
            response = fn(uow, _context())
            if key is not None:
                uow.repo.store_idempotent_response(
                    client_id=who.client_id,
                    key=key,
                    method=request.method,
                    path=request.path,
                    body_sha256=body_hash,
                    status_code=response.status_code,
                    response_body=response.get_data(as_text=True),
                    response_headers={h: response.headers[h] for h in _REPLAYED_HEADERS if h in response.headers},
                    now=datetime.now(UTC),
                )
            _audit_and_commit(uow, response)
            return response
    except IntegrityError:
        if key is not None:
            # A concurrent request with the same key committed first: answer as it did.
            with UnitOfWork(state().session_factory, who.clinic_id, write=False) as uow:
                replay = _replay(uow, who.client_id, key, body_hash)
                if replay is not None:
                    return replay
        raise ConflictingWrite from None


def _audit_and_commit(uow: UnitOfWork, response: Response) -> None:
    """The audit record of a write commits with the write: no change without its audit, and no audit of a change
    that was rolled back."""
    from service.entrypoints.audit_trail import audit_record, created_id_of

    audit.append(uow.session, audit_record(response.status_code, created_id_of(response)))
    uow.commit()
    g.audited = True


def _replay(uow: UnitOfWork, client_id: str, key: str, body_hash: str) -> Response | None:
    stored = uow.repo.find_idempotent_response(client_id, key)
    if stored is None:
        return None
    if stored.body_sha256 != body_hash or stored.path != request.path or stored.method != request.method:
        raise ApiProblem(
            422,
            "Idempotency-Key reused",
            "This Idempotency-Key was used for a different request; use a new key for a new request.",
            [{"field": "Idempotency-Key", "message": "already used with another body or path"}],
        )
    response = Response(stored.response_body, status=stored.status_code)
    for name, value in stored.response_headers.items():
        response.headers[name] = value
    response.headers["Idempotent-Replayed"] = "true"
    return response
