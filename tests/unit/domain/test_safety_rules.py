"""One test (at least) per safety rule: each rule flags, never refuses, and reads clinical time."""

from dataclasses import replace
from datetime import timedelta

import pytest

from service.domain.model import Indication
from service.domain.rules import RULE_IDS
from service.domain.vocabulary import (
    DosingSetting,
    FlagStatus,
    IndicationKind,
    Modality,
    Phase,
    ReadingTiming,
    Route,
    SessionStatus,
)
from tests.support.builders import (
    NOW,
    POLICY,
    REMS_DEADLINE_RULES,
    T0,
    bp,
    consent,
    dosing_session,
    episode,
    esketamine_dose,
    iv_dose,
    phq9,
    rules_raised,
    with_records,
)

PRE = T0 + timedelta(minutes=5)


def clean_iv_episode(**dose_overrides):
    return with_records(
        episode(), consent(), dosing_session(), bp("r-pre", PRE, ReadingTiming.PRE_DOSE), iv_dose(**dose_overrides)
    )


def test_a_clean_iv_session_raises_no_flag():
    assert rules_raised(clean_iv_episode()) == set()


def test_dose_without_any_consent_is_flagged_high():
    ep = with_records(episode(), dosing_session(), bp("r-pre", PRE, ReadingTiming.PRE_DOSE), iv_dose())
    ep.evaluate_safety(POLICY, now=NOW)
    (flag,) = ep.open_flags()
    assert flag.rule_id == "dose-without-active-consent" and flag.severity == "high"
    assert flag.record_ids == ["d-1"]
    assert "d-1" in ep.records  # the dose is stored whatever the rule says


def test_consent_signed_after_the_dose_does_not_cover_it_whatever_the_request_order():
    late = consent(signed_at=T0 + timedelta(days=1))
    # The consent request arrives first, the dose after: clinical time decides, not arrival.
    ep = with_records(episode(), late, dosing_session(), bp("r-pre", PRE, ReadingTiming.PRE_DOSE), iv_dose())
    assert rules_raised(ep) == {"dose-without-active-consent"}


def test_withdrawn_consent_no_longer_covers_later_doses():
    ep = with_records(
        episode(),
        consent(withdrawn_at=T0 - timedelta(hours=1), withdrawal_reason="changed mind"),
        dosing_session(),
        bp("r-pre", PRE, ReadingTiming.PRE_DOSE),
        iv_dose(),
    )
    assert "dose-without-active-consent" in rules_raised(ep)


def test_consent_that_does_not_cover_the_route_is_flagged():
    ep = with_records(
        episode(),
        consent(routes_covered=[Route.INTRAMUSCULAR]),
        dosing_session(),
        bp("r-pre", PRE, ReadingTiming.PRE_DOSE),
        iv_dose(),
    )
    assert "dose-without-active-consent" in rules_raised(ep)


def test_off_label_dose_with_a_consent_that_does_not_acknowledge_off_label_use():
    ep = with_records(
        episode(),
        consent(off_label_use_acknowledged=False),
        dosing_session(),
        bp("r-pre", PRE, ReadingTiming.PRE_DOSE),
        iv_dose(),
    )
    assert rules_raised(ep) == {"off-label-use-not-acknowledged"}


def test_dose_outside_dosing_or_maintenance_phase():
    ep = with_records(
        episode(in_dosing_from=None), consent(), dosing_session(), bp("r-pre", PRE, ReadingTiming.PRE_DOSE), iv_dose()
    )
    assert rules_raised(ep) == {"dose-outside-dosing-phase"}


def test_booster_in_maintenance_is_not_flagged():
    ep = episode(in_dosing_from=T0 - timedelta(days=20))
    ep.transition(Phase.INTEGRATION, at=T0 - timedelta(days=10), actor="t")
    ep.transition(Phase.MAINTENANCE, at=T0 - timedelta(days=5), actor="t")
    with_records(
        ep,
        consent(signed_at=T0 - timedelta(days=25)),
        dosing_session(),
        bp("r-pre", PRE, ReadingTiming.PRE_DOSE),
        iv_dose(),
    )
    assert rules_raised(ep) == set()


def test_in_clinic_dose_without_pre_dose_blood_pressure():
    ep = with_records(
        episode(),
        consent(),
        dosing_session(),
        bp("r-post", T0 + timedelta(hours=1), ReadingTiming.POST_DOSE),
        iv_dose(),
    )
    assert rules_raised(ep) == {"no-pre-dose-blood-pressure"}


