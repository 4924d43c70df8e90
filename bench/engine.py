"""The resume engine against the in-memory AWS (bench/memory_aws.py): rate, throttling, exactly-once.

Each scenario seeds a backlog, then runs the product as it is deployed: the
``prod`` stage's environment from .chalice/config.json (so ``ResumeConcurrency``,
``ResumerFunctionName`` and the rest are what a user gets), ``Services.build``
making its own clients, and the ``resumer`` function's handler in app.py
invoked as Lambda would: the first invocation as the API or the sweep hands a
backlog on, then every continuation it asks for (``lambda:Invoke``, async) on an
idle container or a new one, each with the function's timeout as its budget.

Processes: the product drains a backlog of a full listing page (1,000 keys) or
more in shards (``SHARDS`` in chalicelib/resumer.py), fanning out one
``resumer`` invocation per other shard, because each Lambda invocation has a
vCPU of its own and one Python process cannot use more than one core. So each
shard's invocations run in a process of their own ("the containers of one
shard"), started with "spawn" before the first scenario: the first invocation
(no shard, so it drains shard 0 first) runs in shard 0's process; an invocation
the product asks for with ``"shard": j`` runs in shard j's process, as do its
continuations; one without a shard runs where it was asked for. Each process
seeds its backlog, as does each scenario's, before the clock starts, so
neither starting Python nor seeding is timed (a real cold start is not either).

What the processes share and what they do not (bench/shared.py):
- S3 is a copy per process, seeded alike from one seed: the same keys, tokens
  and bodies. Shards are disjoint (``shard_of``) and a process sends only the
  tokens of shards whose lease it took, so the other shards' keys just stay in
  its copy (real S3 would show them until their own drain deleted them). The
  drain leases are the exception: they are shared, since a lease is how one
  invocation learns that another drains a shard, and decides whether it fans
  out or takes a shard; copied, two processes could drain one shard. And what a
  lease's holder deleted travels with the lease: a process that takes it applies
  those deletes to its copy first, so a shard drained in one process and taken
  up later in another (a continuation's small-backlog pass takes every free
  lease) is not sent again from a copy real S3 would no longer show.
- Step Functions is a copy per process too (its waiting tokens, answers,
  control-plane quotas); the SendTask* token bucket is one for all, as the
  quota is per account and region. The quota-changing thread runs in the parent.
- Times are ``time.monotonic()``, one clock for every process on Linux.
At the end each process sends the parent what it measured: answer and throttle
times, the tokens it answered, its calls, CPU and invocations, and the tokens
still held in its copy for the shards it drained. The parent merges them: a
token answered in two processes is a duplicate; a token is lost when it was
never answered and the copy of the process that drained its shard (or, if none
did, of the shard's own process) no longer holds it.

Measured: tokens/s after the SendTask* burst ran out, the share of SendTask*
calls throttled, duplicates (a token answered twice), lost tokens (never
answered and no longer held), and for a quota that changes mid-run the time to
follow each phase. CPU: the processes run on this machine's cores, not on the
share of a vCPU that Lambda gives the resumer's memory (1,769 MB = 1 vCPU), so
each process's engine CPU seconds per token are measured (its backend's own CPU
is kept apart) and the rate that CPU share allows is projected from them, per
process, for as many invocations as ran in it at once.
"""

import contextlib
import itertools
import json
import logging
import multiprocessing
import os
import queue
import random
import signal
import threading
import time
import traceback
import uuid
import zlib
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

from bench.memory_aws import ACCOUNT, REGION, MemoryAws
from bench.shared import RunState, SharedObjects, SharedTokenBucket, SharingS3
from chalicelib.arns import StateMachineArn, parse_state_machine_arn
from chalicelib.config import Settings
from chalicelib.deadline import MAX_RESERVE_SECONDS
from chalicelib.resumer import SHARDS
from chalicelib.services import Services
from chalicelib.store import TokenStore, dumps, iso_timestamp, machine_tag, new_token_id, shard_of

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "sfn-pauser-bench"
STAGE = "prod"
VCPU_MB = 1769  # Lambda gives one full vCPU at 1,769 MB, and CPU in proportion below that
QUOTA_TARGET = 0.90
THROTTLED_TARGET = 0.05
FOLLOW_TARGET_SECONDS = 5.0
# A window counts as following a phase when it carries 90% of the new quota and
# at most this share of its SendTask* calls was throttled (a limiter still well
# above a lowered quota would carry it, but with most of its calls refused).
FOLLOW_THROTTLED_SHARE = 0.10


@dataclass(frozen=True)
class Scenario:
    name: str
    latency_ms: float
    rate: float
    burst: float
    backlog: int = 0
    phases: tuple[tuple[float, float], ...] = ()  # (seconds, rate): a quota that changes mid-run

    @property
    def size(self) -> int:
        """The backlog; for a changing quota, what the phases could send (plus a tenth)."""
        if self.backlog:
            return self.backlog
        return int(self.burst + 1.1 * sum(seconds * rate for seconds, rate in self.phases))

    @property
    def cap_seconds(self) -> float:
        """How long to watch: half as long again as the quota needs, so a slow engine still ends."""
        if self.phases:
            phases = sum(seconds for seconds, _ in self.phases)
            return phases + max(2.0, min(15.0, phases / 3))
        return 1.5 * max(0.0, self.size - self.burst) / self.rate + 15

    def describe(self) -> str:
        quota = " -> ".join(f"{rate:g}/s for {seconds:g} s" for seconds, rate in self.phases) or f"{self.rate:g}/s"
        return f"{self.name}: N={self.size:,}, {self.latency_ms:g} ms per call, SendTask* {quota}, burst {self.burst:g}"


