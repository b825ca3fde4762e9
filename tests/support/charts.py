"""Hand-built EpisodeCharts for the expected-bundle fixtures (fixtures/fhir/<name>.json), and copies of them with
unique identifiers for tests that share one FHIR server.

Built through the Episode aggregate (add, amend, mark_entered_in_error, evaluate_safety), so derived values
(off-label, totals, bands, risk levels, safety flags) are the domain's own. Every time is fixed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from mappings.bundle import to_transaction_bundle
from service.domain.chart import EpisodeChart
from service.domain.episode import Episode
from service.domain.model import (
    BodyWeight,
    CareTeamMember,
    Clinic,
    ClinicalSession,
    ConcomitantMedication,
    Consent,
    ControlledSubstanceRecord,
    DosingOrder,
    DosingRecord,
    HumanName,
    Identifier,
    Indication,
    MonitoringReading,
    OutcomeMeasure,
    Patient,
    Practitioner,
    SideEffect,
)
from service.domain.rules import SafetyPolicy
from service.domain.vocabulary import (
    AdministrativeGender,
    ConcomitantMedicationClass,
    DoseUnit,
    DosingSetting,
    EpisodeStatus,
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
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
POLICY = SafetyPolicy()
NOTE = "Patient spoke about the 2019 accident and her brother; SECRET-NOTE-MARKER"


def _clinic() -> Clinic:
    return Clinic(id="clinic-1", name="Harbor KAP Clinic", identifier_system="https://harbor-kap.example.org/fhir/id")


def _team() -> list[Practitioner]:
    return [
        Practitioner(
            id="dr-ada",
            name=HumanName(family="Lovelace", given=["Ada"]),
            npi="1234567893",
            roles=[PractitionerRole.PRESCRIBER],
        ),
        Practitioner(id="th-carl", name=HumanName(family="Rogers", given=["Carl"]), roles=[PractitionerRole.THERAPIST]),
        Practitioner(
            id="rn-flo",
            name=HumanName(family="Nightingale", given=["Florence"]),
            roles=[PractitionerRole.NURSE, PractitionerRole.MONITOR],
        ),
    ]


def _patient(patient_id: str = "pt-1") -> Patient:
    return Patient(
        id=patient_id,
        mrn=Identifier(system="https://harbor-kap.example.org/mrn", value="MRN-000123"),
        name=HumanName(family="Doe", given=["Jane", "Q"]),
        birth_date=date(1984, 5, 17),
        gender=AdministrativeGender.FEMALE,
    )


def racemic_iv_trd() -> EpisodeChart:
    """IV racemic ketamine for TRD: a full course with an amendment, an entered-in-error reading and flags."""
    ep = Episode(
        id="ep-iv-1",
        patient_id="pt-1",
        indications=[
            Indication(
                kind=IndicationKind.DEPRESSION,
                icd10cm="F33.2",
                snomed="36474008",
                display="Major depressive disorder, recurrent, severe",
                treatment_resistant=True,
            )
        ],
        care_team=[
            CareTeamMember(practitioner_id="dr-ada", role=PractitionerRole.PRESCRIBER),
            CareTeamMember(practitioner_id="th-carl", role=PractitionerRole.THERAPIST),
            CareTeamMember(practitioner_id="rn-flo", role=PractitionerRole.NURSE),
        ],
        period_start=T0 - timedelta(days=30),
        created_at=T0 - timedelta(days=30),
        updated_at=T0 + timedelta(days=9),
    )
    now = T0 - timedelta(days=30)
    ep.add(
        ClinicalSession(
            id="s-assess",
            kind=SessionKind.ASSESSMENT,
            status=SessionStatus.COMPLETED,
            start=T0 - timedelta(days=29),
            end=T0 - timedelta(days=29, minutes=-60),
            clinician_ids=["dr-ada"],
            psychotherapy_notes=NOTE,
        ),
        now=now,
    )
    baseline = OutcomeMeasure(
        id="m-phq-1",
        instrument=Instrument.PHQ9,
        administered_at=T0 - timedelta(days=29),
        session_id="s-assess",
        items=[2, 3, 2, 2, 1, 2, 1, 1, 1],
        difficulty=2,
    )
    ep.score(baseline, POLICY, None)
    ep.add(baseline, now=now)
    ep.transition(Phase.PREPARATION, at=T0 - timedelta(days=20), actor="dr-ada")
    ep.add(
        Consent(
            id="consent-1",
            form_url="https://harbor-kap.example.org/forms/kap-consent",
            form_version="3",
            signed_at=T0 - timedelta(days=20),
            witness_practitioner_id="rn-flo",
            witness_name="Florence Nightingale",
            off_label_use_acknowledged=True,
            routes_covered=[Route.INTRAVENOUS, Route.INTRAMUSCULAR],
            valid_from=T0 - timedelta(days=20),
            valid_until=T0 + timedelta(days=160),
        ),
        now=T0 - timedelta(days=20),
    )
    ep.add(
        ClinicalSession(
            id="s-prep",
            kind=SessionKind.PREPARATION,
            status=SessionStatus.COMPLETED,
            start=T0 - timedelta(days=10),
            end=T0 - timedelta(days=10, minutes=-50),
            modality=Modality.TELEHEALTH,
            clinician_ids=["th-carl"],
            psychotherapy_notes=NOTE,
        ),
        now=T0 - timedelta(days=10),
    )
    ep.add(
        DosingOrder(
            id="order-1",
            medication=Medication.RACEMIC_KETAMINE,
            route=Route.INTRAVENOUS,
            dose_value=0.5,
            dose_unit=DoseUnit.MG_PER_KG,
            frequency="twice weekly",
            number_of_sessions=6,
            prescriber_id="dr-ada",
            ordered_at=T0 - timedelta(days=5),
            off_label_reason="Racemic ketamine is not FDA-approved for depression",
        ),
        now=T0 - timedelta(days=5),
    )
    ep.transition(Phase.DOSING, at=T0 - timedelta(days=1), actor="dr-ada")
    ep.add(
        ClinicalSession(
            id="s-dose-1",
            kind=SessionKind.DOSING,
            status=SessionStatus.COMPLETED,
            start=T0,
            end=T0 + timedelta(hours=2),
            clinician_ids=["dr-ada", "rn-flo"],
            setting=DosingSetting.CLINIC,
            discharge_at=T0 + timedelta(hours=2),
            psychotherapy_notes=NOTE,
        ),
        now=T0,
    )
    ep.add(BodyWeight(id="w-1", measured_at=T0 - timedelta(minutes=20), weight_kg=70.0), now=T0)
    ep.add(
        MonitoringReading(
            id="r-pre",
            session_id="s-dose-1",
            taken_at=T0 - timedelta(minutes=10),
            timing=ReadingTiming.PRE_DOSE,
            systolic_mmhg=122,
            diastolic_mmhg=78,
            heart_rate_per_min=72,
            spo2_percent=98,
            respiratory_rate_per_min=14,
        ),
        now=T0,
    )
    ep.add(
        DosingRecord(
            id="dose-1",
            session_id="s-dose-1",
            order_id="order-1",
            medication=Medication.RACEMIC_KETAMINE,
            route=Route.INTRAVENOUS,
            dose_mg=35.0,
            weight_kg=70.0,
            infusion_duration_min=40,
            start=T0,
            end=T0 + timedelta(minutes=40),
            administered_by_id="rn-flo",
            supervised_by_id="dr-ada",
            controlled_substance=ControlledSubstanceRecord(
                ndc="67457-108-10",
                lot_number="LOT-4471",
                expiry=date(2027, 1, 31),
                amount_drawn_mg=50.0,
                amount_administered_mg=35.0,
                amount_wasted_mg=15.0,
                waste_witness_id="dr-ada",
            ),
        ),
        now=T0 + timedelta(minutes=45),
    )
    ep.add(
        MonitoringReading(
            id="r-during",
            session_id="s-dose-1",
            taken_at=T0 + timedelta(minutes=20),
            timing=ReadingTiming.DURING,
            systolic_mmhg=141,
            heart_rate_per_min=88,
            cadss_total=21,
            moaas_score=4,
        ),
        now=T0 + timedelta(minutes=45),
    )
    ep.add(
        MonitoringReading(
            id="r-wrong",
            session_id="s-dose-1",
            taken_at=T0 + timedelta(minutes=30),
            timing=ReadingTiming.DURING,
            systolic_mmhg=190,
            diastolic_mmhg=110,
        ),
        now=T0 + timedelta(minutes=45),
    )
    ep.mark_entered_in_error("r-wrong", now=T0 + timedelta(minutes=50))
    ep.add(
        MonitoringReading(
            id="r-discharge",
            session_id="s-dose-1",
            taken_at=T0 + timedelta(minutes=115),
            timing=ReadingTiming.DISCHARGE,
            systolic_mmhg=126,
            diastolic_mmhg=80,
            spo2_percent=97,
        ),
        now=T0 + timedelta(hours=2),
    )
    ep.add(
        SideEffect(
            id="ae-1",
            session_id="s-dose-1",
            dose_id="dose-1",
            kind=SideEffectKind.NAUSEA,
            severity=SideEffectSeverity.MILD,
            onset_at=T0 + timedelta(minutes=25),
            resolved_at=T0 + timedelta(minutes=70),
        ),
        now=T0 + timedelta(hours=2),
    )
    ep.amend(
        "ae-1",
        SideEffect(
            id="ae-1",
            session_id="s-dose-1",
            dose_id="dose-1",
            kind=SideEffectKind.NAUSEA,
            severity=SideEffectSeverity.MODERATE,
            onset_at=T0 + timedelta(minutes=25),
            resolved_at=T0 + timedelta(minutes=70),
        ),
        now=T0 + timedelta(hours=3),
    )
    ep.add(
        ConcomitantMedication(
            id="cm-1",
            medication_class=ConcomitantMedicationClass.BENZODIAZEPINE,
            name="lorazepam",
            dose_text="0.5 mg at night as needed",
            start=date(2025, 11, 1),
        ),
        now=T0 - timedelta(days=29),
    )
    ep.transition(Phase.INTEGRATION, at=T0 + timedelta(days=1), actor="th-carl")
    ep.add(
        ClinicalSession(
            id="s-int-1",
            kind=SessionKind.INTEGRATION,
            status=SessionStatus.COMPLETED,
            start=T0 + timedelta(days=2),
            end=T0 + timedelta(days=2, minutes=55),
            clinician_ids=["th-carl"],
            psychotherapy_notes=NOTE,
        ),
        now=T0 + timedelta(days=2),
    )
    follow_up = OutcomeMeasure(
        id="m-phq-2",
        instrument=Instrument.PHQ9,
        administered_at=T0 + timedelta(days=2),
        session_id="s-int-1",
        items=[1, 1, 1, 1, 0, 1, 0, 0, 0],
        difficulty=1,
    )
    ep.score(follow_up, POLICY, None)
    ep.add(follow_up, now=T0 + timedelta(days=2))
    ep.evaluate_safety(POLICY, now=T0 + timedelta(days=2))
    flag = next(f for f in ep.flags if f.rule_id == "suicide-risk-positive")
    ep.acknowledge_flag(flag.id, by="dr-ada", at=T0 + timedelta(days=3), comment="Assessed in person; safety plan.")
    ep.version = 4
    return EpisodeChart(
        clinic=_clinic(),
        patient=_patient(),
        episode=ep,
        practitioners=_team(),
        body_weights=[
            BodyWeight(
                id="w-0",
                measured_at=T0 - timedelta(days=29),
                weight_kg=71.5,
                recorded_at=T0 - timedelta(days=29),
                updated_at=T0 - timedelta(days=29),
            )
        ],
    )


def esketamine_sud() -> EpisodeChart:
    """Esketamine for TRD with a substance-use comorbidity (42 CFR Part 2 label), C-SSRS and GAD-7."""
    ep = Episode(
        id="ep-esk-1",
        patient_id="pt-2",
        indications=[
            Indication(kind=IndicationKind.DEPRESSION, icd10cm="F33.2", acute_suicidal_ideation=True),
            Indication(kind=IndicationKind.SUBSTANCE_USE, icd10cm="F10.20", display="Alcohol dependence"),
        ],
        care_team=[CareTeamMember(practitioner_id="dr-ada", role=PractitionerRole.PRESCRIBER)],
        period_start=T0,
        status=EpisodeStatus.ACTIVE,
        created_at=T0,
        updated_at=T0 + timedelta(days=1),
    )
    ep.add(
        Consent(
            id="consent-e",
            form_url="https://harbor-kap.example.org/forms/esketamine",
            form_version="1.2",
            signed_at=T0,
            routes_covered=[Route.INTRANASAL],
        ),
        now=T0,
    )
    cssrs = OutcomeMeasure(
        id="m-cssrs",
        instrument=Instrument.CSSRS_SCREENER,
        administered_at=T0,
        items=[1, 1, 0, 0, 0, 1],
        behaviour_within_3_months=False,
    )
    ep.score(cssrs, POLICY, None)
    ep.add(cssrs, now=T0)
    gad = OutcomeMeasure(id="m-gad", instrument=Instrument.GAD7, administered_at=T0, items=[2, 2, 1, 1, 0, 1, 2])
    ep.score(gad, POLICY, None)
    ep.add(gad, now=T0)
    ep.transition(Phase.PREPARATION, at=T0 + timedelta(hours=1), actor="dr-ada")
    ep.transition(Phase.DOSING, at=T0 + timedelta(hours=2), actor="dr-ada")
    start = T0 + timedelta(days=1)
    ep.add(
        ClinicalSession(
            id="s-esk-1",
            kind=SessionKind.DOSING,
            status=SessionStatus.COMPLETED,
            start=start,
            end=start + timedelta(minutes=130),
            clinician_ids=["dr-ada"],
            setting=DosingSetting.CLINIC,
            discharge_at=start + timedelta(minutes=100),
        ),
        now=start,
    )
    ep.add(
        DosingRecord(
            id="dose-e1",
            session_id="s-esk-1",
            medication=Medication.ESKETAMINE,
            route=Route.INTRANASAL,
            dose_mg=56.0,
            start=start + timedelta(minutes=5),
            end=start + timedelta(minutes=15),
            supervised_by_id="dr-ada",
            controlled_substance=ControlledSubstanceRecord(ndc="50458-028-02", lot_number="SPR-88"),
        ),
        now=start + timedelta(minutes=20),
    )
    ep.add(
        MonitoringReading(
            id="r-e-pre",
            session_id="s-esk-1",
            taken_at=start,
            timing=ReadingTiming.PRE_DOSE,
            systolic_mmhg=130,
            diastolic_mmhg=84,
            self_reported=False,
        ),
        now=start,
    )
    ep.add(
        MonitoringReading(
            id="r-e-empty", session_id="s-esk-1", taken_at=start + timedelta(minutes=60), timing=ReadingTiming.POST_DOSE
        ),
        now=start + timedelta(minutes=60),
    )
    ep.add(
        ClinicalSession(
            id="s-esk-home",
            kind=SessionKind.DOSING,
            status=SessionStatus.PLANNED,
            start=start + timedelta(days=7),
            modality=Modality.TELEHEALTH,
            setting=DosingSetting.HOME,
            check_in_at=start + timedelta(days=7, minutes=-5),
        ),
        now=start + timedelta(hours=3),
    )
    ep.add(
        SideEffect(
            id="ae-dis",
            session_id="s-esk-1",
            dose_id="dose-e1",
            kind=SideEffectKind.OTHER,
            other_text="Transient tinnitus",
            severity=SideEffectSeverity.MILD,
            onset_at=start + timedelta(minutes=30),
        ),
        now=start + timedelta(hours=2),
    )
    ep.evaluate_safety(POLICY, now=start + timedelta(hours=3))
    return EpisodeChart(clinic=_clinic(), patient=_patient("pt-2"), episode=ep, practitioners=_team()[:1])


def discontinued_pcl5() -> EpisodeChart:
    """PTSD course discontinued in preparation, with a withdrawn consent; no doses."""
    ep = Episode(
        id="ep-ptsd-1",
        patient_id="pt-3",
        indications=[Indication(kind=IndicationKind.PTSD, icd10cm="F43.12", snomed="47505003")],
        period_start=T0,
        status=EpisodeStatus.PLANNED,
        created_at=T0,
    )
    ep.add(
        ClinicalSession(
            id="s-p-assess",
            kind=SessionKind.ASSESSMENT,
            status=SessionStatus.COMPLETED,
            start=T0,
            end=T0 + timedelta(minutes=90),
            psychotherapy_notes=NOTE,
        ),
        now=T0,
    )
    pcl = OutcomeMeasure(
        id="m-pcl",
        instrument=Instrument.PCL5,
        administered_at=T0,
        session_id="s-p-assess",
        items=[3, 2, 2, 3, 4, 2, 2, 1, 3, 2, 2, 1, 2, 3, 2, 2, 1, 2, 3, 2],
    )
    ep.score(pcl, POLICY, None)
    ep.add(pcl, now=T0)
    ep.transition(Phase.PREPARATION, at=T0 + timedelta(days=1), actor="dr-ada")
    ep.add(
        Consent(
            id="consent-p",
            form_url="https://harbor-kap.example.org/forms/kap-consent",
            form_version="3",
            signed_at=T0 + timedelta(days=1),
            signed_by_patient=True,
            routes_covered=[Route.SUBLINGUAL],
            withdrawn_at=T0 + timedelta(days=4),
            withdrawal_reason="Patient moved away",
        ),
        now=T0 + timedelta(days=4),
    )
    ep.transition(Phase.DISCONTINUED, at=T0 + timedelta(days=5), actor="dr-ada", reason="Patient moved away")
    ep.saved_as(3, T0 + timedelta(days=5))  # the discontinuation changed the header: its version follows
    return EpisodeChart(clinic=_clinic(), patient=_patient("pt-3"), episode=ep, practitioners=_team()[:1])


CHARTS: dict[str, Callable[[], EpisodeChart]] = {
    "racemic-iv-trd": racemic_iv_trd,
    "esketamine-sud": esketamine_sud,
    "discontinued-pcl5": discontinued_pcl5,
}


def unique_chart(name: str, tag: str | None = None) -> EpisodeChart:
    """A fixture chart whose identifiers (clinic system, MRN) are unique, so tests share one server."""
    tag = tag or uuid.uuid4().hex[:10]
    chart = CHARTS[name]()
    clinic = replace(chart.clinic, identifier_system=f"https://t{tag}.example.org/fhir/id")
    patient = replace(chart.patient, mrn=Identifier(system=f"https://t{tag}.example.org/mrn", value=f"MRN-{tag}"))
    return replace(chart, clinic=clinic, patient=patient)


def bundle_of(chart: EpisodeChart) -> dict:
    return to_transaction_bundle(chart)
