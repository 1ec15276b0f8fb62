"""Dependencies point one way: gateway uses ratelimit, risk and supplier_pool; never back."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEAVES = ("ratelimit", "risk", "supplier_pool", "loadtests")
ALL = ("gateway", *LEAVES)


def imported_packages(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found & set(ALL)


def test_leaf_packages_never_import_gateway_or_each_other() -> None:
    wrong = {leaf: imported_packages(leaf) - {leaf} for leaf in LEAVES}
    assert {leaf: deps for leaf, deps in wrong.items() if deps} == {}


def test_gateway_uses_the_leaf_packages() -> None:
    assert {"ratelimit", "risk", "supplier_pool"} <= imported_packages("gateway")
