"""Wire types: every JSON body the gateway reads or writes, with one Decoder/Encoder each."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple

import msgspec

# 1-128 characters (not bytes), no control characters (Unicode Cc: C0, DEL and C1).
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")]
Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)]
Positive = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]


class Wire(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base for request bodies: unknown fields are a client bug, answered 400."""


class ClaimRequest(Wire, frozen=True, forbid_unknown_fields=True):
    user_id: Id
    device_id: Id


class RedeemRequest(Wire, frozen=True, forbid_unknown_fields=True):
    voucher_code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    user_id: Id
    device_id: Id
    account: Id | None = None


class Benefit(Wire, frozen=True, forbid_unknown_fields=True):
    kind: Literal["voucher", "direct_recharge", "card_secret", "link"]
    sku: Annotated[str, msgspec.Meta(max_length=128, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")] = ""
    suppliers: list[Annotated[str, msgspec.Meta(min_length=1, max_length=64)]] = []


class CampaignPut(Wire, frozen=True, forbid_unknown_fields=True):
    starts_at: datetime
    ends_at: datetime
    benefit: Benefit
    name: Annotated[str, msgspec.Meta(max_length=256)] = ""
    stock: Count = 0
    per_user_limit: Positive = 1
    # 0 means no per-device allowance (the README says why this is the default).
    per_device_limit: Count = 0
    voucher_ttl_s: Positive = 30 * 86400
    # What one granted unit costs, in minor units of `currency` (ISO 4217), for the ledger.
    unit_cost: Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000_000)] | None = None
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")] | None = None
    # Period budgets (SPEC 4, docs/budgets.md): grants per local calendar day of `timezone`,
    # per user per day, and a money budget in minor units of `currency` (needs `unit_cost`).
    daily_stock: Positive | None = None
    daily_rollover: bool = False
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "UTC"
    per_user_daily_limit: Positive | None = None
    # At most 10^15, so every count times unit_cost the claim function compares is exact.
    budget: Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000_000_000)] | None = None


class StockChange(Wire, frozen=True, forbid_unknown_fields=True):
    add: Annotated[int, msgspec.Meta(ge=-1_000_000_000, le=1_000_000_000)]


class Card(Wire, frozen=True, forbid_unknown_fields=True):
    card_no: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    secret: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class CardUpload(Wire, frozen=True, forbid_unknown_fields=True):
    cards: Annotated[list[Card], msgspec.Meta(min_length=1, max_length=10_000)]


class RevokeRequest(Wire, frozen=True, forbid_unknown_fields=True):
    # True: the unit goes back to stock and the owner's allowances are given back.
    return_stock: bool
    reason: Annotated[str, msgspec.Meta(max_length=512)] = ""


class ListUpdate(Wire, frozen=True, forbid_unknown_fields=True):
    add: Annotated[list[str], msgspec.Meta(max_length=10_000)] = []
    remove: Annotated[list[str], msgspec.Meta(max_length=10_000)] = []


# Responses.


class VoucherOut(msgspec.Struct, frozen=True):
    code: str
    expires_at: str


class ClaimGranted(msgspec.Struct, frozen=True):
    claim_id: str
    campaign_id: str
    user_id: str
    voucher: VoucherOut


class ErrorDetail(msgspec.Struct, frozen=True):
    code: str
    message: str
    request_id: str


class ErrorBody(msgspec.Struct, frozen=True):
    error: ErrorDetail


class CampaignView(msgspec.Struct, frozen=True):
    campaign_id: str
    state: str
    starts_at: str
    ends_at: str
    stock_left: int


class RedemptionView(msgspec.Struct, frozen=True, omit_defaults=True):
    redemption_id: str
    voucher_code: str
    status: str
    delivery: dict[str, Any] | None = None


claim_decoder = msgspec.json.Decoder(ClaimRequest)
redeem_decoder = msgspec.json.Decoder(RedeemRequest)
campaign_decoder = msgspec.json.Decoder(CampaignPut)
stock_decoder = msgspec.json.Decoder(StockChange)
cards_decoder = msgspec.json.Decoder(CardUpload)
list_decoder = msgspec.json.Decoder(ListUpdate)
revoke_decoder = msgspec.json.Decoder(RevokeRequest)
encoder = msgspec.json.Encoder()


def describe_decode_error(exc: msgspec.DecodeError) -> str:
    """A client-facing message for a body that failed to decode or validate."""
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        return text.replace("`$.", "`").replace("`$`", "the body")
    return f"body is not valid JSON: {text}"


class Caller(NamedTuple):
    """Who is asking: the authenticated client, the end user's IP, the request id, and the
    request's signing nonce and `X-Challenge-Pass` as sent (both still to be checked)."""

    client_id: str
    ip: str
    request_id: str
    nonce: str | None = None
    challenge_pass: str | None = None

    def identities(self, user_id: str, device_id: str) -> dict[str, str]:
        """What each limit or rule dimension (`by`, `per`, `member`) names in this request."""
        return {"ip": self.ip, "device": device_id, "user": user_id, "client": self.client_id}
