"""Every system URL and code kapfhir sends or reads (the mappings, the exchange, the /fhir API), each with its source.

Legend (from ../shared/kap-fhir-reference.md): ``# V:`` read in an official artifact; ``# V3:`` read only in
third-party material. Concepts nobody could verify live in the kapfhir CodeSystems under ``KAPFHIR_BASE``,
never under a standard system.

Codings are plain JSON dicts (the mapping builds FHIR JSON directly); treat them as read-only.
"""

from __future__ import annotations

from service.domain.vocabulary import (
    ConcomitantMedicationClass,
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
    Route,
    SessionKind,
    SessionStatus,
    SideEffectKind,
    SideEffectSeverity,
    SuicideRiskLevel,
)

# --- kapfhir canonicals ---------------------------------------------------------------------------------------

KAPFHIR_BASE = "https://kapfhir.example.org/fhir"
SD = f"{KAPFHIR_BASE}/StructureDefinition"
CS = f"{KAPFHIR_BASE}/CodeSystem"
VS = f"{KAPFHIR_BASE}/ValueSet"
QUESTIONNAIRE = f"{KAPFHIR_BASE}/Questionnaire"
CONFORMANCE_VERSION = "0.1.0"


def profile(name: str) -> str:
    return f"{SD}/{name}"


# Local CodeSystems (UNVERIFIED concepts, or concepts private to kapfhir).
CS_KAP_PHASE = f"{CS}/kap-phase"
CS_SESSION_TYPE = f"{CS}/kap-session-type"
CS_INDICATION_KIND = f"{CS}/kap-indication-kind"
CS_MEDICATION = f"{CS}/kap-medication"
CS_SIDE_EFFECT = f"{CS}/kap-side-effect"
CS_CONCOMITANT_CLASS = f"{CS}/kap-concomitant-medication-class"
CS_READING_TIMING = f"{CS}/kap-reading-timing"
CS_OBSERVATION = f"{CS}/kap-observation"  # CADSS, MOAA/S, empty reading
CS_SAFETY_RULE = f"{CS}/kap-safety-rule"
CS_FLAG_ACTION = f"{CS}/kap-flag-action"
CS_SEVERITY_BAND = f"{CS}/kap-severity-band"
CS_SUICIDE_RISK = f"{CS}/kap-suicide-risk-level"
CS_PRACTITIONER_ROLE = f"{CS}/kap-practitioner-role"
CS_DOSING_SETTING = f"{CS}/kap-dosing-setting"
CS_CONSENT_SCOPE = f"{CS}/kap-consent-provision"
CS_QUESTIONNAIRE_ITEM = f"{CS}/kap-questionnaire-item"  # PCL-5 items and the C-SSRS 3-month item
CS_REMS = f"{CS}/kap-rems"  # Spravato REMS form workflow: task, statuses, channels, dose options
CS_ANSWER = f"{CS}/kap-answer"  # GAD-7 and PCL-5 answer codes (LOINC answer lists not verified for them)

# kapfhir extensions (StructureDefinitions in mappings/conformance/)
EXT_OFF_LABEL = f"{SD}/off-label-use"
EXT_WASTE = f"{SD}/controlled-substance-accounting"
EXT_RECORD = f"{SD}/record-metadata"
EXT_CARE_TEAM_MEMBER = f"{SD}/care-team-member"
EXT_PHASE = f"{SD}/kap-phase"
EXT_PHASE_TRANSITION = f"{SD}/phase-transition"
EXT_DISCONTINUATION_REASON = f"{SD}/discontinuation-reason"
EXT_PRACTITIONER_ROLE = f"{SD}/kap-practitioner-role"
EXT_INDICATION_FLAGS = f"{SD}/indication-qualifier"
EXT_DOSING_SETTING = f"{SD}/dosing-setting"
EXT_CHECK_IN = f"{SD}/telehealth-check-in"
EXT_DISCHARGE = f"{SD}/discharge-time"
EXT_OVERRIDE_REASON = f"{SD}/dose-override-reason"
EXT_READING_TIMING = f"{SD}/reading-timing"
EXT_RESOLVED_AT = f"{SD}/resolved-at"
EXT_CONSENT_DETAIL = f"{SD}/kap-consent-detail"
EXT_TIME_ZONE = f"{SD}/clinic-time-zone"  # IANA time zone of the clinic (REMS form deadlines count in it)
EXT_REMS_SUBMISSION = f"{SD}/rems-form-submission"  # one sending of a REMS Patient Monitoring Form

