"""Where the tests find the project's files and the shared reference data (../shared beside the project root)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPECTED_DIR = REPO_ROOT / "fixtures" / "fhir"  # the expected bundles of the fixture episodes
# KAPFHIR_REGEN_FHIR_FIXTURES=1 rewrites fixtures/fhir/*.json from the current mapping (review the diff).
REGENERATE = os.environ.get("KAPFHIR_REGEN_FHIR_FIXTURES") == "1"


def us_core_dir() -> Path | None:
    """US Core 6.1.0 (KAPFHIR_US_CORE_DIR, default ../shared/us-core-6.1.0), or None when it is not there."""
    configured = os.environ.get("KAPFHIR_US_CORE_DIR")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "us-core-6.1.0"
    return path if path.is_dir() else None
