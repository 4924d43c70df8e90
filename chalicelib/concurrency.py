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

One Python process runs on one core at a time (the GIL), and a resume spends
about 3 ms of CPU per token (botocore). Once the process uses its core in
full, more threads add no throughput, only switching: measured at 500/s, 128
threads cost a third more CPU per token than the few dozen that kept the core
busy. So the pool also has a CPU ceiling: while the process's CPU share stays
at ``SATURATED`` of a core or more, the ceiling comes down a quarter per
``WINDOW``; below it, it rises an eighth per window, back towards the cap.
"""

import math
import threading
import time
from collections.abc import Callable

# Before a first token is measured: three calls of about 30 ms.
INITIAL_SECONDS_PER_TOKEN = 0.1


class Parallelism:
    HEADROOM = 1.5  # over Little's law, for the spread of latencies around their mean
    MINIMUM = 4
    SMOOTHING = 0.1  # weight of each new measurement in the running mean
    WINDOW = 0.5  # seconds over which the process's CPU share is measured
    SATURATED = 0.9  # of one core: a process held by the GIL uses little more, and some goes to waiting
    SHRINK = 0.75
    GROW = 1.125

    def __init__(
        self,
        cap: int,
        rate: Callable[[], float],
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self._cap = max(1, cap)
        self._rate = rate
        self._seconds = INITIAL_SECONDS_PER_TOKEN
        self._lock = threading.Lock()
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._ceiling = float(self._cap)
        self._window_start = (clock(), cpu_clock())

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
        return min(self._cap, max(self.MINIMUM, wanted), max(self.MINIMUM, int(self._cpu_ceiling())))

    def _cpu_ceiling(self) -> float:
        with self._lock:
            now, cpu = self._clock(), self._cpu_clock()
            started, cpu_started = self._window_start
            if now - started >= self.WINDOW:
                share = (cpu - cpu_started) / (now - started)
                factor = self.SHRINK if share >= self.SATURATED else self.GROW
                self._ceiling = min(float(self._cap), max(float(self.MINIMUM), self._ceiling * factor))
                self._window_start = (now, cpu)
            return self._ceiling
