"""Patient (US Core Patient 6.1.0 must-supports: identifier, name, gender, birthDate); meta.lastUpdated is the stored
updated_at, the first-recorded time rides in the record-metadata extension."""

from __future__ import annotations

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import PATIENT, Mapped, MappingContext
from mappings.resources._common import (
    MappingRefusedError,
    RecordMeta,
    ReverseContext,
    kap_profile,
    read_record_meta,
    start,
)
from service.domain.model import HumanName, Identifier, Patient
from service.domain.vocabulary import AdministrativeGender


def human_name(name: HumanName) -> dict:
    return {"family": name.family, **({"given": list(name.given)} if name.given else {})}


def from_human_name(names: list[dict] | None, expression: str) -> HumanName:
    if not names or not names[0].get("family"):
        raise MappingRefusedError(f"{expression}.name[0].family", "a family name is required")
    return HumanName(family=names[0]["family"], given=list(names[0].get("given", [])))


def to_patient(ctx: MappingContext, patient: Patient) -> Mapped:
    resource = start(
        ctx,
        "Patient",
        PATIENT,
        patient.id,
        [kap_profile("patient"), t.US_CORE_PATIENT],
        version=patient.version,
        recorded_at=patient.recorded_at,
        updated_at=patient.updated_at,
    )
    resource["identifier"].append(dt.identifier(patient.mrn.system, patient.mrn.value))
    resource |= {
        "name": [human_name(patient.name)],
        "gender": str(patient.gender),
        "birthDate": dt.day(patient.birth_date),
    }
    return Mapped(resource, PATIENT, patient.id, patient.version)


def from_patient(rctx: ReverseContext | None, resource: dict) -> Patient:
    """Our Patient, or an EHR's: the first identifier that is not ours is the MRN."""
    identifiers = resource.get("identifier", [])
    own = rctx.kind_of(resource) if rctx else None
    others = [i for i in identifiers if not (rctx and i.get("system", "").startswith(rctx.base + "/"))]
    if not others or not others[0].get("system") or not others[0].get("value"):
        raise MappingRefusedError("Patient.identifier", "a medical record number (system and value) is required")
    if not resource.get("birthDate"):
        raise MappingRefusedError("Patient.birthDate", "the birth date is required")
    gender = resource.get("gender")
    if gender not in {g.value for g in AdministrativeGender}:
        raise MappingRefusedError("Patient.gender", f"expected male, female, other or unknown; got {gender!r}")
    meta = read_record_meta(resource) if own else RecordMeta()
    return Patient(
        id=own[1] if own else (resource.get("id") or others[0]["value"]),
        mrn=Identifier(system=others[0]["system"], value=others[0]["value"]),
        name=from_human_name(resource.get("name"), "Patient"),
        birth_date=dt.parse_date(resource["birthDate"]),
        gender=AdministrativeGender(gender),
        version=meta.version,
        recorded_at=meta.recorded_at,
        updated_at=meta.updated_at,
    )
