"""Shared skeleton of every emitted resource and the reverse-mapping context."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import KINDS_WITH_SUFFIX, MappingContext, record_metadata
from service.domain.model import Record

SINGLE_IDENTIFIER = frozenset({"QuestionnaireResponse", "AdverseEvent"})  # identifier 0..1 in R4


def identifiers(resource: dict) -> list[dict]:
    found = resource.get("identifier", [])
    return [found] if isinstance(found, dict) else found


class MappingRefusedError(ValueError):
    """An inbound resource the domain cannot take; ``expression`` names the element (FHIRPath)."""

    def __init__(self, expression: str, reason: str) -> None:
        super().__init__(f"{expression}: {reason}")
        self.expression = expression
        self.reason = reason


def start(
    ctx: MappingContext,
    resource_type: str,
    kind: str,
    value: str,
    profiles: list[str],
    *,
    version: int = 1,
    recorded_at: datetime | None = None,
    updated_at: datetime | None = None,
    entered_in_error: bool = False,
    extensions: list[dict] | None = None,
) -> dict:
    resource = {
        "resourceType": resource_type,
        "meta": ctx.meta(profiles, updated_at),
        "extension": [record_metadata(version, recorded_at, entered_in_error), *(extensions or [])],
        "identifier": ctx.identifier(kind, value)
        if resource_type in SINGLE_IDENTIFIER
        else [ctx.identifier(kind, value)],
    }
    return resource


def start_record(
    ctx: MappingContext,
    resource_type: str,
    kind: str,
    record: Record,
    profiles: list[str],
    value: str | None = None,
    extensions: list[dict] | None = None,
) -> dict:
    return start(
        ctx,
        resource_type,
        kind,
        value or record.id,
        profiles,
        version=record.version,
        recorded_at=record.recorded_at,
        updated_at=record.updated_at,
        entered_in_error=record.entered_in_error,
        extensions=extensions,
    )


def kap_profile(resource_kind: str) -> str:
    return t.profile(f"kap-{resource_kind}")


# --- reverse ----------------------------------------------------------------------------------------------


@dataclass
class ReverseContext:
    """Index of a bundle for the reverse mapping: business ids by fullUrl, resources by fullUrl."""

    base: str
    by_url: dict[str, dict] = field(default_factory=dict)
    local_id_by_url: dict[str, str] = field(default_factory=dict)

    def kind_of(self, resource: dict) -> tuple[str, str] | None:
        for ident in identifiers(resource):
            system = ident.get("system", "")
            if system.startswith(self.base + "/"):
                return system[len(self.base) + 1 :], ident.get("value", "")
        return None

    def own_id(self, resource: dict) -> str:
        """The local id: our business identifier, else (an EHR's resource) its logical id."""
        found = self.kind_of(resource)
        if found:
            return found[1]
        if not resource.get("id"):
            raise MappingRefusedError(
                f"{resource.get('resourceType', 'Resource')}.identifier", "no identifier and no id"
            )
        return resource["id"]

    def index(self, full_url: str, resource: dict) -> None:
        self.by_url[full_url] = resource
        found = self.kind_of(resource)
        if found:
            kind, value = found
            self.local_id_by_url[full_url] = value.rsplit(".", 1)[0] if kind in KINDS_WITH_SUFFIX else value

    def local_id(self, ref: dict | None) -> str | None:
        if not ref:
            return None
        url = ref.get("reference")
        if url is not None:
            if url in self.local_id_by_url:
                return self.local_id_by_url[url]
            return url.rsplit("/", 1)[-1]
        ident = ref.get("identifier")
        return ident.get("value") if ident else None

    def resolve(self, ref: dict | None, container: dict | None = None) -> dict | None:
        if not ref or "reference" not in ref:
            return None
        url = ref["reference"]
        if url.startswith("#") and container is not None:
            return next((c for c in container.get("contained", ()) if c.get("id") == url[1:]), None)
        return self.by_url.get(url)


@dataclass(frozen=True)
class RecordMeta:
    version: int = 1
    recorded_at: datetime | None = None
    updated_at: datetime | None = None
    entered_in_error: bool = False


def read_record_meta(resource: dict, status_entered_in_error: bool = False) -> RecordMeta:
    ext = dt.find_extension(resource, t.EXT_RECORD)
    version, recorded, eie = 1, None, status_entered_in_error
    if ext:
        for part in ext.get("extension", ()):
            if part["url"] == "version":
                version = part["valueInteger"]
            elif part["url"] == "recorded":
                recorded = dt.parse_datetime(part["valueDateTime"])
            elif part["url"] == "enteredInError":
                eie = part["valueBoolean"]
    updated = resource.get("meta", {}).get("lastUpdated")
    return RecordMeta(version, recorded, dt.parse_datetime(updated) if updated else None, eie)


def record_fields(meta: RecordMeta) -> dict:
    return {
        "version": meta.version,
        "recorded_at": meta.recorded_at,
        "updated_at": meta.updated_at,
        "entered_in_error": meta.entered_in_error,
    }


def sub_extensions(ext: dict) -> dict[str, dict]:
    return {part["url"]: part for part in ext.get("extension", ())}
