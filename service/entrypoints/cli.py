"""The ``kapfhir`` command."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service.adapters import orm
from service.adapters.database import make_engine, make_session_factory
from service.adapters.migrations import upgrade
from service.config import Settings
from service.entrypoints.cli_output import echo_problems, on_terminal, progress
from service.entrypoints.config_report import mask_url
from service.fhir.projection import catch_up
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
    """Migrates to the current schema, registers the default clinic, creates the embedded issuer's key and
    projects to FHIR whatever was stored without a projection."""
    from service.security.keys import ensure_local_signing_key

    settings = settings or Settings.from_env()
    if settings.security.signing_key_file:
        ensure_local_signing_key(settings.security.signing_key_file)
    upgrade(settings.database_url)
    ensure_clinic(
        settings, settings.default_clinic_id, settings.default_clinic_name, settings.default_identifier_system
    )
    engine = make_engine(settings.database_url)
    try:
        catch_up(make_session_factory(engine))
    finally:
        engine.dispose()


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="show the service's own log lines (JSON) on stderr")
def main(verbose: bool) -> None:
    """kapfhir: records ketamine-assisted psychotherapy episodes and exchanges them as FHIR R4."""
    from service.entrypoints.logs import configure_logging

    # Quiet by default: warnings only, unless asked (-v) or KAPFHIR_LOG_LEVEL says otherwise. `serve` hands the
    # environment, not this, to gunicorn.
    configure_logging("INFO" if verbose else os.environ.get("KAPFHIR_LOG_LEVEL") or "WARNING")
    _cli_state["verbose"] = verbose


_cli_state: dict[str, bool] = {"verbose": False}


def _cli_settings() -> Settings:
    """Settings for a CLI command: the service's own settings, its log level as the CLI decided."""
    from dataclasses import replace

    settings = Settings.from_env()
    if _cli_state["verbose"]:
        return replace(settings, log_level="INFO")
    return replace(settings, log_level=os.environ.get("KAPFHIR_LOG_LEVEL") or "WARNING")


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to the current schema and register the default clinic."""
    prepare_database()
    click.echo("database is at the current schema")


@main.group()
def config() -> None:
    """Settings (environment variables, see README "Configuration")."""


@config.command("show")
def config_show() -> None:
    """Print the effective settings (secrets masked) and warn about contradictions between them."""
    from service.entrypoints.config_report import report

    try:
        settings = Settings.from_env()
    except Exception as exc:  # any settings error is reported as such, not as a traceback
        raise click.ClickException(f"the settings cannot be read: {exc}") from exc
    lines, warnings = report(settings)
    width = max(len(line.name) for line in lines)
    for line in lines:
        click.echo(f"{line.name:<{width}}  {line.value}  ({line.source})")
    if settings.targets:
        click.echo("note: the server (it queues sync jobs), the worker and the CLI each need these target variables.")
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


@main.group()
def clinics() -> None:
    """Clinics (tenants)."""


@clinics.command("add")
@click.option("--id", "clinic_id", required=True, help="short id, e.g. 'northside' (tokens name it)")
@click.option("--name", required=True, help="display name")
@click.option(
    "--identifier-system", required=True, help="base URI of the clinic's business identifiers (MRNs), http(s) or urn"
)
def clinics_add(clinic_id: str, name: str, identifier_system: str) -> None:
    """Register a clinic (a tenant): its data is reachable only with tokens naming it."""
    if not identifier_system.startswith(("http://", "https://", "urn:")):
        raise click.UsageError(f"--identifier-system must be a URI (http(s):// or urn:), got {identifier_system!r}")
    settings = Settings.from_env()
    prepare_database(settings)
    created = ensure_clinic(settings, clinic_id, name, identifier_system)
    click.echo(f"clinic {clinic_id} {'registered' if created else 'already registered'}")


@clinics.command("list")
def clinics_list() -> None:
    """The registered clinics: id, name, identifier system."""
    settings = Settings.from_env()
    prepare_database(settings)
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(orm.clinics).order_by(orm.clinics.c.id)).all()
    finally:
        engine.dispose()
    click.echo(f"{'id':<16}{'name':<32}identifier system")
    for row in rows:
        click.echo(f"{row.id:<16}{row.name:<32}{row.identifier_system}")


def _known_clinics(settings: Settings) -> list[str]:
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(select(orm.clinics.c.id).order_by(orm.clinics.c.id)).scalars())
    finally:
        engine.dispose()


@main.group()
def clients() -> None:
    """API clients allowed to ask /oauth2/token for access tokens."""


@clients.command("add")
@click.option("--client-id", required=True)
@click.option("--clinic", "clinic_id", required=True, help="the clinic whose data the client may reach")
@click.option("--scopes", required=True, help="allowed SMART scopes, e.g. 'system/*.rs system/Observation.c'")
@click.option(
    "--jwks",
    "jwks_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the client's public JWKS (private_key_jwt, SMART Backend Services)",
)
@click.option("--jwks-url", help="where the client publishes its public JWKS (https)")
@click.option("--secret", "with_secret", is_flag=True, help="authenticate with a generated client secret instead")
@click.option("--name", default="", help="a human-readable name")
def clients_add(
    client_id: str,
    clinic_id: str,
    scopes: str,
    jwks_file: Path | None,
    jwks_url: str | None,
    with_secret: bool,
    name: str,
) -> None:
    """Register a client. With --secret, the secret is printed once and stored only as a hash."""
    from service.adapters.security_store import SqlClientStore
    from service.security.client_auth import ClientRegistration, generate_client_secret, hash_client_secret
    from service.security.scopes import InvalidScopeError, ScopeSet

    if sum(bool(x) for x in (jwks_file, jwks_url, with_secret)) != 1:
        raise click.UsageError("give exactly one of --jwks, --jwks-url, --secret")
    try:
        ScopeSet.parse(scopes, strict=True)
    except InvalidScopeError as exc:
        raise click.UsageError(str(exc)) from exc
    settings = Settings.from_env()
    prepare_database(settings)
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            if connection.execute(select(orm.clinics.c.id).where(orm.clinics.c.id == clinic_id)).first() is None:
                raise click.UsageError(f"no clinic {clinic_id}: add it with 'kapfhir clinics add'")
        secret = generate_client_secret() if with_secret else None
        try:
            registration = ClientRegistration(
                client_id=client_id,
                clinic_id=clinic_id,
                allowed_scopes=scopes,
                name=name,
                jwks=json.loads(jwks_file.read_text()) if jwks_file else None,
                jwks_url=jwks_url,
                secret_hash=hash_client_secret(secret) if secret else None,
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        SqlClientStore(engine).add(registration)
    except IntegrityError as exc:
        raise click.ClickException(f"client {client_id} is already registered") from exc
    finally:
        engine.dispose()
    click.echo(f"client {client_id} registered for clinic {clinic_id}")
    if secret:
        click.echo(f"client secret (shown once): {secret}")


def _check_token_scope(other: Any, scope: str) -> None:
    """A token for this service carries resource scopes only, each naming an R4 resource type (or *)."""
    from fhir.resources.R4B import get_fhir_model_class
    from fhir.resources.R4B.resource import Resource

    from service.security.scopes import InvalidScopeError, parse_scope

    if other:
        raise InvalidScopeError(f"not a SMART resource scope: {' '.join(other)}")
    for item in scope.split():
        parsed = parse_scope(item)
        if parsed is None or parsed.resource_type == "*":
            continue
        try:
            known = issubclass(get_fhir_model_class(parsed.resource_type), Resource)
        except ValueError:
            known = False
        if not known:
            raise InvalidScopeError(f"{parsed.resource_type} is not a FHIR R4 resource type")


@clients.command("list")
def clients_list() -> None:
    """Registered clients: id, clinic, how they authenticate, allowed scopes, enabled or revoked."""
    from service.adapters.security_store import SqlClientStore

    settings = Settings.from_env()
    prepare_database(settings)
    engine = make_engine(settings.database_url)
    try:
        registrations = SqlClientStore(engine).all()
    finally:
        engine.dispose()
    click.echo(f"{'client id':<24}{'clinic':<12}{'auth':<16}{'status':<9}allowed scopes")
    for r in registrations:
        auth = "jwks" if r.jwks else ("jwks-url" if r.jwks_url else "secret")
        click.echo(
            f"{r.client_id:<24}{r.clinic_id:<12}{auth:<16}{'enabled' if r.enabled else 'revoked':<9}{r.allowed_scopes}"
        )


@clients.command("revoke")
@click.argument("client_id")
def clients_revoke(client_id: str) -> None:
    """Refuse every new token request of a client (tokens already issued expire within their lifetime)."""
    from service.adapters.security_store import SqlClientStore

    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    try:
        if not SqlClientStore(engine).set_enabled(client_id, False):
            raise click.ClickException(f"no client {client_id}: see 'kapfhir clients list'")
    finally:
        engine.dispose()
    click.echo(f"client {client_id} revoked: it gets no new token (tokens already issued expire by themselves)")


@clients.command("rotate-secret")
@click.argument("client_id")
def clients_rotate_secret(client_id: str) -> None:
    """Give a secret-authenticated client a new secret (printed once); the old one stops working at once."""
    from service.adapters.security_store import SqlClientStore
    from service.security.client_auth import generate_client_secret, hash_client_secret

    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    try:
        store = SqlClientStore(engine)
        registration = store.get(client_id)
        if registration is None:
            raise click.ClickException(f"no client {client_id}: see 'kapfhir clients list'")
        if registration.asymmetric:
            raise click.ClickException(
                f"client {client_id} authenticates with a key (private_key_jwt), not a secret: it rotates its own "
                "keys in its JWKS"
            )
        secret = generate_client_secret()
        store.set_secret_hash(client_id, hash_client_secret(secret))
    finally:
        engine.dispose()
    click.echo(f"client {client_id}: new secret (shown once): {secret}")


@main.command()
@click.option("--clinic", "clinic_id", default=None, help="clinic id (default KAPFHIR_DEFAULT_CLINIC)")
@click.option("--scope", default="system/*.cruds", show_default=True)
@click.option("--client-id", default="kapfhir-cli", show_default=True)
@click.option("--lifetime", default=300, show_default=True, type=click.IntRange(1, 3600), help="seconds")
def token(clinic_id: str | None, scope: str, client_id: str, lifetime: int) -> None:
    """Print a short-lived access token signed by the embedded issuer (for local use and tests)."""
    from service.security.scopes import InvalidScopeError, ScopeSet
    from service.security.tokens import build_local_issuer

    try:
        _check_token_scope(ScopeSet.parse(scope, strict=True).other, scope)
    except InvalidScopeError as exc:
        raise click.UsageError(f"--scope {scope!r}: {exc} (e.g. 'system/*.rs system/Observation.c')") from exc
    settings = Settings.from_env()
    clinic = clinic_id or settings.default_clinic_id
    try:
        known = _known_clinics(settings)
    except SQLAlchemyError as exc:
        raise click.ClickException(
            f"the database ({mask_url(settings.database_url)}) is not set up: run 'kapfhir db upgrade' first"
        ) from exc
    if clinic not in known:
        raise click.UsageError(
            f"no clinic {clinic!r}; registered: {', '.join(known) or 'none'} (add one with 'kapfhir clinics add')"
        )
    issuer = build_local_issuer(settings.security)
    issued = issuer.issue(client_id=client_id, clinic_id=clinic, scope=scope, lifetime=lifetime)
    click.echo(issued.access_token)


@main.group()
def keys() -> None:
    """Key pairs for SMART Backend Services."""


@keys.command("generate")
@click.option("--alg", type=click.Choice(["ES384", "RS384"]), default="ES384", show_default=True)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="where to write the private key (PEM, mode 0600; never overwritten)",
)
def keys_generate(alg: str, out: Path) -> None:
    """Write a private key and print the public JWKS to register with an EHR or with `kapfhir clients add`."""
    from service.security.keys import SigningKey, generate_private_key, write_private_key

    key = generate_private_key(alg)
    try:
        write_private_key(key, out)
    except FileExistsError as exc:
        raise click.ClickException(f"{out} exists; not overwritten") from exc
    click.echo(json.dumps(SigningKey.from_private_key(key, alg).public_jwks(), indent=2))


# --- exchange with EHRs ----------------------------------------------------------------------------------------

KAP_TYPES = (
    "Patient",
    "Practitioner",
    "Organization",
    "Condition",
    "EpisodeOfCare",
    "CarePlan",
    "Encounter",
    "Procedure",
    "Consent",
    "MedicationRequest",
    "MedicationAdministration",
    "MedicationStatement",
    "Observation",
    "QuestionnaireResponse",
    "AdverseEvent",
    "DetectedIssue",
    "Flag",
    "Provenance",
    "DocumentReference",
)


def _target(settings: Settings, name: str) -> Any:
    if name not in settings.targets:
        known = ", ".join(settings.targets) or "none (set KAPFHIR_TARGETS_FILE or KAPFHIR_TARGETS)"
        raise click.UsageError(f"no target {name!r}; configured: {known}")
    return settings.targets[name]


def _deliverer(settings: Settings) -> Any:
    from service.adapters.database import make_session_factory
    from service.service_layer.sync import Deliverer

    engine = make_engine(settings.database_url)
    return Deliverer(make_session_factory(engine), settings.targets, max_attempts=settings.sync_max_attempts)


@main.group()
def target() -> None:
    """EHR targets (KAPFHIR_TARGETS_FILE / KAPFHIR_TARGETS)."""


@target.command("list")
def target_list() -> None:
    for t in Settings.from_env().targets.values():
        view = t.public_view()
        click.echo(
            f"{view['name']}\t{view['base_url']}\t{view['auth']}\t{view['write_policy']}"
            f"\t{'checked live' if view['live_checked'] else 'not checked live'}"
        )


@target.command("check")
@click.argument("name")
def target_check(name: str) -> None:
    """Reachable, authenticated, FHIR version, and which KAP resource types the target accepts."""
    from service.exchange.client import FhirError
    from service.exchange.planner import parse_capabilities
    from service.exchange.targets import build_client

    settings = Settings.from_env()
    t = _target(settings, name)
    client = build_client(t)
    try:
        statement = client.capabilities(refresh=True)
    except FhirError as exc:
        raise click.ClickException(f"{name}: {t.base_url} did not answer its CapabilityStatement: {exc}") from exc
    caps = parse_capabilities(statement)
    click.echo(f"target {name}: {t.base_url}")
    click.echo(
        f"  reachable: yes   FHIR version: {statement.get('fhirVersion', '?')}   auth: {t.auth.type} (token accepted)"
    )
    click.echo(
        f"  transaction: {'yes' if caps.transaction else 'no'}   batch: {'yes' if caps.batch else 'no'}   "
        f"write policy: {t.write_policy}"
    )
    click.echo(f"  {'resource type':<26}{'create':<8}{'update':<8}{'cond. create':<14}{'search':<8}")
    for resource_type in KAP_TYPES:
        r = caps.type(resource_type)
        marks = [r.create, r.update, r.conditional_create, r.search] if r else [False] * 4
        click.echo(
            f"  {resource_type:<26}"
            + "".join(f"{'yes' if m else '-':<{w}}" for m, w in zip(marks, (8, 8, 14, 8), strict=True))
        )


@main.command()
@click.option("--target", "target_name", required=True)
@click.option("--episode", "episode_id", default=None, help="one episode (default: --all)")
@click.option("--all", "push_all", is_flag=True, help="every episode of every clinic")
def push(target_name: str, episode_id: str | None, push_all: bool) -> None:
    """Push episodes to a target now (queue, deliver, report)."""
    from service.adapters import outbox

    if bool(episode_id) == push_all:
        raise click.UsageError("give --episode ID or --all")
    settings = _cli_settings()
    _target(settings, target_name)
    deliverer = _deliverer(settings)
    keys = _episode_keys(deliverer, episode_id, push_all)
    if not keys:
        raise click.ClickException("no episode to push")
    totals: dict[str, dict[str, int]] = {}
    adapted: dict[tuple[str, str], int] = {}  # (type, what was adapted) -> resources
    failed = held = 0
    deliveries = []
    with progress(keys, label=f"pushing to {target_name}") as bar:
        for clinic_id, eid in bar:
            job = _queue_one(deliverer, clinic_id, eid, target_name)
            delivery = deliverer.deliver(job)
            deliveries.append(delivery)
            held += delivery.status == outbox.HELD
            failed += delivery.status in (outbox.DEAD, outbox.QUEUED)
            if delivery.report:
                _add_report(delivery.report, totals, adapted)
    _echo_push_totals(target_name, totals, adapted)
    echo_problems(deliveries)
    click.echo(f"episodes: {len(keys)}, held: {held}, failed: {failed}")
    if failed:
        raise SystemExit(1)


def _episode_keys(deliverer: Any, episode_id: str | None, push_all: bool) -> list[tuple[str, str]]:
    """(clinic id, episode id) of every episode (``push_all``) or of the one episode given."""
    from sqlalchemy import select as sql_select

    from service.adapters import outbox

    with deliverer.session_factory() as session:
        if push_all:
            return outbox.all_episode_keys(session)
        return [
            (r.clinic_id, r.id)
            for r in session.execute(
                sql_select(orm.episodes.c.clinic_id, orm.episodes.c.id).where(orm.episodes.c.id == episode_id)
            )
        ]


def _add_report(report: Any, totals: dict[str, dict[str, int]], adapted: dict[tuple[str, str], int]) -> None:
    """Add one delivery's outcomes per resource type, and what was adapted for the target, to the totals."""
    for resource_type, counts in report.counts().items():
        for outcome, n in counts.items():
            totals.setdefault(resource_type, {}).setdefault(outcome, 0)
            totals[resource_type][outcome] += n
    for item in report.adapted():
        adapted[(item["type"], item["detail"])] = adapted.get((item["type"], item["detail"]), 0) + item["count"]