# --- standard systems -----------------------------------------------------------------------------------------

LOINC = "http://loinc.org"  # V: S1 (R4 terminologies)
SNOMED = "http://snomed.info/sct"  # V: S1
UCUM = "http://unitsofmeasure.org"  # V: S1, reference §1.7
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"  # V: S1, reference §1.9
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"  # V: S1, reference §1.2
NDC = "http://hl7.org/fhir/sid/ndc"  # V3: reference §2 (NDC system URI of FHIR R4)
CPT = "http://www.ama-assn.org/go/cpt"  # V: S3 us-core-encounter-type
NPI = "http://hl7.org/fhir/sid/us-npi"  # V: S3 (US Core Practitioner identifier slice)
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"  # V: S1 (Encounter.class)
V3_CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"  # V3: reference §7
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"  # V: S1 §1.7
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"  # V: S1 §1.1
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"  # V: S1 §1.9
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"  # V: S1 §1.9
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"  # V: S1/S3
CAREPLAN_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/careplan-category"  # V: S3 §3
MED_ADMIN_FUNCTION = "http://terminology.hl7.org/CodeSystem/med-admin-perform-function"  # V: S1 §1.2
MED_ADMIN_CATEGORY = "http://terminology.hl7.org/CodeSystem/medication-admin-category"  # V: S1 §1.2
# V: hl7.org/fhir/R4b/codesystem-adverse-event-severity.html (docs search)
AE_SEVERITY = "http://terminology.hl7.org/CodeSystem/adverse-event-severity"
AE_OUTCOME = "http://terminology.hl7.org/CodeSystem/adverse-event-outcome"  # V: S1 §1.10
# V: hl7.org/fhir/r4/codesystem-adverse-event-seriousness.html (R4 4.0.1, example binding of
# AdverseEvent.seriousness) and the THO CodeSystem-adverse-event-seriousness (codes serious, non-serious); docs search
AE_SERIOUSNESS = "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness"
# V: hl7.org/fhir/r4/codesystem-provenance-agent-type.html (docs search)
PROVENANCE_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"  # V: S3 example bp-data-absent.json


def coding(system: str, code: str, display: str | None = None) -> dict:
    return {"system": system, "code": code, **({"display": display} if display else {})}


# Meta.tag of a resource sent in part (_summary, _elements): the FHIR CommonTags value set (R4 search §3.1.1.5).
# V: THO CodeSystem v3-ObservationValue#SUBSETTED, in hl7.org/fhir ValueSet common-tags (docs search)
V3_OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
SUBSETTED = coding(V3_OBSERVATION_VALUE, "SUBSETTED")

# --- security labels (reference §7) ---------------------------------------------------------------------------

SECURITY_RESTRICTED = coding(V3_CONFIDENTIALITY, "R", "restricted")  # V3: reference §7, THO v3-Confidentiality
SECURITY_PSY = coding(
    V3_ACT_CODE, "PSY", "psychiatry disorder information sensitivity"
)  # V3: reference §7; THO ValueSet v3-ActInformationSensitivityPolicy (docs search)
SECURITY_ETH = coding(
    V3_ACT_CODE, "ETH", "substance abuse information sensitivity"
)  # V3: reference §7; IHE PCF SlsSensitiveETH (docs search)

# --- profiles -------------------------------------------------------------------------------------------------

