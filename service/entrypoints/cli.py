"""The ``kapfhir`` command."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy import func, insert, select

from service.adapters import orm
from service.adapters.database import make_engine
from service.adapters.migrations import upgrade
from service.config import Settings
from service.fixture_loader import FixtureError, fixture_paths, load_fixture, replay

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FIXTURES = REPO_ROOT / "fixtures" / "episodes"


def ensure_clinic(settings: Settings, clinic_id: str, name: str, identifier_system: str) -> bool:
    engine = make_engine(settings.database_url)
    try:
        with engine.begin() as connection:
            exists = connection.execute(select(orm.clinics.c.id).where(orm.clinics.c.id == clinic_id)).first()
            if exists:
                return False
            connection.execute(
                insert(orm.clinics).values(
                    id=clinic_id, name=name, identifier_system=identifier_system, created_at=datetime.now(UTC)
                )
            )
            return True
    finally:
        engine.dispose()


def prepare_database(settings: Settings | None = None) -> None:
    """Migrates to the current schema and registers the default clinic."""
    settings = settings or Settings.from_env()
    upgrade(settings.database_url)
    ensure_clinic(
        settings, settings.default_clinic_id, settings.default_clinic_name, settings.default_identifier_system
    )


@click.group()
def main() -> None:
    """kapfhir: records ketamine-assisted psychotherapy episodes and exchanges them as FHIR R4."""


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to the current schema and register the default clinic."""
    prepare_database()
    click.echo("database is at the current schema")


@main.group()
def clinics() -> None:
    """Clinics (tenants)."""


@clinics.command("add")
@click.option("--id", "clinic_id", required=True)
@click.option("--name", required=True)
@click.option("--identifier-system", required=True, help="base URI of the clinic's business identifiers")
def clinics_add(clinic_id: str, name: str, identifier_system: str) -> None:
    created = ensure_clinic(Settings.from_env(), clinic_id, name, identifier_system)
    click.echo(f"clinic {clinic_id} {'registered' if created else 'already registered'}")


@main.command("load-fixtures")
@click.option("--directory", type=click.Path(path_type=Path, exists=True, file_okay=False), default=DEFAULT_FIXTURES)
@click.option("--if-empty", is_flag=True, help="load only into a database without patients")
def load_fixtures(directory: Path, if_empty: bool) -> None:
    """Record the synthetic fixture episodes through the API, into the default clinic."""
    from service.entrypoints.app import create_app

    settings = Settings.from_env()
    prepare_database(settings)
    if if_empty:
        engine = make_engine(settings.database_url)
        with engine.connect() as connection:
            patients = connection.execute(select(func.count()).select_from(orm.patients)).scalar_one()
        engine.dispose()
        if patients:
            click.echo(f"database already holds {patients} patient(s); fixtures not loaded")
            return
    app = create_app(settings)
    client = app.test_client()
    issuer = app.extensions["kapfhir.security"].issuer
    token = issuer.issue(client_id="kapfhir-cli", clinic_id=settings.default_clinic_id, scope="system/*.cruds")
    headers = {"Authorization": f"Bearer {token.access_token}"}

    def send(method: str, path: str, body: Any) -> tuple[int, Any]:
        response = client.open(f"/api/v1{path}", method=method, json=body, headers=headers)
        return response.status_code, response.get_json(silent=True)

    for path in fixture_paths(directory):
        try:
            replay(load_fixture(path), send)
        except FixtureError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"loaded {path.name}")


@main.command()
@click.option("--bind", default=None, help="host:port (default KAPFHIR_BIND or 127.0.0.1:8000)")
def serve(bind: str | None) -> None:
    """Serve the API with gunicorn (config: gunicorn.conf.py)."""
    if bind:
        os.environ["KAPFHIR_BIND"] = bind
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        str(REPO_ROOT / "gunicorn.conf.py"),
        "service.entrypoints.wsgi:app",
    ]
    os.execv(args[0], args)  # noqa: S606 - replaces this process with gunicorn, fixed arguments


@main.command("openapi")
@click.option("--write", is_flag=True, help="rewrite openapi.yaml instead of printing it")
def openapi_command(write: bool) -> None:
    """The OpenAPI document of the running code (openapi.yaml is this, written out)."""
    import yaml

    from service.entrypoints.app import create_app
    from service.entrypoints.openapi import build_spec

    text = yaml.safe_dump(build_spec(create_app(Settings(database_url="sqlite://"))), sort_keys=False, width=120)
    if write:
        (REPO_ROOT / "openapi.yaml").write_text(text)
        click.echo("openapi.yaml written")
    else:
        click.echo(text)


if __name__ == "__main__":
    main()
