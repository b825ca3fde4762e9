import pytest

from service.domain import scales
from service.domain.errors import Incoherent
from service.domain.vocabulary import Instrument, SuicideRiskLevel


@pytest.mark.parametrize(
    ("total", "band"),
    [
        (0, "minimal"),
        (4, "minimal"),
        (5, "mild"),
        (9, "mild"),
        (10, "moderate"),
        (14, "moderate"),
        (15, "moderately-severe"),
        (19, "moderately-severe"),
        (20, "severe"),
        (27, "severe"),
    ],
)
def test_phq9_bands_follow_kroenke_2001(total, band):
    items = [3] * (total // 3) + [total % 3] + [0] * 9
    result = scales.score(Instrument.PHQ9, items[:9])
    assert (result.total, result.severity_band) == (total, band)


@pytest.mark.parametrize(
    ("total", "band"), [(4, "minimal"), (5, "mild"), (10, "moderate"), (15, "severe"), (21, "severe")]
)
def test_gad7_bands_follow_spitzer_2006(total, band):
    items = [*([3] * 7)[: total // 3], total % 3]
    items += [0] * (7 - len(items))
    assert scales.score(Instrument.GAD7, items[:7]).severity_band == band


def test_pcl5_reports_the_total_against_a_configurable_cut_point():
    items = [2] * 16 + [0] * 4  # total 32
    assert scales.score(Instrument.PCL5, items).severity_band == "below-provisional-cut-point"
    assert scales.score(Instrument.PCL5, items, pcl5_cut_point=31).severity_band == "provisional-ptsd"
    assert scales.score(Instrument.PCL5, [4] * 20).total == 80


@pytest.mark.parametrize(
    ("instrument", "items"),
    [
        (Instrument.PHQ9, [0] * 8),
        (Instrument.GAD7, [0] * 9),
        (Instrument.PCL5, [0] * 19),
        (Instrument.CSSRS_SCREENER, [0] * 5),
    ],
)
def test_a_wrong_number_of_items_is_refused(instrument, items):
    with pytest.raises(Incoherent):
        scales.score(instrument, items)


def test_an_answer_out_of_range_is_refused_and_named():
    with pytest.raises(Incoherent) as refused:
        scales.score(Instrument.PHQ9, [0, 0, 4, 0, 0, 0, 0, 0, 0])
    assert refused.value.field_errors[0].field == "items[2]"


@pytest.mark.parametrize(
    ("items", "recent", "level"),
    [
        ([0, 0, 0, 0, 0, 0], None, SuicideRiskLevel.NONE),
        ([1, 0, 0, 0, 0, 0], None, SuicideRiskLevel.LOW),
        ([1, 1, 0, 0, 0, 0], None, SuicideRiskLevel.LOW),
        ([1, 1, 1, 0, 0, 0], None, SuicideRiskLevel.MODERATE),
        ([1, 1, 1, 1, 0, 0], None, SuicideRiskLevel.HIGH),
        ([1, 1, 1, 0, 1, 0], None, SuicideRiskLevel.HIGH),
        ([0, 0, 0, 0, 0, 1], False, SuicideRiskLevel.MODERATE),
        ([0, 0, 0, 0, 0, 1], True, SuicideRiskLevel.HIGH),
    ],
)
def test_cssrs_screener_risk_level_follows_the_triage(items, recent, level):
    assert scales.score(Instrument.CSSRS_SCREENER, items, behaviour_within_3_months=recent).risk_level is level


def test_cssrs_behaviour_needs_its_timing():
    with pytest.raises(Incoherent):
        scales.score(Instrument.CSSRS_SCREENER, [0, 0, 0, 0, 0, 1])


def test_suicide_risk_positive_on_phq9_item_9_or_any_cssrs_yes():
    assert scales.is_suicide_risk_positive(Instrument.PHQ9, [0] * 8 + [1])
    assert not scales.is_suicide_risk_positive(Instrument.PHQ9, [3] * 8 + [0])
    assert scales.is_suicide_risk_positive(Instrument.CSSRS_SCREENER, [1, 0, 0, 0, 0, 0])
    assert not scales.is_suicide_risk_positive(Instrument.GAD7, [3] * 7)
