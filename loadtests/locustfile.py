"""A flash-sale crowd for the benefits gateway, over HTTP only (SPEC §3).

    python -m loadtests.run                         # the spike on a campaign of its own + verdict
    python -m loadtests.run -u 50 -r 10 -t 30s      # Locust's own knobs instead of the spike
    python -m loadtests.run --web                   # Locust's web UI on http://127.0.0.1:8089

Environment: HOST, API_KEY, CAMPAIGN (set by loadtests.run), ADMIN_URL, ADMIN_TOKEN (see
loadtests/settings.py for the rest). Business answers (201, 409 sold_out/limit_reached, 429,
403, the guessers' 404) count as successes; anything else, 5xx included, is a failure. Every
grant and every delivery goes into an in-process ledger, judged by loadtests/invariants.py when
Locust quits.

Each simulated end user sends its own address as X-Forwarded-For, the way a production proxy
does: honest users from 198.18.0.0/15, scalpers from 10.128.0.0/9 and code guessers from
10.0.0.0/9, so the guessers' lockout can never fall on an honest redeemer. The addresses are
header values only; every packet stays on loopback. The gateway honours them only when it
trusts 127.0.0.1 as a proxy (`server.trusted_proxies`, docs/loadtest.md).
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, NamedTuple
from urllib.parse import quote

import gevent
import orjson
from locust import FastHttpUser, between, events, task
from locust.runners import MasterRunner, WorkerRunner

from loadtests import outcomes
from loadtests.invariants import StatsError, answers, fetch_stats, run_check
from loadtests.ledger import Delivery, Grant, Ledger, card_fingerprint
from loadtests.settings import Settings

SETTINGS = Settings.from_env()
if not SETTINGS.campaign:
    raise SystemExit(
        "CAMPAIGN is not set: run `python -m loadtests.run` (it creates a campaign for the run)"
    )
LEDGER = Ledger()
CLAIM_PATH = f"/v1/campaigns/{quote(SETTINGS.campaign, safe='')}/claims"
REDEEM_PATH = "/v1/redemptions"
log = logging.getLogger("loadtests")


class Answer(NamedTuple):
    status: int
    doc: dict[str, Any] | None
    code: str
    replayed: str


class ClaimTry(NamedTuple):
    answer: Answer
    key: str
    body: bytes
    grant: Grant | None


Judge = Callable[[Answer], "str | None"]


def _expecting(expected: outcomes.Expected) -> Judge:
    return lambda a: outcomes.problem(expected, a.status, a.code)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def _end_user_ip() -> str:
    """An honest user's address, from 198.18.0.0/15 (RFC 2544, benchmarking)."""
    return f"198.{random.randint(18, 19)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def _scalper_ip() -> str:
    """A scalper farm's address, from 10.128.0.0/9: never an honest user's."""
    return f"10.{random.randint(128, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def _guesser_ip() -> str:
    """A code guesser's address, from 10.0.0.0/9: never an honest user's or a scalper's."""
    return f"10.{random.randint(0, 127)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


