"""The supplier report read off one index: (day, supplier, latency_ms, outcome, failover).

It replaces `supplier_calls_day` (day, supplier), its prefix. The report's counts then scan the
index alone, never the table, and each percentile is an offset into one supplier-day's
latencies in index order.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

COLUMNS = ["day", "supplier", "latency_ms", "outcome", "failover"]


def upgrade() -> None:
    op.drop_index("supplier_calls_day", "supplier_calls")
    op.create_index("supplier_calls_day", "supplier_calls", COLUMNS)


def downgrade() -> None:
    op.drop_index("supplier_calls_day", "supplier_calls")
    op.create_index("supplier_calls_day", "supplier_calls", ["day", "supplier"])
