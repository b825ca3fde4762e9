from __future__ import annotations

import base64
import time
import uuid
from typing import Any
from urllib.parse import quote_plus

import jwt
import pytest

from service.security.client_auth import (
    JWT_BEARER_ASSERTION_TYPE,
    ClientRegistration,
    InMemoryClientStore,
    InMemoryReplayStore,
    OAuthError,
    TokenEndpoint,
    generate_client_secret,
    hash_client_secret,
    verify_client_secret,
)
from service.security.keys import SigningKey, generate_private_key, public_jwk
from service.security.tokens import TokenIssuer, TokenValidator
from tests.support.keys import TOKEN_URL, JWKSServer

SECRET = "s3cret:with&odd chars+"


def assertion(
    key: SigningKey,
    client_id: str,
    *,
    aud: str = TOKEN_URL,
    lifetime: int = 240,
    jti: str | None = None,
    alg: str | None = None,
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    now = int(time.time())
    body = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "exp": now + lifetime,
        "iat": now,
        "jti": jti or uuid.uuid4().hex,
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(
        body, key.private_key, algorithm=alg or key.alg, headers={"kid": key.kid, "typ": "JWT", **(headers or {})}
    )


def form(token: str, scope: str = "system/*.rs", **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": JWT_BEARER_ASSERTION_TYPE,
        "client_assertion": token,
        **extra,
    }


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@pytest.fixture(scope="module")
def secret_hash() -> str:
    return hash_client_secret(SECRET)


@pytest.fixture
def clients(rsa_key: SigningKey, es384_key: SigningKey, secret_hash: str) -> InMemoryClientStore:
    return InMemoryClientStore(
        [
            ClientRegistration("rs-client", "clinic-a", "system/*.rs system/Observation.c", jwks=rsa_key.public_jwks()),
            ClientRegistration(
                "es-client", "clinic-b", "system/*.cruds", jwks=es384_key.public_jwks(), name="EHR bridge"
            ),
            ClientRegistration(
                "secret-client", "clinic-a", "system/Patient.rs system/Observation.rs", secret_hash=secret_hash
            ),
        ]
    )


@pytest.fixture
def endpoint(clients: InMemoryClientStore, issuer: TokenIssuer) -> TokenEndpoint:
    return TokenEndpoint(clients=clients, issuer=issuer, token_url=TOKEN_URL, replay_store=InMemoryReplayStore())


def refused(endpoint: TokenEndpoint, data: dict[str, str], headers: dict[str, str] | None = None) -> OAuthError:
    with pytest.raises(OAuthError) as info:
        endpoint.handle(data, headers or {})
    err = info.value
    assert set(err.to_dict()) == {"error", "error_description"}
    assert err.headers()["Cache-Control"] == "no-store"
    return err


# -- private_key_jwt


@pytest.mark.parametrize(
    ("client_id", "key_fixture", "clinic"),
    [("rs-client", "rsa_key", "clinic-a"), ("es-client", "es384_key", "clinic-b")],
)
def test_private_key_jwt_accepted_and_token_usable(
    client_id: str, key_fixture: str, clinic: str, endpoint: TokenEndpoint, validator: TokenValidator, request: Any
) -> None:
    key: SigningKey = request.getfixturevalue(key_fixture)
    assert key.alg in ("RS384", "ES384")
    body = endpoint.handle(form(assertion(key, client_id), scope="system/Observation.rs"), {})
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "system/Observation.rs"
    principal = validator.validate(body["access_token"])
    assert (principal.client_id, principal.clinic_id) == (client_id, clinic)
    assert principal.scopes.allows("Observation", "r")
    assert not principal.scopes.allows("Observation", "c")


def test_respond_shapes(endpoint: TokenEndpoint, es384_key: SigningKey) -> None:
    status, body, headers = endpoint.respond(form(assertion(es384_key, "es-client")), {})
    assert status == 200 and headers["Cache-Control"] == "no-store" and "access_token" in body
    status, body, _ = endpoint.respond({"grant_type": "client_credentials"}, {})
    assert status == 401 and body["error"] == "invalid_client"


def test_replayed_jti_refused(endpoint: TokenEndpoint, es384_key: SigningKey) -> None:
    token = assertion(es384_key, "es-client", jti="once")
    endpoint.handle(form(token), {})
    err = refused(endpoint, form(token))
    assert (err.error, err.status) == ("invalid_client", 401)
    assert "jti" in err.description
    fresh = assertion(es384_key, "es-client", jti="once")  # same jti, new assertion: still a replay
    assert "jti" in refused(endpoint, form(fresh)).description


def test_exp_more_than_five_minutes_ahead_refused(endpoint: TokenEndpoint, es384_key: SigningKey) -> None:
    err = refused(endpoint, form(assertion(es384_key, "es-client", lifetime=600)))
    assert err.error == "invalid_client" and "5 minutes" in err.description
    endpoint.handle(form(assertion(es384_key, "es-client", lifetime=300)), {})


def test_expired_or_exp_missing_refused(endpoint: TokenEndpoint, es384_key: SigningKey) -> None:
    assert "expired" in refused(endpoint, form(assertion(es384_key, "es-client", lifetime=-120))).description
    now = int(time.time())
    no_exp = jwt.encode(
        {"iss": "es-client", "sub": "es-client", "aud": TOKEN_URL, "jti": "x", "iat": now},
        es384_key.private_key,
        algorithm="ES384",
        headers={"kid": es384_key.kid},
    )
    assert "exp" in refused(endpoint, form(no_exp)).description


def test_wrong_aud_refused(endpoint: TokenEndpoint, es384_key: SigningKey) -> None:
    err = refused(endpoint, form(assertion(es384_key, "es-client", aud="https://kapfhir.test/fhir")))
    assert err.error == "invalid_client" and "aud" in err.description


def test_unknown_client_refused(endpoint: TokenEndpoint, es384_key: SigningKey) -> None:
    err = refused(endpoint, form(assertion(es384_key, "nobody")))
    assert (err.error, err.status) == ("invalid_client", 401)


def test_iss_sub_mismatch_refused(endpoint: TokenEndpoint, es384_key: SigningKey) -> None:
    assert "sub" in refused(endpoint, form(assertion(es384_key, "es-client", sub="rs-client"))).description


def test_signed_by_another_clients_key_refused(
    endpoint: TokenEndpoint, rsa_key: SigningKey, es384_key: SigningKey
) -> None:
    # es-client's JWKS does not hold the RSA key
    err = refused(endpoint, form(assertion(rsa_key, "es-client")))
    assert "kid" in err.description
    # right kid, wrong key
    forged = jwt.encode(
        {"iss": "es-client", "sub": "es-client", "aud": TOKEN_URL, "exp": int(time.time()) + 60, "jti": "f"},
        generate_private_key("ES384"),
        algorithm="ES384",
        headers={"kid": es384_key.kid},
    )
    assert refused(endpoint, form(forged)).error == "invalid_client"


@pytest.mark.parametrize("alg", ["RS256", "HS256"])
def test_assertion_algorithms_limited_to_rs384_es384(alg: str, endpoint: TokenEndpoint, rsa_key: SigningKey) -> None:
    if alg == "HS256":
        token = jwt.encode(
            {"iss": "rs-client", "sub": "rs-client"}, "k" * 32, algorithm="HS256", headers={"kid": rsa_key.kid}
        )
    else:
        token = assertion(rsa_key, "rs-client", alg="RS256")
    assert "alg" in refused(endpoint, form(token)).description


def test_wrong_assertion_type_refused(endpoint: TokenEndpoint, es384_key: SigningKey) -> None:
    data = form(assertion(es384_key, "es-client"), client_assertion_type="urn:other")
    assert refused(endpoint, data).error == "invalid_request"


def test_jku_must_match_registration(endpoint: TokenEndpoint, es384_key: SigningKey) -> None:
    token = assertion(es384_key, "es-client", headers={"jku": "https://attacker.test/jwks.json"})
    assert "jku" in refused(endpoint, form(token)).description


def test_secret_client_cannot_use_assertion(endpoint: TokenEndpoint, es384_key: SigningKey) -> None:
    assert refused(endpoint, form(assertion(es384_key, "secret-client"))).error == "invalid_client"


def test_jwks_url_client(
    jwks_server: JWKSServer, clients: InMemoryClientStore, issuer: TokenIssuer, es384_key: SigningKey
) -> None:
    clients.add(ClientRegistration("url-client", "clinic-c", "system/*.rs", jwks_url=jwks_server.url))
    endpoint = TokenEndpoint(clients=clients, issuer=issuer, token_url=TOKEN_URL)
    body = endpoint.handle(form(assertion(es384_key, "url-client", headers={"jku": jwks_server.url})), {})
    assert body["scope"] == "system/*.rs"
    endpoint.handle(form(assertion(es384_key, "url-client")), {})
    assert jwks_server.hits == 1  # cached between requests


# -- client secrets


def test_secret_hashing() -> None:
    stored = hash_client_secret("abc")
    assert stored.startswith("scrypt$") and "abc" not in stored
    assert stored != hash_client_secret("abc")  # salted
    assert verify_client_secret("abc", stored)
    assert not verify_client_secret("abd", stored)
    assert not verify_client_secret("abc", "garbage")
    assert not verify_client_secret("abc", "pbkdf2$1$1$1$AA==$AA==")
    assert len(generate_client_secret()) >= 43


def test_client_secret_basic_accepted(endpoint: TokenEndpoint, validator: TokenValidator) -> None:
    body = endpoint.handle({"grant_type": "client_credentials", "scope": "system/*.rs"}, basic("secret-client", SECRET))
    assert body["scope"] == "system/Patient.rs system/Observation.rs"
    assert validator.validate(body["access_token"]).clinic_id == "clinic-a"


def test_client_secret_post_accepted(endpoint: TokenEndpoint) -> None:
    data = {
        "grant_type": "client_credentials",
        "scope": "system/Patient.read",
        "client_id": "secret-client",
        "client_secret": SECRET,
    }
    assert endpoint.handle(data, {})["scope"] == "system/Patient.rs"


def test_wrong_secret_refused(endpoint: TokenEndpoint) -> None:
    err = refused(
        endpoint, {"grant_type": "client_credentials", "scope": "system/*.rs"}, basic("secret-client", "wrong")
    )
    assert (err.error, err.status) == ("invalid_client", 401)
    assert err.headers()["WWW-Authenticate"].startswith("Basic")
    data = {
        "grant_type": "client_credentials",
        "scope": "system/*.rs",
        "client_id": "secret-client",
        "client_secret": "wrong",
    }
    err = refused(endpoint, data)
    assert err.error == "invalid_client" and "WWW-Authenticate" not in err.headers()


def test_secret_for_unknown_or_asymmetric_client_refused(endpoint: TokenEndpoint) -> None:
    for client_id in ("nobody", "es-client"):
        err = refused(endpoint, {"grant_type": "client_credentials", "scope": "system/*.rs"}, basic(client_id, SECRET))
        assert err.error == "invalid_client"


def test_malformed_basic_refused(endpoint: TokenEndpoint) -> None:
    err = refused(
        endpoint, {"grant_type": "client_credentials", "scope": "system/*.rs"}, {"Authorization": "Basic !!!"}
    )
    assert err.error == "invalid_client"


def test_two_auth_methods_refused(endpoint: TokenEndpoint, es384_key: SigningKey) -> None:
    data = form(assertion(es384_key, "es-client"), client_secret="x", client_id="es-client")
    assert refused(endpoint, data).error == "invalid_request"


# -- grant and scope


def test_grant_type_checked(endpoint: TokenEndpoint) -> None:
    assert refused(endpoint, {"scope": "system/*.rs"}).error == "invalid_request"
    assert refused(endpoint, {"grant_type": "password"}).error == "unsupported_grant_type"


def test_scope_intersection_and_invalid_scope(
    endpoint: TokenEndpoint, es384_key: SigningKey, rsa_key: SigningKey
) -> None:
    body = endpoint.handle(form(assertion(rsa_key, "rs-client"), scope="system/*.cruds openid"), {})
    assert body["scope"] == "system/*.rs system/Observation.c"
    err = refused(endpoint, form(assertion(rsa_key, "rs-client"), scope="system/Patient.d user/*.cruds"))
    assert (err.error, err.status) == ("invalid_scope", 400)
    assert refused(endpoint, form(assertion(es384_key, "es-client"), scope="")).error == "invalid_scope"
    assert (
        refused(endpoint, form(assertion(es384_key, "es-client"), scope="system/Patient.xyz")).error == "invalid_scope"
    )


def test_repeated_parameter_refused(endpoint: TokenEndpoint, es384_key: SigningKey) -> None:
    from werkzeug.datastructures import MultiDict

    data = MultiDict([*form(assertion(es384_key, "es-client")).items(), ("scope", "system/*.cruds")])
    assert refused(endpoint, data).error == "invalid_request"


def test_registration_validation(es384_key: SigningKey) -> None:
    with pytest.raises(ValueError):
        ClientRegistration("c", "k", "system/*.rs")  # no credential
    with pytest.raises(ValueError):
        ClientRegistration("c", "k", "system/*.rs", jwks=es384_key.public_jwks(), secret_hash="x")
    with pytest.raises(ValueError):
        ClientRegistration("c", "k", "system/*.rs", jwks_url="http://example.org/jwks.json")  # http off loopback
    with pytest.raises(ValueError):
        ClientRegistration("c", "k", "system/Patient.bad", jwks=es384_key.public_jwks())
    ok = ClientRegistration("c", "k", "system/*.rs", jwks={"keys": [public_jwk(es384_key.private_key)]})
    assert ok.asymmetric


def test_disabled_client_refused(clients: InMemoryClientStore, issuer: TokenIssuer, es384_key: SigningKey) -> None:
    clients.add(ClientRegistration("off", "k", "system/*.rs", jwks=es384_key.public_jwks(), enabled=False))
    endpoint = TokenEndpoint(clients=clients, issuer=issuer, token_url=TOKEN_URL)
    assert refused(endpoint, form(assertion(es384_key, "off"))).error == "invalid_client"


def test_replay_store_expiry() -> None:
    now = [1000.0]
    store = InMemoryReplayStore(clock=lambda: now[0])
    assert store.remember("c", "j", 1100)
    assert not store.remember("c", "j", 1100)
    assert store.remember("other", "j", 1100)  # per client
    now[0] = 1200
    assert store.remember("c", "j", 1300)  # expired entries may be reused
