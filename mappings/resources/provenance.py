"""Provenance of a bundle: agents = the clinic (author) and kapfhir (assembler), target = every resource.

R4 Provenance has no ``identifier``, so conditional create cannot keep it idempotent. Instead its id is
deterministic: uuid5 of the clinic system and a SHA-256 over the targets' fullUrls and versions. The entry is
``PUT Provenance/<id>`` (update-as-create): pushing the same content again rewrites the same Provenance and
creates no second one, while changed content (a new version of any record) gets a new Provenance.
``recorded`` is the latest stored timestamp of the chart, never the clock.
"""

from __future__ import annotations

import hashlib
import uuid

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import ORGANIZATION, MappingContext
from mappings.resources._common import kap_profile

KAPFHIR_AGENT = {"identifier": dt.identifier(t.KAPFHIR_BASE, "kapfhir"), "display": "kapfhir"}


def provenance_id(ctx: MappingContext, targets: list[tuple[str, int]]) -> str:
    digest = hashlib.sha256("\n".join(f"{url}|{version}" for url, version in targets).encode()).hexdigest()
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ctx.base}|Provenance|{digest}"))


def to_provenance(ctx: MappingContext, targets: list[tuple[str, int]], recorded: str) -> dict:
    return {
        "resourceType": "Provenance",
        "id": provenance_id(ctx, targets),
        "meta": ctx.meta([kap_profile("provenance")]),
        "target": [{"reference": url} for url, _ in targets],
        "recorded": recorded,
        "agent": [
            {"type": dt.codeable_concept(t.PROVENANCE_AUTHOR), "who": ctx.organization()},
            {
                "type": dt.codeable_concept(t.PROVENANCE_ASSEMBLER),
                "who": KAPFHIR_AGENT,
                "onBehalfOf": ctx.organization(),
            },
        ],
    }


def to_standalone_provenance(ctx: MappingContext, target: str, version: int, recorded: str) -> dict:
    """Provenance of one stored write outside an episode (a Patient or Practitioner stored alone): the target is the
    stored version, and the clinic is named by its stored Organization id, as the /fhir API serves it."""
    prov = to_provenance(ctx, [(target, version)], recorded)
    organization = ctx.full_url("Organization", ORGANIZATION, ctx.chart.clinic.id).removeprefix("urn:uuid:")
    prov["agent"][0]["who"] = {"reference": f"Organization/{organization}"}
    prov["agent"][1]["onBehalfOf"] = {"reference": f"Organization/{organization}"}
    return prov
