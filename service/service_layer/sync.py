"""Delivering queued episodes to EHR targets: the outbox worker's use cases."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import sessionmaker

from mappings.bundle import to_transaction_bundle
from mappings.resources import operation_outcome as fhir_outcome
from service.adapters import audit, outbox
from service.domain.model import PrivacyConsent
from service.exchange.client import FhirClient
from service.exchange.planner import Links, RemoteRecord
from service.exchange.privacy import ACTIVE, OrganizationRef
from service.exchange.privacy import PrivacyConsent as GateConsent
from service.exchange.push import PushReport, push_bundle
from service.exchange.targets import Target, build_client
from service.service_layer import services
from service.service_layer.unit_of_work import UnitOfWork
from validation import operation_outcome, validate_bundle

log = logging.getLogger("kapfhir.sync")

LEASE = timedelta(minutes=5)
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 900.0
# The layers an outbound bundle must pass (fhir.resources structure is applied by the mapping's own tests).
OUTBOUND_LAYERS = ["bindings", "invariants", "profile"]


def gate_consents(consents: list[PrivacyConsent]) -> list[GateConsent]:
    """Domain privacy consents as the exchange's privacy gate reads them."""
    out = []
    for consent in consents:
        ends = [t for t in (consent.valid_until, consent.withdrawn_at) if t is not None]
        out.append(
            GateConsent(
                id=consent.id,
                status="entered-in-error" if consent.entered_in_error else ACTIVE,
                decision="permit",
                recipients=(OrganizationRef(consent.recipient_identifier.system, consent.recipient_identifier.value),),
                period_start=consent.valid_from or consent.signed_at,
                period_end=min(ends) if ends else None,
                substance_use_disclosure=consent.includes_substance_use_records,
            )
        )
    return out


def backoff(attempts: int) -> timedelta:
    """Exponential backoff with ±20 % jitter, capped."""
    seconds = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))
    return timedelta(seconds=seconds * random.uniform(0.8, 1.2))


def _describe(exc: Exception) -> str:
    from service.exchange.client import FhirError

    return f"{type(exc).__name__}: {exc}" if isinstance(exc, FhirError) else type(exc).__name__


def _resource_type(key: str) -> str:
    return key.split("?", 1)[0].split("/", 1)[0]


@dataclass
class Delivery:
    job: outbox.SyncJob
    status: str
    report: PushReport | None = None
    detail: str | None = None
    error: Any = None  # the OperationOutcome stored as the job's last error (failed and retried deliveries)


