"""Tables. Clinical content is kept as JSON documents (times with their offsets); the columns beside it are
what queries filter on. Every table that holds patient data carries ``clinic_id``: the repository scopes every
query by it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)


class UtcDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:  # type: ignore[no-untyped-def]
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:  # type: ignore[no-untyped-def]
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(64)

clinics = Table(
    "clinics",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("identifier_system", String(500), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # IANA time zone: calendar-day deadlines (the REMS form's 7 days) count in it (migration 0006).
    Column("time_zone", String(64), nullable=False, server_default="UTC"),
    # Address and contact of the healthcare setting, as the REMS Patient Monitoring Form asks (migration 0006).
    Column("healthcare_setting", JSON),
)

practitioners = Table(
    "practitioners",
    metadata,
    Column("id", ID, primary_key=True),
    Column("clinic_id", ID, ForeignKey("clinics.id"), nullable=False, index=True),
    Column("npi", String(10)),
    Column("version", Integer, nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("clinic_id", "npi", name="uq_practitioners_clinic_npi"),
)

patients = Table(
    "patients",
    metadata,
    Column("id", ID, primary_key=True),
    Column("clinic_id", ID, ForeignKey("clinics.id"), nullable=False, index=True),
    Column("mrn_system", String(500), nullable=False),
    Column("mrn_value", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("clinic_id", "mrn_system", "mrn_value", name="uq_patients_clinic_mrn"),
)

episodes = Table(
    "episodes",
    metadata,
    Column("id", ID, primary_key=True),
    Column("clinic_id", ID, ForeignKey("clinics.id"), nullable=False, index=True),
    Column("patient_id", ID, ForeignKey("patients.id"), nullable=False, index=True),
    Column("status", String(20), nullable=False),
    Column("phase", String(20), nullable=False),
    Column("version", Integer, nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Child records of an episode (consents, sessions, doses, ...) and patient-level records (body weights).
clinical_records = Table(
    "clinical_records",
    metadata,
    Column("id", ID, primary_key=True),
    Column("clinic_id", ID, ForeignKey("clinics.id"), nullable=False),
    Column("patient_id", ID, ForeignKey("patients.id"), nullable=False),
    Column("episode_id", ID, ForeignKey("episodes.id")),
    Column("kind", String(40), nullable=False),
    Column("version", Integer, nullable=False),
    Column("entered_in_error", Boolean, nullable=False),
    Column("data", JSON, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_clinical_records_episode", "clinic_id", "episode_id"),
    Index("ix_clinical_records_patient_kind", "clinic_id", "patient_id", "kind"),
)

# Every version of every correctable thing, append-only: the correction history.
record_versions = Table(
    "record_versions",
    metadata,
    Column("entity_kind", String(40), primary_key=True),
    Column("entity_id", ID, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("clinic_id", ID, ForeignKey("clinics.id"), nullable=False),
    Column("change", String(20), nullable=False),
    Column("reason", Text),
    Column("actor", String(200), nullable=False),
    Column("changed_at", UtcDateTime, nullable=False),
    Column("data", JSON, nullable=False),
)

safety_flags = Table(
    "safety_flags",
    metadata,
    Column("id", ID, primary_key=True),
    Column("clinic_id", ID, ForeignKey("clinics.id"), nullable=False),
    Column("episode_id", ID, ForeignKey("episodes.id"), nullable=False),
    Column("status", String(20), nullable=False),
    Column("data", JSON, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_safety_flags_episode", "clinic_id", "episode_id"),
)

# Spravato REMS Patient Monitoring Forms sent (portal or fax), one row per submission (migration 0006).
rems_form_submissions = Table(
    "rems_form_submissions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("clinic_id", ID, ForeignKey("clinics.id"), nullable=False),
    Column("episode_id", ID, ForeignKey("episodes.id"), nullable=False),
    Column("session_id", ID, nullable=False),
    Column("data", JSON, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Index("ix_rems_form_submissions_episode", "clinic_id", "episode_id"),
)

# A POST retried with the same Idempotency-Key returns the first response.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("clinic_id", ID, primary_key=True),
    Column("client_id", String(200), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("method", String(10), nullable=False),
    Column("path", String(500), nullable=False),
    Column("body_sha256", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response_body", Text, nullable=False),
    Column("response_headers", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- security ------------------------------------------------------------------------------------------------

# Clients registered with `kapfhir clients add`: who may ask /oauth2/token for a token, for which clinic and scopes.
oauth_clients = Table(
    "oauth_clients",
    metadata,
    Column("client_id", String(200), primary_key=True),
    Column("clinic_id", ID, ForeignKey("clinics.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("allowed_scopes", Text, nullable=False),
    Column("jwks", JSON),
    Column("jwks_url", String(500)),
    Column("secret_hash", String(500)),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

# jti of client assertions seen, until they expire: a replayed assertion is refused (SMART Backend Services).
oauth_assertion_jti = Table(
    "oauth_assertion_jti",
    metadata,
    Column("client_id", String(200), primary_key=True),
    Column("jti", String(200), primary_key=True),
    Column("expires_at", Integer, nullable=False, index=True),
)

# AuditEvent records (the FHIR R4 AuditEvent shape), append-only: triggers refuse UPDATE and DELETE.
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", ID, primary_key=True),
    Column("clinic_id", ID),  # None when the caller could not be identified (401)
    Column("recorded", UtcDateTime, nullable=False),
    Column("type", String(20), nullable=False),  # DICOM/HL7 audit event type: rest | export
    Column("subtype", String(40), nullable=False),  # restful-interaction: create, read, update, search-type, ...
    Column("action", String(1), nullable=False),  # C R U D E
    Column("outcome", String(2), nullable=False),  # 0 success, 4 minor failure, 8 serious failure
    Column("client_id", String(200)),
    Column("network_address", String(64)),
    Column("request_id", String(100)),
    Column("method", String(10), nullable=False),
    Column("route", String(300), nullable=False),
    Column("status", Integer, nullable=False),
    Column("entity", JSON, nullable=False),  # [{"type": "Patient", "id": "..."}]
    # How many requests the row stands for: anonymous refusals and 429s are aggregated per address and minute.
    Column("occurrences", Integer, nullable=False, server_default="1"),
    Index("ix_audit_events_clinic_recorded", "clinic_id", "recorded"),
)

# Fixed-window request counters shared by every worker (service/security/rate_limit.py).
rate_limit_counters = Table(
    "rate_limit_counters",
    metadata,
    Column("key", String(400), primary_key=True),
    Column("hits", Integer, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_rate_limit_counters_expires_at", "expires_at"),
)


# --- exchange with EHRs ----------------------------------------------------------------------------------------

# The durable outbox: a change to an episode enqueues a job per target in the same transaction as the change.
sync_jobs = Table(
    "sync_jobs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("clinic_id", ID, ForeignKey("clinics.id"), nullable=False),
    Column("episode_id", ID, ForeignKey("episodes.id"), nullable=False),
    Column("target", String(100), nullable=False),
    Column("status", String(20), nullable=False),  # queued | held | delivered | dead
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("held_reason", Text),
    Column("last_error", JSON),  # the last OperationOutcome (or transport error) of a failed attempt
    Column("locked_by", String(100)),
    Column("locked_until", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_sync_jobs_due", "status", "next_attempt_at"),
    Index("ix_sync_jobs_episode", "clinic_id", "episode_id", "target"),
)

# What each target holds of ours: its id and version for each resource we pushed.
sync_resources = Table(
    "sync_resources",
    metadata,
    Column("clinic_id", ID, ForeignKey("clinics.id"), primary_key=True),
    Column("target", String(100), primary_key=True),
    Column("resource_type", String(40), primary_key=True),
    Column("identifier", String(600), primary_key=True),  # system|value of our business identifier
    Column("episode_id", ID),
    Column("remote_id", String(200)),
    Column("remote_version", String(100)),
    Column("content_hash", String(64), nullable=False),
    Column("outcome", String(20), nullable=False),  # created | unchanged | updated | skipped
    Column("updated_at", UtcDateTime, nullable=False),
)

# A local patient linked to the target's Patient (pulled by MRN, or linked explicitly).
patient_links = Table(
    "patient_links",
    metadata,
    Column("clinic_id", ID, ForeignKey("clinics.id"), primary_key=True),
    Column("patient_id", ID, ForeignKey("patients.id"), primary_key=True),
    Column("target", String(100), primary_key=True),
    Column("remote_id", String(200), nullable=False),
    Column("linked_at", UtcDateTime, nullable=False),
)
