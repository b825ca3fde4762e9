"""Property: any EpisodeChart maps to a valid Bundle and back to an equal chart (notes excepted, never mapped)."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings

from mappings.bundle import dumps, from_bundle, to_collection_bundle, to_transaction_bundle, without_notes
from service.domain.chart import EpisodeChart
from tests.unit.mappings.strategies import RECORD_CLASSES, Census, charts, covering_charts
from validation import validate_bundle


def _round_trips(chart: EpisodeChart) -> None:
    bundle = to_transaction_bundle(chart)
    assert from_bundle(orjson.loads(dumps(bundle))) == without_notes(chart)
    assert from_bundle(to_collection_bundle(chart)) == without_notes(chart)
    issues = [i for i in validate_bundle(bundle, ["bindings", "invariants", "profile"]) if i.severity == "error"]
    assert issues == []


def test_the_covering_charts_reach_every_field_boolean_and_enum_value_and_round_trip() -> None:
    census = Census()
    for chart in covering_charts():
        census.visit(chart)
        _round_trips(chart)
    assert census.missing([EpisodeChart, *RECORD_CLASSES]) == []


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(charts())
def test_generated_charts_round_trip_exactly(chart: EpisodeChart) -> None:
    _round_trips(chart)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(charts())
def test_generated_charts_are_valid_r4b_bundles(chart: EpisodeChart) -> None:
    assert validate_bundle(to_transaction_bundle(chart), ["structure"]) == []
