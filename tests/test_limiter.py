"""Pacing SendTask* calls: the AIMD limiter, on a fake clock, and hooked into a real boto3 client.

The rules are checked without real time: the clock moves only when a test moves it
or when the limiter asks to sleep, so every number is exact and the file is fast.
"""

import heapq
import itertools
import threading

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.retries.standard import ExponentialBackoff
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws
from moto.core.exceptions import AWSError
from moto.stepfunctions.models import StepFunctionBackend

from chalicelib.clients import AwsClients
from chalicelib.limiter import AimdLimiter
from tests.harness import REGION

BACKOFF = AimdLimiter.BACKOFF
HEADROOM = AimdLimiter.HEADROOM
COOLDOWN = AimdLimiter.COOLDOWN
RECOVERY = AimdLimiter.RECOVERY
QUIET = AimdLimiter.QUIET
WINDOW = AimdLimiter.WINDOW


class FakeTime:
    """A monotonic clock that moves only when a test advances it or the limiter sleeps."""

    def __init__(self, start=1000.0, sleeping_moves_time=True):
        self.now = start
        self.sleeps = []
        self._sleeping_moves_time = sleeping_moves_time

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        if self._sleeping_moves_time:
            self.now += seconds

    def advance(self, seconds):
        self.now += seconds


def limiter_on(fake, **kwargs):
    return AimdLimiter(clock=fake.clock, sleep=fake.sleep, **kwargs)


def succeed(limiter, fake, count, spacing=0.01):
    for _ in range(count):
        fake.advance(spacing)
        limiter.on_success()


def send_for(limiter, fake, seconds):
    """Send as fast as the limiter allows for ``seconds`` of fake time, every call succeeding."""
    until = fake.now + seconds
    sent = 0
    while fake.now < until:
        limiter.acquire()
        limiter.on_success()
        sent += 1
    return sent


# The rule, on a fake clock.


def test_slow_start_adds_one_to_the_rate_per_success_until_the_first_throttle():
    fake = FakeTime()
    limiter = limiter_on(fake, initial_rate=10)

    succeed(limiter, fake, 25)

    assert limiter.rate == pytest.approx(35)


def test_slow_start_more_than_doubles_the_rate_in_a_second_of_paced_successes():
    # One more per success while each success comes 1/rate apart: the rate compounds.
    fake = FakeTime()
    limiter = limiter_on(fake, initial_rate=10)

    send_for(limiter, fake, 1.0)

    assert limiter.rate >= 20


def test_a_throttle_drops_the_rate_to_backoff_times_what_the_quota_let_through():
    # Slow start has pushed the rate to 150/s, but only 50 calls got through in the
    # last second: backing off from 150 would keep hammering the bucket.
    fake = FakeTime()
    limiter = limiter_on(fake, initial_rate=100)
    succeed(limiter, fake, 50, spacing=0.02)
    assert limiter.rate == pytest.approx(150)

    limiter.on_throttle()

    assert limiter.rate == pytest.approx(BACKOFF * HEADROOM * 50, rel=0.05)
    assert limiter.throttles == 1


def test_a_throttle_backs_off_from_the_rate_when_more_got_through_than_the_rate():
    # A capped limiter whose successes outnumber its rate: min(rate, HEADROOM x achieved) is the rate.
    fake = FakeTime()
    limiter = limiter_on(fake, initial_rate=60, max_rate=60)
    succeed(limiter, fake, 90)

    limiter.on_throttle()

    assert limiter.rate == pytest.approx(BACKOFF * 60)


def test_only_successes_of_the_last_second_count_as_what_got_through():
    fake = FakeTime()
    limiter = limiter_on(fake, initial_rate=100)
    succeed(limiter, fake, 80)  # long ago
    fake.advance(5.0)
    succeed(limiter, fake, 20, spacing=0.05)  # too slow for the short window: the second counts

    limiter.on_throttle()

    assert limiter.rate == pytest.approx(BACKOFF * HEADROOM * 20)


def test_the_rate_never_drops_below_the_minimum():
    fake = FakeTime()
    limiter = limiter_on(fake, initial_rate=100, min_rate=5)

    for _ in range(20):
        fake.advance(COOLDOWN * 2)
        limiter.on_throttle()

    assert limiter.rate == pytest.approx(5)
    assert limiter.throttles == 20


