"""kapfhir conformance resources (StructureDefinitions, CodeSystems, ValueSets, Questionnaires) as JSON files.

``python -m mappings.conformance.build`` regenerates them from ``mappings.terminology``.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent


@cache
def load_all() -> dict[str, dict]:
    """Canonical URL -> resource of every JSON file in this folder."""
    return {data["url"]: data for path in sorted(HERE.glob("*.json")) if (data := json.loads(path.read_text()))}