def test_a_pre_dose_reading_taken_after_the_dose_does_not_count():
    ep = with_records(
        episode(),
        consent(),
        dosing_session(),
        bp("r-pre", T0 + timedelta(minutes=30), ReadingTiming.PRE_DOSE),
        iv_dose(),
    )
    assert rules_raised(ep) == {"no-pre-dose-blood-pressure"}


def home_episode(check_in_minutes_after_dose: int | None):
    session = dosing_session(
        setting=DosingSetting.HOME,
        modality=Modality.TELEHEALTH,
        discharge_at=None,
        check_in_at=None
        if check_in_minutes_after_dose is None
        else T0 + timedelta(minutes=15 + check_in_minutes_after_dose),
    )
    dose = iv_dose(route=Route.SUBLINGUAL, setting=DosingSetting.HOME, dose_mg=200.0, infusion_duration_min=None)
    return with_records(episode(), consent(), session, dose)


def test_home_dose_needs_no_in_person_vitals_but_a_check_in():
    assert rules_raised(home_episode(check_in_minutes_after_dose=-10)) == set()
    assert rules_raised(home_episode(check_in_minutes_after_dose=None)) == {"home-dose-without-check-in"}


def test_home_check_in_outside_the_configured_window_is_flagged():
    assert rules_raised(home_episode(check_in_minutes_after_dose=-(60 + 40))) == {"home-dose-without-check-in"}


def test_home_dose_by_injection_is_flagged():
    session = dosing_session(setting=DosingSetting.HOME, check_in_at=T0 + timedelta(minutes=15))
    ep = with_records(episode(), consent(), session, iv_dose(setting=DosingSetting.HOME))
    assert "home-dose-route" in rules_raised(ep)


def test_racemic_dose_above_the_route_maximum_is_flagged():
    ep = clean_iv_episode(dose_mg=70.0)  # 1.0 mg/kg IV, above 0.75
    ep.evaluate_safety(POLICY, now=NOW)
    (flag,) = ep.open_flags()
    assert flag.rule_id == "racemic-dose-above-max-mg-per-kg"
    assert "1.0 mg/kg" in flag.explanation and "0.75" in flag.explanation


def test_an_override_reason_accepts_a_dose_above_the_maximum():
    assert rules_raised(clean_iv_episode(dose_mg=70.0, override_reason="titration per protocol v2")) == set()


def test_racemic_dose_without_a_weight_is_flagged():
    assert rules_raised(clean_iv_episode(weight_kg=None)) == {"racemic-dose-without-weight"}


def esketamine_episode(dose_mg: float = 56.0, readings=None, discharge_after_min: int = 130):
    first = T0 + timedelta(minutes=15)
    readings = (
        readings
        if readings is not None
        else [
            bp("r1", T0 + timedelta(minutes=5), ReadingTiming.PRE_DOSE),
            bp("r2", first + timedelta(minutes=40), ReadingTiming.POST_DOSE),
            bp("r3", first + timedelta(minutes=discharge_after_min - 5), ReadingTiming.DISCHARGE),
        ]
    )
    session = dosing_session(discharge_at=first + timedelta(minutes=discharge_after_min))
    return with_records(episode(), consent(), session, *readings, esketamine_dose(dose_mg=dose_mg))


def test_a_clean_esketamine_rems_session_raises_no_flag():
    assert rules_raised(esketamine_episode()) == set()


@pytest.mark.parametrize("dose_mg", [28.0, 112.0, 50.0])
def test_esketamine_dose_other_than_56_or_84_mg_is_flagged(dose_mg):
    assert rules_raised(esketamine_episode(dose_mg=dose_mg)) == {"esketamine-dose-not-usual"}


def test_mg_per_kg_bounds_do_not_apply_to_esketamine():
    ep = esketamine_episode(dose_mg=84.0)
    replace_weight = ep.records["d-1"]
    replace_weight.weight_kg = 40.0  # 2.1 mg/kg: irrelevant for a fixed-dose device
    assert rules_raised(ep) == set()


def test_esketamine_observation_shorter_than_two_hours_is_flagged():
    assert rules_raised(esketamine_episode(discharge_after_min=90)) == {"esketamine-observation-too-short"}


def test_esketamine_missing_the_40_minute_blood_pressure_is_flagged():
    readings = [
        bp("r1", T0 + timedelta(minutes=5), ReadingTiming.PRE_DOSE),
        bp("r3", T0 + timedelta(minutes=140), ReadingTiming.DISCHARGE),
    ]
    ep = esketamine_episode(readings=readings)
    ep.evaluate_safety(POLICY, now=NOW)
    (flag,) = [f for f in ep.open_flags() if f.rule_id not in REMS_DEADLINE_RULES]
    assert flag.rule_id == "esketamine-blood-pressure-missing" and "40 minutes" in flag.explanation


