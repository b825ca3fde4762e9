"""What one export of an episode needs: the aggregate and everything it references."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.domain.episode import Episode
from service.domain.model import BodyWeight, Clinic, Patient, Practitioner


@dataclass(kw_only=True)
class EpisodeChart:
    clinic: Clinic
    patient: Patient
    episode: Episode
    practitioners: list[Practitioner] = field(default_factory=list)
    body_weights: list[BodyWeight] = field(default_factory=list)
