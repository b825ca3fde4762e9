"""EpisodeOfCare: the KAP course (status, diagnosis -> Conditions, period, care manager, care team)."""

from __future__ import annotations

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import EPISODE, Mapped, MappingContext
from mappings.resources._common import ReverseContext, kap_profile, read_record_meta, start, sub_extensions
from service.domain.episode import Episode
from service.domain.model import CareTeamMember
from service.domain.vocabulary import EpisodeStatus, PractitionerRole

_STATUS_OF = {v: k for k, v in t.EPISODE_OF_CARE_STATUS.items()}


def to_episode_of_care(ctx: MappingContext, episode: Episode) -> Mapped:
    team = [
        dt.complex_extension(
            t.EXT_CARE_TEAM_MEMBER,
            [
                dt.extension("practitioner", valueReference=ctx.practitioner(m.practitioner_id)),
                dt.extension("role", valueCoding=t.PRACTITIONER_ROLE[m.role]),
            ],
        )
        for m in episode.care_team
    ]
    extensions = team
    if episode.discontinuation_reason is not None:
        extensions.append(dt.extension(t.EXT_DISCONTINUATION_REASON, valueString=episode.discontinuation_reason))
    header_version = episode.header_version or episode.version  # the Episode fills it; typed Optional
    resource = start(
        ctx,
        "EpisodeOfCare",
        EPISODE,
        episode.id,
        [kap_profile("episodeofcare")],
        version=header_version,  # the header's: a session written changes nothing here
        recorded_at=episode.created_at,
        updated_at=episode.header_updated_at,
        extensions=extensions,
    )
    resource |= {
        "status": t.EPISODE_OF_CARE_STATUS[episode.status],
        "diagnosis": [{"condition": ref, "rank": i + 1} for i, ref in enumerate(ctx.conditions())],
        "patient": ctx.patient(),
        "managingOrganization": ctx.organization(),
        "period": dt.period(episode.period_start, episode.period_end),
    }
    if not resource["diagnosis"]:
        del resource["diagnosis"]
    manager = next((m for m in episode.care_team if m.role is PractitionerRole.PRESCRIBER), None)
    if manager is not None:
        resource["careManager"] = ctx.practitioner(manager.practitioner_id)
    return Mapped(resource, EPISODE, episode.id, header_version)


def from_episode_of_care(rctx: ReverseContext, resource: dict) -> dict:
    """Episode fields carried by the EpisodeOfCare: the header and its version (the episode's version comes from
    the CarePlan, the rest from the records)."""
    meta = read_record_meta(resource)
    team = []
    for ext in dt.find_extensions(resource, t.EXT_CARE_TEAM_MEMBER):
        parts = sub_extensions(ext)
        team.append(
            CareTeamMember(
                practitioner_id=rctx.local_id(parts["practitioner"]["valueReference"]),
                role=PractitionerRole(parts["role"]["valueCoding"]["code"]),
            )
        )
    reason = dt.find_extension(resource, t.EXT_DISCONTINUATION_REASON)
    period = resource["period"]
    return {
        "id": rctx.own_id(resource),
        "patient_id": rctx.local_id(resource["patient"]),
        "care_team": team,
        "period_start": dt.parse_datetime(period["start"]),
        "period_end": dt.parse_datetime(period["end"]) if "end" in period else None,
        "status": EpisodeStatus(_STATUS_OF[resource["status"]]),
        "discontinuation_reason": reason["valueString"] if reason else None,
        "header_version": meta.version,
        "created_at": meta.recorded_at,
        "header_updated_at": meta.updated_at,
    }