def test_esketamine_without_pulse_oximetry_is_flagged():
    first = T0 + timedelta(minutes=15)
    readings = [
        bp(f"r{i}", at, timing, spo2_percent=None)
        for i, (at, timing) in enumerate(
            [
                (T0, ReadingTiming.PRE_DOSE),
                (first + timedelta(minutes=40), ReadingTiming.POST_DOSE),
                (first + timedelta(minutes=125), ReadingTiming.DISCHARGE),
            ]
        )
    ]
    assert rules_raised(esketamine_episode(readings=readings)) == {"esketamine-no-pulse-oximetry"}


def test_esketamine_at_home_is_flagged():
    session = dosing_session(setting=DosingSetting.HOME, check_in_at=T0 + timedelta(minutes=15))
    ep = with_records(episode(), consent(), session, esketamine_dose(setting=DosingSetting.HOME))
    assert "esketamine-at-home" in rules_raised(ep)


def test_esketamine_by_another_route_is_flagged_and_off_label():
    ep = esketamine_episode()
    dose = replace(ep.records["d-1"], route=Route.SUBLINGUAL, id="d-2")
    ep.add(dose, now=NOW)
    assert "esketamine-route" in rules_raised(ep)
    assert ep.records["d-2"].off_label is True


def test_esketamine_is_on_label_for_trd_and_for_mdd_with_acute_suicidal_ideation():
    assert esketamine_episode().records["d-1"].off_label is False
    mdd_si = Indication(kind=IndicationKind.DEPRESSION, icd10cm="F32.2", acute_suicidal_ideation=True)
    ep = with_records(episode(indications=[mdd_si]), dosing_session(), esketamine_dose())
    assert ep.records["d-1"].off_label is False
    gad = Indication(kind=IndicationKind.ANXIETY, icd10cm="F41.1")
    ep = with_records(episode(indications=[gad]), dosing_session(), esketamine_dose())
    assert ep.records["d-1"].off_label is True


def test_racemic_ketamine_for_psychotherapy_is_always_off_label():
    assert clean_iv_episode().records["d-1"].off_label is True


def test_phq9_item_9_above_zero_raises_a_high_severity_flag():
    ep = with_records(episode(), phq9("m-1", [1, 1, 1, 1, 1, 1, 1, 1, 1]))
    ep.evaluate_safety(POLICY, now=NOW)
    (flag,) = ep.open_flags()
    assert (flag.rule_id, flag.severity) == ("suicide-risk-positive", "high")


def test_rules_wait_until_the_dosing_session_is_completed():
    ep = with_records(episode(), dosing_session(status=SessionStatus.IN_PROGRESS), iv_dose())
    assert rules_raised(ep) == set()


def test_a_correction_resolves_an_open_flag_and_keeps_an_acknowledged_one():
    ep = with_records(
        episode(),
        consent(signed_at=T0 + timedelta(days=1)),
        dosing_session(),
        bp("r-pre", PRE, ReadingTiming.PRE_DOSE),
        iv_dose(),
    )
    ep.evaluate_safety(POLICY, now=NOW)
    (flag,) = ep.open_flags()
    ep.amend("consent-1", consent(signed_at=T0 - timedelta(days=1)), now=NOW)  # the time was typed wrongly
    changes = ep.evaluate_safety(POLICY, now=NOW)
    assert flag.status is FlagStatus.RESOLVED and changes.changed == [flag]


def test_evaluating_twice_raises_one_flag_per_deviation():
    ep = with_records(episode(), dosing_session(), bp("r-pre", PRE, ReadingTiming.PRE_DOSE), iv_dose())
    first = ep.evaluate_safety(POLICY, now=NOW)
    second = ep.evaluate_safety(POLICY, now=NOW)
    assert len(first.raised) == 1 and second.raised == [] and len(ep.flags) == 1


def test_entered_in_error_doses_are_not_judged():
    ep = with_records(episode(), dosing_session(), bp("r-pre", PRE, ReadingTiming.PRE_DOSE), iv_dose())
    ep.mark_entered_in_error("d-1", now=NOW)
    assert rules_raised(ep) == set()


def _esketamine_without_the_40_minute_reading():
    return esketamine_episode(
        readings=[
            bp("r1", T0 + timedelta(minutes=5), ReadingTiming.PRE_DOSE),
            bp("r3", T0 + timedelta(minutes=140), ReadingTiming.DISCHARGE),
        ]
    )


