"""The house's one layer rule, as a table: which room may import which.

    ops -> app -> http -> claims | redemptions | admin -> valkey

The shared modules (telemetry, records, errors, ...) are importable by every room and import
only each other, valkey and the leaf packages. The leaves (ratelimit, risk, supplier_pool,
loadtests, chaos) import nothing of ours. The backend reads the gateway's settings, key table, claim
ids and time format, and the gateway never imports it. Any other arrow is a named waiver below.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "ratelimit", "risk", "supplier_pool", "loadtests", "backend", "chaos")

SHARED = {
    "gateway.telemetry",
    "gateway.records",
    "gateway.errors",
    "gateway.models",
    "gateway.settings",
    "gateway.codes",
    "gateway.list_hits",
    "gateway.challenges",
    "gateway.timefmt",
    "gateway.randomness",
}
DESKS = {"gateway.claims", "gateway.redemptions", "gateway.admin"}
LEAVES = {"ratelimit", "risk", "supplier_pool"}

# room -> the rooms it may import (besides itself; SHARED and LEAVES are open to every gateway room)
MAY_IMPORT: dict[str, set[str]] = {
    "gateway.__main__": {"gateway.ops"},
    "gateway.ops": {"gateway.app", "gateway.valkey"},
    "gateway.app": {"gateway.http", *DESKS, "gateway.valkey"},
    "gateway.http": {*DESKS, "gateway.valkey"},
    "gateway.claims": {"gateway.valkey"},
    "gateway.redemptions": {"gateway.valkey"},
    "gateway.admin": {"gateway.valkey"},
    "gateway.valkey": set(),
    **{shared: {"gateway.valkey"} for shared in SHARED},
    "ratelimit": set(),
    "risk": set(),
    "supplier_pool": set(),
    "loadtests": set(),
    # The chaos suite drives the gateway as a black box: subprocesses, HTTP, Valkey's protocol.
    "chaos": set(),
    "backend": {
        "gateway.settings",
        "gateway.codes",
        "gateway.timefmt",
        "gateway.valkey.keys",
        "gateway.valkey.connect",
    },
}

# (importing room, imported module) -> why the arrow is there
WAIVERS = {
    ("gateway.claims", "gateway.http.wire"): "the desk answers the raw HTTP answer http writes",
    ("gateway.redemptions", "gateway.http.wire"): "the desk answers the raw HTTP answer too",
    ("gateway.admin", "gateway.http.intake"): "the admin API reads bodies and ids as http does",
    ("gateway.admin", "gateway.http.auth"): "an admin actor's IP is resolved as a client's is, "
    "behind the same trusted proxies",
    ("gateway.admin", "gateway.redemptions.cards"): "card uploads are sealed by the code that "
    "opens them at redemption",
}


def room_of(module: str) -> str | None:
    """The room a dotted module belongs to (None: not ours)."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[0] != "gateway":
        return parts[0]
    return ".".join(parts[:2]) if len(parts) > 1 else "gateway"


def imports(module: str, source: str) -> Iterator[str]:
    """Every module `source` imports, absolute, type-checking-only imports included."""
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from gateway import codes` names module gateway.codes
            yield from (
                f"{base}.{alias.name}" if base in PACKAGES or room_of(base) == base else base
                for alias in node.names
            )


def allowed(importer: str, target: str) -> bool:
    mine, theirs = room_of(importer), room_of(target)
    if theirs is None or mine is None or mine == theirs or target == "gateway":
        return True
    if mine.startswith("gateway") and (theirs in SHARED or theirs in LEAVES):
        return True
    if (mine, target) in WAIVERS:
        return True
    return theirs in MAY_IMPORT.get(mine, set()) or target in MAY_IMPORT.get(mine, set())


def violations(modules: Iterable[tuple[str, str]]) -> list[str]:
    """`importer -> imported` for every arrow the table does not allow."""
    return [
        f"{module} -> {target}"
        for module, source in modules
        for target in imports(module, source)
        if not allowed(module, target)
    ]


def our_modules() -> Iterator[tuple[str, str]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            yield dotted.removesuffix(".__init__"), path.read_text(encoding="utf-8")


def test_every_import_follows_the_layer_table() -> None:
    modules = list(our_modules())
    assert len(modules) > 60
    assert violations(modules) == []


def test_every_gateway_room_is_in_the_table() -> None:
    rooms = {room_of(module) for module, _ in our_modules()} - {"gateway"}
    assert rooms - set(MAY_IMPORT) == set()


def test_a_planted_wrong_import_is_caught() -> None:
    planted = [
        ("gateway.claims.desk", "from gateway.redemptions.desk import RedeemDesk\n"),
        ("gateway.valkey.keys", "from gateway.http import routes\n"),
        ("risk.rules", "import ratelimit.rules\n"),
        ("gateway.claims.batcher", "from backend import ingest\n"),
        ("gateway.admin.routes", "from ..app import SERVICES\n"),
    ]
    assert violations(planted) == [
        "gateway.claims.desk -> gateway.redemptions.desk",
        "gateway.valkey.keys -> gateway.http.routes",
        "risk.rules -> ratelimit.rules",
        "gateway.claims.batcher -> backend.ingest",
        "gateway.admin.routes -> gateway.app.SERVICES",
    ]


def test_the_gateway_uses_the_leaf_packages() -> None:
    used = {room_of(t) for m, s in our_modules() if m.startswith("gateway") for t in imports(m, s)}
    assert used >= LEAVES
