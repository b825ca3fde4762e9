"""One declaration per route: what it needs (SMART interaction on FHIR types, or public), what it takes and answers
(schemas, status, media type, query parameters) and its summary. Authentication (``auth``), the OpenAPI builder
(``openapi``) and the HTTP plumbing (``http``) read these declarations; views declare them where they are defined,
with the ``route`` decorator, so a route's facts live in one place and no module needs a table keyed by another's
endpoint names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from flask import Blueprint
from marshmallow import INCLUDE, Schema

from service.entrypoints import schemas as s
from service.security.scopes import Requirement


@dataclass(frozen=True)
class Route:
    summary: str
    # (SMART interaction, FHIR resource types) the route needs; None with ``public`` for routes without a token
    access: tuple[str, tuple[str, ...]] | None = None
    public: bool = False
    response: type[Schema] | Schema | dict[str, Any] | None = None
    request: type[Schema] | Schema | None = None
    status: int = 200
    # the query parameters it accepts (any other answers 422); a callable of the rule's defaults where they differ
    query: type[Schema] | Callable[[Mapping[str, Any]], type[Schema]] | None = None
    media: str = "application/json"  # of the success response
    public_errors: tuple[int, ...] = ()  # the refusals a public route documents (a signed link can be refused)
    # routes whose requirement depends on the request (FHIR types in the path or body, record collections)
    requirement: Callable[[Mapping[str, Any], Mapping[str, Any], str], Requirement | None] | None = None
    # routes that write their own OpenAPI operation object (the FHIR API): (rule, method) -> operation
    operation: Callable[[Any, str], dict[str, Any]] | None = None
    export: bool = False  # answers a whole episode as FHIR (audited as an export)
    # one view serving several URL rules whose facts differ by the rule's defaults (the record collections)
    variant: Callable[[Mapping[str, Any]], Route] | None = None

    def for_rule(self, defaults: Mapping[str, Any] | None) -> Route:
        """The facts of one URL rule of this view."""
        return self.variant(defaults or {}) if self.variant is not None else self

    def query_schema(self, defaults: Mapping[str, Any] | None) -> type[Schema]:
        if self.variant is not None:
            return self.for_rule(defaults).query_schema(defaults)
        if self.query is None:
            return s.NoQuerySchema
        if isinstance(self.query, type):
            return self.query
        return self.query(defaults or {})

    def requirement_for(
        self, view_args: Mapping[str, Any], defaults: Mapping[str, Any] | None, method: str
    ) -> Requirement | None:
        if self.variant is not None:
            return self.for_rule(defaults).requirement_for(view_args, defaults, method)
        if self.public:
            return None
        if self.requirement is not None:
            return self.requirement(view_args, defaults or {}, method)
        if self.access is None:
            raise LookupError("a route that is not public declares what it needs")
        return Requirement(*self.access)


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


ROUTES: dict[str, Route] = {}


def declare(endpoint: str, facts: Route) -> None:
    """Registers the facts of an endpoint (``blueprint.view``); declaring one twice is a programming error."""
    if endpoint in ROUTES and ROUTES[endpoint] != facts:
        raise ValueError(f"route {endpoint} is declared twice")
    ROUTES[endpoint] = facts


def route(
    bp: Blueprint, rule: str, method: str, facts: Route, *, endpoint: str | None = None, prefix: str = ""
) -> Callable:
    """``@route(bp, "/patients", "POST", Route(...))``: adds the URL rule and declares its facts. ``prefix``: the
    parent blueprint's name of a nested blueprint (``fhir`` for ``fhir.measures``)."""

    def register(fn: Callable) -> Callable:
        name = endpoint or fn.__name__
        bp.add_url_rule(rule, endpoint=name, view_func=fn, methods=[method])
        declare(f"{prefix + '.' if prefix else ''}{bp.name}.{name}", facts)
        return fn

    return register


def facts_of(endpoint: str | None) -> Route | None:
    return ROUTES.get(endpoint or "")


def public_endpoints() -> set[str]:
    return {endpoint for endpoint, facts in ROUTES.items() if facts.public} | {"static"}


# --- shapes of answers documented in the contract -------------------------------------------------------------------


@cache
def items_schema(schema: type[Schema], name: str) -> type[Schema]:
    return type(
        name, (Schema,), {"items": s.fields.List(s.fields.Nested(schema)), "__module__": "service.entrypoints.openapi"}
    )


@cache
def page_schema_of(schema: type[Schema], name: str) -> type[Schema]:
    return s.page_schema(schema, name)


SessionWithContent = type(
    "SessionWithContentSchema",
    (s.SessionSchema,),
    {
        "doses": s.fields.List(s.fields.Nested(s.DoseSchema)),
        "monitoring_readings": s.fields.List(s.fields.Nested(s.MonitoringReadingSchema)),
        "side_effects": s.fields.List(s.fields.Nested(s.SideEffectSchema)),
        "__module__": "service.entrypoints.openapi",
    },
)

HEALTH = type("HealthSchema", (Schema,), {"status": s.fields.String(), "__module__": "service.entrypoints.openapi"})
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
        "__module__": "service.entrypoints.openapi",
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
        "__module__": "service.entrypoints.openapi",
    },
)
OAUTH_ERROR = type(
    "OAuthErrorSchema",
    (Schema,),
    {
        "error": s.fields.String(),
        "error_description": s.fields.String(),
        "__module__": "service.entrypoints.openapi",
    },
)
ANY_OBJECT = type(
    "JsonObjectSchema",
    (Schema,),
    {"Meta": type("Meta", (), {"unknown": INCLUDE}), "__module__": "service.entrypoints.openapi"},
)
TEXT: dict[str, Any] = {"type": "string"}
READY = type(
    "ReadySchema",
    (Schema,),
    {
        "status": s.fields.String(),
        "database": s.fields.String(),
        "schema_revision": s.fields.String(),
        "__module__": "service.entrypoints.openapi",
    },
)


# The app's own routes (service.entrypoints.app): liveness and readiness, public.
declare("healthz", Route("Liveness: the process answers", public=True, response=HEALTH))
declare("readyz", Route("Readiness: database reachable and schema current", public=True, response=READY))