US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition"  # V: S3 (6.1.0)
US_CORE_PATIENT = f"{US_CORE}/us-core-patient"
US_CORE_PRACTITIONER = f"{US_CORE}/us-core-practitioner"
US_CORE_ORGANIZATION = f"{US_CORE}/us-core-organization"
US_CORE_ENCOUNTER = f"{US_CORE}/us-core-encounter"
US_CORE_CAREPLAN = f"{US_CORE}/us-core-careplan"
US_CORE_PROCEDURE = f"{US_CORE}/us-core-procedure"
US_CORE_SCREENING = f"{US_CORE}/us-core-observation-screening-assessment"
US_CORE_BP = f"{US_CORE}/us-core-blood-pressure"
US_CORE_HEART_RATE = f"{US_CORE}/us-core-heart-rate"
US_CORE_RESP_RATE = f"{US_CORE}/us-core-respiratory-rate"
US_CORE_PULSE_OX = f"{US_CORE}/us-core-pulse-oximetry"
US_CORE_BODY_WEIGHT = f"{US_CORE}/us-core-body-weight"
FHIR_SD = "http://hl7.org/fhir/StructureDefinition"  # V: S1
VITALSIGNS_BP = f"{FHIR_SD}/bp"
VITALSIGNS_HEART_RATE = f"{FHIR_SD}/heartrate"
VITALSIGNS_RESP_RATE = f"{FHIR_SD}/resprate"
VITALSIGNS_OXYGEN = f"{FHIR_SD}/oxygensat"
VITALSIGNS_BODY_WEIGHT = f"{FHIR_SD}/bodyweight"
EXT_CAREPLAN_ACTIVITY_TITLE = f"{FHIR_SD}/careplan-activity-title"  # V: S1 §1.4
EXT_CONSENT_WITNESS = f"{FHIR_SD}/consent-Witness"  # V: S1 §1.1
EXT_ORDINAL_VALUE = f"{FHIR_SD}/ordinalValue"  # V: S1 §3 (SDC basics)

# --- categories and fixed codes -------------------------------------------------------------------------------

CATEGORY_VITAL_SIGNS = coding(OBSERVATION_CATEGORY, "vital-signs", "Vital Signs")  # V: S1 §1.7
CATEGORY_SURVEY = coding(OBSERVATION_CATEGORY, "survey", "Survey")  # V: S1 §1.11
CATEGORY_ASSESS_PLAN = coding(CAREPLAN_CATEGORY, "assess-plan", "Assessment and Plan of Treatment")  # V: S3 §3
CATEGORY_PROBLEM_LIST = coding(CONDITION_CATEGORY, "problem-list-item", "Problem List Item")  # V: S3 §1.9
CONSENT_SCOPE_TREATMENT = coding(CONSENT_SCOPE, "treatment", "Treatment")  # V: S1 §1.1
# V: hl7.org/fhir/R4/codesystem-consent-scope.html (docs search): the scope the exchange's privacy gate requires
CONSENT_SCOPE_PATIENT_PRIVACY = coding(CONSENT_SCOPE, "patient-privacy", "Privacy Consent")
CONSENT_CATEGORY_LOINC = coding(LOINC, "59284-0", "Patient Consent")  # V: S1 §1.1 (R4 display)
CLINICAL_ACTIVE = coding(CONDITION_CLINICAL, "active")  # V: S1 §1.9
CLINICAL_INACTIVE = coding(CONDITION_CLINICAL, "inactive")  # V: S1 §1.9
VERIFICATION_CONFIRMED = coding(CONDITION_VERIFICATION, "confirmed")  # V: S1 §1.9
VERIFICATION_ENTERED_IN_ERROR = coding(CONDITION_VERIFICATION, "entered-in-error")  # V: S1 §1.9
DATA_ABSENT_UNKNOWN = coding(DATA_ABSENT_REASON, "unknown", "Unknown")  # V: S3 bp-data-absent.json
DATA_ABSENT_NOT_PERFORMED = coding(
    DATA_ABSENT_REASON, "not-performed", "Not Performed"
)  # V3: THO data-absent-reason, via the hl7-eu pcsp ValueSet expansion (docs search)
FUNCTION_PERFORMER = coding(
    MED_ADMIN_FUNCTION, "performer", "Performer"
)  # V: THO CodeSystem-med-admin-perform-function (docs search)
FUNCTION_VERIFIER = coding(
    MED_ADMIN_FUNCTION, "verifier", "Verifier"
)  # V: same; the supervising clinician verifies and is accountable
PROVENANCE_AUTHOR = coding(
    PROVENANCE_PARTICIPANT, "author", "Author"
)  # V: hl7.org/fhir/r4/codesystem-provenance-agent-type.html
PROVENANCE_ASSEMBLER = coding(PROVENANCE_PARTICIPANT, "assembler", "Assembler")  # V: same page (R4 code list)
PSYCHOTHERAPY_SNOMED = coding(SNOMED, "75516001", "Psychotherapy")  # V3: reference §1.6 (VSAC via canvas_sdk)

