"""The import cycles among mmserve's own modules: ``python -m tools.import_cycles``.

Every ``import`` statement of the first-party packages counts, wherever it sits: at the top of a
module, inside a function (a deferred import still runs, only later) or under ``if TYPE_CHECKING:``
(a type checker follows it, and it marks a dependency the code pretends not to have). The graph's
strongly connected components of more than one module are the cycles; each is printed with the
imports that close it (file and line), and the command exits 1 if there is any. A unit test runs
``cycles()`` so that a new cycle fails the suite.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("api", "benchmarks", "clients", "config", "deployments", "graphs", "models", "tools")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module
    line: int


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file of ``packages`` under ``root``."""
    files = (path for package in packages for path in sorted((root / package).rglob("*.py")))
    return {module_name(path, root): path for path in files}


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative imports resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    anchor = module.split(".")
    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def _known(name: str, known: dict[str, Path]) -> str | None:
    """``name`` or its longest prefix that is a first-party module (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in known:
            return ".".join(parts)
        parts.pop()
    return None


def imports_of(module: str, known: dict[str, Path]) -> list[Import]:
    """The first-party modules ``module`` imports, at any depth of its syntax tree."""
    path = known[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, path.name == "__init__.py", node)
            # ``from pkg import sub`` imports the module pkg.sub; ``from mod import name`` imports mod
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _known(name, known)
            edge = Import(module, target, node.lineno) if target not in (None, module) else None
            if edge is not None and edge not in found:
                found.append(edge)
    return found


def graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, list[Import]]:
    known = modules(root, packages)
    return {module: imports_of(module, known) for module in known}


def components(edges: dict[str, list[Import]]) -> list[list[str]]:
    """Tarjan's strongly connected components of the import graph, each sorted, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for edge in edges.get(module, []):
            if edge.target not in index:
                visit(edge.target)
                low[module] = min(low[module], low[edge.target])
            elif edge.target in on_stack:
                low[module] = min(low[module], index[edge.target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges) + 100))
    for module in sorted(edges):
        if module not in index:
            visit(module)
    return sorted(found, key=lambda c: (-len(c), c))


def cycles(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[list[str]]:
    """The import cycles: strongly connected components of more than one module."""
    return [c for c in components(graph(root, packages)) if len(c) > 1]


def report(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> str:
    known = modules(root, packages)
    edges = {module: imports_of(module, known) for module in known}
    found = [c for c in components(edges) if len(c) > 1]
    lines = [f"{len(found)} import cycle(s) among {len(edges)} modules of {', '.join(packages)}"]
    for number, component in enumerate(found, 1):
        members = set(component)
        lines.append(f"\n{number}. {len(component)} modules: {', '.join(component)}")
        for module in component:
            for edge in edges[module]:
                if edge.target in members:
                    path = known[module].relative_to(root)
                    lines.append(f"   {path}:{edge.line}  {module} -> {edge.target}")
    return "\n".join(lines)


def main() -> int:
    print(report())
    return 1 if cycles() else 0


if __name__ == "__main__":
    sys.exit(main())
