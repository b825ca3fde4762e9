"""The parts of issue 14's hardening, each on its own (SQLite and PostgreSQL where a database is involved)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner
from limits import parse
from sqlalchemy import func, select

from service.adapters import audit, orm
from service.adapters.database import make_engine, make_session_factory
from service.config import Settings
from service.domain import limits
from service.entrypoints.cli import main as cli
from service.entrypoints.cli import prepare_database
from service.security.keys import SigningKey, StaticJWKS, generate_private_key
from service.security.rate_limit import RateLimiter, client_key
from service.security.tokens import AuthenticationError, TokenValidator
from service.service_layer.audit_log import GroupCommitAuditLog, RefusalAggregator, _Pending

ISSUER, AUDIENCE = "https://kapfhir.test", "https://kapfhir.test/fhir"


@pytest.fixture
def session_factory(database_url: str):
    prepare_database(Settings(database_url=database_url))
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _record(**values) -> audit.AuditRecord:
    base = {
        "recorded": datetime.now(UTC),
        "type": "rest",
        "subtype": "read",
        "action": "R",
        "outcome": "0",
        "method": "GET",
        "route": "/api/v1/patients/<patient_id>",
        "status": 200,
        "clinic_id": "demo",
        "client_id": "reader",
        "network_address": "127.0.0.1",
        "request_id": "r-1",
    }
    return audit.AuditRecord(**{**base, **values})


def _count(session_factory) -> int:
    with session_factory() as session:
        return session.execute(select(func.count()).select_from(orm.audit_events)).scalar_one()


def test_one_bad_record_in_a_group_commit_fails_only_its_own_read(session_factory):
    log = GroupCommitAuditLog(session_factory)
    # a fault: an entity the JSON column cannot hold (over-long values are cut at the edge and in the adapter)
    bad = _Pending(_record(request_id="bad", entity=[{"type": "Patient", "id": object()}]))
    good = [_Pending(_record(request_id=f"good-{i}")) for i in range(20)]
    # all queued before the flusher starts: they are committed as one batch
    for pending in [good[0], bad, *good[1:]]:
        log._queue.put(pending)
    threading.Thread(target=log._flush_forever, daemon=True).start()
    assert all(p.done.wait(30) for p in [bad, *good])
    assert bad.error is not None
    assert [p.error for p in good] == [None] * 20
    assert _count(session_factory) == 20


def test_the_audit_flusher_keeps_one_connection_and_replaces_a_broken_one(session_factory):
    from sqlalchemy import event

    engine = session_factory.kw["bind"]
    checkouts = []
    event.listen(engine, "checkout", lambda *args: checkouts.append(1))
    log = GroupCommitAuditLog(session_factory)
    for i in range(5):  # five batches, one after the other
        log.append(_record(request_id=f"one-{i}"))
    assert len(checkouts) == 1
    # the database drops the flusher's connection (a restart, a network cut): the next read is still audited
    log._connection.connection.dbapi_connection.close()
    log.append(_record(request_id="after-the-cut"))
    assert len(checkouts) == 2
    assert _count(session_factory) == 6


def test_over_long_audit_values_are_cut_to_their_columns_not_refused(session_factory):
    with session_factory() as session:
        audit.append(
            session,
            _record(request_id="r" * 8000, client_id="c" * 500, method="PROPFINDXYZ", network_address="a" * 100),
        )
        session.commit()
        row = session.execute(select(orm.audit_events)).one()
    assert (len(row.request_id), len(row.client_id), len(row.method), len(row.network_address)) == (100, 200, 10, 64)


def test_anonymous_refusals_are_aggregated_per_address_and_minute(session_factory):
    refusals = RefusalAggregator(session_factory)
    now = time.time()
    minute_start = now - now % 60
    for _ in range(50):
        refusals.record(_record(status=401, outcome="4", clinic_id=None, client_id=None), now=minute_start + 1)
    refusals.record(_record(status=401, outcome="4", network_address="10.0.0.9"), now=minute_start + 1)
    assert _count(session_factory) == 2  # the first of each address, written before it was answered
    refusals.flush(everything=True)
    with session_factory() as session:
        rows = session.execute(select(orm.audit_events.c.network_address, orm.audit_events.c.occurrences)).all()
    assert sorted(rows) == [("10.0.0.9", 1), ("127.0.0.1", 1), ("127.0.0.1", 49)]


def test_a_client_budget_is_shared_by_every_worker_on_the_database(database_url: str):
    from service.adapters.rate_limits import DatabaseCounters

    prepare_database(Settings(database_url=database_url))
    engine = make_engine(database_url)
    try:
        workers = [RateLimiter(DatabaseCounters(engine), sync_seconds=0) for _ in range(3)]
        limit = parse("30 per minute")
        allowed = [workers[i % 3].hit(limit, client_key("clinic-a", "app")).allowed for i in range(45)]
        assert allowed == [True] * 30 + [False] * 15
        # the same client id in another clinic has a budget of its own
        assert workers[0].hit(limit, client_key("clinic-b", "app")).allowed
    finally:
        engine.dispose()


def test_workers_sharing_a_client_near_its_budget_overrun_it_by_a_few_hits_at_most(database_url: str):
    """Between syncs (every 0.2 s) a worker decides on its own hits; near the budget it syncs on every hit, so two
    workers serving one client's burst do not each add their last 0.2 s of hits on top of the budget."""
    from service.adapters.rate_limits import DatabaseCounters

    prepare_database(Settings(database_url=database_url))
    engine = make_engine(database_url)
    try:
        workers = [RateLimiter(DatabaseCounters(engine)) for _ in range(2)]  # the service's sync interval
        limit = parse("100 per minute")
        allowed = sum(workers[i % 2].hit(limit, client_key("clinic-a", "burst")).allowed for i in range(300))
        assert 100 <= allowed <= 104, allowed
    finally:
        engine.dispose()