def _echo_push_totals(target_name: str, totals: dict[str, dict[str, int]], adapted: dict[tuple[str, str], int]) -> None:
    """A table of outcomes per resource type, then what was sent differently so that this target takes it."""
    from service.exchange.push import CREATED, EXISTING, FAILED, SKIPPED, UPDATED

    outcomes = (CREATED, EXISTING, UPDATED, SKIPPED, FAILED)
    if totals:  # nothing was sent when every episode was held
        click.echo(f"{'resource type':<26}" + "".join(f"{o.replace('-', ' '):<15}" for o in outcomes))
    for resource_type in sorted(totals):
        click.echo(f"{resource_type:<26}" + "".join(f"{totals[resource_type].get(o, 0):<15}" for o in outcomes))
    if adapted:
        click.echo(f"adapted for {target_name}:")
        for (resource_type, detail), n in adapted.items():
            click.echo(f"  {resource_type} x{n}: {detail}")


def _queue_one(deliverer: Any, clinic_id: str, episode_id: str, target_name: str) -> Any:
    from datetime import timedelta

    from service.adapters import outbox
    from service.service_layer.unit_of_work import UnitOfWork

    now = datetime.now(UTC)
    with UnitOfWork(deliverer.session_factory, clinic_id, write=True) as uow:
        outbox.enqueue(uow.session, clinic_id, episode_id, (target_name,), now)
        uow.commit()
    with UnitOfWork(deliverer.session_factory, clinic_id, write=True) as uow:
        job = next(j for j in outbox.jobs_of(uow.session, clinic_id, episode_id) if j.target == target_name)
        t = orm.sync_jobs
        from sqlalchemy import update as sql_update

        uow.session.execute(
            sql_update(t).where(t.c.id == job.id).values(locked_by="cli", locked_until=now + timedelta(minutes=5))
        )
        uow.commit()
    return job


