"""The FHIR R4 REST API under /fhir: CapabilityStatement, read, vread, history, search, transaction/batch ingest
and $validate. Resources come from the domain through the mappings (the projection in ``service.fhir``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jsonpatch
import jsonpointer
import orjson
from flask import Blueprint, Response, current_app, g, has_request_context, request
from werkzeug.http import parse_date

from mappings import bundle as bundle_map
from mappings import terminology
from mappings.conformance import as_served, load_all
from mappings.context import full_url_of
from mappings.resources import audit_event as audit_event_map
from mappings.resources import capability_statement as capability_map
from mappings.resources import operation_outcome as outcome_map
from service.domain import limits
from service.domain.errors import DomainError
from service.entrypoints import fhir_validate
from service.entrypoints.fhir_http import FHIR_JSON, error_response, fhir_response  # noqa: F401 - used by siblings
from service.entrypoints.http import (
    ApiProblem,
    ConflictingWrite,
    json_body_for_permissions,
    principal,
    read,
    state,
    write,
)
from service.entrypoints.routes import ROUTES, Route, declare
from service.fhir import inbound, projection, registry, search
from service.fhir.registry import TYPES
from service.security.scopes import Requirement
from service.service_layer import services
from validation import Issue
from validation.issues import entry_index

bp = Blueprint("fhir", __name__, url_prefix="/fhir")

FHIR_VERSION = "4.0.1"
# Endpoints under /fhir that need no token (the CapabilityStatement).
_ACCEPTED = ("application/fhir+json", "application/json", "application/*", "*/*", "application/json+fhir")
_FORMATS = {"json", "application/json", "application/fhir+json", "fhir+json", "application/json+fhir"}

# endpoint -> (SMART interaction, FHIR interaction code of the CapabilityStatement)
HANDLERS: dict[str, tuple[str, str]] = {}


def _handler(
    rule: str,
    endpoint: str,
    interaction: str,
    capability: str,
    methods: tuple[str, ...] = ("GET",),
    *,
    summary: str,
    need: Callable[[Mapping[str, Any]], Requirement] | None = None,
    public: bool = False,
) -> Callable:
    """Adds a /fhir route and declares it (``service.entrypoints.routes``): by default it needs ``interaction`` on
    the type in its path; ``need`` computes it otherwise (from the body, or per entry inside the view)."""

    def register(fn: Callable) -> Callable:
        bp.add_url_rule(rule, endpoint=endpoint, view_func=fn, methods=list(methods))
        HANDLERS[f"fhir.{endpoint}"] = (interaction, capability)
        decide = need or (lambda view_args: Requirement(interaction, (str(view_args.get("rtype", "Bundle")),)))
        facts = Route(
            summary,
            public=public,
            requirement=lambda view_args, defaults, method: decide(view_args),
            operation=lambda rule_, method: openapi_operation(rule_, method),
        )
        declare(f"fhir.{endpoint}", facts)
        return fn

    return register


def _each_entry(view_args: Mapping[str, Any]) -> Requirement:
    # Each entry is authorized by the domain operation it turns into (service.fhir.inbound), not up front.
    return Requirement("c", ())


def _validated_type(view_args: Mapping[str, Any]) -> Requirement:
    """$validate reads nothing stored: read on the type validated, or on Bundle for a type not stored here."""
    rtype = view_args.get("rtype")
    if rtype is None:
        body = json_body_for_permissions() if has_request_context() and request.method == "POST" else None
        rtype = body.get("resourceType") if isinstance(body, dict) else None
    return Requirement("r", (rtype,) if isinstance(rtype, str) and rtype in TYPES else ("Bundle",))


# --- plumbing -----------------------------------------------------------------------------------------------------


def _problem(status: int, title: str, expression: str, message: str, code: str | None = None) -> ApiProblem:
    error = {"field": expression, "message": message}
    if code:
        error["code"] = code
    return ApiProblem(status, title, message, [error])


@bp.before_request
def _negotiate() -> None:
    fmt = request.args.get("_format")
    if fmt is not None and fmt.replace(" ", "+") not in _FORMATS:
        raise _problem(406, "Not acceptable", "_format", f"only JSON is served (_format={fmt!r})", "not-supported")
    accept = request.headers.get("Accept")
    if fmt is None and accept and not any(m in accept for m in _ACCEPTED):
        raise ApiProblem(406, "Not acceptable", f"only {FHIR_JSON} and application/json are served (Accept: {accept})")


def _body() -> Any:
    mimetype = request.mimetype or ""
    if mimetype not in ("application/fhir+json", "application/json", "application/json+fhir"):
        raise ApiProblem(
            415, "Unsupported media type", f"send {FHIR_JSON} or application/json (got {mimetype or 'none'})"
        )
    from service.entrypoints.http import json_body

    body = json_body()
    # identifiers and names held to the limits /api/v1 applies (one set of limits, service/domain/limits.py)
    too_long = limits.fhir_length_errors(body, body.get("resourceType", "Bundle") if isinstance(body, dict) else "")
    if too_long:
        raise ApiProblem(
            422,
            "Invalid content",
            "A value is longer than this service stores; nothing was stored.",
            [{"field": e.field, "message": e.message, "code": "too-long"} for e in too_long],
        )
    return body


def _base() -> str:
    # From configuration, never from the Host header: links must not point where a caller says.
    return state().settings.base_url.rstrip("/") + "/fhir"


def _type_or_404(rtype: str) -> registry.TypeInfo:
    info = TYPES.get(rtype)
    if info is None:
        raise _problem(404, "Not found", "type", f"resource type {rtype!r} is not served here", "not-supported")
    return info


def _not_found(rtype: str, rid: str) -> ApiProblem:
    return _problem(404, "Not found", "id", f"no {rtype}/{rid}", "not-found")


def _read(fn: Callable[[Any], Response]) -> Response:
    g.query = {}  # /fhir parses its own query parameters
    return read(fn)


def _resource_headers(resource: dict) -> dict[str, str]:
    meta = resource.get("meta", {})
    headers = {}
    if "versionId" in meta:
        headers["ETag"] = f'W/"{meta["versionId"]}"'
    if "lastUpdated" in meta:
        headers["Last-Modified"] = _http_date(datetime.fromisoformat(meta["lastUpdated"].replace("Z", "+00:00")))
    return headers


def _http_date(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def _resource_response(resource: dict) -> Response:
    return fhir_response(resource, 200, _resource_headers(resource))


# --- conformance resources and audit events (not projected) -------------------------------------------------------

CONFORMANCE_DATE = "2026-11-01T00:00:00Z"


def _conformance(rtype: str) -> list[tuple[dict, datetime]]:
    out = []
    for resource in load_all().values():
        if resource.get("resourceType") == rtype:
            when = datetime.fromisoformat((resource.get("date") or CONFORMANCE_DATE[:10])[:10]).replace(tzinfo=UTC)
            out.append((as_served(resource, projection.instant(when)), when))
    return out


def audit_event(row: Any) -> dict:
    return audit_event_map.to_audit_event(row)


# --- capability statement -----------------------------------------------------------------------------------------


def _profiles_of(rtype: str) -> list[str]:
    return sorted(
        r["url"]
        for r in load_all().values()
        if r.get("resourceType") == "StructureDefinition" and r.get("type") == rtype and r.get("kind") == "resource"
    )


def capability_statement() -> dict:
    type_interactions = {cap for _, (_, cap) in HANDLERS.items() if cap in registry.READ_INTERACTIONS}
    resources = [
        capability_map.ResourceCapability(
            type=name,
            read_interactions=[code for code in registry.READ_INTERACTIONS if code in type_interactions],
            create=name in inbound.CREATE_TYPES,
            update=name in inbound.UPDATE_TYPES,
            delete=name in inbound.DELETE_TYPES,
            profiles=_profiles_of(name),
            documentation=inbound.DERIVED_TYPES.get(name),
            search_includes=registry.includes(name),
            search_params=[
                capability_map.SearchParam(code, param.type, (registry.r4_definition(name, code) or {}).get("url"))
                for code, param in info.params.items()
            ],
            validate="fhir.validate_type" in HANDLERS,
        )
        for name, info in sorted(TYPES.items())
    ]
    system = [cap for _, (_, cap) in sorted(HANDLERS.items()) if cap in ("transaction", "batch")]
    if "fhir.transaction" in HANDLERS:
        system = ["transaction", "batch"]
    measures = "fhir.measures.read" in current_app.view_functions  # service.entrypoints.fhir_measures
    return capability_map.to_capability_statement(_base(), resources, system, measures=measures)


@_handler(
    "/metadata",
    "metadata",
    "r",
    "capabilities",
    summary="FHIR CapabilityStatement (generated from the registered handlers)",
    public=True,
)
def metadata() -> Response:
    return fhir_response(capability_statement())


# --- read, vread, history -----------------------------------------------------------------------------------------


def _stored_or_404(uow: Any, rtype: str, rid: str, version: int | None = None) -> dict:
    info = TYPES[rtype]
    clinic = principal().clinic_id
    if info.source == "conformance":
        found = next((r for r, _ in _conformance(rtype) if r["id"] == rid), None)
        if found is None or version not in (None, 1):
            raise _not_found(rtype, rid)
        return found
    if info.source == "audit":
        row = search.audit_row(uow.session, clinic, rid)
        if row is None or version not in (None, 1):
            raise _not_found(rtype, rid)
        return audit_event(row)
    stored = projection.read(uow.session, clinic, rtype, rid, version)
    if stored is None:
        raise _not_found(rtype, rid)
    return stored.resource()


@_handler("/<rtype>/<rid>", "read", "r", "read", summary="FHIR read")
def read_resource(rtype: str, rid: str) -> Response:
    _type_or_404(rtype)
    shape = _result_shape([(k, v) for k, v in request.args.items(multi=True)], search_=False)
    g.audit_entities = [{"type": rtype, "id": rid}]

    def run(uow: Any) -> Response:
        if shape.sends_stored_bytes() and TYPES[rtype].source == "projection":
            return _served_as_stored(uow, rtype, rid)
        resource = _stored_or_404(uow, rtype, rid)
        return _read_answer(shape.apply(resource), _resource_headers(resource))

    return _read(run)


def _served_as_stored(uow: Any, rtype: str, rid: str) -> Response:
    """A plain read sends the stored bytes: the body is stored as it is served, so nothing is parsed or built."""
    row = projection.read_row(uow.session, principal().clinic_id, rtype, rid)
    if row is None:
        raise _not_found(rtype, rid)
    raw = projection.served_bytes(row)
    if raw is None:  # stored before bodies carried their version
        resource = projection._stored(row).resource()
        return _read_answer(resource, _resource_headers(resource))
    return _read_answer(raw, {"ETag": f'W/"{row.version_id}"', "Last-Modified": _http_date(row.last_updated)})


def _read_answer(body: dict | bytes, headers: dict[str, str]) -> Response:
    if _not_modified(headers):
        response = Response(b"", status=304)
        for name, value in headers.items():
            response.headers[name] = value
        return response
    return fhir_response(body, 200, headers)


def _not_modified(headers: Mapping[str, str]) -> bool:
    """If-None-Match names the current version (W/"n", "n" or *); without it, If-Modified-Since is not before the
    version's Last-Modified (RFC 9110 13.2.2: If-None-Match decides when both are sent; a date that does not parse
    is ignored)."""
    wanted = request.headers.get("If-None-Match")
    if wanted:
        if "ETag" not in headers:
            return False
        tags = {t.strip().removeprefix("W/") for t in wanted.split(",")}
        return "*" in tags or headers["ETag"].removeprefix("W/") in tags
    since = parse_date(request.headers.get("If-Modified-Since"))
    modified = parse_date(headers.get("Last-Modified"))
    return since is not None and modified is not None and modified <= since


# Result parameters of read and search (FHIR R4 search §3.1.1.5): what to send of each resource.
_MANDATORY = {"resourceType", "id", "meta"}


@dataclass(frozen=True)
class _Shape:
    summary: str | None = None  # count | data | false
    elements: tuple[str, ...] = ()
    total: str | None = None  # none | estimate | accurate

    def sends_stored_bytes(self) -> bool:
        """Whole resources, compact JSON: the stored bodies are the answer as they are."""
        return not (self.elements or self.summary) and request.args.get("_pretty") != "true"

    def apply(self, resource: dict) -> dict:
        if self.elements:
            out = {k: v for k, v in resource.items() if k in _MANDATORY or k in self.elements}
        elif self.summary == "data":
            out = {k: v for k, v in resource.items() if k != "text"}
        else:
            return resource
        meta = dict(out.get("meta", {}))
        meta["tag"] = [*meta.get("tag", []), terminology.SUBSETTED]
        out["meta"] = meta
        return out


def _result_shape(params: list[tuple[str, str]], *, search_: bool) -> _Shape:
    summary, elements, total = None, (), None
    for key, value in params:
        if key == "_summary":
            allowed = ("count", "data", "false") if search_ else ("data", "false")
            if value not in allowed:
                raise _problem(
                    400,
                    "Invalid parameter",
                    "_summary",
                    f"_summary={value!r} is not supported: use {', '.join(allowed)}",
                )
            summary = None if value == "false" else value
        elif key == "_elements":
            elements = tuple(e.strip() for e in value.split(",") if e.strip())
        elif key == "_total" and search_:
            if value not in ("none", "estimate", "accurate"):
                raise _problem(400, "Invalid parameter", "_total", "_total is none, estimate or accurate")
            total = value
        elif key in ("_pretty", "_format"):
            continue
        elif not search_:
            raise _problem(400, "Invalid parameter", key, "a read takes only _format, _pretty, _summary, _elements")
    return _Shape(summary, elements, total)


@_handler("/<rtype>/<rid>/_history/<vid>", "vread", "r", "vread", summary="FHIR vread")
def vread(rtype: str, rid: str, vid: str) -> Response:
    _type_or_404(rtype)
    version = limits.ascii_int(vid)
    if version is None:
        raise _problem(404, "Not found", "vid", f"no version {vid!r} of {rtype}/{rid}")
    g.audit_entities = [{"type": rtype, "id": rid}]
    return _read(lambda uow: _resource_response(_stored_or_404(uow, rtype, rid, version)))


def _paging() -> tuple[int, int, datetime | None]:
    args = [(k, v) for k, v in request.args.items(multi=True) if k not in ("_format", "_pretty")]
    count, offset, since = search.DEFAULT_COUNT, 0, None
    for key, value in args:
        try:
            if key == "_count":
                count = search.parse_count(value)
                continue
            if key == "_offset":
                offset = search.parse_offset(value)
                continue
        except search.SearchError as exc:
            raise _problem(400, "Invalid search", key, exc.message, "invalid") from None
        if key == "_since":
            try:
                since = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                since = None
            if since is None or since.tzinfo is None:
                raise _problem(400, "Invalid search", "_since", f"_since is an instant with a time zone, got {value!r}")
            continue
        raise _problem(
            400, "Invalid search", key, f"history takes only _count, _offset and _since (got {key}={value!r})"
        )
    return count, offset, since


def _page_links(total: int, count: int, offset: int, params: list[tuple[str, str]]) -> list[dict]:
    return bundle_map.page_links(_base() + request.path.removeprefix("/fhir"), params, total, count, offset)


def _now() -> str:
    return projection.instant(datetime.now(UTC))


def _history(rtype: str, rid: str | None) -> Response:
    info = _type_or_404(rtype)
    count, offset, since = _paging()
    params = [(k, v) for k, v in request.args.items(multi=True)]

    def run(uow: Any) -> Response:
        clinic = principal().clinic_id
        if info.source == "projection":
            if rid is not None and not projection.exists_any_version(uow.session, clinic, rtype, rid):
                raise _not_found(rtype, rid)
            items, total = projection.history(uow.session, clinic, rtype, rid, limit=count, offset=offset, since=since)
            resources = [s.resource() for s in items]
        else:
            q = search.Query(rtype, count=count, offset=offset)
            if rid is not None:
                q.criteria.append(search.Criterion(info.params["_id"], None, ((None, rid),)))
            resources, total = _search_other(uow, info, q)
            if rid is not None and not resources:
                raise _not_found(rtype, rid)
        g.audit_entities = [{"type": rtype, "id": r["id"]} for r in resources[:100]]
        entries = [bundle_map.history_entry(_base(), r) for r in resources]
        links = _page_links(total, count, offset, params)
        return fhir_response(bundle_map.history_bundle(entries, total, links, _now()))

    return _read(run)


@_handler("/<rtype>/<rid>/_history", "history_instance", "r", "history-instance", summary="FHIR history of a resource")
def history_instance(rtype: str, rid: str) -> Response:
    return _history(rtype, rid)


@_handler("/<rtype>/_history", "history_type", "s", "history-type", summary="FHIR history of a type")
def history_type(rtype: str) -> Response:
    return _history(rtype, None)


# --- search -------------------------------------------------------------------------------------------------------


def _search_other(uow: Any, info: registry.TypeInfo, q: search.Query) -> tuple[list[dict], int]:
    if info.source == "conformance":
        found, total = search.search_memory(_conformance(info.name), q)
        return [r for r, _ in found], total
    rows, total = search.search_audit(uow.session, principal().clinic_id, q)
    return [audit_event(r) for r in rows], total


_SHAPE_PARAMS = ("_summary", "_elements", "_total", "_pretty", "_totalMethod")


@_handler("/<rtype>", "search_type", "s", "search-type", summary="FHIR search")
def search_type(rtype: str) -> Response:
    return _search(rtype, [(k, v) for k, v in request.args.items(multi=True)])


@_handler(
    "/<rtype>/_search",
    "search_post",
    "s",
    "search-type",
    ("POST",),
    summary="FHIR search with the parameters in a form-encoded body",
)
def search_post(rtype: str) -> Response:
    """Search with the parameters in an application/x-www-form-urlencoded body (and the query string)."""
    if request.get_data(cache=True) and request.mimetype != "application/x-www-form-urlencoded":
        raise ApiProblem(415, "Unsupported media type", "POST _search takes application/x-www-form-urlencoded")
    form = [(k, v) for k, v in request.form.items(multi=True)]
    return _search(rtype, [*request.args.items(multi=True), *form])


def _search(rtype: str, params: list[tuple[str, str]]) -> Response:
    info = _type_or_404(rtype)
    shape = _result_shape([(k, v) for k, v in params if k in _SHAPE_PARAMS], search_=True)
    criteria = [(k, v) for k, v in params if k not in _SHAPE_PARAMS]
    try:
        q = search.parse(rtype, criteria, base=_base())
    except search.SearchError as exc:
        raise _problem(exc.status, "Invalid search", exc.expression, exc.message, "invalid") from None
    if shape.summary == "count":
        q.count = 0

    def run(uow: Any) -> Response:
        clinic = principal().clinic_id
        base = _base()
        if info.source == "projection":
            rows, total = search.search_projection(uow.session, clinic, q)
            as_stored = shape.sends_stored_bytes()  # once per page: it reads the request's arguments
            entries = [_stored_match(base, row, shape, as_stored) for row in rows]
            found = [(row.resource_type, row.id) for row in rows]
            if q.include and rows:
                refs = search.included_refs(uow.session, clinic, q, [row.id for row in rows])
                included = [s.resource() for s in projection.current_by_ids(uow.session, clinic, refs)]
                entries += [bundle_map.search_entry(base, shape.apply(r), "include") for r in included]
                found += [(r["resourceType"], r["id"]) for r in included]
        else:
            resources, total = _search_other(uow, info, q)
            entries = [bundle_map.search_entry(base, shape.apply(r), "match") for r in resources]
            found = [(r["resourceType"], r["id"]) for r in resources]
        g.audit_entities = [{"type": rtype, "id": rid} for rtype, rid in found[:100]]
        links = _page_links(total, q.count, q.offset, params)
        shown = None if shape.total == "none" else total
        return fhir_response(bundle_map.searchset_page(entries, shown, links, _now()))

    return _read(run)


def _stored_match(base: str, row: Any, shape: _Shape, as_stored: bool) -> dict:
    """A match as stored: its body goes into the page as the stored bytes, unparsed, unless the search asked for
    part of it (``_elements``, ``_summary``), for indented JSON, or the body was stored before bodies carried their
    version."""
    raw = projection.served_bytes(row) if as_stored else None
    resource: Any = orjson.Fragment(raw) if raw is not None else shape.apply(projection._stored(row).resource())
    return bundle_map.stored_search_entry(base, row.resource_type, row.id, resource, "match")


# --- $validate ----------------------------------------------------------------------------------------------------


# $validate parameters (query string or Parameters): ``profile`` (FHIR's), and ``kap-rules`` (kapfhir's: true asks
# for the KAP domain rules on a resource that claims no kapfhir profile).
_VALIDATE_PARAMS = frozenset({"profile", "kap-rules", "_format"})


def _validate_payload(body: Any) -> tuple[Any, str | None, bool]:
    """(resource, profile, kap-rules) of a $validate: from the query string, then from a Parameters body that
    carries the resource (its parameters win), else the body is the resource."""
    profile, kap_rules = _validate_query()
    if (
        isinstance(body, dict)
        and body.get("resourceType") == "Parameters"
        and any(isinstance(p, dict) and p.get("name") == "resource" for p in body.get("parameter", []) or [])
    ):
        return _validate_parameters(body, profile, kap_rules)
    return body, profile, kap_rules


def _validate_query() -> tuple[str | None, bool]:
    """$validate's profile and kap-rules in the query string; any other parameter is refused."""
    unknown = sorted(set(request.args) - _VALIDATE_PARAMS)
    if unknown:
        raise _problem(
            400, "Unknown parameter", unknown[0], f"$validate takes profile and kap-rules, not {unknown[0]!r}", "value"
        )
    profile = request.args.get("profile")
    kap_value = request.args.get("kap-rules", "false")
    if kap_value not in ("true", "false"):
        raise _problem(400, "Invalid parameter", "kap-rules", f"kap-rules is true or false, not {kap_value!r}", "value")
    return profile, kap_value == "true"


