"""claim.lua and gateway/claims/layout.py name the claim function's KEYS, ARGV and replies
alike: the script's header and its offset declarations list the layout's fields in the
layout's order, its outcomes are records.Outcome's, and it stays readable (a short header,
no function over 60 lines)."""

from __future__ import annotations

import re
from importlib import resources

from gateway.claims import layout
from gateway.claims.desk import claim_script_constants
from gateway.records import Outcome
from gateway.settings import parse

SCRIPT = resources.files("gateway.claims").joinpath("lua/claim.lua").read_text(encoding="utf-8")


def header() -> str:
    """The script's opening comment, as one line of text."""
    lines = SCRIPT.splitlines()
    opening = lines[: next(n for n, line in enumerate(lines) if not line.startswith("--"))]
    return " ".join(line.removeprefix("--").strip() for line in opening)


def names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(","))


def declared(first: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The names and numbers of the `local A, B, ... = 1, 2, ...` that declares `first`."""
    found = re.search(rf"^local ({first}\b[\w, ]*) =\s*([\d, ]+)$", SCRIPT, re.MULTILINE)
    assert found, f"claim.lua declares no offsets starting with {first}"
    return names(found.group(1)), tuple(int(n) for n in names(found.group(2)))


def test_the_header_lists_the_keys_in_the_layouts_order() -> None:
    found = re.search(r"KEYS: ([\w, ]+); per claim: ([\w, ]+)\.", header())
    assert found
    assert names(found.group(1)) == layout.HEAD_KEYS
    assert names(found.group(2)) == layout.CLAIM_KEYS


def test_the_header_lists_the_arguments_in_the_layouts_order() -> None:
    found = re.search(r"ARGV: ([\w, ]+); per claim: ([\w, ]+); per rule: ([\w, ]+)\.", header())
    assert found
    assert names(found.group(1)) == layout.Head._fields
    assert names(found.group(2)) == layout.ClaimArgs._fields
    assert names(found.group(3)) == layout.RuleArgs._fields


def test_the_header_lists_the_replies_in_the_layouts_order() -> None:
    found = re.search(r"Replies, per claim: ([\w, ]+)\.", header())
    assert found
    assert names(found.group(1)) == layout.Reply._fields


def test_the_scripts_offsets_follow_the_layout() -> None:
    fields = layout.ClaimArgs._fields
    assert declared("FP") == (
        tuple(f.upper() for f in fields),
        tuple(range(1, len(fields) + 1)),
    )
    assert re.search(rf"^local CLAIM_ARGS = {len(fields)}$", SCRIPT, re.MULTILINE)
    rule = layout.RuleArgs._fields
    assert declared("RULE_ID") == (tuple(f.upper() for f in rule), tuple(range(1, len(rule) + 1)))
    assert re.search(rf"^local RULE_ARGS = {len(rule)}$", SCRIPT, re.MULTILINE)
    head = len(layout.HEAD_KEYS), len(layout.Head._fields)
    assert declared("HEAD_KEYS") == (("HEAD_KEYS", "HEAD_ARGS"), head)
    unpacked = re.search(r"^  ([\w, ]+) = unpack\(ARGV, 1, HEAD_ARGS\)$", SCRIPT, re.MULTILINE)
    assert unpacked and names(unpacked.group(1)) == layout.Head._fields


def test_a_claims_keys_are_built_in_the_layouts_order() -> None:
    built = layout.claim_keys("voucher", ["list_logs"], ["rule_keys"], ["nonce"], ["pass_nonce"])
    assert tuple(built) == layout.CLAIM_KEYS
    assert layout.claim_keys("v", ["l1", "l2"], [], [], []) == ["v", "l1", "l2"]


def test_the_outcomes_the_script_names_are_records_outcomes_written_into_the_library() -> None:
    used = {name for name in Outcome.__members__ if re.search(rf"\b{name}\b", SCRIPT)}
    assert used == {outcome.name for outcome in layout.CLAIM_OUTCOMES}
    assert not re.search(r"return \d+,", SCRIPT)  # no outcome as a bare number
    constants = claim_script_constants(parse('[admin]\ntoken = "t"\n'))
    found = re.search(r"^local ([A-Z_, ]+) =\n\s*([\d, ]+)$", constants, re.MULTILINE)
    assert found
    written = dict(zip(names(found.group(1)), names(found.group(2)), strict=True))
    assert written == {outcome.name: str(int(outcome)) for outcome in layout.CLAIM_OUTCOMES}


def test_the_header_is_short_and_no_function_is_long() -> None:
    lines = SCRIPT.splitlines()
    assert next(n for n, line in enumerate(lines) if not line.startswith("--")) <= 15
    lengths: dict[str, int] = {}
    start = name = None
    for number, line in enumerate(lines):
        if line.startswith("local function "):
            start, name = number, line.split()[2].split("(")[0]
        elif line == "end" and name is not None and start is not None:
            lengths[name] = number - start + 1
            name = None
    assert "decide" in lengths and "call" in lengths
    assert max(lengths.values()) <= 60, lengths