@main.command("pull-patient")
@click.option("--target", "target_name", required=True)
@click.option("--mrn", required=True, help="the MRN value")
@click.option("--system", "mrn_system", default=None, help="the MRN system (default: the local patient's)")
@click.option("--clinic", "clinic_id", default=None)
@click.option("--conditions", is_flag=True, help="also list the patient's Conditions as candidate indications")
def pull_patient_command(
    target_name: str, mrn: str, mrn_system: str | None, clinic_id: str | None, conditions: bool
) -> None:
    """Find the Patient on a target by MRN and link it to the local patient (differences are reported,
    local demographics are never overwritten)."""
    from service.exchange.client import FhirError
    from service.exchange.push import pull_patient

    settings = _cli_settings()
    t = _target(settings, target_name)
    deliverer = _deliverer(settings)
    clinic = clinic_id or settings.default_clinic_id
    local = _local_patient(deliverer, clinic, mrn)
    system = mrn_system or (local.mrn.system if local else None)
    if system is None:
        raise click.UsageError(
            f"clinic {clinic} has no patient with MRN {mrn}, so there is nothing to link and no MRN system to search "
            f"{target_name} with. Register the patient first (POST /api/v1/patients), or give --system to only look "
            "the MRN up on the target."
        )
    try:
        result = pull_patient(t, system, mrn, local=local, conditions=conditions)
    except FhirError as exc:
        raise click.ClickException(f"{target_name} ({t.base_url}) could not be searched: {exc}") from exc
    if not result.found:
        raise click.ClickException(f"MRN {system}|{mrn} on {target_name}: {result.reason}")
    click.echo(f"found Patient/{result.patient_id} on {target_name}")
    _echo_differences(target_name, result, local)
    if conditions and not result.conditions:
        click.echo(f"  no Conditions for this patient on {target_name}")
    for c in result.conditions:
        click.echo(_candidate_line(c))
    if local is not None:
        _link_patient(deliverer, clinic, local.id, target_name, result.patient_id)
        click.echo(f"linked local patient {local.id} to Patient/{result.patient_id}; their episodes are queued")