def _validate_parameters(body: dict, profile: str | None, kap_rules: bool) -> tuple[Any, str | None, bool]:
    """The resource, profile and kap-rules parameters of a Parameters body (over the query string's)."""
    resource = None
    for i, p in enumerate(body.get("parameter", []) or []):
        if not isinstance(p, dict):
            continue
        if p.get("name") == "resource":
            resource = p.get("resource")
        elif p.get("name") == "profile":
            profile = p.get("valueUri") or p.get("valueCanonical") or p.get("valueString")
            if not isinstance(profile, str):
                where = f"Parameters.parameter[{i}]"
                raise _problem(400, "Invalid parameter", where, "profile is a valueUri or valueCanonical", "value")
        elif p.get("name") == "kap-rules":
            kap_rules = p.get("valueBoolean") is True
    return resource, profile, kap_rules


def _outcome(issues: list[Issue]) -> dict:
    return outcome_map.validation_outcome(i.as_fhir() for i in issues)


def _run_validate(expected: str | None, resource: Any, profile: str | None, kap_rules: bool) -> Response:
    issues = fhir_validate.validate(resource, expected_type=expected, profile=profile, kap_rules=kap_rules)
    g.audit_entities = []
    return fhir_response(_outcome(issues))


@_handler(
    "/$validate",
    "validate",
    "r",
    "operation",
    ("POST",),
    need=_validated_type,
    summary="FHIR $validate of any resource or Bundle",
)
def validate_any() -> Response:
    return _audited_validate(None)


