"""How many held tasks a resume keeps in flight: as many as the send rate needs, no more.

By Little's law, work in flight = throughput x time per item. The limiter sets
the throughput (its rate, learned from the quota); each token takes a few S3
and Step Functions round trips. So the resumer keeps ``rate x seconds per
token x HEADROOM`` tokens in flight, measured as it goes, between ``MINIMUM``
and the cap (``ResumeConcurrency``). Below the limiter's rate the threads are
then never the bottleneck, and a slow region or a slow S3 gets more of them,
where a fixed pool of 16 capped the engine near 16 / (3 x 20 ms) ≈ 266 tokens/s.

Time a token spends waiting for the limiter's next slot is not counted: a pool
larger than needed makes tokens queue at the limiter, and counting that wait
would make the pool grow further for no gain.
"""

import math
import threading
from collections.abc import Callable

# Before a first token is measured: three calls of about 30 ms.
INITIAL_SECONDS_PER_TOKEN = 0.1


class Parallelism:
    HEADROOM = 1.5  # over Little's law, for the spread of latencies around their mean
    MINIMUM = 4
    SMOOTHING = 0.1  # weight of each new measurement in the running mean

    def __init__(self, cap: int, rate: Callable[[], float]) -> None:
        self._cap = max(1, cap)
        self._rate = rate
        self._seconds = INITIAL_SECONDS_PER_TOKEN
        self._lock = threading.Lock()

    @property
    def seconds_per_token(self) -> float:
        return self._seconds

    def observe(self, seconds: float) -> None:
        """One token's time in a worker, less its waits for the limiter."""
        with self._lock:
            self._seconds += self.SMOOTHING * (max(0.0, seconds) - self._seconds)

    def target(self) -> int:
        """How many tokens to have in flight now."""
        wanted = math.ceil(self._rate() * self._seconds * self.HEADROOM)
        return min(self._cap, max(self.MINIMUM, wanted))
