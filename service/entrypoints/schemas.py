"""marshmallow 4 schemas of the REST API: they parse requests (422 with field errors) and render responses.

Times must carry a UTC offset (``AwareDateTime``): a clinical time without one is ambiguous and refused.
Fields marked dump_only are derived or kept by the service; a request that sends them is refused.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates, validates_schema

from service.domain.limits import MAX_IDENTIFIER_SYSTEM, MAX_IDENTIFIER_VALUE, MAX_NAME_PART
from service.domain.vocabulary import (
    AdministrativeGender,
    ConcomitantMedicationClass,
    DoseUnit,
    DosingSetting,
    EpisodeStatus,
    FlagSeverity,
    FlagStatus,
    IndicationKind,
    Instrument,
    Medication,
    Modality,
    Phase,
    PractitionerRole,
    ReadingTiming,
    RemsChannel,
    Route,
    SessionKind,
    SessionStatus,
    SideEffectKind,
    SideEffectSeverity,
    SuicideRiskLevel,
)

URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
# ICD-10-CM: letter, digit, alphanumeric, then an optional dot and up to four characters.
ICD10CM = re.compile(r"^[A-TV-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")
SNOMED = re.compile(r"^[1-9][0-9]{5,17}$")
NPI = re.compile(r"^[0-9]{10}$")
ID = validate.Length(min=1, max=64)


def Enum(enum: type, **kwargs: Any) -> fields.Enum:  # noqa: N802 - reads like a field class
    return fields.Enum(enum, by_value=True, **kwargs)


# Said so that a person can fix the request: the offset is what is missing.
TIME_ERRORS = {
    "invalid": "Not a valid time: use ISO 8601 with a UTC offset, e.g. 2026-03-10T09:00:00-05:00.",
    "invalid_awareness": "Has no UTC offset: add a UTC offset, e.g. 2026-03-10T09:00:00-05:00 (Z for UTC).",
}


def Time(**kwargs: Any) -> fields.AwareDateTime:  # noqa: N802
    return fields.AwareDateTime(format="iso", error_messages=TIME_ERRORS, **kwargs)


class StrictFloat(fields.Float):
    """A JSON number, not a numeric string and not a boolean."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictInteger(fields.Integer):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


def Bool(**kwargs: Any) -> fields.Boolean:  # noqa: N802
    """JSON true or false only (marshmallow would also take 1, "yes", ...)."""
    return fields.Boolean(truthy={True}, falsy={False}, **kwargs)


def Text(max_length: int = 2000, **kwargs: Any) -> fields.String:  # noqa: N802
    return fields.String(validate=validate.Length(min=1, max=max_length), **kwargs)


def npi_check_digit_ok(npi: str) -> bool:
    """NPI check digit: Luhn over the prefix 80840 + the first nine digits (CMS NPI standard)."""
    digits = [int(c) for c in "80840" + npi]
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2 == 1:
            digit *= 2
            digit = digit - 9 if digit > 9 else digit
        total += digit
    return total % 10 == 0


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class HumanNameSchema(StrictSchema):
    family = Text(MAX_NAME_PART, required=True)
    given = fields.List(Text(MAX_NAME_PART), load_default=list)


class IdentifierSchema(StrictSchema):
    system = fields.String(
        required=True, validate=[validate.Length(max=MAX_IDENTIFIER_SYSTEM), validate.Regexp(URI, error="not a URI")]
    )
    value = Text(MAX_IDENTIFIER_VALUE, required=True)


class RecordSchema(StrictSchema):
    """Bookkeeping every correctable record shows."""

    id = fields.String(dump_only=True)
    version = StrictInteger(dump_only=True)
    entered_in_error = Bool(dump_only=True)
    recorded_at = Time(dump_only=True)
    updated_at = Time(dump_only=True)


class PractitionerSchema(StrictSchema):
    id = fields.String(dump_only=True)
    version = StrictInteger(dump_only=True)
    recorded_at = Time(dump_only=True)
    updated_at = Time(dump_only=True)
    name = fields.Nested(HumanNameSchema, required=True)
    npi = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(NPI, error="an NPI has 10 digits"))
    roles = fields.List(Enum(PractitionerRole), required=True, validate=validate.Length(min=1))

    @validates("npi")
    def _npi(self, value: str | None, **_: Any) -> None:
        if value and NPI.match(value) and not npi_check_digit_ok(value):
            raise ValidationError("the NPI check digit is wrong")


