"""CarePlan of the KAP course: one activity per phase, the phase history in a kapfhir extension."""

from __future__ import annotations

from html import escape

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import CAREPLAN, Mapped, MappingContext
from mappings.resources._common import kap_profile, read_record_meta, start, sub_extensions
from service.domain.episode import Episode
from service.domain.model import ClinicalSession, PhaseTransition
from service.domain.vocabulary import Phase

CARE_PHASES = (Phase.ASSESSMENT, Phase.PREPARATION, Phase.DOSING, Phase.INTEGRATION, Phase.MAINTENANCE)
_TERMINAL = (Phase.COMPLETED, Phase.DISCONTINUED)


def activity_status(episode: Episode, phase: Phase) -> str:
    """care-plan-activity-status of a phase, following the phase history."""
    reached = {Phase.ASSESSMENT, *(tr.to_phase for tr in episode.phase_history)}
    if phase is episode.phase:
        return "in-progress"
    if episode.phase is Phase.DISCONTINUED and episode.phase_history and episode.phase_history[-1].from_phase is phase:
        return "stopped"
    if phase in reached:
        return "completed"
    return "cancelled" if episode.phase in _TERMINAL else "not-started"


def _transition(tr: PhaseTransition) -> dict:
    parts = []
    if tr.from_phase is not None:
        parts.append(dt.extension("from", valueCoding=t.PHASE[tr.from_phase]))
    parts += [
        dt.extension("to", valueCoding=t.PHASE[tr.to_phase]),
        dt.extension("at", valueDateTime=dt.instant(tr.at)),
        dt.extension("actor", valueString=tr.actor),
    ]
    if tr.reason is not None:
        parts.append(dt.extension("reason", valueString=tr.reason))
    return dt.complex_extension(t.EXT_PHASE_TRANSITION, parts)


def to_care_plan(ctx: MappingContext, episode: Episode) -> Mapped:
    extensions = [dt.extension(t.EXT_PHASE, valueCoding=t.PHASE[episode.phase])]
    extensions += [_transition(tr) for tr in episode.phase_history]
    resource = start(
        ctx,
        "CarePlan",
        CAREPLAN,
        episode.id,
        [kap_profile("careplan"), t.US_CORE_CAREPLAN],
        version=episode.version,
        recorded_at=episode.created_at,
        updated_at=episode.updated_at,
        extensions=extensions,
    )
    sessions = episode.current(ClinicalSession)
    phase_of = {s.id: episode.phase_at(s.start) for s in sessions}
    activities, rows = [], []
    for phase in CARE_PHASES:
        status = activity_status(episode, phase)
        title = t.PHASE[phase]["display"]
        rows.append(f"<li>{escape(title)}: {status}</li>")
        activity: dict = {
            "extension": [dt.extension(t.EXT_CAREPLAN_ACTIVITY_TITLE, valueString=title)],
            "detail": {"code": dt.codeable_concept(t.PHASE[phase]), "status": status},
        }
        outcomes = [ctx.primary_url[s.id] for s in sessions if phase_of[s.id] is phase]
        if outcomes:
            activity["outcomeReference"] = [{"reference": url} for url in outcomes]
        activities.append(activity)
    resource |= {
        "text": dt.narrative(
            f"<p>Ketamine-assisted psychotherapy plan, current phase: {escape(t.PHASE[episode.phase]['display'])}."
            f"</p><ul>{''.join(rows)}</ul>"
        ),
        "status": t.CAREPLAN_STATUS[episode.status],
        "intent": "plan",
        "category": [dt.codeable_concept(t.CATEGORY_ASSESS_PLAN)],
        "subject": ctx.patient(),
        "period": dt.period(episode.period_start, episode.period_end),
        "author": ctx.organization(),
        "addresses": ctx.conditions(),
        "activity": activities,
    }
    if not resource["addresses"]:
        del resource["addresses"]
    return Mapped(resource, CAREPLAN, episode.id, episode.version)


def from_care_plan(resource: dict) -> dict:
    """The phases and the episode's version (the CarePlan changes with every session written)."""
    meta = read_record_meta(resource)
    phase = Phase(dt.find_extension(resource, t.EXT_PHASE)["valueCoding"]["code"])
    history = []
    for ext in dt.find_extensions(resource, t.EXT_PHASE_TRANSITION):
        parts = sub_extensions(ext)
        history.append(
            PhaseTransition(
                from_phase=Phase(parts["from"]["valueCoding"]["code"]) if "from" in parts else None,
                to_phase=Phase(parts["to"]["valueCoding"]["code"]),
                at=dt.parse_datetime(parts["at"]["valueDateTime"]),
                actor=parts["actor"]["valueString"],
                reason=parts["reason"]["valueString"] if "reason" in parts else None,
            )
        )
    return {"phase": phase, "phase_history": history, "version": meta.version, "updated_at": meta.updated_at}