# --- tokens ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.from_private_key(generate_private_key("ES384"))


def _token(key: SigningKey, **claims) -> str:
    now = int(time.time())
    values = {"iss": ISSUER, "aud": AUDIENCE, "sub": "c", "client_id": "c", "kapfhir_clinic": "demo", "iat": now}
    values.update({"exp": now + 300, **claims})
    return jwt.encode(values, key.private_key, algorithm="ES384", headers={"kid": key.kid})


def _validator(key: SigningKey) -> TokenValidator:
    return TokenValidator(issuer=ISSUER, audience=AUDIENCE, jwks=StaticJWKS(key.public_jwks()), leeway=0)


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_time_claims_written_as_strings_are_refused(key, claim):
    value = str(int(time.time()) + (300 if claim == "exp" else -10))
    with pytest.raises(AuthenticationError, match=f"{claim} is not a number"):
        _validator(key).validate(_token(key, **{claim: value}))


def test_a_cached_token_is_refused_once_it_expires(key):
    validator = _validator(key)
    token = _token(key, exp=int(time.time()) + 1)
    assert validator.validate(token).client_id == "c"
    time.sleep(2.1)  # past exp: the cache must not answer for it
    with pytest.raises(AuthenticationError, match="expired"):
        validator.validate(token)


@pytest.mark.parametrize("text", ["²", "٣", "9" * 19, "-1", "1.0", ""])
def test_counts_and_versions_are_ascii_digits_below_2_63(text):
    assert limits.ascii_int(text) is None
    assert limits.ascii_int("123") == 123


def test_kapfhir_token_refuses_a_clinic_that_is_not_registered(tmp_path: Path):
    env = {
        "KAPFHIR_DATABASE_URL": f"sqlite:///{tmp_path}/kapfhir.db",
        "KAPFHIR_SIGNING_KEY_FILE": str(tmp_path / "signing-key.pem"),
    }
    prepare_database(Settings(database_url=env["KAPFHIR_DATABASE_URL"]))
    refused = CliRunner().invoke(cli, ["token", "--clinic", "nowhere"], env=env)
    assert refused.exit_code != 0 and "no clinic" in refused.output and "nowhere" in refused.output
    issued = CliRunner().invoke(cli, ["token", "--clinic", "demo"], env=env)
    assert issued.exit_code == 0 and issued.output.count(".") == 2


def test_a_500_is_audited_and_logged_by_error_class_only(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    from tests.support.app import bearer, make_app, token_for

    app = make_app(f"sqlite:///{tmp_path}/kapfhir.db")
    kapfhir_logger = logging.getLogger("kapfhir")  # does not propagate (service/entrypoints/logs.py)
    kapfhir_logger.addHandler(caplog.handler)

    def boom() -> None:  # a fault: a view that fails with patient data in its message
        raise RuntimeError("SYNTHETIC-PATIENT-CANARY")

    app.add_url_rule("/api/v1/boom", "boom", boom)
    try:
        response = app.test_client().get("/api/v1/boom", headers={**bearer(token_for(app)), "X-Request-ID": "boom-1"})
    finally:
        kapfhir_logger.removeHandler(caplog.handler)
    assert response.status_code == 500 and "CANARY" not in response.get_data(as_text=True)
    with app.extensions["kapfhir.engine"].connect() as connection:
        rows = connection.execute(select(orm.audit_events).where(orm.audit_events.c.request_id == "boom-1")).all()
    assert [(r.status, r.outcome, r.clinic_id) for r in rows] == [(500, "8", "demo")]
    assert any(getattr(r, "error_class", None) == "RuntimeError" for r in caplog.records)
    assert not any("CANARY" in str(vars(r)) for r in caplog.records)