class PatientSchema(StrictSchema):
    id = fields.String(dump_only=True)
    version = StrictInteger(dump_only=True)
    recorded_at = Time(dump_only=True)
    updated_at = Time(dump_only=True)
    mrn = fields.Nested(IdentifierSchema, required=True)
    name = fields.Nested(HumanNameSchema, required=True)
    birth_date = fields.Date(required=True)
    gender = Enum(AdministrativeGender, required=True)

    @validates("birth_date")
    def _birth_date(self, value: date, **_: Any) -> None:
        if value > date.today():
            raise ValidationError("birth date is in the future")
        if value.year < 1900:
            raise ValidationError("birth date before 1900")


class AmendPatientSchema(PatientSchema):
    amendment_reason = Text(1000, required=True, load_only=True)


class BodyWeightSchema(RecordSchema):
    measured_at = Time(required=True)
    weight_kg = StrictFloat(required=True, validate=validate.Range(min=2, max=400))


class PrivacyConsentSchema(RecordSchema):
    """Permission to share the patient's records with one organization (FHIR Consent, scope patient-privacy)."""

    recipient_name = Text(200, required=True)
    recipient_identifier = fields.Nested(
        IdentifierSchema, required=True, metadata={"description": "the receiving organization's identifier"}
    )
    signed_at = Time(required=True)
    valid_from = Time(load_default=None, allow_none=True)
    valid_until = Time(load_default=None, allow_none=True)
    includes_substance_use_records = Bool(
        load_default=False, metadata={"description": "explicit consent to share substance-use records (42 CFR Part 2)"}
    )
    withdrawn_at = Time(dump_only=True)
    withdrawal_reason = fields.String(dump_only=True)


class IndicationSchema(StrictSchema):
    kind = Enum(IndicationKind, required=True)
    icd10cm = fields.String(required=True, validate=validate.Regexp(ICD10CM, error="not an ICD-10-CM code"))
    snomed = fields.String(
        load_default=None, allow_none=True, validate=validate.Regexp(SNOMED, error="not a SNOMED CT id")
    )
    display = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    treatment_resistant = Bool(load_default=False)
    acute_suicidal_ideation = Bool(load_default=False)

    @validates_schema
    def _depression_only(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("kind") is not IndicationKind.DEPRESSION:
            for flag in ("treatment_resistant", "acute_suicidal_ideation"):
                if data.get(flag):
                    raise ValidationError(f"{flag} applies to a depression indication only", flag)


class CareTeamMemberSchema(StrictSchema):
    practitioner_id = fields.String(required=True, validate=ID)
    role = Enum(PractitionerRole, required=True)


class PhaseTransitionSchema(StrictSchema):
    from_phase = Enum(Phase, dump_only=True)
    to_phase = Enum(Phase, required=True)
    at = Time(load_default=None)
    actor = fields.String(dump_only=True)
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=1000))


class EpisodeCreateSchema(StrictSchema):
    patient_id = fields.String(required=True, validate=ID)
    indications = fields.List(fields.Nested(IndicationSchema), required=True, validate=validate.Length(min=1))
    care_team = fields.List(fields.Nested(CareTeamMemberSchema), load_default=list)
    period_start = Time(required=True)
    status = Enum(
        EpisodeStatus,
        load_default=EpisodeStatus.ACTIVE,
        validate=validate.OneOf([EpisodeStatus.PLANNED, EpisodeStatus.ACTIVE]),
    )


class EpisodeAmendSchema(StrictSchema):
    indications = fields.List(fields.Nested(IndicationSchema), required=True, validate=validate.Length(min=1))
    care_team = fields.List(fields.Nested(CareTeamMemberSchema), required=True)
    status = Enum(EpisodeStatus, required=True)
    amendment_reason = Text(1000, required=True)


class EpisodeSummarySchema(Schema):
    id = fields.String()
    patient_id = fields.String()
    indications = fields.List(fields.Nested(IndicationSchema))
    care_team = fields.List(fields.Nested(CareTeamMemberSchema))
    period_start = Time()
    period_end = Time(allow_none=True)
    status = Enum(EpisodeStatus)
    phase = Enum(Phase)
    phase_history = fields.List(fields.Nested(PhaseTransitionSchema))
    discontinuation_reason = fields.String(allow_none=True)
    version = StrictInteger()
    created_at = Time()
    updated_at = Time()


