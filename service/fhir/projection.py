"""The FHIR projection: resources mapped from the domain by ``mappings.bundle.map_chart`` (one source of truth),
kept with every version.

Every write's unit of work projects what its commands changed before it commits (the use cases collect the
aggregate's events; ``service.fhir.projector`` calls ``project_changes``): the affected part of the chart (or all of
it, when its context changed) is mapped and a new version is stored of each resource whose JSON changed (an
unchanged resource keeps its version), plus one Provenance of that write whose targets are exactly the versions
it stored. ``catch_up`` projects, once at start-up, episodes stored without a projection (``sync_clinic`` finds
them by their fingerprint: episode, patient, body weights and practitioners).

Logical ids are the uuid5 of the mapping's fullUrls (``urn:uuid:<id>``), so the same record always has the same
id; references between projected resources are rewritten from ``urn:uuid:`` to ``Type/id``.
"""

from __future__ import annotations

import functools
import hashlib
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.orm import Session

from mappings import datatypes as dt
from mappings.bundle import ChartPart, latest_time, map_chart, reference_targets
from mappings.context import PATIENT, Mapped, MappingContext, full_url_of
from mappings.resources import provenance
from service.adapters import orm
from service.adapters.database import bulk_insert, upsert_insert
from service.adapters.fhir_store import fhir_projection_state, fhir_resources, fhir_search_index
from service.adapters.repository import Repository
from service.domain.chart import EpisodeChart
from service.domain.model import BodyWeight
from service.fhir.registry import TYPES
from service.service_layer.services import practitioner_refs
from service.service_layer.unit_of_work import EpisodeChanges

NOT_IN_PATIENT_COMPARTMENT = {"Organization", "Practitioner"}


