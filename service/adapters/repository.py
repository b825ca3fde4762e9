"""Repository over SQLAlchemy. Every query is scoped to one clinic: another clinic's ids simply do not exist."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cachetools import LRUCache
from sqlalchemy import and_, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from service.adapters import orm
from service.adapters.serialization import episode_header_data, from_data, record_from_data, to_data
from service.domain.episode import Episode
from service.domain.errors import Conflict, FieldError, NotFound
from service.domain.model import (
    RECORD_KIND_OF,
    BodyWeight,
    Clinic,
    HealthcareSetting,
    Patient,
    Practitioner,
    Record,
    RemsLedger,
    RemsSubmission,
    SafetyFlag,
)

Composition = dict[str, Record]  # the records of a version of an episode by id, in table order


class DecodedRecords:
    """Records as decoded from storage, shared by every unit of work of the process, by (database, clinic, id,
    version), with the composition of the latest version of each episode (which records, at which versions): a
    process normally serves one database, tests hold several.

    A committed version of a record never changes (a change is a new version), and an episode's records change only
    with a new version of the episode (``save_episode``), so what is kept stands for as long as it is kept; units of
    work add what they decoded or wrote only once they committed. The domain never changes a loaded record in place
    (amendments and entered-in-error marks are new objects), so units of work can share them. Without it, every
    command read and decoded every record of its episode again: the cost of a write grew with the episode."""

    def __init__(self, max_records: int = 10_000) -> None:
        self._lock = threading.Lock()
        self.resize(max_records)

    def resize(self, max_records: int) -> None:
        """Keep at most ``max_records`` (the least recently used go first), and the compositions of the latest
        versions of episodes holding at most as many records in all; 0 keeps none. Only the latest version's: a
        command reads that one, and the compositions of earlier versions filled memory as episodes grew. A
        composition holds its records: a command takes them in one step, not by looking up each (which cost more
        the longer the episode)."""
        with self._lock:
            self._records: LRUCache[tuple[str, str, str, int], Record] = LRUCache(max(1, max_records))
            # (store, clinic, episode id) -> (version, composition)
            self._compositions: LRUCache[tuple[str, str, str], tuple[int, Composition]] = LRUCache(
                max(1, max_records), getsizeof=_records_held
            )
            self._enabled = max_records > 0

    def get(self, store: str, clinic_id: str, record_id: str, version: int) -> Record | None:
        with self._lock:
            return self._records.get((store, clinic_id, record_id, version))

    def composition(self, store: str, clinic_id: str, episode_id: str) -> tuple[int, Composition] | None:
        """(version, records) of the latest version of the episode the process holds, to be read, not changed."""
        with self._lock:
            return self._compositions.get((store, clinic_id, episode_id))

    def add(
        self, store: str, clinic_id: str, records: list[Record], compositions: dict[tuple[str, int], Composition]
    ) -> None:
        """``compositions``: (episode id, episode version) -> its records."""
        with self._lock:
            if not self._enabled:
                return
            for record in records:
                self._records[(store, clinic_id, record.id, record.version)] = record
            for (episode_id, version), composition in compositions.items():
                key = (store, clinic_id, episode_id)
                held = self._compositions.get(key)
                if held is None or held[0] <= version:  # a reader of an older version does not replace a newer one
                    try:
                        self._compositions[key] = (version, composition)
                    except ValueError:  # more records than may be held at all: not held
                        self._compositions.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._compositions.clear()


def _records_held(held: tuple[int, Composition]) -> int:
    return max(1, len(held[1]))


DECODED = DecodedRecords()


@dataclass(frozen=True)
class VersionEntry:
    version: int
    change: str
    reason: str | None
    actor: str
    changed_at: datetime
    data: dict[str, Any]


@dataclass(frozen=True)
class Page:
    items: list[Any]
    total: int


# Built once: every write that names practitioners runs it, once per practitioner. By id, not ``id IN (...)``: from
# three ids on, SQLite chose the clinic's index over the primary key and read every practitioner of the clinic.
_PRACTITIONER_BY_ID = select(orm.practitioners.c.data).where(
    orm.practitioners.c.clinic_id == bindparam("clinic_id"), orm.practitioners.c.id == bindparam("id")
)

# The statements a session write runs, built once with their parameters bound at execution: building a statement
# and its cache key costs ~70 us, twice what running a cached one through SQLAlchemy costs (bench/CHANGES.md).
_CLINIC = select(orm.clinics).where(orm.clinics.c.id == bindparam("clinic_id"))
_EPISODE = select(orm.episodes.c.data, orm.episodes.c.version).where(
    orm.episodes.c.clinic_id == bindparam("clinic_id"), orm.episodes.c.id == bindparam("episode_id")
)
_EPISODE_FOR_UPDATE = _EPISODE.with_for_update()  # PostgreSQL serialises writers of one episode
_EPISODE_FLAGS = select(orm.safety_flags.c.data).where(
    orm.safety_flags.c.clinic_id == bindparam("clinic_id"), orm.safety_flags.c.episode_id == bindparam("episode_id")
)
_REMS_SUBMISSIONS = select(orm.rems_form_submissions.c.data).where(
    orm.rems_form_submissions.c.clinic_id == bindparam("clinic_id"),
    orm.rems_form_submissions.c.episode_id == bindparam("episode_id"),
)
_EPISODE_RECORD_VERSIONS = select(orm.clinical_records.c.id, orm.clinical_records.c.version).where(
    orm.clinical_records.c.clinic_id == bindparam("clinic_id"),
    orm.clinical_records.c.episode_id == bindparam("episode_id"),
)
_EPISODE_RECORDS_BY_ID = select(orm.clinical_records.c.kind, orm.clinical_records.c.data).where(
    orm.clinical_records.c.clinic_id == bindparam("clinic_id"),
    orm.clinical_records.c.episode_id == bindparam("episode_id"),
    orm.clinical_records.c.id.in_(bindparam("ids", expanding=True)),
)
_PATIENT = select(orm.patients.c.data).where(
    orm.patients.c.clinic_id == bindparam("clinic_id"), orm.patients.c.id == bindparam("patient_id")
)
_PATIENT_RECORDS = (
    select(orm.clinical_records.c.kind, orm.clinical_records.c.data)
    .where(
        orm.clinical_records.c.clinic_id == bindparam("clinic_id"),
        orm.clinical_records.c.patient_id == bindparam("patient_id"),
        orm.clinical_records.c.kind == bindparam("kind"),
        orm.clinical_records.c.episode_id.is_(None),
    )
    .order_by(orm.clinical_records.c.recorded_at, orm.clinical_records.c.id)
)
_PATIENT_BY_MRN = select(orm.patients.c.data).where(
    orm.patients.c.clinic_id == bindparam("clinic_id"),
    orm.patients.c.mrn_system == bindparam("system"),
    orm.patients.c.mrn_value == bindparam("value"),
)
_EPISODES_OF_PATIENT = (
    select(orm.episodes.c.id)
    .where(orm.episodes.c.clinic_id == bindparam("clinic_id"), orm.episodes.c.patient_id == bindparam("patient_id"))
    .order_by(orm.episodes.c.id)
)
_INSERT_RECORDS = insert(orm.clinical_records)
_INSERT_RECORD_VERSIONS = insert(orm.record_versions)


def _versioned_update(table: Any, *columns: str) -> Any:
    """The UPDATE of one row of a clinic at the version it was read at (the optimistic check): binds ``w_clinic_id``,
    ``w_id``, ``expected_version`` and ``new_<column>``; SQLAlchemy keeps the column names for its own SET binds."""
    return (
        update(table)
        .where(
            table.c.clinic_id == bindparam("w_clinic_id"),
            table.c.id == bindparam("w_id"),
            table.c.version == bindparam("expected_version"),
        )
        .values({name: bindparam(f"new_{name}", type_=table.c[name].type) for name in columns})
    )


_SAVE_EPISODE_HEADER = _versioned_update(orm.episodes, "status", "phase", "version", "data", "updated_at")
_SAVE_PATIENT = _versioned_update(orm.patients, "version", "data", "mrn_system", "mrn_value", "updated_at")


class Repository:
    def __init__(self, session: Session, clinic_id: str) -> None:
        self.session = session
        self.clinic_id = clinic_id
        # What was loaded, to save only what changed.
        self._loaded_versions: dict[str, dict[str, int]] = {}
        self._loaded_flags: dict[str, dict[str, Any]] = {}
        self._loaded_submissions: dict[str, set[str]] = {}
        # Records as decoded or written in this unit of work, by id; those not taken from the process (``_fresh``)
        # are shared with it once the unit of work commits.
        self._decoded: dict[str, Record] = {}
        self._fresh: set[str] = set()
        self._store = str(session.get_bind().url)  # the database (password masked), for DECODED
        self._compositions: dict[tuple[str, int], Composition] = {}  # episode versions loaded or saved here
        # Episodes as this unit of work saved them: the projection's chart is the aggregate the command saved.
        self._saved: dict[str, Episode] = {}
        # Read once per unit of work (a bundle's commands each ask again; on PostgreSQL each ask is a round trip):
        # the clinic and the practitioners found (a practitioner is never changed or deleted).
        self._clinic: Clinic | None = None
        self._practitioner_rows: dict[str, Any] = {}

    # --- clinics ---------------------------------------------------------------------------------------

    def get_clinic(self) -> Clinic:
        if self._clinic is None:
            self._clinic = self._load_clinic()
        return self._clinic

    def _load_clinic(self) -> Clinic:
        row = self.session.execute(_CLINIC, {"clinic_id": self.clinic_id}).one_or_none()
        if row is None:
            raise NotFound(f"Clinic {self.clinic_id} is not registered.")
        data = row.healthcare_setting
        setting = from_data(HealthcareSetting, data) if data and any(data.values()) else None
        return Clinic(
            id=row.id,
            name=row.name,
            identifier_system=row.identifier_system,
            time_zone=row.time_zone or "UTC",
            setting=setting,
        )

    def update_clinic_setting(self, *, time_zone: str, setting: HealthcareSetting) -> None:
        self.session.execute(
            update(orm.clinics)
            .where(orm.clinics.c.id == self.clinic_id)
            .values(time_zone=time_zone, healthcare_setting=to_data(setting))
        )
        self._clinic = None

    # --- Spravato REMS form submissions ----------------------------------------------------------------

    def rems_ledger(self, episode_id: str) -> RemsLedger:
        rows = self.session.execute(_REMS_SUBMISSIONS, {"clinic_id": self.clinic_id, "episode_id": episode_id}).all()
        submissions = sorted(
            (from_data(RemsSubmission, r.data) for r in rows), key=lambda sub: (sub.recorded_at, sub.id)
        )
        return RemsLedger(time_zone=self.get_clinic().time_zone, submissions=submissions)

    def add_rems_submission(self, episode_id: str, submission: RemsSubmission) -> None:
        self.session.execute(
            insert(orm.rems_form_submissions).values(
                id=submission.id,
                clinic_id=self.clinic_id,
                episode_id=episode_id,
                session_id=submission.session_id,
                data=to_data(submission),
                recorded_at=submission.recorded_at,
            )
        )

    def rems_episode_ids(self) -> list[str]:
        """Episodes with an esketamine dose: the ones that may owe REMS forms."""
        r = orm.clinical_records
        rows = self.session.execute(
            select(r.c.episode_id, r.c.data).where(
                r.c.clinic_id == self.clinic_id, r.c.kind == "dose", r.c.episode_id.is_not(None)
            )
        )
        return sorted({row.episode_id for row in rows if row.data.get("medication") == "esketamine"})

    # --- history ---------------------------------------------------------------------------------------

    def _write_version(
        self,
        kind: str,
        entity_id: str,
        version: int,
        data: dict[str, Any],
        *,
        change: str,
        reason: str | None,
        actor: str,
        at: datetime,
    ) -> None:
        self.session.execute(
            _INSERT_RECORD_VERSIONS,
            self._version_row(kind, entity_id, version, data, change=change, reason=reason, actor=actor, at=at),
        )

    def _version_row(
        self,
        kind: str,
        entity_id: str,
        version: int,
        data: dict[str, Any],
        *,
        change: str,
        reason: str | None,
        actor: str,
        at: datetime,
    ) -> dict[str, Any]:
        return {
            "entity_kind": kind,
            "entity_id": entity_id,
            "version": version,
            "clinic_id": self.clinic_id,
            "change": change,
            "reason": reason,
            "actor": actor,
            "changed_at": at,
            "data": data,
        }

    def history(self, kind: str, entity_id: str) -> list[VersionEntry]:
        t = orm.record_versions
        rows = self.session.execute(
            select(t)
            .where(t.c.clinic_id == self.clinic_id, t.c.entity_kind == kind, t.c.entity_id == entity_id)
            .order_by(t.c.version)
        ).all()
        hidden = Episode.BOOKKEEPING if kind == "episode" else ()
        return [
            VersionEntry(
                r.version,
                r.change,
                r.reason,
                r.actor,
                r.changed_at,
                {k: v for k, v in r.data.items() if k not in hidden},
            )
            for r in rows
        ]

    # --- practitioners ---------------------------------------------------------------------------------

    def add_practitioner(self, practitioner: Practitioner, *, actor: str, now: datetime) -> None:
        practitioner.recorded_at = practitioner.updated_at = now
        if (
            practitioner.npi
            and self.session.execute(
                select(orm.practitioners.c.id).where(
                    orm.practitioners.c.clinic_id == self.clinic_id, orm.practitioners.c.npi == practitioner.npi
                )
            ).first()
        ):
            raise Conflict(
                f"A practitioner with NPI {practitioner.npi} is already registered.",
                [FieldError("npi", "already registered")],
            )
        data = to_data(practitioner)
        self.session.execute(
            insert(orm.practitioners).values(
                id=practitioner.id,
                clinic_id=self.clinic_id,
                npi=practitioner.npi,
                version=practitioner.version,
                data=data,
                created_at=now,
                updated_at=now,
            )
        )
        self._write_version(
            "practitioner", practitioner.id, 1, data, change="created", reason=None, actor=actor, at=now
        )

    def get_practitioner(self, practitioner_id: str) -> Practitioner:
        row = self._practitioner_row(practitioner_id)
        if row is None:
            raise NotFound(f"No practitioner {practitioner_id}.")
        return from_data(Practitioner, row.data)

    def find_practitioner_by_npi(self, npi: str) -> Practitioner | None:
        row = self.session.execute(
            select(orm.practitioners.c.id).where(
                orm.practitioners.c.clinic_id == self.clinic_id, orm.practitioners.c.npi == npi
            )
        ).first()
        return self.get_practitioner(row.id) if row is not None else None

    def list_practitioners(self, *, limit: int = 1000, offset: int = 0) -> Page:
        t = orm.practitioners
        where = t.c.clinic_id == self.clinic_id
        total = self.session.execute(select(func.count()).select_from(t).where(where)).scalar_one()
        rows = self.session.execute(
            select(t.c.data).where(where).order_by(t.c.created_at, t.c.id).limit(limit).offset(offset)
        )
        return Page([from_data(Practitioner, r.data) for r in rows], total)

    def missing_practitioners(self, ids: set[str]) -> set[str]:
        if not ids:
            return set()
        return {pid for pid in ids if self._practitioner_row(pid) is None}

    def _practitioner_row(self, practitioner_id: str) -> Any:
        row = self._practitioner_rows.get(practitioner_id)
        if row is None:
            params = {"clinic_id": self.clinic_id, "id": practitioner_id}
            row = self.session.execute(_PRACTITIONER_BY_ID, params).one_or_none()
            if row is not None:
                self._practitioner_rows[practitioner_id] = row
        return row

    # --- patients ----------------------------------------------------------------------------------------

    def add_patient(self, patient: Patient, *, actor: str, now: datetime) -> None:
        patient.recorded_at = patient.updated_at = now
        if self.find_patient_by_mrn(patient.mrn.system, patient.mrn.value) is not None:
            raise Conflict("A patient with this MRN is already registered.", [FieldError("mrn", "already registered")])
        data = to_data(patient)
        self.session.execute(
            insert(orm.patients).values(
                id=patient.id,
                clinic_id=self.clinic_id,
                mrn_system=patient.mrn.system,
                mrn_value=patient.mrn.value,
                version=patient.version,
                data=data,
                created_at=now,
                updated_at=now,
            )
        )
        self._write_version("patient", patient.id, 1, data, change="created", reason=None, actor=actor, at=now)

    def update_patient(
        self, patient: Patient, *, expected_version: int, actor: str, reason: str, now: datetime
    ) -> None:
        patient.updated_at = now
        data = to_data(patient)
        result = self.session.execute(
            _SAVE_PATIENT,
            {
                "w_clinic_id": self.clinic_id,
                "w_id": patient.id,
                "expected_version": expected_version,
                "new_version": patient.version,
                "new_data": data,
                "new_mrn_system": patient.mrn.system,
                "new_mrn_value": patient.mrn.value,
                "new_updated_at": now,
            },
        )
        if result.rowcount != 1:
            raise Conflict(f"Patient {patient.id} was changed by another request; read it again.")
        self._write_version(
            "patient", patient.id, patient.version, data, change="amended", reason=reason, actor=actor, at=now
        )

    def get_patient(self, patient_id: str) -> Patient:
        row = self.session.execute(_PATIENT, {"clinic_id": self.clinic_id, "patient_id": patient_id}).one_or_none()
        if row is None:
            raise NotFound(f"No patient {patient_id}.")
        return from_data(Patient, row.data)

    def find_patient_by_mrn(self, system: str, value: str) -> Patient | None:
        params = {"clinic_id": self.clinic_id, "system": system, "value": value}
        row = self.session.execute(_PATIENT_BY_MRN, params).one_or_none()
        return from_data(Patient, row.data) if row else None

    def list_patients(self, *, limit: int, offset: int) -> Page:
        t = orm.patients
        where = t.c.clinic_id == self.clinic_id
        total = self.session.execute(select(func.count()).select_from(t).where(where)).scalar_one()
        rows = self.session.execute(
            select(t.c.data).where(where).order_by(t.c.created_at, t.c.id).limit(limit).offset(offset)
        )
        return Page([from_data(Patient, r.data) for r in rows], total)

    # --- clinical records outside an episode (body weights) ---------------------------------------------

    def add_patient_record(self, patient_id: str, record: Record, *, actor: str) -> None:
        self._insert_record(record, patient_id=patient_id, episode_id=None, actor=actor)

    def body_weights(self, patient_id: str) -> list[BodyWeight]:
        weights: list[BodyWeight] = self.patient_records(patient_id, "body-weight")  # type: ignore[assignment]
        return sorted(weights, key=lambda w: w.measured_at)

    def patient_records(self, patient_id: str, kind: str) -> list[Record]:
        """Records of a patient that belong to no episode (body weights, privacy consents)."""
        params = {"clinic_id": self.clinic_id, "patient_id": patient_id, "kind": kind}
        rows = self.session.execute(_PATIENT_RECORDS, params)
        return [record_from_data(r.kind, r.data) for r in rows]

    def episode_ids_of(self, patient_id: str) -> list[str]:
        params = {"clinic_id": self.clinic_id, "patient_id": patient_id}
        return list(self.session.execute(_EPISODES_OF_PATIENT, params).scalars())

    def get_patient_record(self, patient_id: str, record_id: str) -> Record:
        t = orm.clinical_records
        row = self.session.execute(
            select(t.c.kind, t.c.data).where(
                t.c.clinic_id == self.clinic_id,
                t.c.patient_id == patient_id,
                t.c.episode_id.is_(None),
                t.c.id == record_id,
            )
        ).one_or_none()
        if row is None:
            raise NotFound(f"No record {record_id} for patient {patient_id}.")
        return record_from_data(row.kind, row.data)

    def save_patient_record(self, record: Record, *, change: str, reason: str | None, actor: str) -> None:
        self._update_record(record, change=change, reason=reason, actor=actor)

    # --- episodes ----------------------------------------------------------------------------------------

    def add_episode(self, episode: Episode, *, actor: str, now: datetime) -> None:
        data = episode_header_data(episode)
        self.session.execute(
            insert(orm.episodes).values(
                id=episode.id,
                clinic_id=self.clinic_id,
                patient_id=episode.patient_id,
                status=str(episode.status),
                phase=str(episode.phase),
                version=episode.version,
                data=data,
                created_at=now,
                updated_at=now,
            )
        )
        self._write_version(
            "episode", episode.id, episode.version, data, change="created", reason=None, actor=actor, at=now
        )
        self._loaded_versions[episode.id] = {}
        self._loaded_flags[episode.id] = {}
        self._loaded_submissions[episode.id] = set()

    def get_episode(self, episode_id: str, *, for_update: bool = False) -> Episode:
        params = {"clinic_id": self.clinic_id, "episode_id": episode_id}
        # for_update: PostgreSQL serialises writers of one episode; SQLite locks on BEGIN IMMEDIATE
        row = self.session.execute(_EPISODE_FOR_UPDATE if for_update else _EPISODE, params).one_or_none()
        if row is None:
            raise NotFound(f"No episode {episode_id}.")
        episode = from_data(Episode, {**row.data, "records": {}, "flags": []})
        episode.records = self._episode_records(episode_id, row.version)
        flag_rows = self.session.execute(_EPISODE_FLAGS, params).all()
        episode.flags = sorted(
            (from_data(SafetyFlag, fr.data) for fr in flag_rows), key=lambda fl: (fl.raised_at, fl.id)
        )
        episode.rems = self.rems_ledger(episode_id)
        self._loaded_submissions[episode_id] = {sub.id for sub in episode.rems.submissions}
        self._loaded_versions[episode_id] = {rid: rec.version for rid, rec in episode.records.items()}
        self._loaded_flags[episode_id] = {fl.id: to_data(fl) for fl in episode.flags}
        return episode

    def _episode_records(self, episode_id: str, version: int) -> dict[str, Record]:
        """The records of a version of an episode, in the order the table gives them: read from the table unless the
        process holds that version's composition, decoded only when neither this unit of work nor the process holds
        their stored version (another worker wrote the episode since: its earlier composition holds most of them)."""
        held_by_process = DECODED.composition(self._store, self.clinic_id, episode_id)
        if held_by_process is not None and held_by_process[0] == version:
            records = dict(held_by_process[1])
            self._decoded.update(records)
            return records
        earlier = held_by_process[1] if held_by_process is not None else {}
        params = {"clinic_id": self.clinic_id, "episode_id": episode_id}
        rows = self.session.execute(_EPISODE_RECORD_VERSIONS, params).all()
        decoded = self._decoded

        def held(row: Any) -> bool:
            return row.id in decoded and decoded[row.id].version == row.version

        for row in rows:
            if held(row):
                continue
            shared = earlier.get(row.id)
            if shared is None or shared.version != row.version:
                shared = DECODED.get(self._store, self.clinic_id, row.id, row.version)
            if shared is not None:
                decoded[row.id] = shared
                self._fresh.discard(row.id)
        missing = [row.id for row in rows if not held(row)]
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            for rec in self.session.execute(_EPISODE_RECORDS_BY_ID, {**params, "ids": chunk}):
                record = record_from_data(rec.kind, rec.data)
                decoded[record.id] = record
                self._fresh.add(record.id)
        records = {row.id: decoded[row.id] for row in rows}
        self._compositions[(episode_id, version)] = records
        return dict(records)  # the aggregate's: a command adds to it

    def episode_as_saved(self, episode_id: str) -> Episode:
        """The episode as this unit of work last saved it (the aggregate itself), else as stored."""
        saved = self._saved.get(episode_id)
        return saved if saved is not None else self.get_episode(episode_id)

    def forget_unsaved(self) -> None:
        """After a savepoint rolled back: what this unit of work saved, decoded or read since may not be stored."""
        self._clinic = None
        self._practitioner_rows.clear()
        self._saved.clear()
        self._decoded.clear()
        self._fresh.clear()
        self._compositions.clear()

    def publish_decoded(self) -> None:
        """Once the unit of work committed (or only read): share the records it decoded or wrote."""
        fresh = [self._decoded[rid] for rid in self._fresh]
        DECODED.add(self._store, self.clinic_id, fresh, self._compositions)

    def list_episodes(
        self, *, patient_id: str | None, status: str | None, phase: str | None, limit: int, offset: int
    ) -> Page:
        t = orm.episodes
        conditions = [t.c.clinic_id == self.clinic_id]
        if patient_id:
            conditions.append(t.c.patient_id == patient_id)
        if status:
            conditions.append(t.c.status == status)
        if phase:
            conditions.append(t.c.phase == phase)
        where = and_(*conditions)
        total = self.session.execute(select(func.count()).select_from(t).where(where)).scalar_one()
        rows = self.session.execute(
            select(t.c.data).where(where).order_by(t.c.created_at, t.c.id).limit(limit).offset(offset)
        )
        return Page([from_data(Episode, {**r.data, "records": {}, "flags": []}) for r in rows], total)

    def save_episode(
        self,
        episode: Episode,
        *,
        expected_version: int,
        actor: str,
        now: datetime,
        notes: dict[str, tuple[str, str | None]] | None = None,
        episode_change: tuple[str, str | None] | None = None,
    ) -> None:
        """Writes what changed in the aggregate and bumps the episode's version (optimistic check)."""
        notes = notes or {}
        loaded = self._loaded_versions.setdefault(episode.id, {})
        added = [record for record_id, record in episode.records.items() if record_id not in loaded]
        self._insert_records(added, patient_id=episode.patient_id, episode_id=episode.id, actor=actor)
        for record_id, record in episode.records.items():
            before = loaded.get(record_id)
            if before == record.version:
                continue
            if before is not None:
                change, reason = notes.get(record_id, ("amended", None))
                self._update_record(record, change=change, reason=reason, actor=actor)
            loaded[record_id] = record.version
            self._decoded[record_id] = record  # written: shared once committed
            self._fresh.add(record_id)
        loaded_flags = self._loaded_flags.setdefault(episode.id, {})
        for flag in episode.flags:
            data = to_data(flag)
            if flag.id not in loaded_flags:
                self.session.execute(
                    insert(orm.safety_flags).values(
                        id=flag.id,
                        clinic_id=self.clinic_id,
                        episode_id=episode.id,
                        status=str(flag.status),
                        data=data,
                        updated_at=now,
                    )
                )
            elif loaded_flags[flag.id] != data:
                self.session.execute(
                    update(orm.safety_flags)
                    .where(orm.safety_flags.c.clinic_id == self.clinic_id, orm.safety_flags.c.id == flag.id)
                    .values(status=str(flag.status), data=data, updated_at=now)
                )
            loaded_flags[flag.id] = data
        stored = self._loaded_submissions.setdefault(episode.id, set())
        for submission in episode.rems.submissions:  # REMS form sendings are only ever added
            if submission.id not in stored:
                self.add_rems_submission(episode.id, submission)
                stored.add(submission.id)
        episode.saved_as(expected_version + 1, now)
        data = episode_header_data(episode)
        result = self.session.execute(
            _SAVE_EPISODE_HEADER,
            {
                "w_clinic_id": self.clinic_id,
                "w_id": episode.id,
                "expected_version": expected_version,
                "new_status": str(episode.status),
                "new_phase": str(episode.phase),
                "new_version": episode.version,
                "new_data": data,
                "new_updated_at": now,
            },
        )
        if result.rowcount != 1:
            raise Conflict(f"Episode {episode.id} was changed by another request; read it again and retry.")
        if episode_change is not None:
            change, reason = episode_change
            self._write_version(
                "episode", episode.id, episode.version, data, change=change, reason=reason, actor=actor, at=now
            )
        self._saved[episode.id] = episode
        self._compositions[(episode.id, episode.version)] = dict(episode.records)

    # --- record rows -------------------------------------------------------------------------------------

    def _insert_record(self, record: Record, *, patient_id: str, episode_id: str | None, actor: str) -> None:
        self._insert_records([record], patient_id=patient_id, episode_id=episode_id, actor=actor)

    def _insert_records(self, records: list[Record], *, patient_id: str, episode_id: str | None, actor: str) -> None:
        """New records with their first version: two statements for all of them (a session comes with its doses and
        readings)."""
        if not records:
            return
        rows, versions = [], []
        for record in records:
            kind, data = RECORD_KIND_OF[type(record)], to_data(record)
            assert record.recorded_at is not None and record.updated_at is not None
            rows.append(
                {
                    "id": record.id,
                    "clinic_id": self.clinic_id,
                    "patient_id": patient_id,
                    "episode_id": episode_id,
                    "kind": kind,
                    "version": record.version,
                    "entered_in_error": record.entered_in_error,
                    "data": data,
                    "recorded_at": record.recorded_at,
                    "updated_at": record.updated_at,
                }
            )
            versions.append(
                self._version_row(
                    kind,
                    record.id,
                    record.version,
                    data,
                    change="created",
                    reason=None,
                    actor=actor,
                    at=record.updated_at,
                )
            )
        self.session.execute(_INSERT_RECORDS, rows)
        self.session.execute(_INSERT_RECORD_VERSIONS, versions)

    def _update_record(self, record: Record, *, change: str, reason: str | None, actor: str) -> None:
        kind = RECORD_KIND_OF[type(record)]
        data = to_data(record)
        assert record.updated_at is not None
        t = orm.clinical_records
        self.session.execute(
            update(t)
            .where(t.c.clinic_id == self.clinic_id, t.c.id == record.id)
            .values(
                version=record.version,
                entered_in_error=record.entered_in_error,
                data=data,
                updated_at=record.updated_at,
            )
        )
        self._write_version(
            kind, record.id, record.version, data, change=change, reason=reason, actor=actor, at=record.updated_at
        )

    # --- idempotency ---------------------------------------------------------------------------------------

    def find_idempotent_response(self, client_id: str, key: str) -> Any:
        t = orm.idempotency_keys
        return self.session.execute(
            select(t).where(t.c.clinic_id == self.clinic_id, t.c.client_id == client_id, t.c.key == key)
        ).one_or_none()

    def store_idempotent_response(
        self,
        *,
        client_id: str,
        key: str,
        method: str,
        path: str,
        body_sha256: str,
        status_code: int,
        response_body: str,
        response_headers: dict[str, str],
        now: datetime,
    ) -> None:
        self.session.execute(
            insert(orm.idempotency_keys).values(
                clinic_id=self.clinic_id,
                client_id=client_id,
                key=key,
                method=method,
                path=path,
                body_sha256=body_sha256,
                status_code=status_code,
                response_body=response_body,
                response_headers=response_headers,
                created_at=now,
            )
        )