def _esketamine_by_the_sublingual_route():
    ep = esketamine_episode()
    ep.add(replace(ep.records["d-1"], route=Route.SUBLINGUAL, id="d-2"), now=NOW)
    return ep


# One episode per rule that breaks it, and the clinical time it is judged at (the REMS deadlines follow the clock).
_A_CASE_OF = {
    "dose-without-active-consent": lambda: (
        with_records(episode(), dosing_session(), bp("r-pre", PRE, ReadingTiming.PRE_DOSE), iv_dose()),
        NOW,
    ),
    "off-label-use-not-acknowledged": lambda: (
        with_records(
            episode(),
            consent(off_label_use_acknowledged=False),
            dosing_session(),
            bp("r-pre", PRE, ReadingTiming.PRE_DOSE),
            iv_dose(),
        ),
        NOW,
    ),
    "dose-outside-dosing-phase": lambda: (
        with_records(
            episode(in_dosing_from=None),
            consent(),
            dosing_session(),
            bp("r-pre", PRE, ReadingTiming.PRE_DOSE),
            iv_dose(),
        ),
        NOW,
    ),
    "no-pre-dose-blood-pressure": lambda: (with_records(episode(), consent(), dosing_session(), iv_dose()), NOW),
    "home-dose-without-check-in": lambda: (home_episode(check_in_minutes_after_dose=None), NOW),
    "home-dose-route": lambda: (
        with_records(
            episode(),
            consent(),
            dosing_session(setting=DosingSetting.HOME, check_in_at=T0 + timedelta(minutes=15)),
            iv_dose(setting=DosingSetting.HOME),
        ),
        NOW,
    ),
    "racemic-dose-above-max-mg-per-kg": lambda: (clean_iv_episode(dose_mg=70.0), NOW),
    "racemic-dose-without-weight": lambda: (clean_iv_episode(weight_kg=None), NOW),
    "esketamine-dose-not-usual": lambda: (esketamine_episode(dose_mg=28.0), NOW),
    "esketamine-route": lambda: (_esketamine_by_the_sublingual_route(), NOW),
    "esketamine-at-home": lambda: (
        with_records(
            episode(),
            consent(),
            dosing_session(setting=DosingSetting.HOME, check_in_at=T0 + timedelta(minutes=15)),
            esketamine_dose(setting=DosingSetting.HOME),
        ),
        NOW,
    ),
    "esketamine-observation-too-short": lambda: (esketamine_episode(discharge_after_min=90), NOW),
    "esketamine-blood-pressure-missing": lambda: (_esketamine_without_the_40_minute_reading(), NOW),
    "esketamine-no-pulse-oximetry": lambda: (
        esketamine_episode(
            readings=[
                bp("r1", T0, ReadingTiming.PRE_DOSE, spo2_percent=None),
                bp("r2", T0 + timedelta(minutes=55), ReadingTiming.POST_DOSE, spo2_percent=None),
                bp("r3", T0 + timedelta(minutes=140), ReadingTiming.DISCHARGE, spo2_percent=None),
            ]
        ),
        NOW,
    ),
    "suicide-risk-positive": lambda: (with_records(episode(), phq9("m-1", [1, 1, 1, 1, 1, 1, 1, 1, 1])), NOW),
    "rems-form-due": lambda: (esketamine_episode(), T0 + timedelta(days=5)),
    "rems-form-overdue": lambda: (esketamine_episode(), T0 + timedelta(days=8)),
}


def test_every_rule_has_a_case_here():
    assert sorted(_A_CASE_OF) == sorted(RULE_IDS)  # a new rule fails here until it has a case


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_each_rule_flags_the_episode_that_breaks_it(rule_id):
    ep, now = _A_CASE_OF[rule_id]()
    ep.evaluate_safety(POLICY, now=now)
    raised = [f for f in ep.open_flags() if f.rule_id == rule_id]
    assert raised, f"{rule_id} was not raised"
    assert all(f.record_ids for f in raised)  # each flag names the records it is about


# --- Spravato REMS Patient Monitoring Form deadlines: they follow the clock (a fixed one here) -----------------


def _deadline_flags(ep, now):
    ep.evaluate_safety(POLICY, now=now)
    return {(f.rule_id, f.severity.value if hasattr(f.severity, "value") else f.severity) for f in ep.open_flags()} & {
        ("rems-form-due", "moderate"),
        ("rems-form-overdue", "high"),
    }


