"""The date search index holds the rows of date parameters only.

``ix_fhir_search_date (clinic, type, param, start)`` held every search index row, though only date rows have a
``start``: nine in ten are tokens and references. Each of them cost every write an index entry to insert (and to
delete when the resource changes) that no search reads. A partial index on ``start IS NOT NULL`` holds the date rows;
date criteria say ``start IS NOT NULL`` so that both databases use it for every prefix.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COLUMNS = ["clinic_id", "resource_type", "param", "start"]


def upgrade() -> None:
    op.drop_index("ix_fhir_search_date", table_name="fhir_search_index")
    op.create_index(
        "ix_fhir_search_date",
        "fhir_search_index",
        COLUMNS,
        sqlite_where=sa.text("start IS NOT NULL"),
        postgresql_where=sa.text("start IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_fhir_search_date", table_name="fhir_search_index")
    op.create_index("ix_fhir_search_date", "fhir_search_index", COLUMNS)
