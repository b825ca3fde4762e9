"""Signed view links: one page, one clinic, five minutes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.security import view_links as vl

SECRET = b"k" * 32


@pytest.fixture
def now() -> datetime:
    """The clock at the test itself: a module-level reading taken at collection is minutes old in a long run."""
    return datetime.now(UTC)


def test_a_link_opens_its_page_for_its_clinic_until_it_expires(now: datetime):
    token, expires = vl.issue(SECRET, "episode:e1", clinic_id="demo", client_id="c1", now=now)
    assert timedelta(minutes=4, seconds=59) <= expires - now <= timedelta(minutes=5)
    grant = vl.verify(SECRET, token, "episode:e1")
    assert (grant.clinic_id, grant.client_id, grant.page) == ("demo", "c1", "episode:e1")
    with pytest.raises(vl.InvalidViewLinkError) as expired:
        vl.verify(SECRET, token, "episode:e1", now=now + timedelta(minutes=5, seconds=1))
    assert expired.value.reason == "expired" and expired.value.claims["clinic"] == "demo"


def test_a_link_for_another_page_a_forged_one_and_none_are_refused(now: datetime):
    token, _ = vl.issue(SECRET, "episode:e1", clinic_id="demo", client_id="c1", now=now)
    with pytest.raises(vl.InvalidViewLinkError, match="another page"):
        vl.verify(SECRET, token, "episode:e2")
    with pytest.raises(vl.InvalidViewLinkError, match="another page"):
        vl.verify(SECRET, token, "outcomes")
    with pytest.raises(vl.InvalidViewLinkError) as forged:
        vl.verify(b"x" * 32, token, "episode:e1")
    assert forged.value.reason == "invalid" and forged.value.claims == {}
    with pytest.raises(vl.InvalidViewLinkError, match="no token"):
        vl.verify(SECRET, None, "episode:e1")


def test_an_issued_token_that_expired_in_the_past_is_refused_by_the_jwt_check(now: datetime):
    token, _ = vl.issue(SECRET, "outcomes", clinic_id="demo", client_id="c1", now=now - timedelta(minutes=6))
    with pytest.raises(vl.InvalidViewLinkError, match="expired"):
        vl.verify(SECRET, token, "outcomes")


def test_the_secret_comes_from_the_environment_or_the_signing_key_file(tmp_path, monkeypatch):
    monkeypatch.delenv("KAPFHIR_VIEW_LINK_SECRET", raising=False)
    key = tmp_path / "signing-key.pem"
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
    derived = vl.signing_secret(str(key))
    assert derived == vl.signing_secret(str(key)) and len(derived) == 32  # every worker derives the same key
    with pytest.raises(vl.ViewLinkUnavailableError):
        vl.signing_secret(None)
    monkeypatch.setenv("KAPFHIR_VIEW_LINK_SECRET", "short")
    with pytest.raises(vl.ViewLinkUnavailableError):
        vl.signing_secret(str(key))
    monkeypatch.setenv("KAPFHIR_VIEW_LINK_SECRET", "s" * 40)
    assert vl.signing_secret(None) == b"s" * 40
