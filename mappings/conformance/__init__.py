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


def as_served(resource: dict, last_updated: str) -> dict:
    """A conformance resource as /fhir serves it: resourceType and id first, and a meta of version 1 last updated
    at ``last_updated`` (what the file's own meta says is kept over that)."""
    served = {
        "resourceType": resource["resourceType"],
        "id": resource["id"],
        **{k: v for k, v in resource.items() if k not in ("resourceType", "id")},
    }
    served["meta"] = {"versionId": "1", "lastUpdated": last_updated, **resource.get("meta", {})}
    return served
