"""The KAP domain: plain dataclasses, no framework.

An :class:`Episode` is the aggregate: every record of a course of ketamine-assisted psychotherapy (consents,
orders, sessions, doses, readings, side effects, measures, flags) belongs to exactly one episode and is
changed only through it, so the safety rules always see the episode as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from service.domain.vocabulary import (
    AdministrativeGender,
    ConcomitantMedicationClass,
    DoseUnit,
    DosingSetting,
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

# --- tenant and people -------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Clinic:
    id: str
    name: str
    # Base URI under which the clinic's business identifiers live, e.g. https://clinic.example/fhir/id
    identifier_system: str
    # IANA time zone of the clinic: calendar-day deadlines (the REMS form's 7 days) count in it.
    time_zone: str = "UTC"
    # The healthcare setting as the Spravato REMS Patient Monitoring Form asks for it.
    setting: HealthcareSetting | None = None


@dataclass(kw_only=True)
class HealthcareSetting:
    """Address and contact of the clinic's certified healthcare setting (REMS Patient Monitoring Form)."""

    address_line_1: str | None = None
    address_line_2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    phone: str | None = None
    email: str | None = None


@dataclass(kw_only=True)
class HumanName:
    family: str
    given: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Identifier:
    system: str
    value: str


@dataclass(kw_only=True)
class Practitioner:
    id: str
    name: HumanName
    npi: str | None = None
    roles: list[PractitionerRole] = field(default_factory=list)
    version: int = 1
    recorded_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(kw_only=True)
class Patient:
    id: str
    mrn: Identifier
    name: HumanName
    birth_date: date
    gender: AdministrativeGender
    version: int = 1
    recorded_at: datetime | None = None
    updated_at: datetime | None = None


# --- records: everything that can be amended or marked entered-in-error ----------------------------------


@dataclass(kw_only=True)
class Record:
    """Common bookkeeping of a correctable clinical record."""

    id: str
    version: int = 1
    entered_in_error: bool = False
    recorded_at: datetime | None = None  # system time of the first version
    updated_at: datetime | None = None  # system time of the current version


@dataclass(kw_only=True)
class BodyWeight(Record):
    measured_at: datetime
    weight_kg: float


@dataclass(kw_only=True)
class Indication:
    kind: IndicationKind
    # Required by the REST API; an inbound FHIR Condition may carry SNOMED CT only.
    icd10cm: str | None = None
    snomed: str | None = None
    display: str | None = None
    # Treatment-resistant depression has no ICD-10-CM code of its own: the MDD code plus this flag.
    treatment_resistant: bool = False
    # Depressive symptoms in MDD with acute suicidal ideation or behaviour (an esketamine indication).
    acute_suicidal_ideation: bool = False


@dataclass(kw_only=True)
class CareTeamMember:
    practitioner_id: str
    role: PractitionerRole


@dataclass(kw_only=True)
class PhaseTransition:
    from_phase: Phase | None
    to_phase: Phase
    at: datetime
    actor: str
    reason: str | None = None


@dataclass(kw_only=True)
class Consent(Record):
    form_url: str
    form_version: str
    signed_at: datetime
    signed_by_patient: bool = True
    witness_practitioner_id: str | None = None
    witness_name: str | None = None
    covers_ketamine_for_psychotherapy: bool = True
    off_label_use_acknowledged: bool = False
    routes_covered: list[Route] = field(default_factory=list)
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    withdrawn_at: datetime | None = None
    withdrawal_reason: str | None = None

    def is_active_at(self, when: datetime) -> bool:
        start = self.valid_from or self.signed_at
        if when < start or when < self.signed_at:
            return False
        if self.valid_until is not None and when > self.valid_until:
            return False
        return self.withdrawn_at is None or when < self.withdrawn_at


@dataclass(kw_only=True)
class DosingOrder(Record):
    medication: Medication
    route: Route
    dose_value: float
    dose_unit: DoseUnit
    frequency: str
    number_of_sessions: int
    prescriber_id: str
    ordered_at: datetime
    off_label_reason: str | None = None


@dataclass(kw_only=True)
class ClinicalSession(Record):
    """A session of the episode: assessment, preparation, dosing or integration."""

    kind: SessionKind
    status: SessionStatus
    start: datetime
    end: datetime | None = None
    modality: Modality = Modality.IN_PERSON
    clinician_ids: list[str] = field(default_factory=list)
    # Free text kept apart: stored, never exported, never logged.
    psychotherapy_notes: str | None = None
    # Dosing sessions only.
    setting: DosingSetting | None = None
    check_in_at: datetime | None = None  # telehealth check-in of an at-home dosing session
    discharge_at: datetime | None = None


@dataclass(kw_only=True)
class ControlledSubstanceRecord:
    """Schedule III record keeping of one administration."""

    ndc: str | None = None
    lot_number: str | None = None
    expiry: date | None = None
    amount_drawn_mg: float | None = None
    amount_administered_mg: float | None = None
    amount_wasted_mg: float | None = None
    waste_witness_id: str | None = None


