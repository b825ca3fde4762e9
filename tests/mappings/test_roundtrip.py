"""Property: any EpisodeChart maps to a valid Bundle and back to an equal chart (notes excepted, never mapped)."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings

from mappings.bundle import dumps, from_bundle, to_collection_bundle, to_transaction_bundle, without_notes
from mappings.validation import validate_bundle
from service.domain.chart import EpisodeChart
from tests.mappings.strategies import RECORD_CLASSES, Census, charts


def test_generated_charts_round_trip_exactly_and_the_generator_reaches_every_field_and_enum_value() -> None:
    census = Census()

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,  # the census below must not depend on the seed
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(charts())
    def round_trip(chart: EpisodeChart) -> None:
        census.visit(chart)
        bundle = to_transaction_bundle(chart)
        assert from_bundle(orjson.loads(dumps(bundle))) == without_notes(chart)
        assert from_bundle(to_collection_bundle(chart)) == without_notes(chart)
        issues = [i for i in validate_bundle(bundle, ["bindings", "invariants", "profile"]) if i.severity == "error"]
        assert issues == []

    round_trip()
    assert census.missing([EpisodeChart, *RECORD_CLASSES]) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(charts())
def test_generated_charts_are_valid_r4b_bundles(chart: EpisodeChart) -> None:
    assert validate_bundle(to_transaction_bundle(chart), ["structure"]) == []
