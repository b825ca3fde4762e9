"""One harness: bench/ takes what it shares with the tests from tests/support only (public names), the tests import
nothing from bench/, and no module under tests/ imports from a test module (shared helpers live in tests/support)."""

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


def modules_named(path: Path, source: str | None = None) -> list[str]:
    """Every module an import in the file (or in source, as if it were that file) may name, relative imports
    resolved: for `from package import name` both package and package.name (the name may be a module)."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append(module)
            found.extend(f"{module}.{alias.name}" for alias in node.names)
    return found


def enclosing_test_module(module: str) -> str | None:
    """The test module (tests....test_x) a dotted import name is or lies in, or None."""
    parts = module.split(".")
    if parts[0] != "tests":
        return None
    for depth, part in enumerate(parts):
        if part.startswith("test_"):
            return ".".join(parts[: depth + 1])
    return None


def test_no_module_under_tests_imports_from_a_test_module() -> None:
    """A test module holds tests, not a library: a helper two of them share lives in tests/support (public names), so
    editing or moving one test file cannot break another. Files in tests/support are checked too."""
    wrong = sorted(
        {
            f"{path.relative_to(ROOT)}: {enclosing_test_module(module)}"
            for path in sorted((ROOT / "tests").rglob("*.py"))
            for module in modules_named(path)
            if enclosing_test_module(module)
        }
    )
    assert wrong == []


def test_the_test_module_check_sees_absolute_relative_and_from_package_imports() -> None:
    """The check above would catch each way of importing a test module (and not a support module of that name)."""
    here = ROOT / "tests" / "e2e" / "exchange" / "probe.py"
    source = (
        "from tests.e2e.exchange.test_push_sekmet import consent\n"
        "import tests.integration.test_fixtures\n"
        "from . import test_outbox_worker\n"
        "from ..reliability.test_kill_workers import SOAK\n"
        "def later():\n    from tests.e2e import exchange\n"
        "from tests.support.exchange import consent\n"
    )
    named = {enclosing_test_module(m) for m in modules_named(here, source)} - {None}
    assert named == {
        "tests.e2e.exchange.test_push_sekmet",
        "tests.integration.test_fixtures",
        "tests.e2e.exchange.test_outbox_worker",
        "tests.e2e.reliability.test_kill_workers",
    }
