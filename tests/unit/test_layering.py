"""The dependency direction is part of the architecture: a test keeps it.

The import graph is read from the source (every ``import``, also those inside functions
and under ``TYPE_CHECKING``), so a cycle hidden by a function-local import still fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("service", "training")
# The HTTP layer: the only modules that may import ``service.api``.
HTTP_LAYER = ("service.api", "service.app", "service.cli", "service.console")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: str, root: Path = ROOT) -> list[Path]:
    return sorted((root / package).rglob("*.py"))


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """Every module name ``path`` imports.

    Relative imports resolved, ``from m import n`` counted as ``m.n`` too (a submodule, or a name of
    ``m``: ``graph`` keeps the modules).
    """
    package = module_name(path if path.name == "__init__.py" else path.parent, root)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Our modules (and packages) → the ones of ours each imports."""
    names = {p: module_name(p, root) for package in packages for p in modules(package, root)}
    ours = set(names.values())
    return {
        name: {n for n in imports_of(p, root) if n in ours} - {name} for p, name in names.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def in_layer(name: str, layer: tuple[str, ...]) -> bool:
    return any(name == top or name.startswith(top + ".") for top in layer)


def test_service_never_imports_training():
    offenders = [
        str(p.relative_to(ROOT))
        for p in modules("service")
        if any(n == "training" or n.startswith("training.") for n in imports_of(p))
    ]
    assert offenders == []


def core_imports_of_http(edges: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in edges.items()
        if module.startswith("service.") and not in_layer(module, HTTP_LAYER)
        for target in targets
        if in_layer(target, HTTP_LAYER)
    )


def test_the_core_never_imports_the_http_layer():
    assert core_imports_of_http(graph()) == []


def test_the_contract_sits_at_the_bottom():
    assert graph()["service.contract"] <= {"service", "service.errors"}


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_checks_see_function_local_and_relative_imports(tmp_path):
    files = {
        "service/__init__.py": "",
        "service/api/__init__.py": "",
        "service/api/schemas.py": "from ..core import helper\n",
        "service/core.py": "def helper():\n    from service.api import schemas\n",
        "service/leaf.py": "from service import core\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    edges = graph(tmp_path, ("service",))
    assert cycles(edges) == [["service.api.schemas", "service.core"]]
    assert "service.core imports service.api.schemas" in core_imports_of_http(edges)
    (tmp_path / "service/core.py").write_text("def helper():\n    pass\n")
    edges = graph(tmp_path, ("service",))
    assert cycles(edges) == []
    assert core_imports_of_http(edges) == []


def test_catalog_imports_nothing_of_ours():
    assert graph()["service.features.catalog"] <= {"service", "service.features"}


def test_only_the_http_layer_knows_litestar():
    offenders = [
        str(p.relative_to(ROOT))
        for p in modules("service")
        if not in_layer(module_name(p), ("service.api", "service.app", "service.console"))
        and any(n.startswith("litestar") for n in imports_of(p))
    ]
    assert offenders == []
