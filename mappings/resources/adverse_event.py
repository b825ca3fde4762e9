"""AdverseEvent for every side effect, whatever its severity (an edit never changes the resource type).

R4 AdverseEvent has no status: entered-in-error is in the kapfhir record-metadata extension. ``seriousness``
carries the domain's ICH E2A judgement (``SideEffect.serious``) as ``serious`` / ``non-serious`` of the R4 example
code system adverse-event-seriousness; ``severity`` (mild, moderate, severe) is a different axis.
"""

from __future__ import annotations

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import PRIMARY, Mapped, MappingContext
from mappings.resources._common import ReverseContext, kap_profile, read_record_meta, record_fields, start_record
from service.domain.model import DosingRecord, SideEffect
from service.domain.vocabulary import SideEffectKind, SideEffectSeverity

_, KIND = PRIMARY[SideEffect]
_, DOSE_KIND = PRIMARY[DosingRecord]


def to_adverse_event(ctx: MappingContext, effect: SideEffect) -> Mapped:
    extensions = []
    if effect.resolved_at is not None:
        extensions.append(dt.extension(t.EXT_RESOLVED_AT, valueDateTime=dt.instant(effect.resolved_at)))
    resource = start_record(ctx, "AdverseEvent", KIND, effect, [kap_profile("adverseevent")], extensions=extensions)
    codings = [t.SIDE_EFFECT[effect.kind]]
    if effect.kind in t.SIDE_EFFECT_SNOMED:
        codings.append(t.SIDE_EFFECT_SNOMED[effect.kind])
    resource |= {
        "actuality": "actual",
        "event": dt.codeable_concept(*codings, text=effect.other_text),
        "subject": ctx.patient(),
        "date": dt.instant(effect.onset_at),
        "seriousness": dt.codeable_concept(t.AE_SERIOUS if effect.serious else t.AE_NON_SERIOUS),
        "severity": dt.codeable_concept(t.AE_SEVERITY_OF[effect.severity]),
        "outcome": dt.codeable_concept(t.AE_OUTCOME_RESOLVED if effect.resolved_at else t.AE_OUTCOME_ONGOING),
    }
    if effect.recorded_at is not None:
        resource["recordedDate"] = dt.instant(effect.recorded_at)
    if effect.session_id is not None:
        resource["encounter"] = ctx.record(effect.session_id, "Encounter", "session")
    if effect.dose_id is not None:
        resource["suspectEntity"] = [{"instance": ctx.record(effect.dose_id, "MedicationAdministration", DOSE_KIND)}]
    return Mapped(resource, KIND, effect.id, effect.version)


def from_adverse_event(rctx: ReverseContext, resource: dict) -> SideEffect:
    resolved = dt.find_extension(resource, t.EXT_RESOLVED_AT)
    suspects = resource.get("suspectEntity", ())
    return SideEffect(
        id=rctx.own_id(resource),
        **record_fields(read_record_meta(resource)),
        session_id=rctx.local_id(resource.get("encounter")),
        dose_id=rctx.local_id(suspects[0]["instance"]) if suspects else None,
        kind=SideEffectKind(dt.code_in(resource["event"], t.CS_SIDE_EFFECT)),
        other_text=resource["event"].get("text"),
        severity=SideEffectSeverity(resource["severity"]["coding"][0]["code"]),
        serious=dt.code_in(resource.get("seriousness"), t.AE_SERIOUSNESS) == t.AE_SERIOUS["code"],
        onset_at=dt.parse_datetime(resource["date"]),
        resolved_at=dt.parse_datetime(resolved["valueDateTime"]) if resolved else None,
    )
