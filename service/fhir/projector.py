"""The FHIR projection as the unit of work's projector (installed by the app's wiring): the use cases say what
changed, this maps and stores it. Kept apart from ``projection`` and ``inbound`` so neither imports the other
through it."""

from __future__ import annotations

from datetime import datetime

from service.fhir import inbound, projection
from service.service_layer.services import episode_chart
from service.service_layer.unit_of_work import EpisodeChanges, Projected, UnitOfWork


class FhirProjector:
    def project_episode(self, uow: UnitOfWork, episode_id: str, changes: EpisodeChanges, now: datetime) -> Projected:
        return projection.project_changes(uow.session, uow.clinic_id, episode_chart(uow, episode_id), changes, now)

    def project_patient_alone(self, uow: UnitOfWork, patient_id: str, now: datetime) -> None:
        clinic, patient = uow.repo.get_clinic(), uow.repo.get_patient(patient_id)
        weights = uow.repo.body_weights(patient_id)
        inbound.project_patient_alone(uow.session, uow.clinic_id, clinic, patient, now, weights)

    def project_practitioner_alone(self, uow: UnitOfWork, practitioner_id: str, now: datetime) -> None:
        clinic, practitioner = uow.repo.get_clinic(), uow.repo.get_practitioner(practitioner_id)
        inbound.project_practitioner_alone(uow.session, uow.clinic_id, clinic, practitioner, now)