@_handler(
    "/<rtype>/$validate",
    "validate_type",
    "r",
    "operation",
    ("POST",),
    need=_validated_type,
    summary="FHIR $validate of a resource of one type",
)
def validate_type(rtype: str) -> Response:
    # any R4 resource type, stored here or not
    if not fhir_validate.r4_type(rtype):
        raise _problem(404, "Not found", "type", f"{rtype!r} is not an R4 resource type", "not-supported")
    return _audited_validate(rtype)


def _audited_validate(expected: str | None) -> Response:
    # Validation reads nothing stored and stores nothing but its audit record. A Parameters body carrying no
    # ``resource`` parameter is itself the resource to validate.
    resource, profile, kap_rules = _validate_payload(_body())
    g.query = {}  # the parameters were read above
    return read(lambda uow: _run_validate(expected, resource, profile, kap_rules))


# --- writes: the REST interactions, transactions and batches, all through the use cases ----------------------------


def _authorize(interaction: str, rtype: str) -> None:
    """A FHIR write needs the scope of the domain operation it performs (acknowledging a flag: DetectedIssue.u)."""
    missing = principal().scopes.missing(Requirement(interaction, (rtype,)))
    if missing:
        raise _problem(
            403,
            "Forbidden",
            rtype,
            f"this write needs scope system/{rtype}.{interaction} (the token does not grant it)",
            "forbidden",
        )