def test_a_second_throttle_within_the_cooldown_is_counted_but_does_not_decrease_again():
    # Calls already in flight report the same congestion; one decrease is enough.
    fake = FakeTime()
    limiter = limiter_on(fake, initial_rate=100)
    succeed(limiter, fake, 50)
    limiter.on_throttle()
    after_first = limiter.rate

    fake.advance(COOLDOWN * 0.9)
    limiter.on_throttle()

    assert limiter.rate == pytest.approx(after_first)
    assert limiter.throttles == 2

    fake.advance(COOLDOWN * 0.2)  # now past the cooldown of the first decrease
    limiter.on_throttle()

    assert limiter.rate < after_first
    assert limiter.throttles == 3


def test_after_a_throttle_the_rate_climbs_back_linearly_to_its_basis_within_recovery_and_holds():
    fake = FakeTime()
    limiter = limiter_on(fake, initial_rate=100)
    succeed(limiter, fake, 50, spacing=0.02)
    limiter.on_throttle()
    basis = HEADROOM * 50
    start = limiter.rate
    assert start == pytest.approx(BACKOFF * basis, rel=0.05)

    send_for(limiter, fake, RECOVERY / 2)
    halfway = limiter.rate
    send_for(limiter, fake, RECOVERY / 2 + 0.05)
    back = limiter.rate
    send_for(limiter, fake, (QUIET - RECOVERY) * 0.8)

    assert halfway == pytest.approx((start + basis) / 2, rel=0.05)
    assert back == pytest.approx(basis, rel=0.05)
    assert limiter.rate == back  # held, not pushed past the quota


def test_after_a_quiet_spell_without_throttles_the_rate_probes_upwards_multiplicatively():
    # A quota that was raised is found in seconds: the probe more than doubles the rate
    # per second once it is under way, instead of adding 10% of the old rate per second.
    fake = FakeTime()
    limiter = limiter_on(fake, initial_rate=100)
    succeed(limiter, fake, 50, spacing=0.02)
    limiter.on_throttle()
    send_for(limiter, fake, QUIET)
    at_probe = limiter.rate

    send_for(limiter, fake, 1.0)
    after_one = limiter.rate
    send_for(limiter, fake, 1.0)

    assert at_probe == pytest.approx(HEADROOM * 50, rel=0.05)
    assert after_one > at_probe * 1.2  # gently at first
    assert limiter.rate > after_one * 2  # then as fast as slow start


def test_a_throttle_right_after_a_burst_backs_off_from_the_last_fraction_of_a_second():
    # A burst bucket lets 1,000/s through until it runs dry, then only its 300/s refill:
    # the throttle comes then, and the basis is the refill, not the second's average.
    fake = FakeTime()
    limiter = limiter_on(fake, initial_rate=1000, max_rate=1000)
    succeed(limiter, fake, 700, spacing=0.001)
    succeed(limiter, fake, 90, spacing=1 / 300)

    limiter.on_throttle()

    assert limiter.rate == pytest.approx(BACKOFF * HEADROOM * 300, rel=0.05)


def test_waiting_for_slots_is_counted_per_thread():
    fake = FakeTime()
    limiter = limiter_on(fake, initial_rate=10, max_rate=10)
    limiter.acquire()
    limiter.acquire()
    other = []
    thread = threading.Thread(target=lambda: other.append(limiter.waited()))
    thread.start()
    thread.join()

    assert limiter.waited() == pytest.approx(0.1)
    assert other == [0.0]


class Bucket:
    """SendTask*'s quota: ``burst`` calls at once, refilled at the rate of the current phase."""

    def __init__(self, burst, phases):
        self.burst, self.phases = burst, phases
        self.tokens, self.last = float(burst), 0.0

    def quota(self, at):
        elapsed = 0.0
        for seconds, rate in self.phases:
            elapsed += seconds
            if at < elapsed:
                return rate
        return self.phases[-1][1]

    def take(self, at):
        self.tokens = min(self.burst, self.tokens + (at - self.last) * self.quota(at))
        self.last = at
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def simulate(phases, burst, senders=64, latency=0.02):
    """``senders`` threads sending through the limiter into a bucket, on a fake clock,
    each answer arriving ``latency`` after its call; the times of the calls let through
    and of the calls throttled."""
    fake = FakeTime(start=0.0, sleeping_moves_time=False)
    limiter = limiter_on(fake)
    bucket = Bucket(burst, phases)
    order = itertools.count()
    events = [(0.0, next(order), "acquire", None) for _ in range(senders)]
    passed, throttled = [], []
    end = sum(seconds for seconds, _ in phases)
    while events:
        at, _, kind, answer = heapq.heappop(events)
        if at >= end:
            break
        fake.now = at
        if kind == "acquire":
            fake.sleeps.clear()
            limiter.acquire()
            heapq.heappush(events, (at + sum(fake.sleeps), next(order), "call", None))
        elif kind == "call":
            heapq.heappush(events, (at + latency, next(order), "answer", bucket.take(at)))
        else:
            if answer:
                limiter.on_success()
                passed.append(at)
            else:
                limiter.on_throttle()
                throttled.append(at)
            heapq.heappush(events, (at, next(order), "acquire", None))
    return passed, throttled


