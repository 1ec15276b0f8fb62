"""ClaimBatcher's own rules: which claims share a call, when a call goes out, and what each
claim gets back when the call answers, fails or its request goes away. The call here is a
recording coroutine standing for the claim function (test_claim_batches.py runs the real one
on Valkey)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError

from gateway.claims.batcher import RESULT_ENTRIES, ClaimBatcher


class Function:
    """Answers each claim of a call with (its first argument, 0, 0, b'') after `delay_s`."""

    def __init__(self, fail: Exception | None = None, delay_s: float = 0.0) -> None:
        self.calls: list[tuple[list[Any], list[Any]]] = []
        self.fail = fail
        self.delay_s = delay_s

    async def __call__(self, keys: list[Any], args: list[Any], flush: bool) -> list[Any]:
        assert flush  # a batch is written at once
        self.calls.append((keys, args))
        await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        return [entry for arg in args[1:] for entry in (arg, 0, 0, b"")]


def submit(batcher: ClaimBatcher, shape: str, n: int) -> asyncio.Future[Any]:
    return batcher.submit(shape, [f"{shape}:campaign"], [f"{shape}:head"], [f"key{n}"], [n])


async def test_claims_of_one_turn_share_a_call_per_shape_and_get_their_own_results() -> None:
    function = Function()
    batcher = ClaimBatcher(function)
    futures = [submit(batcher, shape, n) for n, shape in enumerate("aabab")]
    results = await asyncio.gather(*futures)
    assert [result[0] for result in results] == [0, 1, 2, 3, 4]
    assert all(len(result) == RESULT_ENTRIES for result in results)
    assert function.calls == [
        (["a:campaign", "key0", "key1", "key3"], ["a:head", 0, 1, 3]),
        (["b:campaign", "key2", "key4"], ["b:head", 2, 4]),
    ]


async def test_a_full_batch_goes_at_once_and_the_rest_at_the_end_of_the_turn() -> None:
    function = Function()
    batcher = ClaimBatcher(function, per_call=3)
    futures = [submit(batcher, "a", n) for n in range(7)]
    await asyncio.sleep(0)  # the two full batches' tasks start; the seventh claim still waits
    assert [args[1:] for _keys, args in function.calls] == [[0, 1, 2], [3, 4, 5]]
    await asyncio.gather(*futures)
    assert [args[1:] for _keys, args in function.calls] == [[0, 1, 2], [3, 4, 5], [6]]


async def test_claims_of_a_later_turn_go_in_a_call_of_their_own() -> None:
    function = Function()
    batcher = ClaimBatcher(function)
    first = await submit(batcher, "a", 0)
    second = await submit(batcher, "a", 1)
    assert (first[0], second[0]) == (0, 1)
    assert len(function.calls) == 2


async def test_a_failed_call_fails_every_claim_of_its_batch_only() -> None:
    failing = Function(fail=ConnectionError("redis went away"))
    batcher = ClaimBatcher(failing)
    futures = [submit(batcher, "a", n) for n in range(3)]
    for future in futures:
        with pytest.raises(ConnectionError):
            await future
    failing.fail = None
    assert (await submit(batcher, "a", 9))[0] == 9


async def test_a_claim_whose_request_went_away_leaves_the_others_their_results() -> None:
    batcher = ClaimBatcher(Function(delay_s=0.01))
    futures = [submit(batcher, "a", n) for n in range(3)]
    futures[1].cancel()
    assert (await futures[0])[0] == 0 and (await futures[2])[0] == 2
    assert futures[1].cancelled()


async def test_an_answer_of_the_wrong_length_fails_the_batch_instead_of_misrouting() -> None:
    async def short(keys: list[Any], args: list[Any], flush: bool) -> list[Any]:
        return [0, 0, 0, b""]  # one claim's entries for a batch of two

    batcher = ClaimBatcher(short)
    futures = [submit(batcher, "a", n) for n in range(2)]
    for future in futures:
        with pytest.raises(RuntimeError, match="answered 4 entries"):
            await future