def _refused(exc: inbound.InboundRefused) -> ApiProblem:
    return _problem(exc.status, "Unprocessable resource", exc.expression, exc.message, exc.code)


def _resource_body(rtype: str, rid: str | None = None) -> dict:
    """The resource of a create or update, checked against the base specification (errors refuse it)."""
    body = _body()
    if not isinstance(body, dict) or body.get("resourceType") != rtype:
        got = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
        raise _problem(400, "Invalid resource", "resourceType", f"expected a {rtype}, got {got!r}", "structure")
    if rid is not None and body.get("id") != rid:
        raise _problem(400, "Invalid resource", f"{rtype}.id", f"the body's id must be {rid!r} (the URL's)", "value")
    issues = [i for i in _write_issues(body) if i.severity in ("error", "fatal")]
    if issues:
        raise ApiProblem(
            400 if any(i.code == "structure" for i in issues) else 422,
            "Invalid resource",
            "The resource is not valid FHIR R4; nothing was stored.",
            [{"field": i.expression, "message": i.diagnostics, "code": i.code} for i in issues],
        )
    return body


_SUPPORTED = {"create": inbound.CREATE_TYPES, "update": inbound.UPDATE_TYPES, "delete": inbound.DELETE_TYPES}
_METHOD_OF = {"create": "POST", "update": "PUT", "delete": "DELETE"}


def _allowed_methods(rtype: str, instance: bool) -> str:
    if instance:
        methods = ["GET", "HEAD"]
        methods += ["PUT", "PATCH"] if rtype in inbound.UPDATE_TYPES else []
        methods += ["DELETE"] if rtype in inbound.DELETE_TYPES else []
    else:
        methods = ["GET", "HEAD"] + (["POST"] if rtype in inbound.CREATE_TYPES else [])
        methods += ["PUT"] if rtype in inbound.UPDATE_TYPES else []
    return ", ".join(methods)


def _write_issues(resource: dict) -> list[Issue]:
    """What a write checks on one resource: the checks of a transaction entry and the write policy (an unknown
    extension is kept, an unknown modifierExtension refuses the write), with paths from the resource's type."""
    bundle = bundle_map.collection_of([{"fullUrl": "urn:uuid:write", "resource": resource}])
    rtype = resource["resourceType"]
    out = []
    for issue in fhir_validate.validate_for_write(bundle):
        where = issue.expression or ""
        if where.startswith("Bundle.entry[0].resource"):
            where = rtype + where[len("Bundle.entry[0].resource") :]
        out.append(dataclasses.replace(issue, expression=where))
    return out


def _writable(rtype: str, interaction: str) -> registry.TypeInfo:
    """The type, if ``interaction`` (create, update, delete) is supported for it; else 405 naming the reason."""
    info = TYPES.get(rtype)
    if info is None and rtype != "metadata":
        raise _problem(404, "Not found", "type", f"resource type {rtype!r} is not served here", "not-supported")
    if info is None or rtype not in _SUPPORTED[interaction]:
        reason = inbound.DERIVED_TYPES.get(rtype) or f"{rtype} is read-only under /fhir"
        instance = interaction != "create"
        raise ApiProblem(
            405,
            "Method not allowed",
            f"{_METHOD_OF[interaction]} is not supported here: {reason}",
            [{"field": rtype, "message": f"{interaction} is not supported: {reason}", "code": "not-supported"}],
            headers={"Allow": _allowed_methods(rtype, instance)},
        )
    return info


def _written(uow: Any, rtype: str, rid: str, status: int) -> Response:
    """The answer to a write: Location, ETag and Last-Modified of the stored version; the body as Prefer asks."""
    uow.run_pending()
    stored = projection.read(uow.session, uow.clinic_id, rtype, rid)
    if stored is None:  # the write was taken but maps to nothing served under this type
        return _prefer_response(None, status, {}, "the write was recorded")
    resource = stored.resource()
    headers = _resource_headers(resource)
    headers["Location"] = f"{_base()}/{rtype}/{rid}/_history/{stored.version_id}"
    g.audit_entities = [{"type": rtype, "id": rid}]
    return _prefer_response(resource, status, headers, f"{rtype}/{rid} version {stored.version_id}")


def _prefer_response(resource: dict | None, status: int, headers: dict[str, str], what: str) -> Response:
    prefer = request.headers.get("Prefer", "")
    wanted = next((p.split("=", 1)[1].strip() for p in prefer.split(";") if p.strip().startswith("return=")), None)
    if wanted == "minimal":
        response = Response(b"", status=status)
        for name, value in headers.items():
            response.headers[name] = value
        return response
    if wanted == "OperationOutcome" or resource is None:
        return fhir_response(outcome_map.information(f"Stored: {what}."), status, headers)
    return fhir_response(resource, status, headers)


