"""Who may do what: bearer tokens, SMART scopes per route, the embedded token endpoint, and the audit trail."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, has_request_context, request
from sqlalchemy import select
from sqlalchemy.engine import Engine

from service.adapters import audit, orm
from service.adapters.security_store import SqlClientStore, SqlReplayStore
from service.entrypoints import schemas as s
from service.entrypoints.audit_trail import AUDIT_SUBTYPE, audit_record, created_id_of  # noqa: F401 - used by the hooks below
from service.entrypoints.routes import (  # noqa: F401 - EPISODE_TYPES re-exported
    ANY_OBJECT,
    EPISODE_TYPES,
    TOKEN,
    TOKEN_FORM,
    Route,
    facts_of,
    page_schema_of,
    route,
)
from service.security.client_auth import TokenEndpoint
from service.security.flask_integration import bearer_token
from service.security.keys import KeySourceUnavailableError, SigningKey
from service.security.scopes import Requirement
from service.security.settings import SecuritySettings
from service.security.smart_configuration import smart_configuration
from service.security.tokens import (
    AuthenticationError,
    InsufficientScopeError,
    TokenIssuer,
    TokenValidator,
    build_local_issuer,
    build_token_validator,
)
from service.service_layer.unit_of_work import UnitOfWork

log = logging.getLogger("kapfhir.auth")

bp = Blueprint("auth", __name__)


class RegisteredClinics:
    """Whether a clinic is registered, from the clinics table, remembered for a short while per process."""

    TTL_SECONDS = 30.0

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._known: dict[str, tuple[bool, float]] = {}
        self._lock = threading.Lock()

    def is_registered(self, clinic_id: str) -> bool:
        now = time.monotonic()
        with self._lock:
            found = self._known.get(clinic_id)
        if found is not None and now - found[1] < self.TTL_SECONDS:
            return found[0]
        with self._engine.connect() as connection:
            registered = (
                connection.execute(select(orm.clinics.c.id).where(orm.clinics.c.id == clinic_id)).first() is not None
            )
        with self._lock:
            if len(self._known) > 1000:
                self._known.clear()
            self._known[clinic_id] = (registered, now)
        return registered


@dataclass
class SecurityRuntime:
    settings: SecuritySettings
    validator: TokenValidator
    issuer: TokenIssuer | None
    token_endpoint: TokenEndpoint | None
    base_url: str
    clinics: RegisteredClinics


def build_runtime(settings: SecuritySettings, engine: Engine, base_url: str) -> SecurityRuntime:
    settings.validate_for_production()
    issuer = build_local_issuer(settings) if settings.signing_key_file else None
    local_key: SigningKey | None = issuer.signing_key if issuer else None
    validator = build_token_validator(settings, local_key=local_key)
    token_url = base_url.rstrip("/") + "/oauth2/token"
    endpoint = (
        TokenEndpoint(
            clients=SqlClientStore(engine),
            issuer=issuer,
            token_url=token_url,  # type: ignore[arg-type]
            replay_store=SqlReplayStore(engine),
        )  # type: ignore[arg-type]
        if issuer
        else None
    )
    return SecurityRuntime(settings, validator, issuer, endpoint, base_url, RegisteredClinics(engine))


def runtime() -> SecurityRuntime:
    return current_app.extensions["kapfhir.security"]


def requirement_of(endpoint: str | None, defaults: Mapping[str, Any] | None) -> Requirement | None:
    """What a route needs (its declaration in ``service.entrypoints.routes``), or None for a public route or an
    unmatched one (a test forbids routes without a declaration)."""
    facts = facts_of(endpoint)
    if facts is None:
        return None
    view_args = (request.view_args or {}) if has_request_context() else {}
    method = request.method if has_request_context() else "GET"
    return facts.requirement_for(view_args, defaults, method)


def is_public(endpoint: str | None) -> bool:
    facts = facts_of(endpoint)
    if endpoint is not None and (endpoint == "static" or endpoint.endswith(".static")):
        return True  # files: the app's and the API docs' scripts and styles
    return facts is not None and facts.public


def _problem(status: int, title: str, detail: str, www_authenticate: str | None = None) -> Response:
    from service.entrypoints.http import problem_response

    headers = {"WWW-Authenticate": www_authenticate} if www_authenticate else {}
    return problem_response(status, title, detail, headers=headers)


def authenticate() -> Response | None:
    """before_request: a valid token and a scope that covers the route, or a 401/403 answer."""
    if is_public(request.endpoint) or request.method == "OPTIONS":
        return None
    try:
        principal = runtime().validator.validate(bearer_token(request.headers))
    except AuthenticationError as exc:
        g.audit_outcome = "4"
        return _problem(
            401, "Unauthorized", exc.description or "A valid bearer token is required.", exc.www_authenticate()
        )
    except KeySourceUnavailableError:
        log.error("token keys unavailable", extra={"error_class": "KeySourceUnavailableError"})
        return _problem(503, "Service unavailable", "The keys to check tokens cannot be fetched; retry later.")
    if not runtime().clinics.is_registered(principal.clinic_id):
        # A signed token for a clinic this service does not hold: refused here, not by every write that follows.
        error = AuthenticationError("invalid_token", "token clinic is not registered")
        return _problem(401, "Unauthorized", error.description, error.www_authenticate())
    g.principal = principal
    rule = request.url_rule
    requirement = requirement_of(request.endpoint, rule.defaults if rule else None)
    if requirement is None:
        return None  # unmatched route: the router answers 404/405
    g.requirement = requirement
    missing = principal.scopes.missing(requirement)
    if missing:
        needed = requirement.scope_strings()
        error = InsufficientScopeError(needed, f"needs {requirement.interaction} on {', '.join(missing)}")
        return _problem(
            403,
            "Forbidden",
            f"The token's scopes do not cover this request: needs {' '.join(needed)}.",
            error.www_authenticate(),
        )
    return None


# --- audit ------------------------------------------------------------------------------------------------------


def audit_refusal(response: Response) -> Response:
    """after_request: every answer of a protected route that its view did not audit (a refusal, a 400, a 500) is
    audited in its own transaction (the request itself wrote nothing). Refusals of callers without a valid token,
    and 429s anywhere, are aggregated (RefusalAggregator): anonymous callers cannot grow the trail without limit.
    An audit that fails is logged without its content and the request answers 503, alone."""
    from service.entrypoints.http import problem_response, state

    status = response.status_code
    public = is_public(request.endpoint)
    if g.get("audited") or (public and status != 429) or request.method == "OPTIONS":
        return response
    g.audited = True
    try:
        record = audit_record(status)
        if status == 429 or g.get("principal") is None:
            state().refusals.record(record)
        else:
            with UnitOfWork(state().session_factory, record.clinic_id or "", write=True) as uow:
                audit.append(uow.session, record)
                uow.commit()
    except Exception as exc:  # noqa: BLE001 - the class only: the exception's text can hold request values
        log.error("audit unavailable", extra={"error_class": type(exc).__name__})
        return problem_response(
            503, "Service unavailable", "The request could not be audited; retry later.", headers={"Retry-After": "5"}
        )
    return response


# --- routes -------------------------------------------------------------------------------------------------------


@route(
    bp,
    "/.well-known/smart-configuration",
    "GET",
    Route("SMART configuration: token endpoint and capabilities", response=ANY_OBJECT, public=True),
    endpoint="smart_configuration",
)
@route(
    bp,
    "/fhir/.well-known/smart-configuration",
    "GET",
    Route("SMART configuration, under the FHIR base", response=ANY_OBJECT, public=True),
    endpoint="fhir_smart_configuration",
)  # SMART: {fhir base}/.well-known
def smart_configuration_document() -> Response:
    rt = runtime()
    doc = smart_configuration(
        rt.base_url, issuer=rt.settings.issuer, jwks_path="/.well-known/jwks.json" if rt.issuer else None
    )
    return Response(json.dumps(doc), mimetype="application/json")


@route(
    bp,
    "/.well-known/jwks.json",
    "GET",
    Route("Public keys of the embedded token issuer", response=ANY_OBJECT, public=True),
)
def jwks() -> Response:
    rt = runtime()
    keys = rt.issuer.signing_key.public_jwks() if rt.issuer else {"keys": []}
    return Response(json.dumps(keys), mimetype="application/json")


@route(
    bp,
    "/oauth2/token",
    "POST",
    Route(
        "Client-credentials token (private_key_jwt or client secret)", response=TOKEN, request=TOKEN_FORM, public=True
    ),
)
def token() -> Response:
    rt = runtime()
    if rt.token_endpoint is None:
        return Response(
            json.dumps(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "this deployment uses an external identity provider",
                }
            ),
            status=400,
            mimetype="application/json",
        )
    status, body, headers = rt.token_endpoint.respond(request.form, dict(request.headers))
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    for name, value in headers.items():
        response.headers[name] = value
    return response


@route(
    bp,
    "/api/v1/audit-events",
    "GET",
    Route(
        "Audit trail of this clinic (needs system/AuditEvent.rs)",
        response=page_schema_of(s.AuditEventSchema, "AuditEventPage"),
        access=("s", ("AuditEvent",)),
        query=s.AuditQuerySchema,
    ),
)
def list_audit_events() -> Response:
    from service.entrypoints import schemas as s
    from service.entrypoints.http import dumper, json_response, principal, query_args, read

    args = query_args()

    def run(uow: object) -> Response:
        items, total = audit.list_for_clinic(
            uow.session,
            principal().clinic_id,
            since=args["since"],  # type: ignore[attr-defined]
            limit=args["limit"],
            offset=args["offset"],
        )
        return json_response(
            {
                "items": dumper(s.AuditEventSchema, many=True).dump(items),
                "total": total,
                "limit": args["limit"],
                "offset": args["offset"],
            }
        )

    return read(run)


def init_app(app: Flask, runtime_: SecurityRuntime) -> None:
    app.extensions["kapfhir.security"] = runtime_
    app.register_blueprint(bp)
    app.before_request(authenticate)
    app.after_request(audit_refusal)