def test_an_unsent_rems_form_is_flagged_due_on_day_5_and_overdue_after_day_7():
    ep = esketamine_episode()  # first device at T0 + 15 min: 2026-03-02 09:15 UTC
    assert _deadline_flags(ep, T0 + timedelta(days=4, hours=14)) == set()  # day 4, 23:00 UTC
    assert _deadline_flags(ep, T0 + timedelta(days=5)) == {("rems-form-due", "moderate")}
    assert _deadline_flags(ep, T0 + timedelta(days=7, hours=14)) == {("rems-form-due", "moderate")}  # due today
    assert _deadline_flags(ep, T0 + timedelta(days=8)) == {("rems-form-overdue", "high")}
    due = next(f for f in ep.flags if f.rule_id == "rems-form-due")
    assert due.status is FlagStatus.RESOLVED and due.record_ids == ["s-1"]


def test_rems_form_days_count_in_the_clinic_time_zone():
    # 2026-03-02 09:15 UTC is still 2026-03-01 in Honolulu (UTC-10): the form is due a day earlier there.
    ep = esketamine_episode()
    ep.rems = replace(ep.rems, time_zone="Pacific/Honolulu")
    assert _deadline_flags(ep, T0 + timedelta(days=7, hours=14)) == {("rems-form-overdue", "high")}
    ep_utc = esketamine_episode()
    assert _deadline_flags(ep_utc, T0 + timedelta(days=7, hours=14)) == {("rems-form-due", "moderate")}


def test_a_sent_rems_form_raises_no_deadline_flag_and_racemic_sessions_owe_none():
    from service.domain.model import RemsSubmission
    from service.domain.vocabulary import RemsChannel

    ep = esketamine_episode()
    assert _deadline_flags(ep, T0 + timedelta(days=9)) == {("rems-form-overdue", "high")}
    ep.rems.submissions.append(
        RemsSubmission(
            id="sub-1",
            session_id="s-1",
            channel=RemsChannel.FAX,
            submitted_at=T0 + timedelta(days=9),
            submitted_by="p-1",
            form_digest="x",
            recorded_at=T0 + timedelta(days=9),
            recorded_by="test",
        )
    )
    assert _deadline_flags(ep, T0 + timedelta(days=9)) == set()
    assert _deadline_flags(clean_iv_episode(), T0 + timedelta(days=30)) == set()


# --- what an evaluation looks at: what changed since the last one, everything when the context changed ------------


def test_a_later_session_and_a_late_reading_each_change_the_flags_of_their_own_session():
    ep = with_records(episode(), consent(), dosing_session(), iv_dose())  # no pre-dose reading: flagged
    ep.evaluate_safety(POLICY, now=NOW)
    (earlier,) = ep.open_flags()
    later = T0 + timedelta(days=7)
    ep.add(dosing_session("s-2", later), now=NOW)
    ep.add(bp("r-2", later + timedelta(minutes=5), ReadingTiming.PRE_DOSE, session_id="s-2"), now=NOW)
    ep.add(iv_dose("d-2", "s-2", later + timedelta(minutes=15), weight_kg=40.0), now=NOW)  # 0.875 mg/kg
    changes = ep.evaluate_safety(POLICY, now=NOW)
    assert [f.rule_id for f in changes.raised] == ["racemic-dose-above-max-mg-per-kg"]
    assert changes.changed == [] and earlier.status is FlagStatus.OPEN
    ep.add(bp("r-1", PRE, ReadingTiming.PRE_DOSE), now=NOW)  # the first session's reading, recorded late
    changes = ep.evaluate_safety(POLICY, now=NOW)
    assert changes.changed == [earlier] and earlier.status is FlagStatus.RESOLVED


def test_another_policy_evaluates_every_session_again():
    ep = clean_iv_episode(weight_kg=50.0)  # 0.7 mg/kg: within the default 0.75 for IV
    assert rules_raised(ep) == set()
    stricter = replace(POLICY, max_mg_per_kg={**POLICY.max_mg_per_kg, Route.INTRAVENOUS: 0.5})
    changes = ep.evaluate_safety(stricter, now=NOW)  # nothing was written since: the policy alone changed
    assert [f.rule_id for f in changes.raised] == ["racemic-dose-above-max-mg-per-kg"]


def test_an_episode_saved_with_changes_the_rules_have_not_seen_is_evaluated_in_full_next():
    ep = clean_iv_episode()
    ep.evaluate_safety(POLICY, now=NOW)
    assert ep.safety_basis is not None
    ep.saved_as(ep.version + 1, NOW)
    assert ep.safety_basis is not None  # saved right after an evaluation
    ep.add(dosing_session("s-2", T0 + timedelta(days=7)), now=NOW)
    ep.saved_as(ep.version + 1, NOW)
    assert ep.safety_basis is None
