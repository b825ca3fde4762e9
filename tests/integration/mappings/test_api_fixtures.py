"""Expected bundles of the API fixture episodes: fixtures/episodes/<stem>.json replayed, stored, mapped, compared
with fixtures/fhir/<stem>.json byte for byte (KAPFHIR_REGEN_FHIR_FIXTURES=1 rewrites them)."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from mappings.bundle import dumps, from_bundle, to_transaction_bundle, without_notes
from service.domain.chart import EpisodeChart
from service.fixture_loader import fixture_paths
from tests.integration.mappings.api_fixtures import EPISODES, stored_fixture_charts
from tests.support.paths import EXPECTED_DIR, REGENERATE
from validation import validate_bundle

STEMS = [p.stem for p in fixture_paths(EPISODES)]


@pytest.fixture(scope="module")
def stored_charts() -> Iterator[dict[str, EpisodeChart]]:
    with stored_fixture_charts() as charts:
        yield charts


def test_every_api_fixture_episode_has_an_expected_bundle() -> None:
    assert STEMS and all((EXPECTED_DIR / f"{stem}.json").exists() or REGENERATE for stem in STEMS)


@pytest.mark.parametrize("stem", STEMS)
def test_api_fixture_episode_maps_to_its_expected_bundle_byte_for_byte(
    stem: str, stored_charts: dict[str, EpisodeChart]
) -> None:
    path = EXPECTED_DIR / f"{stem}.json"
    produced = orjson.dumps(to_transaction_bundle(stored_charts[stem]), option=orjson.OPT_INDENT_2) + b"\n"
    if REGENERATE:
        path.write_bytes(produced)
    assert path.read_bytes() == produced, f"{path} differs: rerun with KAPFHIR_REGEN_FHIR_FIXTURES=1 and review"


@pytest.mark.parametrize("stem", STEMS)
def test_api_fixture_bundle_passes_every_validation_layer_and_maps_twice_identically(
    stem: str, stored_charts: dict[str, EpisodeChart]
) -> None:
    chart = stored_charts[stem]
    bundle = to_transaction_bundle(chart)
    assert validate_bundle(bundle) == []
    assert dumps(bundle) == dumps(to_transaction_bundle(chart))
    assert from_bundle(orjson.loads(dumps(bundle))) == without_notes(chart)


def test_normalisation_is_stable_across_two_replays(stored_charts: dict[str, EpisodeChart]) -> None:
    with stored_fixture_charts() as again:
        for stem in STEMS:
            assert dumps(to_transaction_bundle(again[stem])) == dumps(to_transaction_bundle(stored_charts[stem]))
