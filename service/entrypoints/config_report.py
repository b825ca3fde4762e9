"""What ``kapfhir config show`` prints: the effective settings, where each came from, secrets masked, and the
contradictions between them that would otherwise show up later as refused tokens or held deliveries."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

from service.config import DEFAULT_BIND, Settings, base_url_from_bind
from service.exchange.targets import Target

MASK = "****"


@dataclass(frozen=True)
class Line:
    name: str
    value: str
    source: str  # "env", "default", "derived from KAPFHIR_BIND", ...


def mask_url(url: str) -> str:
    """A URL with its password (database URLs) replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:{MASK}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _source(environ: Mapping[str, str], name: str) -> str:
    return "env" if environ.get(name) else "default"


def report(settings: Settings, environ: Mapping[str, str] | None = None) -> tuple[list[Line], list[str]]:
    environ = os.environ if environ is None else environ
    lines = [
        *_service_lines(settings, environ),
        *_auth_lines(settings, environ),
        *_operation_lines(settings, environ),
        *(_target_line(target) for target in settings.targets.values()),
    ]
    return lines, warnings(settings, environ)


def _service_lines(settings: Settings, environ: Mapping[str, str]) -> list[Line]:
    """Database, address, public base URL (and the token endpoint it implies), workers."""
    bind = environ.get("KAPFHIR_BIND") or DEFAULT_BIND
    return [
        Line("KAPFHIR_DATABASE_URL", mask_url(settings.database_url), _source(environ, "KAPFHIR_DATABASE_URL")),
        Line("KAPFHIR_BIND", bind, _source(environ, "KAPFHIR_BIND")),
        Line(
            "KAPFHIR_BASE_URL",
            settings.base_url,
            "env" if environ.get("KAPFHIR_BASE_URL") else "derived from KAPFHIR_BIND",
        ),
        Line("token endpoint", f"{settings.base_url}/oauth2/token", "derived from KAPFHIR_BASE_URL"),
        Line("KAPFHIR_WORKERS", environ.get("KAPFHIR_WORKERS") or "2", _source(environ, "KAPFHIR_WORKERS")),
    ]


def _auth_lines(settings: Settings, environ: Mapping[str, str]) -> list[Line]:
    """Environment, token issuer and audience, and where the keys come from."""
    security = settings.security
    return [
        Line("KAPFHIR_ENV", security.env, _source(environ, "KAPFHIR_ENV")),
        Line("KAPFHIR_AUTH_ISSUER", str(security.issuer), _source(environ, "KAPFHIR_AUTH_ISSUER")),
        Line("KAPFHIR_AUTH_AUDIENCE", str(security.audience), _source(environ, "KAPFHIR_AUTH_AUDIENCE")),
        Line("KAPFHIR_AUTH_JWKS_URL", security.jwks_url or "-", _source(environ, "KAPFHIR_AUTH_JWKS_URL")),
        Line("KAPFHIR_AUTH_JWKS_FILE", security.jwks_file or "-", _source(environ, "KAPFHIR_AUTH_JWKS_FILE")),
        Line(
            "KAPFHIR_SIGNING_KEY_FILE", security.signing_key_file or "-", _source(environ, "KAPFHIR_SIGNING_KEY_FILE")
        ),
    ]


def _operation_lines(settings: Settings, environ: Mapping[str, str]) -> list[Line]:
    """Default clinic, logging, rate limit, delivery attempts and where the targets are declared."""
    return [
        Line("KAPFHIR_DEFAULT_CLINIC", settings.default_clinic_id, _source(environ, "KAPFHIR_DEFAULT_CLINIC")),
        Line("KAPFHIR_LOG_LEVEL", settings.log_level, _source(environ, "KAPFHIR_LOG_LEVEL")),
        Line("KAPFHIR_RATE_LIMIT", settings.rate_limit, _source(environ, "KAPFHIR_RATE_LIMIT")),
        Line(
            "KAPFHIR_SYNC_MAX_ATTEMPTS", str(settings.sync_max_attempts), _source(environ, "KAPFHIR_SYNC_MAX_ATTEMPTS")
        ),
        Line(
            "KAPFHIR_TARGETS_FILE", environ.get("KAPFHIR_TARGETS_FILE") or "-", _source(environ, "KAPFHIR_TARGETS_FILE")
        ),
        Line("KAPFHIR_TARGETS", environ.get("KAPFHIR_TARGETS") or "-", _source(environ, "KAPFHIR_TARGETS")),
    ]


