"""PostgreSQL: the budget ledger works out reserves and settles in Python, in batches

The plpgsql ``troupe_reserve`` and ``troupe_settle`` of migration 0008 are no longer
called: ``storage/ledger.py`` (``run_batch``) locks the counters of a whole batch of
operations, works them out in the client and writes them back in one statement, so a
commit serves a batch. Dropped here; a downgrade makes them again.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27 02:40:00
"""

from __future__ import annotations

import runpy
from pathlib import Path

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "DROP FUNCTION IF EXISTS troupe_reserve(text, text, text, text[], bigint[], bigint[], "
        "bigint, bigint, bigint, bigint, bigint, text)"
    )
    op.execute("DROP FUNCTION IF EXISTS troupe_settle(text, text, bigint, bigint)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    functions = runpy.run_path(str(Path(__file__).with_name("0008_ledger_functions.py")))
    op.execute(functions["SETTLE"])
    op.execute(functions["RESERVE"])
