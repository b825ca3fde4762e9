"""The REMS Patient Monitoring Form as the domain derives it (service/domain/rems.py): what makes it complete, what
it names as missing, and which sessions have one. Deadlines (which follow the clock) are in test_safety_rules.py."""

from __future__ import annotations

from datetime import date, timedelta

from service.domain import rems
from service.domain.chart import EpisodeChart
from service.domain.model import (
    Clinic,
    ConcomitantMedication,
    ControlledSubstanceRecord,
    HealthcareSetting,
    HumanName,
    Identifier,
    Patient,
    Practitioner,
    SideEffect,
)
from service.domain.vocabulary import (
    AdministrativeGender,
    ConcomitantMedicationClass,
    PractitionerRole,
    ReadingTiming,
    SideEffectKind,
    SideEffectSeverity,
)
from tests.support.builders import T0, bp, consent, dosing_session, episode, esketamine_dose, iv_dose, with_records

FIRST = T0 + timedelta(minutes=15)
SETTING = HealthcareSetting(
    address_line_1="1 Synthetic Plaza",
    city="Denver",
    state="CO",
    postal_code="80202",
    phone="303-555-0100",
    email="rems@clinic.example.org",
)


def chart(*records, setting: HealthcareSetting | None = SETTING) -> EpisodeChart:
    readings = [
        bp("r1", T0 + timedelta(minutes=5), ReadingTiming.PRE_DOSE, moaas_score=5),
        bp("r2", FIRST + timedelta(minutes=40), ReadingTiming.POST_DOSE, moaas_score=5, cadss_total=0),
        bp("r3", FIRST + timedelta(minutes=125), ReadingTiming.DISCHARGE, moaas_score=5, cadss_total=0),
    ]
    lorazepam = ConcomitantMedication(
        id="m-1", medication_class=ConcomitantMedicationClass.BENZODIAZEPINE, name="lorazepam", start=date(2026, 1, 1)
    )
    defaults = [
        consent(),
        dosing_session(discharge_at=FIRST + timedelta(minutes=130), clinician_ids=["p-nurse"]),
        *readings,
        esketamine_dose(controlled_substance=ControlledSubstanceRecord(lot_number="SYN-LOT")),
        lorazepam,
    ]
    by_id = {r.id: r for r in defaults}
    by_id |= {r.id: r for r in records}
    ep = with_records(episode(), *[r for r in by_id.values() if r is not None])
    return EpisodeChart(
        clinic=Clinic(id="c", name="Synthetic Clinic", identifier_system="https://c.example.org/id", setting=setting),
        patient=Patient(
            id="pt",
            mrn=Identifier(system="https://mrn.example.org", value="SYN-1"),
            name=HumanName(family="Examplar", given=["Priya", "Jo"]),
            birth_date=date(1969, 11, 20),
            gender=AdministrativeGender.FEMALE,
        ),
        episode=ep,
        practitioners=[
            Practitioner(id="p-nurse", name=HumanName(family="Standin", given=["Alex"]), roles=[PractitionerRole.NURSE])
        ],
    )


def form_of(c: EpisodeChart) -> rems.RemsForm:
    (form,) = rems.forms_of(c)
    return form


def test_a_fully_recorded_session_gives_a_complete_form() -> None:
    form = form_of(chart())
    assert form.status == rems.COMPLETED and form.missing == []
    assert form.answers["medication.benzodiazepines"] is True and form.answers["medication.opioids"] is False
    assert form.answers["patient.middle-initial"] == "J" and form.answers["session.lot-number"] == "SYN-LOT"
    assert form.answers["session.total-minutes"] == 130 and form.answers["session.ready-minutes"] == 40
    assert form.answers["session.sedation"] is False and "session.sedation-resolved" not in form.answers
    assert form.due_date == date(2026, 3, 9) and form.submission_state == rems.UNSENT


def test_missing_facts_are_named_in_clinical_words() -> None:
    c = chart(setting=None)
    del c.episode.records["m-1"]  # no concomitant medication recorded at all
    del c.episode.records["r2"]
    form = form_of(c)
    assert form.status == rems.IN_PROGRESS
    assert "blood pressure about 40 minutes after the dose" in form.missing
    assert "concomitant medications" in form.missing
    assert "the healthcare setting's address" in form.missing
    assert "session.bp-40-minutes" in form.missing_fields and "medication.maois" in form.missing_fields


def test_an_unusual_dose_asks_for_the_milligrams_and_an_unresolved_effect_for_its_resolution() -> None:
    depression = SideEffect(
        id="se-1",
        session_id="s-1",
        kind=SideEffectKind.RESPIRATORY_DEPRESSION,
        severity=SideEffectSeverity.MODERATE,
        onset_at=FIRST + timedelta(minutes=20),
    )
    lot = ControlledSubstanceRecord(lot_number="SYN-LOT")
    c = chart(esketamine_dose(dose_mg=28.0, controlled_substance=lot), depression)
    form = form_of(c)
    assert form.answers["session.dose"] == "Other" and form.answers["session.dose-other-mg"] == 28.0
    assert form.answers["session.respiratory-depression"] is True
    # Unresolved: whether it resolved, and so when the patient was ready to leave, are still unknown.
    assert set(form.missing) == {
        "when the respiratory depression resolved",
        rems.FIELDS["session.ready-minutes"].missing_as,
    }


def test_racemic_ketamine_sessions_have_no_form() -> None:
    ep = with_records(episode(), consent(), dosing_session(), iv_dose())
    assert rems.reportable_sessions(ep) == []
