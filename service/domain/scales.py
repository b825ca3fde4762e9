"""Scoring of the outcome scales. Totals are computed here; a caller's total is only ever compared.

Sources:
- PHQ-9: Kroenke K, Spitzer RL, Williams JB. The PHQ-9. J Gen Intern Med 2001;16(9):606-13 (bands 0-4, 5-9,
  10-14, 15-19, 20-27; item 9 asks about thoughts of self-harm).
- GAD-7: Spitzer RL et al. A brief measure for assessing generalized anxiety disorder. Arch Intern Med
  2006;166(10):1092-7 (bands 0-4, 5-9, 10-14, 15-21).
- PCL-5: Weathers FW et al., National Center for PTSD, PTSD Checklist for DSM-5; no official severity bands,
  total 0-80, provisional-PTSD cut-point of 31-33 (configurable here, default 33).
- C-SSRS screener: Columbia Lighthouse Project, C-SSRS Screen Version (recent) triage: a yes to 1 or 2 is low
  risk, to 3 moderate, to 4 or 5 high; behaviour (6) within the past 3 months high, earlier moderate.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.domain.errors import FieldError, Incoherent
from service.domain.vocabulary import Instrument, SuicideRiskLevel


@dataclass(frozen=True)
class ScaleSpec:
    items: int
    item_max: int


SCALES: dict[Instrument, ScaleSpec] = {
    Instrument.PHQ9: ScaleSpec(items=9, item_max=3),
    Instrument.GAD7: ScaleSpec(items=7, item_max=3),
    Instrument.PCL5: ScaleSpec(items=20, item_max=4),
    Instrument.CSSRS_SCREENER: ScaleSpec(items=6, item_max=1),
}

PHQ9_BANDS = ((4, "minimal"), (9, "mild"), (14, "moderate"), (19, "moderately-severe"), (27, "severe"))
GAD7_BANDS = ((4, "minimal"), (9, "mild"), (14, "moderate"), (21, "severe"))
PCL5_DEFAULT_CUT_POINT = 33


@dataclass(frozen=True)
class Score:
    total: int | None
    severity_band: str | None
    risk_level: SuicideRiskLevel | None = None


def _band(total: int, bands: tuple[tuple[int, str], ...]) -> str:
    return next(name for upper, name in bands if total <= upper)


def check_items(instrument: Instrument, items: list[int]) -> None:
    spec = SCALES[instrument]
    errors = []
    if len(items) != spec.items:
        errors.append(FieldError("items", f"{instrument} has {spec.items} items; got {len(items)}"))
    for index, value in enumerate(items):
        if not 0 <= value <= spec.item_max:
            errors.append(FieldError(f"items[{index}]", f"answer {value} is outside 0-{spec.item_max}"))
    if errors:
        raise Incoherent(f"The {instrument} answers are not valid.", errors)


def cssrs_risk_level(items: list[int], behaviour_within_3_months: bool | None) -> SuicideRiskLevel:
    wish, thoughts, method, intent, plan, behaviour = (bool(v) for v in items)
    if intent or plan or (behaviour and behaviour_within_3_months):
        return SuicideRiskLevel.HIGH
    if method or behaviour:
        return SuicideRiskLevel.MODERATE
    if wish or thoughts:
        return SuicideRiskLevel.LOW
    return SuicideRiskLevel.NONE


def score(
    instrument: Instrument,
    items: list[int],
    *,
    behaviour_within_3_months: bool | None = None,
    pcl5_cut_point: int = PCL5_DEFAULT_CUT_POINT,
) -> Score:
    check_items(instrument, items)
    if instrument is Instrument.CSSRS_SCREENER:
        if items[5] and behaviour_within_3_months is None:
            raise Incoherent.at(
                "behaviour_within_3_months", "item 6 (suicidal behaviour) is yes: say whether it was within 3 months"
            )
        return Score(total=None, severity_band=None, risk_level=cssrs_risk_level(items, behaviour_within_3_months))
    total = sum(items)
    if instrument is Instrument.PHQ9:
        return Score(total, _band(total, PHQ9_BANDS))
    if instrument is Instrument.GAD7:
        return Score(total, _band(total, GAD7_BANDS))
    band = "provisional-ptsd" if total >= pcl5_cut_point else "below-provisional-cut-point"
    return Score(total, band)


def is_suicide_risk_positive(instrument: Instrument, items: list[int]) -> bool:
    """PHQ-9 item 9 above 0, or any yes on the C-SSRS screener."""
    if instrument is Instrument.PHQ9:
        return items[8] > 0
    if instrument is Instrument.CSSRS_SCREENER:
        return any(items)
    return False
