"""Security at the HTTP boundary: tokens, scopes, the token endpoint, the audit trail and hardening."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import select, text
from sqlalchemy.exc import DatabaseError

from service.adapters import orm
from service.config import Settings
from service.entrypoints.app import create_app
from service.entrypoints.cli import main as cli
from service.security.keys import SigningKey, generate_private_key
from service.security.settings import ConfigurationError, SecuritySettings
from service.security.tokens import TokenIssuer
from tests.support.app import Api, bearer, make_app, token_for
from tests.support.seed import PATIENT, dosing_session_body, seed_episode


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(f"sqlite:///{tmp_path}/kapfhir.db", signing_key_file=str(tmp_path / "signing-key.pem"))


def _issuer(app: Flask) -> TokenIssuer:
    return app.extensions["kapfhir.security"].issuer


def _audit_rows(app: Flask) -> list[Any]:
    with app.extensions["kapfhir.engine"].connect() as connection:
        return list(connection.execute(select(orm.audit_events).order_by(orm.audit_events.c.recorded)))


# --- 401 -------------------------------------------------------------------------------------------------------


def _foreign_token(app: Flask, **claims: Any) -> str:
    own = _issuer(app)
    values = {
        "iss": own.issuer,
        "aud": own.audience,
        "sub": "x",
        "client_id": "x",
        "scope": "system/*.cruds",
        "kapfhir_clinic": "demo",
        "iat": int(time.time()),
        "exp": int(time.time()) + 300,
        "jti": "j",
    }
    values.update(claims)
    return jwt.encode(values, own.signing_key.private_key, algorithm="ES384", headers={"kid": own.signing_key.kid})


@pytest.mark.parametrize(
    ("case", "make_token"),
    [
        ("no token", lambda app: None),
        (
            "bad signature",
            lambda app: (
                TokenIssuer(
                    SigningKey.from_private_key(generate_private_key("ES384")),
                    issuer=_issuer(app).issuer,
                    audience=_issuer(app).audience,
                )
                .issue(client_id="x", clinic_id="demo", scope="system/*.cruds")
                .access_token
            ),
        ),
        ("expired", lambda app: _foreign_token(app, iat=int(time.time()) - 900, exp=int(time.time()) - 600)),
        ("wrong audience", lambda app: _foreign_token(app, aud="https://other.example.org")),
        ("wrong issuer", lambda app: _foreign_token(app, iss="https://evil.example.org")),
        ("no clinic claim", lambda app: _foreign_token(app, kapfhir_clinic=None)),
        ("garbage", lambda app: "not-a-jwt"),
    ],
)
def test_requests_without_a_valid_token_get_401_with_www_authenticate(app: Flask, case: str, make_token: Any):
    token = make_token(app)
    headers = bearer(token) if token else {}
    response = app.test_client().get("/api/v1/patients", headers=headers)
    assert response.status_code == 401, case
    assert response.mimetype == "application/problem+json"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer")
    assert ('error="invalid_token"' in challenge) == (token is not None)


def test_public_routes_need_no_token(app: Flask):
    client = app.test_client()
    for path in ("/healthz", "/readyz", "/.well-known/smart-configuration", "/.well-known/jwks.json"):
        assert client.get(path).status_code == 200, path


def test_smart_configuration_lists_the_token_endpoint_and_capabilities(app: Flask):
    doc = app.test_client().get("/.well-known/smart-configuration").get_json()
    assert doc["token_endpoint"] == "http://127.0.0.1:8000/oauth2/token"
    assert "private_key_jwt" in doc["token_endpoint_auth_methods_supported"]
    assert {"RS384", "ES384"} <= set(doc["token_endpoint_auth_signing_alg_values_supported"])
    assert doc["grant_types_supported"] == ["client_credentials"]
    assert "client-confidential-asymmetric" in doc["capabilities"]


# --- 403 -------------------------------------------------------------------------------------------------------


def test_a_scope_that_does_not_cover_the_request_gets_403(app: Flask):
    reader = Api(app.test_client(), token_for(app, scope="system/Patient.rs"))
    assert reader.get("/patients").status_code == 200
    refused = reader.post("/patients", PATIENT)
    assert refused.status_code == 403 and refused.mimetype == "application/problem+json"
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    assert "system/Patient.c" in refused.get_json()["detail"]


def test_reading_a_whole_episode_needs_read_on_every_type_it_returns(app: Flask):
    ids = seed_episode(Api(app.test_client()))
    partial = Api(app.test_client(), token_for(app, scope="system/EpisodeOfCare.rs system/Consent.rs"))
    assert partial.get(f"/episodes/{ids['episode']}").status_code == 403
    everything = Api(app.test_client(), token_for(app, scope="system/*.rs"))
    assert everything.get(f"/episodes/{ids['episode']}").status_code == 200


def test_smart_v1_scopes_are_translated(app: Flask):
    v1 = Api(app.test_client(), token_for(app, scope="system/*.read"))
    assert v1.get("/patients").status_code == 200
    assert v1.post("/patients", PATIENT).status_code == 403
    writer = Api(app.test_client(), token_for(app, scope="system/Patient.write system/Patient.read"))
    assert writer.post("/patients", PATIENT).status_code == 201


def test_every_protected_route_declares_what_it_needs(app: Flask):
    from service.entrypoints.auth import is_public, requirement_of
    from service.entrypoints.routes import ROUTES

    rules = [r for r in app.url_map.iter_rules() if not r.endpoint.endswith("static")]
    assert [r.rule for r in rules if r.endpoint not in ROUTES] == []  # one declaration per route
    with app.test_request_context("/"):
        undeclared = [
            rule.rule
            for rule in rules
            if not is_public(rule.endpoint) and requirement_of(rule.endpoint, rule.defaults) is None
        ]
    assert undeclared == []
    # the declarations are what auth, the contract and the plumbing read: a public route is public in the contract
    contract = app.test_client().get("/openapi.json").get_json()
    assert contract["paths"]["/healthz"]["get"]["security"] == []
    assert contract["paths"]["/api/v1/patients"]["post"]["summary"] == ROUTES["api.register_patient"].summary


# --- the token endpoint ----------------------------------------------------------------------------------------


def _cli(app: Flask, tmp_path: Path, *args: str) -> Any:
    settings: Settings = app.extensions["kapfhir"].settings
    env = {
        "KAPFHIR_DATABASE_URL": settings.database_url,
        "KAPFHIR_SIGNING_KEY_FILE": settings.security.signing_key_file,
    }
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_a_client_added_with_the_cli_gets_a_token_with_a_signed_assertion_and_uses_it(
    app: Flask, tmp_path: Path, alg: str
):
    key_path = tmp_path / f"client-{alg}.pem"
    generated = _cli(app, tmp_path, "keys", "generate", "--alg", alg, "--out", str(key_path))
    assert generated.exit_code == 0, generated.output
    jwks_path = tmp_path / "client-jwks.json"
    jwks_path.write_text(generated.output)
    added = _cli(
        app,
        tmp_path,
        "clients",
        "add",
        "--client-id",
        "ehr-1",
        "--clinic",
        "demo",
        "--scopes",
        "system/Patient.rs system/Patient.c",
        "--jwks",
        str(jwks_path),
    )
    assert added.exit_code == 0, added.output

    from service.security.keys import load_private_key

    client_key = SigningKey.from_private_key(load_private_key(key_path), alg)
    token_url = "http://127.0.0.1:8000/oauth2/token"

    def assertion() -> str:
        now = int(time.time())
        return jwt.encode(
            {"iss": "ehr-1", "sub": "ehr-1", "aud": token_url, "exp": now + 240, "jti": uuid.uuid4().hex, "iat": now},
            client_key.private_key,
            algorithm=alg,
            headers={"kid": client_key.kid, "typ": "JWT"},
        )

    form = {
        "grant_type": "client_credentials",
        "scope": "system/Patient.rs system/Observation.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }
    first_assertion = assertion()
    response = app.test_client().post("/oauth2/token", data={**form, "client_assertion": first_assertion})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["token_type"].lower() == "bearer" and body["expires_in"] <= 300
    assert body["scope"] == "system/Patient.rs"  # Observation was not allowed to this client
    api = Api(app.test_client(), body["access_token"])
    assert api.get("/patients").status_code == 200
    assert api.get("/episodes").status_code == 403

    replayed = app.test_client().post("/oauth2/token", data={**form, "client_assertion": first_assertion})
    assert replayed.status_code in (400, 401) and replayed.get_json()["error"] == "invalid_client"


def test_a_client_secret_client_gets_a_token(app: Flask, tmp_path: Path):
    added = _cli(
        app,
        tmp_path,
        "clients",
        "add",
        "--client-id",
        "clinic-app",
        "--clinic",
        "demo",
        "--scopes",
        "system/*.rs",
        "--secret",
    )
    assert added.exit_code == 0, added.output
    secret = added.output.split("(shown once): ")[1].strip()
    ok = app.test_client().post(
        "/oauth2/token", data={"grant_type": "client_credentials", "scope": "system/*.rs"}, auth=("clinic-app", secret)
    )
    assert ok.status_code == 200, ok.get_json()
    wrong = app.test_client().post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=("clinic-app", secret + "x")
    )
    assert wrong.status_code == 401 and wrong.get_json()["error"] == "invalid_client"


def test_kapfhir_token_prints_a_token_the_service_accepts(app: Flask, tmp_path: Path):
    printed = _cli(app, tmp_path, "token", "--clinic", "demo", "--scope", "system/*.cruds")
    assert printed.exit_code == 0
    assert Api(app.test_client(), printed.output.strip()).get("/patients").status_code == 200


def test_production_refuses_to_start_without_issuer_audience_and_keys(tmp_path: Path):
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/k.db",
        security=SecuritySettings(env="production", issuer=None, audience=None, signing_key_file=None),
    )
    with pytest.raises(ConfigurationError):
        create_app(settings)


# --- audit -----------------------------------------------------------------------------------------------------


def test_every_kind_of_access_is_audited_refusals_included(app: Flask):
    api = Api(app.test_client())
    ids = seed_episode(api)
    before = len(_audit_rows(app))
    api.get(f"/episodes/{ids['episode']}")  # read
    api.get("/episodes")  # search
    api.created(f"/episodes/{ids['episode']}/sessions", dosing_session_body(ids))  # create
    api.put(f"/patients/{ids['patient']}", {**PATIENT, "amendment_reason": "typo"})  # update
    app.test_client().get("/api/v1/patients")  # 401
    Api(app.test_client(), token_for(app, scope="system/Patient.rs")).post("/patients", PATIENT)  # 403
    Api(app.test_client(), token_for(app, clinic="other")).get(f"/episodes/{ids['episode']}")  # 404
    rows = _audit_rows(app)[before:]
    assert [(r.action, r.subtype, r.status) for r in rows] == [
        ("R", "read", 200),
        ("E", "search-type", 200),
        ("C", "create", 201),
        ("U", "update", 200),
        ("R", "read", 401),
        ("C", "create", 403),
        ("R", "read", 404),
    ]
    assert [r.outcome for r in rows] == ["0", "0", "0", "0", "4", "4", "4"]
    assert {"type": "EpisodeOfCare", "id": ids["episode"]} in rows[0].entity
    assert rows[2].client_id == "test-client" and rows[2].clinic_id == "demo"
    assert rows[4].clinic_id is None and rows[6].clinic_id == "other"
    assert all((r.route.startswith("/api/v1/") and "<" in r.route) or r.route.endswith("s") for r in rows)


def test_a_failed_write_leaves_no_data_and_only_the_audit_of_its_refusal(app: Flask):
    api = Api(app.test_client())
    ids = seed_episode(api)
    before = len(_audit_rows(app))
    body = dosing_session_body(ids)
    body["doses"][0]["supervised_by_id"] = "nobody"
    assert api.post(f"/episodes/{ids['episode']}/sessions", body).status_code == 422
    rows = _audit_rows(app)
    assert len(rows) == before + 1  # every answer is audited, refusals too (issue 14)
    assert (rows[-1].status, rows[-1].outcome, rows[-1].action) == (422, "4", "C")
    assert api.get(f"/episodes/{ids['episode']}/sessions").get_json()["items"] == []


def test_audit_rows_cannot_be_changed_or_deleted(app: Flask):
    Api(app.test_client()).get("/patients")
    engine = app.extensions["kapfhir.engine"]
    for statement in ("UPDATE audit_events SET status = 200", "DELETE FROM audit_events"):
        with pytest.raises(DatabaseError), engine.begin() as connection:
            connection.execute(text(statement))
    assert len(_audit_rows(app)) >= 1


def test_the_audit_trail_is_listed_per_clinic_with_the_audit_scope(app: Flask):
    api = Api(app.test_client())
    seed_episode(api)
    assert api.get("/audit-events").status_code == 200
    page = api.get("/audit-events?limit=5").get_json()
    assert page["total"] >= 8 and len(page["items"]) == 5
    assert Api(app.test_client(), token_for(app, scope="system/Patient.rs")).get("/audit-events").status_code == 403
    other = Api(app.test_client(), token_for(app, clinic="other"))
    assert other.get("/audit-events").get_json()["total"] == 0  # a request is audited once it is answered
    assert other.get("/audit-events").get_json()["total"] == 1  # ...so the second sees the first, and nothing else


# --- hardening ---------------------------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path):
    app = make_app(f"sqlite:///{tmp_path}/k.db", rate_limit="2 per minute")
    api = Api(app.test_client())
    assert [api.get("/patients").status_code for _ in range(3)] == [200, 200, 429]
    limited = api.get("/patients")
    assert limited.mimetype == "application/problem+json" and int(limited.headers["Retry-After"]) > 0


def test_security_headers_and_no_cors_by_default(app: Flask):
    response = Api(app.test_client()).get("/patients", headers={"Origin": "https://evil.example.org"})
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert "Access-Control-Allow-Origin" not in response.headers


def test_deeply_nested_json_is_refused_cleanly(app: Flask):
    body = "[" * 5000 + "]" * 5000
    response = app.test_client().post(
        "/api/v1/patients", data=body, content_type="application/json", headers=bearer(token_for(app))
    )
    assert response.status_code == 400 and response.mimetype == "application/problem+json"
