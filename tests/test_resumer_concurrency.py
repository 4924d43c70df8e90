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
from chalicelib.resumer import FAN_OUT_BACKLOG, SHARDS
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
    assert busy, "some resumers should have found the leases taken"
    # Each shard is drained by the one resumer that took its lease.
    assert 0 < len([report for report in reports if report.resumed]) <= SHARDS
    assert sum(report.resumed for report in reports) == len(tokens)
    assert sends.duplicates() == 0


@pytest.mark.parametrize("resumers", [4, 8])
def test_leased_drains_and_claiming_resumers_racing_send_each_token_exactly_once(plain_aws, resumers):
    # Half drain the whole backlog under the shards' leases, without claims; half
    # take a limited resume, as the API's `limit` does, and claim each token.
    tokens = hold(container(), 120)
    containers = [container() for _ in range(resumers)]

    def resume(index: int) -> Any:
        services = containers[index]
        if index % 2:
            return services.resumer.resume(MACHINE, Deadline(30), limit=len(tokens))
        return services.resumer.resume(MACHINE, Deadline(30), exclusive=True)

    with counting_sends() as sends, ThreadPoolExecutor(resumers) as pool:
        reports = list(pool.map(resume, range(resumers)))
        # What a backed-off claimer left behind is taken up by the next drain.
        containers[0].resumer.resume(MACHINE, Deadline(30), exclusive=True)

    assert sorted(sends.successes) == sorted(tokens)
    assert sends.duplicates() == 0
    assert sum(report.resumed for report in reports) <= len(tokens)
    assert list(containers[0].store.held(MACHINE.name)) == []


def test_a_leased_drain_leaves_a_token_claimed_before_it_took_the_lease_to_its_claimer(plain_aws):
    # Rule 2: a claimer that claimed before the lease existed may be about to send;
    # the lease holder, which sends without claims, must not send that token too.
    services = container()
    tokens = hold(services, 6)
    claimed_key = next(item.key for item in services.store.held(MACHINE) if item.key.endswith(".json"))
    claimed_token = services.store.load(claimed_key).task_token
    claim = services.store.claim(claimed_key, owner="a-claimer-about-to-send")
    assert claim is not None

    with counting_sends() as sends:
        report = container().resumer.resume(MACHINE, Deadline(30), exclusive=True)

    assert claimed_token not in sends.successes
    assert sorted(sends.successes) == sorted(token for token in tokens if token != claimed_token)
    assert report.resumed == len(tokens) - 1
    assert [item.key for item in services.store.held(MACHINE)] == [claimed_key]


def test_a_claimer_backs_off_a_token_whose_shard_a_drain_holds(plain_aws):
    # Rule 1: the holder may have listed the claims before this claim existed, so the
    # claimer, not the holder, gives way: it releases its claim and sends nothing.
    hold(container(), 8)
    lease_every_shard()
    services = container()

    with counting_sends() as sends:
        report = services.resumer.resume(MACHINE, Deadline(30), limit=8)

    assert sends.successes == {}
    assert (report.resumed, report.remaining) == (0, 8)
    assert list(services.store.list_documents(services.store.control_key("claims", ""))) == []


def test_a_large_backlog_fans_out_one_invocation_per_shard(plain_aws):
    # One process on one vCPU sends about 300 tokens/s: a full listing page asks for
    # the other shards' invocations at once, and drains its own shard meanwhile.
    tokens = hold(container(), FAN_OUT_BACKLOG)
    services = container()
    asked: list[int] = []

    with counting_sends() as sends:
        report = services.resumer.resume(
            MACHINE, Deadline(60), exclusive=True, fan_out=lambda shard: asked.append(shard) is None
        )
        others = [container().resumer.resume(MACHINE, Deadline(60), exclusive=True, shard=shard) for shard in asked]

    assert sorted(asked) == list(range(1, SHARDS))
    assert 0 < report.resumed < len(tokens)
    assert report.resumed + sum(other.resumed for other in others) == len(tokens)
    assert sends.duplicates() == 0 and sorted(sends.successes) == sorted(tokens)


def test_a_small_backlog_drains_every_shard_in_one_invocation(plain_aws):
    tokens = hold(container(), 40)
    asked: list[int] = []

    with counting_sends() as sends:
        report = container().resumer.resume(
            MACHINE, Deadline(30), exclusive=True, fan_out=lambda shard: asked.append(shard) is None
        )

    assert asked == []
    assert report.resumed == len(tokens) and report.remaining == 0
    assert sends.duplicates() == 0


def test_a_small_backlog_takes_and_gives_back_its_leases_at_once(plain_aws):
    # One round trip for the shards' leases, not one per shard: each lease call waits
    # at a barrier that only all of them together can pass, so calls made one after
    # another break it after 5 s, and the resume fails with BrokenBarrierError.
    hold(container(), 12)
    services = container()
    barriers = {"PutObject": threading.Barrier(SHARDS, timeout=5), "DeleteObject": threading.Barrier(SHARDS, timeout=5)}
    crossed: list[str] = []

    def at_the_barrier(params: dict[str, Any], model: Any, **_: Any) -> None:
        if "/leases/" in params.get("Key", "") and model.name in barriers:
            barriers[model.name].wait()
            crossed.append(model.name)

    services.clients.s3().meta.events.register("before-parameter-build.s3", at_the_barrier)
    with counting_sends() as sends:
        report = services.resumer.resume(MACHINE, Deadline(30), exclusive=True)

    assert report.resumed == 12 and report.remaining == 0
    assert sends.duplicates() == 0
    assert sorted(crossed) == ["DeleteObject"] * SHARDS + ["PutObject"] * SHARDS
    assert not any(barrier.broken for barrier in barriers.values())


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


def lease_every_shard(owner: str = "draining-elsewhere") -> list[tuple[str, str]]:
    """Another container drains the machine: it holds the lease of every shard."""
    store = container().store
    leases = [store.lease(MACHINE, owner, 60, shard=shard) for shard in range(SHARDS)]
    assert all(lease is not None for lease in leases)
    return [lease for lease in leases if lease is not None]


def test_a_proceeding_invocation_looks_at_the_lease_before_listing_while_another_drains(plain_aws):
    hold(container(), 50)
    lease_every_shard()
    services = container()
    proceed(services, 0)  # the first sight of the backlog: a listing, then the leases
    counter = CallCounter(services)

    for n in range(1, 101):
        proceed(services, n)

    # S3 reads only: each shard's lease, and its own token's index (an earlier delivery
    # of the same token may be held, and must not be resumed again as "expired").
    # Not a 1,000-key listing and a lease try.
    assert counter.per_invocation(100) == SHARDS + 1
    assert set(counter.calls) == {"GetObject"}


def test_a_repeated_delivery_let_through_while_another_drains_leaves_no_entry_to_expire(plain_aws):
    tokens = hold(container(), 5)
    lease_every_shard()
    services = container()
    proceed(services, 0)  # it has seen the backlog: it now looks at the leases first

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
    leases = lease_every_shard()
    services = container()
    proceed(services, 0)
    for lease in leases:
        container().store.release_lease(lease)
    with counting_sends():
        container().resumer.resume(MACHINE, Deadline(30), exclusive=True)
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
    # At 500 sends/s and calls of 100 ms per token, Little's law wants about 100
    # tokens in flight: 16 threads would cap the engine near 80 tokens/s, whatever
    # the quota. Slow calls keep moto's CPU from being the limit (the pool also
    # shrinks while the process's core is full). The default settings, as deployed.
    tokens = hold(container(), 300)
    services = container()
    in_flight = InFlight(services, seconds=0.1)

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
