"""Security settings, read from the environment only (secrets never come from code or the repository).

Environment variables:

``KAPFHIR_ENV``
    ``development`` (default) or ``production``. Production has no defaults for the variables below and
    :meth:`SecuritySettings.validate_for_production` refuses to start without issuer, audience and a key source.
``KAPFHIR_AUTH_ISSUER``
    Expected ``iss`` of access tokens; also the ``iss`` of tokens the embedded issuer signs.
    Development default: ``kapfhir-dev``. With Keycloak: ``https://<host>/realms/<realm>``.
``KAPFHIR_AUTH_AUDIENCE``
    Expected ``aud`` of access tokens (our FHIR base URL is a good value). Development default: ``kapfhir``.
``KAPFHIR_AUTH_JWKS_URL``
    JWKS of an external identity provider (must be https in production, except on loopback), e.g.
    ``https://<host>/realms/<realm>/protocol/openid-connect/certs``.
``KAPFHIR_AUTH_JWKS_FILE``
    Path of a local JWKS file trusted for access tokens.
``KAPFHIR_AUTH_LEEWAY_SECONDS``
    Clock-skew allowance for ``exp``/``nbf``/``iat``, 0..300, default 30.
``KAPFHIR_CLINIC_CLAIM``
    Name of the token claim holding the clinic (tenant) id, default ``kapfhir_clinic``.
``KAPFHIR_SIGNING_KEY_FILE``
    PEM private key of the embedded issuer (``/oauth2/token``, ``kapfhir token``); created with mode 0600 on
    first run by :func:`service.security.keys.ensure_local_signing_key`. Development default:
    ``var/signing-key.pem`` (``var/`` is git-ignored). Its public key is trusted for access tokens too.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

ENVIRONMENTS = ("development", "production")
DEV_ISSUER = "kapfhir-dev"
DEV_AUDIENCE = "kapfhir"
DEV_SIGNING_KEY_FILE = "var/signing-key.pem"
MAX_LEEWAY_SECONDS = 300


class ConfigurationError(RuntimeError):
    """The security configuration is missing or unsafe; the service must not start."""


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class SecuritySettings:
    env: str = "development"
    issuer: str | None = DEV_ISSUER
    audience: str | None = DEV_AUDIENCE
    jwks_url: str | None = None
    jwks_file: str | None = None
    leeway_seconds: int = 30
    clinic_claim: str = "kapfhir_clinic"
    signing_key_file: str | None = DEV_SIGNING_KEY_FILE

    @property
    def production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SecuritySettings:
        """Read the variables documented in the module docstring. Raises :class:`ConfigurationError`."""
        env_vars = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env_vars.get(name, "").strip()
            return value or None

        env = (get("KAPFHIR_ENV") or "development").lower()
        if env not in ENVIRONMENTS:
            raise ConfigurationError(f"KAPFHIR_ENV must be one of {ENVIRONMENTS}, got {env!r}")
        dev = env == "development"
        leeway_text = get("KAPFHIR_AUTH_LEEWAY_SECONDS")
        try:
            leeway = 30 if leeway_text is None else int(leeway_text)
        except ValueError:
            raise ConfigurationError("KAPFHIR_AUTH_LEEWAY_SECONDS must be an integer") from None
        if not 0 <= leeway <= MAX_LEEWAY_SECONDS:
            raise ConfigurationError(f"KAPFHIR_AUTH_LEEWAY_SECONDS must be 0..{MAX_LEEWAY_SECONDS}")
        clinic_claim = get("KAPFHIR_CLINIC_CLAIM") or "kapfhir_clinic"
        return cls(
            env=env,
            issuer=get("KAPFHIR_AUTH_ISSUER") or (DEV_ISSUER if dev else None),
            audience=get("KAPFHIR_AUTH_AUDIENCE") or (DEV_AUDIENCE if dev else None),
            jwks_url=get("KAPFHIR_AUTH_JWKS_URL"),
            jwks_file=get("KAPFHIR_AUTH_JWKS_FILE"),
            leeway_seconds=leeway,
            clinic_claim=clinic_claim,
            signing_key_file=get("KAPFHIR_SIGNING_KEY_FILE") or (DEV_SIGNING_KEY_FILE if dev else None),
        )

    @property
    def has_key_source(self) -> bool:
        return bool(self.jwks_url or self.jwks_file or self.signing_key_file)

    def validate_for_production(self) -> None:
        """In production, raise :class:`ConfigurationError` unless issuer, audience and a key source are set
        (and a JWKS URL is https unless loopback). In development this only checks the JWKS URL scheme."""
        problems = []
        if self.jwks_url:
            scheme = urlsplit(self.jwks_url).scheme
            if scheme not in ("https", "http"):
                problems.append("KAPFHIR_AUTH_JWKS_URL must be an http(s) URL")
            elif self.production and scheme != "https" and not is_loopback_url(self.jwks_url):
                problems.append("KAPFHIR_AUTH_JWKS_URL must use https in production")
        if self.production:
            if not self.issuer:
                problems.append("KAPFHIR_AUTH_ISSUER is required in production")
            if not self.audience:
                problems.append("KAPFHIR_AUTH_AUDIENCE is required in production")
            if not self.has_key_source:
                problems.append(
                    "a key source is required in production: KAPFHIR_AUTH_JWKS_URL, KAPFHIR_AUTH_JWKS_FILE "
                    "or KAPFHIR_SIGNING_KEY_FILE"
                )
        if problems:
            raise ConfigurationError("; ".join(problems))
