"""Signing keys and JSON Web Key Sets (JWKS), built on ``cryptography`` and PyJWT's JWK codecs.

* Key generation: RSA 3072 for RS256/RS384, P-256 for ES256, P-384 for ES384.
* Private keys are written as unencrypted PKCS#8 PEM with mode 0600 (created atomically, never overwritten).
* Public keys are published as a JWKS whose ``kid`` is the RFC 7638 SHA-256 thumbprint.
* Key sources (:class:`StaticJWKS`, :class:`FileJWKS`, :class:`RemoteJWKS`, :class:`CompositeJWKS`) hand out
  *public* keys by ``kid``; only RSA (>= 2048 bits) and EC P-256/P-384 keys are ever returned, so a
  symmetric (``oct``) key in a JWKS can never be used to verify a token.

Command line (prints the public JWKS on stdout)::

    python -m service.security.keys generate --alg ES384 --out var/client-key.pem
    python -m service.security.keys jwks var/client-key.pem
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

log = logging.getLogger(__name__)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "ES256", "ES384")
RSA_KEY_SIZE = 3072
MIN_RSA_KEY_SIZE = 2048
_CURVE_FOR_ALG: dict[str, type[ec.EllipticCurve]] = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1}
_ALG_FOR_CURVE = {"secp256r1": "ES256", "secp384r1": "ES384"}
_JWK_CURVE = {"secp256r1": "P-256", "secp384r1": "P-384"}
_CURVE_BYTES = {"P-256": 32, "P-384": 48}
MAX_JWKS_BYTES = 1_000_000


class JWKSError(Exception):
    """Base class of key problems."""


class UnknownKeyError(JWKSError):
    """No usable key with that ``kid``."""


class KeySourceUnavailableError(JWKSError):
    """The JWKS could not be loaded (network, file or parse error) and nothing usable is cached."""


# --------------------------------------------------------------------------------------------------- keys


def generate_private_key(alg: str = "ES384") -> PrivateKey:
    """A fresh private key for ``alg`` (RS256/RS384 -> RSA 3072; ES256 -> P-256; ES384 -> P-384)."""
    if alg in ("RS256", "RS384"):
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_SIZE)
    if alg in _CURVE_FOR_ALG:
        return ec.generate_private_key(_CURVE_FOR_ALG[alg]())
    raise ValueError(f"unsupported algorithm {alg!r}; use one of {ASYMMETRIC_ALGORITHMS}")


def default_alg_for(key: PrivateKey | PublicKey) -> str:
    """RS384 for RSA keys, ES256/ES384 by curve for EC keys."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "RS384"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        try:
            return _ALG_FOR_CURVE[key.curve.name]
        except KeyError:
            raise ValueError(f"unsupported curve {key.curve.name}") from None
    raise ValueError(f"unsupported key type {type(key).__name__}")


def private_key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_private_key(key: PrivateKey, path: str | os.PathLike[str]) -> Path:
    """Write ``key`` as PEM with mode 0600. Refuses to overwrite an existing file (``FileExistsError``).

    The file is written to a temporary name in the same directory and linked into place, so a crash never
    leaves a half-written key and two processes racing on first start cannot both win.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".key-", dir=target.parent)  # mkstemp creates with mode 0600
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private_key_to_pem(key))
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, target)  # atomic, fails with FileExistsError if the target exists
    finally:
        os.unlink(tmp)
    return target


def load_private_key(path: str | os.PathLike[str]) -> PrivateKey:
    """Load an unencrypted PEM private key (RSA or EC P-256/P-384)."""
    data = Path(path).read_bytes()
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise TypeError("signing key must be RSA or EC")
    default_alg_for(key)  # checks the curve
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_KEY_SIZE:
        raise ValueError("RSA signing key is shorter than 2048 bits")
    return key


# --------------------------------------------------------------------------------------------------- JWK


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_bytes(n: int, length: int | None = None) -> bytes:
    length = length or max(1, (n.bit_length() + 7) // 8)
    return n.to_bytes(length, "big")


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url without padding."""
    kty = jwk.get("kty")
    if kty == "RSA":
        members = {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}
    elif kty == "EC":
        members = {"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}
    else:
        raise ValueError(f"unsupported kty {kty!r}")
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return _b64u(hashlib.sha256(canonical).digest())


def public_jwk(key: PrivateKey | PublicKey, *, alg: str | None = None, use: str = "sig") -> dict[str, str]:
    """The public JWK of ``key`` with ``kid`` (RFC 7638 thumbprint), ``alg`` and ``use``."""
    pub = key.public_key() if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)) else key
    alg = alg or default_alg_for(pub)
    if isinstance(pub, rsa.RSAPublicKey):
        if not alg.startswith("RS"):
            raise ValueError(f"{alg} does not fit an RSA key")
        nums = pub.public_numbers()
        jwk = {"kty": "RSA", "n": _b64u(_int_bytes(nums.n)), "e": _b64u(_int_bytes(nums.e))}
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        crv = _JWK_CURVE.get(pub.curve.name)
        if crv is None or _ALG_FOR_CURVE[pub.curve.name] != alg:
            raise ValueError(f"{alg} does not fit curve {pub.curve.name}")
        nums = pub.public_numbers()
        size = _CURVE_BYTES[crv]
        jwk = {"kty": "EC", "crv": crv, "x": _b64u(_int_bytes(nums.x, size)), "y": _b64u(_int_bytes(nums.y, size))}
    else:
        raise TypeError(f"unsupported key type {type(pub).__name__}")
    jwk.update(kid=jwk_thumbprint(jwk), alg=alg, use=use)
    return jwk