DEFAULT = (
    Scenario("engine-300-20ms", 20, 300, 1500, 20_000),
    Scenario("engine-300-50ms", 50, 300, 1500, 20_000),
    Scenario("engine-500-20ms", 20, 500, 3000, 20_000),
    Scenario("engine-500-50ms", 50, 500, 3000, 20_000),
    Scenario("engine-500-20ms-100k", 20, 500, 3000, 100_000),
    Scenario("engine-changing", 20, 300, 1500, phases=((15, 300), (15, 100), (15, 500))),
)
# 100,000 at 300/s takes 333 s each: only with --full.
FULL = (
    *DEFAULT,
    Scenario("engine-500-50ms-100k", 50, 500, 3000, 100_000),
    Scenario("engine-300-20ms-100k", 20, 300, 1500, 100_000),
    Scenario("engine-300-50ms-100k", 50, 300, 1500, 100_000),
)
# Small enough for a test: a few seconds, still throttled, still changing.
QUICK = (
    Scenario("engine-quick", 2, 400, 200, 1_200),  # a full listing page and more: it fans out
    Scenario("engine-quick-changing", 2, 100, 50, phases=((1.5, 100), (1.5, 25), (1.5, 150))),
)
SERIAL_N = 150
QUICK_SERIAL_N = 20


