"""No function in service/, mappings/ or validation/ above cyclomatic complexity 15 (radon) unless it says why.

A function may exceed the limit when the line just above its ``def`` (or its decorators) is a comment starting
``# complexity:`` that says why, or when ALLOWED below names it with a reason. An allowance that is no longer
needed fails too, so the list only shrinks. Run by ``make lint``; exit status 1 lists the offenders.
"""

from __future__ import annotations

import sys
from pathlib import Path

from radon.complexity import cc_visit
from radon.visitors import Function  # radon flattens methods into Functions named Class.method

LIMIT = 15
ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "mappings", "validation")

# "path:qualified name" -> why it may stay above the limit (none now: the list only shrinks)
ALLOWED: dict[str, str] = {}


def _blocks(source: str):
    """(qualified name, first line, complexity) of every function and method, nested functions included."""

    def walk(function, prefix):
        name = f"{prefix}{function.fullname}"
        yield name, function.lineno, function.complexity
        for inner in function.closures:
            yield from walk(inner, f"{name}.")

    for block in cc_visit(source):
        if isinstance(block, Function):
            yield from walk(block, "")


def _explained(lines: list[str], lineno: int) -> bool:
    """A ``# complexity:`` comment just above the def (or above its decorators)."""
    i = lineno - 2
    while i >= 0 and lines[i].lstrip().startswith("@"):
        i -= 1
    return i >= 0 and lines[i].lstrip().startswith("# complexity:")


def offenders(root: Path = ROOT) -> tuple[list[str], list[str]]:
    """(functions over the limit with no reason, allowances nothing needs any more)."""
    over, seen = [], set()
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            source = path.read_text(encoding="utf-8")
            lines = source.splitlines()
            for name, lineno, complexity in _blocks(source):
                if complexity <= LIMIT:
                    continue
                key = f"{rel}:{name}"
                if key in ALLOWED:
                    seen.add(key)
                elif not _explained(lines, lineno):
                    over.append(f"{key} (line {lineno}): complexity {complexity} > {LIMIT}")
    return over, sorted(set(ALLOWED) - seen)


def main() -> int:
    over, stale = offenders()
    for line in over:
        print(f"too complex: {line}; split it, or say why in a '# complexity:' comment above it")
    for key in stale:
        print(f"allowance no longer needed (remove it from scripts/check_complexity.py): {key}")
    return 1 if over or stale else 0


if __name__ == "__main__":
    sys.exit(main())
