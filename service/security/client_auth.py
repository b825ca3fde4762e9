"""Token endpoint logic of our embedded issuer (``POST /oauth2/token``), framework-free.

SMART Backend Services (App Launch 2.2.0) ``client_credentials`` grant, with client authentication by

* ``private_key_jwt``: ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``,
  assertion signed RS384 or ES384 with a key of the client's registered JWKS (value or URL) selected by
  ``kid``; ``iss`` = ``sub`` = client_id, ``aud`` = our token URL, ``exp`` at most 5 minutes ahead, ``jti``
  never reused within the assertion's lifetime (:class:`ReplayStore`), optional ``jku`` must equal the
  registered JWKS URL;
* a client secret, ``client_secret_basic`` (RFC 6749 §2.3.1, form-urlencoded id and secret in HTTP Basic) or
  ``client_secret_post``; secrets are stored only as salted scrypt hashes (:func:`hash_client_secret`).

Requested scopes are intersected with the client's allowed scopes. Errors are :class:`OAuthError` with the
RFC 6749 §5.2 body ``{"error", "error_description"}`` and status 400, or 401 for ``invalid_client``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote_plus

import jwt

from service.security.keys import (
    JWKSSource,
    KeySourceUnavailableError,
    RemoteJWKS,
    StaticJWKS,
    UnknownKeyError,
    VerificationKey,
)
from service.security.scopes import InvalidScopeError, ScopeSet
from service.security.settings import is_loopback_url
from service.security.tokens import DEFAULT_TOKEN_LIFETIME, TokenIssuer

JWT_BEARER_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLIENT_CREDENTIALS = "client_credentials"
ASSERTION_ALGORITHMS = ("RS384", "ES384")
MAX_ASSERTION_LIFETIME = 300
DEFAULT_ASSERTION_LEEWAY = 30
MAX_ASSERTION_BYTES = 16_384
TOKEN_RESPONSE_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}


# ------------------------------------------------------------------------------------------------ errors


class OAuthError(Exception):
    """An RFC 6749 §5.2 error. ``status`` is 401 for ``invalid_client``, else 400."""

    def __init__(self, error: str, description: str, *, status: int | None = None, basic_auth: bool = False):
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status or (401 if error == "invalid_client" else 400)
        self.basic_auth = basic_auth

    def to_dict(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}

    def headers(self) -> dict[str, str]:
        out = dict(TOKEN_RESPONSE_HEADERS)
        if self.status == 401 and self.basic_auth:
            out["WWW-Authenticate"] = 'Basic realm="kapfhir"'
        return out


# ------------------------------------------------------------------------------------------------ secrets

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def generate_client_secret() -> str:
    """A new random secret (256 bits, URL-safe). Show it once; store only :func:`hash_client_secret`."""
    return secrets.token_urlsafe(32)


def hash_client_secret(secret: str, *, n: int = _SCRYPT_N, r: int = _SCRYPT_R, p: int = _SCRYPT_P) -> str:
    """``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`` with a random 16-byte salt."""
    if not secret:
        raise ValueError("empty secret")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=128 * n * r * 2)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_client_secret(secret: str, stored: str) -> bool:
    """Constant-time check of ``secret`` against a :func:`hash_client_secret` value."""
    try:
        scheme, n_s, r_s, p_s, salt_b64, hash_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        n, r, p = int(n_s), int(r_s), int(p_s)
        if not (2**10 <= n <= 2**17 and 1 <= r <= 16 and 1 <= p <= 4):
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(hash_b64, validate=True)
    except (ValueError, binascii.Error):
        return False
    actual = hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(expected), maxmem=128 * n * r * 2
    )
    return hmac.compare_digest(actual, expected)


_DUMMY_HASH = hash_client_secret("kapfhir-timing-equaliser", n=_SCRYPT_N)


# ---------------------------------------------------------------------------------------------- clients


def _check_jwks_url(url: str) -> None:
    if not (url.startswith("https://") or (url.startswith("http://") and is_loopback_url(url))):
        raise ValueError("jwks_url must be https (http only on loopback)")


@dataclass(frozen=True)
class ClientRegistration:
    """A client registered with ``kapfhir clients add``. Exactly one of ``jwks``, ``jwks_url``, ``secret_hash``
    (``jwks`` and ``jwks_url`` are the two SMART registration forms of the asymmetric method)."""

    client_id: str
    clinic_id: str
    allowed_scopes: str
    jwks: Mapping[str, Any] | None = None
    jwks_url: str | None = None
    secret_hash: str | None = None
    name: str = ""
    enabled: bool = True

    def __post_init__(self) -> None:
        if not self.client_id or not self.clinic_id:
            raise ValueError("client_id and clinic_id are required")
        given = [x for x in (self.jwks, self.jwks_url, self.secret_hash) if x]
        if len(given) != 1:
            raise ValueError("register exactly one of jwks, jwks_url, secret_hash")
        if self.jwks_url:
            _check_jwks_url(self.jwks_url)
        if self.jwks is not None:
            StaticJWKS(self.jwks)  # raises on a malformed document
        ScopeSet.parse(self.allowed_scopes, strict=True)

    @property
    def asymmetric(self) -> bool:
        return bool(self.jwks or self.jwks_url)

    @property
    def scopes(self) -> ScopeSet:
        return ScopeSet.parse(self.allowed_scopes)


class ClientStore(Protocol):
    def get(self, client_id: str) -> ClientRegistration | None: ...


class InMemoryClientStore:
    def __init__(self, registrations: Iterable[ClientRegistration] = ()) -> None:
        self._clients = {r.client_id: r for r in registrations}

    def add(self, registration: ClientRegistration) -> None:
        self._clients[registration.client_id] = registration

    def get(self, client_id: str) -> ClientRegistration | None:
        return self._clients.get(client_id)


class ReplayStore(Protocol):
    """Remembers assertion ``jti`` values until they expire.

    ``remember`` must be atomic: it returns True if ``(client_id, jti)`` was unseen (and now stored until
    ``expires_at``, epoch seconds) and False if it is a replay. A database version: a table with a unique key
    on ``(client_id, jti)`` and an ``expires_at`` column; INSERT, and an IntegrityError means replay; delete rows
    with ``expires_at < now`` from time to time (or first, in the same transaction).
    """

    def remember(self, client_id: str, jti: str, expires_at: int) -> bool: ...


class InMemoryReplayStore:
    """Single-process replay store (tests, development)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._seen: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def remember(self, client_id: str, jti: str, expires_at: int) -> bool:
        now = self._clock()
        with self._lock:
            if len(self._seen) > 1000:
                self._seen = {k: v for k, v in self._seen.items() if v >= now}
            exp = self._seen.get((client_id, jti))
            if exp is not None and exp >= now:
                return False
            self._seen[(client_id, jti)] = expires_at
            return True


