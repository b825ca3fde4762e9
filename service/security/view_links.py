"""Short-lived signed links to the HTML pages (the episode in pictures, the clinic overview).

A link is an HS256 JWT in the ``token`` query parameter: audience ``kapfhir-view``, subject the page it opens
(``episode:<id>`` or ``outcomes``), the clinic, the client that asked for it, and an expiry 5 minutes ahead. It
opens one page of one clinic and nothing else; a browser can open it without a bearer header.

The key: ``KAPFHIR_VIEW_LINK_SECRET`` (at least 32 characters, the same in every process), else one derived from
the embedded issuer's signing key file (SHA-256 over a label and the key file's bytes), which every gunicorn worker
reads alike. Without either (production with an external identity provider and no secret), no link is issued.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt

AUDIENCE = "kapfhir-view"
LIFETIME = timedelta(minutes=5)
_ALGORITHM = "HS256"


class ViewLinkUnavailableError(RuntimeError):
    """No key to sign links with."""


class InvalidViewLinkError(Exception):
    """The link is expired, forged, or for another page. ``claims`` holds what could be read without trusting it."""

    def __init__(self, reason: str, claims: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.claims = claims or {}


@dataclass(frozen=True)
class ViewGrant:
    page: str  # episode:<id> | outcomes
    clinic_id: str
    client_id: str
    expires_at: datetime
    period: tuple[str, str] | None = None  # the overview's from/to (ISO dates)


def signing_secret(signing_key_file: str | None) -> bytes:
    configured = os.environ.get("KAPFHIR_VIEW_LINK_SECRET")
    if configured:
        if len(configured) < 32:
            raise ViewLinkUnavailableError("KAPFHIR_VIEW_LINK_SECRET must have at least 32 characters")
        return configured.encode()
    if signing_key_file and Path(signing_key_file).is_file():
        return hashlib.sha256(b"kapfhir view link\0" + Path(signing_key_file).read_bytes()).digest()
    raise ViewLinkUnavailableError("set KAPFHIR_VIEW_LINK_SECRET to issue view links")


def issue(
    secret: bytes, grant_page: str, *, clinic_id: str, client_id: str, now: datetime, **extra: str
) -> tuple[str, datetime]:
    expires = datetime.fromtimestamp(int((now + LIFETIME).timestamp()), UTC)  # what the exp claim says
    claims = {
        "aud": AUDIENCE,
        "sub": grant_page,
        "clinic": clinic_id,
        "client": client_id,
        "iat": int(now.timestamp()),
        "exp": int(expires.timestamp()),
        "jti": str(uuid.uuid4()),
        **extra,
    }
    return jwt.encode(claims, secret, algorithm=_ALGORITHM), expires


def verify(secret: bytes, token: str | None, page: str, *, now: datetime | None = None) -> ViewGrant:
    if not token:
        raise InvalidViewLinkError("no token")
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        unverified = {}
    unverified = unverified if isinstance(unverified, dict) else {}
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[_ALGORITHM],
            audience=AUDIENCE,
            options={"require": ["exp", "sub", "aud"]},
            leeway=0,
        )
    except jwt.ExpiredSignatureError:
        raise InvalidViewLinkError("expired", unverified) from None
    except jwt.PyJWTError:
        raise InvalidViewLinkError("invalid", {}) from None  # forged: nothing in it can be believed
    if now is not None and claims["exp"] <= int(now.timestamp()):
        raise InvalidViewLinkError("expired", claims)
    if claims.get("sub") != page or not isinstance(claims.get("clinic"), str):
        raise InvalidViewLinkError("for another page", claims)
    period = (claims["from"], claims["to"]) if "from" in claims and "to" in claims else None
    return ViewGrant(
        page=claims["sub"],
        clinic_id=claims["clinic"],
        client_id=str(claims.get("client", "")),
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        period=period,
    )
