"""Target auth against sekmet's SMART Backend Services token endpoint (and its static bearer / secret clients)."""

from __future__ import annotations

import time

import jwt
import pytest

from service.exchange.auth import (
    AuthError,
    BearerAuth,
    ClientSecretAuth,
    SmartBackendAuth,
    client_assertion,
)
from service.exchange.client import FhirClient, FhirHttpError
from service.exchange.targets import build_client, target_from_dict
from service.security.keys import SigningKey, generate_private_key, jwk_thumbprint
from tests.support.charts import bundle_of, unique_chart
from tests.support.sekmet import Sekmet


@pytest.mark.parametrize(("client_id", "alg"), [("kap-rsa", "RS384"), ("kap-ec", "ES384")])
def test_smart_backend_services_end_to_end(sekmet_smart: Sekmet, client_id: str, alg: str) -> None:
    key = sekmet_smart.keys[client_id]
    assert key.alg == alg
    auth = SmartBackendAuth(base_url=sekmet_smart.base_url, client_id=client_id, key=key, scope="system/*.cruds")
    with FhirClient(sekmet_smart.base_url, auth=auth) as client:
        for _ in range(3):
            assert client.request("GET", "Patient", params={"_count": "1"}).status == 200
    assert auth.token_url == f"{sekmet_smart.root_url}/auth/token"  # discovered
    assert auth.token_requests == 1  # cached


def test_smart_target_from_config_pushes(sekmet_smart: Sekmet) -> None:
    from datetime import UTC, datetime

    from service.exchange.push import push_bundle
    from tests.support.exchange import ORG, consent

    target = target_from_dict(
        "smart",
        {
            "base_url": sekmet_smart.base_url,
            "write_policy": "sandbox",
            "organization_identifier": f"{ORG.system}|{ORG.value}",
            "auth": {
                "type": "smart",
                "client_id": "kap-ec",
                "scope": "system/*.cruds",
                "private_key_path": str(sekmet_smart.workdir / "kap-ec.pem"),
            },  # type: ignore[attr-defined]
        },
    )
    with build_client(target) as client:
        report = push_bundle(
            client,
            target,
            bundle_of(unique_chart("discontinued-pcl5")),
            consents=[consent()],
            now=datetime(2026, 3, 10, tzinfo=UTC),
        )
    assert report.ok, report.as_dict()


def test_assertion_claims() -> None:
    key = SigningKey.from_private_key(generate_private_key("ES384"))
    token = client_assertion(key, client_id="cid", token_url="https://ehr.example/token")
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, key.private_key.public_key(), algorithms=["ES384"], audience="https://ehr.example/token")
    assert header["alg"] == "ES384" and header["kid"] == jwk_thumbprint(key.public_jwk())
    assert claims["iss"] == claims["sub"] == "cid"
    assert 0 < claims["exp"] - time.time() <= 300
    other = jwt.decode(
        client_assertion(key, client_id="cid", token_url="https://ehr.example/token"),
        options={"verify_signature": False},
    )
    assert other["jti"] != claims["jti"]
    with pytest.raises(ValueError):
        client_assertion(key, client_id="cid", token_url="u", lifetime=301)
    with pytest.raises(ValueError):
        SmartBackendAuth(
            base_url="https://x",
            client_id="c",
            scope="s",
            key=SigningKey.from_private_key(generate_private_key("ES256")),
        )


def test_a_401_fetches_a_new_token_once(sekmet_smart: Sekmet) -> None:
    auth = SmartBackendAuth(
        base_url=sekmet_smart.base_url, client_id="kap-rsa", key=sekmet_smart.keys["kap-rsa"], scope="system/*.cruds"
    )
    with FhirClient(sekmet_smart.base_url, auth=auth) as client:
        client.request("GET", "Patient")
        auth._token = "revoked-or-garbage"  # the server no longer accepts the cached token
        assert client.request("GET", "Patient").status == 200
    assert auth.token_requests == 2


def test_unknown_key_is_refused(sekmet_smart: Sekmet) -> None:
    stranger = SigningKey.from_private_key(generate_private_key("RS384"))
    auth = SmartBackendAuth(base_url=sekmet_smart.base_url, client_id="kap-rsa", key=stranger, scope="system/*.rs")
    with FhirClient(sekmet_smart.base_url, auth=auth) as client, pytest.raises(AuthError) as err:
        client.request("GET", "Patient")
    assert err.value.status == 401 and err.value.error == "invalid_client"


def test_static_bearer_and_client_secret(sekmet_smart: Sekmet) -> None:
    with FhirClient(sekmet_smart.base_url, auth=BearerAuth("static-test-token")) as client:
        assert client.request("GET", "Patient").status == 200
    with FhirClient(sekmet_smart.base_url, auth=BearerAuth("wrong")) as client, pytest.raises(FhirHttpError) as err:
        client.request("GET", "Patient")
    assert err.value.status == 401
    secret = ClientSecretAuth(
        token_url=f"{sekmet_smart.root_url}/auth/token",
        client_id="kap-secret",
        client_secret="s3cret-for-tests",
        scope="system/*.rs",
    )
    with FhirClient(sekmet_smart.base_url, auth=secret) as client:
        assert client.request("GET", "Patient").status == 200
    assert secret.token_requests == 1
