"""The FHIR R4 REST API under /fhir: CapabilityStatement, read, vread, history, search, transaction/batch ingest
and $validate. Resources come from the domain through the mappings (the projection in ``service.fhir``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from flask import Blueprint, Response, g, has_request_context, request

from mappings.conformance import load_all
from mappings.validation import Issue
from service.entrypoints.http import ApiProblem, principal, read, write
from service.fhir import inbound, ingest, projection, registry, search
from service.fhir import validate as fhir_validate
from service.fhir.registry import TYPES
from service.security.scopes import Requirement

bp = Blueprint("fhir", __name__, url_prefix="/fhir")

FHIR_JSON = "application/fhir+json"
FHIR_VERSION = "4.0.1"
# Endpoints under /fhir that need no token (the CapabilityStatement).
PUBLIC_ENDPOINTS: set[str] = {"fhir.metadata"}
_ACCEPTED = ("application/fhir+json", "application/json", "application/*", "*/*", "application/json+fhir")
_FORMATS = {"json", "application/json", "application/fhir+json", "fhir+json", "application/json+fhir"}

# endpoint -> (SMART interaction, FHIR interaction code of the CapabilityStatement)
HANDLERS: dict[str, tuple[str, str]] = {}


def _handler(
    rule: str, endpoint: str, interaction: str, capability: str, methods: tuple[str, ...] = ("GET",)
) -> Callable:
    def register(fn: Callable) -> Callable:
        bp.add_url_rule(rule, endpoint=endpoint, view_func=fn, methods=list(methods))
        HANDLERS[f"fhir.{endpoint}"] = (interaction, capability)
        return fn

    return register


# --- plumbing -----------------------------------------------------------------------------------------------------

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
    response = Response(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), status=status, mimetype=FHIR_JSON)
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
        {
            "severity": e.get("severity", "error"),
            "code": e.get("code", code),
            "diagnostics": e.get("message", detail),
            "expression": [e["field"]],
        }
        for e in errors or []
        if e.get("field")
    ]
    if not issues:
        issues = [{"severity": "error", "code": code, "diagnostics": f"{title}: {detail}"}]
    return fhir_response({"resourceType": "OperationOutcome", "issue": issues}, status, headers)


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

    return json_body()


def _base() -> str:
    return request.url_root.rstrip("/") + "/fhir"


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
        when = datetime.fromisoformat(meta["lastUpdated"].replace("Z", "+00:00"))
        headers["Last-Modified"] = when.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    return headers


def _resource_response(resource: dict) -> Response:
    return fhir_response(resource, 200, _resource_headers(resource))


# --- conformance resources and audit events (not projected) -------------------------------------------------------

CONFORMANCE_DATE = "2026-11-01T00:00:00Z"


def _conformance(rtype: str) -> list[tuple[dict, datetime]]:
    out = []
    for resource in load_all().values():
        if resource.get("resourceType") == rtype:
            when = datetime.fromisoformat((resource.get("date") or CONFORMANCE_DATE[:10])[:10]).replace(tzinfo=UTC)
            served = {
                "resourceType": rtype,
                "id": resource["id"],
                **{k: v for k, v in resource.items() if k not in ("resourceType", "id")},
            }
            served["meta"] = {"versionId": "1", "lastUpdated": projection.instant(when), **resource.get("meta", {})}
            out.append((served, when))
    return out


_AUDIT_TYPE = {
    "rest": {
        "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
        "code": "rest",
        "display": "RESTful Operation",
    },
    "export": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110106", "display": "Export"},
}
_RESTFUL = {
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history",
    "history-instance",
    "history-type",
    "history-system",
    "create",
    "search",
    "search-type",
    "search-system",
    "capabilities",
    "transaction",
    "batch",
    "operation",
}


def audit_event(row: Any) -> dict:
    subtype_system = (
        "http://hl7.org/fhir/restful-interaction"
        if row.subtype in _RESTFUL
        else ("https://kapfhir.example.org/fhir/CodeSystem/kap-audit-subtype")
    )
    agent: dict[str, Any] = {"requestor": True}
    if row.client_id:
        agent["who"] = {"identifier": {"system": "https://kapfhir.example.org/fhir/id/client", "value": row.client_id}}
    if row.network_address:
        agent["network"] = {"address": row.network_address, "type": "2"}
    return {
        "resourceType": "AuditEvent",
        "id": row.id,
        "meta": {"versionId": "1", "lastUpdated": projection.instant(row.recorded)},
        "type": _AUDIT_TYPE.get(row.type, _AUDIT_TYPE["rest"]),
        "subtype": [{"system": subtype_system, "code": row.subtype}],
        "action": row.action,
        "recorded": projection.instant(row.recorded),
        "outcome": row.outcome,
        "agent": [agent],
        "source": {
            "observer": {"display": "kapfhir"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}],
        },
        "entity": [{"what": {"type": e.get("type"), "identifier": {"value": e.get("id")}}} for e in (row.entity or [])],
    }


# --- capability statement -----------------------------------------------------------------------------------------


def _profiles_of(rtype: str) -> list[str]:
    return sorted(
        r["url"]
        for r in load_all().values()
        if r.get("resourceType") == "StructureDefinition" and r.get("type") == rtype and r.get("kind") == "resource"
    )


def capability_statement() -> dict:
    type_interactions = [cap for _, (_, cap) in sorted(HANDLERS.items()) if cap in registry.READ_INTERACTIONS]
    resources = []
    for name, info in sorted(TYPES.items()):
        entry: dict[str, Any] = {"type": name}
        profiles = _profiles_of(name)
        if profiles:
            entry["supportedProfile"] = profiles
        entry["interaction"] = [{"code": code} for code in registry.READ_INTERACTIONS if code in type_interactions]
        entry["versioning"] = "versioned"
        entry["readHistory"] = True
        entry["updateCreate"] = False
        includes = registry.includes(name)
        if includes:
            entry["searchInclude"] = includes
        params = []
        for code, param in info.params.items():
            definition = registry.r4_definition(name, code)
            item = {"name": code, "type": param.type}
            if definition:
                item["definition"] = definition["url"]
            params.append(item)
        entry["searchParam"] = params
        if "fhir.validate_type" in HANDLERS:
            entry["operation"] = [
                {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}
            ]
        resources.append(entry)
    system = [{"code": cap} for _, (_, cap) in sorted(HANDLERS.items()) if cap in ("transaction", "batch")]
    if "fhir.transaction" in HANDLERS:
        system = [{"code": "transaction"}, {"code": "batch"}]
    base = _base()
    root = base.removesuffix("/fhir")
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "publisher": "kapfhir",
        "kind": "instance",
        "software": {"name": "kapfhir", "version": "0.1.0"},
        "implementation": {"description": "kapfhir FHIR R4 API", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "cors": False,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ]
                        }
                    ],
                    "description": "SMART Backend Services bearer tokens with v2 scopes (system/<Type>.cruds); "
                    f"see {root}/.well-known/smart-configuration",
                    "extension": [
                        {
                            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                            "extension": [{"url": "token", "valueUri": f"{root}/oauth2/token"}],
                        }
                    ],
                },
                "resource": resources,
                "interaction": system,
                "operation": [
                    {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}
                ],
            }
        ],
    }


@bp.get("/metadata")
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


@_handler("/<rtype>/<rid>", "read", "r", "read")
def read_resource(rtype: str, rid: str) -> Response:
    _type_or_404(rtype)
    g.audit_entities = [{"type": rtype, "id": rid}]
    return _read(lambda uow: _resource_response(_stored_or_404(uow, rtype, rid)))


@_handler("/<rtype>/<rid>/_history/<vid>", "vread", "r", "vread")
def vread(rtype: str, rid: str, vid: str) -> Response:
    _type_or_404(rtype)
    if not vid.isdigit():
        raise _problem(404, "Not found", "vid", f"no version {vid!r} of {rtype}/{rid}")
    g.audit_entities = [{"type": rtype, "id": rid}]
    return _read(lambda uow: _resource_response(_stored_or_404(uow, rtype, rid, int(vid))))


def _paging() -> tuple[int, int]:
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "_format"]
    count, offset = search.DEFAULT_COUNT, 0
    for key, value in args:
        if key == "_count" and value.isdigit():
            count = min(int(value), search.MAX_COUNT)
        elif key == "_offset" and value.isdigit():
            offset = int(value)
        else:
            raise _problem(400, "Invalid search", key, f"history takes only _count and _offset (got {key}={value!r})")
    return count, offset


def _bundle(kind: str, entries: list[dict], total: int, count: int, offset: int, params: list[tuple[str, str]]) -> dict:
    path = request.base_url
    own = [(k, v) for k, v in params if k not in ("_offset",)]
    links = [{"relation": "self", "url": path + ("?" + urlencode(params) if params else "")}]
    if offset + count < total and count > 0:
        links.append({"relation": "next", "url": path + "?" + urlencode([*own, ("_offset", str(offset + count))])})
    if offset > 0:
        links.append(
            {"relation": "previous", "url": path + "?" + urlencode([*own, ("_offset", str(max(offset - count, 0)))])}
        )
    return {
        "resourceType": "Bundle",
        "meta": {"lastUpdated": projection.instant(datetime.now(UTC))},
        "type": kind,
        "total": total,
        "link": links,
        "entry": entries,
    }


def _history_entry(resource: dict) -> dict:
    meta = resource["meta"]
    return {
        "fullUrl": f"{_base()}/{resource['resourceType']}/{resource['id']}",
        "resource": resource,
        "request": {
            "method": "PUT" if meta["versionId"] != "1" else "POST",
            "url": f"{resource['resourceType']}/{resource['id']}"
            if meta["versionId"] != "1"
            else resource["resourceType"],
        },
        "response": {
            "status": "200 OK" if meta["versionId"] != "1" else "201 Created",
            "etag": f'W/"{meta["versionId"]}"',
            "lastModified": meta["lastUpdated"],
        },
    }


def _history(rtype: str, rid: str | None) -> Response:
    info = _type_or_404(rtype)
    count, offset = _paging()
    params = [(k, v) for k, v in request.args.items(multi=True)]

    def run(uow: Any) -> Response:
        clinic = principal().clinic_id
        if info.source == "projection":
            if rid is not None and not projection.exists_any_version(uow.session, clinic, rtype, rid):
                raise _not_found(rtype, rid)
            items, total = projection.history(uow.session, clinic, rtype, rid, limit=count, offset=offset)
            resources = [s.resource() for s in items]
        else:
            q = search.Query(rtype, count=count, offset=offset)
            if rid is not None:
                q.criteria.append(search.Criterion(info.params["_id"], None, ((None, rid),)))
            resources, total = _search_other(uow, info, q)
            if rid is not None and not resources:
                raise _not_found(rtype, rid)
        g.audit_entities = [{"type": rtype, "id": r["id"]} for r in resources[:100]]
        return fhir_response(_bundle("history", [_history_entry(r) for r in resources], total, count, offset, params))

    return _read(run)


@_handler("/<rtype>/<rid>/_history", "history_instance", "r", "history-instance")
def history_instance(rtype: str, rid: str) -> Response:
    return _history(rtype, rid)


@_handler("/<rtype>/_history", "history_type", "s", "history-type")
def history_type(rtype: str) -> Response:
    return _history(rtype, None)


# --- search -------------------------------------------------------------------------------------------------------


def _search_other(uow: Any, info: registry.TypeInfo, q: search.Query) -> tuple[list[dict], int]:
    if info.source == "conformance":
        found, total = search.search_memory(_conformance(info.name), q)
        return [r for r, _ in found], total
    rows, total = search.search_audit(uow.session, principal().clinic_id, q)
    return [audit_event(r) for r in rows], total


@_handler("/<rtype>", "search_type", "s", "search-type")
def search_type(rtype: str) -> Response:
    info = _type_or_404(rtype)
    params = [(k, v) for k, v in request.args.items(multi=True)]
    try:
        q = search.parse(rtype, params)
    except search.SearchError as exc:
        raise _problem(exc.status, "Invalid search", exc.expression, exc.message, "invalid") from None

    def run(uow: Any) -> Response:
        clinic = principal().clinic_id
        included: list[dict] = []
        if info.source == "projection":
            rows, total = search.search_projection(uow.session, clinic, q)
            resources = [projection._stored(r).resource() for r in rows]
            if q.include and resources:
                refs = search.included_refs(uow.session, clinic, q, [r["id"] for r in resources])
                included = [s.resource() for s in projection.current_by_ids(uow.session, clinic, refs)]
        else:
            resources, total = _search_other(uow, info, q)
        entries = [
            {"fullUrl": f"{_base()}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ] + [
            {"fullUrl": f"{_base()}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "include"}}
            for r in included
        ]
        g.audit_entities = [{"type": r["resourceType"], "id": r["id"]} for r in [*resources, *included][:100]]
        return fhir_response(_bundle("searchset", entries, total, q.count, q.offset, params))

    return _read(run)


# --- $validate ----------------------------------------------------------------------------------------------------


# $validate parameters (query string or Parameters): ``profile`` (FHIR's), and ``kap-rules`` (kapfhir's: true asks
# for the KAP domain rules on a resource that claims no kapfhir profile).
_VALIDATE_PARAMS = frozenset({"profile", "kap-rules", "_format"})


def _validate_payload(body: Any) -> tuple[Any, str | None, bool]:
    unknown = sorted(set(request.args) - _VALIDATE_PARAMS)
    if unknown:
        raise _problem(
            400, "Unknown parameter", unknown[0], f"$validate takes profile and kap-rules, not {unknown[0]!r}", "value"
        )
    profile = request.args.get("profile")
    kap_value = request.args.get("kap-rules", "false")
    if kap_value not in ("true", "false"):
        raise _problem(400, "Invalid parameter", "kap-rules", f"kap-rules is true or false, not {kap_value!r}", "value")
    kap_rules = kap_value == "true"
    if (
        isinstance(body, dict)
        and body.get("resourceType") == "Parameters"
        and any(isinstance(p, dict) and p.get("name") == "resource" for p in body.get("parameter", []) or [])
    ):
        resource = None
        for p in body.get("parameter", []) or []:
            if not isinstance(p, dict):
                continue
            if p.get("name") == "resource":
                resource = p.get("resource")
            elif p.get("name") == "profile":
                profile = p.get("valueUri") or p.get("valueCanonical") or p.get("valueString")
            elif p.get("name") == "kap-rules":
                kap_rules = p.get("valueBoolean") is True
        return resource, profile, kap_rules
    return body, profile, kap_rules


def _outcome(issues: list[Issue]) -> dict:
    found = [i.as_fhir() for i in issues]
    if not found:
        found = [{"severity": "information", "code": "informational", "diagnostics": "No issues found."}]
    return {"resourceType": "OperationOutcome", "issue": found}


def _run_validate(expected: str | None, resource: Any, profile: str | None, kap_rules: bool) -> Response:
    issues = fhir_validate.validate(resource, expected_type=expected, profile=profile, kap_rules=kap_rules)
    g.audit_entities = []
    return fhir_response(_outcome(issues))


@_handler("/$validate", "validate", "r", "operation", ("POST",))
def validate_any() -> Response:
    return _audited_validate(None)


@_handler("/<rtype>/$validate", "validate_type", "r", "operation", ("POST",))
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


# --- transaction / batch ------------------------------------------------------------------------------------------


def _entry_types(body: Any) -> tuple[str, ...]:
    types: list[str] = []
    if isinstance(body, dict) and isinstance(body.get("entry"), list):
        for entry in body["entry"]:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            rtype = resource.get("resourceType") if isinstance(resource, dict) else None
            if isinstance(rtype, str) and rtype in TYPES:
                types.append(rtype)
    return tuple(dict.fromkeys(types)) or ("Bundle",)


@_handler("", "transaction", "c", "transaction", ("POST",))
def transaction() -> Response:
    body = _body()
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise _problem(400, "Invalid bundle", "Bundle", "POST /fhir takes a transaction or batch Bundle", "structure")
    kind = body.get("type")
    if kind not in ("transaction", "batch"):
        raise _problem(400, "Invalid bundle", "Bundle.type", f"expected transaction or batch, got {kind!r}", "value")
    entries = body.get("entry")
    if not isinstance(entries, list) or not entries:
        raise _problem(400, "Invalid bundle", "Bundle.entry", "the Bundle has no entries", "required")
    issues = _check_entries(entries)
    structural = [i for i in issues if i.severity in ("error", "fatal")]
    if structural:
        status = 400 if any(i.code == "structure" for i in structural) else 422
        raise ApiProblem(
            status,
            "Invalid bundle",
            "The Bundle has invalid entries; nothing was stored.",
            [
                {"field": i.expression, "message": i.diagnostics, "code": i.code, "severity": i.severity}
                for i in structural
            ],
        )
    put_types = tuple(dict.fromkeys(e["resource"]["resourceType"] for e in entries if e["request"]["method"] == "PUT"))
    if put_types:
        missing = principal().scopes.missing(Requirement("u", put_types))
        if missing:
            raise ApiProblem(403, "Forbidden", f"conditional PUT needs update scope on {', '.join(missing)}")
    g.query = {}
    return write(lambda uow, ctx: _apply(uow, ctx, body, kind))


def _check_entries(entries: list[Any]) -> list[Issue]:
    issues: list[Issue] = []
    for i, entry in enumerate(entries):
        where = f"Bundle.entry[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            issues.append(Issue("error", "structure", f"{where}.resource", "every entry needs a resource"))
            continue
        req = entry.get("request")
        if not isinstance(req, dict) or req.get("method") not in ("POST", "PUT") or not isinstance(req.get("url"), str):
            method = req.get("method") if isinstance(req, dict) else None
            issues.append(
                Issue(
                    "error",
                    "not-supported" if method else "structure",
                    f"{where}.request",
                    f"entries need request.method POST or PUT and a url (got {method!r})",
                )
            )
    if issues:
        return issues
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": e.get("fullUrl") or f"urn:uuid:entry-{i}", "resource": e["resource"]}
            for i, e in enumerate(entries)
        ],
    }
    # the write policy: an unknown modifierExtension refuses the write, an unknown extension never does
    return fhir_validate.validate_for_write(bundle)


def _apply(uow: Any, ctx: Any, body: dict, kind: str) -> Response:
    entries = body["entry"]
    clinic = uow.clinic_id
    put_values: set[str] = set()
    conditions: list[tuple[str, str, str | None, str]] = []  # (where, type, system, value)
    for i, entry in enumerate(entries):
        req = entry["request"]
        where = f"Bundle.entry[{i}].request"
        if req["method"] == "PUT":
            rtype, _, condition = req["url"].partition("?")
            if condition:
                system, value = _condition(where + ".url", condition)
                conditions.append((where + ".url", rtype, system, value))
                put_values.add(value)
            else:
                for ident in (
                    entry["resource"].get("identifier", [])
                    if isinstance(entry["resource"].get("identifier"), list)
                    else []
                ):
                    if ident.get("value"):
                        put_values.add(ident["value"])
        elif req.get("ifNoneExist"):
            system, value = _condition(where + ".ifNoneExist", req["ifNoneExist"])
            conditions.append((where + ".ifNoneExist", entry["resource"]["resourceType"], system, value))
    for where, rtype, _, _ in conditions:
        if rtype not in TYPES:
            raise _problem(400, "Invalid condition", where, f"unknown resource type {rtype!r}", "not-supported")
    # every condition of the bundle in one query (one per condition was a quarter of a transaction)
    index = projection.identifier_matches(uow.session, clinic, [(rtype, value) for _, rtype, _, value in conditions])
    for where, rtype, system, value in conditions:
        if len(projection.matching_ids(index, rtype, system, value)) > 1:
            raise _problem(
                412,
                "Precondition failed",
                where,
                f"more than one {rtype} matches identifier {value!r}",
                "multiple-matches",
            )

    if not inbound.carries_episode(entries):
        return _apply_inbound(uow, ctx, entries, kind)

    def may_update(record_id: str) -> bool:
        return record_id in put_values or any(v.startswith(record_id + ".") for v in put_values)

    try:
        chart = ingest.chart_of(body)
        ingest.import_chart(uow, ctx, chart, may_update)
        result = ingest.project(uow, ctx, chart.episode.id)
    except ingest.IngestError as exc:
        raise _problem(exc.status, "Unprocessable bundle", exc.expression, exc.message, exc.code) from None
    responses = []
    touched = []
    projected = []
    index = projection.identifier_matches(
        uow.session,
        clinic,
        [(e["resource"]["resourceType"], ident["value"]) for e in entries for ident in _identifiers(e["resource"])],
    )
    for i, entry in enumerate(entries):
        found = _projected_for(entry, result, index)
        if found is None:
            raise _problem(
                422,
                "Unprocessable bundle",
                f"Bundle.entry[{i}].resource",
                f"the {entry['resource']['resourceType']} does not map into a KAP episode",
                "not-supported",
            )
        projected.append(found)
    # one query for every entry's lastModified (reading each stored body was a quarter of a transaction)
    modified = projection.last_updated_of(uow.session, clinic, [(rtype, rid) for rtype, rid, _, _ in projected])
    for rtype, rid, version, changed in projected:
        status = "201 Created" if changed and version == 1 else "200 OK"
        touched.append({"type": rtype, "id": rid})
        responses.append(
            {
                "response": {
                    "status": status,
                    "location": f"{rtype}/{rid}/_history/{version}",
                    "etag": f'W/"{version}"',
                    "lastModified": projection.instant(modified[(rtype, rid)]),
                }
            }
        )
    g.audit_entities = touched[:200]
    return fhir_response({"resourceType": "Bundle", "type": f"{kind}-response", "entry": responses})


def _apply_inbound(uow: Any, ctx: Any, entries: list[dict], kind: str) -> Response:
    """Resources from an EHR, each mapped into the domain where it attaches (``service.fhir.inbound``)."""
    clinic = uow.clinic_id
    failures: dict[int, inbound.InboundRefused] = {}
    try:
        if kind == "batch":
            outcomes, failures = inbound.Inbound(uow, ctx).apply_each(entries)
        else:
            outcomes = inbound.Inbound(uow, ctx).apply(entries)
    except inbound.InboundRefused as exc:
        raise _problem(exc.status, "Unprocessable bundle", exc.expression, exc.message, exc.code) from None
    responses = []
    for i in range(len(entries)):
        if i in failures:  # a batch answers per entry: this one was refused, the others stand
            exc = failures[i]
            responses.append(
                {
                    "response": {
                        "status": str(exc.status),
                        "outcome": {
                            "resourceType": "OperationOutcome",
                            "issue": [
                                {
                                    "severity": "error",
                                    "code": exc.code,
                                    "diagnostics": exc.message,
                                    "expression": [exc.expression],
                                }
                            ],
                        },
                    }
                }
            )
            continue
        done = outcomes[i]
        stored = projection.read(uow.session, clinic, done.resource_type, done.id)
        response: dict[str, Any] = {"status": "201 Created" if done.created else "200 OK"}
        if stored is not None:
            response |= {
                "location": f"{done.resource_type}/{done.id}/_history/{stored.version_id}",
                "etag": f'W/"{stored.version_id}"',
                "lastModified": projection.instant(stored.last_updated),
            }
        else:
            response["location"] = f"{done.resource_type}/{done.id}"
        responses.append({"response": response})
    g.audit_entities = [{"type": outcomes[i].resource_type, "id": outcomes[i].id} for i in sorted(outcomes)][:200]
    return fhir_response({"resourceType": "Bundle", "type": f"{kind}-response", "entry": responses})


def _condition(where: str, text: str) -> tuple[str | None, str]:
    try:
        return ingest.identifier_condition(text, where)
    except ingest.IngestError as exc:
        raise _problem(exc.status, "Invalid condition", exc.expression, exc.message, exc.code) from None


def _identifiers(resource: dict) -> list[dict]:
    idents = resource.get("identifier")
    idents = [idents] if isinstance(idents, dict) else (idents or [])
    return [i for i in idents if isinstance(i, dict) and i.get("value")]


def _projected_for(entry: dict, result: dict, index: dict) -> tuple[str, str, int, bool] | None:
    resource = entry["resource"]
    rtype = resource["resourceType"]
    if rtype == "Provenance":
        key = next((k for k in result if k[0] == "Provenance"), None)
        return (key[0], key[1], *result[key]) if key else None
    own = str(entry.get("fullUrl", "")).removeprefix("urn:uuid:")
    if (rtype, own) in result:
        return (rtype, own, *result[(rtype, own)])
    for ident in _identifiers(resource):
        ids = projection.matching_ids(index, rtype, ident.get("system"), ident["value"])
        ids = ids or projection.matching_ids(index, rtype, None, ident["value"])
        for rid in ids:
            if (rtype, rid) in result:
                return (rtype, rid, *result[(rtype, rid)])
    return None


# --- hooks the app calls ------------------------------------------------------------------------------------------


def requirement(endpoint: str, view_args: Mapping[str, Any], method: str) -> Requirement | None:
    """The SMART permission a /fhir request needs."""
    if endpoint not in HANDLERS:
        return None
    interaction, _ = HANDLERS[endpoint]
    body = request.get_json(silent=True) if has_request_context() else None
    if endpoint == "fhir.transaction":
        return Requirement("c", _entry_types(body))
    if endpoint == "fhir.validate":
        rtype = body.get("resourceType") if isinstance(body, dict) else None
        return Requirement("r", (rtype,) if isinstance(rtype, str) and rtype in TYPES else ("Bundle",))
    if endpoint == "fhir.validate_type" and str(view_args.get("rtype")) not in TYPES:
        return Requirement("r", ("Bundle",))  # a type not stored here: validation reads nothing of it
    rtype = str(view_args.get("rtype", "Bundle"))
    return Requirement(interaction, (rtype,))


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


_SUMMARIES = {
    "fhir.metadata": "FHIR CapabilityStatement (generated from the registered handlers)",
    "fhir.transaction": "FHIR transaction or batch Bundle into the domain",
    "fhir.validate": "FHIR $validate of any resource or Bundle",
    "fhir.validate_type": "FHIR $validate of a resource of one type",
    "fhir.search_type": "FHIR search",
    "fhir.read": "FHIR read",
    "fhir.vread": "FHIR vread",
    "fhir.history_instance": "FHIR history of a resource",
    "fhir.history_type": "FHIR history of a type",
}


def openapi_operation(rule: Any, method: str) -> dict[str, Any]:
    """The OpenAPI operation object of a /fhir route."""
    endpoint = rule.endpoint
    success = "200"
    body_schema: dict[str, Any] | None = None
    response_schema = _resource_schema()
    if endpoint == "fhir.metadata":
        response_schema = _resource_schema("CapabilityStatement")
    elif endpoint == "fhir.transaction":
        body_schema = _resource_schema("Bundle")
        response_schema = _resource_schema("Bundle")
    elif endpoint in ("fhir.validate", "fhir.validate_type"):
        body_schema = _resource_schema()
        response_schema = _resource_schema("OperationOutcome")
    elif endpoint in ("fhir.search_type", "fhir.history_type", "fhir.history_instance"):
        response_schema = _resource_schema("Bundle")
    parameters: list[dict[str, Any]] = [
        {"name": arg, "in": "path", "required": True, "schema": {"type": "string"}} for arg in sorted(rule.arguments)
    ]
    parameters.append({"name": "_format", "in": "query", "required": False, "schema": {"type": "string"}})
    if endpoint in ("fhir.validate", "fhir.validate_type"):
        parameters.append({"name": "profile", "in": "query", "required": False, "schema": {"type": "string"}})
        parameters.append({"name": "kap-rules", "in": "query", "required": False, "schema": {"type": "boolean"}})
    operation: dict[str, Any] = {
        "summary": _SUMMARIES.get(endpoint, endpoint),
        "operationId": endpoint.replace(".", "_"),
        "parameters": parameters,
        "responses": {
            success: {"description": "OK", "content": {FHIR_JSON: {"schema": response_schema}}},
        },
    }
    if body_schema is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {FHIR_JSON: {"schema": body_schema}, "application/json": {"schema": body_schema}},
        }
    if endpoint in PUBLIC_ENDPOINTS:
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