@dataclass
class Targets:
    """PASS/FAIL per target, printed at the end; any FAIL makes the bench exit non-zero."""

    rows: list[tuple[bool, str, str]] = field(default_factory=list)

    def check(self, passed: bool, target: str, measured: str) -> None:
        self.rows.append((passed, target, measured))

    @property
    def failed(self) -> bool:
        return not all(passed for passed, _, _ in self.rows)

    def report(self) -> str:
        lines = ["targets:"]
        lines += [
            f"  {'PASS' if passed else 'FAIL'}  {target:<62} {measured}" for passed, target, measured in self.rows
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class Deployed:
    """What a deploy of the stage gives the ``resumer`` function."""

    environment: dict[str, str]
    memory_mb: int
    timeout_s: int

    @classmethod
    def read(cls, stage: str = STAGE) -> "Deployed":
        config = json.loads((ROOT / ".chalice" / "config.json").read_text())
        staged = config["stages"][stage]
        function = staged.get("lambda_functions", {}).get("resumer", {})

        def setting(name: str, default: int) -> int:
            return int(function.get(name, staged.get(name, config.get(name, default))))

        environment = {**config.get("environment_variables", {}), **staged.get("environment_variables", {})}
        # Chalice's own defaults: 128 MB and 60 s.
        return cls(environment, setting("lambda_memory_size", 128), setting("lambda_timeout", 60))

    @property
    def vcpu(self) -> float:
        """The CPU one Python process can use there (the GIL keeps it to one core at most)."""
        return min(1.0, self.memory_mb / VCPU_MB)

    def settings(self) -> Settings:
        return Settings.from_env({**self.environment, "Bucket": BUCKET})


@dataclass(frozen=True)
class ProcessFigures:
    """One shard's process in a scenario: the containers of that shard, on a core of their own."""

    shard: int
    invocations: int
    resumed: int
    engine_cpu: float
    backend_cpu: float
    busy_seconds: float

    @property
    def cpu_per_token(self) -> float:
        return self.engine_cpu / self.resumed if self.resumed else 0.0


@dataclass
class Result:
    scenario: Scenario
    resumed: int
    seconds: float
    rate_after_burst: float
    burst_ran_out: bool
    requests: int
    throttled: int
    duplicates: int
    lost: int
    held: int
    engine_cpu: float
    invocations: int
    busy_seconds: float
    failures: list[str]
    calls: dict[str, int]
    stopped_at_cap: bool
    follow: list[tuple[float, float | None, float]]  # (rate, seconds to follow or None, throttled share)
    processes: list[ProcessFigures] = field(default_factory=list)  # one per shard, whether it ran or not
    stolen: float | None = None  # the share of the machine's CPU time the hypervisor took meanwhile

    @property
    def throttled_share(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0

    @property
    def cpu_per_token(self) -> float:
        return self.engine_cpu / self.resumed if self.resumed else 0.0

    @property
    def concurrent_invocations(self) -> float:
        return self.busy_seconds / self.seconds if self.seconds else 0.0

    @property
    def processes_used(self) -> int:
        """The shards' processes that ran at least one invocation."""
        return sum(1 for process in self.processes if process.invocations)

    def cpu_allows(self, vcpu: float) -> float:
        """Tokens/s the CPU Lambda gives allows: per process, a vCPU share for each invocation running at once.

        Summed over the processes (the shards split the backlog evenly by a hash,
        so each carries about its share of the rate).
        """
        total = 0.0
        for process in self.processes:
            if not process.resumed:
                continue
            if not process.cpu_per_token:
                return float("inf")
            at_once = max(process.busy_seconds / self.seconds if self.seconds else 0.0, 1.0)
            total += vcpu * at_once / process.cpu_per_token
        return total if total else float("inf")


class _FormattingSink(logging.Handler):
    """Formats every record, as Lambda's log handler would, and keeps none (the cost is the product's)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


def product_logger() -> logging.Logger:
    logger = logging.getLogger("bench.sfn-pauser")
    if not logger.handlers:
        sink = _FormattingSink()
        sink.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(sink)
        logger.propagate = False
    return logger


class _Context:
    """A Lambda context: the function's timeout, cut short at the scenario's cap."""

    def __init__(self, deployed: Deployed, function: str, stop_at: float) -> None:
        now = time.monotonic()
        # The product keeps up to MAX_RESERVE_SECONDS in reserve; give that back so its
        # deadline falls at the cap, not before.
        self._ends = now + min(deployed.timeout_s, max(0.0, stop_at - now) + MAX_RESERVE_SECONDS)
        self.function_name = function
        self.memory_limit_in_mb = str(deployed.memory_mb)
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}"
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._ends - time.monotonic()) * 1000))


class ResumerFunction:
    """The ``resumer`` function's containers of one shard: each invocation on an idle container, or a new one.

    An invocation the product asks for (``lambda:Invoke``) for another shard goes
    to that shard's process (``route``); one for this shard, or for none, runs here.
    """

    def __init__(
        self,
        aws: MemoryAws,
        deployed: Deployed,
        handler: Callable[[Any, Any], Any],
        state: RunState,
        shard: int,
        route: Callable[[int, bytes], None],
    ) -> None:
        self._aws = aws
        self._deployed = deployed
        self._settings = deployed.settings()
        self._handler = handler
        self._state = state
        self._shard = shard
        self._route = route
        self._idle: list[Services] = []
        self._local = threading.local()
        self._lock = threading.Condition()
        self._active = 0
        self.invocations = 0
        self.busy_seconds = 0.0
        self.dropped = 0
        self.failures: list[str] = []

    def services(self) -> Services:
        """What ``app.get_services()`` returns inside an invocation: its container's object graph."""
        return self._local.services  # type: ignore[no-any-return]

    def invoke(self, function: str, payload: bytes) -> None:
        """An asynchronous invocation the product asked for: run here, or in its shard's process."""
        if function != self._settings.resumer_function:
            self.failures.append(f"invoked {function!r}, not the resumer function")
            return
        if not self._state.ask():
            with self._lock:
                self.dropped += 1
            return
        target = json.loads(payload).get("shard")
        if isinstance(target, int) and target != self._shard and 0 <= target < SHARDS:
            self._route(target, payload)
        else:
            self.start(payload)

    def start(self, payload: bytes) -> None:
        """Run an invocation already counted in the run's state (:meth:`RunState.ask`)."""
        with self._lock:
            self._active += 1
            self.invocations += 1
        threading.Thread(target=self._run, args=(json.loads(payload),), daemon=True).start()

    def wait(self) -> None:
        with self._lock:
            while self._active:
                self._lock.wait()

    def _run(self, event: Any) -> None:
        started = time.monotonic()
        with self._lock:
            container = self._idle.pop() if self._idle else None
        try:
            self._local.services = container or Services.build(self._settings, product_logger())
            context = _Context(self._deployed, self._settings.resumer_function or "", self._state.stop_at)
            self._handler(event, context)
        except Exception as error:
            self.failures.append(f"{type(error).__name__}: {error}"[:300])
        finally:
            with self._lock:
                if getattr(self._local, "services", None) is not None:
                    self._idle.append(self._local.services)
                self._active -= 1
                self.busy_seconds += time.monotonic() - started
                self._lock.notify_all()
            # Last: whatever this invocation asked for is already counted, so the run's
            # count reaches 0 only when nothing runs and nothing more can be asked for.
            self._state.done()


# new_token_id's bits that differ between two calls with the same time and tag: the
# sequence (a process's own count within a millisecond) and 32 random bits.
_UNSEEDED_BITS = (0xFFF << 64) | 0xFFFF_FFFF


def _token_id(ms: int, tag: int, rng: random.Random) -> str:
    """The product's key id for a task paused at ``ms``, with its varying bits drawn from ``rng``."""
    value = uuid.UUID(new_token_id(ms, tag)).int & ~_UNSEEDED_BITS
    return str(uuid.UUID(int=value | rng.getrandbits(32)))


def seed(
    aws: MemoryAws,
    machine: StateMachineArn,
    prefix: str,
    count: int,
    *,
    seed_value: int = 0,
    start_ms: int | None = None,
) -> dict[str, str]:
    """``count`` held tasks as the pauser saves them (body and token index), oldest first; token -> key.

    The same ``seed_value`` and ``start_ms`` give the same keys, tokens and
    bodies in any process, so each shard's process can hold a copy of one backlog.
    """
    rng = random.Random(seed_value)
    store = TokenStore(None, BUCKET, prefix)
    if start_ms is None:
        start_ms = int(time.time() * 1000) - count - 60_000
    tag = machine_tag(machine)
    held: dict[str, str] = {}
    for index in range(count):
        # Real task tokens are opaque strings of several hundred characters.
        token = "AQB" + rng.randbytes(320).hex()
        paused_ms = start_ms + index
        key = f"{store.folder(machine.name)}{_token_id(paused_ms, tag, rng)}.json"
        body = {
            "taskToken": token,
            "timestamp": iso_timestamp(datetime.fromtimestamp(paused_ms / 1000, UTC)),
            "stateMachineArn": str(machine),
            "region": machine.region,
            "executionArn": f"arn:aws:states:{machine.region}:{machine.account}:execution:{machine.name}:e{index}",
            "input": {"order": index, "items": ["a", "b"]},
        }
        aws.s3.put(BUCKET, key, dumps(body).encode(), "application/json")
        index_body = {"key": key, "stateMachineArn": machine.unqualified}
        aws.s3.put(BUCKET, store.token_index_key(token), dumps(index_body).encode(), "application/json")
        held[token] = key
    aws.sfn.wait(list(held))
    return held


@contextlib.contextmanager
def _as_the_resumer_function(aws: MemoryAws, deployed: Deployed, function: ResumerFunction) -> Iterator[None]:
    import app as product_app  # imported here: importing it builds the Chalice app

    environment = {
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_LAMBDA_FUNCTION_NAME": deployed.settings().resumer_function or "",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(deployed.memory_mb),
    }
    with (
        aws.serving_new_sessions(),
        mock.patch.object(product_app, "get_services", function.services),
        mock.patch.dict(os.environ, environment),
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),  # the product's EMF metric lines
    ):
        yield


@dataclass
class ShardFigures:
    """What one shard's process measured, sent to the parent when the run is over."""

    shard: int
    successes: list[float]
    throttles: list[float]
    answered: list[int]  # the seeded tokens (by index) its Step Functions took an answer for
    requests: int
    duplicates: int  # answers for a token already answered in this process
    calls: dict[str, int]
    engine_cpu: float  # the process's CPU, its backend's excluded
    backend_cpu: float
    invocations: int
    busy_seconds: float
    dropped: int
    failures: list[str]
    leased: list[int]  # the shards whose lease it took
    held: dict[int, list[int]]  # seeded tokens (by index) still held in its S3, for its own shard and those it leased
    shared_calls: int  # S3 calls on the leases every process shares

    @property
    def resumed(self) -> int:
        return len(self.successes)


@dataclass(frozen=True)
class _Setup:
    scenario: Scenario
    seed_value: int
    start_ms: int


def _next_message(inbox: Any) -> tuple[Any, ...]:
    """The next message from the parent; exits if the parent is gone (so no process outlives a run)."""
    while True:
        try:
            return inbox.get(timeout=1.0)  # type: ignore[no-any-return]
        except queue.Empty:
            parent = multiprocessing.parent_process()
            if parent is None or not parent.is_alive():
                raise SystemExit(1) from None


def _shard_process(
    shard: int,
    deployed: Deployed,
    inboxes: list[Any],
    outbox: Any,
    bucket: SharedTokenBucket,
    shared: SharedObjects,
    state: RunState,
) -> None:
    """A shard's process: the containers of one shard, for every scenario of a run, until told to exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it ends the processes
    logging.getLogger("botocore").setLevel(logging.WARNING)
    while True:
        message = _next_message(inboxes[shard])
        if message[0] == "exit":
            return
        try:
            figures = _run_shard(shard, message[1], deployed, inboxes, outbox, bucket, shared, state)
        except Exception:
            outbox.put(("error", shard, traceback.format_exc()))
            raise
        outbox.put(("result", shard, figures))


def _run_shard(
    shard: int,
    setup: _Setup,
    deployed: Deployed,
    inboxes: list[Any],
    outbox: Any,
    bucket: SharedTokenBucket,
    shared: SharedObjects,
    state: RunState,
) -> ShardFigures:
    import app as product_app

    scenario = setup.scenario
    settings = deployed.settings()
    store = TokenStore(None, BUCKET, settings.prefix)
    aws = MemoryAws(scenario.latency_ms / 1000)
    s3 = SharingS3(shared, (store.control_key("leases", ""),))
    aws.s3 = s3
    aws.sfn.quota = bucket  # the account's SendTask* quota, one for all processes
    aws.s3.create_bucket(BUCKET)
    machine = parse_state_machine_arn(aws.sfn.create_state_machine("Bench"))
    held = seed(aws, machine, settings.prefix, scenario.size, seed_value=setup.seed_value, start_ms=setup.start_ms)
    index_of = {token: index for index, token in enumerate(held)}

    def route(target: int, payload: bytes) -> None:
        inboxes[target].put(("invoke", payload))

    function = ResumerFunction(aws, deployed, product_app.resumer, state, shard, route)
    aws.lambda_.on_invoke = function.invoke
    outbox.put(("ready", shard, machine.unqualified))
    cpu_before = time.process_time()
    with _as_the_resumer_function(aws, deployed, function):
        while (message := _next_message(inboxes[shard]))[0] == "invoke":
            function.start(message[1])
        if message[0] == "exit":  # the parent gave up on the scenario (an error, Ctrl-C)
            raise SystemExit(1)
        if message[0] != "finish":
            raise RuntimeError(f"shard {shard}'s process was sent {message[0]!r} during a scenario")
        function.wait()
    backend_cpu = aws.cpu_seconds
    engine_cpu = max(0.0, time.process_time() - cpu_before - backend_cpu)
    failures = list(function.failures)
    if function.invocations and aws.sessions == 0:
        failures.append("the product built no boto3 session: bench/memory_aws.py no longer reaches its clients")
    answered = [index_of[token] for token in aws.sfn.answered if token in index_of]
    if len(answered) < len(aws.sfn.answered):
        failures.append(f"{len(aws.sfn.answered) - len(answered)} answers for tokens the seed did not make")
    # The shards this process drained: those whose lease it took (a backlog under a
    # listing page is drained by one invocation, every shard in turn).
    leased = {each for each in range(SHARDS) if store._lease_key(machine, each) in s3.written}
    unleased = sum(1 for token in aws.sfn.answered if token in held and shard_of(held[token], SHARDS) not in leased)
    if unleased:
        failures.append(f"shard {shard}'s process answered {unleased} tokens of shards whose lease it never took")
    still_held: dict[int, list[int]] = {each: [] for each in leased | {shard}}
    for token, index in index_of.items():
        mine = still_held.get(shard_of(held[token], SHARDS))
        if mine is not None and aws.s3.exists(BUCKET, held[token]):
            mine.append(index)
    log = aws.sfn.log
    return ShardFigures(
        shard=shard,
        successes=log.successes,
        throttles=log.throttles,
        answered=answered,
        requests=log.requests,
        duplicates=log.duplicates,
        calls=dict(aws.calls),
        engine_cpu=engine_cpu,
        backend_cpu=backend_cpu,
        invocations=function.invocations,
        busy_seconds=function.busy_seconds,
        dropped=function.dropped,
        failures=failures,
        leased=sorted(leased),
        held=still_held,
        shared_calls=s3.shared_calls,
    )


class Workers:
    """One process per shard for a run of scenarios (the containers of that shard), and what they share.

    The processes start before the first scenario and each seeds its copy of a
    scenario's backlog before the clock starts, so neither starting Python nor
    seeding is timed; a shard's process runs invocations only once one is asked
    for that shard. The first invocation (no shard) goes to shard 0's process:
    an invocation without a shard drains shard 0 first.
    """

    def __init__(self, deployed: Deployed) -> None:
        context = multiprocessing.get_context("spawn")  # never fork: the parent has threads
        self._manager = context.Manager()
        self.bucket = SharedTokenBucket(context)
        self.shared = SharedObjects(self._manager, context)
        self.state = RunState(context)
        self.inboxes = [context.Queue() for _ in range(SHARDS)]
        self.outbox = context.Queue()
        self.processes = [
            context.Process(
                target=_shard_process,
                args=(shard, deployed, self.inboxes, self.outbox, self.bucket, self.shared, self.state),
                name=f"bench-shard-{shard}",
                daemon=True,
            )
            for shard in range(SHARDS)
        ]
        try:
            for process in self.processes:
                process.start()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """End every process: asked to exit, then terminated if it does not (Ctrl-C, a failed scenario)."""
        for inbox, process in zip(self.inboxes, self.processes, strict=True):
            if process.is_alive():
                with contextlib.suppress(Exception):
                    inbox.put(("exit",))
        deadline = time.monotonic() + 5
        for process in self.processes:
            if process.pid is None:
                continue
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join(5)
        for channel in (*self.inboxes, self.outbox):
            channel.close()
            channel.cancel_join_thread()
        self._manager.shutdown()

    def send_all(self, message: tuple[Any, ...]) -> None:
        for inbox in self.inboxes:
            inbox.put(message)

    def gather(self, kind: str, timeout: float) -> dict[int, Any]:
        """One ``kind`` message from every process; a process's error or death ends the run."""
        got: dict[int, Any] = {}
        ends = time.monotonic() + timeout
        while len(got) < len(self.processes):
            try:
                message = self.outbox.get(timeout=0.5)
            except queue.Empty:
                self.check_alive()
                if time.monotonic() > ends:
                    raise RuntimeError(f"no {kind!r} from every shard's process in {timeout:g} s") from None
                continue
            if message[0] == "error":
                raise RuntimeError(f"shard {message[1]}'s process failed:\n{message[2]}")
            if message[0] != kind:
                raise RuntimeError(f"expected {kind!r} from the shards' processes, got {message[0]!r}")
            got[message[1]] = message[2] if len(message) > 2 else None
        return got

    def check_alive(self) -> None:
        dead = [process.name for process in self.processes if not process.is_alive()]
        if dead:
            raise RuntimeError(f"process(es) {', '.join(dead)} ended during a scenario")

    def wait_idle(self, give_up_at: float) -> None:
        """Until no invocation runs or waits in any process (none can be asked for then)."""
        while self.state.outstanding > 0:
            self.check_alive()
            with contextlib.suppress(queue.Empty):
                message = self.outbox.get_nowait()
                if message[0] == "error":
                    raise RuntimeError(f"shard {message[1]}'s process failed:\n{message[2]}")
                raise RuntimeError(f"unexpected {message[0]!r} from shard {message[1]}'s process during a scenario")
            if time.monotonic() > give_up_at:
                raise RuntimeError(f"{self.state.outstanding} invocation(s) still running long after the time cap")
            time.sleep(0.02)


def run_scenario(scenario: Scenario, deployed: Deployed, workers: Workers) -> Result:
    # The same backlog in every process: a seed per scenario, and pause times from one start.
    setup = _Setup(scenario, zlib.crc32(scenario.name.encode()), int(time.time() * 1000) - scenario.size - 60_000)
    workers.shared.clear()
    workers.send_all(("scenario", setup))
    machines = set(workers.gather("ready", timeout=60 + scenario.size / 500).values())
    if len(machines) != 1:
        raise RuntimeError(f"the shards' processes seeded different machines: {machines}")
    workers.bucket.reset(scenario.rate, scenario.burst)
    cpu_before = _cpu_times()
    started = time.monotonic()
    stop_at = started + scenario.cap_seconds
    workers.state.reset(stop_at)
    boundaries: list[tuple[float, float]] = []
    changer = threading.Thread(target=_change_quota, args=(workers.bucket, scenario, started, boundaries), daemon=True)
    changer.start()
    # The first invocation, as the API or the sweep hands a backlog on: no shard, so shard 0's process.
    if workers.state.ask():
        workers.inboxes[0].put(("invoke", json.dumps({"stateMachineArn": machines.pop()}).encode()))
    # An invocation ends by its deadline at the cap, and a send started before it within 90 s.
    workers.wait_idle(give_up_at=stop_at + 120)
    finished_at = workers.state.finished_at
    changer.join()
    workers.send_all(("finish",))
    stolen = _stolen_share(cpu_before, _cpu_times())
    figures = [figure for _, figure in sorted(workers.gather("result", timeout=60).items())]
    result = _result(scenario, figures, workers.bucket, started, stop_at, finished_at, boundaries)
    result.stolen = stolen
    return result


def _cpu_times() -> list[int] | None:
    """The machine's CPU time so far, by kind (Linux's /proc/stat: user, nice, system, idle, iowait, ..., steal)."""
    try:
        with open("/proc/stat") as stat:
            return [int(value) for value in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


def _stolen_share(before: list[int] | None, after: list[int] | None) -> float | None:
    """The share of the machine's CPU time that a virtual machine's host gave to others (steal) in between.

    A run on a busy host is slower for reasons that are not the engine's: the
    report says how much, so that a figure can be read with it.
    """
    if before is None or after is None or len(before) < 8 or len(after) < 8:
        return None
    spent = [now - then for now, then in zip(after, before, strict=True)]
    total = sum(spent)
    return spent[7] / total if total > 0 else None


def host_speed(calls: int = 400) -> float:
    """Milliseconds of CPU one botocore GetObject costs here, single-threaded, against the in-memory AWS.

    Steal does not show every slow host: on this 2-core VM the same work has
    cost up to 1.4 times as much at one hour as at another with steal near 0
    (a neighbour's use of the shared caches, or the host's clock). Every figure
    of the run moves with it, so the report prints it at the start and the end.
    """
    aws = MemoryAws(latency=0)
    aws.s3.create_bucket(BUCKET)
    aws.s3.put(BUCKET, "speed.json", b'{"taskToken": "t"}', "application/json")
    s3 = aws.session().client("s3")
    for _ in range(calls // 4):  # warm: the first calls load models and fill caches
        s3.get_object(Bucket=BUCKET, Key="speed.json")["Body"].read()
    started = time.process_time()
    for _ in range(calls):
        s3.get_object(Bucket=BUCKET, Key="speed.json")["Body"].read()
    return (time.process_time() - started) / calls * 1000


def _change_quota(
    bucket: SharedTokenBucket, scenario: Scenario, started: float, boundaries: list[tuple[float, float]]
) -> None:
    at = started
    for phase, (seconds, rate) in enumerate(scenario.phases):
        time.sleep(max(0.0, at - time.monotonic()))
        # A change stands for other callers taking (or leaving) part of the account's
        # bucket: they take what it holds too, so a burst left over from an engine
        # below the quota does not hide how the limiter follows a lower one.
        bucket.set(rate, hold=rate if phase else None)
        boundaries.append((time.monotonic(), rate))
        at += seconds
    time.sleep(max(0.0, at - time.monotonic()))
    boundaries.append((time.monotonic(), 0.0))


def _result(
    scenario: Scenario,
    figures: list[ShardFigures],
    bucket: SharedTokenBucket,
    started: float,
    stop_at: float,
    finished_at: float,
    boundaries: list[tuple[float, float]],
) -> Result:
    successes = sorted(itertools.chain.from_iterable(figure.successes for figure in figures))
    throttles = sorted(itertools.chain.from_iterable(figure.throttles for figure in figures))
    # A token answered in two processes is a duplicate too (each process counts its own).
    answers = Counter(itertools.chain.from_iterable(figure.answered for figure in figures))
    duplicates = sum(figure.duplicates for figure in figures) + sum(count - 1 for count in answers.values())
    # A shard's tokens are in the S3 of the processes that drained it (took its lease), or
    # if none did, of its own process. One is lost when it was never answered and none of
    # those holds it; still held when it was never answered and one of them holds it.
    held: set[int] = set()
    for shard in range(SHARDS):
        owners = [figure for figure in figures if shard in figure.leased] or [figures[shard]]
        held.update(itertools.chain.from_iterable(owner.held.get(shard, []) for owner in owners))
    held.difference_update(answers)
    lost = sum(1 for index in range(scenario.size) if index not in answers and index not in held)
    calls: Counter[str] = Counter()
    for figure in figures:
        calls.update(figure.calls)
    ended = successes[-1] if successes else time.monotonic()
    dropped = sum(figure.dropped for figure in figures)
    return Result(
        scenario=scenario,
        resumed=len(successes),
        seconds=ended - started,
        rate_after_burst=_rate_after_burst(successes, bucket.first_empty_at, started),
        burst_ran_out=bucket.first_empty_at is not None,
        requests=sum(figure.requests for figure in figures),
        throttled=len(throttles),
        duplicates=duplicates,
        lost=lost,
        held=len(held),
        engine_cpu=sum(figure.engine_cpu for figure in figures),
        invocations=sum(figure.invocations for figure in figures),
        busy_seconds=sum(figure.busy_seconds for figure in figures),
        failures=list(itertools.chain.from_iterable(figure.failures for figure in figures)),
        calls=dict(calls),
        stopped_at_cap=dropped > 0 or finished_at >= stop_at - 0.5,
        follow=[
            (rate, *_follow(successes, throttles, start, end, rate))
            for (start, rate), (end, _) in itertools.pairwise(boundaries)
        ],
        processes=[
            ProcessFigures(
                figure.shard,
                figure.invocations,
                figure.resumed,
                figure.engine_cpu,
                figure.backend_cpu,
                figure.busy_seconds,
            )
            for figure in figures
        ],
    )


def _rate_after_burst(successes: list[float], emptied: float | None, started: float) -> float:
    """Answers per second once the bucket's burst ran out (all of the run if it never did, or only at the end)."""
    if not successes:
        return 0.0
    if emptied is not None and successes[-1] - emptied >= 5:
        after = len(successes) - bisect_left(successes, emptied)
        return after / (successes[-1] - emptied)
    return len(successes) / max(successes[-1] - started, 1e-9)


def _follow(
    successes: list[float], throttles: list[float], start: float, end: float, rate: float
) -> tuple[float | None, float]:
    """Seconds from the phase's start to the end of the first 1-s window that follows it, and its throttled share."""
    followed = None
    at = start
    while at + 1 <= end + 1e-9:
        sent = bisect_left(successes, at + 1) - bisect_left(successes, at)
        refused = bisect_left(throttles, at + 1) - bisect_left(throttles, at)
        if sent >= QUOTA_TARGET * rate and refused <= FOLLOW_THROTTLED_SHARE * (sent + refused):
            followed = at + 1 - start
            break
        at += 0.1
    sent = bisect_left(successes, end) - bisect_left(successes, start)
    refused = bisect_left(throttles, end) - bisect_left(throttles, start)
    return followed, refused / (sent + refused) if sent + refused else 0.0


def serial_baseline(latency_ms: float, count: int) -> float:
    """The seed's way on the same backend: list, then GET, SendTaskSuccess, DELETE one token at a time."""
    aws = MemoryAws(latency_ms / 1000)
    aws.s3.create_bucket(BUCKET)
    machine = parse_state_machine_arn(aws.sfn.create_state_machine("Serial"))
    seed(aws, machine, "tokens/", count)
    session = aws.session()
    s3, sfn = session.client("s3"), session.client("stepfunctions")
    started = time.monotonic()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"tokens/{machine.name}/"):
        for item in page.get("Contents", []):
            body = json.loads(s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())
            sfn.send_task_success(taskToken=body["taskToken"], output=json.dumps(body.get("input", {})))
            s3.delete_object(Bucket=BUCKET, Key=item["Key"])
    return count / (time.monotonic() - started)


def report(result: Result, deployed: Deployed, serial: float | None) -> str:
    scenario = result.scenario
    quota = f"{result.rate_after_burst / scenario.rate:.1%} of the quota" if not scenario.phases else "see phases"
    burst = "after the burst" if result.burst_ran_out else "the burst never ran out; whole run"
    per_token = {name: round(count / max(result.resumed, 1), 2) for name, count in sorted(result.calls.items())}
    lines = [
        f"  resumed {result.resumed:,} in {result.seconds:.1f} s"
        + (" (stopped at the time cap)" if result.stopped_at_cap else "")
        + f"; {result.rate_after_burst:.1f} tokens/s ({burst}) = {quota}"
        + (f", {result.rate_after_burst / serial:.0f}x the serial baseline" if serial else ""),
        f"  SendTask* calls {result.requests:,}, throttled {result.throttled:,} = {result.throttled_share:.1%}; "
        f"duplicates {result.duplicates}, lost {result.lost}, still held {result.held:,}",
        f"  {result.invocations} resumer invocation(s) in {result.processes_used} of {len(result.processes)} "
        f"shard processes, {result.concurrent_invocations:.1f} at once on average; calls per token {per_token}",
    ]
    for process in result.processes:
        if not process.invocations:
            lines.append(f"  shard {process.shard}'s process: no invocation (the backlog did not fan out)")
            continue
        allows = deployed.vcpu / process.cpu_per_token if process.cpu_per_token else float("inf")
        lines.append(
            f"  shard {process.shard}'s process: {process.invocations} invocation(s), resumed {process.resumed:,}, "
            f"engine CPU {process.engine_cpu:.1f} s = {1000 * process.cpu_per_token:.2f} ms per token "
            f"(backend {process.backend_cpu:.1f} s apart): at {deployed.memory_mb} MB = {deployed.vcpu:.2f} vCPU "
            f"that allows {allows:.0f} tokens/s per invocation"
        )
    lines.append(
        f"  engine CPU {1000 * result.cpu_per_token:.2f} ms per token over all; the processes' CPU allows "
        f"{result.cpu_allows(deployed.vcpu):.0f} tokens/s together"
    )
    if result.stolen is not None:
        lines.append(f"  host: {result.stolen:.1%} of this machine's CPU time was taken by the hypervisor (steal)")
    for rate, seconds, share in result.follow:
        followed = f"followed in {seconds:.1f} s" if seconds is not None else "not followed within the phase"
        lines.append(f"  phase {rate:g}/s: {followed}, {share:.1%} of its SendTask* calls throttled")
    lines += [f"  FAILURE {failure}" for failure in result.failures]
    return "\n".join(lines)


def check(result: Result, deployed: Deployed, targets: Targets) -> None:
    scenario = result.scenario
    name = scenario.name
    if not scenario.phases:
        share = result.rate_after_burst / scenario.rate
        targets.check(share >= QUOTA_TARGET, f"{name}: >= 90% of {scenario.rate:g}/s after the burst", f"{share:.1%}")
        # At the CPU the deployed memory gives each invocation, for as many as ran at once in each process.
        ceiling = result.cpu_allows(deployed.vcpu)
        projected = min(result.rate_after_burst, ceiling) / scenario.rate
        targets.check(
            projected >= QUOTA_TARGET,
            f"{name}: >= 90% at the deployed {deployed.memory_mb} MB ({deployed.vcpu:.2f} vCPU)",
            f"{projected:.1%} (CPU allows {ceiling:.0f}/s)",
        )
    targets.check(
        result.throttled_share <= THROTTLED_TARGET,
        f"{name}: <= 5% of SendTask* calls throttled",
        f"{result.throttled_share:.1%}",
    )
    targets.check(result.duplicates == 0, f"{name}: 0 duplicates", str(result.duplicates))
    targets.check(result.lost == 0, f"{name}: 0 lost", str(result.lost))
    # A chain that ends on its own with tokens still held leaves them to the sweep, a minute later.
    targets.check(
        result.held == 0 or result.stopped_at_cap,
        f"{name}: nothing left for the sweep",
        f"{result.held:,} still held" + (" (stopped at the time cap)" if result.stopped_at_cap else ""),
    )
    targets.check(not result.failures, f"{name}: no invocation failed", f"{len(result.failures)}")
    for rate, seconds, _ in result.follow:
        targets.check(
            seconds is not None and seconds <= FOLLOW_TARGET_SECONDS,
            f"{name}: follows the {rate:g}/s phase within 5 s",
            "never" if seconds is None else f"{seconds:.1f} s",
        )


def run(scenarios: tuple[Scenario, ...], targets: Targets, serial_n: int) -> list[Result]:
    """Run the scenarios one after another, print each, and check the targets."""
    deployed = Deployed.read()
    settings = deployed.settings()
    print(
        f"engine on the in-memory AWS, the {STAGE} stage's settings: ResumeConcurrency={settings.resume_concurrency}, "
        f"ResumeRateLimit={settings.resume_rate_limit:g}; resumer {deployed.memory_mb} MB "
        f"({deployed.vcpu:.2f} vCPU), timeout {deployed.timeout_s} s; here: {os.cpu_count()} cores, "
        f"a process per shard ({SHARDS})",
        flush=True,
    )
    serial: dict[float, float] = {}
    for latency in sorted({scenario.latency_ms for scenario in scenarios}):
        serial[latency] = serial_baseline(latency, serial_n)
        print(f"serial seed-style baseline, {latency:g} ms per call: {serial[latency]:.1f} tokens/s", flush=True)
    results = []
    with Workers(deployed) as workers:
        for scenario in scenarios:
            print(scenario.describe(), flush=True)
            result = run_scenario(scenario, deployed, workers)
            print(report(result, deployed, serial.get(scenario.latency_ms)), flush=True)
            check(result, deployed, targets)
            results.append(result)
    return results