ENCOUNTER_CLASS: dict[Modality, dict] = {
    Modality.IN_PERSON: coding(V3_ACT_CODE, "AMB", "ambulatory"),  # V: S1 §1.5
    Modality.TELEHEALTH: coding(V3_ACT_CODE, "VR", "virtual"),  # V: S1 §1.5
}

MED_ADMIN_CATEGORY_OF: dict[DosingSetting, dict] = {
    DosingSetting.CLINIC: coding(MED_ADMIN_CATEGORY, "outpatient", "Outpatient"),  # V: S1 §1.2
    DosingSetting.HOME: coding(MED_ADMIN_CATEGORY, "community", "Community"),  # V: S1 §1.2
}

# CPT codes are sent without the AMA descriptor text (reference §7).
CPT_DIAGNOSTIC_EVALUATION = coding(CPT, "90791")  # V3: reference §7
CPT_PSYCHOTHERAPY_30 = coding(CPT, "90832")  # V3: reference §1.5 (VSAC Psych Visit - Psychotherapy)
CPT_PSYCHOTHERAPY_45 = coding(CPT, "90834")  # V3: reference §1.5
CPT_PSYCHOTHERAPY_60 = coding(CPT, "90837")  # V3: reference §1.5
CPT_PSYCHEDELIC_MONITORING = coding(CPT, "0820T")  # V3: reference §7 (first physician/QHP, in person, each hour)

# --- local vocabularies (enum value == local code) ----------------------------------------------------------


def local(system: str, code: object, display: str | None = None) -> dict:
    return coding(system, str(code), display)


PHASE = {p: local(CS_KAP_PHASE, p, p.value.capitalize()) for p in Phase}
SESSION_TYPE = {k: local(CS_SESSION_TYPE, k, f"KAP {k.value} session") for k in SessionKind}
INDICATION_KIND = {k: local(CS_INDICATION_KIND, k) for k in IndicationKind}
SIDE_EFFECT = {k: local(CS_SIDE_EFFECT, k) for k in SideEffectKind}
CONCOMITANT_CLASS = {k: local(CS_CONCOMITANT_CLASS, k) for k in ConcomitantMedicationClass}
READING_TIMING = {t: local(CS_READING_TIMING, t) for t in ReadingTiming}
PRACTITIONER_ROLE = {r: local(CS_PRACTITIONER_ROLE, r) for r in PractitionerRole}
DOSING_SETTING = {s: local(CS_DOSING_SETTING, s) for s in DosingSetting}
SAFETY_RULE_SYSTEM = CS_SAFETY_RULE
SUICIDE_RISK = {r: local(CS_SUICIDE_RISK, r) for r in SuicideRiskLevel}
FLAG_ACKNOWLEDGED = local(CS_FLAG_ACTION, "acknowledged", "Acknowledged by a clinician")
KAP_PROVISION = local(CS_CONSENT_SCOPE, "ketamine-assisted-psychotherapy", "Ketamine-assisted psychotherapy")

# Standard codings sent beside the local code where verified.
SIDE_EFFECT_SNOMED: dict[SideEffectKind, dict] = {
    SideEffectKind.NAUSEA: coding(SNOMED, "422587007", "Nausea"),  # V3: reference §1.10
    SideEffectKind.DIZZINESS: coding(SNOMED, "404640003", "Dizziness"),  # V3: reference §1.10
}

