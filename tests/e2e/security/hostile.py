"""Helpers of the hostile-input tests: the service as the image starts it, on SQLite or PostgreSQL, and raw HTTP."""

from __future__ import annotations

import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy import create_engine, func, select

from service.adapters import orm
from service.security.keys import ensure_local_signing_key
from service.security.settings import DEV_AUDIENCE, DEV_ISSUER
from service.security.tokens import TokenIssuer
from tests.support.app import REPO_ROOT
from tests.support.processes import RunningService, run_dockerfile_cmd

BASE_URL = "https://kapfhir.test"  # KAPFHIR_BASE_URL of every service these tests start


@contextmanager
def started_service(request: pytest.FixtureRequest, backend: str, **env: str) -> Iterator[tuple[RunningService, str]]:
    """The Dockerfile's CMD (gunicorn, asyncio worker, 2 workers) on a fresh SQLite file or PostgreSQL database."""
    workdir = Path(tempfile.mkdtemp(prefix="kapfhir-hostile-"))
    if backend == "sqlite":
        url = f"sqlite:///{workdir / 'kapfhir.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database("hostile")
    service = run_dockerfile_cmd(
        REPO_ROOT,
        {
            "KAPFHIR_DATABASE_URL": url,
            "KAPFHIR_SIGNING_KEY_FILE": str(workdir / "signing-key.pem"),
            "KAPFHIR_WORKERS": "2",
            "KAPFHIR_BASE_URL": BASE_URL,
            "KAPFHIR_LOG_LEVEL": "WARNING",
            **env,
        },
    )
    try:
        yield service, url
    finally:
        service.stop()
        if backend != "sqlite":
            request.getfixturevalue("postgres").drop_database(url)


def token(service: RunningService, *, clinic: str = "demo", client_id: str = "hostile") -> str:
    key = ensure_local_signing_key(service.env["KAPFHIR_SIGNING_KEY_FILE"])
    issuer = TokenIssuer(key, issuer=DEV_ISSUER, audience=DEV_AUDIENCE)
    return issuer.issue(client_id=client_id, clinic_id=clinic, scope="system/*.cruds").access_token


def signed(service: RunningService, **claims: Any) -> str:
    """A token signed with the service's key, with the claims as given (the issuer would not write them so)."""
    key = ensure_local_signing_key(service.env["KAPFHIR_SIGNING_KEY_FILE"])
    now = int(time.time())
    values = {
        "iss": DEV_ISSUER,
        "aud": DEV_AUDIENCE,
        "sub": "hostile",
        "client_id": "hostile",
        "scope": "system/*.cruds",
        "kapfhir_clinic": "demo",
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    values.update(claims)
    return jwt.encode(values, key.private_key, algorithm=key.alg, headers={"kid": key.kid})


def audit_rows(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(orm.audit_events)).scalar_one())
    finally:
        engine.dispose()


def raw_request(port: int, data: bytes, *, timeout: float = 10.0, source: str = "127.0.0.1") -> bytes:
    """Sends ``data`` as is and returns the whole answer (the server closes the connection or the timeout ends)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and b"Connection: close" not in b"".join(chunks):
                    break
        except TimeoutError:
            pass
    return b"".join(chunks)
