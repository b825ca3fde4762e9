"""Every code system URL kapfhir sends lives in mappings/terminology.py (or the conformance resources): a literal
anywhere else in service/, mappings/ or validation/ fails here, unless the allow-list below names it with its reason."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODE_SYSTEM = re.compile(
    r"http://terminology\.hl7\.org|http://hl7\.org/fhir|http://loinc\.org|http://snomed\.info/sct"
    r"|http://www\.nlm\.nih\.gov/research/umls/rxnorm|http://unitsofmeasure\.org|urn:oid:|http://dicom\.nema\.org"
)
HOME = ("mappings/terminology.py", "mappings/conformance/")

# (file or folder, literal or None for any): why it may stay where it is.
ALLOWED: dict[tuple[str, str | None], str] = {
    ("validation/", None): "the validator quotes the FHIRPath invariants and canonical prefixes of the profiles it "
    "checks, and tells HL7-defined code systems from others by their namespace; it builds no resource",
}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.add(id(value))
    return found


def code_system_literals(path: Path) -> list[tuple[int, str]]:
    """(line, literal) of each string constant (f-string parts included, docstrings and comments left out) that
    names a code system."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = _docstrings(tree)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docs
        and CODE_SYSTEM.search(node.value)
    ]


def _allowed(rel: str, literal: str) -> bool:
    return any(
        (rel == where or (where.endswith("/") and rel.startswith(where))) and (what is None or literal == what)
        for where, what in ALLOWED
    )


def _sources() -> list[Path]:
    return sorted(p for top in ("service", "mappings", "validation") for p in (ROOT / top).rglob("*.py"))


def test_no_code_system_literal_outside_terminology() -> None:
    stray = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(HOME):
            continue
        stray += [f"{rel}:{line}: {lit}" for line, lit in code_system_literals(path) if not _allowed(rel, lit)]
    assert stray == [], "move these to mappings/terminology.py:\n" + "\n".join(stray)


def test_every_allowance_is_still_needed() -> None:
    used = set()
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        for _, lit in code_system_literals(path):
            used |= {
                (where, what)
                for where, what in ALLOWED
                if (rel == where or (where.endswith("/") and rel.startswith(where))) and what in (None, lit)
            }
    assert set(ALLOWED) - used == set()  # an allowance nothing needs any more goes


@pytest.mark.parametrize(
    "source, found",
    [
        ('SYSTEM = "http://loinc.org"\n', ["http://loinc.org"]),
        ('x = f"{a}|http://snomed.info/sct"\n', ["|http://snomed.info/sct"]),  # the constant part
        ('"""Cites http://loinc.org in a docstring."""\n# http://loinc.org in a comment\n', []),
        ('ORG = "urn:oid:2.16.840.1.113883"\n', ["urn:oid:2.16.840.1.113883"]),
    ],
)
def test_the_scan_finds_literals_and_skips_docstrings_and_comments(tmp_path: Path, source: str, found: list) -> None:
    module = tmp_path / "m.py"
    module.write_text(source)
    assert [lit for _, lit in code_system_literals(module)] == found
