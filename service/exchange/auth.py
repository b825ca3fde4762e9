"""Per-target authentication for :class:`service.exchange.client.FhirClient`.

An auth object has ``headers()`` (the headers to add to a FHIR request), ``renew()`` (called once after a 401:
drop the cached credential and get a new one; ``True`` when a retry can help) and ``bind(session, timeout)``
(the client hands over its session so the token endpoint gets the same TLS settings).

* :class:`NoAuth` -- open sandboxes.
* :class:`BearerAuth` -- a static token (from env or a file; never from the config file itself).
* :class:`ClientSecretAuth` -- OAuth 2.0 ``client_credentials`` with ``client_secret_basic`` (default) or
  ``client_secret_post``.
* :class:`SmartBackendAuth` -- SMART Backend Services (SMART App Launch 2.2): token URL discovered from
  ``{base}/.well-known/smart-configuration``; client assertion signed with RS384 or ES384 by PyJWT with
  ``iss = sub = client_id``, ``aud = token URL``, a unique ``jti``, ``exp`` at most 5 minutes ahead, and the
  ``kid`` of the key's JWKS entry (RFC 7638 thumbprint, :mod:`service.security.keys`).

Tokens are cached until ``refresh_margin`` seconds before ``expires_in`` runs out.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

import jwt
import requests

from service.security.keys import SigningKey

log = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 300
SMART_ALGORITHMS = ("RS384", "ES384")


class AuthError(Exception):
    """The token endpoint refused us or could not be used. ``error`` is the OAuth error code when given."""

    def __init__(self, message: str, *, status: int | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


class NoAuth:
    kind = "none"

    def bind(self, session: requests.Session, timeout: Any) -> None:
        pass

    def headers(self) -> dict[str, str]:
        return {}

    def renew(self) -> bool:
        return False


class BearerAuth(NoAuth):
    """A static bearer token. ``token`` may be a callable (re-read on renew, e.g. from a rotated file)."""

    kind = "bearer"

    def __init__(self, token: str | Callable[[], str]) -> None:
        self._source = token
        self._token = token() if callable(token) else token

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def renew(self) -> bool:
        if callable(self._source):
            fresh = self._source()
            changed = fresh != self._token
            self._token = fresh
            return changed
        return False


class _TokenAuth(NoAuth):
    """Shared token caching for the OAuth flows."""

    def __init__(
        self,
        *,
        scope: str,
        token_url: str | None = None,
        refresh_margin: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.scope = scope
        self.token_url = token_url
        self.refresh_margin = refresh_margin
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._session: requests.Session | None = None
        self._timeout: Any = (5.0, 30.0)
        self.token_requests = 0  # how many tokens were fetched (for tests and metrics)
        self.granted_scope: str | None = None

    def bind(self, session: requests.Session, timeout: Any) -> None:
        self._session = session
        self._timeout = timeout

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
        return self._session

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token()}"}

    def access_token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at - self.refresh_margin:
                self._fetch()
            assert self._token is not None
            return self._token

    def renew(self) -> bool:
        with self._lock:
            self._token = None
            self._expires_at = 0.0
        return True

    def _fetch(self) -> None:
        token_url = self.resolve_token_url()
        data, headers = self._request_parts(token_url)
        try:
            resp = self.session.post(
                token_url, data=data, headers={"Accept": "application/json", **headers}, timeout=self._timeout
            )
        except requests.RequestException as exc:
            raise AuthError(f"token endpoint unreachable: {type(exc).__name__}") from exc
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            error = body.get("error") if isinstance(body, dict) else None
            desc = body.get("error_description") if isinstance(body, dict) else None
            raise AuthError(
                f"token request refused ({resp.status_code}): {error or ''} {desc or ''}".strip(),
                status=resp.status_code,
                error=error,
            )
        if str(body.get("token_type", "bearer")).lower() != "bearer":
            raise AuthError(f"unsupported token_type {body.get('token_type')!r}")
        self.token_requests += 1
        self._token = body["access_token"]
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, (int, float)) else 300.0
        self._expires_at = self._clock() + lifetime
        self.granted_scope = body.get("scope")

    def resolve_token_url(self) -> str:
        if not self.token_url:
            raise AuthError("no token URL configured")
        return self.token_url

    def _request_parts(self, token_url: str) -> tuple[dict[str, str], dict[str, str]]:
        raise NotImplementedError


class ClientSecretAuth(_TokenAuth):
    """OAuth 2.0 client credentials with a shared secret (``client_secret_basic`` or ``client_secret_post``)."""

    kind = "client_credentials"

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str,
        method: str = "client_secret_basic",
        **kwargs: Any,
    ) -> None:
        super().__init__(scope=scope, token_url=token_url, **kwargs)
        if method not in ("client_secret_basic", "client_secret_post"):
            raise ValueError(f"unsupported client auth method {method!r}")
        self.client_id = client_id
        self._secret = client_secret
        self.method = method

    def _request_parts(self, token_url: str) -> tuple[dict[str, str], dict[str, str]]:
        data = {"grant_type": "client_credentials", "scope": self.scope}
        if self.method == "client_secret_post":
            return {**data, "client_id": self.client_id, "client_secret": self._secret}, {}
        return data, {"Authorization": basic_auth_header(self.client_id, self._secret)}


def basic_auth_header(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: form-urlencode id and secret, then HTTP Basic."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def discover_smart_configuration(session: requests.Session, base_url: str, timeout: Any = (5.0, 30.0)) -> dict:
    """``GET {base}/.well-known/smart-configuration`` (JSON)."""
    url = f"{base_url.rstrip('/')}/.well-known/smart-configuration"
    try:
        resp = session.get(url, headers={"Accept": "application/json"}, timeout=timeout)
    except requests.RequestException as exc:
        raise AuthError(f"SMART discovery failed: {type(exc).__name__}") from exc
    if resp.status_code != 200:
        raise AuthError(f"SMART discovery answered {resp.status_code}", status=resp.status_code)
    try:
        doc = resp.json()
    except ValueError as exc:
        raise AuthError("SMART discovery did not return JSON") from exc
    if not isinstance(doc, dict) or not doc.get("token_endpoint"):
        raise AuthError("smart-configuration has no token_endpoint")
    return doc


def client_assertion(
    key: SigningKey,
    *,
    client_id: str,
    token_url: str,
    lifetime: int = MAX_ASSERTION_LIFETIME,
    now: float | None = None,
    jku: str | None = None,
) -> str:
    """A signed SMART Backend Services client assertion (RS384/ES384)."""
    if key.alg not in SMART_ALGORITHMS:
        raise ValueError(f"SMART Backend Services needs RS384 or ES384, not {key.alg}")
    if not 0 < lifetime <= MAX_ASSERTION_LIFETIME:
        raise ValueError("assertion lifetime must be within 5 minutes")
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "jti": str(uuid.uuid4()),
        "iat": issued,
        "exp": issued + lifetime,
    }
    headers: dict[str, str] = {"kid": key.kid, "typ": "JWT"}
    if jku:
        headers["jku"] = jku
    return jwt.encode(claims, key.private_key, algorithm=key.alg, headers=headers)


class SmartBackendAuth(_TokenAuth):
    """SMART Backend Services (client_credentials + private_key_jwt)."""

    kind = "smart"

    def __init__(
        self,
        *,
        base_url: str,
        client_id: str,
        key: SigningKey,
        scope: str,
        token_url: str | None = None,
        jku: str | None = None,
        assertion_lifetime: int = 240,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope=scope, token_url=token_url, **kwargs)
        if key.alg not in SMART_ALGORITHMS:
            raise ValueError(f"SMART Backend Services needs an RS384 or ES384 key, got {key.alg}")
        self.base_url = base_url
        self.client_id = client_id
        self.key = key
        self.jku = jku
        self.assertion_lifetime = assertion_lifetime
        self.smart_configuration: dict | None = None

    def resolve_token_url(self) -> str:
        if not self.token_url:
            self.smart_configuration = discover_smart_configuration(self.session, self.base_url, self._timeout)
            algs = self.smart_configuration.get("token_endpoint_auth_signing_alg_values_supported")
            if algs and self.key.alg not in algs:
                log.warning("server does not advertise %s (advertises %s); trying anyway", self.key.alg, algs)
            self.token_url = self.smart_configuration["token_endpoint"]
        return self.token_url

    def _request_parts(self, token_url: str) -> tuple[dict[str, str], dict[str, str]]:
        assertion = client_assertion(
            self.key,
            client_id=self.client_id,
            token_url=token_url,
            lifetime=self.assertion_lifetime,
            now=self._clock(),
            jku=self.jku,
        )
        return {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }, {}


Auth = NoAuth | BearerAuth | ClientSecretAuth | SmartBackendAuth
