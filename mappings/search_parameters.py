"""The FHIR R4 (4.0.1) SearchParameter definitions kapfhir relies on: what /fhir declares (``service.fhir.registry``)
and what a conditional request to another server may use (``service.exchange.planner``). The table is an extract of
the R4 specification's search-parameters.json made by ``scripts/fhir/extract_search_parameters.py``."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent


@cache
def r4_definitions() -> dict[str, dict[str, dict]]:
    return json.loads((HERE / "r4_search_parameters.json").read_text())["parameters"]


def r4_definition(resource_type: str, code: str) -> dict | None:
    """The R4 SearchParameter ``code`` of ``resource_type``, inherited from DomainResource and Resource too."""
    defs = r4_definitions()
    for base in (resource_type, "DomainResource", "Resource"):
        found = defs.get(base, {}).get(code)
        if found:
            return found
    return None