MEDICATION: dict[Medication, list[dict]] = {
    Medication.RACEMIC_KETAMINE: [
        local(CS_MEDICATION, Medication.RACEMIC_KETAMINE, "Ketamine (racemic)"),
        coding(SNOMED, "333847008", "Product containing ketamine"),  # V3: reference §2 (gm-sde ketamine list)
    ],
    Medication.ESKETAMINE: [
        local(CS_MEDICATION, Medication.ESKETAMINE, "Esketamine"),
        coding(RXNORM, "2201623", "esketamine Nasal Spray"),  # V3: reference §2 (ndclist.com RxNorm mirror)
    ],
}

ROUTE: dict[Route, dict] = {
    Route.INTRAVENOUS: coding(SNOMED, "47625008", "Intravenous route"),  # V3: reference §2 (BeRouteOfAdministrationVS)
    Route.INTRAMUSCULAR: coding(SNOMED, "78421000", "Intramuscular route"),  # V3: same
    Route.INTRANASAL: coding(SNOMED, "46713006", "Nasal route"),  # V3: same
    Route.SUBLINGUAL: coding(SNOMED, "37839007", "Sublingual route"),  # V3: same
    Route.ORAL: coding(SNOMED, "26643006", "Oral route"),  # V3: same; also R5 route-codes expansion (S8)
}


# --- episode and status maps (required bindings; V: S1/S2 enum_values) ---------------------------------------

EPISODE_OF_CARE_STATUS = {
    EpisodeStatus.PLANNED: "planned",
    EpisodeStatus.ACTIVE: "active",
    EpisodeStatus.ON_HOLD: "onhold",  # V: reference §7 (no hyphen in R4 EpisodeOfCare)
    EpisodeStatus.FINISHED: "finished",
    EpisodeStatus.CANCELLED: "cancelled",
}
CAREPLAN_STATUS = {
    EpisodeStatus.PLANNED: "draft",
    EpisodeStatus.ACTIVE: "active",
    EpisodeStatus.ON_HOLD: "on-hold",
    EpisodeStatus.FINISHED: "completed",
    EpisodeStatus.CANCELLED: "revoked",
}
ENCOUNTER_STATUS = {
    SessionStatus.PLANNED: "planned",
    SessionStatus.IN_PROGRESS: "in-progress",
    SessionStatus.COMPLETED: "finished",
    SessionStatus.CANCELLED: "cancelled",
}
PROCEDURE_STATUS = {
    SessionStatus.PLANNED: "preparation",
    SessionStatus.IN_PROGRESS: "in-progress",
    SessionStatus.COMPLETED: "completed",
    SessionStatus.CANCELLED: "not-done",
}
AE_SEVERITY_OF = {s: coding(AE_SEVERITY, s.value, s.value.capitalize()) for s in SideEffectSeverity}
AE_OUTCOME_RESOLVED = coding(AE_OUTCOME, "resolved", "Resolved")  # V: S1 §1.10
AE_OUTCOME_ONGOING = coding(AE_OUTCOME, "ongoing", "Ongoing")  # V: S1 §1.10
AE_SERIOUS = coding(AE_SERIOUSNESS, "serious", "Serious")  # V: R4 codesystem-adverse-event-seriousness (above)
AE_NON_SERIOUS = coding(AE_SERIOUSNESS, "non-serious", "Non-serious")  # V: same
DETECTED_ISSUE_SEVERITY = {FlagSeverity.LOW: "low", FlagSeverity.MODERATE: "moderate", FlagSeverity.HIGH: "high"}
DETECTED_ISSUE_STATUS = {
    FlagStatus.OPEN: "preliminary",
    FlagStatus.ACKNOWLEDGED: "final",
    FlagStatus.RESOLVED: "cancelled",
}

# --- vital signs (reference §1.7, all V: S1/S3) -------------------------------------------------------------

