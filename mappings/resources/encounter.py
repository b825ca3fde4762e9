"""Encounter per session: class AMB/VR, type (local session type + CPT where it applies), period, participants.

An entered-in-error session keeps its clinical status in ``statusHistory`` (the status before the error).
"""

from __future__ import annotations

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import PRIMARY, Mapped, MappingContext
from mappings.resources._common import (
    ReverseContext,
    kap_profile,
    read_record_meta,
    record_fields,
    start_record,
)
from service.domain.model import ClinicalSession
from service.domain.vocabulary import DosingSetting, Modality, SessionKind, SessionStatus

_, KIND = PRIMARY[ClinicalSession]
_MODALITY_OF = {c["code"]: m for m, c in t.ENCOUNTER_CLASS.items()}
_STATUS_OF = {v: k for k, v in t.ENCOUNTER_STATUS.items()}


def cpt_codes(session: ClinicalSession) -> list[dict]:
    """CPT where it applies. Psychotherapy time codes by the nearest of 30/45/60 minutes (16-37, 38-52, 53+)."""
    if session.kind is SessionKind.ASSESSMENT:
        return [t.CPT_DIAGNOSTIC_EVALUATION]
    if session.kind is SessionKind.DOSING:
        in_person = session.modality is Modality.IN_PERSON and session.setting is not DosingSetting.HOME
        return [t.CPT_PSYCHEDELIC_MONITORING] if in_person else []
    if session.end is None:
        return []
    minutes = (session.end - session.start).total_seconds() / 60
    if minutes < 16:
        return []
    if minutes < 38:
        return [t.CPT_PSYCHOTHERAPY_30]
    return [t.CPT_PSYCHOTHERAPY_45] if minutes < 53 else [t.CPT_PSYCHOTHERAPY_60]


def to_encounter(ctx: MappingContext, session: ClinicalSession) -> Mapped:
    extensions = []
    if session.setting is not None:
        extensions.append(dt.extension(t.EXT_DOSING_SETTING, valueCoding=t.DOSING_SETTING[session.setting]))
    if session.check_in_at is not None:
        extensions.append(dt.extension(t.EXT_CHECK_IN, valueDateTime=dt.instant(session.check_in_at)))
    if session.discharge_at is not None:
        extensions.append(dt.extension(t.EXT_DISCHARGE, valueDateTime=dt.instant(session.discharge_at)))
    resource = start_record(
        ctx, "Encounter", KIND, session, [kap_profile("encounter"), t.US_CORE_ENCOUNTER], extensions=extensions
    )
    resource["status"] = "entered-in-error" if session.entered_in_error else t.ENCOUNTER_STATUS[session.status]
    if session.entered_in_error:
        resource["statusHistory"] = [
            {"status": t.ENCOUNTER_STATUS[session.status], "period": dt.period(session.start, session.end)}
        ]
    resource |= {
        "class": t.ENCOUNTER_CLASS[session.modality],
        "type": [dt.codeable_concept(t.SESSION_TYPE[session.kind], *cpt_codes(session))],
        "subject": ctx.patient(),
        "episodeOfCare": [ctx.episode_of_care()],
        "participant": [{"individual": ctx.practitioner(pid)} for pid in session.clinician_ids],
        "period": dt.period(session.start, session.end),
        "serviceProvider": ctx.organization(),
    }
    if not resource["participant"]:
        del resource["participant"]
    return Mapped(resource, KIND, session.id, session.version)


def from_encounter(rctx: ReverseContext, resource: dict) -> ClinicalSession:
    eie = resource["status"] == "entered-in-error"
    status = resource["statusHistory"][-1]["status"] if eie else resource["status"]
    period = resource["period"]
    setting = dt.find_extension(resource, t.EXT_DOSING_SETTING)
    check_in = dt.find_extension(resource, t.EXT_CHECK_IN)
    discharge = dt.find_extension(resource, t.EXT_DISCHARGE)
    return ClinicalSession(
        id=rctx.own_id(resource),
        **record_fields(read_record_meta(resource, eie)),
        kind=SessionKind(dt.code_in(resource["type"][0], t.CS_SESSION_TYPE)),
        status=SessionStatus(_STATUS_OF[status]),
        start=dt.parse_datetime(period["start"]),
        end=dt.parse_datetime(period["end"]) if "end" in period else None,
        modality=_MODALITY_OF[resource["class"]["code"]],
        clinician_ids=[rctx.local_id(p["individual"]) for p in resource.get("participant", ())],
        setting=DosingSetting(setting["valueCoding"]["code"]) if setting else None,
        check_in_at=dt.parse_datetime(check_in["valueDateTime"]) if check_in else None,
        discharge_at=dt.parse_datetime(discharge["valueDateTime"]) if discharge else None,
    )
