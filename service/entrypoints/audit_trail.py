"""The audit record of a request: who (client, clinic, address), what (the route's interaction and the resources its
path or view names), and the outcome. Read by the write and read plumbing (``http``) and the refusal hook (``auth``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from flask import Response, g, request

from service.adapters import audit
from service.entrypoints.routes import facts_of
from service.security.scopes import Requirement
from service.security.tokens import Principal

# restful-interaction code of an audit record, by SMART interaction (create, read, update, delete, search)
AUDIT_SUBTYPE = {
    "c": ("create", "C"),
    "r": ("read", "R"),
    "u": ("update", "U"),
    "d": ("delete", "D"),
    "s": ("search-type", "E"),
}


def _entities(created_id: str | None) -> list[dict[str, str]]:
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
    requirement: Requirement | None = g.get("requirement")
    if "record_id" in args and "collection" in args and requirement is not None and requirement.resource_types:
        # a record route needs its collection's FHIR types (its declaration): the first is the record's own
        entities.append({"type": requirement.resource_types[0], "id": args["record_id"]})
    if "consent_id" in args:
        entities.append({"type": "Consent", "id": args["consent_id"]})
    if "flag_id" in args:
        entities.append({"type": "DetectedIssue", "id": args["flag_id"]})
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
    facts = facts_of(request.endpoint)
    if facts is not None and facts.export:
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
