"""Tables of the FHIR projection (issue: FHIR REST API).

``fhir_resources`` keeps EVERY version of every resource mapped from the domain (``mappings.bundle.map_chart``),
so vread and ``_history`` read real past versions; ``is_current`` marks the latest. ``fhir_search_index`` holds
the search values of the current versions (one row per parameter value). ``fhir_projection_state`` remembers
which state of each episode was projected last, so a stale projection is noticed and refreshed.
Every row carries ``clinic_id``: every query is scoped by it.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Index, Integer, String, Table, Text, text

from service.adapters.orm import ID, UtcDateTime, metadata

fhir_resources = Table(
    "fhir_resources",
    metadata,
    Column("clinic_id", ID, primary_key=True),
    Column("resource_type", String(40), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version_id", Integer, primary_key=True),
    Column("is_current", Boolean, nullable=False),
    Column("last_updated", UtcDateTime, nullable=False),
    Column("episode_id", ID),
    Column("patient_ref", String(120)),  # "Patient/<id>" of the compartment, when there is one
    Column("content_hash", String(64), nullable=False),
    Column("body", Text, nullable=False),  # the FHIR JSON without meta.versionId and meta.lastUpdated
    # current rows only (migration 0005): listing and sorting a type's current resources
    Index(
        "ix_fhir_resources_current",
        "clinic_id",
        "resource_type",
        "last_updated",
        sqlite_where=text("is_current IS 1"),
        postgresql_where=text("is_current IS TRUE"),
    ),
    # the current row of a resource by id (migration 0008): one probe, however many versions the resource has and
    # whatever PostgreSQL's statistics say (the primary key walks every version of the id)
    Index(
        "ix_fhir_resources_current_id",
        "clinic_id",
        "resource_type",
        "id",
        sqlite_where=text("is_current IS 1"),
        postgresql_where=text("is_current IS TRUE"),
    ),
)

fhir_search_index = Table(
    "fhir_search_index",
    metadata,
    Column("clinic_id", ID, nullable=False),
    Column("resource_type", String(40), nullable=False),
    Column("id", String(64), nullable=False),
    Column("param", String(40), nullable=False),
    Column("system", String(500)),  # token system; reference target type
    Column("code", String(500)),  # token code; reference "Type/id"; lower-cased string; uri
    Column("start", UtcDateTime),  # date: the lower bound of the value's range
    Column("end", UtcDateTime),  # date: the upper bound
    Index("ix_fhir_search_token", "clinic_id", "resource_type", "param", "code"),
    # dates only: nine index rows in ten are tokens and references, which the date index need not hold
    Index(
        "ix_fhir_search_date",
        "clinic_id",
        "resource_type",
        "param",
        "start",
        sqlite_where=text("start IS NOT NULL"),
        postgresql_where=text("start IS NOT NULL"),
    ),
    Index("ix_fhir_search_resource", "clinic_id", "resource_type", "id"),
)

fhir_projection_state = Table(
    "fhir_projection_state",
    metadata,
    Column("clinic_id", ID, primary_key=True),
    Column("episode_id", ID, primary_key=True),
    Column("fingerprint", String(200), nullable=False),
    Column("projected_at", UtcDateTime, nullable=False),
)
