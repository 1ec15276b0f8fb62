"""The audit trail: every ledger event of a voucher, user, campaign or operator, in time order."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.events import COLUMNS
from backend.schema import events, vouchers
from gateway.codes import ClaimIds

FILTERS = ("voucher", "user", "campaign", "actor")
_payload = msgspec.json.Decoder(dict[str, Any])


def entry(row: Any) -> dict[str, Any]:
    """An event as the audit shows it: ts, type, its fields; a voucher code only masked."""
    out: dict[str, Any] = {"ts": row.ts, "type": row.type, "stream": row.stream, "id": row.entry_id}
    for name in COLUMNS:
        value = getattr(row, name)
        if value is not None:
            out[name] = value
    if row.voucher_masked is not None:
        out["voucher_code"] = row.voucher_masked
    out.update(_payload.decode(row.payload))
    return out


async def _voucher_clause(connection: Any, claim_id: str) -> Any:
    """Events of the voucher: by its claim id (the code, encrypted under the data key), and
    by campaign + masked code + owner, which events written before they all carried the
    claim id were matched by."""
    found = (
        await connection.execute(
            select(vouchers.c.campaign_id, vouchers.c.voucher_masked, vouchers.c.user_id).where(
                vouchers.c.claim_id == claim_id
            )
        )
    ).first()
    if found is None:
        return events.c.claim_id == claim_id
    return or_(
        events.c.claim_id == claim_id,
        and_(
            events.c.campaign_id == found.campaign_id,
            events.c.voucher_masked == found.voucher_masked,
            events.c.user_id == found.user_id,
        ),
    )


async def audit(
    engine: AsyncEngine, claim_ids: ClaimIds, kind: str, value: str, limit: int
) -> list[dict[str, Any]]:
    """Up to `limit` events matching one filter (voucher: a normalised code), oldest first."""
    async with engine.connect() as connection:
        if kind == "voucher":
            where = await _voucher_clause(connection, claim_ids.of(value))
        else:
            column = {"user": events.c.user_id, "campaign": events.c.campaign_id}.get(
                kind, events.c.actor
            )
            where = column == value
        query = select(events).where(where).order_by(events.c.ts_ms, events.c.entry_id)
        rows = await connection.execute(query.limit(limit))
        return [entry(row) for row in rows]
