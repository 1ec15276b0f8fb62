"""The user's wallet (卡包): the vouchers one client claimed for one user, newest first."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.schema import vouchers
from gateway.timefmt import rfc3339_s

_cursor = msgspec.json.Decoder(tuple[int, str])


class BadCursor(ValueError):
    pass


def encode_cursor(granted_ms: int, vkey: str) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode((granted_ms, vkey))).decode()


def decode_cursor(raw: str) -> tuple[int, str]:
    try:
        return _cursor.decode(base64.urlsafe_b64decode(raw.encode()))
    except (ValueError, msgspec.DecodeError):
        raise BadCursor("cursor: not one this API gave") from None


def _state(row: Any, now_ms: int) -> str:
    if row.state == "issued" and row.expires_ms is not None and row.expires_ms <= now_ms:
        return "expired"
    return str(row.state)


async def wallet(
    engine: AsyncEngine, client_id: str, user_id: str, limit: int, cursor: str | None, now_ms: int
) -> dict[str, Any]:
    """A page of vouchers and the cursor of the next page (None on the last)."""
    query = select(vouchers).where(vouchers.c.user_id == user_id, vouchers.c.client_id == client_id)
    if cursor is not None:
        granted_ms, vkey = decode_cursor(cursor)
        query = query.where(
            or_(
                vouchers.c.granted_ms < granted_ms,
                and_(vouchers.c.granted_ms == granted_ms, vouchers.c.vkey < vkey),
            )
        )
    query = query.order_by(vouchers.c.granted_ms.desc(), vouchers.c.vkey.desc()).limit(limit + 1)
    async with engine.connect() as connection:
        rows = list(await connection.execute(query))
    page = rows[:limit]
    items = [
        {
            "campaign_id": row.campaign_id,
            "voucher_code": row.voucher_masked,
            "state": _state(row, now_ms),
            "expires_at": None if row.expires_ms is None else rfc3339_s(row.expires_ms),
        }
        for row in page
    ]
    more = len(rows) > limit
    return {
        "vouchers": items,
        "next": encode_cursor(page[-1].granted_ms, page[-1].vkey) if more else None,
    }