def _conditional_matches(uow: Any, rtype: str, criteria: str, expression: str) -> list[str]:
    """Ids of the current resources a conditional create or update names (any search parameters of the type)."""
    params = [(k, v) for k, v in parse_qsl(criteria, keep_blank_values=True) if not k.startswith("_")]
    if not params:
        raise _problem(400, "Invalid condition", expression, f"no search criteria in {criteria!r}", "invalid")
    try:
        q = search.parse(rtype, params)
    except search.SearchError as exc:
        raise _problem(400, "Invalid condition", expression, exc.message, "invalid") from None
    q.count = 2
    rows, _ = search.search_projection(uow.session, uow.clinic_id, q)
    return [r.id for r in rows]


@_handler(
    "/<rtype>",
    "create",
    "c",
    "create",
    ("POST",),
    summary="FHIR create (If-None-Exist: conditional create), through the domain's use cases",
)
def create(rtype: str) -> Response:
    _writable(rtype, "create")
    body = _resource_body(rtype)
    # If-None-Exist, or search parameters in the query string (what fhirpy's get_or_create sends)
    criteria = [(k, v) for k, v in request.args.items(multi=True) if k not in ("_format", "_pretty")]
    condition = request.headers.get("If-None-Exist") or (urlencode(criteria) if criteria else None)
    g.query = {}

    def run(uow: Any, ctx: Any) -> Response:
        if condition:
            found = _conditional_matches(uow, rtype, condition, "If-None-Exist")
            if len(found) > 1:
                raise _problem(
                    412, "Precondition failed", "If-None-Exist", f"more than one {rtype} matches", "multiple-matches"
                )
            if found:
                return _written(uow, rtype, found[0], 200)
        try:
            # the condition goes along: a patient whose MRN is registered by then is that match (as ifNoneExist)
            done = inbound.RestWrite(uow, ctx, _authorize).create(body, condition)
        except inbound.InboundRefused as exc:
            if condition and exc.status == 409:  # what the condition looks for may have been stored meanwhile
                raise ConflictingWrite(_refused(exc)) from None
            raise _refused(exc) from None
        return _written(uow, done.resource_type, done.id, 201 if done.created else 200)

    # A conditional create raced by the same create (an EHR's retry, two of its workers) answers as if it came after
    return write(run, idempotent=condition is not None)


@_handler(
    "/<rtype>/<rid>",
    "update",
    "u",
    "update",
    ("PUT",),
    summary="FHIR update (If-Match: 412 when stale), through the domain's use cases",
)
def update(rtype: str, rid: str) -> Response:
    _writable(rtype, "update")
    body = _resource_body(rtype, rid)
    expected = _if_match()
    g.query = {}

    def run(uow: Any, ctx: Any) -> Response:
        stored = projection.read(uow.session, uow.clinic_id, rtype, rid)
        if stored is None:
            raise _problem(
                404,
                "Not found",
                f"{rtype}.id",
                f"no {rtype}/{rid}: kapfhir assigns ids (updateCreate is false); create with POST {rtype}",
                "not-supported",
            )
        _check_if_match(stored, expected)
        try:
            inbound.RestWrite(uow, ctx, _authorize).update(stored, body)
        except inbound.InboundRefused as exc:
            raise _refused(exc) from None
        return _written(uow, rtype, rid, 200)

    return write(run)


@_handler(
    "/<rtype>",
    "conditional_update",
    "u",
    "update",
    ("PUT",),
    summary="FHIR conditional update (search criteria in the query string)",
)
def conditional_update(rtype: str) -> Response:
    _writable(rtype, "update")
    body = _resource_body(rtype)
    criteria = request.query_string.decode("utf-8", "replace")
    expected = _if_match()
    g.query = {}

    def run(uow: Any, ctx: Any) -> Response:
        found = _conditional_matches(uow, rtype, criteria, "url")
        if len(found) > 1:
            raise _problem(412, "Precondition failed", "url", f"more than one {rtype} matches", "multiple-matches")
        if not found and expected is not None:  # it would create: no current version can meet If-Match
            raise _problem(412, "Precondition failed", "If-Match", f"If-Match, and no {rtype} matches", "conflict")
        writer = inbound.RestWrite(uow, ctx, _authorize)
        try:
            if not found:
                done = writer.create({k: v for k, v in body.items() if k != "id"}, None)
                return _written(uow, done.resource_type, done.id, 201 if done.created else 200)
            stored = projection.read(uow.session, uow.clinic_id, rtype, found[0])
            _check_if_match(stored, expected)
            writer.update(stored, {**body, "id": found[0]})
        except inbound.InboundRefused as exc:
            raise _refused(exc) from None
        return _written(uow, rtype, found[0], 200)

    return write(run)


@_handler(
    "/<rtype>/<rid>",
    "patch",
    "u",
    "patch",
    ("PATCH",),
    summary="FHIR patch: JSON Patch or JSON merge patch, applied as an update",
)
def patch(rtype: str, rid: str) -> Response:
    """JSON Patch (RFC 6902, application/json-patch+json) or a JSON merge patch (RFC 7386: a partial resource as
    JSON, what fhirpy sends) applied to the current version, then stored like an update."""
    _writable(rtype, "update")
    expected = _if_match()
    g.query = {}

    def run(uow: Any, ctx: Any) -> Response:
        stored = projection.read(uow.session, uow.clinic_id, rtype, rid)
        if stored is None:
            raise _not_found(rtype, rid)
        operations = _patch_document()
        _check_if_match(stored, expected)
        current = stored.resource()
        try:
            if isinstance(operations, list):
                patched = jsonpatch.apply_patch(current, operations)
            else:
                patched = _merge_patch(current, operations)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, ValueError) as exc:
            raise _problem(422, "Invalid patch", "patch", f"the patch does not apply: {exc}", "processing") from None
        if not isinstance(patched, dict) or patched.get("id") != rid or patched.get("resourceType") != rtype:
            raise _problem(422, "Invalid patch", "patch", "a patch may not change resourceType or id", "processing")
        issues = [i for i in _write_issues(patched) if i.severity in ("error", "fatal")]
        if issues:
            raise ApiProblem(
                422,
                "Invalid patch",
                "The patched resource is not valid; nothing was stored.",
                [{"field": i.expression, "message": i.diagnostics} for i in issues],
            )
        try:
            inbound.RestWrite(uow, ctx, _authorize).update(stored, patched)
        except inbound.InboundRefused as exc:
            raise _refused(exc) from None
        return _written(uow, rtype, rid, 200)

    return write(run)


_JSON_TYPES = ("application/json", "application/fhir+json", "application/json+fhir")


def _patch_document() -> Any:
    from service.entrypoints.http import json_body

    mimetype = request.mimetype or ""
    if mimetype not in ("application/json-patch+json", "application/merge-patch+json", *_JSON_TYPES):
        raise ApiProblem(415, "Unsupported media type", "send application/json-patch+json or a merge patch as JSON")
    operations = json_body()
    if mimetype == "application/json-patch+json" and not isinstance(operations, list):
        raise _problem(400, "Invalid patch", "patch", "a JSON Patch is an array of operations", "structure")
    if mimetype != "application/json-patch+json" and not isinstance(operations, dict):
        raise _problem(400, "Invalid patch", "patch", "a merge patch is a JSON object", "structure")
    return operations


