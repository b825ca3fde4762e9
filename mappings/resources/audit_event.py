"""AuditEvent of one recorded access (the audit trail served read-only under /fhir/AuditEvent)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from mappings import datatypes as dt
from mappings import terminology as t

# R4 restful-interaction codes; any other subtype (a PDF print, a REMS sending) is one of kapfhir's own.
RESTFUL_INTERACTIONS = frozenset(
    {
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
)
_TYPE = {"rest": t.AUDIT_TYPE_REST, "export": t.AUDIT_TYPE_EXPORT}


class AuditRecord(Protocol):
    """What the audit log stores of one access (service.adapters.audit rows have these attributes)."""

    id: str
    recorded: datetime
    type: str
    subtype: str
    action: str
    outcome: str
    client_id: str | None
    network_address: str | None
    entity: list[Mapping[str, Any]] | None


def to_audit_event(record: AuditRecord) -> dict:
    subtype_system = t.RESTFUL_INTERACTION if record.subtype in RESTFUL_INTERACTIONS else t.CS_AUDIT_SUBTYPE
    agent: dict[str, Any] = {"requestor": True}
    if record.client_id:
        agent["who"] = {"identifier": dt.identifier(t.CLIENT_ID_SYSTEM, record.client_id)}
    if record.network_address:
        agent["network"] = {"address": record.network_address, "type": "2"}  # 2 = IP address
    recorded = dt.utc_instant(record.recorded)
    return {
        "resourceType": "AuditEvent",
        "id": record.id,
        "meta": {"versionId": "1", "lastUpdated": recorded},
        "type": dict(_TYPE.get(record.type, t.AUDIT_TYPE_REST)),
        "subtype": [{"system": subtype_system, "code": record.subtype}],
        "action": record.action,
        "recorded": recorded,
        "outcome": record.outcome,
        "agent": [agent],
        "source": {"observer": {"display": "kapfhir"}, "type": [dict(t.SOURCE_TYPE_APPLICATION_SERVER)]},
        "entity": [
            {"what": {"type": e.get("type"), "identifier": {"value": e.get("id")}}} for e in (record.entity or [])
        ],
    }
