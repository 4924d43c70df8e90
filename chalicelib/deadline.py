"""A time budget: when to stop starting work, so an invocation ends on its own terms."""

import time
from collections.abc import Callable
from typing import Any

# Keep this much of an invocation in reserve for the calls already in flight and
# for the response; capped so short budgets (tests, API Gateway) still do work.
MAX_RESERVE_SECONDS = 10.0
API_GATEWAY_SECONDS = 29.0


class Deadline:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ends_at = clock() + max(0.0, seconds)

    @classmethod
    def for_context(cls, context: Any, cap_seconds: float | None = None) -> "Deadline":
        """The budget of a Lambda invocation, less a reserve of a quarter (at most 10 s)."""
        remaining = context.get_remaining_time_in_millis() / 1000
        if cap_seconds is not None:
            remaining = min(remaining, cap_seconds)
        return cls(remaining - min(MAX_RESERVE_SECONDS, remaining / 4))

    @classmethod
    def unlimited(cls) -> "Deadline":
        return cls(float("inf"))

    def remaining(self) -> float:
        return self._ends_at - self._clock()

    def expired(self) -> bool:
        return self.remaining() <= 0
