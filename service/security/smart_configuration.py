"""``/.well-known/smart-configuration`` (SMART App Launch 2.2.0 discovery) for the embedded issuer."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from service.security.client_auth import ASSERTION_ALGORITHMS

TOKEN_PATH = "/oauth2/token"  # noqa: S105 - a URL path
JWKS_PATH = "/.well-known/jwks.json"
DEFAULT_SCOPES = (
    "system/*.cruds",
    "system/*.rs",
    "system/*.read",
    "system/*.write",
    "user/*.cruds",
    "user/*.rs",
)
CAPABILITIES = (
    "client-confidential-asymmetric",
    "client-confidential-symmetric",
    "permission-v2",
    "permission-v1",
)


def smart_configuration(
    base_url: str,
    *,
    token_path: str = TOKEN_PATH,
    jwks_path: str | None = JWKS_PATH,
    issuer: str | None = None,
    resource_types: Iterable[str] = (),
    scopes_supported: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The discovery document for ``base_url`` (the service root, e.g. ``https://kapfhir.example.org``).

    ``jwks_path`` (the public JWKS of our signing key) is listed as ``jwks_uri``; pass ``None`` when the service
    only trusts an external IdP. ``resource_types`` adds ``system/<Type>.rs`` and ``system/<Type>.cruds`` to
    ``scopes_supported``; ``scopes_supported`` replaces the default list altogether.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("base_url must be an absolute http(s) URL without query or fragment")
    base = base_url.rstrip("/")
    scopes = list(DEFAULT_SCOPES if scopes_supported is None else scopes_supported)
    for t in resource_types:
        scopes += [f"system/{t}.rs", f"system/{t}.cruds"]
    doc: dict[str, Any] = {
        "token_endpoint": base + token_path,
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "client_secret_post"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": list(dict.fromkeys(scopes)),
        "response_types_supported": ["token"],
        "capabilities": list(CAPABILITIES),
    }
    if issuer:
        doc["issuer"] = issuer
    if jwks_path:
        doc["jwks_uri"] = base + jwks_path
    return doc