class GatewayUser(FastHttpUser):
    """Shared plumbing: one JSON POST with an Idempotency-Key, judged and tallied."""

    abstract = True
    host = SETTINGS.host
    ip = "198.18.0.1"  # the simulated end user's address, sent as X-Forwarded-For

    def on_start(self) -> None:
        self.ip = _end_user_ip()

    def post(self, path: str, body: bytes, key: str, name: str, judge: Judge) -> Answer:
        """POST `body`, mark the request success/failure with `judge`, return the answer."""
        headers = {
            "Authorization": f"Bearer {SETTINGS.api_key}",
            "Content-Type": "application/json",
            "Idempotency-Key": key,
        }
        if SETTINGS.forwarded_for:  # honoured only when the gateway trusts 127.0.0.1 as proxy
            headers["X-Forwarded-For"] = self.ip
        with self.client.post(
            path, data=body, headers=headers, name=name, catch_response=True
        ) as resp:
            status = resp.status_code or 0
            doc = outcomes.decode(resp.content) if status else None
            replayed = (resp.headers or {}).get("Idempotent-Replayed", "") if status else ""
            answer = Answer(status, doc, outcomes.error_code(doc), str(replayed).lower())
            LEDGER.record_outcome(name, answer.status, answer.code)
            if failure := judge(answer):
                resp.failure(failure)
            else:
                resp.success()
        return answer

    def claim(self, user_id: str, device_id: str, queue: bool = True) -> ClaimTry:
        """Claim once with a fresh Idempotency-Key; a grant goes into the ledger."""
        key = uuid.uuid4().hex
        body = orjson.dumps({"user_id": user_id, "device_id": device_id})
        answer = self.post(CLAIM_PATH, body, key, "claim", self._judge_claim)
        return ClaimTry(answer, key, body, self.note_claim(answer, user_id, device_id, key, queue))

    @staticmethod
    def _judge_claim(answer: Answer) -> str | None:
        problem = outcomes.problem(outcomes.CLAIM, answer.status, answer.code)
        return problem or (outcomes.grant_problem(answer.doc) if answer.status == 201 else None)

    @staticmethod
    def note_claim(
        answer: Answer, user_id: str, device_id: str, key: str, queue: bool
    ) -> Grant | None:
        """Record a grant (or an ambiguous attempt) in the ledger."""
        if outcomes.claim_maybe_granted(answer.status, answer.code):
            LEDGER.ambiguous_claims += 1
        if answer.status != 201 or outcomes.grant_problem(answer.doc) or answer.doc is None:
            return None
        grant = Grant(
            claim_id=answer.doc["claim_id"],
            user_id=user_id,
            device_id=device_id,
            idempotency_key=key,
            voucher_code=answer.doc["voucher"]["code"],
        )
        LEDGER.record_grant(grant, queue_for_redemption=queue)
        return grant

    def redeem(self, grant: Grant, name: str = "redeem") -> Answer:
        """Redeem a granted voucher as its owner; a delivery goes into the ledger."""
        fields = {
            "voucher_code": grant.voucher_code,
            "user_id": grant.user_id,
            "device_id": grant.device_id,
        }
        if SETTINGS.redeem_account:  # direct_recharge campaigns need a target account
            fields["account"] = SETTINGS.redeem_account
        body = orjson.dumps(fields)
        answer = self.post(REDEEM_PATH, body, uuid.uuid4().hex, name, _expecting(outcomes.REDEEM))
        if answer.status == 200 and answer.doc and answer.doc.get("status") == "delivered":
            LEDGER.record_delivery(_delivery(answer.doc, grant.voucher_code))
        return answer


def _delivery(doc: dict[str, Any], voucher_code: str) -> Delivery:
    delivery: dict[str, Any] = doc["delivery"] if isinstance(doc.get("delivery"), dict) else {}
    kind = str(delivery.get("kind", ""))
    card = ""
    if kind == "card_secret":
        card = card_fingerprint(str(delivery.get("card_no", "")), str(delivery.get("secret", "")))
    return Delivery(str(doc.get("redemption_id", "")), voucher_code, kind, card)


class HonestUser(GatewayUser):
    """One end user per iteration: claims once, sometimes retries the very same request."""

    weight = 6
    wait_time = between(0.5, 2.0)

    @task
    def claim_once(self) -> None:
        self.ip = _end_user_ip()
        user_id, device_id = _new_id("u"), _new_id("d")
        first = self.claim(user_id, device_id)
        # a client retries after a transport error; some retry anyway (double taps, proxies)
        if first.answer.status == 0 or random.random() < SETTINGS.replay_ratio:
            self.replay(first, user_id, device_id)

    def replay(self, first: ClaimTry, user_id: str, device_id: str) -> None:
        """Send the same key and body again: the first answer must come back, marked replayed."""
        was = (first.answer.status, first.answer.doc)

        def judge(again: Answer) -> str | None:
            return outcomes.problem(outcomes.CLAIM, again.status, again.code) or (
                outcomes.replay_problem(was, (again.status, again.doc), again.replayed)
            )

        again = self.post(CLAIM_PATH, first.body, first.key, "claim [replay]", judge)
        self.note_claim(again, user_id, device_id, first.key, queue=False)


class Scalper(GatewayUser):
    """An account farm: many user ids over a handful of devices, claiming fast."""

    weight = 2
    wait_time = between(0.05, 0.3)

    def on_start(self) -> None:
        self.ip = _scalper_ip()  # one address per farm
        self.devices = [_new_id("farm") for _ in range(SETTINGS.scalper_devices)]

    @task
    def claim_as_someone_new(self) -> None:
        self.claim(_new_id("u-farm"), random.choice(self.devices), queue=False)


