"""MedicationStatement for each concomitant medication (the REMS classes as a kapfhir coding)."""

from __future__ import annotations

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import PRIMARY, Mapped, MappingContext
from mappings.resources._common import ReverseContext, kap_profile, read_record_meta, record_fields, start_record
from service.domain.model import ConcomitantMedication
from service.domain.vocabulary import ConcomitantMedicationClass

_, KIND = PRIMARY[ConcomitantMedication]


def to_medication_statement(ctx: MappingContext, medication: ConcomitantMedication) -> Mapped:
    resource = start_record(ctx, "MedicationStatement", KIND, medication, [kap_profile("medicationstatement")])
    if medication.entered_in_error:
        status = "entered-in-error"
    else:
        status = "completed" if medication.end is not None else "active"
    resource |= {
        "status": status,
        "medicationCodeableConcept": dt.codeable_concept(
            t.CONCOMITANT_CLASS[medication.medication_class], text=medication.name
        ),
        "subject": ctx.patient(),
        "context": ctx.episode_of_care(),
    }
    if medication.start is not None or medication.end is not None:
        resource["effectivePeriod"] = dt.period(medication.start, medication.end)
    if medication.dose_text is not None:
        resource["dosage"] = [{"text": medication.dose_text}]
    return Mapped(resource, KIND, medication.id, medication.version)


def from_medication_statement(rctx: ReverseContext, resource: dict) -> ConcomitantMedication:
    eie = resource["status"] == "entered-in-error"
    concept = resource["medicationCodeableConcept"]
    period = resource.get("effectivePeriod", {})
    return ConcomitantMedication(
        id=rctx.own_id(resource),
        **record_fields(read_record_meta(resource, eie)),
        medication_class=ConcomitantMedicationClass(dt.code_in(concept, t.CS_CONCOMITANT_CLASS)),
        name=concept["text"],
        dose_text=resource["dosage"][0]["text"] if "dosage" in resource else None,
        start=dt.parse_date(period["start"]) if "start" in period else None,
        end=dt.parse_date(period["end"]) if "end" in period else None,
    )
