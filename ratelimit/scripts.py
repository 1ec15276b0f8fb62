"""Lua sources shipped next to the code, read with importlib.resources."""

from __future__ import annotations

from importlib import resources


def load_lua(package: str, name: str) -> str:
    """Return the UTF-8 text of the file `name` shipped inside `package` (e.g. a .lua script)."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def sliding_window_source() -> str:
    """Return the sliding-window library chunk (sw_peek, sw_record, sw_admit), to be joined in
    front of a script body."""
    return load_lua("ratelimit", "sliding_window.lua")


def coarse_window_source() -> str:
    """Return the coarse-window library chunk (cw_admit, cw_unadmit), for limits above
    EXACT_MAX_HITS, to be joined in front of a script body."""
    return load_lua("ratelimit", "coarse_window.lua")
