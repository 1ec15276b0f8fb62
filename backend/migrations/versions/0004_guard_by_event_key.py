"""Less written per event: the exactly-once guard is the key of `events` and `dead_letters`
(`ingested` goes), and four of the raw ledger's indexes hold only the rows they serve.

Every entry the ledger took is in `events` or `dead_letters` under (stream, entry_id), so the
guard table only repeated those keys. The actor, claim id and voucher indexes skip rows
without one, and the grants' time index (the sell-out time) keeps grants only: a refused
claim, most of a flash sale's events, now costs two index entries instead of six.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


# name: (columns, predicate) of the partial indexes, and the full index each one replaces.
PARTIAL = {
    "events_actor_ts": (["actor", "ts_ms"], "actor IS NOT NULL"),
    "events_claim": (["claim_id"], "claim_id IS NOT NULL"),
    "events_voucher": (["campaign_id", "voucher_masked"], "voucher_masked IS NOT NULL"),
    "events_granted": (["campaign_id", "ts_ms"], "type = 'claim.granted'"),
}
FULL = {
    "events_actor_ts": ["actor", "ts_ms"],
    "events_claim": ["claim_id"],
    "events_voucher": ["campaign_id", "voucher_masked"],
    "events_type_campaign_ts": ["type", "campaign_id", "ts_ms"],
}


def upgrade() -> None:
    op.drop_table("ingested")
    for name in FULL:
        op.drop_index(name, "events")
    for name, (columns, where) in PARTIAL.items():
        predicate = sa.text(where)
        op.create_index(name, "events", columns, sqlite_where=predicate, postgresql_where=predicate)


def downgrade() -> None:
    for name in PARTIAL:
        op.drop_index(name, "events")
    for name, columns in FULL.items():
        op.create_index(name, "events", columns)
    op.create_table(
        "ingested",
        sa.Column("stream", sa.String(64), primary_key=True),
        sa.Column("entry_id", sa.String(48), primary_key=True),
    )
    op.execute(
        "INSERT INTO ingested (stream, entry_id)"
        " SELECT stream, entry_id FROM events UNION ALL SELECT stream, entry_id FROM dead_letters"
    )
