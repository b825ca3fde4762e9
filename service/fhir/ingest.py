"""``POST /fhir`` transaction and batch Bundles into the domain: validated first, mapped back with
``mappings.bundle.from_bundle``, applied with the domain's own checks and safety rules (what happened is stored;
rule deviations raise safety flags), then projected, all in the caller's unit of work.

``ifNoneExist`` and conditional ``PUT`` are honoured on the business identifier: a POSTed record that already
exists is left as it is (200), a PUT replaces it (a new version when its content differs). Posting the same
Bundle twice changes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from mappings.bundle import from_bundle
from mappings.resources._common import MappingRefusedError
from service.adapters.serialization import episode_header_data, to_data
from service.domain.chart import EpisodeChart
from service.domain.episode import check_not_future
from service.domain.errors import NotFound
from service.service_layer import services
from service.service_layer.services import Context


class IngestError(Exception):
    def __init__(self, status: int, expression: str, message: str, code: str = "processing") -> None:
        super().__init__(message)
        self.status, self.expression, self.message, self.code = status, expression, message, code


def identifier_condition(text: str, expression: str) -> tuple[str | None, str]:
    """``identifier=system|value`` (the only condition kapfhir resolves) -> (system, value)."""
    pairs = parse_qsl(text, keep_blank_values=True)
    if len(pairs) != 1 or pairs[0][0] != "identifier" or not pairs[0][1]:
        raise IngestError(
            400, expression, f"unsupported condition {text!r}: use identifier=system|value", "not-supported"
        )
    system, _, value = pairs[0][1].rpartition("|")
    return (system or None), value


def _bump(new: Any, current: Any) -> Any:
    if new.version <= current.version:
        new.version = current.version + 1
    return new


def import_chart(uow: Any, ctx: Context, chart: EpisodeChart, may_update: Callable[[str], bool]) -> bool:
    """Stores the chart's practitioners, patient, body weights and episode; returns whether anything changed."""
    repo = uow.repo
    changed = False
    for practitioner in chart.practitioners:
        try:
            repo.get_practitioner(practitioner.id)
        except NotFound:
            repo.add_practitioner(practitioner, actor=ctx.actor, now=practitioner.recorded_at or ctx.now)
            changed = True
    patient = chart.patient
    try:
        current_patient = repo.get_patient(patient.id)
    except NotFound:
        repo.add_patient(patient, actor=ctx.actor, now=patient.recorded_at or ctx.now)
        changed = True
    else:
        mine = {k: v for k, v in to_data(patient).items() if k not in ("version", "recorded_at", "updated_at")}
        theirs = {
            k: v for k, v in to_data(current_patient).items() if k not in ("version", "recorded_at", "updated_at")
        }
        if mine != theirs and may_update(patient.id):
            services.amend_patient(uow, ctx, patient, reason="FHIR transaction", expected_version=None)
            changed = True
    for weight in chart.body_weights:
        try:
            repo.get_patient_record(patient.id, weight.id)
        except NotFound:
            services._check_times(weight, ctx)
            repo.add_patient_record(patient.id, weight, actor=ctx.actor)
            changed = True
    clinic = repo.get_clinic()
    if (
        clinic.setting is None
        and chart.clinic.setting is not None
        and (chart.clinic.id, chart.clinic.identifier_system) == (clinic.id, clinic.identifier_system)
    ):
        # A bundle of this very clinic brings its REMS healthcare setting and time zone when none is recorded here.
        repo.update_clinic_setting(time_zone=chart.clinic.time_zone, setting=chart.clinic.setting)
        changed = True
    episode = chart.episode
    episode.patient_id = patient.id
    try:
        existing = repo.get_episode(episode.id, for_update=True)
    except NotFound:
        existing = None
    if existing is None:
        check_not_future("period_start", episode.period_start, ctx.now, ctx.future_tolerance_min)
        services._check_practitioners(uow, episode)
        for record in episode.records.values():
            services._check_times(record, ctx)
            services._check_practitioners(uow, record)
        target = episode.version
        episode.evaluate_safety(ctx.policy, now=ctx.now)
        episode.version = max(target - 1, 0)
        repo.add_episode(episode, actor=ctx.actor, now=episode.created_at or ctx.now)
        repo.save_episode(episode, expected_version=episode.version, actor=ctx.actor, now=episode.updated_at or ctx.now)
        return True
    touched = False
    for record_id, record in episode.records.items():
        current = existing.records.get(record_id)
        if current is None or (to_data(current) != to_data(record) and may_update(record_id)):
            services._check_times(record, ctx)
            services._check_practitioners(uow, record)
            existing.records[record_id] = record if current is None else _bump(record, current)
            touched = True
    skip = {"version", "updated_at", "created_at", "records", "flags"}
    mine_header = {k: v for k, v in episode_header_data(episode).items() if k not in skip}
    their_header = {k: v for k, v in episode_header_data(existing).items() if k not in skip}
    if mine_header != their_header and may_update(episode.id):
        for key in (
            "indications",
            "care_team",
            "status",
            "phase",
            "phase_history",
            "period_end",
            "discontinuation_reason",
        ):
            if hasattr(episode, key):
                setattr(existing, key, copy.deepcopy(getattr(episode, key)))
        services._check_practitioners(uow, existing)
        touched = True
    for flag in episode.flags:
        mine_flag = next((f for f in existing.flags if f.id == flag.id), None)
        if mine_flag is not None and flag.acknowledgement and not mine_flag.acknowledgement:
            mine_flag.status, mine_flag.acknowledgement = flag.status, flag.acknowledgement
            touched = True
    known = {sub.id for sub in existing.rems.submissions}
    for submission in episode.rems.submissions:  # REMS form sendings recorded elsewhere are added, never changed
        if submission.id not in known:
            existing.rems.submissions.append(submission)
            touched = True
    if touched:
        before = existing.version
        existing.evaluate_safety(ctx.policy, now=ctx.now)
        repo.save_episode(
            existing,
            expected_version=before,
            actor=ctx.actor,
            now=ctx.now,
            episode_change=("amended", "FHIR transaction"),
        )
    return changed or touched


def chart_of(bundle: dict) -> EpisodeChart:
    try:
        return from_bundle(bundle)
    except MappingRefusedError as exc:
        raise IngestError(422, exc.expression, exc.reason, "business-rule") from None
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, StopIteration) as exc:
        raise IngestError(
            422, "Bundle", f"the Bundle does not map into a KAP episode ({type(exc).__name__})", "business-rule"
        ) from None


def project(uow: Any, ctx: Context, episode_id: str) -> dict[tuple[str, str], tuple[int, bool]]:
    """The same follow-up as every domain write (outbox job and projection), done now: the transaction-response
    needs the new versions."""
    return services.follow_up_change(uow, ctx, episode_id)
