"""The validator as the /fhir views use it: ``$validate`` and the checks of a write, with kapfhir's domain rules
under the app's safety policy (the one the write path's use cases apply). The validation itself is ``validation``."""

from __future__ import annotations

from typing import Any

import validation
from service.entrypoints.http import state
from service.fhir.validate import DomainRules
from validation import Issue, r4_type

__all__ = ["r4_type", "validate", "validate_for_write"]


def validate(
    resource: Any, *, expected_type: str | None = None, profile: str | None = None, kap_rules: bool = False
) -> list[Issue]:
    """``$validate`` (``validation.validate``) with the domain rules."""
    return validation.validate(
        resource, expected_type=expected_type, profile=profile, kap_rules=kap_rules, domain=_domain()
    )


def validate_for_write(bundle: dict) -> list[Issue]:
    """What a write checks on its entries (``validation.validate_for_write``) with the domain rules."""
    return validation.validate_for_write(bundle, domain=_domain())


def _domain() -> DomainRules:
    return DomainRules(state().settings.safety)
