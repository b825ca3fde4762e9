"""Observations: vital signs (FHIR vital-signs profiles + US Core), body weight, CADSS / MOAA/S, scale scores.

Reading timing (pre-dose, during, post-dose, discharge): every Observation of a reading carries
``effectiveDateTime`` (the clinical time), ``encounter`` (the session) and the kapfhir ``reading-timing``
extension (a Coding an EHR can display and search on via a custom SearchParameter). The core extension
``observation-timeOffset`` only applies to components, so it does not fit (reference §1.7).
Self-reported readings name the Patient as performer.
"""

from __future__ import annotations

from collections.abc import Iterator

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import OUTCOME_SCORE, PRIMARY, Mapped, MappingContext
from mappings.resources._common import (
    MappingRefusedError,
    RecordMeta,
    ReverseContext,
    kap_profile,
    read_record_meta,
    record_fields,
    start_record,
)
from service.domain.model import BodyWeight, MonitoringReading, OutcomeMeasure

_, READING = PRIMARY[MonitoringReading]
_, WEIGHT = PRIMARY[BodyWeight]

# suffix, code(s), profiles, value attribute, UCUM unit
_SIMPLE = (
    ("hr", (t.HEART_RATE,), [t.VITALSIGNS_HEART_RATE, t.US_CORE_HEART_RATE], "heart_rate_per_min", "/min"),
    ("spo2", (t.SPO2_PULSE_OX, t.SPO2), [t.VITALSIGNS_OXYGEN, t.US_CORE_PULSE_OX], "spo2_percent", "%"),
    ("rr", (t.RESP_RATE,), [t.VITALSIGNS_RESP_RATE, t.US_CORE_RESP_RATE], "respiratory_rate_per_min", "/min"),
)
_SCORES = (("cadss", t.CADSS_TOTAL, "cadss_total"), ("moaas", t.MOAAS_SCORE, "moaas_score"))


def reading_suffixes(reading: MonitoringReading) -> list[str]:
    suffixes = ["bp"] if reading.systolic_mmhg is not None or reading.diastolic_mmhg is not None else []
    suffixes += [s for s, _, _, attr, _ in _SIMPLE if getattr(reading, attr) is not None]
    suffixes += [s for s, _, attr in _SCORES if getattr(reading, attr) is not None]
    return suffixes or ["none"]


def _status(record) -> str:
    if record.entered_in_error:
        return "entered-in-error"
    return "amended" if record.version > 1 else "final"


def _reading_base(
    ctx: MappingContext, reading: MonitoringReading, suffix: str, profiles: list[str], category: dict, code: dict
) -> dict:
    resource = start_record(
        ctx,
        "Observation",
        READING,
        reading,
        [kap_profile("observation-reading"), *profiles],
        value=f"{reading.id}.{suffix}",
        extensions=[dt.extension(t.EXT_READING_TIMING, valueCoding=t.READING_TIMING[reading.timing])],
    )
    resource |= {
        "status": _status(reading),
        "category": [dt.codeable_concept(category)],
        "code": code,
        "subject": ctx.patient(),
        "encounter": ctx.record(reading.session_id, "Encounter", "session"),
        "effectiveDateTime": dt.instant(reading.taken_at),
    }
    if reading.self_reported:
        resource["performer"] = [ctx.patient()]
    return resource


def _component(code: dict, value: float | None) -> dict:
    component: dict = {"code": dt.codeable_concept(code)}
    if value is None:
        component["dataAbsentReason"] = dt.codeable_concept(t.DATA_ABSENT_UNKNOWN)
    else:
        component["valueQuantity"] = dt.quantity(value, "mm[Hg]", "mmHg")
    return component


