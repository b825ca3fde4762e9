"""An index of the current row of each FHIR resource by id.

Writes look up the current rows of the resources they store (``clinic, type IN, id IN, is_current``), and reads by id
the current row of one. Through the primary key ``(clinic, type, id, version)`` that walks every version of the id
(a CarePlan gains one with each session of its episode), and PostgreSQL with statistics from a smaller table chose
the partial index of current resources instead, filtering every current resource of the types on each write. A
partial index on ``(clinic, type, id)`` of current rows answers both with one probe per id.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_fhir_resources_current_id",
        "fhir_resources",
        ["clinic_id", "resource_type", "id"],
        sqlite_where=sa.text("is_current IS 1"),
        postgresql_where=sa.text("is_current IS TRUE"),
    )


def downgrade() -> None:
    op.drop_index("ix_fhir_resources_current_id", table_name="fhir_resources")
