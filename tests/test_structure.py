"""The code's shape, kept: packages depend one way (no import cycle between tuner's packages
and top-level modules, imports inside functions included), every module under 400 lines, and
the architecture page names every package."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from conftest import REPO

TUNER = REPO / "tuner"
MAX_LINES = 400


def _unit(path: Path) -> str:
    """The package (``agent``) or top-level module (``errors``) a file belongs to."""
    rel = path.relative_to(TUNER).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def _imported_units(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "tuner" and len(parts) > 1:
                target = TUNER / parts[1]
                if target.is_dir() or target.with_suffix(".py").is_file():
                    out.add(parts[1])
    return out


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in TUNER.rglob("*.py"):
        unit = _unit(path)
        if unit == "__init__":
            continue
        graph[unit] |= _imported_units(path) - {unit}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_packages_depend_one_way():
    cycle = _cycle(package_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_is_under_400_lines():
    long = {str(p.relative_to(REPO)): n for p in TUNER.rglob("*.py")
            if (n := len(p.read_text().splitlines())) >= MAX_LINES}  # fmt: skip
    assert not long, long


def test_the_architecture_page_names_every_package():
    text = (REPO / "docs/architecture.md").read_text()
    for unit in sorted(package_graph()):
        assert f"`{unit}`" in text or f"tuner/{unit}" in text, unit


def test_every_third_party_import_is_a_declared_dependency():
    """A module imported by tuner's code (imports inside functions included) comes with
    Python, from Debian (BCC), or from a distribution pyproject.toml declares: an import that
    was installed by hand once broke `make test` on a fresh machine (httptools)."""
    import importlib.metadata
    import re
    import sys
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def name(req: str) -> str:
        return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower().replace("_", "-")

    declared = {name(r) for r in project["dependencies"]}
    dists = importlib.metadata.packages_distributions()
    missing = {}
    for path in TUNER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top in sys.stdlib_module_names or top in ("tuner", "bcc"):
                    continue
                owners = {d.lower().replace("_", "-") for d in dists.get(top, [top])}
                if not owners & declared:
                    missing[top] = str(path.relative_to(REPO))
    assert not missing, f"imported but not in pyproject.toml's dependencies: {missing}"