def _local_patient(deliverer: Any, clinic: str, mrn: str) -> Any:
    """The clinic's patient with this MRN value, or None."""
    from service.service_layer.unit_of_work import UnitOfWork

    with UnitOfWork(deliverer.session_factory, clinic, write=False) as uow:
        rows = (
            uow.session.execute(
                select(orm.patients.c.id).where(orm.patients.c.clinic_id == clinic, orm.patients.c.mrn_value == mrn)
            )
            .scalars()
            .all()
        )
        return uow.repo.get_patient(rows[0]) if rows else None


def _echo_differences(target_name: str, result: Any, local: Any) -> None:
    """Demographics that differ between the local patient and the target's (reported, never changed)."""
    if local is not None and not result.differences:
        click.echo("  demographics: same as the local patient")
    for difference in result.differences:
        click.echo(
            f"  differs: {difference.field}: here {difference.local!r}, on {target_name} {difference.remote!r} "
            "(not changed anywhere)"
        )


def _candidate_line(c: Any) -> str:
    """One of the target's Conditions as a candidate indication: codes, clinical status, the kind it suggests."""
    codes = ", ".join(
        x for x in (f"ICD-10-CM {c.icd10cm}" if c.icd10cm else "", f"SNOMED CT {c.snomed}" if c.snomed else "") if x
    )
    return (
        f"  candidate indication: Condition/{c.condition_id} {c.display or '(no text)'}"
        f" [{codes or 'no ICD-10-CM or SNOMED CT code'}] clinical status {c.clinical_status or 'unknown'}"
        + (f"; would be a {c.suggested_kind} indication" if c.suggested_kind else "")
    )


