"""Pacing SendTaskSuccess/Failure/Heartbeat to the account's quota, learned from throttling.

Those three calls share one token bucket (3,000 burst, 500/s in the large
regions; 100/s or less in some accounts). The resumer is not told the quota:
throttling responses are the signal. botocore's ``adaptive`` retry mode does
this with a CUBIC limiter, but measured against a 100/s bucket with 32 threads
it collapses to about 10% after a few dozen throttles (shared/DESIGN.md §2; our
figure is in the README, from ``python3 dev.py bench``). So botocore's
``standard`` mode keeps doing the retries, and this limiter only paces attempts:
it hooks ``before-send`` (wait for a slot) and ``needs-retry`` (learn from the
answer) on the Step Functions client.

It starts at 500 calls/s, the large regions' refill: the bucket's burst (3,000,
or 1,500) absorbs that start, and the first throttles bring it down within a
second where the quota is lower. Starting low would waste the burst: a short
backlog would finish before slow start reached the quota.

The rule is additive increase, multiplicative decrease, with CUBIC's shape
after a decrease:
- on a throttle, drop to ``BACKOFF`` times the rate actually achieved: the
  measured rate over the last ``WINDOW`` (a burst bucket lets far more through
  than its refill until it runs dry), not the rate asked for;
- climb back linearly to that basis within ``RECOVERY`` seconds, and hold;
- once ``QUIET`` seconds pass without a throttle, probe upwards, gently at
  first and, after ``PROBE_RAMP`` seconds, as fast as slow start (one more per
  success: more than doubling per second of paced calls).
A quota that stays put costs a probe every few seconds (a few throttled calls,
which botocore and the resumer retry); a quota that rises is found within about
``QUIET`` + 2 s, not the 40 s it took when the climb stayed additive (10% of
the old rate per second). At most one decrease per ``COOLDOWN`` seconds, since
calls already in flight report the same congestion.

Simulated against a token bucket with 64 senders at 20 ms per call (the
scenarios are in ``tests/test_limiter.py``, on a fake clock): 300/s burst 1,500
and 500/s burst 3,000 are used in full after the burst, with 2.8% and 1.9% of
calls throttled, most of them when the burst runs dry; a quota going 300 → 100
→ 500/s (4.7% throttled) is followed within 2 s down and 3-4 s up.
"""

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from chalicelib import faults

PACED_OPERATIONS = ("SendTaskSuccess", "SendTaskFailure", "SendTaskHeartbeat")


class AimdLimiter:
    BACKOFF = 0.8
    COOLDOWN = 0.25
    HEADROOM = 1.1
    RECOVERY = 1.0  # seconds to climb back from a decrease to the rate it was based on
    QUIET = 1.5  # seconds without a throttle after which the rate probes upwards again
    PROBE_RAMP = 1.0  # seconds over which probing grows to slow start's pace
    WINDOW = 0.25  # seconds of successes that measure the achieved rate, when they are enough
    WINDOW_SAMPLES = 10

    def __init__(
        self,
        initial_rate: float = 500.0,
        max_rate: float | None = None,
        min_rate: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._max_rate = max_rate or float("inf")
        self._min_rate = min_rate
        self._rate = min(initial_rate, self._max_rate)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = clock()
        self._last_decrease = float("-inf")
        self._rate_at_throttle: float | None = None
        self._successes: deque[float] = deque()
        self._waits = threading.local()
        self.throttles = 0

    @property
    def rate(self) -> float:
        return self._rate

    def acquire(self) -> None:
        """Wait for the next slot at the current rate."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self._rate
        if slot > now:
            self._waits.seconds = self.waited() + slot - now
            self._sleep(slot - now)

    def waited(self) -> float:
        """Seconds the calling thread has spent waiting for slots, so a caller can tell
        the time its work took from the time the pace made it wait."""
        return float(getattr(self._waits, "seconds", 0.0))

    def on_success(self) -> None:
        with self._lock:
            now = self._clock()
            self._successes.append(now)
            while self._successes and self._successes[0] < now - 1.0:
                self._successes.popleft()
            ceiling = self._rate_at_throttle
            if ceiling is None:
                # Slow start: one more per success, so the rate more than doubles per second.
                self._rate = min(self._max_rate, self._rate + 1.0)
            elif now - self._last_decrease >= self.QUIET:
                # Probing, convex like CUBIC: gently past the last basis, then as fast as
                # slow start once PROBE_RAMP seconds show the quota has room.
                ramp = min(1.0, (now - self._last_decrease - self.QUIET) / self.PROBE_RAMP)
                self._rate = min(self._max_rate, self._rate + ramp)
            elif self._rate < ceiling:
                # Recovering: linear, reaching the basis of the last decrease in RECOVERY seconds.
                step = (1.0 - self.BACKOFF) * ceiling / self.RECOVERY / self._rate
                self._rate = min(self._max_rate, ceiling, self._rate + step)

    def on_throttle(self) -> None:
        with self._lock:
            self.throttles += 1
            now = self._clock()
            if now - self._last_decrease < self.COOLDOWN:
                return
            self._last_decrease = now
            # After a pause in sending the rate may have grown far past what was
            # achieved; decrease from what the quota actually let through. With no
            # success in the last second (a first answer, or a long stall), from the rate.
            achieved = self._achieved(now)
            basis = min(self._rate, achieved * self.HEADROOM) if achieved else self._rate
            basis = max(basis, self._min_rate)
            self._rate_at_throttle = basis
            self._rate = max(self._min_rate, basis * self.BACKOFF)
            self._next_slot = max(self._next_slot, now + 1.0 / self._rate)

    def _achieved(self, now: float) -> float:
        """Successes per second just before ``now``, from the last ``WINDOW`` if it saw enough.

        A burst bucket lets far more through than its refill until it runs dry, so
        the throttle comes just after a second full of burst: the last fraction of
        a second is what the refill alone lets through. A slow sender sees too few
        successes in that fraction to measure, and falls back to the whole second.
        """
        recent = sum(1 for t in self._successes if t >= now - self.WINDOW)
        if recent >= self.WINDOW_SAMPLES:
            return recent / self.WINDOW
        return float(sum(1 for t in self._successes if t >= now - 1.0))

    def attach(self, client: Any) -> None:
        """Pace ``client``'s SendTask* calls; run before other before-send hooks."""
        events = client.meta.events
        service = client.meta.service_model.service_id.hyphenize()
        for operation in PACED_OPERATIONS:
            events.register_first(f"before-send.{service}.{operation}", self._before_send)
            events.register_first(f"needs-retry.{service}.{operation}", self._observe)

    def _before_send(self, **_: Any) -> None:
        self.acquire()

    def _observe(self, response: Any = None, **_: Any) -> None:
        if response is None:
            return
        http_response, parsed = response
        code = parsed.get("Error", {}).get("Code") if isinstance(parsed, dict) else None
        if faults.is_throttling_answer(code, getattr(http_response, "status_code", 0)):
            self.on_throttle()
        elif 200 <= getattr(http_response, "status_code", 0) < 300:
            self.on_success()
