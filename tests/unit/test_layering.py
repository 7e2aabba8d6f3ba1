"""The dependency direction is part of the architecture: a test keeps it."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names.add("service." + (node.module or ""))
            elif node.module:
                names.add(node.module)
    return names


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_service_never_imports_training():
    offenders = [
        str(p.relative_to(ROOT))
        for p in modules("service")
        if any(n == "training" or n.startswith("training.") for n in imports_of(p))
    ]
    assert offenders == []


def test_catalog_imports_nothing_of_ours():
    ours = {
        n
        for n in imports_of(ROOT / "service" / "features" / "catalog.py")
        if n.startswith("service")
    }
    assert ours == set()


def test_only_the_http_layer_knows_litestar():
    allowed = {ROOT / "service" / "app.py", *(ROOT / "service" / "api").rglob("*.py")}
    offenders = [
        str(p.relative_to(ROOT))
        for p in modules("service")
        if p not in allowed and any(n.startswith("litestar") for n in imports_of(p))
    ]
    assert offenders == []
