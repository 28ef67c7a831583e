"""Warnings remember the unit of the key that sent them; the idempotency key is per unit.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05

- warnings.ingest_unit: the sending key's unit (a region-code prefix; '' for a
  nationwide key or the importer). Existing rows take it from the key named in
  `ingested_by` ("key:<key_id>:<name>"), so a replay that spans this migration
  still finds its record.
- The idempotency key becomes (source, source_ref, ingest_unit): a sender's id is
  unique within the sending unit. Before, a key of one unit replaying another
  unit's (source, source_ref) was answered with that unit's ids (issue 11), and
  two cities' systems numbering their records alike lost each other's warnings
  as "duplicates". source and source_ref lead the index, as in the old one.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("warnings", sa.Column("ingest_unit", sa.String(length=6), server_default="", nullable=False))
    op.execute(
        "UPDATE warnings w SET ingest_unit = k.unit FROM api_keys k"
        " WHERE split_part(w.ingested_by, ':', 1) = 'key' AND split_part(w.ingested_by, ':', 2) = k.key_id"
        " AND k.unit <> ''"
    )
    op.create_unique_constraint("uq_warnings_source_ref_unit", "warnings", ["source", "source_ref", "ingest_unit"])
    op.drop_constraint("uq_warnings_source_ref", "warnings", type_="unique")


def downgrade() -> None:
    # Only possible while no (source, source_ref) is stored under two units.
    op.create_unique_constraint("uq_warnings_source_ref", "warnings", ["source", "source_ref"])
    op.drop_constraint("uq_warnings_source_ref_unit", "warnings", type_="unique")
    op.drop_column("warnings", "ingest_unit")