class ConsentSchema(RecordSchema):
    form_url = fields.Url(required=True, require_tld=False, validate=validate.Length(max=500))
    form_version = Text(50, required=True)
    signed_at = Time(required=True)
    signed_by_patient = Bool(load_default=True)
    witness_practitioner_id = fields.String(load_default=None, allow_none=True, validate=ID)
    witness_name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    covers_ketamine_for_psychotherapy = Bool(load_default=True)
    off_label_use_acknowledged = Bool(required=True)
    routes_covered = fields.List(Enum(Route), required=True, validate=validate.Length(min=1))
    valid_from = Time(load_default=None, allow_none=True)
    valid_until = Time(load_default=None, allow_none=True)
    withdrawn_at = Time(dump_only=True)
    withdrawal_reason = fields.String(dump_only=True)


class ConsentWithdrawalSchema(StrictSchema):
    at = Time(required=True)
    reason = Text(1000, required=True)


class DosingOrderSchema(RecordSchema):
    medication = Enum(Medication, required=True)
    route = Enum(Route, required=True)
    dose_value = StrictFloat(required=True, validate=validate.Range(min=0, min_inclusive=False, max=2000))
    dose_unit = Enum(DoseUnit, required=True)
    frequency = Text(200, required=True)
    number_of_sessions = StrictInteger(required=True, validate=validate.Range(min=1, max=200))
    prescriber_id = fields.String(required=True, validate=ID)
    ordered_at = Time(required=True)
    off_label_reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=1000))


class ControlledSubstanceSchema(StrictSchema):
    ndc = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(r"^[0-9]{4,5}-[0-9]{3,4}-[0-9]{1,2}$", error="not an NDC (e.g. 50458-028-02)"),
    )
    lot_number = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=50))
    expiry = fields.Date(load_default=None, allow_none=True)
    amount_drawn_mg = StrictFloat(load_default=None, allow_none=True, validate=validate.Range(min=0))
    amount_administered_mg = StrictFloat(load_default=None, allow_none=True, validate=validate.Range(min=0))
    amount_wasted_mg = StrictFloat(load_default=None, allow_none=True, validate=validate.Range(min=0))
    waste_witness_id = fields.String(load_default=None, allow_none=True, validate=ID)

    @validates_schema
    def _balance(self, data: dict[str, Any], **_: Any) -> None:
        drawn, given, wasted = (data.get(k) for k in ("amount_drawn_mg", "amount_administered_mg", "amount_wasted_mg"))
        if drawn is not None and given is not None and given > drawn + 1e-6:
            raise ValidationError("more was administered than drawn", "amount_administered_mg")
        if None not in (drawn, given, wasted) and abs(drawn - given - wasted) > 0.01:
            raise ValidationError(
                f"drawn {drawn} mg is not administered {given} mg + wasted {wasted} mg", "amount_wasted_mg"
            )