@dataclass(kw_only=True)
class DosingRecord(Record):
    session_id: str
    order_id: str | None = None
    medication: Medication
    route: Route
    setting: DosingSetting = DosingSetting.CLINIC
    dose_mg: float
    weight_kg: float | None = None
    infusion_duration_min: float | None = None
    start: datetime
    end: datetime | None = None
    administered_by_id: str | None = None
    supervised_by_id: str | None = None
    override_reason: str | None = None
    controlled_substance: ControlledSubstanceRecord = field(default_factory=ControlledSubstanceRecord)
    # Derived by the episode when the record is stored; never taken from the caller.
    off_label: bool = True

    @property
    def dose_mg_per_kg(self) -> float | None:
        if not self.weight_kg:
            return None
        return round(self.dose_mg / self.weight_kg, 3)


@dataclass(kw_only=True)
class MonitoringReading(Record):
    session_id: str
    taken_at: datetime
    timing: ReadingTiming
    systolic_mmhg: float | None = None
    diastolic_mmhg: float | None = None
    heart_rate_per_min: float | None = None
    spo2_percent: float | None = None
    respiratory_rate_per_min: float | None = None
    cadss_total: int | None = None
    moaas_score: int | None = None
    self_reported: bool = False

    @property
    def has_blood_pressure(self) -> bool:
        return self.systolic_mmhg is not None and self.diastolic_mmhg is not None


@dataclass(kw_only=True)
class SideEffect(Record):
    session_id: str | None = None
    dose_id: str | None = None
    kind: SideEffectKind
    other_text: str | None = None
    severity: SideEffectSeverity
    serious: bool = (
        False  # ICH E2A seriousness (death, life-threatening, hospitalisation, ...): AdverseEvent.seriousness
    )
    onset_at: datetime
    resolved_at: datetime | None = None


@dataclass(kw_only=True)
class ConcomitantMedication(Record):
    medication_class: ConcomitantMedicationClass
    name: str
    dose_text: str | None = None
    start: date | None = None
    end: date | None = None


@dataclass(kw_only=True)
class OutcomeMeasure(Record):
    instrument: Instrument
    administered_at: datetime
    session_id: str | None = None
    # Item answers in questionnaire order. C-SSRS screener: 1 = yes, 0 = no.
    items: list[int]
    # PHQ-9 difficulty item (0-3); not part of the total.
    difficulty: int | None = None
    # C-SSRS screener item 6: was the behaviour within the past 3 months?
    behaviour_within_3_months: bool | None = None
    # Computed by the domain (never trusted from the caller):
    total: int | None = None
    severity_band: str | None = None
    risk_level: SuicideRiskLevel | None = None


@dataclass(kw_only=True)
class FlagAcknowledgement:
    by: str
    at: datetime
    comment: str | None = None


@dataclass(kw_only=True)
class SafetyFlag:
    id: str
    rule_id: str
    severity: FlagSeverity
    explanation: str
    record_ids: list[str]
    raised_at: datetime
    status: FlagStatus = FlagStatus.OPEN
    acknowledgement: FlagAcknowledgement | None = None
    resolved_at: datetime | None = None

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        """Identity of the deviation: one flag per rule and set of records, however often evaluated."""
        return (self.rule_id, tuple(sorted(self.record_ids)))


@dataclass(kw_only=True)
class PrivacyConsent(Record):
    """The patient's permission to share their records with one organization (FHIR Consent, scope
    patient-privacy). A treatment consent is not this. Records of a substance-use indication are shared only when
    the consent says so explicitly (42 CFR Part 2)."""

    recipient_name: str
    recipient_identifier: Identifier  # the receiving organization (an EHR's organization identifier)
    signed_at: datetime
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    includes_substance_use_records: bool = False
    withdrawn_at: datetime | None = None
    withdrawal_reason: str | None = None

    def is_active_at(self, when: datetime) -> bool:
        start = self.valid_from or self.signed_at
        if when < start or (self.valid_until is not None and when >= self.valid_until):
            return False
        return not self.entered_in_error and (self.withdrawn_at is None or when < self.withdrawn_at)


@dataclass(kw_only=True)
class RemsSubmission:
    """That (and how) the Patient Monitoring Form of one esketamine session was sent to the REMS program.
    ``form_digest`` fingerprints the answers sent: a session changed afterwards no longer matches it."""

    id: str
    session_id: str
    channel: RemsChannel
    submitted_at: datetime
    confirmation_number: str | None = None
    submitted_by: str  # practitioner id
    form_digest: str
    recorded_at: datetime
    recorded_by: str  # the API client that recorded it


@dataclass(kw_only=True)
class RemsLedger:
    """What the REMS deadlines of an episode depend on beyond its records: the clinic's time zone and the
    submissions made. Loaded with the episode; not part of its versioned header."""

    time_zone: str = "UTC"
    submissions: list[RemsSubmission] = field(default_factory=list)


RECORD_TYPES: dict[str, type[Record]] = {
    "consent": Consent,
    "dosing-order": DosingOrder,
    "session": ClinicalSession,
    "dose": DosingRecord,
    "monitoring-reading": MonitoringReading,
    "side-effect": SideEffect,
    "outcome-measure": OutcomeMeasure,
    "concomitant-medication": ConcomitantMedication,
    "body-weight": BodyWeight,
    "privacy-consent": PrivacyConsent,
}
RECORD_KIND_OF: dict[type[Record], str] = {cls: kind for kind, cls in RECORD_TYPES.items()}