def jwks_for(keys: Iterable[PrivateKey | PublicKey | Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """A public JWKS document ``{"keys": [...]}`` from keys or already-built JWKs (private members dropped)."""
    out = []
    for k in keys:
        if isinstance(k, Mapping):
            out.append(_public_members(k))
        else:
            out.append(public_jwk(k))
    return {"keys": out}


_PUBLIC_MEMBERS = {"kty", "kid", "alg", "use", "key_ops", "n", "e", "crv", "x", "y", "x5c", "x5t", "x5t#S256"}


def _public_members(jwk: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k in _PUBLIC_MEMBERS}


@dataclass(frozen=True)
class VerificationKey:
    """A public key from a JWKS, with the algorithms it may verify."""

    kid: str
    key: PublicKey
    algorithms: tuple[str, ...]

    def permits(self, alg: str) -> bool:
        return alg in self.algorithms


def verification_key_from_jwk(jwk: Mapping[str, Any]) -> VerificationKey:
    """Build a :class:`VerificationKey`; raises ``ValueError`` for keys we never verify with.

    Refused: ``oct`` and other key types, RSA shorter than 2048 bits, curves other than P-256/P-384,
    JWKs with private members, ``use`` other than ``sig``, ``key_ops`` without ``verify``.
    """
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError("JWK without kid")
    _check_public_signing_jwk(jwk)
    key, algs = _public_key(jwk)
    declared = jwk.get("alg")
    if declared is not None:
        if declared not in algs:
            raise ValueError(f"JWK alg {declared!r} does not fit the key")
        algs = (declared,)
    return VerificationKey(kid, key, algs)


def _check_public_signing_jwk(jwk: Mapping[str, Any]) -> None:
    """No private members; meant for signatures (``use`` sig, ``key_ops`` with verify)."""
    if any(m in jwk for m in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise ValueError("JWK contains private key material")
    if jwk.get("use", "sig") != "sig":
        raise ValueError("JWK use is not sig")
    if "key_ops" in jwk and "verify" not in (jwk.get("key_ops") or ()):
        raise ValueError("JWK key_ops lacks verify")


def _public_key(jwk: Mapping[str, Any]) -> tuple[PublicKey, tuple[str, ...]]:
    """(the public key, the algorithms it verifies): RSA of at least 2048 bits (RS256, RS384), or EC on P-256
    (ES256) or P-384 (ES384)."""
    kty = jwk.get("kty")
    data = json.dumps(dict(jwk))
    if kty == "RSA":
        key = _from_jwk(RSAAlgorithm, data)
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_KEY_SIZE:
            raise ValueError("RSA JWK is not a public key of at least 2048 bits")
        return key, ("RS256", "RS384")
    if kty == "EC":
        if jwk.get("crv") not in _CURVE_BYTES:
            raise ValueError("EC JWK curve must be P-256 or P-384")
        key = _from_jwk(ECAlgorithm, data)
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _ALG_FOR_CURVE:
            raise ValueError("EC JWK is not a P-256/P-384 public key")
        return key, (_ALG_FOR_CURVE[key.curve.name],)
    raise ValueError(f"unsupported kty {kty!r}")


def _from_jwk(algorithm: Any, data: str) -> Any:
    try:
        return algorithm.from_jwk(data)
    except jwt.PyJWTError as exc:
        raise ValueError(f"invalid JWK: {exc}") from None


def parse_jwks(document: Any) -> dict[str, VerificationKey]:
    """Usable keys of a JWKS document by ``kid``. Unusable keys are skipped (and logged by kid only)."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, VerificationKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, Mapping):
            continue
        try:
            vk = verification_key_from_jwk(jwk)
        except (ValueError, TypeError, KeyError) as exc:
            log.info("skipping JWK kid=%s: %s", jwk.get("kid"), exc)
            continue
        if vk.kid in keys:
            log.warning("duplicate kid %s in JWKS; keeping the first", vk.kid)
            continue
        keys[vk.kid] = vk
    return keys


# ---------------------------------------------------------------------------------------------- sources


class JWKSSource(Protocol):
    """Anything that hands out public verification keys by ``kid``."""

    def get(self, kid: str) -> VerificationKey:
        """The key with ``kid``; raises :class:`UnknownKeyError` or :class:`KeySourceUnavailableError`."""
        ...


class StaticJWKS:
    """A JWKS held in memory (a client's registered ``jwks`` value, or our own public key)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = {"keys": [dict(k) for k in document.get("keys", [])]}
        self._keys = parse_jwks(document)

    def get(self, kid: str) -> VerificationKey:
        try:
            return self._keys[kid]
        except KeyError:
            raise UnknownKeyError(kid) from None


class FileJWKS:
    """A JWKS file, re-read when its modification time or size changes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, VerificationKey] = {}

    def _load(self) -> dict[str, VerificationKey]:
        try:
            st = self.path.stat()
        except OSError as exc:
            raise KeySourceUnavailableError(f"JWKS file {self.path} unreadable: {exc.strerror}") from None
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._keys = parse_jwks(json.loads(self.path.read_text("utf-8")))
                except (OSError, ValueError) as exc:
                    raise KeySourceUnavailableError(f"JWKS file {self.path} invalid: {exc}") from None
                self._stamp = stamp
            return self._keys

    def get(self, kid: str) -> VerificationKey:
        keys = self._load()
        try:
            return keys[kid]
        except KeyError:
            raise UnknownKeyError(kid) from None


class RemoteJWKS:
    """A JWKS fetched over HTTP(S) with ``requests``.

    * cached for ``ttl`` seconds; after that the next lookup refetches;
    * an unknown ``kid`` triggers a refetch, but at most once per ``min_refresh_interval`` seconds (60), so a
      stream of tokens with made-up kids cannot turn us into a traffic amplifier;
    * if a refetch fails, the stale cache keeps serving (logged) and the next try waits ``failure_backoff``
      seconds; with no cache, :class:`KeySourceUnavailableError` (map it to 503, not 401);
    * no redirects, ``timeout`` seconds, at most 1 MB.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float = 300.0,
        timeout: float = 5.0,
        min_refresh_interval: float = 60.0,
        failure_backoff: float = 5.0,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError("JWKS URL must be http(s)")
        self.url = url
        self.ttl = ttl
        self.timeout = timeout
        self.min_refresh_interval = min_refresh_interval
        self.failure_backoff = failure_backoff
        self._session = session or requests.Session()
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, VerificationKey] | None = None
        self._fetched_at: float | None = None  # time of the last successful fetch
        self._attempted_at: float | None = None  # time of the last attempt, successful or not

    def _fetch(self) -> dict[str, VerificationKey]:
        try:
            with self._session.get(
                self.url,
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
                headers={"Accept": "application/json, application/jwk-set+json"},
            ) as resp:
                if resp.status_code != 200:
                    raise KeySourceUnavailableError(f"JWKS URL answered {resp.status_code}")
                body = b""
                for chunk in resp.iter_content(65536):
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise KeySourceUnavailableError("JWKS document too large")
            return parse_jwks(json.loads(body))
        except KeySourceUnavailableError:
            raise
        except (requests.RequestException, ValueError) as exc:
            raise KeySourceUnavailableError(f"JWKS URL unusable: {type(exc).__name__}") from None

    def _refresh(self, now: float) -> None:
        self._attempted_at = now
        try:
            self._keys = self._fetch()
            self._fetched_at = now
        except KeySourceUnavailableError as exc:
            if self._keys is None:
                raise
            log.warning("JWKS refresh from %s failed, serving cached keys: %s", self.url, exc)

    def get(self, kid: str) -> VerificationKey:
        with self._lock:
            now = self._clock()
            since_attempt = None if self._attempted_at is None else now - self._attempted_at
            if self._keys is None:
                if since_attempt is not None and since_attempt < self.failure_backoff:
                    raise KeySourceUnavailableError("JWKS unavailable (last fetch failed)")
                self._refresh(now)
            elif (self._fetched_at is None or now - self._fetched_at >= self.ttl) and (
                since_attempt is None or since_attempt >= self.failure_backoff
            ):
                self._refresh(now)
            assert self._keys is not None
            if kid not in self._keys:
                since_attempt = None if self._attempted_at is None else now - self._attempted_at
                if since_attempt is None or since_attempt >= self.min_refresh_interval:
                    self._refresh(now)
            try:
                return self._keys[kid]
            except KeyError:
                raise UnknownKeyError(kid) from None


class CompositeJWKS:
    """Several sources tried in order (e.g. our own signing key plus an external IdP's JWKS URL)."""

    def __init__(self, sources: Iterable[JWKSSource]) -> None:
        self.sources = list(sources)

    def get(self, kid: str) -> VerificationKey:
        unavailable: KeySourceUnavailableError | None = None
        for source in self.sources:
            try:
                return source.get(kid)
            except UnknownKeyError:
                continue
            except KeySourceUnavailableError as exc:
                unavailable = exc
        if unavailable is not None:
            raise unavailable
        raise UnknownKeyError(kid)


def jwks_source(*, url: str | None = None, file: str | os.PathLike[str] | None = None, **remote: Any) -> JWKSSource:
    """A source from a URL and/or a file (both -> :class:`CompositeJWKS`, file first)."""
    sources: list[JWKSSource] = []
    if file:
        sources.append(FileJWKS(file))
    if url:
        sources.append(RemoteJWKS(url, **remote))
    if not sources:
        raise ValueError("need a JWKS url or file")
    return sources[0] if len(sources) == 1 else CompositeJWKS(sources)


# ------------------------------------------------------------------------------------- local signing key


@dataclass(frozen=True)
class SigningKey:
    """A private key with its algorithm and ``kid``, ready for signing tokens."""

    private_key: PrivateKey
    alg: str
    kid: str

    @classmethod
    def from_private_key(cls, key: PrivateKey, alg: str | None = None) -> SigningKey:
        alg = alg or default_alg_for(key)
        return cls(key, alg, public_jwk(key, alg=alg)["kid"])

    def public_jwk(self) -> dict[str, str]:
        return public_jwk(self.private_key, alg=self.alg)

    def public_jwks(self) -> dict[str, list[dict[str, Any]]]:
        return {"keys": [self.public_jwk()]}

    def jwks_source(self) -> StaticJWKS:
        return StaticJWKS(self.public_jwks())


def ensure_local_signing_key(path: str | os.PathLike[str], alg: str = "ES384") -> SigningKey:
    """Load the embedded issuer's key from ``path``, creating it (mode 0600) on first run.

    ``alg`` only matters when the key is created; an existing key keeps the algorithm of its type.
    Refuses a key file readable by group or others.
    """
    p = Path(path)
    if not p.exists():
        try:
            write_private_key(generate_private_key(alg), p)
            log.info("created signing key %s", p)
        except FileExistsError:
            pass  # another process won the race; load theirs
    mode = p.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"signing key {p} has mode {mode:o}; expected 0600")
    return SigningKey.from_private_key(load_private_key(p))


# -------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.security.keys", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    gen = sub.add_parser("generate", help="create a private key file (0600) and print its public JWKS")
    gen.add_argument("--alg", default="ES384", choices=ASYMMETRIC_ALGORITHMS)
    gen.add_argument("--out", required=True)
    show = sub.add_parser("jwks", help="print the public JWKS of a private key file")
    show.add_argument("path")
    args = parser.parse_args(argv)
    if args.cmd == "generate":
        key = generate_private_key(args.alg)
        try:
            write_private_key(key, args.out)
        except FileExistsError:
            print(f"{args.out} exists; not overwritten", file=sys.stderr)
            return 1
        doc = jwks_for([public_jwk(key, alg=args.alg)])
    else:
        doc = SigningKey.from_private_key(load_private_key(args.path)).public_jwks()
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
