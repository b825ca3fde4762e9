"""Client registrations and assertion replay protection, in the database (so that every worker agrees)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from service.adapters import orm
from service.security.client_auth import ClientRegistration


class SqlClientStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, client_id: str) -> ClientRegistration | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(orm.oauth_clients).where(orm.oauth_clients.c.client_id == client_id)
            ).one_or_none()
        if row is None:
            return None
        return ClientRegistration(
            client_id=row.client_id,
            clinic_id=row.clinic_id,
            allowed_scopes=row.allowed_scopes,
            jwks=row.jwks,
            jwks_url=row.jwks_url,
            secret_hash=row.secret_hash,
            name=row.name,
            enabled=row.enabled,
        )

    def all(self) -> list[ClientRegistration]:
        with self.engine.connect() as connection:
            ids = connection.execute(select(orm.oauth_clients.c.client_id).order_by(orm.oauth_clients.c.client_id))
            client_ids = list(ids.scalars())
        return [r for r in (self.get(client_id) for client_id in client_ids) if r is not None]

    def set_enabled(self, client_id: str, enabled: bool) -> bool:
        """False when there is no such client."""
        with self.engine.begin() as connection:
            t = orm.oauth_clients
            return connection.execute(update(t).where(t.c.client_id == client_id).values(enabled=enabled)).rowcount > 0

    def set_secret_hash(self, client_id: str, secret_hash: str) -> None:
        with self.engine.begin() as connection:
            t = orm.oauth_clients
            connection.execute(update(t).where(t.c.client_id == client_id).values(secret_hash=secret_hash))

    def add(self, registration: ClientRegistration) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                insert(orm.oauth_clients).values(
                    client_id=registration.client_id,
                    clinic_id=registration.clinic_id,
                    name=registration.name or registration.client_id,
                    allowed_scopes=registration.allowed_scopes,
                    jwks=dict(registration.jwks) if registration.jwks else None,
                    jwks_url=registration.jwks_url,
                    secret_hash=registration.secret_hash,
                    enabled=registration.enabled,
                    created_at=datetime.now(UTC),
                )
            )


class SqlReplayStore:
    """``remember`` is atomic through the primary key: a second insert of the same (client, jti) fails."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def remember(self, client_id: str, jti: str, expires_at: int) -> bool:
        t = orm.oauth_assertion_jti
        try:
            with self.engine.begin() as connection:
                connection.execute(delete(t).where(t.c.expires_at < int(time.time())))
                connection.execute(insert(t).values(client_id=client_id, jti=jti, expires_at=int(expires_at)))
        except IntegrityError:
            return False
        return True