BP_PANEL = coding(LOINC, "85354-9", "Blood pressure panel with all children optional")
SYSTOLIC = coding(LOINC, "8480-6", "Systolic blood pressure")
DIASTOLIC = coding(LOINC, "8462-4", "Diastolic blood pressure")
HEART_RATE = coding(LOINC, "8867-4", "Heart rate")
SPO2 = coding(LOINC, "2708-6", "Oxygen saturation in Arterial blood")
SPO2_PULSE_OX = coding(LOINC, "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry")
RESP_RATE = coding(LOINC, "9279-1", "Respiratory rate")
BODY_WEIGHT = coding(LOINC, "29463-7", "Body weight")
CADSS_TOTAL = local(CS_OBSERVATION, "cadss-total", "CADSS total score")  # UNVERIFIED in LOINC: local (ref §1.8)
MOAAS_SCORE = local(CS_OBSERVATION, "moaas-score", "MOAA/S score")  # UNVERIFIED in LOINC: local
READING_WITHOUT_VALUES = local(CS_OBSERVATION, "monitoring-reading", "Monitoring reading with no values")

# --- outcome measures (reference §1.8) -----------------------------------------------------------------------

QUESTIONNAIRE_URL = {
    Instrument.PHQ9: f"{QUESTIONNAIRE}/phq-9",
    Instrument.GAD7: f"{QUESTIONNAIRE}/gad-7",
    Instrument.PCL5: f"{QUESTIONNAIRE}/pcl-5",
    Instrument.CSSRS_SCREENER: f"{QUESTIONNAIRE}/c-ssrs-screener",
}
PANEL = {
    Instrument.PHQ9: coding(LOINC, "44249-1", "PHQ-9 quick depression assessment panel"),  # V: S3
    Instrument.GAD7: coding(LOINC, "69737-5", "Generalized anxiety disorder 7 item"),  # V3: reference §1.8
    Instrument.PCL5: coding(
        LOINC, "101697-1", "Post traumatic stress disorder checklist - civilian version DSM-5"
    ),  # V3: findacode.com
    Instrument.CSSRS_SCREENER: coding(
        LOINC, "93373-9", "Columbia - suicide severity rating scale screener - recent"
    ),  # V3: ref §1.8
}
TOTAL_SCORE = {
    Instrument.PHQ9: coding(
        LOINC, "44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]"
    ),  # V: S3
    Instrument.GAD7: coding(
        LOINC, "70274-6", "Generalized anxiety disorder 7 item (GAD-7) total score [Reported.PHQ]"
    ),  # V: ref §1.8
    Instrument.PCL5: coding(LOINC, "101698-9", "PTSD PCL-5 score [PCL-5]"),  # V3: findacode.com, healthassure.in
}
CSSRS_RISK_LEVEL = coding(LOINC, "93374-7", "Suicide risk level")  # V: S6 (ref §1.8)

PHQ9_ITEMS = [
    "44250-9",
    "44255-8",
    "44259-0",
    "44254-1",
    "44251-7",
    "44258-2",
    "44252-5",
    "44253-3",
    "44260-8",
]  # V: S3
PHQ9_DIFFICULTY = "69722-7"  # V: S3
# V: loinc.org/69729-2 (PHQ-SADS panel, LOINC 2.77, lists the GAD-7 items in order), docs/pages search
GAD7_ITEMS = ["69725-0", "68509-9", "69733-4", "69734-2", "69735-9", "69689-8", "69736-7"]
PCL5_ITEMS = [f"pcl-5-item-{n}" for n in range(1, 21)]  # UNVERIFIED LOINC item codes: local
# V: S6 C-SSRS-example-1 (ref §1.8) lists these item codes; their order against the screener questions is V3.
CSSRS_ITEMS = ["93246-7", "93247-5", "93248-3", "93249-1", "93250-9", "93267-3"]
CSSRS_BEHAVIOUR_3_MONTHS = "cssrs-behaviour-within-3-months"  # mapping of 93269-9 to this question not verified: local

ITEM_CODES: dict[Instrument, list[str]] = {
    Instrument.PHQ9: PHQ9_ITEMS,
    Instrument.GAD7: GAD7_ITEMS,
    Instrument.PCL5: PCL5_ITEMS,
    Instrument.CSSRS_SCREENER: CSSRS_ITEMS,
}
ITEM_SYSTEM: dict[Instrument, str] = {
    Instrument.PHQ9: LOINC,
    Instrument.GAD7: LOINC,
    Instrument.PCL5: CS_QUESTIONNAIRE_ITEM,
    Instrument.CSSRS_SCREENER: LOINC,
}