def _merge_patch(target: Any, patch_: Any) -> Any:
    """RFC 7386 section 2, as written there: null removes a member, objects merge, anything else replaces."""
    if not isinstance(patch_, dict):
        return patch_
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch_.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


@_handler(
    "/<rtype>/<rid>",
    "delete",
    "d",
    "delete",
    ("DELETE",),
    summary="FHIR delete: marks the record entered-in-error (it stays readable)",
)
def delete(rtype: str, rid: str) -> Response:
    """Marks the record entered-in-error (it stays readable, with its history); 405 where nothing can be deleted."""
    _writable(rtype, "delete")
    g.query = {}

    def run(uow: Any, ctx: Any) -> Response:
        stored = projection.read(uow.session, uow.clinic_id, rtype, rid)
        if stored is None:
            raise _not_found(rtype, rid)
        try:
            inbound.RestWrite(uow, ctx, _authorize).delete(stored)
        except inbound.InboundRefused as exc:
            raise _refused(exc) from None
        uow.run_pending()
        g.audit_entities = [{"type": rtype, "id": rid}]
        note = f"{rtype}/{rid} is marked entered-in-error; it stays readable with its history."
        return fhir_response(outcome_map.information(note), 200)

    return write(run)


def _check_if_match(stored: projection.Stored, expected: int | None) -> None:
    try:
        inbound.check_if_match(stored, expected, "If-Match")
    except inbound.InboundRefused as exc:
        raise _problem(412, "Precondition failed", exc.expression, exc.message, exc.code) from None


def _if_match() -> int | None:
    """The version the request's If-Match names (inbound.ANY_VERSION for *); None without the header."""
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    expected = inbound.if_match_version(raw)
    if expected is None:
        raise _problem(400, "Invalid If-Match", "If-Match", f'expected W/"<versionId>" or *, got {raw!r}', "value")
    return expected


def _entry_types(body: Any) -> tuple[str, ...]:
    types: list[str] = []
    if isinstance(body, dict) and isinstance(body.get("entry"), list):
        for entry in body["entry"]:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            rtype = resource.get("resourceType") if isinstance(resource, dict) else None
            if isinstance(rtype, str) and rtype in TYPES:
                types.append(rtype)
    return tuple(dict.fromkeys(types)) or ("Bundle",)


# an entry's request that kapfhir cannot read (a 400), rather than one it understood and refuses (a 422)
_BAD_REQUEST_AT = (".request.url", ".request.ifNoneExist", ".request.ifMatch")


@_handler(
    "",
    "transaction",
    "c",
    "transaction",
    ("POST",),
    need=_each_entry,
    summary="FHIR transaction or batch Bundle into the domain",
)
def transaction() -> Response:
    body = _body()
    kind, entries = _transaction_entries(body)
    structural, refused = _entry_refusals(_check_entries(entries), kind)
    if structural:
        status = (
            400 if any(i.code == "structure" or i.expression.endswith(_BAD_REQUEST_AT) for i in structural) else 422
        )
        raise ApiProblem(
            status,
            "Invalid bundle",
            "The Bundle has invalid entries; nothing was stored.",
            [
                {"field": i.expression, "message": i.diagnostics, "code": i.code, "severity": i.severity}
                for i in structural
            ],
        )
    g.query = {}
    return write(lambda uow, ctx: _apply(uow, ctx, body, kind, refused))


