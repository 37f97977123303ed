"""The shape of the framework: no import cycles inside ``pipeline/``, and the framework never imports this
repository's reference deployment (``config``, ``tasks``, ``agents``, ``tools``, ``scripts``).

Imports inside functions count (a lazy import is still a dependency); imports under ``if TYPE_CHECKING:`` do not
(they never run).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.stacks import ROOT

PACKAGE = ROOT / "pipeline"
DEPLOYMENT = ("config", "tasks", "agents", "tools", "scripts", "rubot_app")
# A string naming a module of the deployment ("tasks.app", "rubot_app.agents.x:y"): an import by name is still
# a dependency, so the framework may not hold one either (for a default, a fallback, an error message...).
MODULE_STRING = re.compile(rf"^({'|'.join(DEPLOYMENT)})(\.[A-Za-z_][A-Za-z0-9_]*)+(:[A-Za-z_][A-Za-z0-9_]*)?$")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` (and any others, as written) that ``path`` imports."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}
    modules = set(paths)
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        targets = set()
        for imported in imports_of(path, modules):
            # "pipeline.store.tables" depends on the module itself, not on the packages above it
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_framework_has_no_import_cycles():
    # Given the import graph of pipeline/ (package __init__ re-exports excluded: they import, nobody needs them)
    graph = {
        name: {t for t in targets if not _is_package_init(t)}
        for name, targets in import_graph().items()
        if not _is_package_init(name)
    }
    # Then no set of modules imports each other in a circle
    assert cycles(graph) == []


def test_the_framework_never_imports_the_reference_deployment():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        bad = set()
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            )
            bad.update(n for n in names if n.split(".")[0] in DEPLOYMENT)
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            ids.add(id(first.value))
    return ids


def deployment_strings(path: Path) -> list[str]:
    """String constants of ``path`` (docstrings aside) that name a module of the deployment."""
    tree = ast.parse(path.read_text())
    skip = _docstrings(tree)
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skip
        and MODULE_STRING.match(node.value)
    ]


def test_the_framework_names_no_deployment_module_in_a_string():
    offenders = {str(p.relative_to(ROOT)): deployment_strings(p) for p in PACKAGE.rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_string_guard_finds_a_module_name(tmp_path):
    # The guard itself: a default module name is found, a docstring and ordinary text are not
    module = tmp_path / "m.py"
    module.write_text('"""Uses tasks.app."""\nDEFAULT = "tasks.app"\nOTHER = "rubot_app.agents.x:y"\nTEXT = "config"\n')
    assert deployment_strings(module) == ["tasks.app", "rubot_app.agents.x:y"]


def test_the_cycle_finder_finds_a_cycle():
    # The guard itself: a two-module circle and a three-module circle are reported, a chain is not
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert cycles(graph) == [["a", "b"], ["c", "d", "e"]]


def _is_package_init(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return (path / "__init__.py").exists()
