"""The house's rules, read from the code: wings import downward only, modules stay small, and
the scripts outside the package (bench, faults, topology, docs) import names that exist."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from helpers import REPO

PACKAGE = REPO / "rest_consumer"
ALLOWED = {
    "core": set(),
    "state": {"core"},
    "broker": {"core", "state"},
    "reader": {"core", "state"},
    "worker": {"core", "state", "broker"},
    "web": {"core", "state", "broker"},
    "devtools": {"core", "state"},
}
"""What each wing may import besides itself: process wings (reader, worker, web) never
import each other; the shared ones never import a process wing."""
MAX_MODULE_LINES = 420


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("rest_consumer")}


@pytest.mark.parametrize("wing", sorted(ALLOWED))
def test_a_wing_imports_only_the_wings_below_it(wing: str) -> None:
    wrong = []
    for path in sorted((PACKAGE / wing).glob("*.py")):
        for module in imported_modules(path):
            parts = module.split(".")
            other = parts[1] if len(parts) > 1 else ""
            if other in ALLOWED and other != wing and other not in ALLOWED[wing]:
                wrong.append(f"{path.relative_to(REPO)} imports {module}")
            if other in ("cli", "tasks", "api"):
                wrong.append(f"{path.relative_to(REPO)} imports the entry module {module}")
    assert wrong == []


def test_no_module_is_over_the_size_a_reader_takes_in() -> None:
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > MAX_MODULE_LINES} == {}


@pytest.mark.parametrize("folder", ["bench", "faults", "topology", "docs/hooks", "tests"])
def test_scripts_import_names_the_package_has(folder: str) -> None:
    missing = []
    for path in sorted((REPO / folder).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module
                    and node.module.startswith("rest_consumer")):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        missing.append(f"{path.name}: {node.module}.{alias.name}")
    assert missing == []
