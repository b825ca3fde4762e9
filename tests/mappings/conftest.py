"""Fixtures of the mapping tests: the hand-built charts and the expected bundles in fixtures/fhir/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.domain.chart import EpisodeChart
from tests.mappings.charts import CHARTS

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPECTED_DIR = REPO_ROOT / "fixtures" / "fhir"
# KAPFHIR_REGEN_FHIR_FIXTURES=1 rewrites fixtures/fhir/*.json from the current mapping (review the diff).
REGENERATE = os.environ.get("KAPFHIR_REGEN_FHIR_FIXTURES") == "1"


def us_core_dir() -> Path | None:
    configured = os.environ.get("KAPFHIR_US_CORE_DIR")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "us-core-6.1.0"
    return path if path.is_dir() else None


@pytest.fixture
def us_core() -> Path:
    path = us_core_dir()
    if path is None:
        message = "US Core 6.1.0 not found: set KAPFHIR_US_CORE_DIR (default ../shared/us-core-6.1.0)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(params=sorted(CHARTS))
def named_chart(request: pytest.FixtureRequest) -> tuple[str, EpisodeChart]:
    return request.param, CHARTS[request.param]()
