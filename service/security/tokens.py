"""Access tokens: issuing our own (embedded issuer) and validating bearer tokens (ours or an external IdP's).

Validation uses PyJWT with an explicit algorithm allow-list (RS256, RS384, ES256, ES384): ``none`` and every
HMAC algorithm are refused before any key is looked up, and the key comes from a JWKS by ``kid``, never
from the token. Every failure raises :class:`AuthenticationError`, whose :meth:`~AuthenticationError.
www_authenticate` builds the RFC 6750 header. Descriptions are fixed phrases: they never echo token content.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from service.domain.limits import MAX_CLIENT_ID, MAX_CLINIC_ID, bad_character
from service.security.keys import (
    ASYMMETRIC_ALGORITHMS,
    CompositeJWKS,
    JWKSSource,
    SigningKey,
    UnknownKeyError,
    VerificationKey,
    ensure_local_signing_key,
    jwks_source,
)
from service.security.scopes import ScopeSet
from service.security.settings import SecuritySettings

DEFAULT_CLINIC_CLAIM = "kapfhir_clinic"
DEFAULT_REALM = "kapfhir"
DEFAULT_LEEWAY_SECONDS = 30
DEFAULT_TOKEN_LIFETIME = 300
MAX_TOKEN_BYTES = 16_384
VERIFIED_CACHE_SIZE = 4096
ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 - RFC 9068 media type
DEFAULT_REQUIRED_CLAIMS = ("iss", "aud", "exp", "sub")
CLIENT_ID_CLAIMS = ("client_id", "azp", "sub")  # RFC 9068 client_id; Keycloak/Okta azp; our sub


def _header_safe(text: str) -> str:
    """RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E (no quote, no backslash)."""
    return "".join(c if (0x20 <= ord(c) <= 0x7E and c not in '"\\') else "?" for c in text)[:200]


class AuthenticationError(Exception):
    """The request has no usable bearer token. ``error=None`` means no credentials at all (RFC 6750 §3.1)."""

    status = 401

    def __init__(
        self, error: str | None = "invalid_token", description: str = "", *, realm: str = DEFAULT_REALM
    ) -> None:
        super().__init__(description or error or "authentication required")
        self.error = error
        self.description = description
        self.realm = realm

    def www_authenticate(self) -> str:
        """The ``WWW-Authenticate`` header value.

        No token: ``Bearer realm="kapfhir"``; otherwise
        ``Bearer error="invalid_token", error_description="..."``.
        """
        if self.error is None:
            return f'Bearer realm="{_header_safe(self.realm)}"'
        value = f'Bearer error="{_header_safe(self.error)}"'
        if self.description:
            value += f', error_description="{_header_safe(self.description)}"'
        return value

    def to_dict(self) -> dict[str, str]:
        body = {"error": self.error or "unauthorized"}
        if self.description:
            body["error_description"] = self.description
        return body


class MissingTokenError(AuthenticationError):
    """No ``Authorization: Bearer`` credentials were sent."""

    def __init__(self, *, realm: str = DEFAULT_REALM) -> None:
        super().__init__(None, "", realm=realm)


class InsufficientScopeError(Exception):
    """A valid token whose scopes do not cover the request (403; RFC 6750 ``insufficient_scope``)."""

    status = 403
    error = "insufficient_scope"

    def __init__(self, required_scopes: Sequence[str], description: str = "") -> None:
        super().__init__(description or "token scope does not cover this request")
        self.required_scopes = list(required_scopes)
        self.description = description or "token scope does not cover this request"

    def www_authenticate(self) -> str:
        value = f'Bearer error="insufficient_scope", error_description="{_header_safe(self.description)}"'
        if self.required_scopes:
            value += f', scope="{_header_safe(" ".join(self.required_scopes))}"'
        return value


@dataclass(frozen=True)
class Principal:
    """Who is calling: the OAuth client, its clinic (tenant) and what it may do."""

    client_id: str
    clinic_id: str
    scopes: ScopeSet
    token_id: str | None = None
    expires_at: int | None = None


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str
    token_id: str
    expires_at: int


class TokenIssuer:
    """Signs short-lived access tokens with the service's own key (the embedded issuer)."""

    def __init__(
        self,
        signing_key: SigningKey,
        *,
        issuer: str,
        audience: str,
        clinic_claim: str = DEFAULT_CLINIC_CLAIM,
        lifetime: int = DEFAULT_TOKEN_LIFETIME,
    ) -> None:
        if signing_key.alg not in ASYMMETRIC_ALGORITHMS:
            raise ValueError(f"signing algorithm {signing_key.alg} not allowed")
        self.signing_key = signing_key
        self.issuer = issuer
        self.audience = audience
        self.clinic_claim = clinic_claim
        self.lifetime = lifetime

    def issue(
        self,
        *,
        client_id: str,
        clinic_id: str,
        scope: str | ScopeSet | Iterable[str],
        lifetime: int | None = None,
        now: int | None = None,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> IssuedToken:
        """A signed JWT access token. ``now`` (epoch seconds) is for tests and back-dated tokens."""
        if not client_id or not clinic_id:
            raise ValueError("client_id and clinic_id are required")
        lifetime = self.lifetime if lifetime is None else int(lifetime)
        if lifetime <= 0:
            raise ValueError("lifetime must be positive")
        if isinstance(scope, ScopeSet):
            scope_text = scope.to_string()
        elif isinstance(scope, str):
            scope_text = " ".join(scope.split())
        else:
            scope_text = " ".join(scope)
        iat = int(time.time()) if now is None else int(now)
        jti = uuid.uuid4().hex
        claims: dict[str, Any] = dict(extra_claims or {})
        claims.update(
            iss=self.issuer,
            aud=self.audience,
            sub=client_id,
            client_id=client_id,
            scope=scope_text,
            iat=iat,
            nbf=iat,
            exp=iat + lifetime,
            jti=jti,
        )
        claims[self.clinic_claim] = clinic_id
        token = jwt.encode(
            claims,
            self.signing_key.private_key,
            algorithm=self.signing_key.alg,
            headers={"kid": self.signing_key.kid, "typ": ACCESS_TOKEN_TYP},
        )
        return IssuedToken(token, lifetime, scope_text, jti, iat + lifetime)


_PYJWT_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "token audience not accepted"),
    (jwt.InvalidIssuerError, "token issuer not accepted"),
    (jwt.InvalidSignatureError, "token signature invalid"),
    (jwt.InvalidIssuedAtError, "token iat invalid"),
    (jwt.InvalidAlgorithmError, "token algorithm not allowed"),
    (jwt.DecodeError, "token malformed"),
)


