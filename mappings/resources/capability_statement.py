"""The CapabilityStatement of kapfhir's /fhir API: what the server supports, as the API's route table says.

The entry point gathers the facts (types, interactions, search parameters, profiles); this module only shapes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mappings import terminology as t

FHIR_VERSION = "4.0.1"
SOFTWARE_VERSION = "0.1.0"
STATEMENT_DATE = "2026-11-22"


@dataclass(frozen=True)
class SearchParam:
    name: str
    type: str
    definition: str | None = None  # canonical URL of the R4 SearchParameter, when R4 defines it


@dataclass(frozen=True)
class ResourceCapability:
    type: str
    read_interactions: list[str]  # read, vread, history-instance, ... in the order of the route table
    create: bool = False  # create, with If-None-Exist (conditional create)
    update: bool = False  # update and patch, by id or by condition
    delete: bool = False
    profiles: list[str] = field(default_factory=list)
    documentation: str | None = None
    search_includes: list[str] = field(default_factory=list)
    search_params: list[SearchParam] = field(default_factory=list)
    validate: bool = False  # the type-level $validate


def _interactions(cap: ResourceCapability) -> list[dict]:
    codes = list(cap.read_interactions)
    codes += ["create"] if cap.create else []
    codes += ["update", "patch"] if cap.update else []
    codes += ["delete"] if cap.delete else []
    return [{"code": code} for code in codes]


def _search_param(param: SearchParam) -> dict:
    item = {"name": param.name, "type": param.type}
    if param.definition:
        item["definition"] = param.definition
    return item


def to_rest_resource(cap: ResourceCapability) -> dict:
    entry: dict[str, Any] = {"type": cap.type}
    if cap.profiles:
        entry["supportedProfile"] = list(cap.profiles)
    entry["interaction"] = _interactions(cap)
    if cap.documentation:
        entry["documentation"] = cap.documentation
    entry |= {"versioning": "versioned", "readHistory": True, "updateCreate": False}
    if cap.create:
        entry["conditionalCreate"] = True
    if cap.update:
        entry["conditionalUpdate"] = True
    entry |= {"conditionalRead": "not-supported", "conditionalDelete": "not-supported"}
    if cap.search_includes:
        entry["searchInclude"] = list(cap.search_includes)
    entry["searchParam"] = [_search_param(p) for p in cap.search_params]
    if cap.validate:
        entry["operation"] = [{"name": "validate", "definition": t.OPERATION_VALIDATE}]
    return entry


def measure_resource() -> dict:
    """Measure, served read-only with $evaluate-measure (service.entrypoints.fhir_measures)."""
    return {
        "type": "Measure",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": [
            {"name": "_id", "type": "token"},
            {"name": "url", "type": "uri"},
            {"name": "status", "type": "token"},
            {"name": "name", "type": "string"},
        ],
        "operation": [{"name": "evaluate-measure", "definition": t.OPERATION_EVALUATE_MEASURE}],
    }


def _security(root: str) -> dict:
    return {
        "cors": False,
        "service": [{"coding": [dict(t.SECURITY_SERVICE_SMART)]}],
        "description": "SMART Backend Services bearer tokens with v2 scopes (system/<Type>.cruds); "
        f"see {root}/.well-known/smart-configuration",
        "extension": [
            {"url": t.OAUTH_URIS_EXTENSION, "extension": [{"url": "token", "valueUri": f"{root}/oauth2/token"}]}
        ],
    }


def to_capability_statement(
    base: str, resources: list[ResourceCapability], system_interactions: list[str], measures: bool = False
) -> dict:
    """``base`` is the /fhir base URL; the token endpoint and SMART configuration live at its root."""
    rest_resources = [to_rest_resource(r) for r in resources]
    if measures:
        rest_resources.append(measure_resource())
    root = base.removesuffix("/fhir")
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": STATEMENT_DATE,
        "publisher": "kapfhir",
        "kind": "instance",
        "software": {"name": "kapfhir", "version": SOFTWARE_VERSION},
        "implementation": {"description": "kapfhir FHIR R4 API", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "security": _security(root),
                "resource": rest_resources,
                "interaction": [{"code": code} for code in system_interactions],
                "operation": [{"name": "validate", "definition": t.OPERATION_VALIDATE}],
            }
        ],
    }
