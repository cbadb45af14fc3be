"""The functional core stays pure: nothing under `reconciler/reconcile/` imports, directly or through
another module of ours, anything that does I/O (network, files, processes, clocks, logging)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "reconciler" / "reconcile"

PURE_THIRD_PARTY = {"pydantic"}
PURE_STDLIB = {
    "__future__",
    "abc",
    "collections",
    "dataclasses",
    "enum",
    "functools",
    "ipaddress",
    "itertools",
    "math",
    "operator",
    "re",
    "typing",
    "zlib",
}
PURE_OURS = {
    "reconciler.model",
    "reconciler.gateways",
    "reconciler.hostnames",
    "reconciler.policy",
    "reconciler.names",
    "reconciler.text",
    "reconciler.shapes",
}


def imports(path: Path) -> set[str]:
    """Absolute module names `path` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def module_path(name: str) -> Path | None:
    parts = name.split(".")
    for candidate in (ROOT.joinpath(*parts).with_suffix(".py"), ROOT.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def impure_imports(start: list[Path]) -> list[str]:
    """`importer -> imported` for every import outside the allowed set, following our own modules."""
    seen: set[Path] = set()
    todo = list(start)
    problems: list[str] = []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in sorted(imports(path)):
            top = name.split(".")[0]
            if top != "reconciler":
                if top not in PURE_STDLIB | PURE_THIRD_PARTY:
                    problems.append(f"{path.name} -> {name}")
                continue
            target = module_path(name)
            if target is None:
                continue  # `from reconciler.x import Name`: the module itself is listed too
            allowed = name in PURE_OURS or name.startswith("reconciler.reconcile")
            if not allowed:
                problems.append(f"{path.name} -> {name}")
            else:
                todo.append(target)
    return problems


def test_the_core_imports_nothing_that_does_io() -> None:
    modules = sorted(CORE.glob("*.py"))
    assert len(modules) > 5
    assert impure_imports(modules) == []


@pytest.mark.parametrize(
    "line",
    [
        "import socket",
        "import logging",
        "from time import monotonic",
        "from reconciler.kube.client import KubeClient",
        "from reconciler import config",
        "from reconciler.config import Settings",
    ],
)
def test_the_guard_catches_an_io_import(tmp_path: Path, line: str) -> None:
    module = tmp_path / "bad.py"
    module.write_text(f"{line}\n")
    assert impure_imports([module]) != []
