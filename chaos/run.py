"""`python -m chaos.run [--quick] [--only NAME ...] [--out chaos/last.json]`

Runs every scenario of the table in turn (TODO rows are listed, never run), prints the table
"what survives which fault, as measured" and writes the results as JSON. Exit 1 when a
scenario failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from chaos.scenarios import FULL, QUICK, SCENARIOS, Result, Scale, Scenario


async def run_one(scenario: Scenario, scale: Scale) -> Result:
    if scenario.run is None:
        return Result(scenario.name, scenario.mode, "todo", note=scenario.todo)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"chaos-{scenario.name}-") as work:
        try:
            result = await scenario.run(Path(work), scale, scenario.mode)
        except Exception as exc:  # a crashed scenario is a failed one, with its reason
            traceback.print_exc()
            result = Result(scenario.name, scenario.mode, "fail", note=f"error: {exc!r}")
    result.seconds = time.monotonic() - started
    return result


def fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def table(results: list[Result], faults: dict[tuple[str, str], str]) -> str:
    lines = ["| scenario | mode | fault | verdict | measured |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        measured = "; ".join(
            f"{c.name} {fmt(c.value)} ({c.bound}){'' if c.passed else ' FAILED'}" for c in r.checks
        )
        if r.status == "todo" or r.note:
            measured = (measured + "; " if measured else "") + r.note
        fault = faults[(r.scenario, r.mode)]
        lines.append(f"| {r.scenario} | {r.mode} | {fault} | {r.status.upper()} | {measured} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaos.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the scaled-down subset")
    parser.add_argument("--only", action="append", default=[], help="scenario name, repeatable")
    parser.add_argument("--out", default="chaos/last.json")
    args = parser.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    scale = QUICK if args.quick else FULL
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    results = []
    for scenario in chosen:
        if scenario.run is not None:
            print(f"chaos: {scenario.name} ({scenario.mode}) ...", file=sys.stderr, flush=True)
        results.append(asyncio.run(run_one(scenario, scale)))
        if scenario.run is not None:
            print(f"chaos: {scenario.name}: {results[-1].status}", file=sys.stderr, flush=True)
    faults = {(s.name, s.mode): s.fault for s in chosen}
    print(table(results, faults))
    doc = {
        "scale": "quick" if args.quick else "full",
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": [r.as_dict() for r in results],
    }
    Path(args.out).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 1 if any(r.status == "fail" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
