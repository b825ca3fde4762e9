"""MedicationAdministration per dose.

- medication: a contained Medication (code, NDC coding when known, batch lot number and expiry)
- context -> session Encounter, request -> MedicationRequest, reasonReference -> Conditions
- performers: administering (function performer) and supervising (function verifier)
- dosage: route (SNOMED CT), dose in mg (UCUM); rateRatio mg per infusion minutes when a duration is known
- supportingInformation -> the body-weight Observation of that weight (contained when none was recorded)
- category outpatient (clinic) / community (home); off-label-use extension (derived by the domain)
- kapfhir controlled-substance-accounting extension: drawn, administered, wasted amounts and waste witness
"""

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
from mappings.resources.medication_request import (
    medication_concept,
    off_label_extension,
    read_medication,
    read_off_label,
)
from service.domain.model import BodyWeight, ControlledSubstanceRecord, DosingRecord
from service.domain.vocabulary import DosingSetting, Route

_, KIND = PRIMARY[DosingRecord]
_ROUTE_OF = {c["code"]: r for r, c in t.ROUTE.items()}
_SETTING_OF = {c["code"]: s for s, c in t.MED_ADMIN_CATEGORY_OF.items()}
_AMOUNTS = (("drawn", "amount_drawn_mg"), ("administered", "amount_administered_mg"), ("wasted", "amount_wasted_mg"))


def _accounting(ctx: MappingContext, cs: ControlledSubstanceRecord) -> dict | None:
    parts = [
        dt.extension(name, valueQuantity=dt.quantity(getattr(cs, attr), "mg"))
        for name, attr in _AMOUNTS
        if getattr(cs, attr) is not None
    ]
    if cs.waste_witness_id is not None:
        parts.append(dt.extension("wasteWitness", valueReference=ctx.practitioner(cs.waste_witness_id)))
    return dt.complex_extension(t.EXT_WASTE, parts) if parts else None


def _medication(dose: DosingRecord) -> dict:
    cs = dose.controlled_substance
    extra = [t.coding(t.NDC, cs.ndc)] if cs.ndc else []
    medication: dict = {"resourceType": "Medication", "id": "med", "code": medication_concept(dose.medication, *extra)}
    batch = {}
    if cs.lot_number is not None:
        batch["lotNumber"] = cs.lot_number
    if cs.expiry is not None:
        batch["expirationDate"] = dt.day(cs.expiry)
    if batch:
        medication["batch"] = batch
    return medication


def weight_observation(ctx: MappingContext, dose: DosingRecord) -> tuple[dict, dict | None]:
    """Reference to the body-weight Observation of the dose's weight, and a contained one if none matches."""
    weights = [w for w in ctx.body_weights if w.weight_kg == dose.weight_kg and not w.entered_in_error]
    before = [w for w in weights if w.measured_at <= dose.start]
    chosen: BodyWeight | None = (
        max(before, key=lambda w: w.measured_at) if before else (weights[0] if weights else None)
    )
    if chosen is not None:
        return {"reference": ctx.primary_url[chosen.id]}, None
    contained = {
        "resourceType": "Observation",
        "id": "weight",
        "status": "final",
        "category": [dt.codeable_concept(t.CATEGORY_VITAL_SIGNS)],
        "code": dt.codeable_concept(t.BODY_WEIGHT),
        "subject": ctx.patient(),
        "effectiveDateTime": dt.instant(dose.start),
        "valueQuantity": dt.quantity(dose.weight_kg, "kg"),
    }
    return {"reference": "#weight"}, contained


def to_medication_administration(ctx: MappingContext, dose: DosingRecord) -> Mapped:
    extensions = [off_label_extension(dose.off_label, None)]
    accounting = _accounting(ctx, dose.controlled_substance)
    if accounting is not None:
        extensions.append(accounting)
    if dose.override_reason is not None:
        extensions.append(dt.extension(t.EXT_OVERRIDE_REASON, valueString=dose.override_reason))
    resource = start_record(
        ctx, "MedicationAdministration", KIND, dose, [kap_profile("medicationadministration")], extensions=extensions
    )
    contained = [_medication(dose)]
    supporting = []
    if dose.weight_kg is not None:
        ref, weight = weight_observation(ctx, dose)
        supporting.append(ref)
        if weight is not None:
            contained.append(weight)
    resource = {
        "resourceType": resource.pop("resourceType"),
        "meta": resource.pop("meta"),
        "contained": contained,
        **resource,
    }
    if dose.entered_in_error:
        status = "entered-in-error"
    else:
        status = "completed" if dose.end is not None else "in-progress"
    performers = []
    if dose.administered_by_id is not None:
        performers.append(
            {"function": dt.codeable_concept(t.FUNCTION_PERFORMER), "actor": ctx.practitioner(dose.administered_by_id)}
        )
    if dose.supervised_by_id is not None:
        performers.append(
            {"function": dt.codeable_concept(t.FUNCTION_VERIFIER), "actor": ctx.practitioner(dose.supervised_by_id)}
        )
    dosage: dict = {"route": dt.codeable_concept(t.ROUTE[dose.route]), "dose": dt.quantity(dose.dose_mg, "mg")}
    if dose.infusion_duration_min is not None:
        dosage["rateRatio"] = {
            "numerator": dt.quantity(dose.dose_mg, "mg"),
            "denominator": dt.quantity(dose.infusion_duration_min, "min"),
        }
    resource |= {
        "status": status,
        "category": dt.codeable_concept(t.MED_ADMIN_CATEGORY_OF[dose.setting]),
        "medicationReference": {"reference": "#med"},
        "subject": ctx.patient(),
        "context": ctx.record(dose.session_id, "Encounter", "session"),
        "supportingInformation": supporting,
        "effectivePeriod": dt.period(dose.start, dose.end),
        "performer": performers,
        "reasonReference": ctx.conditions(),
        "dosage": dosage,
    }
    if dose.order_id is not None:
        resource["request"] = ctx.record(dose.order_id, "MedicationRequest", "dosing-order")
    for key in ("supportingInformation", "performer", "reasonReference"):
        if not resource[key]:
            del resource[key]
    return Mapped(resource, KIND, dose.id, dose.version)


