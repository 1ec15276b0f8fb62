"""The velocity Lua library, read with importlib.resources."""

from __future__ import annotations

from importlib import resources


def velocity_source() -> str:
    """Return the distinct_peek/distinct_record library chunk, to join in front of a script body."""
    return resources.files("risk").joinpath("velocity.lua").read_text(encoding="utf-8")