class CodeGuesser(GatewayUser):
    """Brute-forces voucher codes on the redemption endpoint; should meet 404s, then 429s."""

    weight = 1
    wait_time = between(0.05, 0.3)

    def on_start(self) -> None:
        self.ip = _guesser_ip()
        self.user_id, self.device_id = _new_id("u-guess"), _new_id("d-guess")
        LEDGER.guessers += 1

    @task
    def guess(self) -> None:
        body = orjson.dumps(
            {
                "voucher_code": secrets.token_urlsafe(12),
                "user_id": self.user_id,
                "device_id": self.device_id,
            }
        )
        self.post(REDEEM_PATH, body, uuid.uuid4().hex, "redeem [guess]", _expecting(outcomes.GUESS))


class RedemptionWave(GatewayUser):
    """Winners redeeming: takes an honest user's grant (or claims one) and redeems it."""

    weight = 2
    wait_time = between(0.5, 2.0)

    @task
    def redeem_a_grant(self) -> None:
        self.ip = _end_user_ip()
        grant = LEDGER.next_to_redeem()
        if grant is None:
            grant = self.claim(_new_id("u"), _new_id("d"), queue=False).grant
        if grant is None:
            return
        self.redeem(grant)
        if random.random() < 0.1:  # a double tap: must not deliver twice
            self.redeem(grant, name="redeem [again]")


@events.test_start.add_listener
def _snapshot_stats(environment: Any, **_: Any) -> None:
    """Remember the campaign's stats before the crowd arrives (grant counts are deltas)."""
    if isinstance(environment.runner, WorkerRunner):
        return
    try:
        LEDGER.stats_before = asdict(fetch_stats(SETTINGS))
    except StatsError as exc:
        log.warning("stats before the run unavailable (%s); judging absolute counts", exc)


def progress_line(elapsed_s: float, users: int, ledger: Ledger) -> str:
    """One line on how the run is going: claims, honest redemptions, guesses, failures."""
    claims = answers(ledger, "claim")
    redeems = answers(ledger, "redeem")
    guesses = answers(ledger, "redeem [guess]")
    return (
        f"progress {elapsed_s:4.0f} s: {users} users | claims 201: {claims[201]}"
        f" 409: {claims[409]} 429: {claims[429]} | honest redeems ok:"
        f" {redeems[200] + redeems[202]}/{sum(redeems.values())} | guesses 404: {guesses[404]}"
        f" 429: {guesses[429]} | grants {len(ledger.grants)}"
    )


def _report_progress(environment: Any) -> None:
    started = time.monotonic()
    while True:
        gevent.sleep(SETTINGS.progress_s)
        users = environment.runner.user_count if environment.runner else 0
        print(progress_line(time.monotonic() - started, users, LEDGER), flush=True)


@events.test_start.add_listener
def _start_progress(environment: Any, **_: Any) -> None:
    """Headless or not, print a progress line every PROGRESS_S seconds (this process's view)."""
    if SETTINGS.progress_s > 0 and not isinstance(environment.runner, MasterRunner):
        PROGRESS.append(gevent.spawn(_report_progress, environment))


@events.test_stop.add_listener
def _stop_progress(environment: Any, **_: Any) -> None:
    while PROGRESS:
        PROGRESS.pop().kill(block=False)


PROGRESS: list[gevent.Greenlet] = []


@events.quitting.add_listener
def _judge_invariants(environment: Any, **_: Any) -> None:
    """Write the ledger, check the invariants, fail the process on a breach."""
    ledger_path = SETTINGS.report_dir / f"ledger-{os.getpid()}.json"
    LEDGER.dump(ledger_path)
    if isinstance(environment.runner, MasterRunner | WorkerRunner):
        log.info(
            "distributed run: judge with python -m loadtests.invariants --ledger %s/ledger-*.json",
            SETTINGS.report_dir,
        )
        return
    for outcome, count in sorted(LEDGER.outcomes.items()):
        log.info("outcome %-40s %d", outcome, count)
    line, code = run_check(SETTINGS, LEDGER)
    (SETTINGS.report_dir / "verdict.txt").write_text(line + "\n", encoding="utf-8")
    print(line, flush=True)
    if code:
        environment.process_exit_code = code
