"""How many held tasks a resume keeps in flight: Little's law over the limiter's rate."""

import pytest

from chalicelib.concurrency import INITIAL_SECONDS_PER_TOKEN, Parallelism

HEADROOM = Parallelism.HEADROOM


def test_before_any_measurement_it_assumes_a_tenth_of_a_second_per_token():
    parallelism = Parallelism(cap=1000, rate=lambda: 500.0)

    assert parallelism.target() == round(500 * INITIAL_SECONDS_PER_TOKEN * HEADROOM)


@pytest.mark.parametrize(("rate", "seconds"), [(500, 0.06), (300, 0.06), (500, 0.15), (100, 0.15)])
def test_in_flight_is_the_rate_times_the_time_per_token_with_headroom(rate, seconds):
    parallelism = Parallelism(cap=1000, rate=lambda: float(rate))

    for _ in range(200):
        parallelism.observe(seconds)

    assert parallelism.seconds_per_token == pytest.approx(seconds)
    assert parallelism.target() == pytest.approx(rate * seconds * HEADROOM, abs=1)


def test_it_follows_the_limiter_as_its_rate_changes():
    rate = [500.0]
    parallelism = Parallelism(cap=1000, rate=lambda: rate[0])
    for _ in range(200):
        parallelism.observe(0.06)
    high = parallelism.target()

    rate[0] = 100.0

    assert parallelism.target() < high / 4


def test_the_cap_and_the_minimum_bound_it():
    fast = Parallelism(cap=64, rate=lambda: 5000.0)
    slow = Parallelism(cap=64, rate=lambda: 1.0)
    single = Parallelism(cap=1, rate=lambda: 5000.0)

    assert (fast.target(), slow.target(), single.target()) == (64, Parallelism.MINIMUM, 1)


class Clocks:
    """Wall and process CPU time, moved by hand: ``busy`` is the CPU share of each step."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def step(self, seconds: float, busy: float) -> None:
        self.wall += seconds
        self.cpu += seconds * busy


def test_a_process_that_uses_its_core_in_full_keeps_fewer_threads_in_flight():
    # More threads than the core can serve only switch (the GIL): the pool comes down.
    clocks = Clocks()
    parallelism = Parallelism(cap=128, rate=lambda: 5000.0, clock=lambda: clocks.wall, cpu_clock=lambda: clocks.cpu)
    assert parallelism.target() == 128

    for _ in range(6):
        clocks.step(Parallelism.WINDOW, busy=1.0)
        parallelism.target()

    assert parallelism.target() <= 128 * Parallelism.SHRINK**5


def test_once_the_core_has_room_the_pool_grows_back_to_the_cap():
    clocks = Clocks()
    parallelism = Parallelism(cap=128, rate=lambda: 5000.0, clock=lambda: clocks.wall, cpu_clock=lambda: clocks.cpu)
    for _ in range(10):
        clocks.step(Parallelism.WINDOW, busy=1.0)
        parallelism.target()
    low = parallelism.target()

    for _ in range(40):
        clocks.step(Parallelism.WINDOW, busy=0.3)
        parallelism.target()

    assert low < 32 and parallelism.target() == 128


def test_a_saturated_core_never_takes_the_pool_below_the_minimum():
    clocks = Clocks()
    parallelism = Parallelism(cap=128, rate=lambda: 5000.0, clock=lambda: clocks.wall, cpu_clock=lambda: clocks.cpu)

    for _ in range(100):
        clocks.step(Parallelism.WINDOW, busy=1.0)
        parallelism.target()

    assert parallelism.target() == Parallelism.MINIMUM