def _transaction_entries(body: Any) -> tuple[str, list[Any]]:
    """(type, entries) of a transaction or batch Bundle with at least one entry; anything else is refused."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise _problem(400, "Invalid bundle", "Bundle", "POST /fhir takes a transaction or batch Bundle", "structure")
    kind = body.get("type")
    if kind not in ("transaction", "batch"):
        raise _problem(400, "Invalid bundle", "Bundle.type", f"expected transaction or batch, got {kind!r}", "value")
    entries = body.get("entry")
    if not isinstance(entries, list) or not entries:
        raise _problem(400, "Invalid bundle", "Bundle.entry", "the Bundle has no entries", "required")
    return kind, entries


def _entry_refusals(issues: list[Issue], kind: str) -> tuple[list[Issue], dict[int, list[Issue]]]:
    """(errors that refuse the whole Bundle, errors by entry position that refuse only that entry).

    A transaction is all-or-nothing: every error refuses it. A batch answers per entry: the faulty entries alone
    are refused, and only an error outside any entry refuses the whole batch."""
    structural = [i for i in issues if i.severity in ("error", "fatal")]
    refused: dict[int, list[Issue]] = {}
    if structural and kind == "batch":
        for issue in structural:
            position = entry_index(issue.expression)
            refused.setdefault(-1 if position is None else position, []).append(issue)
        if -1 in refused:
            structural = refused[-1]
        else:
            structural = []
    return structural, refused


_handler(
    "/",
    "transaction_slash",
    "c",
    "transaction",
    ("POST",),
    summary="FHIR transaction or batch Bundle into the domain (the base URL with a trailing slash)",
    need=_each_entry,
)(transaction)


def _check_entries(entries: list[Any]) -> list[Issue]:
    """The issues of each entry: its request, then its resource (every resource is validated, also beside an entry
    that is refused, so that a batch applies only valid resources)."""
    issues: list[Issue] = []
    kept: list[int] = []  # positions of the entries that carry a resource
    for i, entry in enumerate(entries):
        where = f"Bundle.entry[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            issues.append(Issue("error", "structure", f"{where}.resource", "every entry needs a resource"))
            continue
        kept.append(i)
        issues += _request_issues(entry.get("request"), f"{where}.request")
    if not kept:
        return issues
    bundle = bundle_map.collection_of(
        [
            {"fullUrl": entries[i].get("fullUrl") or f"urn:uuid:entry-{i}", "resource": entries[i]["resource"]}
            for i in kept
        ]
    )
    # the write policy: an unknown modifierExtension refuses the write, an unknown extension never does
    found = issues + [
        dataclasses.replace(issue, expression=_renumbered(issue.expression, kept))
        for issue in fhir_validate.validate_for_write(bundle)
    ]
    return found + _types_not_served(entries, found)


def _request_issues(req: Any, where: str) -> list[Issue]:
    """What is wrong with an entry's request: its method, its url, and the condition of a conditional create
    (``ifNoneExist``) or update (the url's query), checked here so that a batch refuses that entry alone."""
    method = req.get("method") if isinstance(req, dict) else None
    if method not in ("POST", "PUT"):
        code = "not-supported" if method else "structure"
        return [Issue("error", code, where, f"entries need request.method POST or PUT and a url (got {method!r})")]
    url = req.get("url")
    if not isinstance(url, str) or not url:
        return [Issue("error", "structure", f"{where}.url", "request.url is the type, or type?identifier=system|value")]
    if_match = req.get("ifMatch")
    if if_match is not None and (not isinstance(if_match, str) or inbound.if_match_version(if_match) is None):
        return [Issue("error", "value", f"{where}.ifMatch", f'ifMatch is W/"<versionId>" or *, got {if_match!r}')]
    condition = url.partition("?")[2] if method == "PUT" else req.get("ifNoneExist")
    if not condition:
        return []
    try:
        inbound.identifier_condition(condition, f"{where}.url" if method == "PUT" else f"{where}.ifNoneExist")
    except inbound.InboundRefused as exc:
        return [Issue("error", exc.code, exc.expression, exc.message)]
    return []


def _renumbered(expression: str, positions: list[int]) -> str:
    """An expression about the k-th of some of a Bundle's entries, about that entry's position in the whole Bundle."""
    k = entry_index(expression)
    if k is None or k >= len(positions):
        return expression
    return f"Bundle.entry[{positions[k]}]{expression.split(']', 1)[1]}"


def _types_not_served(entries: list[dict], found: list[Issue]) -> list[Issue]:
    """Entries of a valid resource whose type kapfhir does not keep (an R4 type such as MedicinalProduct), refused
    as a create on /fhir/{type} is; an entry already invalid keeps its own errors."""
    invalid = {entry_index(i.expression) for i in found if i.severity in ("error", "fatal")}
    issues = []
    for i, entry in enumerate(entries):
        if i in invalid:
            continue  # its request or resource is already refused
        rtype = entry["request"]["url"].partition("?")[0].split("/")[0]
        if rtype not in TYPES:
            where = f"Bundle.entry[{i}].request.url"
            issues.append(Issue("error", "not-supported", where, f"resource type {rtype!r} is not served here"))
    return issues


def _apply(uow: Any, ctx: Any, body: dict, kind: str, refused: dict[int, list[Issue]]) -> Response:
    entries = body["entry"]
    good = [i for i in range(len(entries)) if i not in refused]
    put_values: set[str] = set()
    conditions: list[tuple[str, str, str | None, str]] = []  # (where, type, system, value)
    for i in good:
        entry = entries[i]
        req = entry["request"]
        rtype, _, condition = req["url"].partition("?")
        rtype = rtype.split("/")[0]  # a type served here (_check_entries)
        if req["method"] == "PUT":
            if condition:
                where = f"Bundle.entry[{i}].request.url"
                system, value = inbound.identifier_condition(condition, where)  # checked by _request_issues
                conditions.append((where, rtype, system, value))
                put_values.add(value)
            for ident in _identifiers(entry["resource"]):
                put_values.add(ident["value"])
        elif req.get("ifNoneExist"):
            where = f"Bundle.entry[{i}].request.ifNoneExist"
            system, value = inbound.identifier_condition(req["ifNoneExist"], where)  # checked by _request_issues
            conditions.append((where, entry["resource"]["resourceType"], system, value))
    # every condition of the bundle in one query
    index = projection.identifier_matches(uow.session, uow.clinic_id, [(t, v) for _, t, _, v in conditions])
    for where, rtype, system, value in conditions:
        if len(projection.matching_ids(index, rtype, system, value)) > 1:
            message = f"more than one {rtype} matches identifier {value!r}"
            if kind != "batch":
                raise _problem(412, "Precondition failed", where, message, "multiple-matches")
            position = entry_index(where)
            refused[position] = [Issue("error", "multiple-matches", where, message)]  # that entry alone
            good.remove(position)
    chosen = [entries[i] for i in good]
    if chosen and inbound.carries_episode(chosen):
        return _apply_episode(uow, ctx, body, kind, chosen, good, put_values, refused)
    return _apply_inbound(uow, ctx, entries, kind, refused)


def _apply_episode(
    uow: Any,
    ctx: Any,
    body: dict,
    kind: str,
    entries: list[dict],
    positions: list[int],
    put_values: set[str],
    refused: dict[int, list[Issue]],
) -> Response:
    """A whole episode (kapfhir's own export, or clinic software's): applied as one, through the use cases."""
    clinic = uow.clinic_id
    own_base = uow.repo.get_clinic().identifier_system.rstrip("/")

    try:
        carried = inbound.carried_episode({**body, "entry": entries}, clinic, own_base)
        puts = {carried.stored_value("", value, clinic) for value in put_values}

        def may_update(record_id: str) -> bool:
            return any(v == record_id or v.startswith(record_id + ".") for v in puts)

        inbound.import_chart(uow, ctx, carried.chart, may_update, _authorize)
        uow.run_pending()
        if not uow.projected:  # nothing changed: what is stored is the answer
            uow.projected.update(services.follow_up_change(uow, ctx, carried.chart.episode.id))
    except inbound.InboundRefused as exc:
        exc = _renumbered_refusal(exc, positions)
        if kind == "batch":
            return _batch_answer(len(body["entry"]), {}, {i: exc for i in positions}, refused, uow)
        raise _refused(exc) from None
    except DomainError as exc:
        refusal = inbound._domain_refusal(exc, "Bundle")
        if kind == "batch":
            return _batch_answer(len(body["entry"]), {}, {i: refusal for i in positions}, refused, uow)
        raise _refused(refusal) from None
    result = uow.projected
    found: dict[int, inbound.Outcome] = {}
    for position, entry in zip(positions, entries, strict=True):
        key = _stored_key(entry, carried, own_base, clinic, result)
        if key is None:
            continue  # derived by kapfhir (a flag the rules do not raise here): answered without a location
        version, changed = result[key]
        found[position] = inbound.Outcome(key[0], key[1], changed and version == 1)
    return _batch_answer(len(body["entry"]), found, {}, refused, uow, kind=kind, derived=set(positions) - set(found))


def _stored_key(
    entry: dict, carried: inbound.CarriedEpisode, own_base: str, clinic_id: str, result: dict
) -> tuple[str, str] | None:
    """The (type, id) an entry of a whole-episode Bundle is stored under: from its business identifier."""
    resource = entry["resource"]
    rtype = resource["resourceType"]
    if rtype == "Provenance":
        return next((k for k in result if k[0] == "Provenance"), None)
    for ident in _identifiers(resource):
        system = str(ident.get("system", ""))
        if system.startswith(carried.base + "/"):
            kind = system[len(carried.base) + 1 :]
            value = carried.stored_value(kind, ident["value"], clinic_id)
            key = (rtype, full_url_of(own_base, rtype, kind, value).removeprefix("urn:uuid:"))
            if key in result:
                return key
    return None


def _apply_inbound(uow: Any, ctx: Any, entries: list[dict], kind: str, refused: dict[int, list[Issue]]) -> Response:
    """Resources from an EHR, each mapped into the domain where it attaches (``service.fhir.inbound``)."""
    writer = inbound.RestWrite(uow, ctx, _authorize)
    chosen = {i: e for i, e in enumerate(entries) if i not in refused}
    order = list(chosen)
    failures: dict[int, inbound.InboundRefused] = {}
    try:
        if kind == "batch":
            outcomes, failed = writer.apply_each([chosen[i] for i in order])
            failures = {order[j]: _renumbered_refusal(exc, order) for j, exc in failed.items()}
        else:
            outcomes = writer.apply([chosen[i] for i in order])
        outcomes = {order[j]: done for j, done in outcomes.items()}
    except inbound.InboundRefused as exc:
        raise _refused(_renumbered_refusal(exc, order)) from None
    return _batch_answer(len(entries), outcomes, failures, refused, uow, kind=kind)


def _renumbered_refusal(exc: inbound.InboundRefused, positions: list[int]) -> inbound.InboundRefused:
    """A refusal the inbound mapping made about the k-th entry it was given, about that entry in the whole Bundle
    (a new refusal: the one given may be renumbered again for another answer)."""
    return inbound.InboundRefused(exc.status, _renumbered(exc.expression, positions), exc.message, exc.code)


def _batch_answer(
    size: int,
    outcomes: dict[int, inbound.Outcome],
    failures: dict[int, inbound.InboundRefused],
    refused: dict[int, list[Issue]],
    uow: Any,
    *,
    kind: str = "batch",
    derived: set[int] = frozenset(),  # type: ignore[assignment]
) -> Response:
    uow.run_pending()
    clinic = uow.clinic_id
    modified = projection.current_by_ids(uow.session, clinic, [(o.resource_type, o.id) for o in outcomes.values()])
    stored = {(s.resource_type, s.id): s for s in modified}
    responses = []
    for i in range(size):
        if i in refused or i in failures:
            issues = (
                [outcome_map.issue(x.severity, x.code, x.diagnostics, x.expression) for x in refused[i]]
                if i in refused
                else [outcome_map.issue("error", failures[i].code, failures[i].message, failures[i].expression)]
            )
            status = _refusal_status(refused[i]) if i in refused else failures[i].status
            responses.append(bundle_map.outcome_entry(str(status), outcome_map.operation_outcome(issues)))
            continue
        done = outcomes.get(i)
        if done is None:
            note = "derived by kapfhir from the records; not stored as sent" if i in derived else "nothing to store"
            responses.append(bundle_map.outcome_entry("200 OK", outcome_map.information(note)))
            continue
        found = stored.get((done.resource_type, done.id))
        if found is not None:
            version, modified_at = found.version_id, projection.instant(found.last_updated)
            responses.append(bundle_map.written_entry(done.resource_type, done.id, done.created, version, modified_at))
        else:
            responses.append(bundle_map.written_entry(done.resource_type, done.id, done.created))
    g.audit_entities = [{"type": o.resource_type, "id": o.id} for _, o in sorted(outcomes.items())][:200]
    return fhir_response(bundle_map.response_bundle(kind, responses))


def _refusal_status(issues: list[Issue]) -> int:
    """The status of a batch entry refused before it was applied: 412 when its condition matched more than one
    resource, as a conditional update alone answers; else 400."""
    return 412 if any(i.code == "multiple-matches" for i in issues) else 400


def _identifiers(resource: dict) -> list[dict]:
    idents = resource.get("identifier")
    idents = [idents] if isinstance(idents, dict) else (idents or [])
    return [i for i in idents if isinstance(i, dict) and i.get("value")]


# --- hooks the app calls ------------------------------------------------------------------------------------------


_FHIR_ERRORS = (400, 401, 403, 404, 405, 406, 409, 412, 413, 415, 422, 429)
_OUTCOME_SCHEMA = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {"resourceType": {"const": "OperationOutcome"}, "issue": {"type": "array"}},
}


