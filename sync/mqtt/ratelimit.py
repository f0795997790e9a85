"""The drain's rate limit: token buckets in events/s and bytes/s (pure, no I/O, time handed in).

After a campus- or district-wide outage every gateway replays its backlog at once; the limit keeps
one gateway's replay to what the broker and the central consumers were sized for. Each bucket holds
one second of its rate, so a gateway that was idle may send a one-second burst and then paces.
"""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens a second, at most ``rate * burst_s`` banked.

    An amount larger than the whole bucket (a big snapshot under a small bytes/s limit) is allowed
    once the bucket is full and leaves it in debt, so it is paced rather than stuck forever.
    """

    def __init__(self, rate: float, now: float, burst_s: float = 1.0) -> None:
        if rate <= 0:
            raise ValueError("a token bucket needs a positive rate")
        self.rate = rate
        self.capacity = rate * burst_s
        self.tokens = self.capacity
        self._at = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self._at) * self.rate)
        self._at = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` can be taken (0.0: it can be now); takes nothing."""
        self._refill(now)
        need = min(amount, self.capacity)
        return 0.0 if self.tokens >= need else (need - self.tokens) / self.rate

    def take(self, amount: float) -> None:
        self.tokens -= amount


class DrainLimit:
    """Both limits of the drain; ``None`` or 0 switches one off."""

    def __init__(self, events_s: float | None, bytes_s: float | None, now: float) -> None:
        self.events = TokenBucket(events_s, now) if events_s else None
        self.bytes = TokenBucket(bytes_s, now) if bytes_s else None

    @property
    def enabled(self) -> bool:
        return self.events is not None or self.bytes is not None

    def acquire(self, size: int, now: float) -> float:
        """Take one event and ``size`` bytes and return 0.0, or take nothing and return the seconds
        until both would be available."""
        wait = 0.0
        if self.events is not None:
            wait = self.events.wait_for(1, now)
        if self.bytes is not None:
            wait = max(wait, self.bytes.wait_for(size, now))
        if wait > 0:
            return wait
        if self.events is not None:
            self.events.take(1)
        if self.bytes is not None:
            self.bytes.take(size)
        return 0.0


__all__ = ["DrainLimit", "TokenBucket"]
