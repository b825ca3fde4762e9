"""Practitioner (US Core Practitioner: identifier, name; NPI when known). KAP roles in a kapfhir extension."""

from __future__ import annotations

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import PRACTITIONER, Mapped, MappingContext
from mappings.resources._common import RecordMeta, ReverseContext, kap_profile, read_record_meta, start
from mappings.resources.patient import from_human_name, human_name
from service.domain.model import Practitioner
from service.domain.vocabulary import PractitionerRole


def to_practitioner(ctx: MappingContext, practitioner: Practitioner) -> Mapped:
    roles = [dt.extension(t.EXT_PRACTITIONER_ROLE, valueCoding=t.PRACTITIONER_ROLE[r]) for r in practitioner.roles]
    resource = start(
        ctx,
        "Practitioner",
        PRACTITIONER,
        practitioner.id,
        [kap_profile("practitioner"), t.US_CORE_PRACTITIONER],
        version=practitioner.version,
        recorded_at=practitioner.recorded_at,
        updated_at=practitioner.updated_at,
        extensions=roles,
    )
    if practitioner.npi:
        resource["identifier"].append(dt.identifier(t.NPI, practitioner.npi))
    resource["name"] = [human_name(practitioner.name)]
    return Mapped(resource, PRACTITIONER, practitioner.id, practitioner.version)


def from_practitioner(rctx: ReverseContext, resource: dict) -> Practitioner:
    npi = next((i["value"] for i in resource.get("identifier", ()) if i.get("system") == t.NPI), None)
    meta = read_record_meta(resource) if rctx.kind_of(resource) else RecordMeta()
    return Practitioner(
        id=rctx.own_id(resource),
        name=from_human_name(resource.get("name"), "Practitioner"),
        npi=npi,
        roles=[
            PractitionerRole(e["valueCoding"]["code"]) for e in dt.find_extensions(resource, t.EXT_PRACTITIONER_ROLE)
        ],
        version=meta.version,
        recorded_at=meta.recorded_at,
        updated_at=meta.updated_at,
    )
