"""`make run`'s demo: it prints ready-to-paste curl commands and the first one returns 201."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def read_until_examples(process: subprocess.Popen[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    lines: list[str] = []
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        lines.append(line)
        if line.startswith("# make loadtest"):
            return "".join(lines)
    raise AssertionError("demo printed no examples:\n" + "".join(lines))


@pytest.mark.skipif(shutil.which("curl") is None, reason="the printed examples use curl")
def test_demo_prints_curl_commands_and_the_first_claim_returns_201(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--config", str(ROOT / "config/demo.toml")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        text = read_until_examples(process, timeout_s=60)
        first = re.search(r"^# 1\..*?\n(curl .*?)\n\n", text, re.S | re.M)
        assert first, text
        command = first.group(1).replace("\\\n", " ")
        result = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=20, check=False
        )
        assert result.stdout.startswith("HTTP/1.1 201"), result.stdout
        again = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=20, check=False
        )
        assert again.stdout.startswith("HTTP/1.1 201")
        assert "idempotent-replayed: true" in again.stdout.lower()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        assert process.stdout is not None
        process.stdout.close()
        assert code == 0


def command_blocks(text: str) -> dict[str, str]:
    """Each numbered step's commands, keyed by its number, as one shell script."""
    blocks = {}
    for step in re.finditer(r"^# (\d)\..*?\n((?:#.*\n)*)((?:[^#\n].*\n)+)", text, re.M):
        blocks[step.group(1)] = step.group(3)
    return blocks


def bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def json_documents(text: str) -> list[Any]:
    """The JSON documents curl printed one after the other."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
    return documents


def assert_in_the_ledger_within_2_s(ledger_step: str, code: str, cwd: Path) -> None:
    """Step 7 (the flash sale's funnel, the voucher's audit) shows the claim and redemption
    just made, within 2 s of the redemption's answer."""
    started = time.monotonic()
    while True:
        result = bash(f"CODE={code}\n{ledger_step}", cwd)
        assert result.returncode == 0, result
        report, audit = json_documents(result.stdout)
        types = [entry["type"] for entry in audit["entries"]]
        if report["funnel"]["redeemed"] >= 1 and "redemption.delivered" in types:
            break
        assert time.monotonic() - started < 2.0, (report, audit)
        time.sleep(0.1)
    assert report["funnel"]["granted"] >= 1
    assert types.index("claim.granted") < types.index("redemption.delivered"), types
    assert code not in result.stdout  # the audit shows the code masked


@pytest.mark.skipif(shutil.which("curl") is None, reason="the printed examples use curl")
def test_every_printed_command_runs_as_printed_one_per_benefit_kind(tmp_path: Path) -> None:
    # The commands run from the repository root: give the demo's directory the same look.
    for name in (".venv", "config"):
        (tmp_path / name).symlink_to(ROOT / name)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--config", "config/demo.toml"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        text = read_until_examples(process, timeout_s=60)
        blocks = command_blocks(text + "\n")
        assert sorted(blocks) == ["1", "2", "3", "4", "5", "6", "7"], text
        assert "<" not in "".join(blocks.values())  # no placeholder left to fill in
        assert "stats count only the refusals Valkey decided" in text
        assert "in-process sold-out" in text
        claim = bash(blocks["1"], tmp_path)
        assert claim.stdout.startswith("HTTP/1.1 201"), claim
        code = json.loads(claim.stdout.split("\n\n", 1)[1])["voucher"]["code"]
        deliveries = {}
        steps = (("2", "voucher"), ("3", "direct_recharge"), ("4", "card_secret"), ("5", "link"))
        for step, kind in steps:
            result = bash(blocks[step], tmp_path)
            assert result.returncode == 0, (step, result)
            status, body = result.stdout.split("voucher ", 1)[1].split("\n", 1)[1].split("\n\n", 1)
            assert status.startswith("HTTP/1.1 200"), (step, result.stdout)
            redemption = json.loads(body)
            assert redemption["status"] == "delivered", redemption
            assert redemption["delivery"]["kind"] == kind, redemption
            deliveries[step] = redemption
            if step == "2":
                assert_in_the_ledger_within_2_s(blocks["7"], code, tmp_path)
        assert deliveries["2"]["voucher_code"] == code  # the claim's own code was redeemed
        assert deliveries["3"]["delivery"]["supplier"] in ("alpha", "beta")
        assert deliveries["4"]["delivery"]["secret"]
        assert deliveries["5"]["delivery"]["url"].startswith("https://")
        rest = bash(blocks["6"], tmp_path)
        assert rest.returncode == 0, rest
        assert '"granted":1' in rest.stdout.replace(" ", ""), rest.stdout
        assert "gateway_claims_total" in rest.stdout
        # The events tail ended on its own (--no-follow). What it prints depends on how far the
        # demo's admin backend has ingested and trimmed the streams; the ledger step shows them.
        assert "--no-follow" in blocks["6"]
    finally:
        process.send_signal(signal.SIGTERM)
        code_ = process.wait(30)
        assert process.stdout is not None
        process.stdout.close()
        assert code_ == 0
