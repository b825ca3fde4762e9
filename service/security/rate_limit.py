"""Fixed-window rate limits counted in a store every worker shares (the database, or a ``limits`` storage such as
Redis), with hits batched per process so that a request does not pay a shared write each.

Two budgets, both checked before the request's work: one per source address, checked before authentication
(an unauthenticated flood is refused before any token is checked or any audit row written), and one per
client, keyed on (clinic, client) across every route, checked once the token is known.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from limits import RateLimitItem, parse

log = logging.getLogger("kapfhir.rate_limit")

# A worker adds its hits to the shared count at most this often per key: between two syncs it decides on the
# last shared total plus its own hits since, so a budget can be overrun by what the other workers took meanwhile.
SYNC_SECONDS = 0.2
# ... or sooner, once its unsynced hits pass this share of what is left of the budget: connections spread over the
# workers, so each would otherwise overrun a budget by its own last SYNC_SECONDS of hits. Syncs come more often as
# a budget runs out (about 10 ln(budget) of them per window and worker), and no more once it is spent.
UNSYNCED_SHARE = 0.1
MAX_LOCAL_KEYS = 10_000


class Counters(Protocol):
    def incr(self, key: str, expiry: int, amount: int = 1) -> int: ...


@dataclass
class _Window:
    shared: int = 0  # the store's total at the last sync
    pending: int = 0  # this worker's hits not yet added to the store
    synced_at: float = 0.0
    store_failed: bool = False  # the last sync failed: retry every SYNC_SECONDS only, not on every hit


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int  # seconds until the window ends


class RateLimiter:
    def __init__(self, counters: Counters, *, sync_seconds: float = SYNC_SECONDS) -> None:
        self._counters = counters
        self._sync_seconds = sync_seconds
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def hit(self, limit: RateLimitItem, key: str) -> Decision:
        period = limit.get_expiry()
        now = time.time()
        window_start = math.floor(now / period) * period
        full_key = f"{key}@{int(window_start)}"
        with self._lock:
            if len(self._windows) > MAX_LOCAL_KEYS:
                self._windows = {k: w for k, w in self._windows.items() if k.endswith(f"@{int(window_start)}")}
            window = self._windows.setdefault(full_key, _Window())
            window.pending += 1
            left = limit.amount - window.shared
            running_out = not window.store_failed and 0 <= left < window.pending / UNSYNCED_SHARE
            sync = running_out or now - window.synced_at >= self._sync_seconds
            if sync:
                amount, window.pending, window.synced_at = window.pending, 0, now
        if sync:
            try:
                total = self._counters.incr(full_key, int(window_start + period - now) + 1, amount)
            except Exception as exc:  # noqa: BLE001 - an unreachable store must not refuse every request
                log.warning("rate limit store unavailable", extra={"error_class": type(exc).__name__})
                with self._lock:
                    window.pending += amount
                    window.store_failed = True
                total = window.shared
            else:
                with self._lock:
                    window.shared = max(window.shared, total)
                    window.store_failed = False
        with self._lock:
            count = window.shared + window.pending
        return Decision(count <= limit.amount, max(1, math.ceil(window_start + period - now)))


def parse_limit(text: str) -> RateLimitItem:
    """``"1200 per minute"``, ``"50/second"``: the ``limits`` notation."""
    return parse(text)


def address_key(address: str | None) -> str:
    return f"addr:{(address or '?')[:64]}"


def client_key(clinic_id: str, client_id: str) -> str:
    # Both parts are bounded by the token check (service/domain/limits.py); a separator no id may hold.
    return f"client:{clinic_id}\x1f{client_id}"
