"""fhir projection: every version of the resources mapped from the domain, their search index, projection state

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fhir_resources",
        sa.Column("clinic_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("episode_id", sa.String(length=64), nullable=True),
        sa.Column("patient_ref", sa.String(length=120), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("clinic_id", "resource_type", "id", "version_id", name=op.f("pk_fhir_resources")),
    )
    op.create_index(
        "ix_fhir_resources_current", "fhir_resources", ["clinic_id", "resource_type", "is_current", "last_updated"]
    )
    op.create_table(
        "fhir_search_index",
        sa.Column("clinic_id", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=40), nullable=False),
        sa.Column("system", sa.String(length=500), nullable=True),
        sa.Column("code", sa.String(length=500), nullable=True),
        sa.Column("start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_fhir_search_token", "fhir_search_index", ["clinic_id", "resource_type", "param", "code"])
    op.create_index("ix_fhir_search_date", "fhir_search_index", ["clinic_id", "resource_type", "param", "start"])
    op.create_index("ix_fhir_search_resource", "fhir_search_index", ["clinic_id", "resource_type", "id"])
    op.create_table(
        "fhir_projection_state",
        sa.Column("clinic_id", sa.String(length=64), nullable=False),
        sa.Column("episode_id", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=200), nullable=False),
        sa.Column("projected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("clinic_id", "episode_id", name=op.f("pk_fhir_projection_state")),
    )


def downgrade() -> None:
    op.drop_table("fhir_projection_state")
    op.drop_index("ix_fhir_search_resource", table_name="fhir_search_index")
    op.drop_index("ix_fhir_search_date", table_name="fhir_search_index")
    op.drop_index("ix_fhir_search_token", table_name="fhir_search_index")
    op.drop_table("fhir_search_index")
    op.drop_index("ix_fhir_resources_current", table_name="fhir_resources")
    op.drop_table("fhir_resources")