class DoseSchema(RecordSchema):
    session_id = fields.String(validate=ID)
    order_id = fields.String(load_default=None, allow_none=True, validate=ID)
    medication = Enum(Medication, required=True)
    route = Enum(Route, required=True)
    setting = Enum(DosingSetting, load_default=DosingSetting.CLINIC)
    dose_mg = StrictFloat(required=True, validate=validate.Range(min=0, min_inclusive=False, max=2000))
    weight_kg = StrictFloat(load_default=None, allow_none=True, validate=validate.Range(min=2, max=400))
    infusion_duration_min = StrictFloat(
        load_default=None, allow_none=True, validate=validate.Range(min=0, min_inclusive=False, max=600)
    )
    start = Time(required=True)
    end = Time(load_default=None, allow_none=True)
    administered_by_id = fields.String(load_default=None, allow_none=True, validate=ID)
    supervised_by_id = fields.String(load_default=None, allow_none=True, validate=ID)
    override_reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=1000))
    controlled_substance = fields.Nested(ControlledSubstanceSchema, load_default=dict)
    off_label = Bool(dump_only=True)
    dose_mg_per_kg = StrictFloat(dump_only=True, allow_none=True)

    @validates_schema
    def _coherent(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("infusion_duration_min") is not None and data.get("route") is not Route.INTRAVENOUS:
            raise ValidationError("an infusion duration applies to intravenous doses only", "infusion_duration_min")
        given = (data.get("controlled_substance") or {}).get("amount_administered_mg")
        if given is not None and "dose_mg" in data and abs(given - data["dose_mg"]) > 0.01:
            raise ValidationError(
                f"amount administered {given} mg differs from the dose {data['dose_mg']} mg",
                "controlled_substance.amount_administered_mg",
            )


class MonitoringReadingSchema(RecordSchema):
    session_id = fields.String(validate=ID)
    taken_at = Time(required=True)
    timing = Enum(ReadingTiming, required=True)
    systolic_mmhg = StrictFloat(load_default=None, allow_none=True, validate=validate.Range(min=40, max=300))
    diastolic_mmhg = StrictFloat(load_default=None, allow_none=True, validate=validate.Range(min=20, max=200))
    heart_rate_per_min = StrictFloat(load_default=None, allow_none=True, validate=validate.Range(min=20, max=250))
    spo2_percent = StrictFloat(load_default=None, allow_none=True, validate=validate.Range(min=50, max=100))
    respiratory_rate_per_min = StrictFloat(load_default=None, allow_none=True, validate=validate.Range(min=2, max=80))
    # CADSS: 23 items scored 0-4 (total 0-92); MOAA/S: 0-5.
    cadss_total = StrictInteger(load_default=None, allow_none=True, validate=validate.Range(min=0, max=92))
    moaas_score = StrictInteger(load_default=None, allow_none=True, validate=validate.Range(min=0, max=5))
    self_reported = Bool(load_default=False)

    @validates_schema
    def _coherent(self, data: dict[str, Any], **_: Any) -> None:
        measured = (
            "systolic_mmhg",
            "diastolic_mmhg",
            "heart_rate_per_min",
            "spo2_percent",
            "respiratory_rate_per_min",
            "cadss_total",
            "moaas_score",
        )
        if all(data.get(k) is None for k in measured):
            raise ValidationError("a reading needs at least one measurement", "_schema")
        systolic, diastolic = data.get("systolic_mmhg"), data.get("diastolic_mmhg")
        if (systolic is None) != (diastolic is None):
            raise ValidationError("blood pressure needs both systolic and diastolic", "diastolic_mmhg")
        if systolic is not None and diastolic is not None and diastolic >= systolic:
            raise ValidationError("diastolic must be below systolic", "diastolic_mmhg")


class SideEffectSchema(RecordSchema):
    session_id = fields.String(load_default=None, allow_none=True, validate=ID)
    dose_id = fields.String(load_default=None, allow_none=True, validate=ID)
    kind = Enum(SideEffectKind, required=True)
    other_text = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=500))
    severity = Enum(SideEffectSeverity, required=True)
    serious = Bool(load_default=False, metadata={"description": "serious adverse event (ICH E2A)"})
    onset_at = Time(required=True)
    resolved_at = Time(load_default=None, allow_none=True)

    @validates_schema
    def _other(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("kind") is SideEffectKind.OTHER and not data.get("other_text"):
            raise ValidationError("describe a side effect of kind 'other'", "other_text")


class ConcomitantMedicationSchema(RecordSchema):
    medication_class = Enum(ConcomitantMedicationClass, required=True)
    name = Text(200, required=True)
    dose_text = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    start = fields.Date(load_default=None, allow_none=True)
    end = fields.Date(load_default=None, allow_none=True)

    @validates_schema
    def _period(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("start") and data.get("end") and data["end"] < data["start"]:
            raise ValidationError("end is before start", "end")


class OutcomeMeasureSchema(RecordSchema):
    instrument = Enum(Instrument, required=True)
    administered_at = Time(required=True)
    session_id = fields.String(load_default=None, allow_none=True, validate=ID)
    items = fields.List(StrictInteger(), required=True, validate=validate.Length(min=1, max=30))
    difficulty = StrictInteger(load_default=None, allow_none=True, validate=validate.Range(min=0, max=3))
    behaviour_within_3_months = Bool(load_default=None, allow_none=True)
    # On input: the total the caller computed (optional), checked against the items. On output: computed.
    total = StrictInteger(load_default=None, allow_none=True)
    severity_band = fields.String(dump_only=True, allow_none=True)
    risk_level = Enum(SuicideRiskLevel, dump_only=True, allow_none=True)

    @validates_schema
    def _instrument_fields(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("difficulty") is not None and data.get("instrument") is not Instrument.PHQ9:
            raise ValidationError("the difficulty item belongs to the PHQ-9", "difficulty")
        if (
            data.get("behaviour_within_3_months") is not None
            and data.get("instrument") is not Instrument.CSSRS_SCREENER
        ):
            raise ValidationError(
                "behaviour_within_3_months belongs to the C-SSRS screener", "behaviour_within_3_months"
            )


class SessionSchema(RecordSchema):
    kind = Enum(SessionKind, required=True)
    status = Enum(SessionStatus, required=True)
    start = Time(required=True)
    end = Time(load_default=None, allow_none=True)
    modality = Enum(Modality, load_default=Modality.IN_PERSON)
    clinician_ids = fields.List(fields.String(validate=ID), load_default=list)
    # Stored, never returned or exported: the response says only whether there are notes.
    psychotherapy_notes = fields.String(
        load_only=True, load_default=None, allow_none=True, validate=validate.Length(max=100_000)
    )
    has_psychotherapy_notes = fields.Method("_has_notes", dump_only=True)
    setting = Enum(DosingSetting, load_default=None, allow_none=True)
    check_in_at = Time(load_default=None, allow_none=True)
    discharge_at = Time(load_default=None, allow_none=True)

    def _has_notes(self, obj: Any) -> bool:
        return bool(getattr(obj, "psychotherapy_notes", None))


class SideEffectInSessionSchema(SideEffectSchema):
    """A side effect sent with its session: it names its dose by position in the session's ``doses``."""

    class Meta:
        exclude = ("session_id", "dose_id")

    dose_index = StrictInteger(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=0, max=99),
        metadata={"description": "position of the suspected dose in this request's doses"},
    )


class SessionCreateSchema(SessionSchema):
    """A session may bring its doses, readings and side effects, so that a whole session is one request."""

    doses = fields.List(fields.Nested(DoseSchema(exclude=("session_id",))), load_only=True, load_default=list)
    monitoring_readings = fields.List(
        fields.Nested(MonitoringReadingSchema(exclude=("session_id",))), load_only=True, load_default=list
    )
    side_effects = fields.List(fields.Nested(SideEffectInSessionSchema), load_only=True, load_default=list)

    @validates_schema
    def _dosing_content(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("kind") is not SessionKind.DOSING and data.get("doses"):
            raise ValidationError("only dosing sessions have doses", "doses")
        doses = len(data.get("doses") or [])
        for index, effect in enumerate(data.get("side_effects") or []):
            if effect.get("dose_index") is not None and effect["dose_index"] >= doses:
                raise ValidationError(
                    {index: {"dose_index": [f"there are {doses} doses in this request"]}}, "side_effects"
                )


class AmendmentSchema(StrictSchema):
    amendment_reason = Text(1000, required=True)


class EnteredInErrorSchema(StrictSchema):
    reason = Text(1000, required=True)


class FlagAcknowledgementSchema(StrictSchema):
    by = fields.String(required=True, validate=ID, metadata={"description": "id of the acknowledging practitioner"})
    at = Time(dump_only=True)
    comment = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class SafetyFlagSchema(Schema):
    id = fields.String()
    rule_id = fields.String()
    severity = Enum(FlagSeverity)
    explanation = fields.String()
    record_ids = fields.List(fields.String())
    raised_at = Time()
    status = Enum(FlagStatus)
    acknowledgement = fields.Nested(FlagAcknowledgementSchema, allow_none=True)
    resolved_at = Time(allow_none=True)


class VersionEntrySchema(Schema):
    version = StrictInteger()
    change = fields.String()
    reason = fields.String(allow_none=True)
    actor = fields.String()
    changed_at = Time()
    data = fields.Dict()


class TimelineEntrySchema(Schema):
    at = Time()
    kind = fields.String()
    record_id = fields.String()
    summary = fields.String()


class EpisodeDetailSchema(EpisodeSummarySchema):
    consents = fields.List(fields.Nested(ConsentSchema))
    dosing_orders = fields.List(fields.Nested(DosingOrderSchema))
    sessions = fields.List(fields.Nested(SessionSchema))
    doses = fields.List(fields.Nested(DoseSchema))
    monitoring_readings = fields.List(fields.Nested(MonitoringReadingSchema))
    side_effects = fields.List(fields.Nested(SideEffectSchema))
    outcome_measures = fields.List(fields.Nested(OutcomeMeasureSchema))
    concomitant_medications = fields.List(fields.Nested(ConcomitantMedicationSchema))
    timeline = fields.List(fields.Nested(TimelineEntrySchema))
    open_flags = fields.List(fields.Nested(SafetyFlagSchema))


# --- Spravato REMS Patient Monitoring Form ----------------------------------------------------------------------


def _optional_text(max_length: int) -> fields.String:
    return fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=max_length))


class HealthcareSettingSchema(StrictSchema):
    """The clinic as the REMS form names it: its time zone (deadlines count in its calendar days) and the
    healthcare setting's address and contact."""

    name = fields.String(dump_only=True)
    time_zone = fields.String(
        required=True, validate=validate.Length(min=1, max=64), metadata={"description": "IANA, e.g. America/Denver"}
    )
    address_line_1 = _optional_text(200)
    address_line_2 = _optional_text(200)
    city = _optional_text(100)
    state = _optional_text(50)
    postal_code = _optional_text(20)
    phone = _optional_text(40)
    email = _optional_text(200)


class RemsSubmissionSchema(StrictSchema):
    id = fields.String(dump_only=True)
    channel = Enum(RemsChannel, required=True)
    submitted_at = Time(required=True)
    confirmation_number = _optional_text(100)
    submitted_by = fields.String(required=True, validate=ID, metadata={"description": "id of a practitioner"})
    recorded_at = Time(dump_only=True)


class RemsFormFieldSchema(Schema):
    key = fields.String(metadata={"description": "linkId in the Questionnaire"})
    section = fields.String()
    text = fields.String()
    required = fields.Boolean()
    answer = fields.Raw(allow_none=True)
    sources = fields.List(fields.String(), metadata={"description": "ids of the records the answer comes from"})


class RemsFormSchema(Schema):
    episode_id = fields.String()
    session_id = fields.String()
    patient_id = fields.String()
    questionnaire = fields.String()
    status = fields.String(metadata={"description": "completed | in-progress"})
    missing = fields.List(fields.String(), metadata={"description": "what to record, in clinical words"})
    missing_fields = fields.List(fields.String())
    treatment_date = fields.Date()
    due_date = fields.Date()
    overdue = fields.Boolean()
    submission_state = fields.String(metadata={"description": "unsent | submitted | amended"})
    corrected_submission_needed = fields.Boolean()
    submission = fields.Nested(RemsSubmissionSchema, allow_none=True)
    submissions = fields.List(fields.Nested(RemsSubmissionSchema))
    fields_ = fields.List(fields.Nested(RemsFormFieldSchema), data_key="fields")


class ProblemFieldSchema(Schema):
    field = fields.String()
    message = fields.String()


class ProblemSchema(Schema):
    type = fields.String()
    title = fields.String()
    status = StrictInteger()
    detail = fields.String()
    instance = fields.String()
    errors = fields.List(fields.Nested(ProblemFieldSchema))


class PageSchemaBase(Schema):
    total = StrictInteger()
    limit = StrictInteger()
    offset = StrictInteger()


def page_schema(item: type[Schema], name: str) -> type[Schema]:
    return type(name, (PageSchemaBase,), {"items": fields.List(fields.Nested(item)), "__module__": __name__})


# --- query strings: unknown parameters are refused, as unknown body fields are; numbers arrive as text ---------


class NoQuerySchema(Schema):
    class Meta:
        unknown = RAISE


class PaginationSchema(NoQuerySchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=1_000_000))


