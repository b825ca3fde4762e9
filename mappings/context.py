"""Identity of the resources of one export: business identifiers, deterministic fullUrls, references, meta.

Every resource carries ``identifier = {system: <clinic identifier system>/<kind>, value: <stable local id>}``
and has ``fullUrl = urn:uuid:uuid5(<clinic identifier system>|<resource type>|<kind>|<value>)``, so the same
record always gets the same fullUrl and the same conditional request.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from mappings import datatypes as dt
from mappings import terminology as t
from service.domain.chart import EpisodeChart
from service.domain.model import (
    BodyWeight,
    ClinicalSession,
    ConcomitantMedication,
    Consent,
    DosingOrder,
    DosingRecord,
    MonitoringReading,
    OutcomeMeasure,
    Record,
    SideEffect,
)
from service.domain.vocabulary import IndicationKind

# Kinds: the per-type suffix of the identifier system.
ORGANIZATION, PATIENT, PRACTITIONER = "organization", "patient", "practitioner"
EPISODE, CAREPLAN, CONDITION = "episode", "care-plan", "indication"
PROCEDURE, FLAG, SAFETY_FLAG, OUTCOME_SCORE = "psychotherapy", "suicide-risk-flag", "safety-flag", "outcome-score"

# Record class -> (FHIR type of its primary resource, kind)
PRIMARY: dict[type[Record], tuple[str, str]] = {
    Consent: ("Consent", "consent"),
    DosingOrder: ("MedicationRequest", "dosing-order"),
    ClinicalSession: ("Encounter", "session"),
    DosingRecord: ("MedicationAdministration", "dose"),
    MonitoringReading: ("Observation", "monitoring-reading"),
    SideEffect: ("AdverseEvent", "side-effect"),
    OutcomeMeasure: ("QuestionnaireResponse", "outcome-measure"),
    ConcomitantMedication: ("MedicationStatement", "concomitant-medication"),
    BodyWeight: ("Observation", "body-weight"),
}
KINDS_WITH_SUFFIX = frozenset({"monitoring-reading", OUTCOME_SCORE})
RECORD_REFERENCE_KIND = "record"  # identifier-only reference to a record that is not in the export


@functools.lru_cache(maxsize=65_536)  # pure; uuid5 (a SHA-1) is most of the cost of a reference
def full_url_of(base: str, resource_type: str, kind: str, value: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{base}|{resource_type}|{kind}|{value}')}"


class PrimaryUrls:
    """Record id -> fullUrl of its primary resource, for the records of the chart; worked out when first asked for,
    since the mapping of a part of a long chart names only a few of them."""

    def __init__(self, ctx: MappingContext, value_of: Callable[[Record], str]) -> None:
        self._ctx, self._value_of = ctx, value_of
        self._weights = {w.id: w for w in ctx.body_weights}

    def get(self, record_id: str, default: str | None = None) -> str | None:
        record = self._ctx.chart.episode.records.get(record_id) or self._weights.get(record_id)
        if record is None:
            return default
        resource_type, kind = PRIMARY[type(record)]
        return self._ctx.full_url(resource_type, kind, self._value_of(record))

    def __getitem__(self, record_id: str) -> str:
        url = self.get(record_id)
        if url is None:
            raise KeyError(record_id)
        return url


@dataclass
class MappingContext:
    chart: EpisodeChart
    base: str = ""
    security: list[dict] = field(default_factory=list)
    primary_url: PrimaryUrls | dict[str, str] = field(default_factory=dict)  # set by the mapping of a chart
    practitioner_ids: frozenset[str] = frozenset()
    body_weights: list[BodyWeight] = field(default_factory=list)  # the chart's, then the episode's others
    # fullUrls computed in this mapping (uuid5 is most of a reference's cost; the patient's is asked for per resource)
    _full_urls: dict[tuple[str, str, str], str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.base = self.chart.clinic.identifier_system.rstrip("/")
        labels = [t.SECURITY_RESTRICTED, t.SECURITY_PSY]
        if any(i.kind is IndicationKind.SUBSTANCE_USE for i in self.chart.episode.indications):
            labels.append(t.SECURITY_ETH)
        self.security = labels
        self.practitioner_ids = frozenset(p.id for p in self.chart.practitioners)
        chart_ids = {w.id for w in self.chart.body_weights}
        self.body_weights = [
            *self.chart.body_weights,
            *(w for w in self.chart.episode.all_of(BodyWeight) if w.id not in chart_ids),
        ]

    # --- identity ------------------------------------------------------------------------------------------

    def system(self, kind: str) -> str:
        return f"{self.base}/{kind}"

    def identifier(self, kind: str, value: str) -> dict:
        return dt.identifier(self.system(kind), value)

    def full_url(self, resource_type: str, kind: str, value: str) -> str:
        key = (resource_type, kind, value)
        url = self._full_urls.get(key)
        if url is None:
            url = self._full_urls[key] = full_url_of(self.base, resource_type, kind, value)
        return url

    # --- references ----------------------------------------------------------------------------------------

    def ref(self, resource_type: str, kind: str, value: str) -> dict:
        return {"reference": self.full_url(resource_type, kind, value)}

    def organization(self) -> dict:
        return self.ref("Organization", ORGANIZATION, self.chart.clinic.id)

    def patient(self) -> dict:
        return self.ref("Patient", PATIENT, self.chart.patient.id)

    def episode_of_care(self) -> dict:
        return self.ref("EpisodeOfCare", EPISODE, self.chart.episode.id)

    def care_plan(self) -> dict:
        return self.ref("CarePlan", CAREPLAN, self.chart.episode.id)

    def condition_value(self, index: int) -> str:
        return f"{self.chart.episode.id}.{index}"

    def conditions(self) -> list[dict]:
        return [
            self.ref("Condition", CONDITION, self.condition_value(i))
            for i in range(len(self.chart.episode.indications))
        ]

    def practitioner(self, practitioner_id: str) -> dict:
        """A Practitioner in the bundle by fullUrl; one we do not export by its business identifier."""
        if practitioner_id in self.practitioner_ids:
            return self.ref("Practitioner", PRACTITIONER, practitioner_id)
        return {"type": "Practitioner", "identifier": self.identifier(PRACTITIONER, practitioner_id)}

    def record(self, record_id: str, resource_type: str, kind: str) -> dict:
        """Reference to a record's primary resource; by identifier when the record is not exported."""
        url = self.primary_url.get(record_id)
        if url is not None:
            return {"reference": url}
        return {"type": resource_type, "identifier": self.identifier(kind, record_id)}

    def any_record(self, record_id: str) -> dict:
        url = self.primary_url.get(record_id)
        if url is not None:
            return {"reference": url}
        return {"identifier": self.identifier(RECORD_REFERENCE_KIND, record_id)}

    # --- meta ----------------------------------------------------------------------------------------------

    def meta(self, profiles: list[str], last_updated: datetime | None = None) -> dict:
        meta: dict = {}
        if last_updated is not None:
            meta["lastUpdated"] = dt.instant(last_updated)
        meta["profile"] = profiles
        meta["security"] = self.security
        return meta


def record_metadata(version: int, recorded_at: datetime | None = None, entered_in_error: bool = False) -> dict:
    """kapfhir record-metadata extension: the domain version, first-recorded time, entered-in-error."""
    parts = [dt.extension("version", valueInteger=version)]
    if recorded_at is not None:
        parts.append(dt.extension("recorded", valueDateTime=dt.instant(recorded_at)))
    if entered_in_error:
        parts.append(dt.extension("enteredInError", valueBoolean=True))
    return dt.complex_extension(t.EXT_RECORD, parts)


@dataclass(frozen=True)
class Mapped:
    """One resource of the export, with what its bundle entry needs."""

    resource: dict
    kind: str
    value: str
    version: int = 1
    always_update: bool = False  # state without versions (flags): conditional PUT every time