# --------------------------------------------------------------------------------------------- endpoint


@dataclass
class TokenEndpoint:
    """``POST /oauth2/token``. Call :meth:`handle` with the form fields and request headers.

    ``form`` may be a plain mapping or a Werkzeug ``MultiDict`` (repeated parameters are then refused).
    """

    clients: ClientStore
    issuer: TokenIssuer
    token_url: str
    replay_store: ReplayStore = field(default_factory=InMemoryReplayStore)
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME
    max_assertion_lifetime: int = MAX_ASSERTION_LIFETIME
    leeway: int = DEFAULT_ASSERTION_LEEWAY
    assertion_algorithms: tuple[str, ...] = ASSERTION_ALGORITHMS
    jwks_url_factory: Callable[[str], JWKSSource] = field(default=lambda url: RemoteJWKS(url, ttl=300))
    _remote: dict[str, JWKSSource] = field(default_factory=dict, init=False, repr=False)

    def respond(
        self, form: Mapping[str, Any], headers: Mapping[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, JSON body, headers): 200 and the token, or the error."""
        try:
            return 200, self.handle(form, headers), dict(TOKEN_RESPONSE_HEADERS)
        except OAuthError as err:
            return err.status, err.to_dict(), err.headers()

    def handle(self, form: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
        params = self._params(form)
        grant_type = params.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant_type != CLIENT_CREDENTIALS:
            raise OAuthError("unsupported_grant_type", "only client_credentials is supported")
        client = self._authenticate(params, headers)
        if not params.get("scope"):
            raise OAuthError("invalid_scope", "scope is required")
        try:
            requested = ScopeSet.parse(params["scope"], strict=True)
        except InvalidScopeError:
            raise OAuthError("invalid_scope", "malformed scope") from None
        granted = requested.intersect(client.scopes)
        if not granted:
            raise OAuthError("invalid_scope", "none of the requested scopes is allowed for this client")
        issued = self.issuer.issue(
            client_id=client.client_id, clinic_id=client.clinic_id, scope=granted, lifetime=self.token_lifetime
        )
        return {
            "access_token": issued.access_token,
            "token_type": "bearer",
            "expires_in": issued.expires_in,
            "scope": issued.scope,
        }

    # -- helpers

    @staticmethod
    def _params(form: Mapping[str, Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        getlist = getattr(form, "getlist", None)
        for key in form:
            if getlist is not None and len(getlist(key)) > 1:
                raise OAuthError("invalid_request", f"parameter {key} repeated")
            value = form[key]
            if not isinstance(value, str):
                raise OAuthError("invalid_request", f"parameter {key} malformed")
            out[key] = value
        return out

    def _authenticate(self, params: Mapping[str, str], headers: Mapping[str, str]) -> ClientRegistration:
        authorization = _header(headers, "Authorization")
        basic = authorization is not None and authorization[:6].lower() == "basic "
        methods = [
            name
            for name, used in (
                ("client_secret_basic", basic),
                ("client_secret_post", "client_secret" in params),
                ("private_key_jwt", "client_assertion" in params or "client_assertion_type" in params),
            )
            if used
        ]
        if len(methods) > 1:
            raise OAuthError("invalid_request", "use exactly one client authentication method")
        if not methods:
            raise OAuthError("invalid_client", "client authentication required")
        method = methods[0]
        if method == "private_key_jwt":
            return self._authenticate_assertion(params)
        if method == "client_secret_basic":
            assert authorization is not None
            client_id, secret = _parse_basic(authorization)
            if params.get("client_id") not in (None, client_id):
                raise OAuthError("invalid_request", "client_id does not match the credentials")
            return self._authenticate_secret(client_id, secret, basic=True)
        client_id = params.get("client_id")
        if not client_id:
            raise OAuthError("invalid_request", "client_id is required with client_secret")
        return self._authenticate_secret(client_id, params["client_secret"], basic=False)

    def _authenticate_secret(self, client_id: str, secret: str, *, basic: bool) -> ClientRegistration:
        client = self.clients.get(client_id)
        stored = client.secret_hash if client is not None and client.enabled else None
        ok = verify_client_secret(secret, stored or _DUMMY_HASH)  # same work for unknown clients
        if not ok or stored is None:
            raise OAuthError("invalid_client", "client authentication failed", basic_auth=basic)
        assert client is not None
        return client

    def _authenticate_assertion(self, params: Mapping[str, str]) -> ClientRegistration:
        """A private_key_jwt client assertion (SMART Backend Services, RFC 7523): read unverified to find the
        client and its key, then verified, then its lifetime and single use checked."""
        assertion, header, unverified = _read_assertion(params)
        alg, kid = self._assertion_key_id(header)
        client = self._asserting_client(params, header, unverified)
        client_id = unverified["iss"]  # the client the assertion names, checked by _asserting_client
        claims = self._verified_claims(assertion, self._verification_key(client, kid, alg), alg, client_id)
        self._accept_once(client_id, claims)
        return client

    def _assertion_key_id(self, header: Mapping[str, Any]) -> tuple[str, str]:
        """(alg, kid) of the assertion header: an accepted algorithm and a key id."""
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.assertion_algorithms:
            raise OAuthError("invalid_client", f"assertion alg must be one of {', '.join(self.assertion_algorithms)}")
        if not isinstance(kid, str) or not kid:
            raise OAuthError("invalid_client", "assertion header lacks kid")
        return alg, kid

    def _asserting_client(
        self, params: Mapping[str, str], header: Mapping[str, Any], unverified: Mapping[str, Any]
    ) -> ClientRegistration:
        """The enabled asymmetric client the assertion names (iss = sub = client_id), its jku if any matching the
        registered JWKS URL."""
        client_id = unverified.get("iss")
        if not isinstance(client_id, str) or not client_id or unverified.get("sub") != client_id:
            raise OAuthError("invalid_client", "assertion iss and sub must both be the client_id")
        if params.get("client_id") not in (None, client_id):
            raise OAuthError("invalid_request", "client_id does not match the assertion")
        client = self.clients.get(client_id)
        if client is None or not client.enabled or not client.asymmetric:
            raise OAuthError("invalid_client", _ASSERTION_REJECTED)
        jku = header.get("jku")
        if jku is not None and jku != client.jwks_url:
            raise OAuthError("invalid_client", "assertion jku does not match the registered JWKS URL")
        return client

    def _verification_key(self, client: ClientRegistration, kid: str, alg: str) -> VerificationKey:
        """The client's key ``kid`` from its JWKS, fit for ``alg``."""
        try:
            vkey = self._keys_for(client).get(kid)
        except UnknownKeyError:
            raise OAuthError("invalid_client", "assertion kid not in the client's JWKS") from None
        except KeySourceUnavailableError:
            raise OAuthError("invalid_client", "client JWKS unavailable") from None
        if not vkey.permits(alg):
            raise OAuthError("invalid_client", "assertion alg does not fit the key")
        return vkey

    def _verified_claims(self, assertion: str, vkey: VerificationKey, alg: str, client_id: str) -> dict[str, Any]:
        """The assertion's claims once its signature, audience (this token endpoint), issuer and expiry hold."""
        try:
            return jwt.decode(
                assertion,
                vkey.key,
                algorithms=[alg],
                audience=self.token_url,
                issuer=client_id,
                leeway=self.leeway,
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise OAuthError("invalid_client", "client assertion expired") from None
        except jwt.InvalidAudienceError:
            raise OAuthError(
                "invalid_client", f"client assertion aud must be the token endpoint URL {self.token_url}"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise OAuthError("invalid_client", f"client assertion lacks {exc.claim}") from None
        except jwt.PyJWTError:
            raise OAuthError("invalid_client", _ASSERTION_REJECTED) from None

    def _accept_once(self, client_id: str, claims: Mapping[str, Any]) -> None:
        """An assertion lives at most ``max_assertion_lifetime`` and its jti is used once (replay refused)."""
        now = time.time()
        exp = claims["exp"]
        if exp > now + self.max_assertion_lifetime + self.leeway:
            raise OAuthError("invalid_client", "client assertion exp is more than 5 minutes ahead")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > 255:
            raise OAuthError("invalid_client", "client assertion jti malformed")
        if not self.replay_store.remember(client_id, jti, int(exp) + self.leeway):
            raise OAuthError("invalid_client", "client assertion jti already used")

    def _keys_for(self, client: ClientRegistration) -> JWKSSource:
        if client.jwks is not None:
            return StaticJWKS(client.jwks)
        assert client.jwks_url is not None
        source = self._remote.get(client.jwks_url)
        if source is None:
            source = self._remote[client.jwks_url] = self.jwks_url_factory(client.jwks_url)
        return source


_ASSERTION_REJECTED = "client assertion rejected"


def _read_assertion(params: Mapping[str, str]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(assertion, header, claims) read without verifying: the JWT bearer type, a size within bounds, a JWT."""
    if params.get("client_assertion_type") != JWT_BEARER_ASSERTION_TYPE:
        raise OAuthError("invalid_request", f"client_assertion_type must be {JWT_BEARER_ASSERTION_TYPE}")
    assertion = params.get("client_assertion") or ""
    if not assertion or len(assertion) > MAX_ASSERTION_BYTES:
        raise OAuthError("invalid_request", "client_assertion missing or too large")
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise OAuthError("invalid_client", "client assertion malformed") from None
    return assertion, header, unverified


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def _parse_basic(authorization: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        raw_id, raw_secret = decoded.split(":", 1)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_client", "malformed Basic credentials", basic_auth=True) from None
    client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
    if not client_id:
        raise OAuthError("invalid_client", "malformed Basic credentials", basic_auth=True)
    return client_id, secret
