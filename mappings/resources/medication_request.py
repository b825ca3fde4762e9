"""MedicationRequest for the dosing order, with the kapfhir off-label-use extension."""

from __future__ import annotations

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import PRIMARY, Mapped, MappingContext
from mappings.resources._common import (
    MappingRefusedError,
    ReverseContext,
    kap_profile,
    read_record_meta,
    record_fields,
    start_record,
    sub_extensions,
)
from service.domain import rules
from service.domain.episode import Episode
from service.domain.model import DosingOrder
from service.domain.vocabulary import DoseUnit, Medication, Route

_, KIND = PRIMARY[DosingOrder]
_ROUTE_OF = {c["code"]: r for r, c in t.ROUTE.items()}


def off_label_extension(is_off_label: bool, reason: str | None) -> dict:
    parts = [dt.extension("isOffLabelUse", valueBoolean=is_off_label)]
    if reason is not None:
        parts.append(dt.extension("reason", valueCodeableConcept=dt.codeable_concept(text=reason)))
    return dt.complex_extension(t.EXT_OFF_LABEL, parts)


def read_off_label(resource: dict) -> tuple[bool | None, str | None]:
    ext = dt.find_extension(resource, t.EXT_OFF_LABEL)
    if not ext:
        return None, None
    parts = sub_extensions(ext)
    reason = parts.get("reason", {}).get("valueCodeableConcept", {}).get("text")
    return parts["isOffLabelUse"]["valueBoolean"], reason


def medication_concept(medication: Medication, *extra: dict) -> dict:
    return dt.codeable_concept(*t.MEDICATION[medication], *extra)


def read_medication(concept: dict, expression: str = "MedicationRequest.medicationCodeableConcept") -> Medication:
    """Our local code, else the standard codings we send (SNOMED CT / RxNorm)."""
    local = dt.code_in(concept, t.CS_MEDICATION)
    if local:
        return Medication(local)
    for medication, codings in t.MEDICATION.items():
        standard = [(c["system"], c["code"]) for c in codings[1:]]
        if any((c.get("system"), c.get("code")) in standard for c in concept.get("coding", ())):
            return medication
    raise MappingRefusedError(f"{expression}.coding", "not a ketamine or esketamine code kapfhir knows")


def to_medication_request(ctx: MappingContext, episode: Episode, order: DosingOrder) -> Mapped:
    off_label = rules.is_off_label(order, episode)
    resource = start_record(
        ctx,
        "MedicationRequest",
        KIND,
        order,
        [kap_profile("medicationrequest")],
        extensions=[off_label_extension(off_label, order.off_label_reason)],
    )
    unit = str(order.dose_unit)
    resource |= {
        "status": "entered-in-error" if order.entered_in_error else "active",
        "intent": "order",
        "medicationCodeableConcept": medication_concept(order.medication),
        "subject": ctx.patient(),
        "authoredOn": dt.instant(order.ordered_at),
        "requester": ctx.practitioner(order.prescriber_id),
        "reasonReference": ctx.conditions(),
        "dosageInstruction": [
            {
                "text": (
                    f"{order.dose_value:g} {unit} {order.route}, {order.frequency}, {order.number_of_sessions} sessions"
                ),
                "timing": {"repeat": {"count": order.number_of_sessions}, "code": {"text": order.frequency}},
                "route": dt.codeable_concept(t.ROUTE[order.route]),
                "doseAndRate": [{"doseQuantity": dt.quantity(order.dose_value, unit)}],
            }
        ],
    }
    if not resource["reasonReference"]:
        del resource["reasonReference"]
    return Mapped(resource, KIND, order.id, order.version)


def from_medication_request(rctx: ReverseContext, resource: dict) -> DosingOrder:
    eie = resource["status"] == "entered-in-error"
    dosage = resource["dosageInstruction"][0]
    dose = dosage["doseAndRate"][0]["doseQuantity"]
    _, reason = read_off_label(resource)
    return DosingOrder(
        id=rctx.own_id(resource),
        **record_fields(read_record_meta(resource, eie)),
        medication=read_medication(resource["medicationCodeableConcept"]),
        route=Route(_ROUTE_OF[dosage["route"]["coding"][0]["code"]]),
        dose_value=dose["value"],
        dose_unit=DoseUnit(dose["code"]),
        frequency=dosage["timing"]["code"]["text"],
        number_of_sessions=dosage["timing"]["repeat"]["count"],
        prescriber_id=rctx.local_id(resource["requester"]),
        ordered_at=dt.parse_datetime(resource["authoredOn"]),
        off_label_reason=reason,
    )
