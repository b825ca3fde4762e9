"""The per-worker rate limiter on a store shared by workers (service/security/rate_limit.py)."""

from __future__ import annotations

from limits import parse

from service.security.rate_limit import RateLimiter


class _UnreachableStore:
    """A store that is down (a fault the database cannot be made to produce on demand)."""

    def __init__(self) -> None:
        self.attempts = 0

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        self.attempts += 1
        raise ConnectionError("store down")


class _CountingStore:
    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.attempts = 0

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        self.attempts += 1
        self.totals[key] = self.totals.get(key, 0) + amount
        return self.totals[key]


def test_an_unreachable_store_is_retried_every_sync_interval_not_on_every_hit_near_the_budget() -> None:
    store = _UnreachableStore()
    limiter = RateLimiter(store, sync_seconds=60)
    limit = parse("100 per minute")
    allowed = [limiter.hit(limit, "client:a").allowed for _ in range(300)]
    # the worker decides on its own count meanwhile: the budget still holds
    assert allowed == [True] * 100 + [False] * 200
    assert store.attempts == 1  # the first hit's sync; the next waits for the interval


def test_a_worker_syncs_more_often_as_its_budget_runs_out_and_not_once_it_is_spent() -> None:
    store = _CountingStore()
    limiter = RateLimiter(store, sync_seconds=60)
    limit = parse("1000 per minute")
    for _ in range(1000):
        assert limiter.hit(limit, "client:a").allowed
    syncs_within_budget = store.attempts
    assert 10 < syncs_within_budget < 100  # ~10 ln(1000): more often as the budget runs out, not on every hit
    assert sum(store.totals.values()) >= 990  # the shared count follows the worker's hits closely
    for _ in range(500):
        assert not limiter.hit(limit, "client:a").allowed
    assert store.attempts - syncs_within_budget <= 1  # a spent budget syncs on the interval only
