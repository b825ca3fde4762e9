"""One problem found by a validation layer, as an OperationOutcome issue (severity, code, FHIRPath expression,
diagnostics). Every layer reports with this class; ``operation_outcome`` builds the resource through mappings."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from mappings.resources.operation_outcome import validation_outcome

_ENTRY = re.compile(r"Bundle\.entry\[(\d+)\]")


def entry_index(expression: str | None) -> int | None:
    """The position of the Bundle entry an expression is about (``Bundle.entry[3].resource.id``: 3); None for one
    about no entry."""
    match = _ENTRY.match(expression or "")
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Issue:
    severity: str  # fatal | error | warning | information
    code: str  # OperationOutcome issue type: structure, code-invalid, invariant, business-rule, ...
    expression: str
    diagnostics: str

    def as_fhir(self) -> dict:
        return {
            "severity": self.severity,
            "code": self.code,
            "expression": [self.expression],
            "diagnostics": self.diagnostics,
        }


def operation_outcome(issues: Iterable[Issue]) -> dict:
    return validation_outcome(i.as_fhir() for i in issues)


def dedupe(issues: list[Issue]) -> list[Issue]:
    """The issues in order, each reported once."""
    seen, out = set(), []
    for issue in issues:
        key = (issue.severity, issue.code, issue.expression, issue.diagnostics)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out
