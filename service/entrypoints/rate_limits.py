"""The two request budgets as Flask hooks (service/security/rate_limit.py counts them)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import g, request
from limits import RateLimitItem
from limits.storage import storage_from_string
from sqlalchemy.engine import Engine

from service.adapters.rate_limits import DatabaseCounters
from service.config import Settings
from service.entrypoints.http import ApiProblem
from service.security.rate_limit import RateLimiter, address_key, client_key, parse_limit

# Liveness and readiness probes come from the orchestrator, often from one address: never throttled.
EXEMPT_ENDPOINTS = frozenset({"healthz", "readyz"})


@dataclass
class RequestLimits:
    limiter: RateLimiter
    per_address: RateLimitItem
    per_client: RateLimitItem

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine) -> RequestLimits:
        storage = settings.rate_limit_storage
        counters = DatabaseCounters(engine) if storage == "database" else storage_from_string(storage)
        return cls(
            RateLimiter(counters), parse_limit(settings.rate_limit_per_address), parse_limit(settings.rate_limit)
        )

    def check_address(self) -> None:
        if request.endpoint in EXEMPT_ENDPOINTS:
            return
        self._check(self.per_address, address_key(request.remote_addr), "this address")

    def check_client(self) -> None:
        who = g.get("principal")
        if who is not None:
            self._check(self.per_client, client_key(who.clinic_id, who.client_id), "this client")

    def _check(self, limit: RateLimitItem, key: str, whom: str) -> None:
        decision = self.limiter.hit(limit, key)
        if not decision.allowed:
            raise ApiProblem(
                429,
                "Too many requests",
                f"The request rate of {whom} is over {limit}; retry after {decision.retry_after} s.",
                headers={"Retry-After": str(decision.retry_after)},
            )
