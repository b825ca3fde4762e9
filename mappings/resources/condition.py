"""Condition per indication: ICD-10-CM where known (the REST API requires it; an EHR's Condition may carry SNOMED CT
only), SNOMED CT where known, and the kapfhir indication kind.

No US Core claim: us-core-condition-problems-health-concerns needs the core condition-assertedDate extension
definition, which is not available offline, so fhircraft cannot check it (tests/unit/mappings/test_profiles.py)."""

from __future__ import annotations

from mappings import datatypes as dt
from mappings import terminology as t
from mappings.context import CONDITION, Mapped, MappingContext
from mappings.resources._common import MappingRefusedError, kap_profile, start, sub_extensions
from service.domain.episode import Episode
from service.domain.model import Indication
from service.domain.vocabulary import EpisodeStatus, IndicationKind

_ENDED = (EpisodeStatus.FINISHED, EpisodeStatus.CANCELLED)


def to_condition(ctx: MappingContext, episode: Episode, index: int, indication: Indication) -> Mapped:
    value = ctx.condition_value(index)
    qualifiers = []
    if indication.treatment_resistant:
        qualifiers.append(dt.extension("treatmentResistant", valueBoolean=True))
    if indication.acute_suicidal_ideation:
        qualifiers.append(dt.extension("acuteSuicidalIdeation", valueBoolean=True))
    extensions = [dt.complex_extension(t.EXT_INDICATION_FLAGS, qualifiers)] if qualifiers else []
    header_version = episode.header_version or episode.version  # the Episode fills it; typed Optional
    resource = start(
        ctx,
        "Condition",
        CONDITION,
        value,
        [kap_profile("condition")],
        version=header_version,
        updated_at=episode.header_updated_at,
        extensions=extensions,
    )
    codings = [t.coding(t.ICD10CM, indication.icd10cm)] if indication.icd10cm else []
    if indication.snomed:
        codings.append(t.coding(t.SNOMED, indication.snomed))
    codings.append(t.INDICATION_KIND[indication.kind])
    resource |= {
        "clinicalStatus": dt.codeable_concept(t.CLINICAL_INACTIVE if episode.status in _ENDED else t.CLINICAL_ACTIVE),
        "verificationStatus": dt.codeable_concept(t.VERIFICATION_CONFIRMED),
        "category": [dt.codeable_concept(t.CATEGORY_PROBLEM_LIST)],
        "code": dt.codeable_concept(*codings, text=indication.display),
        "subject": ctx.patient(),
    }
    return Mapped(resource, CONDITION, value, header_version)


def from_condition(resource: dict) -> Indication:
    """Our Condition or an EHR's: needs an ICD-10-CM or SNOMED CT code (ours may carry only the kapfhir kind);
    the kind defaults to other."""
    code = resource.get("code") or {}
    icd = dt.code_in(code, t.ICD10CM)
    snomed = dt.code_in(code, t.SNOMED)
    kind = dt.code_in(code, t.CS_INDICATION_KIND)
    if not (icd or snomed or kind):
        raise MappingRefusedError(
            "Condition.code.coding", f"an ICD-10-CM ({t.ICD10CM}) or SNOMED CT ({t.SNOMED}) coding is required"
        )
    ext = dt.find_extension(resource, t.EXT_INDICATION_FLAGS)
    parts = sub_extensions(ext) if ext else {}
    return Indication(
        kind=IndicationKind(kind) if kind else IndicationKind.OTHER,
        icd10cm=icd,
        snomed=snomed,
        display=code.get("text"),
        treatment_resistant="treatmentResistant" in parts,
        acute_suicidal_ideation="acuteSuicidalIdeation" in parts,
    )
