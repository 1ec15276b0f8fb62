"""The backend is a separate program: the gateway never imports it, and it uses only the
gateway's settings, key table, Valkey connector and code helpers."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {"gateway.settings", "gateway.valkey.keys", "gateway.valkey.connect", "gateway.codes"}


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_the_gateway_never_imports_the_backend() -> None:
    assert {name for name in _imports("gateway") if name.split(".")[0] == "backend"} == set()


def test_the_backend_uses_only_the_gateways_shared_modules() -> None:
    used = {name for name in _imports("backend") if name.split(".")[0] == "gateway"}
    assert {name for name in used if not any(name.startswith(a) for a in ALLOWED)} == set()
