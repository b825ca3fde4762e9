"""Settings, discovery document and the Flask glue."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from flask import Flask, g, request

from service.security.flask_integration import (
    AuthenticationError,
    InsufficientScopeError,
    authenticate_request,
    bearer_token,
    check_scope,
    unauthorized_response,
    www_authenticate_header,
)
from service.security.keys import SigningKey
from service.security.settings import ConfigurationError, SecuritySettings
from service.security.smart_configuration import smart_configuration
from service.security.tokens import (
    MissingTokenError,
    TokenIssuer,
    TokenValidator,
    build_local_issuer,
    build_token_validator,
)
from tests.support.keys import JWKSServer

# -- settings


def test_development_defaults() -> None:
    s = SecuritySettings.from_env({})
    assert s.env == "development"
    assert (s.issuer, s.audience, s.signing_key_file) == ("kapfhir-dev", "kapfhir", "var/signing-key.pem")
    assert (s.leeway_seconds, s.clinic_claim) == (30, "kapfhir_clinic")
    s.validate_for_production()  # no-op in development


def test_from_env_reads_every_variable() -> None:
    s = SecuritySettings.from_env(
        {
            "KAPFHIR_ENV": "production",
            "KAPFHIR_AUTH_ISSUER": "https://idp.test/realms/kap",
            "KAPFHIR_AUTH_AUDIENCE": "https://kapfhir.test/fhir",
            "KAPFHIR_AUTH_JWKS_URL": "https://idp.test/realms/kap/protocol/openid-connect/certs",
            "KAPFHIR_AUTH_JWKS_FILE": "/etc/kapfhir/jwks.json",
            "KAPFHIR_AUTH_LEEWAY_SECONDS": "10",
            "KAPFHIR_CLINIC_CLAIM": "tenant",
            "KAPFHIR_SIGNING_KEY_FILE": "/etc/kapfhir/key.pem",
        }
    )
    assert s.production and s.leeway_seconds == 10 and s.clinic_claim == "tenant"
    assert s.jwks_url.startswith("https://") and s.jwks_file and s.signing_key_file
    s.validate_for_production()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAPFHIR_AUTH_AUDIENCE": "a", "KAPFHIR_AUTH_JWKS_URL": "https://i/jwks"}, "ISSUER"),
        ({"KAPFHIR_AUTH_ISSUER": "i", "KAPFHIR_AUTH_JWKS_URL": "https://i/jwks"}, "AUDIENCE"),
        ({"KAPFHIR_AUTH_ISSUER": "i", "KAPFHIR_AUTH_AUDIENCE": "a"}, "key source"),
        (
            {"KAPFHIR_AUTH_ISSUER": "i", "KAPFHIR_AUTH_AUDIENCE": "a", "KAPFHIR_AUTH_JWKS_URL": "http://idp/jwks"},
            "https",
        ),
    ],
)
def test_production_refuses_incomplete_config(env: dict[str, str], message: str) -> None:
    s = SecuritySettings.from_env({"KAPFHIR_ENV": "production", **env})
    with pytest.raises(ConfigurationError, match=message):
        s.validate_for_production()


@pytest.mark.parametrize(
    "env",
    [{"KAPFHIR_ENV": "staging"}, {"KAPFHIR_AUTH_LEEWAY_SECONDS": "x"}, {"KAPFHIR_AUTH_LEEWAY_SECONDS": "3600"}],
)
def test_bad_values(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        SecuritySettings.from_env(env)


def test_quick_start_path(tmp_path: Path) -> None:
    """First run creates the key; the local issuer's tokens pass the validator built from the same settings."""
    key_file = tmp_path / "var" / "signing-key.pem"
    settings = SecuritySettings.from_env({"KAPFHIR_SIGNING_KEY_FILE": str(key_file)})
    issuer = build_local_issuer(settings)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    validator = build_token_validator(settings, local_key=issuer.signing_key)
    token = issuer.issue(client_id="cli", clinic_id="demo", scope="system/*.cruds").access_token
    p = validator.validate(token)
    assert p.clinic_id == "demo" and p.scopes.allows("Patient", "d")
    assert build_local_issuer(settings).signing_key.kid == issuer.signing_key.kid  # same key on the next run


