"""One harness: bench/ takes what it shares with the tests from tests/support only (public names), and the tests
import nothing from bench/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imports_of(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import statement in the file, at any depth (imports inside functions count)."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def test_bench_uses_only_public_names_of_the_test_harness() -> None:
    wrong = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        for module, names in imports_of(path):
            if module == "tests" or module.startswith("tests."):
                if not (module == "tests.support" or module.startswith("tests.support.")):
                    wrong.append(f"{path.name}: {module}")
                wrong.extend(f"{path.name}: {module}.{name}" for name in names if name.startswith("_"))
                wrong.extend(f"{path.name}: {module}" for part in module.split(".") if part.startswith("_"))
    assert wrong == []


def test_the_tests_import_nothing_from_bench() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for module, _ in imports_of(path)
        if module == "bench" or module.startswith("bench.")
    ]
    assert wrong == []
