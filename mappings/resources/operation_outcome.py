"""OperationOutcome: the answer to a refused, failed or merely informational request (and to $validate)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

NO_ISSUES = "No issues found."


def issue(severity: str, code: str, diagnostics: str, expression: str | None = None) -> dict:
    """One issue; ``code`` is an R4 issue-type code (invalid, not-found, transient, informational, ...)."""
    found: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        found["expression"] = [expression]
    return found


def operation_outcome(issues: Iterable[Mapping[str, Any]]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [dict(i) for i in issues]}


def information(diagnostics: str) -> dict:
    """An outcome that only informs (a stored write, a delete that keeps the history)."""
    return operation_outcome([issue("information", "informational", diagnostics)])


def validation_outcome(issues: Iterable[Mapping[str, Any]]) -> dict:
    """The outcome of $validate: the issues found, else one informational issue saying there are none."""
    found = [dict(i) for i in issues]
    return operation_outcome(found) if found else information(NO_ISSUES)
