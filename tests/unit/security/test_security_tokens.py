from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import jwt
import pytest

from service.security.keys import FileJWKS, SigningKey, StaticJWKS, jwks_for
from service.security.scopes import ScopeSet
from service.security.tokens import (
    AuthenticationError,
    MissingTokenError,
    Principal,
    TokenIssuer,
    TokenValidator,
)
from tests.support.keys import AUDIENCE, ISSUER


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "client-a",
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": "j1",
        "scope": "system/*.rs",
        "kapfhir_clinic": "clinic-a",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(key: SigningKey, claims: dict[str, Any], *, alg: str | None = None, kid: str | None = None) -> str:
    return jwt.encode(claims, key.private_key, algorithm=alg or key.alg, headers={"kid": kid or key.kid})


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _invalid(validator: TokenValidator, token: str) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as info:
        validator.validate(token)
    err = info.value
    assert err.status == 401
    assert err.error == "invalid_token"
    assert err.www_authenticate().startswith('Bearer error="invalid_token", error_description="')
    return err


def test_issued_token_validates(issuer: TokenIssuer, validator: TokenValidator) -> None:
    issued = issuer.issue(client_id="client-a", clinic_id="clinic-a", scope="system/Observation.rs system/Patient.r")
    principal = validator.validate(issued.access_token)
    assert principal == Principal(
        client_id="client-a",
        clinic_id="clinic-a",
        scopes=ScopeSet.parse("system/Observation.rs system/Patient.r"),
        token_id=issued.token_id,
        expires_at=issued.expires_at,
    )
    assert principal.scopes.allows("Observation", "s")
    assert issued.expires_in == 300
    header = jwt.get_unverified_header(issued.access_token)
    assert header["alg"] == "ES384" and header["kid"] == issuer.signing_key.kid and header["typ"] == "at+jwt"
    claims = jwt.decode(issued.access_token, options={"verify_signature": False})
    assert {"iss", "aud", "sub", "kapfhir_clinic", "scope", "iat", "nbf", "exp", "jti"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 300


@pytest.mark.parametrize("alg", ["RS256", "RS384", "ES256", "ES384"])
def test_all_allowed_algorithms(alg: str, rsa_key: SigningKey, es256_key: SigningKey, es384_key: SigningKey) -> None:
    key = {"RS256": rsa_key, "RS384": rsa_key, "ES256": es256_key, "ES384": es384_key}[alg]
    jwks = StaticJWKS(jwks_for([_jwk_without_alg(key)]))
    v = TokenValidator(issuer=ISSUER, audience=AUDIENCE, jwks=jwks)
    assert v.validate(_sign(key, _claims(), alg=alg)).clinic_id == "clinic-a"


def _jwk_without_alg(key: SigningKey) -> dict[str, str]:
    jwk = key.public_jwk()
    jwk.pop("alg")  # like many IdPs: the same RSA key may then verify RS256 and RS384
    return jwk


def test_no_token(validator: TokenValidator) -> None:
    with pytest.raises(MissingTokenError) as info:
        validator.validate("")
    assert info.value.www_authenticate() == 'Bearer realm="kapfhir"'
    assert info.value.status == 401


def test_bad_signature(validator: TokenValidator, es384_key: SigningKey, other_es384_key: SigningKey) -> None:
    forged = _sign(other_es384_key, _claims(), kid=es384_key.kid)  # right kid, wrong key
    assert "signature" in _invalid(validator, forged).description
    good = _sign(es384_key, _claims())
    head, _payload, sig = good.split(".")
    tampered = ".".join([head, _b64(_claims(kapfhir_clinic="clinic-b")), sig])
    _invalid(validator, tampered)


def test_expired(issuer: TokenIssuer, validator: TokenValidator) -> None:
    old = issuer.issue(client_id="c", clinic_id="k", scope="system/*.rs", now=int(time.time()) - 1000)
    assert _invalid(validator, old.access_token).description == "token expired"


def test_leeway(issuer: TokenIssuer, validator: TokenValidator, es384_key: SigningKey) -> None:
    just_expired = issuer.issue(client_id="c", clinic_id="k", scope="system/*.rs", now=int(time.time()) - 310)
    assert validator.validate(just_expired.access_token).client_id == "c"  # 10 s late, 30 s leeway
    strict = TokenValidator(issuer=ISSUER, audience=AUDIENCE, jwks=StaticJWKS(es384_key.public_jwks()), leeway=0)
    _invalid(strict, just_expired.access_token)


def test_not_yet_valid(issuer: TokenIssuer, validator: TokenValidator, es384_key: SigningKey) -> None:
    future = issuer.issue(client_id="c", clinic_id="k", scope="system/*.rs", now=int(time.time()) + 600)
    assert _invalid(validator, future.access_token).description == "token not yet valid"
    now = int(time.time())
    nbf_only = _sign(es384_key, _claims(nbf=now + 600, iat=None))
    assert _invalid(validator, nbf_only).description == "token not yet valid"


def test_wrong_audience(es384_key: SigningKey, validator: TokenValidator) -> None:
    other = TokenIssuer(es384_key, issuer=ISSUER, audience="https://elsewhere.test/fhir")
    token = other.issue(client_id="c", clinic_id="k", scope="system/*.rs").access_token
    assert "audience" in _invalid(validator, token).description


def test_wrong_issuer(es384_key: SigningKey, validator: TokenValidator) -> None:
    other = TokenIssuer(es384_key, issuer="https://evil.test", audience=AUDIENCE)
    token = other.issue(client_id="c", clinic_id="k", scope="system/*.rs").access_token
    assert "issuer" in _invalid(validator, token).description


@pytest.mark.parametrize("clinic", [None, "", "  ", ["a"], True])
def test_missing_or_bad_clinic_claim(clinic: Any, validator: TokenValidator, es384_key: SigningKey) -> None:
    claims = _claims()
    if clinic is None:
        del claims["kapfhir_clinic"]
    else:
        claims["kapfhir_clinic"] = clinic
    assert "clinic" in _invalid(validator, _sign(es384_key, claims)).description


def test_configurable_clinic_claim(es384_key: SigningKey) -> None:
    v = TokenValidator(
        issuer=ISSUER, audience=AUDIENCE, jwks=StaticJWKS(es384_key.public_jwks()), clinic_claim="tenant"
    )
    assert v.validate(_sign(es384_key, _claims(tenant="t-1"))).clinic_id == "t-1"
    _invalid(v, _sign(es384_key, _claims()))


@pytest.mark.parametrize("missing", ["exp", "iss", "aud", "sub"])
def test_required_claims(missing: str, validator: TokenValidator, es384_key: SigningKey) -> None:
    claims = _claims()
    del claims[missing]
    _invalid(validator, _sign(es384_key, claims))


def test_hs256_refused(validator: TokenValidator, es384_key: SigningKey) -> None:
    token = jwt.encode(
        _claims(), "a-shared-secret-that-is-long-enough-123", algorithm="HS256", headers={"kid": es384_key.kid}
    )
    assert _invalid(validator, token).description == "token algorithm not allowed"


def test_hs256_with_public_key_as_secret_refused(validator: TokenValidator, es384_key: SigningKey) -> None:
    """The classic key-confusion attack: HMAC keyed with the published public key."""
    import hashlib
    import hmac

    head = _b64({"alg": "HS256", "typ": "JWT", "kid": es384_key.kid})
    body = _b64(_claims())
    secret = json.dumps(es384_key.public_jwk()).encode()
    sig = base64.urlsafe_b64encode(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()).rstrip(b"=")
    _invalid(validator, f"{head}.{body}.{sig.decode()}")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_refused(alg: str, validator: TokenValidator, es384_key: SigningKey) -> None:
    token = f"{_b64({'alg': alg, 'typ': 'JWT', 'kid': es384_key.kid})}.{_b64(_claims())}."
    assert _invalid(validator, token).description == "token algorithm not allowed"


def test_alg_not_fitting_key_refused(validator: TokenValidator, es384_key: SigningKey, rsa_key: SigningKey) -> None:
    token = _sign(rsa_key, _claims(), alg="RS384", kid=es384_key.kid)
    _invalid(validator, token)


def test_algorithm_allow_list_is_enforced(es384_key: SigningKey) -> None:
    with pytest.raises(ValueError):
        TokenValidator(issuer=ISSUER, audience=AUDIENCE, jwks=StaticJWKS(es384_key.public_jwks()), algorithms=["HS256"])
    only_rs = TokenValidator(
        issuer=ISSUER, audience=AUDIENCE, jwks=StaticJWKS(es384_key.public_jwks()), algorithms=["RS384"]
    )
    _invalid(only_rs, _sign(es384_key, _claims()))


@pytest.mark.parametrize("token", ["abc", "a.b.c", "....", "x" * 20000])
def test_malformed(token: str, validator: TokenValidator) -> None:
    _invalid(validator, token)


def test_unknown_or_missing_kid(validator: TokenValidator, other_es384_key: SigningKey) -> None:
    assert "unknown" in _invalid(validator, _sign(other_es384_key, _claims())).description
    no_kid = jwt.encode(_claims(), other_es384_key.private_key, algorithm="ES384")
    assert "kid" in _invalid(validator, no_kid).description


def test_external_idp_style_token(rsa_key: SigningKey, tmp_path: Any) -> None:
    """Keycloak-like: sub is a user id, azp the client, scopes in ``scope``; keys from a JWKS file."""
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(rsa_key.public_jwks()))
    v = TokenValidator(issuer=ISSUER, audience=[AUDIENCE, "account"], jwks=FileJWKS(path))
    token = _sign(rsa_key, _claims(sub="5f1c-uuid", azp="kapfhir-cli", aud=["account", AUDIENCE], jti=None))
    p = v.validate(token)
    assert (p.client_id, p.clinic_id, p.token_id) == ("kapfhir-cli", "clinic-a", None)
    scp = v.validate(_sign(rsa_key, _claims(scope=None, scp=["system/Patient.rs"], client_id="cli")))
    assert scp.client_id == "cli" and scp.scopes.allows("Patient", "s")


def test_error_description_is_header_safe() -> None:
    err = AuthenticationError("invalid_token", 'bad "quote" \\ and\nnewline')
    assert err.www_authenticate() == 'Bearer error="invalid_token", error_description="bad ?quote? ? and?newline"'
    assert err.to_dict() == {"error": "invalid_token", "error_description": 'bad "quote" \\ and\nnewline'}


def test_a_verified_token_is_reused_until_it_expires_and_never_after(issuer, validator):
    token = issuer.issue(client_id="c", clinic_id="demo", scope="system/*.rs", lifetime=60).access_token
    first = validator.validate(token)
    assert validator.validate(token) is first  # the cached principal, no second signature check
    expired = issuer.issue(
        client_id="c", clinic_id="demo", scope="system/*.rs", lifetime=1, now=int(time.time()) - 120
    ).access_token
    with pytest.raises(AuthenticationError):
        validator.validate(expired)
    # A cached token past its expiry (plus leeway) is checked again, and refused.
    validator._verified[hashlib.sha256(expired.encode()).digest()] = first.__class__(
        client_id="c", clinic_id="demo", scopes=first.scopes, expires_at=int(time.time()) - 3600
    )
    with pytest.raises(AuthenticationError):
        validator.validate(expired)
