"""Builds the OpenAPI 3.1 document from the app's URL map and the marshmallow schemas.

``openapi.yaml`` is this document written out (``kapfhir openapi --write``); a test fails when the file and the
code disagree, so the contract cannot drift from what is served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import INCLUDE, Schema

from service.entrypoints import api, fhir_api
from service.entrypoints import schemas as s
from service.entrypoints.auth import PUBLIC_ENDPOINTS
from service.entrypoints.http import query_schema_for
from service.entrypoints.rate_limits import EXEMPT_ENDPOINTS


@dataclass(frozen=True)
class Operation:
    summary: str
    response: type[Schema] | Schema | dict[str, Any] | None = None
    request: type[Schema] | Schema | None = None
    status: int = 200
    many: bool = False
    # A public page: the media type it answers in, and the refusals it documents (a signed link can be refused).
    media: str = "application/json"
    public_errors: tuple[int, ...] = ()


WRITE_ERRORS = (400, 404, 409, 412, 413, 415, 422)
READ_ERRORS = (404, 422)


@cache
def _items(schema: type[Schema], name: str) -> type[Schema]:
    return type(name, (Schema,), {"items": s.fields.List(s.fields.Nested(schema)), "__module__": __name__})


@cache
def _paged(schema: type[Schema], name: str) -> type[Schema]:
    return s.page_schema(schema, name)


SessionWithContent = type(
    "SessionWithContentSchema",
    (s.SessionSchema,),
    {
        "doses": s.fields.List(s.fields.Nested(s.DoseSchema)),
        "monitoring_readings": s.fields.List(s.fields.Nested(s.MonitoringReadingSchema)),
        "side_effects": s.fields.List(s.fields.Nested(s.SideEffectSchema)),
        "__module__": __name__,
    },
)

HEALTH = type("HealthSchema", (Schema,), {"status": s.fields.String(), "__module__": __name__})
TOKEN_FORM = type(
    "TokenRequestSchema",
    (Schema,),
    {
        "grant_type": s.fields.String(required=True, metadata={"enum": ["client_credentials"]}),
        "scope": s.fields.String(),
        "client_assertion_type": s.fields.String(
            metadata={"enum": ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]}
        ),
        "client_assertion": s.fields.String(),
        "client_id": s.fields.String(),
        "client_secret": s.fields.String(),
        "__module__": __name__,
    },
)
TOKEN = type(
    "TokenResponseSchema",
    (Schema,),
    {
        "access_token": s.fields.String(),
        "token_type": s.fields.String(),
        "expires_in": s.fields.Integer(),
        "scope": s.fields.String(),
        "__module__": __name__,
    },
)
OAUTH_ERROR = type(
    "OAuthErrorSchema",
    (Schema,),
    {
        "error": s.fields.String(),
        "error_description": s.fields.String(),
        "__module__": __name__,
    },
)
ANY_OBJECT = type(
    "JsonObjectSchema", (Schema,), {"Meta": type("Meta", (), {"unknown": INCLUDE}), "__module__": __name__}
)
TEXT: dict[str, Any] = {"type": "string"}
READY = type(
    "ReadySchema",
    (Schema,),
    {
        "status": s.fields.String(),
        "database": s.fields.String(),
        "schema_revision": s.fields.String(),
        "__module__": __name__,
    },
)


def _operations() -> dict[str, Operation]:
    ops = {
        "healthz": Operation("Liveness: the process answers", HEALTH),
        "readyz": Operation("Readiness: database reachable and schema current", READY),
        "api.register_practitioner": Operation(
            "Register a practitioner", s.PractitionerSchema, s.PractitionerSchema, 201
        ),
        "api.list_practitioners": Operation("List practitioners", _paged(s.PractitionerSchema, "PractitionerPage")),
        "api.get_practitioner": Operation("Read a practitioner", s.PractitionerSchema),
        "api.register_patient": Operation("Register a patient", s.PatientSchema, s.PatientSchema, 201),
        "api.list_patients": Operation("List patients", _paged(s.PatientSchema, "PatientPage")),
        "api.get_patient": Operation("Read a patient", s.PatientSchema),
        "api.amend_patient": Operation("Amend a patient (If-Match optional)", s.PatientSchema, s.AmendPatientSchema),
        "api.patient_history": Operation("Versions of a patient", _items(s.VersionEntrySchema, "VersionList")),
        "api.record_body_weight": Operation("Record a body weight", s.BodyWeightSchema, s.BodyWeightSchema, 201),
        "api.get_body_weight": Operation("Read a body weight", s.BodyWeightSchema),
        "api.record_privacy_consent": Operation(
            "Record a privacy consent (permission to share with one organization)",
            s.PrivacyConsentSchema,
            s.PrivacyConsentSchema,
            201,
        ),
        "api.list_privacy_consents": Operation(
            "Privacy consents of a patient", _items(s.PrivacyConsentSchema, "PrivacyConsentList")
        ),
        "api.withdraw_privacy_consent": Operation(
            "Withdraw a privacy consent", s.PrivacyConsentSchema, s.ConsentWithdrawalSchema
        ),
        "api.list_body_weights": Operation("Body weights of a patient", _items(s.BodyWeightSchema, "BodyWeightList")),
        "api.open_episode": Operation("Open a KAP episode", s.EpisodeDetailSchema, s.EpisodeCreateSchema, 201),
        "api.list_episodes": Operation("List episodes", _paged(s.EpisodeSummarySchema, "EpisodePage")),
        "api.get_episode": Operation(
            "Read a whole episode with its timeline and open safety flags", s.EpisodeDetailSchema
        ),
        "api.amend_episode": Operation(
            "Amend an episode's indications, care team or status", s.EpisodeDetailSchema, s.EpisodeAmendSchema
        ),
        "api.episode_history": Operation("Versions of an episode", _items(s.VersionEntrySchema, "VersionList")),
        "api.transition_phase": Operation(
            "Move the episode to another phase", s.EpisodeDetailSchema, s.PhaseTransitionSchema, 201
        ),
        "api.withdraw_consent": Operation("Withdraw a consent", s.ConsentSchema, s.ConsentWithdrawalSchema),
        "api.list_safety_flags": Operation("Safety flags of an episode", _items(s.SafetyFlagSchema, "SafetyFlagList")),
        "api.acknowledge_safety_flag": Operation(
            "Acknowledge a safety flag", s.SafetyFlagSchema, s.FlagAcknowledgementSchema
        ),
        "api.list_targets": Operation("Configured EHR targets (no secrets)", ANY_OBJECT),
        "api.episode_sync_status": Operation("Sync status of the episode per target, with remote ids", ANY_OBJECT),
        "api.retry_episode_sync": Operation("Re-queue the episode's dead letters and held jobs", ANY_OBJECT),
        "api.export_episode_fhir": Operation("The episode as a FHIR R4 Bundle (transaction or collection)", None),
        "api.get_healthcare_setting": Operation(
            "The clinic's time zone and healthcare setting (REMS form)", s.HealthcareSettingSchema
        ),
        "api.set_healthcare_setting": Operation(
            "Set the clinic's time zone and healthcare setting (REMS form)",
            s.HealthcareSettingSchema,
            s.HealthcareSettingSchema,
        ),
        "api.get_rems_form": Operation(
            "The session's Spravato REMS Patient Monitoring Form (JSON, or PDF with Accept: application/pdf)",
            s.RemsFormSchema,
        ),
        "api.submit_rems_form": Operation(
            "Record that the REMS form was sent (portal or fax); idempotent",
            s.RemsFormSchema,
            s.RemsSubmissionSchema,
            201,
        ),
        "api.list_rems_forms": Operation(
            "The clinic's REMS forms (status=due: still to send)", _items(s.RemsFormSchema, "RemsFormList")
        ),
        "api.review_rems_deadlines": Operation("Bring the REMS form deadline flags up to today's date", ANY_OBJECT),
        "auth.smart_configuration": Operation("SMART configuration: token endpoint and capabilities", ANY_OBJECT),
        "auth.fhir_smart_configuration": Operation("SMART configuration, under the FHIR base", ANY_OBJECT),
        "auth.jwks": Operation("Public keys of the embedded token issuer", ANY_OBJECT),
        "auth.token": Operation("Client-credentials token (private_key_jwt or client secret)", TOKEN, TOKEN_FORM),
        "pages.home": Operation("Home page: what this service is, with links to its docs", TEXT, media="text/html"),
        "pages.docs": Operation("Interactive API docs (Swagger UI) of this document", TEXT, media="text/html"),
        "pages.docs_init": Operation("The API docs page's script", TEXT, media="text/javascript"),
        "pages.favicon": Operation(
            "Icon of the pages", {"type": "string", "contentMediaType": "image/png"}, media="image/png"
        ),
        "pages.home_css": Operation("The home page's style sheet", TEXT, media="text/css"),
        "pages.openapi_yaml": Operation("This OpenAPI document (YAML)", ANY_OBJECT, media="application/yaml"),
        "pages.openapi_json": Operation("This OpenAPI document (JSON)", ANY_OBJECT),
        "metrics.metrics": Operation(
            "Prometheus metrics (from KAPFHIR_METRICS_ALLOW networks only; 404 elsewhere)", TEXT, media="text/plain"
        ),
        "auth.list_audit_events": Operation(
            "Audit trail of this clinic (needs system/AuditEvent.rs)",
            _paged(s.AuditEventSchema, "AuditEventPage"),
        ),
        **_outcome_operations(),
    }
    return ops


def _outcome_operations() -> dict[str, Operation]:
    from service.entrypoints import outcome_schemas as o

    return {
        "api.outcomes": Operation(
            "Outcome measures of the clinic: response, remission, per indication, time to first response",
            o.OutcomesSchema,
        ),
        "api.create_episode_view_link": Operation("A 5-minute signed link to the episode page", o.ViewLinkSchema),
        "api.create_outcomes_view_link": Operation("A 5-minute signed link to the outcomes page", o.ViewLinkSchema),
        "views.episode_view": Operation(
            "The episode in pictures (HTML; opened by a signed link, no bearer token)",
            media="text/html",
            public_errors=(403,),
        ),
        "views.outcomes_view": Operation(
            "The clinic's outcomes (HTML; opened by a signed link, no bearer token)",
            media="text/html",
            public_errors=(403,),
        ),
    }


def _record_operation(endpoint: str, collection: api.Collection) -> Operation:
    noun = collection.path.replace("-", " ")
    name = collection.schema.__name__.removesuffix("Schema")
    if endpoint == "api.add_record":
        response = SessionWithContent if collection.cls.__name__ == "ClinicalSession" else collection.schema
        return Operation(f"Record {noun}", response, collection.create_schema, 201)
    if endpoint == "api.list_records":
        return Operation(f"List {noun}", _items(collection.schema, f"{name}List"))
    if endpoint == "api.get_record":
        return Operation(f"Read one of the {noun}", collection.schema)
    if endpoint == "api.amend_record":
        return Operation(
            f"Amend one of the {noun} (a new version with a reason)",
            collection.schema,
            api.AMEND_SCHEMAS[collection.path],
        )
    if endpoint == "api.mark_entered_in_error":
        return Operation(f"Mark one of the {noun} entered-in-error", collection.schema, s.EnteredInErrorSchema)
    return Operation(f"Versions of one of the {noun}", _items(s.VersionEntrySchema, "VersionList"))


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
    ops = _operations()
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue  # files (the API docs' scripts and styles), not operations
        if rule.endpoint.startswith("fhir."):
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                paths.setdefault(path, {})[method.lower()] = fhir_api.openapi_operation(rule, method)
            continue
        if rule.endpoint in ops:
            op = ops[rule.endpoint]
        else:
            op = _record_operation(rule.endpoint, api.COLLECTIONS[rule.defaults["collection"]])
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            operation: dict[str, Any] = {
                "summary": op.summary,
                "operationId": f"{rule.endpoint.removeprefix('api.')}_{rule.defaults['collection'].replace('-', '_')}"
                if rule.defaults and "collection" in rule.defaults
                else rule.endpoint.removeprefix("api."),
                "responses": {},
            }
            parameters = [
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
            if parameters:
                operation["parameters"] = parameters
            public = rule.endpoint in PUBLIC_ENDPOINTS
            if public:
                operation["security"] = []
            if op.request is not None:
                media = "application/x-www-form-urlencoded" if rule.endpoint == "auth.token" else "application/json"
                operation["requestBody"] = {"required": True, "content": {media: {"schema": op.request}}}
            success: dict[str, Any] = {"description": _status_text(op.status)}
            if rule.endpoint == "api.export_episode_fhir":
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
            operation["responses"][str(op.status)] = success
            errors: tuple[int, ...] = WRITE_ERRORS if method in ("POST", "PUT") else READ_ERRORS
            if rule.endpoint == "readyz":
                errors = (503,)
            elif rule.endpoint == "metrics.metrics":
                errors = (404,)  # to addresses outside KAPFHIR_METRICS_ALLOW
            elif public:
                errors = op.public_errors
            else:
                errors = (401, 403, *errors)
            if rule.endpoint not in EXEMPT_ENDPOINTS:
                errors = (*errors, 429)  # the per-address limit runs before everything, public routes included
            if rule.endpoint == "auth.token":
                for code in (400, 401):
                    operation["responses"][str(code)] = {
                        "description": "OAuth 2.0 error (RFC 6749 §5.2)",
                        "content": {"application/json": {"schema": OAUTH_ERROR}},
                    }
            for code in errors:
                if path.startswith("/fhir"):  # under the FHIR base every error is an OperationOutcome
                    content = {"application/fhir+json": {"schema": {"type": "object", "required": ["resourceType"]}}}
                else:
                    content = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
                operation["responses"][str(code)] = {"description": _status_text(code), "content": content}
            paths.setdefault(path, {})[method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()