def _target_line(target: Target) -> Line:
    """One target: base URL, auth (secrets masked), organization identifier, write policy, and its preset."""
    auth = target.auth
    secret = MASK if (auth.token or auth.client_secret) else "-"
    org = target.organization_identifier.token() if target.organization_identifier else "-"
    return Line(
        f"target {target.name}",
        f"{target.base_url} auth={auth.type} token_url={auth.token_url or '-'} secret={secret} "
        f"organization={org} write_policy={target.write_policy}",
        f"preset {target.preset}" if target.preset else "file/env",
    )


def warnings(settings: Settings, environ: Mapping[str, str]) -> list[str]:
    base = urlsplit(settings.base_url)
    base_is_local = base.hostname in ("127.0.0.1", "localhost", "::1")
    return [
        *_address_warnings(settings, environ, base, base_is_local),
        *_production_warnings(settings, base_is_local),
        *(_unnamed_target_warning(target) for target in settings.targets.values() if _unnamed(target)),
    ]


def _address_warnings(
    settings: Settings, environ: Mapping[str, str], base: SplitResult, base_is_local: bool
) -> list[str]:
    """The public base URL and the bind address disagree: assertions to the token endpoint would reach nothing, or
    the SMART configuration advertises an address only this machine reaches."""
    out = []
    bind = environ.get("KAPFHIR_BIND") or DEFAULT_BIND
    explicit_base = environ.get("KAPFHIR_BASE_URL")
    bind_host, _, bind_port = bind.rpartition(":")
    if explicit_base and base_is_local and bind_port.isdigit() and base.port and str(base.port) != bind_port:
        out.append(
            f"KAPFHIR_BASE_URL {explicit_base} names port {base.port} on this machine but gunicorn binds {bind}: "
            f"client assertions made out to {explicit_base}/oauth2/token will reach nothing. Unset KAPFHIR_BASE_URL "
            f"(it defaults to {base_url_from_bind(bind)}) or make the ports agree."
        )
    if not explicit_base and bind_host.strip("[]") in ("0.0.0.0", "::", ""):  # noqa: S104 - compares, binds nothing
        out.append(
            f"gunicorn binds every address ({bind}) but KAPFHIR_BASE_URL is not set: the SMART configuration "
            f"advertises {settings.base_url}, which only this machine reaches. Set KAPFHIR_BASE_URL to the public URL."
        )
    return out


def _production_warnings(settings: Settings, base_is_local: bool) -> list[str]:
    """Production on SQLite, or behind a plain-http public URL."""
    out = []
    if settings.security.production and settings.database_url.startswith("sqlite"):
        out.append("KAPFHIR_ENV=production on SQLite: use PostgreSQL (KAPFHIR_DATABASE_URL=postgresql+psycopg://...).")
    if settings.security.production and settings.base_url.startswith("http://") and not base_is_local:
        out.append(f"KAPFHIR_ENV=production with a plain-http KAPFHIR_BASE_URL ({settings.base_url}).")
    return out


def _unnamed(target: Target) -> bool:
    return target.organization_identifier is None and not target.read_only


def _unnamed_target_warning(target: Target) -> str:
    """A writable target without an organization identifier: no privacy consent can name it."""
    return (
        f"target {target.name} has no organization_identifier: every delivery to it will be held, since "
        f"no privacy consent can name it (set KAPFHIR_TARGET_{target.name.upper().replace('-', '_')}"
        "_ORGANIZATION_IDENTIFIER=system|value)."
    )
