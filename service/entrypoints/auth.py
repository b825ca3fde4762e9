"""Who may do what: bearer tokens, SMART scopes per route, the embedded token endpoint, and the audit trail."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Blueprint, Flask, Response, current_app, g, has_request_context, request
from sqlalchemy import select
from sqlalchemy.engine import Engine

from service.adapters import audit, orm
from service.adapters.security_store import SqlClientStore, SqlReplayStore
from service.entrypoints import metrics, pages
from service.security.client_auth import TokenEndpoint
from service.security.flask_integration import bearer_token
from service.security.keys import KeySourceUnavailableError, SigningKey
from service.security.scopes import Requirement
from service.security.settings import SecuritySettings
from service.security.smart_configuration import smart_configuration
from service.security.tokens import (
    AuthenticationError,
    InsufficientScopeError,
    Principal,
    TokenIssuer,
    TokenValidator,
    build_local_issuer,
    build_token_validator,
)
from service.service_layer.unit_of_work import UnitOfWork

log = logging.getLogger("kapfhir.auth")

bp = Blueprint("auth", __name__)

# Routes anyone may call: liveness, readiness, discovery, keys, and the token endpoint (it authenticates clients).
PUBLIC_ENDPOINTS = {
    "healthz",
    "readyz",
    "auth.smart_configuration",
    "auth.fhir_smart_configuration",
    "auth.jwks",
    "auth.token",
    "static",
    # Opened by a short-lived signed link instead of a bearer token; they audit every opening and refusal.
    "views.episode_view",
    "views.outcomes_view",
    *pages.PUBLIC_ENDPOINTS,  # the home page, the API docs and the OpenAPI document
    *metrics.PUBLIC_ENDPOINTS,  # no token, but only from KAPFHIR_METRICS_ALLOW networks
}

# The FHIR resource types a whole episode maps to: reading it needs read on each.
EPISODE_TYPES = (
    "EpisodeOfCare",
    "Condition",
    "CarePlan",
    "Consent",
    "MedicationRequest",
    "Encounter",
    "Procedure",
    "MedicationAdministration",
    "Observation",
    "AdverseEvent",
    "QuestionnaireResponse",
    "MedicationStatement",
    "DetectedIssue",
    "Task",  # the Spravato REMS form's due date and submission
)

# endpoint -> (SMART interaction, FHIR types it touches). Record collections add theirs in register_collections.
ROUTE_ACCESS: dict[str, tuple[str, tuple[str, ...]]] = {
    "api.register_practitioner": ("c", ("Practitioner",)),
    "api.list_practitioners": ("s", ("Practitioner",)),
    "api.get_practitioner": ("r", ("Practitioner",)),
    "api.register_patient": ("c", ("Patient",)),
    "api.list_patients": ("s", ("Patient",)),
    "api.get_patient": ("r", ("Patient",)),
    "api.amend_patient": ("u", ("Patient",)),
    "api.patient_history": ("r", ("Patient",)),
    "api.record_body_weight": ("c", ("Observation",)),
    "api.list_body_weights": ("s", ("Observation",)),
    "api.get_body_weight": ("r", ("Observation",)),
    "api.record_privacy_consent": ("c", ("Consent",)),
    "api.list_privacy_consents": ("s", ("Consent",)),
    "api.withdraw_privacy_consent": ("u", ("Consent",)),
    "api.open_episode": ("c", ("EpisodeOfCare", "Condition")),
    "api.list_episodes": ("s", ("EpisodeOfCare",)),
    "api.get_episode": ("r", EPISODE_TYPES),
    "api.amend_episode": ("u", ("EpisodeOfCare", "Condition")),
    "api.episode_history": ("r", ("EpisodeOfCare",)),
    "api.transition_phase": ("u", ("EpisodeOfCare", "CarePlan")),
    "api.withdraw_consent": ("u", ("Consent",)),
    "api.list_safety_flags": ("s", ("DetectedIssue",)),
    "api.acknowledge_safety_flag": ("u", ("DetectedIssue",)),
    "auth.list_audit_events": ("s", ("AuditEvent",)),
    # Spravato REMS Patient Monitoring Form: the healthcare setting (Organization), the form (QuestionnaireResponse)
    # and its sending (Task); the deadline review changes safety flags (DetectedIssue).
    "api.get_healthcare_setting": ("r", ("Organization",)),
    "api.set_healthcare_setting": ("u", ("Organization",)),
    "api.get_rems_form": ("r", ("QuestionnaireResponse", "Task")),
    "api.submit_rems_form": ("c", ("Task",)),
    "api.list_rems_forms": ("s", ("QuestionnaireResponse", "Task")),
    "api.review_rems_deadlines": ("u", ("DetectedIssue",)),
    # Targets hold no patient data; reading their list needs the right to read what is sent to them.
    "api.list_targets": ("s", ("Endpoint",)),
    "api.episode_sync_status": ("r", ("EpisodeOfCare",)),
    "api.retry_episode_sync": ("u", ("EpisodeOfCare",)),
    "api.export_episode_fhir": ("r", (*EPISODE_TYPES, "Patient", "Practitioner", "Organization", "Flag", "Provenance")),
    # Measurement-based care: the measures are public definitions; their figures derive from the scores.
    "fhir.measures.search": ("s", ("Measure",)),
    "fhir.measures.read": ("r", ("Measure",)),
    "fhir.measures.evaluate": ("r", ("MeasureReport", "Observation")),
    "api.outcomes": ("r", ("MeasureReport", "Observation")),
    "api.create_outcomes_view_link": ("r", ("MeasureReport", "Observation")),
    # The link shows what reading the whole episode shows.
    "api.create_episode_view_link": ("r", (*EPISODE_TYPES, "Patient")),
}
EXPORT_ENDPOINTS = {"api.export_episode_fhir"}
RECORD_ROUTE_INTERACTION = {
    "api.add_record": "c",
    "api.list_records": "s",
    "api.get_record": "r",
    "api.amend_record": "u",
    "api.mark_entered_in_error": "u",
    "api.record_history": "r",
}
# restful-interaction code of an audit record, by SMART interaction (create, read, update, delete, search)
AUDIT_SUBTYPE = {
    "c": ("create", "C"),
    "r": ("read", "R"),
    "u": ("update", "U"),
    "d": ("delete", "D"),
    "s": ("search-type", "E"),
}


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


def requirement_of(endpoint: str | None, defaults: dict[str, str] | None) -> Requirement | None:
    """What a route needs, or None for a route without a declared requirement (a test forbids those)."""
    if endpoint in ROUTE_ACCESS:
        interaction, types = ROUTE_ACCESS[endpoint]
        return Requirement(interaction, types)
    if endpoint and endpoint.startswith("fhir."):
        from service.entrypoints import fhir_api

        if not has_request_context():
            return fhir_api.requirement(endpoint, {}, "GET")
        return fhir_api.requirement(endpoint, request.view_args or {}, request.method)
    if endpoint in RECORD_ROUTE_INTERACTION and defaults and "collection" in defaults:
        from service.entrypoints.api import COLLECTIONS

        return Requirement(RECORD_ROUTE_INTERACTION[endpoint], COLLECTIONS[defaults["collection"]].fhir_types)
    return None


def _problem(status: int, title: str, detail: str, www_authenticate: str | None = None) -> Response:
    from service.entrypoints.http import problem_response

    headers = {"WWW-Authenticate": www_authenticate} if www_authenticate else {}
    return problem_response(status, title, detail, headers=headers)


def authenticate() -> Response | None:
    """before_request: a valid token and a scope that covers the route, or a 401/403 answer."""
    if request.endpoint in PUBLIC_ENDPOINTS or request.method == "OPTIONS":
        return None
    from service.entrypoints import fhir_api

    if request.endpoint in fhir_api.PUBLIC_ENDPOINTS:
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


def _entities(created_id: str | None) -> list[dict[str, str]]:
    from service.entrypoints.api import COLLECTIONS

    if g.get("audit_entities") is not None:  # a view that knows better (the FHIR API) names them itself
        return list(g.audit_entities)
    args = dict(request.view_args or {})
    entities = []
    if "patient_id" in args:
        entities.append({"type": "Patient", "id": args["patient_id"]})
    if "practitioner_id" in args:
        entities.append({"type": "Practitioner", "id": args["practitioner_id"]})
    if "episode_id" in args:
        entities.append({"type": "EpisodeOfCare", "id": args["episode_id"]})
    if "record_id" in args and args.get("collection") in COLLECTIONS:
        entities.append({"type": COLLECTIONS[args["collection"]].fhir_types[0], "id": args["record_id"]})
    if "consent_id" in args:
        entities.append({"type": "Consent", "id": args["consent_id"]})
    if "flag_id" in args:
        entities.append({"type": "DetectedIssue", "id": args["flag_id"]})
    requirement: Requirement | None = g.get("requirement")
    if created_id and requirement is not None:
        entities.append({"type": requirement.resource_types[0], "id": created_id})
    return entities


def audit_record(status: int, created_id: str | None = None) -> audit.AuditRecord:
    requirement: Requirement | None = g.get("requirement")
    interaction = requirement.interaction if requirement else "r"
    subtype, action = AUDIT_SUBTYPE[interaction]
    if request.endpoint in ("api.patient_history", "api.episode_history", "api.record_history"):
        subtype = "history-instance"
    audit_type = "rest"
    if request.endpoint in EXPORT_ENDPOINTS:
        audit_type, subtype, action = "export", "export", "E"
    principal: Principal | None = g.get("principal")
    outcome = "0" if status < 400 else ("4" if status < 500 else "8")
    return audit.AuditRecord(
        recorded=datetime.now(UTC),
        type=audit_type,
        subtype=subtype,
        action=action,
        outcome=outcome,
        method=request.method,
        route=request.url_rule.rule if request.url_rule else "(unmatched)",
        status=status,
        clinic_id=principal.clinic_id if principal else None,
        client_id=principal.client_id if principal else None,
        network_address=request.remote_addr,
        request_id=g.get("request_id"),
        entity=_entities(created_id),
    )


def created_id_of(response: Response) -> str | None:
    if response.status_code != 201 or response.mimetype != "application/json":
        return None
    body = json.loads(response.get_data())
    return body.get("id") if isinstance(body, dict) else None


def audit_refusal(response: Response) -> Response:
    """after_request: every answer of a protected route that its view did not audit (a refusal, a 400, a 500) is
    audited in its own transaction (the request itself wrote nothing). Refusals of callers without a valid token,
    and 429s anywhere, are aggregated (RefusalAggregator): anonymous callers cannot grow the trail without limit.
    An audit that fails is logged without its content and the request answers 503, alone."""
    from service.entrypoints import fhir_api
    from service.entrypoints.http import problem_response, state

    status = response.status_code
    public = request.endpoint in PUBLIC_ENDPOINTS or request.endpoint in fhir_api.PUBLIC_ENDPOINTS
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


@bp.get("/.well-known/smart-configuration", endpoint="smart_configuration")
@bp.get("/fhir/.well-known/smart-configuration", endpoint="fhir_smart_configuration")  # SMART: {fhir base}/.well-known
def smart_configuration_document() -> Response:
    rt = runtime()
    doc = smart_configuration(
        rt.base_url, issuer=rt.settings.issuer, jwks_path="/.well-known/jwks.json" if rt.issuer else None
    )
    return Response(json.dumps(doc), mimetype="application/json")


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    rt = runtime()
    keys = rt.issuer.signing_key.public_jwks() if rt.issuer else {"keys": []}
    return Response(json.dumps(keys), mimetype="application/json")


@bp.post("/oauth2/token")
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


@bp.get("/api/v1/audit-events")
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
