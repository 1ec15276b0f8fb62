"""ratelimit imports neither risk nor gateway (dependencies point one way)."""

from __future__ import annotations

import ast
from pathlib import Path

import ratelimit

FORBIDDEN = {"risk", "gateway", "supplier_pool"}


def test_ratelimit_imports_no_sibling_package():
    for path in Path(ratelimit.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            assert not {n.split(".")[0] for n in names} & FORBIDDEN, path