def per_second(passed, start, seconds):
    return [sum(1 for at in passed if start + s <= at < start + s + 1) for s in range(seconds)]


@pytest.mark.parametrize(("quota", "burst"), [(300, 1500), (500, 3000)])
def test_a_steady_quota_is_used_in_full_after_the_burst_with_few_calls_throttled(quota, burst):
    passed, throttled = simulate([(60, quota)], burst)

    after_burst = per_second(passed, 10, 50)
    assert sum(after_burst) >= 0.95 * quota * 50
    assert len(throttled) <= 0.05 * (len(passed) + len(throttled))


def test_a_changing_quota_is_followed_within_five_seconds_each_way():
    phases = [(30, 300), (30, 100), (30, 500)]
    passed, throttled = simulate(phases, 1500)

    down = per_second(passed, 30, 30)
    up = per_second(passed, 60, 30)
    assert 0.9 * 100 * 25 <= sum(down[5:]) <= 1.1 * 100 * 25
    assert min(up[5:]) >= 0.9 * 500
    assert sum(up[5:]) >= 0.95 * 500 * 25
    # Most throttles come when the first burst runs dry; past it, probes cost few.
    later = [at for at in throttled if at >= 10]
    assert len(later) <= 0.05 * sum(1 for at in passed if at >= 10)


def test_the_cap_holds_from_the_start_through_slow_start():
    fake = FakeTime()
    limiter = limiter_on(fake, initial_rate=500, max_rate=20)
    assert limiter.rate == 20

    succeed(limiter, fake, 1000)

    assert limiter.rate == 20


@settings(max_examples=200, deadline=None)
@given(
    cap=st.floats(min_value=1.0, max_value=1000.0),
    initial=st.floats(min_value=1.0, max_value=5000.0),
    events=st.lists(
        st.tuples(st.sampled_from(["success", "throttle"]), st.floats(min_value=0.0, max_value=2.0)),
        max_size=300,
    ),
)
def test_no_sequence_of_successes_and_throttles_takes_the_rate_past_the_cap(cap, initial, events):
    fake = FakeTime()
    limiter = limiter_on(fake, initial_rate=initial, max_rate=cap)

    for event, pause in events:
        fake.advance(pause)
        if event == "success":
            limiter.on_success()
        else:
            limiter.on_throttle()
        assert limiter.rate <= cap


def test_successive_calls_are_spaced_one_over_the_rate_apart():
    fake = FakeTime()
    limiter = limiter_on(fake, initial_rate=20, max_rate=20)

    for _ in range(5):
        limiter.acquire()

    # The first call goes at once; each later one waits its slot.
    assert fake.sleeps == pytest.approx([0.05] * 4)


def test_callers_arriving_together_are_given_successive_slots():
    # Many resumer threads ask at the same instant: none may share a slot.
    fake = FakeTime(sleeping_moves_time=False)
    limiter = limiter_on(fake, initial_rate=10, max_rate=10)

    for _ in range(4):
        limiter.acquire()

    assert fake.sleeps == pytest.approx([0.1, 0.2, 0.3])


def test_a_caller_after_a_quiet_spell_goes_at_once():
    fake = FakeTime()
    limiter = limiter_on(fake, initial_rate=10, max_rate=10)
    limiter.acquire()
    limiter.acquire()
    fake.advance(5.0)

    limiter.acquire()

    assert fake.sleeps == pytest.approx([0.1])


def test_after_a_throttle_the_next_call_waits_a_slot_at_the_lower_rate():
    fake = FakeTime()
    limiter = limiter_on(fake, initial_rate=100)
    succeed(limiter, fake, 50)
    limiter.acquire()
    fake.advance(1.0)

    limiter.on_throttle()
    limiter.acquire()

    assert fake.sleeps == pytest.approx([1.0 / limiter.rate])


# Hooked into a real Step Functions client, with moto answering.


class RecordingLimiter(AimdLimiter):
    """The real limiter, its calls counted, its sleeps instant."""

    def __init__(self, **kwargs):
        super().__init__(sleep=lambda seconds: None, **kwargs)
        self.acquired = 0
        self.successes = 0
        self.throttled = 0

    def acquire(self):
        self.acquired += 1
        super().acquire()

    def on_success(self):
        self.successes += 1
        super().on_success()

    def on_throttle(self):
        self.throttled += 1
        super().on_throttle()


