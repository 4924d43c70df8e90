"""The resume engine against the in-memory AWS (bench/memory_aws.py): rate, throttling, exactly-once.

Each scenario seeds a backlog, then runs the product as it is deployed: the
``prod`` stage's environment from .chalice/config.json (so ``ResumeConcurrency``,
``ResumerFunctionName`` and the rest are what a user gets), ``Services.build``
making its own clients, and the ``resumer`` function's handler in app.py
invoked as Lambda would: the first invocation as the API or the sweep hands a
backlog on, then every continuation it asks for (``lambda:Invoke``, async) on an
idle container or a new one, each with the function's timeout as its budget.

Measured: tokens/s after the SendTask* burst ran out, the share of SendTask*
calls throttled, duplicates (a token answered twice), lost tokens (never
answered and no longer held), and for a quota that changes mid-run the time to
follow each phase. CPU: the process runs on this machine's cores, not on the
share of a vCPU that Lambda gives the resumer's memory (1,769 MB = 1 vCPU), so
the engine's CPU seconds per token are measured (the backend's own CPU is kept
apart) and the rate that CPU share allows is projected from them.
"""

import contextlib
import itertools
import json
import logging
import os
import threading
import time
import uuid
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

from bench.memory_aws import ACCOUNT, REGION, MemoryAws
from chalicelib.arns import StateMachineArn, parse_state_machine_arn
from chalicelib.config import Settings
from chalicelib.deadline import MAX_RESERVE_SECONDS
from chalicelib.services import Services
from chalicelib.store import TokenStore, dumps, iso_timestamp, machine_tag, new_token_id

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
    Scenario("engine-quick", 2, 300, 50, 400),
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

    @property
    def throttled_share(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0

    @property
    def cpu_per_token(self) -> float:
        return self.engine_cpu / self.resumed if self.resumed else 0.0

    @property
    def concurrent_invocations(self) -> float:
        return self.busy_seconds / self.seconds if self.seconds else 0.0


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
    """The ``resumer`` function as Lambda runs it: each async invocation on an idle container, or a new one."""

    def __init__(self, aws: MemoryAws, deployed: Deployed, handler: Callable[[Any, Any], Any], stop_at: float) -> None:
        self._aws = aws
        self._deployed = deployed
        self._settings = deployed.settings()
        self._handler = handler
        self._stop_at = stop_at
        self._idle: list[Services] = []
        self._local = threading.local()
        self._lock = threading.Condition()
        self._active = 0
        self.invocations = 0
        self.busy_seconds = 0.0
        self.dropped = 0
        self.failures: list[str] = []
        self.finished_at = 0.0

    def services(self) -> Services:
        """What ``app.get_services()`` returns inside an invocation: its container's object graph."""
        return self._local.services  # type: ignore[no-any-return]

    def invoke(self, function: str, payload: bytes) -> None:
        if function != self._settings.resumer_function:
            self.failures.append(f"invoked {function!r}, not the resumer function")
            return
        with self._lock:
            if time.monotonic() >= self._stop_at:
                self.dropped += 1
                return
            self._active += 1
            self.invocations += 1
        threading.Thread(target=self._run, args=(json.loads(payload),), daemon=True).start()

    def wait(self) -> None:
        with self._lock:
            while self._active:
                self._lock.wait()
            self.finished_at = time.monotonic()

    @property
    def stopped_at_cap(self) -> bool:
        """Whether the scenario's time cap, not the engine, ended the run."""
        return self.dropped > 0 or self.finished_at >= self._stop_at - 0.5

    def _run(self, event: Any) -> None:
        started = time.monotonic()
        with self._lock:
            container = self._idle.pop() if self._idle else None
        try:
            self._local.services = container or Services.build(self._settings, product_logger())
            self._handler(event, _Context(self._deployed, self._settings.resumer_function or "", self._stop_at))
        except Exception as error:
            self.failures.append(f"{type(error).__name__}: {error}"[:300])
        finally:
            with self._lock:
                self._idle.append(self._local.services)
                self._active -= 1
                self.busy_seconds += time.monotonic() - started
                self._lock.notify_all()


def seed(aws: MemoryAws, machine: StateMachineArn, prefix: str, count: int) -> dict[str, str]:
    """``count`` held tasks as the pauser saves them (body and token index), oldest first; token -> key."""
    store = TokenStore(None, BUCKET, prefix)
    start_ms = int(time.time() * 1000) - count - 60_000
    held: dict[str, str] = {}
    for index in range(count):
        # Real task tokens are opaque strings of several hundred characters.
        token = "AQB" + os.urandom(480).hex()[:640]
        key = f"{store.folder(machine.name)}{new_token_id(start_ms + index, machine_tag(machine))}.json"
        body = {
            "taskToken": token,
            "timestamp": iso_timestamp(datetime.now(UTC)),
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


def run_scenario(scenario: Scenario, deployed: Deployed) -> Result:
    import app as product_app

    aws = MemoryAws(scenario.latency_ms / 1000, scenario.rate, scenario.burst)
    aws.s3.create_bucket(BUCKET)
    machine = parse_state_machine_arn(aws.sfn.create_state_machine("Bench"))
    settings = deployed.settings()
    held = seed(aws, machine, settings.prefix, scenario.size)
    started = time.monotonic()
    stop_at = started + scenario.cap_seconds
    function = ResumerFunction(aws, deployed, product_app.resumer, stop_at)
    aws.lambda_.on_invoke = function.invoke
    boundaries: list[tuple[float, float]] = []
    cpu_before = time.process_time()
    with _as_the_resumer_function(aws, deployed, function):
        changer = threading.Thread(target=_change_quota, args=(aws, scenario, started, boundaries), daemon=True)
        changer.start()
        function.invoke(settings.resumer_function or "", json.dumps({"stateMachineArn": machine.unqualified}).encode())
        function.wait()
        changer.join()
    engine_cpu = max(0.0, time.process_time() - cpu_before - aws.cpu_seconds)
    if aws.sessions == 0:
        raise RuntimeError("the product built no boto3 session: bench/memory_aws.py no longer reaches its clients")
    return _result(scenario, aws, held, function, engine_cpu, started, boundaries)


def _change_quota(aws: MemoryAws, scenario: Scenario, started: float, boundaries: list[tuple[float, float]]) -> None:
    at = started
    for phase, (seconds, rate) in enumerate(scenario.phases):
        time.sleep(max(0.0, at - time.monotonic()))
        # A change stands for other callers taking (or leaving) part of the account's
        # bucket: they take what it holds too, so a burst left over from an engine
        # below the quota does not hide how the limiter follows a lower one.
        aws.sfn.quota.set(rate, hold=rate if phase else None)
        boundaries.append((time.monotonic(), rate))
        at += seconds
    time.sleep(max(0.0, at - time.monotonic()))
    boundaries.append((time.monotonic(), 0.0))


def _result(
    scenario: Scenario,
    aws: MemoryAws,
    held: dict[str, str],
    function: ResumerFunction,
    engine_cpu: float,
    started: float,
    boundaries: list[tuple[float, float]],
) -> Result:
    log = aws.sfn.log
    successes = sorted(log.successes)
    throttles = sorted(log.throttles)
    answered = aws.sfn.answered
    still_held = sum(1 for key in held.values() if aws.s3.exists(BUCKET, key))
    lost = sum(1 for token, key in held.items() if token not in answered and not aws.s3.exists(BUCKET, key))
    ended = successes[-1] if successes else time.monotonic()
    return Result(
        scenario=scenario,
        resumed=len(successes),
        seconds=ended - started,
        rate_after_burst=_rate_after_burst(successes, aws.sfn.quota.first_empty_at, started),
        burst_ran_out=aws.sfn.quota.first_empty_at is not None,
        requests=log.requests,
        throttled=len(throttles),
        duplicates=log.duplicates,
        lost=lost,
        held=still_held,
        engine_cpu=engine_cpu,
        invocations=function.invocations,
        busy_seconds=function.busy_seconds,
        failures=function.failures,
        calls=dict(aws.calls),
        stopped_at_cap=function.stopped_at_cap,
        follow=[
            (rate, *_follow(successes, throttles, start, end, rate))
            for (start, rate), (end, _) in itertools.pairwise(boundaries)
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
    ceiling = deployed.vcpu / result.cpu_per_token if result.cpu_per_token else float("inf")
    lines = [
        f"  resumed {result.resumed:,} in {result.seconds:.1f} s"
        + (" (stopped at the time cap)" if result.stopped_at_cap else "")
        + f"; {result.rate_after_burst:.1f} tokens/s ({burst}) = {quota}"
        + (f", {result.rate_after_burst / serial:.0f}x the serial baseline" if serial else ""),
        f"  SendTask* calls {result.requests:,}, throttled {result.throttled:,} = {result.throttled_share:.1%}; "
        f"duplicates {result.duplicates}, lost {result.lost}, still held {result.held:,}",
        f"  {result.invocations} resumer invocation(s), {result.concurrent_invocations:.1f} at once on average; "
        f"calls per token {per_token}",
        f"  engine CPU {1000 * result.cpu_per_token:.2f} ms per token (backend excluded): at {deployed.memory_mb} MB "
        f"= {deployed.vcpu:.2f} vCPU that allows {ceiling:.0f} tokens/s per invocation",
    ]
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
        # At the CPU the deployed memory gives each invocation, for as many as ran at once.
        ceiling = (
            deployed.vcpu * max(result.concurrent_invocations, 1.0) / result.cpu_per_token
            if result.cpu_per_token
            else float("inf")
        )
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
        f"({deployed.vcpu:.2f} vCPU), timeout {deployed.timeout_s} s; here: {os.cpu_count()} cores, one process",
        flush=True,
    )
    serial: dict[float, float] = {}
    for latency in sorted({scenario.latency_ms for scenario in scenarios}):
        serial[latency] = serial_baseline(latency, serial_n)
        print(f"serial seed-style baseline, {latency:g} ms per call: {serial[latency]:.1f} tokens/s", flush=True)
    results = []
    for scenario in scenarios:
        print(scenario.describe(), flush=True)
        result = run_scenario(scenario, deployed)
        print(report(result, deployed, serial.get(scenario.latency_ms)), flush=True)
        check(result, deployed, targets)
        results.append(result)
    return results
