"""risk imports neither ratelimit nor gateway (dependencies point one way)."""

from __future__ import annotations

import ast
from pathlib import Path

import risk

FORBIDDEN = {"ratelimit", "gateway", "supplier_pool"}


def test_risk_imports_no_sibling_package():
    for path in Path(risk.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            assert not {n.split(".")[0] for n in names} & FORBIDDEN, path