# Answer codings by ordinal value.
PHQ_ANSWERS = [
    coding(LOINC, "LA6568-5", "Not at all"),  # V: S3 Questionnaire-phq-9-example.json
    coding(LOINC, "LA6569-3", "Several days"),
    coding(LOINC, "LA6570-1", "More than half the days"),
    coding(LOINC, "LA6571-9", "Nearly every day"),
]
DIFFICULTY_ANSWERS = [
    coding(LOINC, "LA6572-7", "Not difficult at all"),  # V: S3 Questionnaire-phq-9-example.json
    coding(LOINC, "LA6573-5", "Somewhat difficult"),
    coding(LOINC, "LA6575-0", "Very difficult"),
    coding(LOINC, "LA6574-3", "Extremely difficult"),
]
GAD7_ANSWERS = [
    local(CS_ANSWER, f"gad-7-{n}", d)
    for n, d in enumerate(["Not at all", "Several days", "More than half the days", "Nearly every day"])
]
PCL5_ANSWERS = [
    local(CS_ANSWER, f"pcl-5-{n}", d)
    for n, d in enumerate(["Not at all", "A little bit", "Moderately", "Quite a bit", "Extremely"])
]
ANSWERS: dict[Instrument, list[dict]] = {
    Instrument.PHQ9: PHQ_ANSWERS,
    Instrument.GAD7: GAD7_ANSWERS,
    Instrument.PCL5: PCL5_ANSWERS,
}

# --- quality measures (Measure, MeasureReport) -------------------------------------------------------------------
# R4 4.0.1 code systems of Measure and MeasureReport, read in the HL7 Quality Measure IG (cqm 2.0.0) and Da Vinci
# DEQM examples (MeasureReport-summ-measurereport01/02): measure-scoring "proportion", measure-population
# "initial-population" | "denominator" | "denominator-exclusion" | "numerator", measure-improvement-notation
# "increase"; measure-type "outcome" (THO CodeSystem measure-type 3.0.1, build.fhir.org/ig/HL7/UTG; R4 Measure.type).
MEASURE = f"{KAPFHIR_BASE}/Measure"  # canonical base of the Measures kapfhir publishes
MEASURE_SCORING = "http://terminology.hl7.org/CodeSystem/measure-scoring"
MEASURE_TYPE = "http://terminology.hl7.org/CodeSystem/measure-type"
MEASURE_POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
MEASURE_IMPROVEMENT = "http://terminology.hl7.org/CodeSystem/measure-improvement-notation"
MEASURE_SCORING_PROPORTION = coding(MEASURE_SCORING, "proportion", "Proportion")
MEASURE_TYPE_OUTCOME = coding(MEASURE_TYPE, "outcome", "Outcome")
MEASURE_IMPROVEMENT_INCREASE = coding(MEASURE_IMPROVEMENT, "increase", "Increased score indicates improvement")
MEASURE_POPULATIONS = {
    "initial-population": coding(MEASURE_POPULATION, "initial-population", "Initial Population"),
    "denominator": coding(MEASURE_POPULATION, "denominator", "Denominator"),
    "denominator-exclusion": coding(MEASURE_POPULATION, "denominator-exclusion", "Denominator Exclusion"),
    "numerator": coding(MEASURE_POPULATION, "numerator", "Numerator"),
}

# --- Spravato REMS Patient Monitoring Form (service/domain/rems.py) -------------------------------------------------

