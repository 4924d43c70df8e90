"""Many resumers on one backlog: every proceeding invocation, the API, the sweep and
continuations may resume the same machine at once. Each token must be sent once."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chalicelib.arns import parse_state_machine_arn
from chalicelib.config import DEFAULT_RESUME_CONCURRENCY
from chalicelib.deadline import Deadline
from chalicelib.events import CheckpointEvent
from chalicelib.services import Services
from tests import harness
from tests.conftest import BUCKET, PREFIX
from tests.harness import REGION
from tests.sends import counting_sends

MACHINE = parse_state_machine_arn(f"arn:aws:states:{REGION}:123456789012:stateMachine:Busy")


def container(**settings: Any) -> Services:
    return harness.container(BUCKET, PREFIX, **settings)


def hold(services: Services, count: int) -> list[str]:
    tokens = [f"token-{n:04d}" for n in range(count)]
    for n, token in enumerate(tokens):
        services.store.save(CheckpointEvent(task_token=token, state_machine=MACHINE, input={"n": n}))
    return tokens


@pytest.mark.parametrize("resumers", [4, 8])
def test_concurrent_resumers_send_each_token_exactly_once(plain_aws, resumers):
    tokens = hold(container(), 60)
    containers = [container() for _ in range(resumers)]

    with counting_sends() as sends, ThreadPoolExecutor(resumers) as pool:
        # exclusive=False: all of them really race for every token, as the API,
        # the re-check path and a continuation can.
        reports = list(
            pool.map(lambda services: services.resumer.resume(MACHINE, Deadline(30), exclusive=False), containers)
        )

    assert sorted(sends.successes) == sorted(tokens)
    assert sends.duplicates() == 0
    assert sum(report.resumed for report in reports) == len(tokens)
    assert list(containers[0].store.held(MACHINE.name)) == []


def test_exclusive_resumers_leave_a_backlog_to_the_one_holding_the_lease(plain_aws):
    tokens = hold(container(), 60)
    containers = [container() for _ in range(6)]

    with counting_sends() as sends, ThreadPoolExecutor(6) as pool:
        reports = list(
            pool.map(lambda services: services.resumer.resume(MACHINE, Deadline(30), exclusive=True), containers)
        )

    busy = [report for report in reports if report.busy]
    assert busy, "some resumers should have found the lease taken"
    assert all(report.resumed == 0 for report in busy)
    assert sum(report.resumed for report in reports) == len(tokens)
    assert sends.duplicates() == 0


def test_resumes_oldest_first(plain_aws):
    services = container()
    tokens = hold(services, 30)

    with counting_sends() as sends:
        # One thread, so the order of sends is the order of work.
        services.resumer._concurrency = 1
        services.resumer.resume(MACHINE, Deadline(30))

    assert list(sends.successes) == tokens


def test_a_resume_sends_each_saved_input_back_as_the_task_output(plain_aws):
    services = container()
    tokens = hold(services, 5)

    with counting_sends() as sends:
        services.resumer.resume(MACHINE, Deadline(30))

    assert [sends.outputs[token] for token in tokens] == [f'{{"n":{n}}}' for n in range(5)]


class CallCounter:
    """AWS calls a container's S3 client makes, by operation."""

    def __init__(self, services: Services) -> None:
        self.calls: list[str] = []
        services.clients.s3().meta.events.register("before-call.s3", self._count)

    def _count(self, model: object, **_: object) -> None:
        self.calls.append(model.name)  # type: ignore[attr-defined]

    def per_invocation(self, invocations: int) -> float:
        return len(self.calls) / invocations


def proceed(services: Services, n: int) -> None:
    """A proceeding invocation's drain, as the pauser makes it (its own token already answered)."""
    services.drainer.drain(MACHINE, Deadline(30), exclusive=True, answered=f"passing-{n}")


