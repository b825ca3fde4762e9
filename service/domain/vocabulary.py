"""Closed vocabularies of the KAP domain.

Values are the wire values of the REST API and the stored values; the FHIR codes they map to live in
``mappings/terminology.py``, not here.
"""

from __future__ import annotations

from enum import StrEnum


class AdministrativeGender(StrEnum):
    # FHIR R4 administrative-gender (required binding on Patient.gender)
    MALE = "male"
    FEMALE = "female"
    OTHER = "other"
    UNKNOWN = "unknown"


class PractitionerRole(StrEnum):
    PRESCRIBER = "prescriber"
    THERAPIST = "therapist"
    NURSE = "nurse"
    MONITOR = "monitor"


class EpisodeStatus(StrEnum):
    PLANNED = "planned"
    ACTIVE = "active"
    ON_HOLD = "on-hold"
    FINISHED = "finished"
    CANCELLED = "cancelled"


class Phase(StrEnum):
    ASSESSMENT = "assessment"
    PREPARATION = "preparation"
    DOSING = "dosing"
    INTEGRATION = "integration"
    MAINTENANCE = "maintenance"
    COMPLETED = "completed"
    DISCONTINUED = "discontinued"


class IndicationKind(StrEnum):
    DEPRESSION = "depression"
    PTSD = "ptsd"
    ANXIETY = "anxiety"
    OCD = "ocd"
    CHRONIC_PAIN = "chronic-pain"
    SUBSTANCE_USE = "substance-use"
    OTHER = "other"


class Medication(StrEnum):
    RACEMIC_KETAMINE = "racemic-ketamine"
    ESKETAMINE = "esketamine"


class Route(StrEnum):
    INTRAVENOUS = "intravenous"
    INTRAMUSCULAR = "intramuscular"
    INTRANASAL = "intranasal"
    SUBLINGUAL = "sublingual"
    ORAL = "oral"


class DosingSetting(StrEnum):
    CLINIC = "clinic"
    HOME = "home"


class DoseUnit(StrEnum):
    MG = "mg"
    MG_PER_KG = "mg/kg"


class SessionKind(StrEnum):
    ASSESSMENT = "assessment"
    PREPARATION = "preparation"
    DOSING = "dosing"
    INTEGRATION = "integration"


class Modality(StrEnum):
    IN_PERSON = "in-person"
    TELEHEALTH = "telehealth"


class SessionStatus(StrEnum):
    PLANNED = "planned"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class ReadingTiming(StrEnum):
    PRE_DOSE = "pre-dose"
    DURING = "during"
    POST_DOSE = "post-dose"
    DISCHARGE = "discharge"


class SideEffectKind(StrEnum):
    NAUSEA = "nausea"
    VOMITING = "vomiting"
    DIZZINESS = "dizziness"
    HEADACHE = "headache"
    ELEVATED_BLOOD_PRESSURE = "elevated-blood-pressure"
    DISSOCIATION = "dissociation"
    PERCEPTUAL_DISTURBANCE = "perceptual-disturbance"
    ANXIETY = "anxiety"
    SEDATION = "sedation"
    # Monitored under the Spravato REMS since its 12/31/2024 modification (FDA REMS page, REMS=386).
    RESPIRATORY_DEPRESSION = "respiratory-depression"
    OTHER = "other"


class SideEffectSeverity(StrEnum):
    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"


class ConcomitantMedicationClass(StrEnum):
    # The classes the Spravato REMS Patient Monitoring Form asks about (kap-fhir-reference.md §4.1).
    BENZODIAZEPINE = "benzodiazepine"
    NON_BENZODIAZEPINE_SEDATIVE_HYPNOTIC = "non-benzodiazepine-sedative-hypnotic"
    PSYCHOSTIMULANT = "psychostimulant"
    MAOI = "maoi"
    OPIOID = "opioid"
    OTHER = "other"


class Instrument(StrEnum):
    PHQ9 = "phq-9"
    GAD7 = "gad-7"
    PCL5 = "pcl-5"
    CSSRS_SCREENER = "c-ssrs-screener"


class SuicideRiskLevel(StrEnum):
    NONE = "none"
    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"


class FlagSeverity(StrEnum):
    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"


class FlagStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    # The deviation no longer holds after a correction (e.g. the consent time was amended).
    RESOLVED = "resolved"


class RemsChannel(StrEnum):
    # How a Spravato REMS Patient Monitoring Form reaches the program: its portal or fax.
    PORTAL = "portal"
    FAX = "fax"
