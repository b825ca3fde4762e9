"""The episode charts draw what the record holds: each mark appears (as SVG text) only when its records do."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from service.domain.vocabulary import Instrument, ReadingTiming
from service.entrypoints import charts
from tests.support import builders as b


def _phq9(measure_id: str, items: list[int], days: int):
    return replace(b.phq9(measure_id, items, b.T0 + timedelta(days=days)), total=sum(items))


def test_scale_trend_marks_item_9_positives_and_the_response_line_from_the_index_score() -> None:
    ep = b.with_records(
        b.episode(), _phq9("m1", [3, 3, 3, 2, 2, 2, 2, 2, 1], -3), _phq9("m2", [1, 1, 1, 1, 1, 1, 0, 0, 0], 10)
    )
    svg = charts.scale_trend(ep, Instrument.PHQ9, 33)
    assert svg is not None and svg.startswith("<svg")
    assert "item 9 positive" in svg and "response (from index)" in svg and "remission below" in svg
    assert charts.scale_trend(ep, Instrument.GAD7, 33) is None  # no GAD-7 recorded


def test_scale_trend_without_suicide_risk_marks_none() -> None:
    ep = b.with_records(
        b.episode(), _phq9("m1", [3, 3, 3, 2, 2, 2, 2, 2, 0], -3), _phq9("m2", [2, 2, 2, 1, 1, 1, 1, 1, 0], 14)
    )
    svg = charts.scale_trend(ep, Instrument.PHQ9, 33)
    assert svg is not None and "item 9 positive" not in svg and "C-SSRS positive" not in svg


def test_blood_pressure_needs_a_reading_of_a_completed_dosing_session() -> None:
    ep = b.with_records(b.episode(), b.dosing_session(), b.iv_dose())
    assert charts.blood_pressure(ep) is None
    b.with_records(ep, b.bp("r1", b.T0, ReadingTiming.PRE_DOSE))
    svg = charts.blood_pressure(ep)
    assert svg is not None and "before dose (pre-dose)" in svg and "#1" in svg


def test_dosing_timeline_plots_mg_per_kg_when_every_dose_has_a_weight_else_mg() -> None:
    assert charts.dosing_timeline(b.episode(in_dosing_from=None), b.NOW) is None
    with_weight = b.with_records(b.episode(), b.dosing_session(), b.iv_dose())
    assert ">mg/kg<" in charts.dosing_timeline(with_weight, b.NOW)
    esketamine = b.with_records(b.episode(), b.dosing_session(), b.esketamine_dose())
    svg = charts.dosing_timeline(esketamine, b.NOW)
    assert ">mg/kg<" not in svg and ">mg<" in svg and "intranasal" in svg and "dosing" in svg