class Throttled(AWSError):
    TYPE = "ThrottlingException"
    STATUS = 400


def throttle_every_send(self, task_token, outcome):
    raise Throttled("Rate exceeded")


@pytest.fixture
def moto_sfn():
    """moto's plain Step Functions: SendTaskSuccess accepts any token."""
    with mock_aws():
        yield


def sfn_client(attempts=3):
    return boto3.client(
        "stepfunctions",
        region_name=REGION,
        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}),
    )


def test_every_send_task_success_waits_for_the_limiter_even_with_moto_answering(moto_sfn):
    # moto answers from its own before-send hook; the limiter must run before it.
    client = sfn_client()
    limiter = RecordingLimiter()
    limiter.attach(client)

    for n in range(3):
        client.send_task_success(taskToken=f"token-{n}", output="{}")

    assert limiter.acquired == 3
    assert limiter.successes == 3
    assert limiter.throttled == 0


def test_heartbeats_and_failures_are_paced_and_other_calls_are_not(moto_sfn):
    client = sfn_client()
    limiter = RecordingLimiter()
    limiter.attach(client)

    client.send_task_heartbeat(taskToken="token")
    client.send_task_failure(taskToken="token", error="E")
    client.list_state_machines()

    assert limiter.acquired == 2
    assert limiter.successes == 2


def test_a_throttling_answer_reaches_on_throttle_on_every_attempt(moto_sfn, monkeypatch):
    # botocore's standard mode retries the throttle; each attempt is paced and each
    # answer observed. Its backoff waits are real seconds, so they are zeroed here.
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0)
    monkeypatch.setattr(StepFunctionBackend, "send_task_success", throttle_every_send)
    client = sfn_client(attempts=3)
    limiter = RecordingLimiter(initial_rate=100)
    limiter.attach(client)

    with pytest.raises(ClientError) as raised:
        client.send_task_success(taskToken="token", output="{}")

    assert raised.value.response["Error"]["Code"] == "ThrottlingException"
    assert limiter.acquired == 3
    assert limiter.throttled == 3
    assert limiter.throttles == 3
    assert limiter.successes == 0
    assert limiter.rate < 100


def test_a_success_after_throttling_reaches_on_success(moto_sfn, monkeypatch):
    client = sfn_client(attempts=1)
    limiter = RecordingLimiter()
    limiter.attach(client)
    with monkeypatch.context() as patched:
        patched.setattr(StepFunctionBackend, "send_task_success", throttle_every_send)
        with pytest.raises(ClientError):
            client.send_task_success(taskToken="token", output="{}")

    client.send_task_success(taskToken="token", output="{}")

    assert (limiter.throttled, limiter.successes) == (1, 1)


# One limiter per region, from AwsClients.


def test_each_region_gets_its_own_limiter_on_its_own_client(moto_sfn):
    # The SendTask* quota is per account and region: a throttle in one region must
    # not slow another.
    clients = AwsClients()
    east, west = clients.sfn("us-east-1"), clients.sfn("eu-west-1")
    assert clients.sfn("us-east-1") is east
    assert clients.limiters["us-east-1"] is not clients.limiters["eu-west-1"]
    east_before = clients.limiters["us-east-1"].rate
    west_before = clients.limiters["eu-west-1"].rate

    west.send_task_success(taskToken="token", output="{}")

    assert clients.limiters["eu-west-1"].rate > west_before
    assert clients.limiters["us-east-1"].rate == east_before


def test_the_send_rate_cap_binds_every_regions_limiter(moto_sfn):
    clients = AwsClients(send_rate_cap=7)
    for region in ("us-east-1", "eu-west-1", "ap-southeast-2"):
        clients.sfn(region).send_task_success(taskToken="token", output="{}")
        for _ in range(50):  # as many more successes, without 7 real seconds of pacing
            clients.limiters[region].on_success()

    assert set(clients.limiters) == {"us-east-1", "eu-west-1", "ap-southeast-2"}
    assert all(limiter.rate == 7 for limiter in clients.limiters.values())


def test_a_send_rate_cap_of_zero_means_no_cap(moto_sfn):
    # ResumeRateLimit=0 is the documented "no limit".
    clients = AwsClients(send_rate_cap=0)
    client = clients.sfn(REGION)
    before = clients.limiters[REGION].rate

    for _ in range(5):
        client.send_task_success(taskToken="token", output="{}")

    assert clients.limiters[REGION].rate == before + 5
