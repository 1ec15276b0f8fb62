"""Claim ids (gateway/codes.py ClaimIds): the code encrypted under a key derived from the data
key, so the data key's holder turns an id back into its code and nobody else can."""

from __future__ import annotations

import random

import pytest

from gateway import codes
from gateway.valkey.keys import CROCKFORD

KEY, OTHER_KEY = b"k" * 32, b"j" * 32


def random_codes(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    secret = codes.code_key(KEY)
    found = []
    for i in range(n):
        tag = rng.choice(CROCKFORD) + rng.choice(CROCKFORD)
        found.append(codes.voucher_code_for(tag, secret, "app", f"camp-{i % 7}", f"key-{i}"))
    # The corners of the 90 bits: all zero and all one.
    for body in ("0" * 18, "Z" * 18):
        found.append(body + codes._check(body))
    return found


def test_a_claim_id_turns_back_into_its_code() -> None:
    ids = codes.ClaimIds(KEY)
    sample = random_codes(2000)
    made = [ids.of(code) for code in sample]
    assert [ids.code_of(claim_id) for claim_id in made] == sample
    assert len(set(made)) == len(set(sample))
    for claim_id, code in zip(made, sample, strict=True):
        assert len(claim_id) == 36 and claim_id.startswith("clm_")
        assert int(claim_id[4:], 16) >= 0 and claim_id[4:] == claim_id[4:].lower()
        assert code not in claim_id and code[2:18].lower() not in claim_id
    # The same key always gives the same ids (every worker and the backend agree).
    assert codes.ClaimIds(KEY).of(sample[0]) == made[0]


def test_another_data_key_makes_other_ids_and_cannot_read_these() -> None:
    ids, other = codes.ClaimIds(KEY), codes.ClaimIds(OTHER_KEY)
    sample = random_codes(500, seed=11)
    assert all(ids.of(code) != other.of(code) for code in sample)
    assert [other.code_of(ids.of(code)) for code in sample] == [None] * len(sample)
    # No data key: one secret per process, so in-process apps agree with each other only.
    assert codes.ClaimIds(None).of(sample[0]) == codes.ClaimIds(None).of(sample[0])
    assert codes.ClaimIds(None).code_of(ids.of(sample[0])) is None


@pytest.mark.parametrize(
    "claim_id",
    [
        "",
        "clm_",
        "clm_1234",
        "clm_" + "0" * 31,
        "clm_" + "0" * 33,
        "clm_" + "g" * 32,
        "xyz_" + "0" * 32,
        "clm_" + "0" * 30 + " 0",
        "clm_0x" + "0" * 30,
        # the old unkeyed digest's shape: clm_ and 20 hex characters
        "clm_" + "ab" * 10,
        "clm_" + "f" * 32,
        "clm_" + "0" * 32,
    ],
)
def test_malformed_or_foreign_ids_name_no_code(claim_id: str) -> None:
    assert codes.ClaimIds(KEY).code_of(claim_id) is None


def test_an_id_spelled_otherwise_than_it_was_made_names_no_code() -> None:
    ids = codes.ClaimIds(KEY)
    claim_id = ids.of(random_codes(1)[0])
    assert ids.code_of(claim_id.upper().replace("CLM_", "clm_")) is None
    assert ids.code_of(claim_id + " ") is None


def test_random_ids_almost_never_decode() -> None:
    """An id decodes only when 38 bits of the decrypted block are zero (chance 2^-38)."""
    ids, rng = codes.ClaimIds(KEY), random.Random(3)
    tries = ["clm_" + rng.randbytes(16).hex() for _ in range(20_000)]
    assert [t for t in tries if ids.code_of(t) is not None] == []