def test_a_proceeding_invocation_looks_at_the_lease_before_listing_while_another_drains(plain_aws):
    hold(container(), 50)
    assert container().store.lease(MACHINE, "draining-elsewhere", 60) is not None
    services = container()
    proceed(services, 0)  # the first sight of the backlog: a listing, then the lease
    counter = CallCounter(services)

    for n in range(1, 101):
        proceed(services, n)

    # Two S3 reads each: the lease, and its own token's index (an earlier delivery
    # of the same token may be held, and must not be resumed again as "expired").
    # With its own SendTaskSuccess that is 3 calls, not a 1,000-key listing and a lease try.
    assert counter.per_invocation(100) == 2
    assert set(counter.calls) == {"GetObject"}


def test_a_repeated_delivery_let_through_while_another_drains_leaves_no_entry_to_expire(plain_aws):
    tokens = hold(container(), 5)
    assert container().store.lease(MACHINE, "draining-elsewhere", 60) is not None
    services = container()
    proceed(services, 0)  # it has seen the backlog: it now looks at the lease first

    # The first delivery of token-0003 held it; this one let it through itself.
    services.drainer.drain(MACHINE, Deadline(30), exclusive=True, answered=tokens[3])

    left = [services.store.load(item.key).task_token for item in services.store.held(MACHINE)]
    assert left == [token for token in tokens if token != tokens[3]]


def test_a_proceeding_invocation_with_nothing_held_costs_one_listing(plain_aws):
    services = container()
    counter = CallCounter(services)

    for n in range(100):
        proceed(services, n)

    assert counter.calls == ["ListObjectsV2"] * 100


def test_once_a_backlog_is_gone_the_next_invocation_lists_again_and_the_rest_list_only(plain_aws):
    hold(container(), 5)
    lease = container().store.lease(MACHINE, "draining-elsewhere", 60)
    assert lease is not None
    services = container()
    proceed(services, 0)
    with counting_sends():
        container().resumer.resume(MACHINE, Deadline(30), exclusive=False)
    container().store.release_lease(lease)
    counter = CallCounter(services)

    for n in range(1, 11):
        proceed(services, n)

    assert counter.calls == ["GetObject", "ListObjectsV2"] + ["ListObjectsV2"] * 9


class InFlight:
    """Every AWS call of a container takes ``seconds`` longer; the most sends at once is recorded."""

    def __init__(self, services: Services, seconds: float) -> None:
        self._seconds = seconds
        self._lock = threading.Lock()
        self._now = 0
        self.most = 0
        for client in (services.clients.s3(), services.clients.sfn(REGION)):
            client.meta.events.register("before-call", self._slow)
        sfn = services.clients.sfn(REGION).meta.events
        sfn.register("before-call.states.SendTaskSuccess", self._enter)
        sfn.register("after-call.states.SendTaskSuccess", self._leave)

    def _slow(self, **_: object) -> None:
        time.sleep(self._seconds)

    def _enter(self, **_: object) -> None:
        with self._lock:
            self._now += 1
            self.most = max(self.most, self._now)

    def _leave(self, **_: object) -> None:
        with self._lock:
            self._now -= 1


def test_the_pool_grows_past_a_fixed_sixteen_when_the_rate_and_the_latency_need_it(plain_aws):
    # At 500 sends/s and three calls of 20 ms or more per token, Little's law wants
    # about 30 tokens in flight, and more with headroom: 16 threads would cap the
    # engine near 266 tokens/s, whatever the quota. The default settings, as deployed.
    tokens = hold(container(), 300)
    services = container()
    in_flight = InFlight(services, seconds=0.02)

    with counting_sends() as sends:
        report = services.resumer.resume(MACHINE, Deadline(120))

    assert report.resumed == 300 and sends.duplicates() == 0
    assert sorted(sends.successes) == sorted(tokens)
    assert 16 < in_flight.most <= DEFAULT_RESUME_CONCURRENCY


def test_a_small_cap_is_never_exceeded(plain_aws):
    hold(container(), 40)
    services = container(resume_concurrency=3)
    in_flight = InFlight(services, seconds=0.01)

    with counting_sends():
        report = services.resumer.resume(MACHINE, Deadline(120))

    assert report.resumed == 40
    assert in_flight.most <= 3
