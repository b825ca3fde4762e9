from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.security import keys
from service.security.keys import (
    CompositeJWKS,
    FileJWKS,
    KeySourceUnavailableError,
    RemoteJWKS,
    SigningKey,
    StaticJWKS,
    UnknownKeyError,
    ensure_local_signing_key,
    generate_private_key,
    jwk_thumbprint,
    load_private_key,
    parse_jwks,
    public_jwk,
    verification_key_from_jwk,
    write_private_key,
)
from tests.support.keys import JWKSServer

RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3o"
    "knjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQ"
    "vRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqD"
    "Kgw"
)


def test_rfc7638_thumbprint_vector() -> None:
    # RFC 7638 §3.1 example; the expected value is printed in the RFC.
    jwk = {"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize(
    ("alg", "kty", "crv"), [("ES384", "EC", "P-384"), ("ES256", "EC", "P-256"), ("RS384", "RSA", None)]
)
def test_generate_and_public_jwk(alg: str, kty: str, crv: str | None) -> None:
    key = generate_private_key(alg)
    if kty == "RSA":
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
    jwk = public_jwk(key)
    assert jwk["kty"] == kty and jwk["alg"] == alg and jwk["use"] == "sig"
    assert jwk.get("crv") == crv
    assert "d" not in jwk
    assert jwk["kid"] == jwk_thumbprint(jwk)
    vk = verification_key_from_jwk(jwk)
    assert vk.permits(alg)


def test_generate_rejects_symmetric() -> None:
    with pytest.raises(ValueError):
        generate_private_key("HS256")


def test_write_private_key_mode_and_no_overwrite(tmp_path: Path) -> None:
    key = generate_private_key("ES384")
    path = write_private_key(key, tmp_path / "sub" / "key.pem")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_jwk(load_private_key(path)) == public_jwk(key)
    with pytest.raises(FileExistsError):
        write_private_key(generate_private_key("ES384"), path)
    assert public_jwk(load_private_key(path)) == public_jwk(key)
    assert [p.name for p in path.parent.iterdir()] == ["key.pem"]  # no temporary left behind


def test_ensure_local_signing_key_creates_once(tmp_path: Path) -> None:
    path = tmp_path / "var" / "signing-key.pem"
    first = ensure_local_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.alg == "ES384"
    second = ensure_local_signing_key(path)
    assert second.kid == first.kid
    assert second.public_jwks() == {"keys": [first.public_jwk()]}


def test_ensure_local_signing_key_refuses_loose_permissions(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    ensure_local_signing_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError):
        ensure_local_signing_key(path)


def test_cli_generate_prints_jwks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "client.pem"
    assert keys.main(["generate", "--alg", "ES384", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["keys"][0]["kid"] == SigningKey.from_private_key(load_private_key(out)).kid
    assert keys.main(["jwks", str(out)]) == 0
    assert json.loads(capsys.readouterr().out) == printed
    assert keys.main(["generate", "--out", str(out)]) == 1  # never overwrites


def test_jwks_refuses_unsafe_keys(es384_key: SigningKey) -> None:
    good = es384_key.public_jwk()
    oct_key = {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"}
    private = dict(good, kid="priv", d="AAAA")
    enc = dict(good, kid="enc", use="enc")
    small_rsa = public_jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(), alg="RS256")
    p521 = {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"}
    wrong_alg = dict(good, kid="wrong", alg="RS256")
    parsed = parse_jwks({"keys": [good, oct_key, private, enc, small_rsa, p521, wrong_alg, "junk"]})
    assert list(parsed) == [good["kid"]]
    with pytest.raises(ValueError):
        parse_jwks({"nokeys": []})


def test_static_and_file_jwks(tmp_path: Path, es384_key: SigningKey, other_es384_key: SigningKey) -> None:
    static = StaticJWKS(es384_key.public_jwks())
    assert static.get(es384_key.kid).kid == es384_key.kid
    with pytest.raises(UnknownKeyError):
        static.get(other_es384_key.kid)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(es384_key.public_jwks()))
    source = FileJWKS(path)
    assert source.get(es384_key.kid)
    with pytest.raises(UnknownKeyError):
        source.get(other_es384_key.kid)
    path.write_text(json.dumps({"keys": [es384_key.public_jwk(), other_es384_key.public_jwk()]}))
    os.utime(path, ns=(1, 2_000_000_000_000_000_000))  # make sure the mtime changes
    assert source.get(other_es384_key.kid)
    with pytest.raises(KeySourceUnavailableError):
        FileJWKS(tmp_path / "missing.json").get("x")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_remote_jwks_cache_and_refresh(
    jwks_server: JWKSServer, es384_key: SigningKey, other_es384_key: SigningKey
) -> None:
    clock = FakeClock()
    source = RemoteJWKS(jwks_server.url, ttl=300, timeout=2, clock=clock)
    assert source.get(es384_key.kid).kid == es384_key.kid
    assert source.get(es384_key.kid) and jwks_server.hits == 1  # cached

    # key rotation: the new kid is unknown; one refresh is allowed, but not before 60 s have passed
    jwks_server.document = {"keys": [es384_key.public_jwk(), other_es384_key.public_jwk()]}
    clock.now += 10
    with pytest.raises(UnknownKeyError):
        source.get(other_es384_key.kid)
    assert jwks_server.hits == 1
    clock.now += 51
    assert source.get(other_es384_key.kid).kid == other_es384_key.kid
    assert jwks_server.hits == 2
    # a stream of made-up kids triggers at most one fetch per minute
    for i in range(70):
        clock.now += 1
        with pytest.raises(UnknownKeyError):
            source.get(f"made-up-{i}")
    assert jwks_server.hits == 3

    # TTL expiry refetches; a failing refresh keeps serving the cached keys
    jwks_server.status = 500
    clock.now += 400
    assert source.get(es384_key.kid)
    assert jwks_server.hits == 4


def test_remote_jwks_unavailable() -> None:
    import socket

    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = RemoteJWKS(f"http://127.0.0.1:{port}/jwks.json", timeout=1)
    with pytest.raises(KeySourceUnavailableError):
        source.get("kid")
    with pytest.raises(KeySourceUnavailableError):  # backoff: no second connection attempt right away
        source.get("kid")


def test_remote_jwks_rejects_non_http() -> None:
    with pytest.raises(ValueError):
        RemoteJWKS("file:///etc/passwd")


def test_composite(es384_key: SigningKey, other_es384_key: SigningKey) -> None:
    both = CompositeJWKS([StaticJWKS(es384_key.public_jwks()), StaticJWKS(other_es384_key.public_jwks())])
    assert both.get(other_es384_key.kid).kid == other_es384_key.kid
    with pytest.raises(UnknownKeyError):
        both.get("nope")