def _link_patient(deliverer: Any, clinic: str, patient_id: str, target_name: str, remote_id: str) -> None:
    """Store the link to the target's Patient and queue the patient's episodes for that target."""
    from service.adapters import outbox
    from service.service_layer.unit_of_work import UnitOfWork

    with UnitOfWork(deliverer.session_factory, clinic, write=True) as uow:
        outbox.link_patient(uow.session, clinic, patient_id, target_name, remote_id, datetime.now(UTC))
        for episode_id in uow.repo.episode_ids_of(patient_id):
            outbox.enqueue(uow.session, clinic, episode_id, (target_name,), datetime.now(UTC))
        uow.commit()


@main.command()
@click.option("--poll", default=1.0, show_default=True, help="seconds between looks when idle")
@click.option("--once", is_flag=True, help="deliver what is due, then exit")
@click.option("--name", "worker_name", default=None, help="worker id (default host:pid)")
def worker(poll: float, once: bool, worker_name: str | None) -> None:
    """Deliver queued episodes to the targets (run several at once on PostgreSQL; one on SQLite)."""
    import signal
    import socket
    import threading

    from service.adapters import outbox
    from service.service_layer.sync import run_worker

    settings = _cli_settings()
    prepare_database(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    name = worker_name or f"{socket.gethostname()}:{os.getpid()}"

    def report(delivery: Any) -> None:
        if on_terminal():  # a running count on a terminal; a long-running worker prints only problems
            click.echo(f"\rworker {name}: {len(done_so_far) + 1} job(s) handled", nl=False, err=True)
        done_so_far.append(delivery)
        if not once:
            echo_problems([delivery])

    done_so_far: list[Any] = []
    done = run_worker(
        _deliverer(settings), worker=name, stop=stop, poll_seconds=poll, exit_when_idle=once, on_delivery=report
    )
    if on_terminal() and done:
        click.echo("", err=True)
    if once:
        echo_problems(done)
    counts = {status: sum(d.status == status for d in done) for status in (outbox.DELIVERED, outbox.HELD)}
    failed = len(done) - sum(counts.values())
    click.echo(
        f"worker {name}: {len(done)} job(s) handled: {counts[outbox.DELIVERED]} delivered, "
        f"{counts[outbox.HELD]} held, {failed} failed"
    )


@main.command("load-fixtures")
@click.option("--directory", type=click.Path(path_type=Path, exists=True, file_okay=False), default=DEFAULT_FIXTURES)
@click.option("--if-empty", is_flag=True, help="load only into a database without patients")
def load_fixtures(directory: Path, if_empty: bool) -> None:
    """Record the synthetic fixture episodes through the API, into the default clinic."""
    from service.entrypoints.app import create_app

    settings = _cli_settings()
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

    paths = fixture_paths(directory)
    requests_sent = 0

    def counted(method: str, path: str, body: Any) -> tuple[int, Any]:
        nonlocal requests_sent
        requests_sent += 1
        return send(method, path, body)

    with progress(paths, label=f"loading {len(paths)} fixture episode(s)") as bar:
        for path in bar:
            try:
                replay(load_fixture(path), counted)
            except FixtureError as exc:
                raise click.ClickException(f"{path.name}: {exc}") from exc
            if not on_terminal():
                click.echo(f"loaded {path.name}")
    click.echo(
        f"loaded {len(paths)} fixture episode(s) into clinic {settings.default_clinic_id}"
        f" ({requests_sent} API requests)"
    )


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
        "service.entrypoints.asgi:app",
    ]
    os.execv(args[0], args)  # noqa: S606 - replaces this process with gunicorn, fixed arguments


@main.command("openapi")
@click.option("--write", is_flag=True, help="rewrite openapi.yaml instead of printing it")
def openapi_command(write: bool) -> None:
    """The OpenAPI document of the running code (openapi.yaml is this, written out)."""
    from service.entrypoints.app import create_app
    from service.entrypoints.openapi import build_spec
    from service.entrypoints.pages import openapi_text

    text = openapi_text(build_spec(create_app(Settings(database_url="sqlite://"))))
    if write:
        (REPO_ROOT / "openapi.yaml").write_text(text)
        click.echo("openapi.yaml written")
    else:
        click.echo(text)


if __name__ == "__main__":
    main()
