"""The layers hold (import-linter contracts in .importlinter): entry points -> use cases -> domain, mappings ->
domain only, a domain free of frameworks, a validator (validation/) that imports no service module, and no import
cycle between the packages of service/, mappings/ and validation/."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_the_import_contracts_are_kept() -> None:
    # a subprocess: import-linter builds the import graph of the installed packages from the project root
    run = subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / ".importlinter"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_the_contracts_are_the_ones_the_architecture_names() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    layers = config["importlinter:contract:layers"]["layers"].split()
    assert layers == ["service.entrypoints", "service.service_layer", "service.domain"]
    mappings_forbidden = set(config["importlinter:contract:pure-mappings"]["forbidden_modules"].split())
    assert {"service.entrypoints", "service.service_layer", "service.adapters", "service.fhir"} <= mappings_forbidden
    assert "validation" in mappings_forbidden  # the mappings build resources; they do not call the validator
    validation_forbidden = set(config["importlinter:contract:validation-no-domain"]["forbidden_modules"].split())
    assert validation_forbidden == {"service"}  # the validator imports nothing from service itself
    assert config["importlinter:contract:acyclic"]["type"] == "acyclic_siblings"
    assert set(config["importlinter:contract:acyclic"]["ancestors"].split()) == {"service", "mappings", "validation"}