@dataclass
class Deliverer:
    """Pushes claimed jobs. Keeps one FHIR client (and so one token cache) per target."""

    session_factory: sessionmaker
    targets: dict[str, Target]
    max_attempts: int = 8
    client_factory: Callable[[Target], FhirClient] = build_client
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _clients: dict[str, FhirClient] = field(default_factory=dict)

    def client(self, target: Target) -> FhirClient:
        if target.name not in self._clients:
            self._clients[target.name] = self.client_factory(target)
        return self._clients[target.name]

    def claim(self, worker: str) -> outbox.SyncJob | None:
        with UnitOfWork(self.session_factory, "", write=True) as uow:
            job = outbox.claim(uow.session, worker, self.clock(), LEASE)
            uow.commit()
        return job

    def deliver(self, job: outbox.SyncJob) -> Delivery:
        target = self.targets.get(job.target)
        if target is None:
            return self._finish(job, outbox.DEAD, None, detail=f"target {job.target} is no longer configured")
        with UnitOfWork(self.session_factory, job.clinic_id, write=False) as uow:
            chart = services.episode_chart(uow, job.episode_id)
            consents = uow.repo.patient_records(chart.patient.id, "privacy-consent")
            link = outbox.patient_link(uow.session, job.clinic_id, chart.patient.id, target.name)
            remote = outbox.remote_records(uow.session, job.clinic_id, target.name, job.episode_id)
        bundle = to_transaction_bundle(chart)
        errors = [i for i in validate_bundle(bundle, OUTBOUND_LAYERS) if i.severity in ("error", "fatal")]
        if errors:
            # A bundle we would refuse ourselves never leaves: a dead letter with the OperationOutcome.
            return self._finish(
                job, outbox.DEAD, None, error=operation_outcome(errors), detail="the outbound bundle is not valid"
            )
        links = Links(
            patient_id=link,
            remote={
                key: RemoteRecord(r["id"], r["version"], r["content_hash"]) for key, r in remote.items() if r["id"]
            },
        )
        try:
            report = push_bundle(
                self.client(target), target, bundle, links=links, consents=gate_consents(consents), now=self.clock()
            )  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - a transport failure outside the report is retried like one
            log.warning("push failed", extra={"error_class": type(exc).__name__})
            return self._retry_or_dead(
                job,
                None,
                # FhirError messages carry no URL query (no identifiers); others: the class only.
                fhir_outcome.operation_outcome(
                    [fhir_outcome.issue("error", "transient", f"push failed: {_describe(exc)}")]
                ),
            )
        self._remember(job, chart.patient.id, target, report)
        if report.held:
            return self._finish(job, outbox.HELD, report, held_reason=report.held)
        if report.ok:
            return self._finish(job, outbox.DELIVERED, report)
        return self._retry_or_dead(
            job, report, report.last_operation_outcome or report.as_dict(), retryable=report.retryable
        )

    def release(self, job: outbox.SyncJob, exc: BaseException) -> Delivery:
        """A claimed job whose delivery failed outside the push (reading the episode, recording what was sent): it
        is retried like a transport failure, never left claimed. Only the error's class is kept (no patient data)."""
        error = fhir_outcome.operation_outcome(
            [fhir_outcome.issue("error", "exception", f"delivery failed: {type(exc).__name__}")]
        )
        return self._retry_or_dead(job, None, error)

    def _retry_or_dead(
        self, job: outbox.SyncJob, report: PushReport | None, error: Any, *, retryable: bool = True
    ) -> Delivery:
        attempts = job.attempts + 1
        if retryable and attempts < self.max_attempts:
            return self._finish(
                job,
                outbox.QUEUED,
                report,
                error=error,
                attempts=attempts,
                next_attempt_at=self.clock() + backoff(attempts),
            )
        return self._finish(job, outbox.DEAD, report, error=error, attempts=attempts)

    def _remember(self, job: outbox.SyncJob, patient_id: str, target: Target, report: PushReport) -> None:
        now = self.clock()
        with UnitOfWork(self.session_factory, job.clinic_id, write=True) as uow:
            for key, record in report.remote.items():
                outbox.store_remote(
                    uow.session,
                    job.clinic_id,
                    target.name,
                    job.episode_id,
                    key,
                    _resource_type(key),
                    record.id,
                    record.version,
                    record.content_hash or "",
                    "pushed",
                    now,
                )
            if report.patient_id and not outbox.patient_link(uow.session, job.clinic_id, patient_id, target.name):
                outbox.link_patient(uow.session, job.clinic_id, patient_id, target.name, report.patient_id, now)
            uow.commit()

    def _finish(
        self,
        job: outbox.SyncJob,
        status: str,
        report: PushReport | None,
        *,
        error: Any = None,
        held_reason: str | None = None,
        attempts: int | None = None,
        next_attempt_at: datetime | None = None,
        detail: str | None = None,
    ) -> Delivery:
        now = self.clock()
        with UnitOfWork(self.session_factory, job.clinic_id, write=True) as uow:
            outbox.finish(
                uow.session,
                job,
                status=status,
                now=now,
                held_reason=held_reason,
                last_error=error,
                attempts=attempts,
                next_attempt_at=next_attempt_at,
            )
            # A push of patient data is audited like any other disclosure.
            audit.append(
                uow.session,
                audit.AuditRecord(
                    recorded=now,
                    type="export",
                    subtype="push",
                    action="E",
                    outcome="0"
                    if status in (outbox.DELIVERED, outbox.HELD)
                    else ("4" if status == outbox.QUEUED else "8"),
                    method="PUSH",
                    route=f"worker:push:{job.target}",
                    status={outbox.DELIVERED: 200, outbox.HELD: 202, outbox.QUEUED: 503}.get(status, 502),
                    clinic_id=job.clinic_id,
                    client_id="kapfhir-worker",
                    network_address=None,
                    request_id=job.id,
                    entity=[{"type": "EpisodeOfCare", "id": job.episode_id}],
                ),
            )
            uow.commit()
        log.info("sync job", extra={"event": status, "count": job.attempts})
        return Delivery(job, status, report, detail or held_reason, error)


def run_worker(
    deliverer: Deliverer,
    *,
    worker: str,
    stop: threading.Event,
    poll_seconds: float = 1.0,
    max_jobs: int | None = None,
    exit_when_idle: bool = False,
    on_delivery: Callable[[Delivery], None] | None = None,
) -> list[Delivery]:
    """Claims and delivers jobs until ``stop`` is set (or, bounded, after ``max_jobs`` / once idle)."""
    done: list[Delivery] = []
    while not stop.is_set() and (max_jobs is None or len(done) < max_jobs):
        job = deliverer.claim(worker)
        if job is None:
            if exit_when_idle:
                break
            stop.wait(poll_seconds)
            continue
        try:
            done.append(deliverer.deliver(job))
        except Exception as exc:  # noqa: BLE001 - one job's failure must not stop the worker
            log.error("sync job failed", extra={"error_class": type(exc).__name__})
            done.append(deliverer.release(job, exc))
        if on_delivery is not None:
            on_delivery(done[-1])
    return done