def to_reading_observations(ctx: MappingContext, reading: MonitoringReading) -> Iterator[Mapped]:
    for suffix in reading_suffixes(reading):
        if suffix == "bp":
            resource = _reading_base(
                ctx,
                reading,
                suffix,
                [t.VITALSIGNS_BP, t.US_CORE_BP],
                t.CATEGORY_VITAL_SIGNS,
                dt.codeable_concept(t.BP_PANEL),
            )
            resource["component"] = [
                _component(t.SYSTOLIC, reading.systolic_mmhg),
                _component(t.DIASTOLIC, reading.diastolic_mmhg),
            ]
        elif suffix == "none":
            resource = _reading_base(
                ctx, reading, suffix, [], t.CATEGORY_VITAL_SIGNS, dt.codeable_concept(t.READING_WITHOUT_VALUES)
            )
            resource["dataAbsentReason"] = dt.codeable_concept(t.DATA_ABSENT_NOT_PERFORMED)
        elif suffix in ("cadss", "moaas"):
            _, code, attr = next(s for s in _SCORES if s[0] == suffix)
            resource = _reading_base(ctx, reading, suffix, [], t.CATEGORY_SURVEY, dt.codeable_concept(code))
            resource["valueInteger"] = getattr(reading, attr)
        else:
            _, codes, profiles, attr, unit = next(s for s in _SIMPLE if s[0] == suffix)
            resource = _reading_base(
                ctx, reading, suffix, profiles, t.CATEGORY_VITAL_SIGNS, dt.codeable_concept(*codes)
            )
            resource["valueQuantity"] = dt.quantity(getattr(reading, attr), unit)
        yield Mapped(resource, READING, f"{reading.id}.{suffix}", reading.version)


def to_body_weight(ctx: MappingContext, weight: BodyWeight) -> Mapped:
    resource = start_record(
        ctx,
        "Observation",
        WEIGHT,
        weight,
        [kap_profile("observation-body-weight"), t.VITALSIGNS_BODY_WEIGHT, t.US_CORE_BODY_WEIGHT],
    )
    resource |= {
        "status": _status(weight),
        "category": [dt.codeable_concept(t.CATEGORY_VITAL_SIGNS)],
        "code": dt.codeable_concept(t.BODY_WEIGHT),
        "subject": ctx.patient(),
        "effectiveDateTime": dt.instant(weight.measured_at),
        "valueQuantity": dt.quantity(weight.weight_kg, "kg"),
    }
    return Mapped(resource, WEIGHT, weight.id, weight.version)


def _score_base(ctx: MappingContext, measure: OutcomeMeasure, suffix: str, code: dict) -> dict:
    resource = start_record(
        ctx,
        "Observation",
        OUTCOME_SCORE,
        measure,
        [kap_profile("observation-score"), t.US_CORE_SCREENING],
        value=f"{measure.id}.{suffix}",
    )
    resource |= {
        "status": _status(measure),
        "category": [dt.codeable_concept(t.CATEGORY_SURVEY)],
        "code": dt.codeable_concept(code),
        "subject": ctx.patient(),
        "effectiveDateTime": dt.instant(measure.administered_at),
    }
    if measure.session_id is not None:
        resource["encounter"] = ctx.record(measure.session_id, "Encounter", "session")
    resource["derivedFrom"] = [{"reference": ctx.primary_url[measure.id]}]
    return resource


def to_score_observations(ctx: MappingContext, measure: OutcomeMeasure) -> Iterator[Mapped]:
    if measure.total is not None:
        resource = _score_base(ctx, measure, "total", t.TOTAL_SCORE[measure.instrument])
        resource["valueQuantity"] = dt.quantity(measure.total, "{score}", "{score}")
        if measure.severity_band is not None:
            resource["interpretation"] = [
                dt.codeable_concept(t.coding(t.CS_SEVERITY_BAND, measure.severity_band), text=measure.severity_band)
            ]
        yield Mapped(resource, OUTCOME_SCORE, f"{measure.id}.total", measure.version)
    if measure.risk_level is not None:
        resource = _score_base(ctx, measure, "risk", t.CSSRS_RISK_LEVEL)
        resource["valueCodeableConcept"] = dt.codeable_concept(
            t.SUICIDE_RISK[measure.risk_level], text=f"{measure.risk_level} risk"
        )
        yield Mapped(resource, OUTCOME_SCORE, f"{measure.id}.risk", measure.version)


