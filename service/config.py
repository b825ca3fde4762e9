"""Settings, from environment variables only (documented in README, "Configuration")."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from service.domain.rules import DEFAULT_MAX_MG_PER_KG, SafetyPolicy
from service.exchange.targets import Target, load_targets
from service.security.settings import SecuritySettings


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def _float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


DEFAULT_BIND = "127.0.0.1:8000"


def base_url_from_bind(bind: str | None) -> str:
    """The URL a client on this machine reaches gunicorn at, from its bind address (``KAPFHIR_BIND``).

    A wildcard address (``0.0.0.0``, ``::``) is reached at 127.0.0.1; from elsewhere, or behind a proxy, set
    ``KAPFHIR_BASE_URL`` to the public URL (``kapfhir config show`` warns). Unix sockets keep the default port.
    """
    bind = (bind or DEFAULT_BIND).strip().split()[0]
    if bind.startswith(("unix:", "fd://")) or ":" not in bind:
        return f"http://{DEFAULT_BIND}"
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::", "*"):  # noqa: S104 - names the wildcard, binds nothing
        host = "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def safety_policy_from_env() -> SafetyPolicy:
    return SafetyPolicy(
        max_mg_per_kg={
            route: _float(f"KAPFHIR_MAX_MG_PER_KG_{route.name}", default)
            for route, default in DEFAULT_MAX_MG_PER_KG.items()
        },
        home_check_in_window_min=_int("KAPFHIR_HOME_CHECK_IN_WINDOW_MIN", 60),
        pcl5_cut_point=_int("KAPFHIR_PCL5_CUT_POINT", 33),
    )


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///var/kapfhir.db"
    max_body_bytes: int = 1_048_576
    max_json_depth: int = 32
    future_tolerance_min: int = 5
    default_clinic_id: str = "demo"
    default_clinic_name: str = "Demo KAP Clinic"
    default_identifier_system: str = "https://demo-clinic.example.org/fhir/id"
    log_level: str = "INFO"
    # Public base URL of this service: the audience of client assertions is {base_url}/oauth2/token. From the
    # environment: KAPFHIR_BASE_URL, else derived from KAPFHIR_BIND (base_url_from_bind).
    base_url: str = "http://127.0.0.1:8000"
    rate_limit: str = "1200 per minute"  # per client: (clinic, client id), all routes, all workers
    rate_limit_per_address: str = "3000 per minute"  # per source address, checked before authentication
    # Where the counts live: "database" (shared by every worker on it) or a limits storage URI (redis://host:6379)
    rate_limit_storage: str = "database"
    safety: SafetyPolicy = field(default_factory=SafetyPolicy)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    # EHR targets (KAPFHIR_TARGETS_FILE / KAPFHIR_TARGETS, see service/exchange/targets.py); every change to an
    # episode is queued for each of them.
    targets: dict[str, Target] = field(default_factory=dict)
    sync_max_attempts: int = 8
    # Records kept decoded per process, shared by its requests (service/adapters/repository.py: DecodedRecords);
    # 0: none, every command decodes its episode's records from their rows.
    decoded_records: int = 10_000

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("KAPFHIR_DATABASE_URL") or cls.database_url,
            max_body_bytes=_int("KAPFHIR_MAX_BODY_BYTES", cls.max_body_bytes),
            max_json_depth=_int("KAPFHIR_MAX_JSON_DEPTH", cls.max_json_depth),
            future_tolerance_min=_int("KAPFHIR_FUTURE_TOLERANCE_MIN", cls.future_tolerance_min),
            default_clinic_id=os.environ.get("KAPFHIR_DEFAULT_CLINIC") or cls.default_clinic_id,
            default_clinic_name=os.environ.get("KAPFHIR_DEFAULT_CLINIC_NAME") or cls.default_clinic_name,
            default_identifier_system=os.environ.get("KAPFHIR_DEFAULT_IDENTIFIER_SYSTEM")
            or cls.default_identifier_system,
            log_level=os.environ.get("KAPFHIR_LOG_LEVEL") or cls.log_level,
            base_url=(os.environ.get("KAPFHIR_BASE_URL") or base_url_from_bind(os.environ.get("KAPFHIR_BIND"))).rstrip(
                "/"
            ),
            rate_limit=os.environ.get("KAPFHIR_RATE_LIMIT") or cls.rate_limit,
            rate_limit_per_address=os.environ.get("KAPFHIR_RATE_LIMIT_PER_ADDRESS") or cls.rate_limit_per_address,
            rate_limit_storage=os.environ.get("KAPFHIR_RATE_LIMIT_STORAGE") or cls.rate_limit_storage,
            safety=safety_policy_from_env(),
            security=SecuritySettings.from_env(),
            targets=load_targets(),
            sync_max_attempts=_int("KAPFHIR_SYNC_MAX_ATTEMPTS", 8),
            decoded_records=_int("KAPFHIR_DECODED_RECORDS", 10_000),
        )