def from_medication_administration(rctx: ReverseContext, resource: dict) -> DosingRecord:
    """Our MedicationAdministration, or an EHR's with the same codes."""
    _require_kap_dose(resource)
    eie = resource["status"] == "entered-in-error"
    medication = rctx.resolve(resource.get("medicationReference"), resource)
    concept = medication["code"] if medication else resource.get("medicationCodeableConcept", {})
    functions = {p["function"]["coding"][0]["code"]: rctx.local_id(p["actor"]) for p in resource.get("performer", ())}
    dosage = resource["dosage"]
    period = resource["effectivePeriod"]
    off_label, _ = read_off_label(resource)
    override = dt.find_extension(resource, t.EXT_OVERRIDE_REASON)
    return DosingRecord(
        id=rctx.own_id(resource),
        **record_fields(read_record_meta(resource, eie)),
        session_id=rctx.local_id(resource["context"]),
        order_id=rctx.local_id(resource.get("request")),
        medication=read_medication(concept, "MedicationAdministration.medication"),
        route=Route(_ROUTE_OF[dosage["route"]["coding"][0]["code"]]),
        setting=_SETTING_OF.get(dt.code_in(resource.get("category"), t.MED_ADMIN_CATEGORY), DosingSetting.CLINIC),
        dose_mg=dosage["dose"]["value"],
        weight_kg=_body_weight_kg(rctx, resource),
        infusion_duration_min=dosage["rateRatio"]["denominator"]["value"] if "rateRatio" in dosage else None,
        start=dt.parse_datetime(period["start"]),
        end=dt.parse_datetime(period["end"]) if "end" in period else None,
        administered_by_id=functions.get("performer"),
        supervised_by_id=functions.get("verifier"),
        override_reason=override["valueString"] if override else None,
        controlled_substance=_controlled_substance(rctx, resource, medication, concept),
        off_label=True if off_label is None else off_label,
    )


def _require_kap_dose(resource: dict) -> None:
    """What a KAP dose cannot be recorded without: the session, a dose in UCUM mg by a known SNOMED CT route, and
    when it was given."""
    for required in ("context", "dosage", "effectivePeriod"):
        if required not in resource:
            raise MappingRefusedError(f"MedicationAdministration.{required}", "required to record a KAP dose")
    if "dose" not in resource["dosage"] or resource["dosage"]["dose"].get("code") != "mg":
        raise MappingRefusedError("MedicationAdministration.dosage.dose", "the dose must be a UCUM mg quantity")
    if "route" not in resource["dosage"] or resource["dosage"]["route"]["coding"][0]["code"] not in _ROUTE_OF:
        raise MappingRefusedError(
            "MedicationAdministration.dosage.route", "a SNOMED CT route kapfhir knows is required"
        )


def _controlled_substance(
    rctx: ReverseContext, resource: dict, medication: dict | None, concept: dict
) -> ControlledSubstanceRecord:
    """NDC, lot and expiry of the medication's batch, and the waste extension's amounts and witness."""
    batch = (medication or {}).get("batch", {})
    parts = sub_extensions(dt.find_extension(resource, t.EXT_WASTE) or {})
    amounts = {attr: parts[name]["valueQuantity"]["value"] for name, attr in _AMOUNTS if name in parts}
    return ControlledSubstanceRecord(
        ndc=dt.code_in(concept, t.NDC),
        lot_number=batch.get("lotNumber"),
        expiry=dt.parse_date(batch["expirationDate"]) if "expirationDate" in batch else None,
        waste_witness_id=rctx.local_id(parts["wasteWitness"]["valueReference"]) if "wasteWitness" in parts else None,
        **amounts,
    )


def _body_weight_kg(rctx: ReverseContext, resource: dict) -> float | None:
    """The value of the last body-weight Observation (LOINC 29463-7) among the supporting information."""
    weight = None
    for ref in resource.get("supportingInformation", ()):
        observation = rctx.resolve(ref, resource)
        if observation and dt.code_in(observation.get("code"), t.LOINC) == t.BODY_WEIGHT["code"]:
            weight = observation["valueQuantity"]["value"]
    return weight