# --- reverse ----------------------------------------------------------------------------------------------

_SIMPLE_ATTR = {
    t.HEART_RATE["code"]: "heart_rate_per_min",
    t.SPO2["code"]: "spo2_percent",
    t.SPO2_PULSE_OX["code"]: "spo2_percent",
    t.RESP_RATE["code"]: "respiratory_rate_per_min",
}
_UNITS = {
    "heart_rate_per_min": "/min",
    "spo2_percent": "%",
    "respiratory_rate_per_min": "/min",
    "systolic_mmhg": "mm[Hg]",
    "diastolic_mmhg": "mm[Hg]",
}


def _quantity_value(quantity: dict, unit: str, expression: str) -> float:
    if quantity.get("code") != unit or quantity.get("system") != t.UCUM:
        raise MappingRefusedError(expression, f"expected UCUM unit {unit!r}; got {quantity.get('code')!r}")
    return quantity["value"]


def reading_values(resource: dict) -> dict:
    """Domain reading fields of one Observation (ours or an EHR's vital sign with the same codes)."""
    codes = {
        c.get("code")
        for c in resource.get("code", {}).get("coding", ())
        if c.get("system") in (t.LOINC, t.CS_OBSERVATION)
    }
    if t.BP_PANEL["code"] in codes:
        values = {}
        for i, component in enumerate(resource.get("component", ())):
            code = dt.code_in(component.get("code"), t.LOINC)
            attr = {t.SYSTOLIC["code"]: "systolic_mmhg", t.DIASTOLIC["code"]: "diastolic_mmhg"}.get(code)
            if attr and "valueQuantity" in component:
                values[attr] = _quantity_value(
                    component["valueQuantity"], "mm[Hg]", f"Observation.component[{i}].valueQuantity"
                )
        return values
    for code in codes:
        if code in _SIMPLE_ATTR:
            attr = _SIMPLE_ATTR[code]
            if "valueQuantity" not in resource:
                return {}
            return {attr: _quantity_value(resource["valueQuantity"], _UNITS[attr], "Observation.valueQuantity")}
        if code == t.CADSS_TOTAL["code"]:
            return {"cadss_total": resource["valueInteger"]}
        if code == t.MOAAS_SCORE["code"]:
            return {"moaas_score": resource["valueInteger"]}
        if code == t.READING_WITHOUT_VALUES["code"]:
            return {}
    raise MappingRefusedError("Observation.code", "not a vital sign, CADSS or MOAA/S code kapfhir reads")


READING_TIMING_OF = {c["code"]: timing for timing, c in t.READING_TIMING.items()}


def from_body_weight(rctx: ReverseContext, resource: dict) -> BodyWeight:
    """Our body weight, or an EHR's (LOINC 29463-7 in kg)."""
    if dt.code_in(resource.get("code"), t.LOINC) != t.BODY_WEIGHT["code"]:
        raise MappingRefusedError("Observation.code", "a body weight (LOINC 29463-7) is expected")
    if "effectiveDateTime" not in resource:
        raise MappingRefusedError("Observation.effectiveDateTime", "the time of the measurement is required")
    eie = resource["status"] == "entered-in-error"
    meta = read_record_meta(resource, eie) if rctx.kind_of(resource) else RecordMeta(entered_in_error=eie)
    return BodyWeight(
        id=rctx.own_id(resource),
        **record_fields(meta),
        measured_at=dt.parse_datetime(resource["effectiveDateTime"]),
        weight_kg=_quantity_value(resource.get("valueQuantity", {}), "kg", "Observation.valueQuantity"),
    )
