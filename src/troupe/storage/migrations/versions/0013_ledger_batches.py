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
from typing import Any

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _functions_of_0008() -> dict[str, Any]:
    return runpy.run_path(str(Path(__file__).with_name("0008_ledger_functions.py")))


def upgrade() -> None:
    _functions_of_0008()["downgrade"]()  # drops them (PostgreSQL only)


def downgrade() -> None:
    _functions_of_0008()["upgrade"]()  # makes them again (PostgreSQL only)