REMS_QUESTIONNAIRE_URL = f"{QUESTIONNAIRE}/spravato-rems-patient-monitoring"
ADMINISTRATIVE_GENDER = "http://hl7.org/fhir/administrative-gender"  # V: R4 core CodeSystem (Patient.gender)
REMS_TASK = local(CS_REMS, "patient-monitoring-form", "Send the Spravato REMS Patient Monitoring Form")
REMS_BUSINESS_STATUS = {
    "unsent": local(CS_REMS, "unsent", "Not sent yet"),
    "submitted": local(CS_REMS, "submitted", "Sent to the REMS program"),
    "amended": local(CS_REMS, "amended", "Changed since it was sent: send a corrected form"),
}
REMS_CHANNEL_TYPE = local(CS_REMS, "channel", "How the form was sent")
REMS_CHANNEL = {
    "portal": local(CS_REMS, "portal", "REMS program portal"),
    "fax": local(CS_REMS, "fax", "Fax to the REMS program"),
}
REMS_CONFIRMATION = local(CS_REMS, "confirmation-number", "Confirmation number of the REMS program")
REMS_SENT_FORM = local(CS_REMS, "sent-form", "The form as sent")
REMS_DOSE_OPTION = {
    "56 mg": local(CS_REMS, "56-mg", "56 mg"),
    "84 mg": local(CS_REMS, "84-mg", "84 mg"),
    "Other": local(CS_REMS, "other-dose", "Other"),
}
REMS_CONCEPTS = [
    REMS_TASK,
    *REMS_BUSINESS_STATUS.values(),
    REMS_CHANNEL_TYPE,
    *REMS_CHANNEL.values(),
    REMS_CONFIRMATION,
    REMS_SENT_FORM,
    *REMS_DOSE_OPTION.values(),
]

# --- documents, audit and capability ---------------------------------------------------------------------------

US_CORE_DOCUMENT_REFERENCE = f"{US_CORE}/us-core-documentreference"  # V: S3 (US Core DocumentReference profile)
# V: hl7.org/fhir/us/core/STU3.1.1/ValueSet-us-core-documentreference-category.html (docs search)
US_CORE_DOCREF_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
DOCUMENT_CATEGORY_CLINICAL_NOTE = coding(US_CORE_DOCREF_CATEGORY, "clinical-note", "Clinical Note")
# V: hl7.org/fhir/us/core/stu3.1.1/ValueSet-us-core-clinical-note-type.html lists 11506-3 "Progress note" (docs search)
PROGRESS_NOTE = coding(LOINC, "11506-3", "Progress note")
CONSENT_DOCUMENT_TYPE = coding(LOINC, "59284-0")  # V: S1 §1.1 (as CONSENT_CATEGORY_LOINC; sent without display)

# AuditEvent (R4 4.0.1): type, subtype and source type as kapfhir has served them. audit-event-type "rest" and DCM
# 110106 "Export": hl7.org/fhir/6.0.0-ballot1/valueset-audit-event-type.html and the DSTU2 page (docs search).
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
DICOM_DCM = "http://dicom.nema.org/resources/ontology/DCM"
AUDIT_TYPE_REST = coding(AUDIT_EVENT_TYPE, "rest", "RESTful Operation")
AUDIT_TYPE_EXPORT = coding(DICOM_DCM, "110106", "Export")
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"  # R4 AuditEvent.subtype extensible binding
CS_AUDIT_SUBTYPE = f"{CS}/kap-audit-subtype"  # kapfhir's own subtypes (pdf prints, REMS sendings, ...)
CLIENT_ID_SYSTEM = f"{KAPFHIR_BASE}/id/client"  # AuditEvent.agent.who: the OAuth client
SECURITY_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
SOURCE_TYPE_APPLICATION_SERVER = coding(SECURITY_SOURCE_TYPE, "4")  # R4 audit-source-type: "Application Server"

# CapabilityStatement: hl7.org/fhir/2021Mar/valueset-restful-security-service.html (SMART-on-FHIR, docs search)
RESTFUL_SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
SECURITY_SERVICE_SMART = coding(RESTFUL_SECURITY_SERVICE, "SMART-on-FHIR")
OAUTH_URIS_EXTENSION = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"  # SMART App Launch
OPERATION_VALIDATE = "http://hl7.org/fhir/OperationDefinition/Resource-validate"  # R4 $validate
OPERATION_EVALUATE_MEASURE = "http://hl7.org/fhir/OperationDefinition/Measure-evaluate-measure"  # R4 $evaluate-measure
