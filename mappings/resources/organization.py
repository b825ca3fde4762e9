"""Organization: the clinic (US Core Organization: identifier, active, name), with the healthcare setting's
address and contact and the clinic's time zone when recorded (the Spravato REMS form names them)."""

from __future__ import annotations

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import ORGANIZATION, Mapped, MappingContext
from mappings.resources._common import kap_profile, start
from service.domain.model import Clinic, HealthcareSetting


def to_organization(ctx: MappingContext, clinic: Clinic) -> Mapped:
    resource = start(
        ctx, "Organization", ORGANIZATION, clinic.id, [kap_profile("organization"), t.US_CORE_ORGANIZATION]
    )
    if clinic.time_zone != "UTC":
        resource["extension"].append(dt.extension(t.EXT_TIME_ZONE, valueCode=clinic.time_zone))
    resource |= {"active": True, "name": clinic.name}
    setting = clinic.setting
    if setting is not None:
        telecom = [{"system": "phone", "value": setting.phone, "use": "work"}] if setting.phone else []
        telecom += [{"system": "email", "value": setting.email, "use": "work"}] if setting.email else []
        if telecom:
            resource["telecom"] = telecom
        address = {
            "use": "work",
            "line": [line for line in (setting.address_line_1, setting.address_line_2) if line],
            "city": setting.city,
            "state": setting.state,
            "postalCode": setting.postal_code,
        }
        address = {k: v for k, v in address.items() if v}
        if len(address) > 1:
            resource["address"] = [address]
    return Mapped(resource, ORGANIZATION, clinic.id)


def from_organization(resource: dict) -> Clinic:
    """The clinic's identifier system is the one of the organization identifier, minus its suffix."""
    ident = next(i for i in resource["identifier"] if i.get("system", "").endswith("/" + ORGANIZATION))
    zone = dt.find_extension(resource, t.EXT_TIME_ZONE)
    telecom = {c.get("system"): c.get("value") for c in resource.get("telecom", [])}
    address = (resource.get("address") or [{}])[0]
    lines = address.get("line", [])
    setting = None
    if telecom or address:
        setting = HealthcareSetting(
            address_line_1=lines[0] if lines else None,
            address_line_2=lines[1] if len(lines) > 1 else None,
            city=address.get("city"),
            state=address.get("state"),
            postal_code=address.get("postalCode"),
            phone=telecom.get("phone"),
            email=telecom.get("email"),
        )
    return Clinic(
        id=ident["value"],
        name=resource["name"],
        identifier_system=ident["system"][: -len(ORGANIZATION) - 1],
        time_zone=zone["valueCode"] if zone else "UTC",
        setting=setting,
    )
