"""Key fixtures shared by the unit and integration security tests (a plugin of tests/conftest.py): real keys, a real
issuer and validator, and a loopback JWKS server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from service.security.keys import SigningKey, StaticJWKS, generate_private_key
from service.security.tokens import TokenIssuer, TokenValidator

ISSUER = "https://kapfhir.test"
AUDIENCE = "https://kapfhir.test/fhir"
TOKEN_URL = "https://kapfhir.test/oauth2/token"
SERVER_LIFETIME_SECONDS = 60


@pytest.fixture(scope="session")
def es384_key() -> SigningKey:
    return SigningKey.from_private_key(generate_private_key("ES384"))


@pytest.fixture(scope="session")
def es256_key() -> SigningKey:
    return SigningKey.from_private_key(generate_private_key("ES256"))


@pytest.fixture(scope="session")
def rsa_key() -> SigningKey:
    """RSA 3072, used for RS384 (and RS256 via SigningKey(..., alg="RS256"))."""
    return SigningKey.from_private_key(generate_private_key("RS384"))


@pytest.fixture(scope="session")
def other_es384_key() -> SigningKey:
    return SigningKey.from_private_key(generate_private_key("ES384"))


@pytest.fixture
def issuer(es384_key: SigningKey) -> TokenIssuer:
    return TokenIssuer(es384_key, issuer=ISSUER, audience=AUDIENCE)


@pytest.fixture
def validator(es384_key: SigningKey) -> TokenValidator:
    return TokenValidator(issuer=ISSUER, audience=AUDIENCE, jwks=StaticJWKS(es384_key.public_jwks()))


class JWKSServer:
    """A JWKS served from 127.0.0.1 by a thread; ``document`` may be replaced, ``hits`` counts GETs."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.hits = 0
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = json.dumps(outer.document).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        # bounded lifetime: the server stops by itself even if a test never tears it down
        self.timer = threading.Timer(SERVER_LIFETIME_SECONDS, self.stop)
        self.timer.daemon = True

    def start(self) -> JWKSServer:
        self.thread.start()
        self.timer.start()
        return self

    def stop(self) -> None:
        self.timer.cancel()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks_server(es384_key: SigningKey) -> Iterator[JWKSServer]:
    server = JWKSServer(es384_key.public_jwks()).start()
    try:
        yield server
    finally:
        server.stop()