class EpisodeQuerySchema(PaginationSchema):
    patient_id = fields.String(load_default=None, validate=ID)
    status = fields.Enum(EpisodeStatus, by_value=True, load_default=None)
    phase = fields.Enum(Phase, by_value=True, load_default=None)


class SessionQuerySchema(NoQuerySchema):
    kind = fields.Enum(SessionKind, by_value=True, load_default=None)


class FhirExportQuerySchema(NoQuerySchema):
    type = fields.String(load_default="transaction", validate=validate.OneOf(["transaction", "collection"]))


class FlagQuerySchema(NoQuerySchema):
    status = fields.Enum(FlagStatus, by_value=True, load_default=None)


class AuditQuerySchema(PaginationSchema):
    since = Time(load_default=None)


class AuditEntitySchema(Schema):
    type = fields.String()
    id = fields.String()


class AuditEventSchema(Schema):
    """An audit record in the shape of FHIR R4 AuditEvent (type, subtype, action, recorded, outcome, agent,
    source, entity), flattened."""

    id = fields.String()
    recorded = Time()
    type = fields.String()
    subtype = fields.String()
    action = fields.String()
    outcome = fields.String()
    client_id = fields.String(allow_none=True)
    clinic_id = fields.String(allow_none=True)
    network_address = fields.String(allow_none=True)
    request_id = fields.String(allow_none=True)
    method = fields.String()
    route = fields.String()
    status = fields.Integer()
    entity = fields.List(fields.Nested(AuditEntitySchema))
    # how many alike requests the row stands for: 429s are recorded once a minute with their number
    occurrences = fields.Integer()


class RemsFormQuerySchema(NoQuerySchema):
    status = fields.String(load_default=None, validate=validate.OneOf(["due", "overdue", "submitted", "amended"]))