def _resource_schema(rtype: str | None = None) -> dict:
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string"}},
    }
    if rtype:
        schema["properties"]["resourceType"] = {"const": rtype}
    return schema


def openapi_operation(rule: Any, method: str) -> dict[str, Any]:
    """The OpenAPI operation object of a /fhir route."""
    endpoint = rule.endpoint
    success, body_schema, response_schema = _operation_schemas(endpoint)
    operation: dict[str, Any] = {
        "summary": ROUTES[endpoint].summary,
        "operationId": endpoint.replace(".", "_"),
        "parameters": _operation_parameters(rule),
        "responses": _operation_answers(endpoint, success, response_schema),
    }
    request_body = _operation_request_body(endpoint, body_schema)
    if request_body is not None:
        operation["requestBody"] = request_body
    if ROUTES[endpoint].public:
        operation["security"] = []
        errors: tuple[int, ...] = (406, 429)
    else:
        errors = _FHIR_ERRORS
    for code in errors:
        operation["responses"][str(code)] = {
            "description": "OperationOutcome",
            "content": {FHIR_JSON: {"schema": _OUTCOME_SCHEMA}},
        }
    return operation


def _operation_schemas(endpoint: str) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
    """(success status, request body schema, response schema) of a FHIR interaction."""
    success = "200"
    body_schema: dict[str, Any] | None = None
    response_schema = _resource_schema()
    if endpoint == "fhir.metadata":
        response_schema = _resource_schema("CapabilityStatement")
    elif endpoint in ("fhir.transaction", "fhir.transaction_slash"):
        body_schema = _resource_schema("Bundle")
        response_schema = _resource_schema("Bundle")
    elif endpoint in ("fhir.create", "fhir.update", "fhir.conditional_update"):
        body_schema = _resource_schema()
        if endpoint == "fhir.create":
            success = "201"
    elif endpoint == "fhir.patch":
        body_schema = {"oneOf": [{"type": "array", "items": {"type": "object"}}, {"type": "object"}]}
    elif endpoint == "fhir.delete":
        response_schema = _resource_schema("OperationOutcome")
    elif endpoint == "fhir.search_post":
        response_schema = _resource_schema("Bundle")
    elif endpoint in ("fhir.validate", "fhir.validate_type"):
        body_schema = _resource_schema()
        response_schema = _resource_schema("OperationOutcome")
    elif endpoint in ("fhir.search_type", "fhir.history_type", "fhir.history_instance"):
        response_schema = _resource_schema("Bundle")
    return success, body_schema, response_schema


def _operation_parameters(rule: Any) -> list[dict[str, Any]]:
    """Path arguments, _format, $validate's profile and kap-rules, and the conditional headers of writes."""
    endpoint = rule.endpoint
    parameters: list[dict[str, Any]] = [
        {"name": arg, "in": "path", "required": True, "schema": {"type": "string"}} for arg in sorted(rule.arguments)
    ]
    parameters.append({"name": "_format", "in": "query", "required": False, "schema": {"type": "string"}})
    if endpoint in ("fhir.validate", "fhir.validate_type"):
        parameters.append({"name": "profile", "in": "query", "required": False, "schema": {"type": "string"}})
        parameters.append({"name": "kap-rules", "in": "query", "required": False, "schema": {"type": "boolean"}})
    if endpoint in ("fhir.update", "fhir.patch", "fhir.conditional_update"):
        parameters.append({"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"}})
    if endpoint == "fhir.read":
        for name in ("If-None-Match", "If-Modified-Since"):
            parameters.append({"name": name, "in": "header", "required": False, "schema": {"type": "string"}})
    if endpoint == "fhir.create":
        parameters.append({"name": "If-None-Exist", "in": "header", "required": False, "schema": {"type": "string"}})
    return parameters


def _operation_answers(endpoint: str, success: str, response_schema: dict[str, Any]) -> dict[str, Any]:
    """The success answers: create answers 201, or 200 when If-None-Exist found one; read may answer 304."""
    responses: dict[str, Any] = {
        success: {"description": "OK", "content": {FHIR_JSON: {"schema": response_schema}}},
    }
    if endpoint in ("fhir.create", "fhir.conditional_update"):
        responses["200"] = {"description": "OK", "content": {FHIR_JSON: {"schema": response_schema}}}
    if endpoint == "fhir.create":
        responses["201"] = {"description": "Created", "content": {FHIR_JSON: {"schema": response_schema}}}
    if endpoint == "fhir.read":
        responses["304"] = {"description": "Not modified (If-None-Match, or If-Modified-Since without it)"}
    return responses


def _operation_request_body(endpoint: str, body_schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """A resource (JSON Patch or merge patch for patch), or search parameters as a form for search by POST."""
    request_body = None
    if body_schema is not None:
        content = {FHIR_JSON: {"schema": body_schema}, "application/json": {"schema": body_schema}}
        if endpoint == "fhir.patch":
            content = {
                "application/json-patch+json": {"schema": body_schema["oneOf"][0]},
                "application/json": {"schema": body_schema["oneOf"][1]},
            }
        request_body = {"required": True, "content": content}
    if endpoint == "fhir.search_post":
        request_body = {
            "required": False,
            "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}},
        }
    return request_body