def test_validator_from_jwks_url(jwks_server: JWKSServer, es384_key: SigningKey) -> None:
    settings = SecuritySettings(
        issuer="https://idp.test", audience="kapfhir", jwks_url=jwks_server.url, signing_key_file=None
    )
    validator = build_token_validator(settings, timeout=2)
    token = TokenIssuer(es384_key, issuer="https://idp.test", audience="kapfhir").issue(
        client_id="c", clinic_id="k", scope="system/*.rs"
    )
    assert validator.validate(token.access_token).client_id == "c"
    assert jwks_server.hits == 1


def test_validator_needs_a_key_source() -> None:
    with pytest.raises(ValueError):
        build_token_validator(SecuritySettings(signing_key_file=None))


# -- discovery


def test_smart_configuration() -> None:
    doc = smart_configuration("https://kapfhir.test/", resource_types=["Observation"], issuer="https://kapfhir.test")
    assert doc["token_endpoint"] == "https://kapfhir.test/oauth2/token"
    assert doc["token_endpoint_auth_methods_supported"] == [
        "private_key_jwt",
        "client_secret_basic",
        "client_secret_post",
    ]
    assert doc["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert doc["grant_types_supported"] == ["client_credentials"]
    assert set(doc["capabilities"]) == {
        "client-confidential-asymmetric",
        "client-confidential-symmetric",
        "permission-v2",
        "permission-v1",
    }
    assert "system/*.cruds" in doc["scopes_supported"] and "system/Observation.rs" in doc["scopes_supported"]
    assert doc["jwks_uri"] == "https://kapfhir.test/.well-known/jwks.json"
    assert doc["issuer"] == "https://kapfhir.test"
    json.dumps(doc)
    assert "jwks_uri" not in smart_configuration("http://127.0.0.1:8000", jwks_path=None)
    with pytest.raises(ValueError):
        smart_configuration("kapfhir.test")


# -- Flask glue


def test_bearer_token_parsing() -> None:
    assert bearer_token({"Authorization": "Bearer abc.def.ghi"}) == "abc.def.ghi"
    assert bearer_token({"authorization": "bearer  abc"}) == "abc"
    for headers in ({}, {"Authorization": ""}, {"Authorization": "Basic dXNlcjpwdw=="}):
        with pytest.raises(MissingTokenError):
            bearer_token(headers)
    for value in ("Bearer", "Bearer ", "Bearer a b"):
        with pytest.raises(AuthenticationError) as info:
            bearer_token({"Authorization": value})
        assert info.value.error == "invalid_token"


def test_www_authenticate_header_values() -> None:
    assert www_authenticate_header(None) == 'Bearer realm="kapfhir"'
    assert www_authenticate_header(AuthenticationError("invalid_token", "token expired")) == (
        'Bearer error="invalid_token", error_description="token expired"'
    )


def test_check_scope() -> None:
    from service.security.scopes import ScopeSet
    from service.security.tokens import Principal

    p = Principal("c", "k", ScopeSet.parse("system/Observation.rs"), "j")
    check_scope(p, "GET", ["Observation"])
    with pytest.raises(InsufficientScopeError) as info:
        check_scope(p, "GET", ["Observation", "Encounter"], item=True)
    assert info.value.status == 403 and info.value.required_scopes == ["system/Encounter.r"]
    assert 'error="insufficient_scope"' in info.value.www_authenticate()


def test_flask_wiring(issuer: TokenIssuer, validator: TokenValidator) -> None:
    app = Flask(__name__)

    @app.before_request
    def _auth():
        try:
            g.principal = authenticate_request(request.headers, validator)
        except AuthenticationError as err:
            return unauthorized_response(err)
        return None

    @app.get("/whoami")
    def whoami():
        return {"client": g.principal.client_id, "clinic": g.principal.clinic_id}

    client = app.test_client()
    r = client.get("/whoami")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Bearer realm="kapfhir"'
    assert r.mimetype == "application/problem+json"
    r = client.get("/whoami", headers={"Authorization": "Bearer not-a-jwt"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    token = issuer.issue(client_id="cli", clinic_id="demo", scope="system/*.rs").access_token
    r = client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.get_json() == {"client": "cli", "clinic": "demo"}
