"""An in-memory repository and unit of work, standing in for the database so that the use cases run without one
(cosmicpython's FakeRepository / FakeUnitOfWork).

The fake unit of work is the real one (service.service_layer.unit_of_work.UnitOfWork: its follow-up work run once
before the commit, the changes it collects for the projection) with the session replaced: what the repository holds
is kept on commit and put back as it was when the unit of work ends without one. The projector records what it was
asked to project instead of storing FHIR resources (the projection has its own tests in tests/integration/fhir).
"""

from __future__ import annotations

import copy
from datetime import datetime
from types import TracebackType
from typing import Any

from service.domain.episode import Episode
from service.domain.errors import Conflict, NotFound
from service.domain.model import BodyWeight, Patient, Practitioner
from service.service_layer.unit_of_work import EpisodeChanges, Projected, UnitOfWork


class FakeRepository:
    """The part of service.adapters.repository.Repository the episode use cases call, on dicts. Aggregates are
    handed out as copies, as the real one decodes them from rows: a use case changes nothing until it saves."""

    def __init__(self) -> None:
        self.patients: dict[str, Patient] = {}
        self.practitioners: dict[str, Practitioner] = {}
        self.episodes: dict[str, Episode] = {}

    # --- practitioners and patients

    def add_practitioner(self, practitioner: Practitioner, *, actor: str, now: datetime) -> None:
        self.practitioners[practitioner.id] = copy.deepcopy(practitioner)

    def missing_practitioners(self, ids: set[str]) -> set[str]:
        return {pid for pid in ids if pid not in self.practitioners}

    def add_patient(self, patient: Patient, *, actor: str, now: datetime) -> None:
        if self.find_patient_by_mrn(patient.mrn.system, patient.mrn.value) is not None:
            raise Conflict("A patient with this MRN is already registered.")
        self.patients[patient.id] = copy.deepcopy(patient)

    def get_patient(self, patient_id: str) -> Patient:
        if patient_id not in self.patients:
            raise NotFound(f"No patient {patient_id}.")
        return copy.deepcopy(self.patients[patient_id])

    def find_patient_by_mrn(self, system: str, value: str) -> Patient | None:
        return next((p for p in self.patients.values() if (p.mrn.system, p.mrn.value) == (system, value)), None)

    def body_weights(self, patient_id: str) -> list[BodyWeight]:
        return []

    def episode_ids_of(self, patient_id: str) -> list[str]:
        return sorted(e.id for e in self.episodes.values() if e.patient_id == patient_id)

    # --- episodes

    def add_episode(self, episode: Episode, *, actor: str, now: datetime) -> None:
        self.episodes[episode.id] = _stored(episode)

    def get_episode(self, episode_id: str, *, for_update: bool = False) -> Episode:
        if episode_id not in self.episodes:
            raise NotFound(f"No episode {episode_id}.")
        return copy.deepcopy(self.episodes[episode_id])

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
        if self.episodes[episode.id].version != expected_version:  # the optimistic check of the real one
            raise Conflict(f"Episode {episode.id} was changed by another request; read it again and retry.")
        episode.version = expected_version + 1
        episode.updated_at = now
        self.episodes[episode.id] = _stored(episode)


def _stored(episode: Episode) -> Episode:
    """A copy as a row would give it back: its events stay with the use case's aggregate, not in storage."""
    stored = copy.deepcopy(episode)
    stored.pull_events()
    return stored


class RecordingProjector:
    """Records what each unit of work asked the projection for (episode id, the changes collected)."""

    def __init__(self) -> None:
        self.episodes: list[tuple[str, EpisodeChanges]] = []
        self.patients_alone: list[str] = []
        self.practitioners_alone: list[str] = []

    def project_episode(self, uow: UnitOfWork, episode_id: str, changes: EpisodeChanges, now: datetime) -> Projected:
        self.episodes.append((episode_id, copy.deepcopy(changes)))
        return {}

    def project_patient_alone(self, uow: UnitOfWork, patient_id: str, now: datetime) -> None:
        self.patients_alone.append(patient_id)

    def project_practitioner_alone(self, uow: UnitOfWork, practitioner_id: str, now: datetime) -> None:
        self.practitioners_alone.append(practitioner_id)


class FakeUnitOfWork(UnitOfWork):
    """The real unit of work on a FakeRepository: commit keeps what the repository holds, leaving without a commit
    (an error, or no commit asked) puts it back as it was."""

    def __init__(self, repo: FakeRepository | None = None, projector: RecordingProjector | None = None) -> None:
        super().__init__(
            session_factory=None, clinic_id="demo", write=True, projector=projector or RecordingProjector()
        )  # type: ignore[arg-type]
        self.repo = repo or FakeRepository()  # type: ignore[assignment]
        self.session = None  # type: ignore[assignment]  # the outbox is not reached: no sync target in these tests
        self.commits = 0

    def __enter__(self) -> FakeUnitOfWork:
        # the bookkeeping UnitOfWork.__enter__ starts with, without the session it then opens
        self._before_commit = {}
        self.projected = {}
        self._changes = {}
        self._whole = set()
        self._snapshot = copy.deepcopy(self.repo.__dict__)
        self._committed = False
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._committed:
            self.repo.__dict__.update(self._snapshot)  # the rollback

    def commit(self) -> None:
        self.run_pending()
        self._committed = True
        self.commits += 1

    @property
    def recorder(self) -> Any:
        return self._projector
