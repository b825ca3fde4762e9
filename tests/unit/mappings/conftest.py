"""Fixtures of the mapping tests: the hand-built charts and the expected bundles in fixtures/fhir/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.domain.chart import EpisodeChart
from tests.support.charts import CHARTS
from tests.support.paths import us_core_dir


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