def as_served(resource: dict, version: int, last_updated: datetime) -> dict:
    """The resource as a read serves it: meta.versionId and meta.lastUpdated of its stored version, and
    resourceType, id and meta first (``served_bytes`` recognises a body stored so)."""
    body = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
    meta = {k: v for k, v in resource.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    return {
        "resourceType": resource["resourceType"],
        "id": resource["id"],
        "meta": {"versionId": str(version), "lastUpdated": instant(last_updated), **meta},
        **body,
    }


def served_bytes(row: Any) -> bytes | None:
    """The stored body of a ``read_row`` as the read serves it, without parsing it; None for a body stored before
    bodies carried their version (``Stored.resource`` serves those)."""
    head = f'{{"resourceType":"{row.resource_type}","id":"{row.id}","meta":{{"versionId":"{row.version_id}",'
    return row.body.encode() if row.body.startswith(head) else None


@dataclass(frozen=True)
class Stored:
    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    body: dict
    episode_id: str | None = None  # the episode whose projection holds it (None: a patient or practitioner alone)

    def resource(self) -> dict:
        """The resource as served: meta.versionId and meta.lastUpdated from the stored version."""
        return as_served(self.body, self.version_id, self.last_updated)


def instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _hash(body: dict) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


_REFERENCE = re.compile(rb'"reference":"(urn:uuid:[0-9a-f-]{36})"')


def _rewritten(resource: dict, swaps: dict[bytes, bytes]) -> dict:
    """A fresh copy of the resource with its ``reference`` values rewritten from ``urn:uuid:`` fullUrls to
    ``Type/id`` (``swaps``: see ``_reference_swaps``): one orjson round trip (orjson writes ``"reference":"..."``
    compactly): cheaper than a deep copy plus a walk of every node."""
    return orjson.loads(_REFERENCE.sub(lambda m: swaps.get(m.group(1), m.group(0)), orjson.dumps(resource)))


def _reference_swaps(urls: dict[str, str]) -> dict[bytes, bytes]:
    """fullUrl -> the whole ``"reference":"Type/id"`` to put in its place, encoded once per chart."""
    return {url.encode(): b'"reference":' + orjson.dumps(target) for url, target in urls.items()}


def chart_resources(chart: EpisodeChart, part: ChartPart | None = None) -> tuple[list[dict], Any]:
    """Every resource of the chart (or of a part of it) as the FHIR API serves it: ``id`` set, references as
    ``Type/id``; and the function that makes the Provenance of a write from what it changed."""
    ctx, mapped = map_chart(chart, part)
    items = [(ctx.full_url(m.resource["resourceType"], m.kind, m.value), m.resource) for m in mapped]
    swaps = _reference_swaps(reference_targets(ctx))

    def provenance_of(changed: list[tuple[str, str, int]], recorded: datetime) -> dict:
        """One Provenance per write: its targets are the versions this write stored (``Type/id/_history/n``)."""
        targets = [(f"urn:uuid:{rid}|{rtype}", version) for rtype, rid, version in changed]
        prov = provenance.to_provenance(ctx, targets, dt.instant(recorded))
        prov["target"] = [{"reference": f"{rtype}/{rid}/_history/{version}"} for rtype, rid, version in changed]
        return _served(f"urn:uuid:{prov['id']}", prov, swaps)

    return [_served(url, resource, swaps) for url, resource in items], provenance_of


def served_alone(ctx: MappingContext, mapped: Mapped) -> dict:
    """One resource mapped outside a chart's projection (a patient or practitioner before any episode names them,
    a patient's body weight), as the FHIR API serves it, as ``chart_resources`` serves a chart's."""
    url = ctx.full_url(mapped.resource["resourceType"], mapped.kind, mapped.value)
    return _served(url, mapped.resource, _reference_swaps(reference_targets(ctx)))


def _served(url: str, resource: dict, swaps: dict[bytes, bytes]) -> dict:
    """A mapped resource as the FHIR API serves it: ``id`` from its fullUrl, references as ``Type/id``."""
    body = _rewritten(resource, swaps)
    body.pop("id", None)
    return {"resourceType": body.pop("resourceType"), "id": url.removeprefix("urn:uuid:"), **body}


def patient_compartment(chart: EpisodeChart) -> str:
    """``Patient/{id}`` of the chart's patient: the compartment of every resource of the chart."""
    base = chart.clinic.identifier_system.rstrip("/")
    return "Patient/" + full_url_of(base, "Patient", PATIENT, chart.patient.id).removeprefix("urn:uuid:")


def _merge_security(new: dict, old: dict) -> None:
    """A resource several charts produce (Patient, Practitioner, ...) keeps the union of their labels: the more
    restrictive labelling wins, and refreshing one chart after another does not flip versions."""
    labels = list(new.get("meta", {}).get("security", []))
    for label in old.get("meta", {}).get("security", []):
        if label not in labels:
            labels.append(label)
    if labels and "meta" in new:
        new["meta"]["security"] = labels


def _last_updated(body: dict, previous: datetime | None, now: datetime) -> datetime:
    mapped = body.get("meta", {}).get("lastUpdated")
    when = dt.parse_datetime(mapped) if mapped else now
    if previous is not None and when <= previous:
        when = max(now, previous)
    return when


StoredVersions = dict[tuple[str, str], tuple[int, bool]]  # (type, id) -> (version, changed)
_Change = tuple[tuple[str, str], dict, Any, str]  # (type, id), resource, its current row or None, content hash


def store_resources(
    session: Session,
    clinic_id: str,
    resources: list[dict],
    *,
    episode_id: str | None,
    patient_ref: str | None,
    now: datetime,
) -> StoredVersions:
    """Stores a new version of each resource whose content changed. -> (type, id): (version, changed).

    A handful of statements for all the resources, not per resource: a write changes a dozen resources and an
    ingested transaction a hundred, and per-statement overhead (a network round trip on PostgreSQL) adds up."""
    unique = list({(r["resourceType"], r["id"]): r for r in reversed(resources)}.items())[::-1]  # first one wins
    result, changes = _changes(session, clinic_id, unique)
    if not changes:
        return result
    replaced = [key for key, _, row, _ in changes if row is not None]
    _retire(session, clinic_id, replaced)
    rows = _version_rows(clinic_id, changes, episode_id=episode_id, patient_ref=patient_ref, now=now)
    stored = _insert_versions(session, rows)
    _reindex(
        session,
        clinic_id,
        [resource for key, resource, _, _ in changes if key in stored],
        replaced=[key for key in replaced if key in stored],
    )
    for (key, _, _, _), row in zip(changes, rows, strict=True):
        result[key] = (row["version_id"], key in stored)
    return result


def _changes(
    session: Session, clinic_id: str, unique: list[tuple[tuple[str, str], dict]]
) -> tuple[StoredVersions, list]:
    """(the unchanged resources with their current version, the resources whose content differs from it)."""
    t = fhir_resources
    columns = (t.c.version_id, t.c.content_hash, t.c.last_updated)
    current = {
        (row.resource_type, row.id): row for row in _current_rows(session, clinic_id, [k for k, _ in unique], columns)
    }
    result: StoredVersions = {}
    differing = []
    for key, resource in unique:
        row = current.get(key)
        if row is not None and row.content_hash == _hash(resource):
            result[key] = (row.version_id, False)
        else:
            differing.append((key, resource, row))
    # Only a resource that differs can differ by the labels another chart gave it: read those bodies only.
    bodies = _current_bodies(session, clinic_id, [key for key, _, row in differing if row is not None])
    changes: list[_Change] = []
    for key, resource, row in differing:
        if row is not None:
            _merge_security(resource, bodies[key])
        digest = _hash(resource)
        if row is not None and row.content_hash == digest:
            result[key] = (row.version_id, False)
        else:
            changes.append((key, resource, row, digest))
    return result, changes


def _retire(session: Session, clinic_id: str, replaced: list[tuple[str, str]]) -> None:
    """The current versions of ``replaced`` stop being current."""
    for which, params in _key_batches(session, replaced):
        session.execute(_RETIRE[which], {"w_clinic_id": clinic_id, **params})


def _by_keys(table: Any, statement_of: Any) -> tuple[Any, Any]:
    """The pair of statements ``_key_batches`` binds: for the ids of one type, and for (type, id) keys. Built once:
    every write runs them, and building a statement costs twice what running a cached one does."""
    by_type = and_(table.c.resource_type == bindparam("rtype"), table.c.id.in_(bindparam("ids", expanding=True)))
    by_key = tuple_(table.c.resource_type, table.c.id).in_(bindparam("keys", expanding=True))
    return statement_of(by_type), statement_of(by_key)


def _key_batches(session: Session, keys: list[tuple[str, str]]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(which of a ``_by_keys`` pair, its parameters) for the rows of (type, id)s that the (clinic, type, id) index
    finds, up to 500 keys each. PostgreSQL probes the index for each pair of a row-value IN (a BitmapOr), so one
    statement serves all types. SQLite probes an index only by the columns of a row-value IN it can match one by
    one: ``(type, id) IN (...)`` made it walk every row of the clinic (tests/integration/fhir/test_query_plans.py),
    so it gets one per type."""
    if session.get_bind().dialect.name == "postgresql":
        for start in range(0, len(keys), 500):
            yield 1, {"keys": keys[start : start + 500]}
        return
    by_type: dict[str, list[str]] = {}
    for rtype, rid in keys:
        by_type.setdefault(rtype, []).append(rid)
    for rtype, ids in by_type.items():
        for start in range(0, len(ids), 500):
            yield 0, {"rtype": rtype, "ids": ids[start : start + 500]}


_RETIRE = _by_keys(
    fhir_resources,
    lambda rows: (
        update(fhir_resources)
        .where(fhir_resources.c.clinic_id == bindparam("w_clinic_id"), rows, fhir_resources.c.is_current.is_(True))
        .values(is_current=False)
    ),
)
_UNINDEX = _by_keys(
    fhir_search_index,
    lambda rows: delete(fhir_search_index).where(fhir_search_index.c.clinic_id == bindparam("w_clinic_id"), rows),
)


def _version_rows(
    clinic_id: str, changes: list[_Change], *, episode_id: str | None, patient_ref: str | None, now: datetime
) -> list[dict[str, Any]]:
    rows = []
    for (rtype, rid), resource, row, digest in changes:
        version = 1 if row is None else row.version_id + 1
        when = _last_updated(resource, row.last_updated if row is not None else None, now)
        rows.append(
            {
                "clinic_id": clinic_id,
                "resource_type": rtype,
                "id": rid,
                "version_id": version,
                "is_current": True,
                "last_updated": when,
                "episode_id": episode_id,
                "patient_ref": None if rtype in NOT_IN_PATIENT_COMPARTMENT else patient_ref,
                "content_hash": digest,
                "body": orjson.dumps(as_served(resource, version, when)).decode(),
            }
        )
    return rows


def _insert_versions(session: Session, rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """Inserts the new versions; -> those stored. Resources shared by episodes (the clinic's Organization, a
    Practitioner, the Patient) may be projected by two transactions at once on PostgreSQL: the first one's version
    stands. One executemany, compiled once per process, that SQLAlchemy sends as multi-row INSERTs with RETURNING."""
    return {(r.resource_type, r.id) for r in session.execute(_insert_versions_statement(upsert_insert(session)), rows)}


@functools.cache
def _insert_versions_statement(dialect_insert: Any) -> Any:
    t = fhir_resources
    return (
        dialect_insert(t)
        .on_conflict_do_nothing(index_elements=["clinic_id", "resource_type", "id", "version_id"])
        .returning(t.c.resource_type, t.c.id)
    )


def _current_bodies(session: Session, clinic_id: str, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    t = fhir_resources
    rows = _current_rows(session, clinic_id, keys, (t.c.body,))
    return {(row.resource_type, row.id): orjson.loads(row.body) for row in rows}


def _reindex(session: Session, clinic_id: str, resources: list[dict], *, replaced: list[tuple[str, str]]) -> None:
    """Replaces the search index rows of the resources: a DELETE for those that had a version before (``replaced``:
    a new resource has no rows; one per type on SQLite, see ``_key_batches``), one INSERT for all."""
    from service.fhir.values import index_rows

    for which, params in _key_batches(session, replaced):
        session.execute(_UNINDEX[which], {"w_clinic_id": clinic_id, **params})
    s = fhir_search_index
    rows = [
        {"clinic_id": clinic_id, "resource_type": r["resourceType"], "id": r["id"], **row}
        for r in resources
        for row in index_rows(r, TYPES[r["resourceType"]].params)
    ]
    bulk_insert(session, s, rows)


def refresh_projection(
    session: Session,
    clinic_id: str,
    chart: EpisodeChart,
    now: datetime,
    part: ChartPart | None = None,
    fingerprint: str | None = None,
) -> dict[tuple[str, str], tuple[int, bool]]:
    """Maps the chart (or only ``part`` of it) and stores new versions of what changed, in the caller's transaction.
    Call it after an episode (or its patient, body weights, practitioners) was saved."""
    resources, provenance_of = chart_resources(chart, part)
    patient_ref = patient_compartment(chart)
    result = store_resources(
        session, clinic_id, resources, episode_id=chart.episode.id, patient_ref=patient_ref, now=now
    )
    changed = sorted((rtype, rid, version) for (rtype, rid), (version, stored) in result.items() if stored)
    if changed:
        prov = provenance_of(changed, max(now, latest_time(chart)))
        result |= store_resources(
            session, clinic_id, [prov], episode_id=chart.episode.id, patient_ref=patient_ref, now=now
        )
    if fingerprint is None:
        fingerprint = fingerprints(session, clinic_id, [chart.episode.id]).get(chart.episode.id)
    if fingerprint is not None:
        params = {"w_clinic_id": clinic_id, "w_episode_id": chart.episode.id, "new_fingerprint": fingerprint, "at": now}
        done = session.execute(_SAVE_FINGERPRINT, params)
        if done.rowcount == 0:
            st = fhir_projection_state
            session.execute(
                insert(st).values(
                    clinic_id=clinic_id, episode_id=chart.episode.id, fingerprint=fingerprint, projected_at=now
                )
            )
    return result


def project_changes(
    session: Session, clinic_id: str, chart: EpisodeChart, changes: EpisodeChanges, now: datetime
) -> dict[tuple[str, str], tuple[int, bool]]:
    """Maps and stores only what ``changes`` affect (see ``ChartPart``); the whole chart when its context changed
    since it was last projected, or when the changes do not say enough to know."""
    fingerprint = fingerprints(session, clinic_id, [chart.episode.id]).get(chart.episode.id)
    part = None if changes.full else _part_of(session, clinic_id, chart, changes, fingerprint)
    return refresh_projection(session, clinic_id, chart, now, part, fingerprint)


def _part_of(
    session: Session, clinic_id: str, chart: EpisodeChart, changes: EpisodeChanges, fingerprint: str | None
) -> ChartPart | None:
    episode = chart.episode
    params = {"clinic_id": clinic_id, "episode_id": episode.id}
    projected = session.execute(_PROJECTED_FINGERPRINT, params).scalar_one_or_none()
    # The fingerprint's head is the episode's version (every command bumps it); the rest is the context: the
    # patient, body weights, practitioners and clinic. Changed since the last projection: map the whole chart.
    if fingerprint is None or projected is None or projected.split("|", 1)[1] != fingerprint.split("|", 1)[1]:
        return None
    records = [episode.records.get(rid) for rid in changes.record_ids]
    touched = [*records, *changes.previous]
    if any(r is None or isinstance(r, BodyWeight) for r in touched):
        return None  # a record not in the episode, or a body weight (the context of dosing): be safe
    named = {pid for r in touched for pid in practitioner_refs(r).values()}
    # A flag's acknowledger is a reference or a display depending on whether any record names them: a change that
    # names a practitioner (or stops naming them) may change the DetectedIssues they acknowledged.
    acknowledged = {f.id for f in episode.flags if f.acknowledgement is not None and f.acknowledgement.by in named}
    return ChartPart(
        record_ids=frozenset(changes.record_ids),
        flag_ids=frozenset(changes.flag_ids | acknowledged),
        practitioner_ids=frozenset(named & {p.id for p in chart.practitioners}),
    )


_PROJECTED_FINGERPRINT = select(fhir_projection_state.c.fingerprint).where(
    fhir_projection_state.c.clinic_id == bindparam("clinic_id"),
    fhir_projection_state.c.episode_id == bindparam("episode_id"),
)
# Bound under names of their own: SQLAlchemy keeps the table's column names for the binds of its SET clause.
_SAVE_FINGERPRINT = (
    update(fhir_projection_state)
    .where(
        fhir_projection_state.c.clinic_id == bindparam("w_clinic_id"),
        fhir_projection_state.c.episode_id == bindparam("w_episode_id"),
    )
    .values(
        fingerprint=bindparam("new_fingerprint"),
        projected_at=bindparam("at", type_=fhir_projection_state.c.projected_at.type),
    )
)


def _fingerprint_statements() -> tuple[Any, Any, Any]:
    """The fingerprint's three queries, built once (every write runs them; building them cost as much as running)."""
    e, p, r, pr, c = orm.episodes, orm.patients, orm.clinical_records, orm.practitioners, orm.clinics
    clinic_id = bindparam("clinic_id")
    practitioners = select(func.count(), func.max(pr.c.updated_at), func.sum(pr.c.version)).where(
        pr.c.clinic_id == clinic_id
    )
    clinic = select(c.c.name, c.c.identifier_system, c.c.time_zone, c.c.healthcare_setting).where(c.c.id == clinic_id)
    weights = and_(r.c.clinic_id == clinic_id, r.c.patient_id == e.c.patient_id, r.c.episode_id.is_(None))
    episodes = (
        select(
            e.c.id,
            e.c.version,
            p.c.version.label("patient_version"),
            select(func.count()).where(weights).scalar_subquery().label("weights"),
            select(func.sum(r.c.version)).where(weights).scalar_subquery().label("weight_versions"),
        )
        .join(p, and_(p.c.id == e.c.patient_id, p.c.clinic_id == e.c.clinic_id))
        .where(e.c.clinic_id == clinic_id)
    )
    return practitioners, clinic, episodes


_PRACTITIONERS_STATE, _CLINIC_STATE, _EPISODES_STATE = _fingerprint_statements()
_SOME_EPISODES_STATE = _EPISODES_STATE.where(orm.episodes.c.id.in_(bindparam("episode_ids", expanding=True)))


def fingerprints(session: Session, clinic_id: str, episode_ids: list[str] | None = None) -> dict[str, str]:
    """What the projection of each episode depends on, as one comparable string."""
    params: dict[str, Any] = {"clinic_id": clinic_id}
    practitioners = session.execute(_PRACTITIONERS_STATE, params).one()
    clinic = session.execute(_CLINIC_STATE, params).one_or_none()
    query = _EPISODES_STATE
    if episode_ids is not None:
        query, params = _SOME_EPISODES_STATE, {**params, "episode_ids": episode_ids}
    # zlib.crc32, not hash(): str hashes differ between processes (PYTHONHASHSEED), and gunicorn workers, the CLI and
    # the metrics scrape must agree on what is stale.
    clinic_hash = zlib.crc32(repr(tuple(str(x) for x in clinic or ())).encode())
    tail = f"{practitioners[0]}|{practitioners[1]}|{practitioners[2]}|{clinic_hash}"
    return {
        row.id: f"{row.version}|{row.patient_version}|{row.weights}|{row.weight_versions}|{tail}"
        for row in session.execute(query, params)
    }


def stale_episodes(session: Session, clinic_id: str) -> list[str]:
    st = fhir_projection_state
    projected = {
        row.episode_id: row.fingerprint
        for row in session.execute(select(st.c.episode_id, st.c.fingerprint).where(st.c.clinic_id == clinic_id))
    }
    return sorted(eid for eid, fp in fingerprints(session, clinic_id).items() if projected.get(eid) != fp)


class _Uow:
    def __init__(self, session: Session, clinic_id: str) -> None:
        self.session = session
        self.repo = Repository(session, clinic_id)


def sync_clinic(session: Session, clinic_id: str, now: datetime | None = None) -> int:
    """Refreshes the projection of every episode whose domain state changed since it was projected."""
    from service.service_layer.services import episode_chart

    now = now or datetime.now(UTC)
    stale = stale_episodes(session, clinic_id)
    uow = _Uow(session, clinic_id)
    for episode_id in stale:
        refresh_projection(session, clinic_id, episode_chart(uow, episode_id), now)  # type: ignore[arg-type]
    return len(stale)


def catch_up(session_factory: Any) -> int:
    """Projects, once at start-up, what was stored without a projection (data older than it, or written by an
    older version of kapfhir). Every write refreshes the projection in its own transaction after that, so no
    request needs to look for stale episodes."""
    from service.service_layer.unit_of_work import UnitOfWork

    refreshed = 0
    with session_factory() as session:
        clinics = list(session.execute(select(orm.clinics.c.id)).scalars())
    for clinic_id in clinics:
        with UnitOfWork(session_factory, clinic_id, write=True) as uow:
            count = sync_clinic(uow.session, clinic_id)
            if count:
                uow.commit()
                refreshed += count
    return refreshed


# --- reading ----------------------------------------------------------------------------------------------------


def _stored(row: Any) -> Stored:
    body = orjson.loads(row.body)
    return Stored(row.resource_type, row.id, row.version_id, row.last_updated, body, getattr(row, "episode_id", None))


def read(session: Session, clinic_id: str, rtype: str, rid: str, version: int | None = None) -> Stored | None:
    row = read_row(session, clinic_id, rtype, rid, version)
    return _stored(row) if row is not None else None


def read_row(session: Session, clinic_id: str, rtype: str, rid: str, version: int | None = None) -> Any:
    """The stored row of a resource (its current version, or ``version``), body unparsed; None when there is none."""
    params = {"clinic_id": clinic_id, "resource_type": rtype, "id": rid}
    if version is None:
        return session.execute(_READ_CURRENT, params).one_or_none()
    return session.execute(_READ_VERSION, {**params, "version_id": version}).one_or_none()


def read_statement(clinic_id: str, rtype: str, rid: str, version: int | None = None) -> Any:
    """The statement ``read_row`` runs, with its values bound (for its query plan)."""
    params = {"clinic_id": clinic_id, "resource_type": rtype, "id": rid}
    if version is None:
        return _READ_CURRENT.params(params)
    return _READ_VERSION.params({**params, "version_id": version})


def _read_statement(*criteria: Any) -> Any:
    t = fhir_resources
    return select(t).where(
        t.c.clinic_id == bindparam("clinic_id"),
        t.c.resource_type == bindparam("resource_type"),
        t.c.id == bindparam("id"),
        *criteria,
    )


# Built once: a read by id is the most frequent request, and building the statement cost as much as running it.
_READ_CURRENT = _read_statement(fhir_resources.c.is_current.is_(True))
_READ_VERSION = _read_statement(fhir_resources.c.version_id == bindparam("version_id"))


def current_rows_statement(clinic_id: str, types: list[str], ids: list[str], columns: tuple) -> Any:
    """Current rows whose type and id are among those given, with the values bound (for its query plan)."""
    return _current_rows_query(columns).params(clinic_id=clinic_id, types=types, ids=ids)


@functools.cache
def _current_rows_query(columns: tuple) -> Any:
    """(type IN, id IN) probes the primary key; the partial index on current rows (migration 0005) keeps SQLite from
    scanning every current row of a type instead. Built once per column set: every write runs it."""
    t = fhir_resources
    return select(t.c.resource_type, t.c.id, *columns).where(
        t.c.clinic_id == bindparam("clinic_id"),
        t.c.resource_type.in_(bindparam("types", expanding=True)),
        t.c.id.in_(bindparam("ids", expanding=True)),
        t.c.is_current.is_(True),
    )


def _current_rows(session: Session, clinic_id: str, refs: list[tuple[str, str]], columns: tuple) -> Iterator[Any]:
    """Current versions of (type, id)s: one query per 500 of them."""
    wanted = set(refs)
    ordered = list(dict.fromkeys(refs))
    statement = _current_rows_query(columns)
    for start in range(0, len(ordered), 500):
        chunk = ordered[start : start + 500]
        params = {"clinic_id": clinic_id, "types": sorted({rtype for rtype, _ in chunk}), "ids": [r for _, r in chunk]}
        for row in session.execute(statement, params):
            if (row.resource_type, row.id) in wanted:
                yield row


_ANY_VERSION = (
    select(fhir_resources.c.id)
    .where(
        fhir_resources.c.clinic_id == bindparam("clinic_id"),
        fhir_resources.c.resource_type == bindparam("rtype"),
        fhir_resources.c.id == bindparam("rid"),
    )
    .limit(1)
)


def exists_any_version(session: Session, clinic_id: str, rtype: str, rid: str) -> bool:
    params = {"clinic_id": clinic_id, "rtype": rtype, "rid": rid}
    return session.execute(_ANY_VERSION, params).first() is not None


def history(
    session: Session,
    clinic_id: str,
    rtype: str,
    rid: str | None,
    *,
    limit: int,
    offset: int,
    since: datetime | None = None,
) -> tuple[list[Stored], int]:
    t = fhir_resources
    where = [t.c.clinic_id == clinic_id, t.c.resource_type == rtype]
    if rid is not None:
        where.append(t.c.id == rid)
    if since is not None:
        where.append(t.c.last_updated >= since)
    total = session.execute(select(func.count()).select_from(t).where(*where)).scalar_one()
    rows = session.execute(
        select(t)
        .where(*where)
        .order_by(t.c.last_updated.desc(), t.c.id, t.c.version_id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [_stored(r) for r in rows], total


def current_by_ids(session: Session, clinic_id: str, refs: list[tuple[str, str]]) -> list[Stored]:
    """The current versions of (type, id)s, ordered by type and id."""
    t = fhir_resources
    rows = _current_rows(session, clinic_id, refs, (t.c.version_id, t.c.last_updated, t.c.body))
    return sorted((_stored(r) for r in rows), key=lambda stored: (stored.resource_type, stored.id))


def find_by_identifier(session: Session, clinic_id: str, rtype: str, system: str | None, value: str) -> list[str]:
    return matching_ids(identifier_matches(session, clinic_id, [(rtype, value)]), rtype, system, value)


def matching_ids(
    matches: dict[tuple[str, str], list[tuple[str | None, str]]], rtype: str, system: str | None, value: str
) -> list[str]:
    """Ids among ``identifier_matches`` whose identifier is ``system|value`` (any system when ``system`` is None)."""
    return sorted({rid for sys, rid in matches.get((rtype, value), ()) if system is None or sys == system})


def identifier_matches(
    session: Session, clinic_id: str, wanted: list[tuple[str, str]]
) -> dict[tuple[str, str], list[tuple[str | None, str]]]:
    """(type, identifier value) -> [(identifier system, id)] of the current resources, for many values at once."""
    out: dict[tuple[str, str], list[tuple[str | None, str]]] = {}
    keys = set(wanted)
    values = sorted({value for _, value in keys})
    types = sorted({rtype for rtype, _ in keys})
    for start in range(0, len(values), 500):
        params = {"clinic_id": clinic_id, "types": types, "values": values[start : start + 500]}
        for row in session.execute(_IDENTIFIER_ROWS, params):
            if (row.resource_type, row.code) in keys:
                out.setdefault((row.resource_type, row.code), []).append((row.system, row.id))
    return out


def find_by_identifier_prefix(session: Session, clinic_id: str, rtype: str, prefix: str) -> list[str]:
    """Resources whose business identifier value starts with ``prefix`` (a reading's ``<id>.<suffix>``)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
    params = {"clinic_id": clinic_id, "rtype": rtype, "pattern": escaped + "%"}
    return [r.id for r in sorted(session.execute(_IDENTIFIER_PREFIX_ROWS, params), key=lambda r: (r.code, r.id))]


_IDENTIFIER_ROWS = select(
    fhir_search_index.c.resource_type, fhir_search_index.c.code, fhir_search_index.c.system, fhir_search_index.c.id
).where(
    fhir_search_index.c.clinic_id == bindparam("clinic_id"),
    fhir_search_index.c.resource_type.in_(bindparam("types", expanding=True)),
    fhir_search_index.c.param == "identifier",
    fhir_search_index.c.code.in_(bindparam("values", expanding=True)),
)
_IDENTIFIER_PREFIX_ROWS = select(fhir_search_index.c.id, fhir_search_index.c.code).where(
    fhir_search_index.c.clinic_id == bindparam("clinic_id"),
    fhir_search_index.c.resource_type == bindparam("rtype"),
    fhir_search_index.c.param == "identifier",
    fhir_search_index.c.code.like(bindparam("pattern"), escape="\\"),
)
