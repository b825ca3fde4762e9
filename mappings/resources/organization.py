"""Organization: the clinic (US Core Organization: identifier, active, name)."""

from __future__ import annotations

from mappings import terminology as t
from mappings.context import ORGANIZATION, Mapped, MappingContext
from mappings.resources._common import kap_profile, start
from service.domain.model import Clinic


def to_organization(ctx: MappingContext, clinic: Clinic) -> Mapped:
    resource = start(
        ctx, "Organization", ORGANIZATION, clinic.id, [kap_profile("organization"), t.US_CORE_ORGANIZATION]
    )
    resource |= {"active": True, "name": clinic.name}
    return Mapped(resource, ORGANIZATION, clinic.id)


def from_organization(resource: dict) -> Clinic:
    """The clinic's identifier system is the one of the organization identifier, minus its suffix."""
    ident = next(i for i in resource["identifier"] if i.get("system", "").endswith("/" + ORGANIZATION))
    return Clinic(id=ident["value"], name=resource["name"], identifier_system=ident["system"][: -len(ORGANIZATION) - 1])
