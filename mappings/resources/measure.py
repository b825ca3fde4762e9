"""Measure: the response and remission measures kapfhir publishes (``service.domain.measures.MEASURES``).

Each Measure is a proportion measure of type outcome; one group per rate (follow-up, response, remission), all with
the same initial population, denominator and exclusions. Population descriptions state the logic of
``service.domain.measures`` in plain language (kapfhir computes it in Python, not with CQL).
"""

from __future__ import annotations

from mappings import terminology as t
from service.domain.measures import Group, MeasureDefinition, ScaleCriteria, criteria
from service.domain.scales import PCL5_DEFAULT_CUT_POINT
from service.domain.vocabulary import Instrument

MEASURE_DATE = "2026-11-29"

# The specification each measure's logic comes from (R4 RelatedArtifact citation).
SOURCES = {
    "DRR-E": "https://www.ncqa.org/hedis/measures/depression-remission-or-response-for-adolescents-and-adults/",
    "CMS159": "https://ecqi.healthit.gov/ecqm/ec/2026/cms0159v14",
    "PCL-5": "https://www.ptsd.va.gov/professional/assessment/adult-sr/ptsd-checklist.asp",
}

SIMPLIFICATIONS = (
    "kapfhir simplifies the specifications: the unit is the episode of care, not the patient; the report period is "
    "the intake period (the index score lies in it, its follow-up may lie after it); days are counted between local "
    "calendar dates; the indication kind of the episode stands for the diagnosis value sets; exclusions are the "
    "ICD-10-CM categories F20-F29, F31, F60.3 and F84 on any episode of the "
    "patient (no death, hospice or palliative-care data); cancelled episodes (no completed session) are not in the "
    "initial population; no age strata."
)

_INSTRUMENT_NAME = {Instrument.PHQ9: "PHQ-9", Instrument.GAD7: "GAD-7", Instrument.PCL5: "PCL-5"}


def canonical(definition: MeasureDefinition) -> str:
    return f"{t.MEASURE}/{definition.id}"


def _name(definition: MeasureDefinition) -> str:
    # mea-0: a computable name, [A-Z]([A-Za-z0-9_]){0,254}
    return "".join(part.capitalize() for part in definition.id.replace("-", " ").split())


def _window_text(definition: MeasureDefinition) -> str:
    low, high = definition.window_days
    return f"{low}-{high} days after the index score"


def _group_criteria(definition: MeasureDefinition, group: Group, rules: ScaleCriteria) -> str:
    scale = _INSTRUMENT_NAME[definition.instrument]
    last = f"the most recent {scale} {_window_text(definition)}"
    if group is Group.FOLLOW_UP:
        return f"A {scale} total score {_window_text(definition)}."
    if group is Group.REMISSION:
        return f"{last[0].upper()}{last[1:]} is below {rules.remission_below}."
    if rules.response_drop_points is not None:
        return f"{last[0].upper()}{last[1:]} is at least {rules.response_drop_points} points below the index score."
    return f"{last[0].upper()}{last[1:]} is at least {rules.response_drop_percent:g} % below the index score."


def _population(code: str, text: str) -> dict:
    # The criteria name the population as CQF measures do (text/cql-identifier); kapfhir publishes no CQL library:
    # the description says what service.domain.measures computes.
    return {
        "code": {"coding": [t.MEASURE_POPULATIONS[code]]},
        "description": text,
        "criteria": {"language": "text/cql-identifier", "expression": t.MEASURE_POPULATIONS[code]["display"]},
    }


def _sources(definition: MeasureDefinition) -> list[dict]:
    keys = ["CMS159"] if "CMS159" in definition.follows else ["DRR-E"]
    if definition.instrument is Instrument.PCL5:
        keys.append("PCL-5")
    return [{"type": "citation", "display": definition.follows, "url": SOURCES[k]} for k in keys]


def to_measure(definition: MeasureDefinition, *, pcl5_cut_point: int = PCL5_DEFAULT_CUT_POINT) -> dict:
    rules = criteria(definition.instrument, pcl5_cut_point)
    scale = _INSTRUMENT_NAME[definition.instrument]
    initial = (
        f"Episodes of care for {definition.indication} (not cancelled) whose first {scale} total score of "
        f"{rules.elevated_from} or more (the index score) lies in the measurement period."
    )
    exclusion = (
        "Episodes of patients with bipolar disorder (ICD-10-CM F31), schizophrenia spectrum or other psychotic "
        "disorders (F20-F29), borderline personality disorder (F60.3) or a pervasive developmental disorder (F84)."
    )
    groups = []
    for group in definition.groups:
        groups.append(
            {
                "id": str(group),
                "code": {"text": str(group)},
                "description": _group_criteria(definition, group, rules),
                "population": [
                    _population("initial-population", initial),
                    _population("denominator", "Equals the initial population."),
                    _population("denominator-exclusion", exclusion),
                    _population("numerator", _group_criteria(definition, group, rules)),
                ],
            }
        )
    return {
        "resourceType": "Measure",
        "id": definition.id,
        "url": canonical(definition),
        "version": t.CONFORMANCE_VERSION,
        "name": _name(definition),
        "title": definition.title,
        "status": "active",
        "experimental": False,
        "date": MEASURE_DATE,
        "publisher": "kapfhir",
        "description": f"{definition.description} Follows the logic of {definition.follows}.",
        "relatedArtifact": _sources(definition),
        "scoring": {"coding": [t.MEASURE_SCORING_PROPORTION]},
        "type": [{"coding": [t.MEASURE_TYPE_OUTCOME]}],
        "improvementNotation": {"coding": [t.MEASURE_IMPROVEMENT_INCREASE]},
        "guidance": SIMPLIFICATIONS,
        "group": groups,
    }


def to_served_measure(definition: MeasureDefinition, *, pcl5_cut_point: int = PCL5_DEFAULT_CUT_POINT) -> dict:
    """The Measure as /fhir serves it: version 1, last updated on ``MEASURE_DATE`` (a Measure changes only with a
    kapfhir release)."""
    resource = to_measure(definition, pcl5_cut_point=pcl5_cut_point)
    return {
        "resourceType": "Measure",
        "id": definition.id,
        "meta": {"versionId": "1", "lastUpdated": f"{MEASURE_DATE}T00:00:00Z"},
        **{k: v for k, v in resource.items() if k not in ("resourceType", "id")},
    }
