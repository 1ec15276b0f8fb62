"""supplier_pool is a leaf: it never imports gateway, ratelimit or risk."""

from __future__ import annotations

import ast
from pathlib import Path

import supplier_pool

FORBIDDEN = {"gateway", "ratelimit", "risk"}


def imported_roots(source: str) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_supplier_pool_imports_no_sibling_package() -> None:
    package_dir = Path(supplier_pool.__file__).parent
    files = sorted(package_dir.rglob("*.py"))
    assert files
    for path in files:
        wrong = imported_roots(path.read_text("utf-8")) & FORBIDDEN
        assert not wrong, f"{path.name} imports {sorted(wrong)}"
