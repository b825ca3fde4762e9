"""The index of current FHIR resources becomes a partial index (current rows only).

With ``is_current`` as a key column, SQLite chose that index over the primary key for lookups by id
(``clinic, type, id IN (...), is_current``) and scanned every current resource of the type: writes, ingest and
searches grew with the clinic. As a partial index it serves listing and sorting of current resources, and lookups
by id go through the primary key (tests/integration/fhir/test_query_plans.py).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_fhir_resources_current", table_name="fhir_resources")
    op.create_index(
        "ix_fhir_resources_current",
        "fhir_resources",
        ["clinic_id", "resource_type", "last_updated"],
        sqlite_where=sa.text("is_current IS 1"),
        postgresql_where=sa.text("is_current IS TRUE"),
    )


def downgrade() -> None:
    op.drop_index("ix_fhir_resources_current", table_name="fhir_resources")
    op.create_index(
        "ix_fhir_resources_current", "fhir_resources", ["clinic_id", "resource_type", "is_current", "last_updated"]
    )
