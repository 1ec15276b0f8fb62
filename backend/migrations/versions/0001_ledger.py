"""The ledger: guard, raw events, projections, dead letters.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("campaign_id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(256)),
        sa.Column("starts_ms", sa.BigInteger()),
        sa.Column("voucher_ttl_s", sa.BigInteger()),
        sa.Column("unit_cost", sa.BigInteger()),
        sa.Column("currency", sa.String(8)),
        sa.Column("config_order", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "counters",
        sa.Column("campaign_id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "dead_letters",
        sa.Column("stream", sa.String(64), primary_key=True),
        sa.Column("entry_id", sa.String(48), primary_key=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("stream", sa.String(64), primary_key=True),
        sa.Column("entry_id", sa.String(48), primary_key=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("ts", sa.String(40), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("campaign_id", sa.String(128)),
        sa.Column("user_id", sa.String(128)),
        sa.Column("device_id", sa.String(128)),
        sa.Column("ip", sa.String(64)),
        sa.Column("client_id", sa.String(128)),
        sa.Column("request_id", sa.String(128)),
        sa.Column("claim_id", sa.String(64)),
        sa.Column("voucher_masked", sa.String(16)),
        sa.Column("code", sa.String(64)),
        sa.Column("actor", sa.String(128)),
        sa.Column("actor_ip", sa.String(64)),
        sa.Column("payload", sa.Text(), nullable=False),
    )
    op.create_index("events_actor_ts", "events", ["actor", "ts_ms"])
    op.create_index("events_campaign_ts", "events", ["campaign_id", "ts_ms"])
    op.create_index("events_claim", "events", ["claim_id"])
    op.create_index("events_type_campaign_ts", "events", ["type", "campaign_id", "ts_ms"])
    op.create_index("events_user_ts", "events", ["user_id", "ts_ms"])
    op.create_index("events_voucher", "events", ["campaign_id", "voucher_masked"])
    op.create_table(
        "ingested",
        sa.Column("stream", sa.String(64), primary_key=True),
        sa.Column("entry_id", sa.String(48), primary_key=True),
    )
    op.create_table(
        "minute_counts",
        sa.Column("campaign_id", sa.String(128), primary_key=True),
        sa.Column("minute", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "supplier_calls",
        sa.Column("stream", sa.String(64), primary_key=True),
        sa.Column("entry_id", sa.String(48), primary_key=True),
        sa.Column("supplier", sa.String(128), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("latency_ms", sa.Integer()),
        sa.Column("failover", sa.Integer(), nullable=False),
    )
    op.create_index("supplier_calls_day", "supplier_calls", ["day", "supplier"])
    op.create_table(
        "vouchers",
        sa.Column("vkey", sa.String(300), primary_key=True),
        sa.Column("claim_id", sa.String(64)),
        sa.Column("campaign_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("voucher_masked", sa.String(16), nullable=False),
        sa.Column("client_id", sa.String(128)),
        sa.Column("device_id", sa.String(128)),
        sa.Column("ip", sa.String(64)),
        sa.Column("granted_ms", sa.BigInteger()),
        sa.Column("expires_ms", sa.BigInteger()),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_order", sa.BigInteger(), nullable=False),
    )
    op.create_index("vouchers_campaign_state", "vouchers", ["campaign_id", "state"])
    op.create_index("vouchers_claim", "vouchers", ["claim_id"], unique=True)
    op.create_index("vouchers_wallet", "vouchers", ["user_id", "client_id", "granted_ms"])


def downgrade() -> None:
    op.drop_table("vouchers")
    op.drop_table("supplier_calls")
    op.drop_table("minute_counts")
    op.drop_table("ingested")
    op.drop_table("events")
    op.drop_table("dead_letters")
    op.drop_table("counters")
    op.drop_table("campaigns")