class TokenValidator:
    """Validates bearer JWTs and returns a :class:`Principal`.

    Checks: size, compact form, ``alg`` in ``algorithms`` (subset of RS256/RS384/ES256/ES384), ``kid`` present
    and known to ``jwks``, key fits ``alg``, signature, ``iss`` (one of ``issuer``), ``aud`` (one of
    ``audience``), ``exp``/``nbf``/``iat`` with ``leeway`` seconds, ``required_claims``, the clinic claim (a
    non-empty string) and a client id (``client_id``, else ``azp``, else ``sub``). Scopes come from ``scope``
    (space-separated) or ``scp`` (list).

    :class:`~service.security.keys.KeySourceUnavailableError` is *not* turned into a 401: the lead should answer 503.
    """

    def __init__(
        self,
        *,
        issuer: str | Sequence[str],
        audience: str | Sequence[str],
        jwks: JWKSSource,
        clinic_claim: str = DEFAULT_CLINIC_CLAIM,
        leeway: float = DEFAULT_LEEWAY_SECONDS,
        algorithms: Sequence[str] = ASYMMETRIC_ALGORITHMS,
        required_claims: Sequence[str] = DEFAULT_REQUIRED_CLAIMS,
        realm: str = DEFAULT_REALM,
    ) -> None:
        bad = [a for a in algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if bad or not algorithms:
            raise ValueError(f"algorithms must be a non-empty subset of {ASYMMETRIC_ALGORITHMS}, got {bad}")
        if not issuer or not audience:
            raise ValueError("issuer and audience are required")
        self.issuers = [issuer] if isinstance(issuer, str) else list(issuer)
        self.audiences = [audience] if isinstance(audience, str) else list(audience)
        self.jwks = jwks
        self.clinic_claim = clinic_claim
        self.leeway = leeway
        self.algorithms = tuple(algorithms)
        self.required_claims = list(dict.fromkeys([*required_claims, "iss", "aud", "exp"]))
        self.realm = realm
        self._verified: dict[bytes, Principal] = {}

    def _fail(self, description: str) -> AuthenticationError:
        return AuthenticationError("invalid_token", description, realm=self.realm)

    def validate(self, token: str) -> Principal:
        """Checks a token; a token already verified in this process is taken from a small cache until it
        expires (its signature cannot change), so a client's requests do not each pay for a signature check."""
        if not token or not isinstance(token, str):
            raise MissingTokenError(realm=self.realm)
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._verified.get(digest)
        if cached is not None:
            if cached.expires_at is None or time.time() < cached.expires_at + self.leeway:
                return cached
            self._verified.pop(digest, None)
        principal = self._validate(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()  # bounded: a burst of new tokens starts the cache afresh
        self._verified[digest] = principal
        return principal

    def _validate(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_BYTES:
            raise self._fail("token too large")
        vkey, alg = self._signing_key(token)
        claims = self._verified_claims(token, vkey, alg)
        for name in ("exp", "nbf", "iat"):  # PyJWT reads "123" as 123; RFC 7519 NumericDate is a JSON number
            value = claims.get(name)
            if name in claims and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            ):
                raise self._fail(f"token {name} is not a number")
        return self._principal(claims)

    def _signing_key(self, token: str) -> tuple[VerificationKey, str]:
        """(the trusted key the token header names by kid, the header's alg): an allowed algorithm that fits it."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise self._fail("token malformed") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise self._fail("token algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise self._fail("token has no kid")
        try:
            vkey = self.jwks.get(kid)
        except UnknownKeyError:
            raise self._fail("token signing key unknown") from None
        if not vkey.permits(alg):
            raise self._fail("token algorithm does not fit its key")
        return vkey, alg

    def _verified_claims(self, token: str, vkey: VerificationKey, alg: str) -> dict[str, Any]:
        """The claims once signature, audience, issuer, time claims and the required claims hold."""
        try:
            return jwt.decode(
                token,
                vkey.key,
                algorithms=[alg],
                audience=self.audiences,
                issuer=self.issuers,
                leeway=self.leeway,
                options={"require": self.required_claims, "verify_signature": True},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise self._fail(f"token lacks claim {exc.claim}") from None
        except jwt.PyJWTError as exc:
            for cls, text in _PYJWT_ERRORS:
                if isinstance(exc, cls):
                    raise self._fail(text) from None
            raise self._fail("token invalid") from None

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        clinic = self._clinic_id(claims)
        client_id = self._client_id(claims)
        scope = claims.get("scope", claims.get("scp"))
        if scope is not None and not isinstance(scope, (str, list)):
            raise self._fail("token scope malformed")
        jti = claims.get("jti")
        exp = claims.get("exp")
        return Principal(
            client_id=client_id,
            clinic_id=clinic,
            scopes=ScopeSet.parse(scope),
            token_id=jti if isinstance(jti, str) else None,
            expires_at=int(exp),
        )

    def _clinic_id(self, claims: Mapping[str, Any]) -> str:
        """The clinic claim as an id (a number is read as its digits)."""
        clinic = claims.get(self.clinic_claim)
        if isinstance(clinic, int) and not isinstance(clinic, bool):
            clinic = str(clinic)
        if not isinstance(clinic, str) or not clinic.strip():
            raise self._fail("token lacks clinic claim")
        if len(clinic) > MAX_CLINIC_ID or bad_character(clinic):
            raise self._fail(f"token clinic claim is not an id (at most {MAX_CLINIC_ID} characters)")
        return clinic

    def _client_id(self, claims: Mapping[str, Any]) -> str:
        """The first non-empty client id claim (CLIENT_ID_CLAIMS, in order) as an id."""
        client_id = next((claims[c] for c in CLIENT_ID_CLAIMS if isinstance(claims.get(c), str) and claims[c]), None)
        if client_id is None:
            raise self._fail("token lacks client id")
        if len(client_id) > MAX_CLIENT_ID or bad_character(client_id):
            raise self._fail(f"token client id is not an id (at most {MAX_CLIENT_ID} characters)")
        return client_id


# ------------------------------------------------------------------------------------------ from settings


def build_token_validator(
    settings: SecuritySettings, *, local_key: SigningKey | None = None, **remote: Any
) -> TokenValidator:
    """A validator trusting the external JWKS (URL and/or file) and, if given, our own signing key."""
    sources: list[JWKSSource] = []
    if local_key is not None:
        sources.append(local_key.jwks_source())
    if settings.jwks_url or settings.jwks_file:
        sources.append(jwks_source(url=settings.jwks_url, file=settings.jwks_file, **remote))
    if not sources:
        raise ValueError("no key source: set KAPFHIR_AUTH_JWKS_URL, KAPFHIR_AUTH_JWKS_FILE or a signing key")
    return TokenValidator(
        issuer=settings.issuer,
        audience=settings.audience,
        jwks=sources[0] if len(sources) == 1 else CompositeJWKS(sources),
        clinic_claim=settings.clinic_claim,
        leeway=settings.leeway_seconds,
    )


def build_local_issuer(settings: SecuritySettings, *, lifetime: int = DEFAULT_TOKEN_LIFETIME) -> TokenIssuer:
    """The embedded issuer: loads (or on first run creates) ``settings.signing_key_file``."""
    if not settings.signing_key_file:
        raise ValueError("KAPFHIR_SIGNING_KEY_FILE is not set")
    key = ensure_local_signing_key(settings.signing_key_file)
    return TokenIssuer(
        key,
        issuer=settings.issuer,
        audience=settings.audience,
        clinic_claim=settings.clinic_claim,
        lifetime=lifetime,
    )
