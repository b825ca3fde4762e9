"""Spravato REMS Patient Monitoring Forms: the clinic's time zone and healthcare setting, and the submissions.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clinics") as batch:
        batch.add_column(sa.Column("time_zone", sa.String(length=64), nullable=False, server_default="UTC"))
        batch.add_column(sa.Column("healthcare_setting", sa.JSON(), nullable=True))
    op.create_table(
        "rems_form_submissions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("clinic_id", sa.String(length=64), nullable=False),
        sa.Column("episode_id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinics.id"], name=op.f("fk_rems_form_submissions_clinic_id_clinics")),
        sa.ForeignKeyConstraint(
            ["episode_id"], ["episodes.id"], name=op.f("fk_rems_form_submissions_episode_id_episodes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rems_form_submissions")),
    )
    op.create_index(
        "ix_rems_form_submissions_episode", "rems_form_submissions", ["clinic_id", "episode_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_rems_form_submissions_episode", table_name="rems_form_submissions")
    op.drop_table("rems_form_submissions")
    with op.batch_alter_table("clinics") as batch:
        batch.drop_column("healthcare_setting")
        batch.drop_column("time_zone")
