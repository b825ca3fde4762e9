"""Errors the domain raises for input it cannot accept. Safety-rule deviations are never errors."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FieldError:
    field: str
    message: str


class DomainError(Exception):
    """Base of every refusal. ``field_errors`` point at the offending input."""

    title = "Request refused"

    def __init__(self, detail: str, field_errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field_errors = field_errors or []


class NotFound(DomainError):
    title = "Not found"


class Incoherent(DomainError):
    """Well-formed input that cannot describe what happened (end before start, dose <= 0, ...)."""

    title = "Incoherent content"

    @classmethod
    def at(cls, field: str, message: str) -> Incoherent:
        return cls(message, [FieldError(field, message)])


class Conflict(DomainError):
    title = "Conflict"


class TransitionRefused(Conflict):
    title = "Phase transition refused"

    def __init__(self, current: str, requested: str, allowed: list[str]) -> None:
        allowed_text = ", ".join(allowed) if allowed else "none (the episode has ended)"
        super().__init__(
            f"The episode is in phase '{current}'; it cannot move to '{requested}'. "
            f"Allowed next phases: {allowed_text}.",
            [FieldError("to_phase", f"allowed: {allowed_text}")],
        )
        self.current = current
        self.requested = requested
        self.allowed = allowed


class StaleVersion(DomainError):
    title = "Precondition failed"
