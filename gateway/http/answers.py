"""The shapes of answers built as dicts by their handlers, as Structs for the OpenAPI documents.

The admin handlers and the ops routes answer with plain dicts; these Structs describe those
dicts so `gateway.http.openapi` can generate their schemas like every other body's. None of
them forbids unknown fields: an answer may grow a field without breaking its readers. The
schemathesis runs (tests/gateway/test_schemathesis.py) check the real answers against them.
"""

from __future__ import annotations

from typing import Literal

import msgspec

State = Literal["scheduled", "active", "paused", "ended", "sold_out"]


class BenefitOut(msgspec.Struct, frozen=True):
    kind: str
    sku: str
    suppliers: list[str]


class CampaignDocument(msgspec.Struct, frozen=True):
    """The admin view of a campaign: its configuration, stock and current state."""

    campaign_id: str
    name: str
    state: State
    starts_at: str
    ends_at: str
    stock_added: int
    stock_left: int
    per_user_limit: int
    per_device_limit: int
    voucher_ttl_s: int
    benefit: BenefitOut


class CampaignStats(msgspec.Struct, frozen=True):
    """Counts decided in Valkey; `rejected` counts refusals by error code."""

    campaign_id: str
    stock_added: int
    stock_left: int
    granted: int
    redeemed: int
    revoked: int
    returned: int  # revoked with their unit given back to stock
    rejected: dict[str, int]


class CardsAdded(msgspec.Struct, frozen=True):
    """Counts only: card numbers and secrets never appear in answers."""

    campaign_id: str
    added: int
    pool_size: int


class ListChanged(msgspec.Struct, frozen=True):
    list: str
    added: int
    removed: int
    size: int


class VoucherState(msgspec.Struct, frozen=True):
    voucher_code: str
    state: Literal["frozen", "issued"]


class VoucherRevoked(msgspec.Struct, frozen=True):
    voucher_code: str
    state: Literal["revoked"]
    returned: bool  # the unit went back to stock (as the first revoke decided)


class SupplierState(msgspec.Struct, frozen=True):
    """One supplier's concurrency and breaker figures."""

    id: str
    priority: int
    in_flight: int
    max_concurrency: int
    state: str
    calls: int
    failure_rate: float
    slow_call_rate: float
    open_until: float | None
    open_remaining_s: float | None


class SupplierList(msgspec.Struct, frozen=True):
    suppliers: list[SupplierState]


class Health(msgspec.Struct, frozen=True):
    status: str


class Readiness(msgspec.Struct, frozen=True):
    status: Literal["ready", "not_ready"]
    redis: str | None = None
