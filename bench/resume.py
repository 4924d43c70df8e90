"""Resume benchmarks: the engine on an in-memory AWS, and the earlier scenarios on moto.

    python3 dev.py bench                    # the default run (about 10 minutes); exit 1 on any FAIL
    python3 dev.py bench --only engine-changing --only speed
    python3 dev.py bench --quick            # seconds: the in-memory scenarios, small
    python3 dev.py bench --full             # adds the 100,000-token runs at 300/s and moto's quota scenario

In-memory AWS (bench/engine.py, bench/memory_aws.py): the deployed settings
against a SendTask* token bucket, at 20 and 50 ms per call, with the serial
seed-style baseline on the same backend. See bench/engine.py.

moto in-process, plain Step Functions mode:

Scenario "speed": N_speed tokens, simulated per-call latency, no quota. Our
resumer against a serial, seed-style baseline (GET, SendTaskSuccess, DELETE,
one token at a time) on the same backend.

Scenario "quota": N tokens against a simulated SendTaskSuccess token bucket
(rate, burst) that the resumer is not told about; throttled calls get
ThrottlingException as from AWS. Several resumers share the backlog.

Both print tokens/s, SendTaskSuccess calls against N (duplicates) and lost
tokens. Then hot-path figures: AWS calls per task-handler invocation.

Every target is printed as PASS or FAIL at the end.
"""

import argparse
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: chalicelib, tests and bench from the project

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from moto import mock_aws  # noqa: E402
from moto.core.exceptions import AWSError  # noqa: E402
from moto.stepfunctions.models import StepFunctionBackend  # noqa: E402

from bench import engine  # noqa: E402
from chalicelib.arns import parse_state_machine_arn  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.deadline import Deadline  # noqa: E402
from chalicelib.logs import DecisionLog  # noqa: E402
from chalicelib.services import Services  # noqa: E402
from chalicelib.store import iso_timestamp, new_token_id  # noqa: E402
from tests.moto_fidelity import make_s3_atomic  # noqa: E402

BUCKET = "sfn-pauser-bench"
PREFIX = "tokens/"
MACHINE = parse_state_machine_arn("arn:aws:states:us-east-1:123456789012:stateMachine:Bench")
logging.getLogger("bench.quiet").setLevel(logging.CRITICAL)
QUIET = DecisionLog(logging.getLogger("bench.quiet"))


class Throttled(AWSError):
    TYPE = "ThrottlingException"
    STATUS = 400


class SimulatedQuota:
    """A token bucket in front of moto's SendTaskSuccess, and a record of every success."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = burst
        self._at = time.monotonic()
        self._lock = threading.Lock()
        self.sent: Counter[str] = Counter()
        self.throttled = 0
        self.first = self.last = 0.0

    def admit(self, token: str) -> None:
        with self._lock:
            now = time.monotonic()
            if self.rate > 0:
                self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
                self._at = now
                if self._tokens < 1:
                    self.throttled += 1
                    raise Throttled("Rate exceeded")
                self._tokens -= 1
            self.sent[token] += 1
            self.first = self.first or now
            self.last = now


@contextmanager
def patched_send(quota: SimulatedQuota) -> Iterator[None]:
    original = StepFunctionBackend.send_task_success

    def send_task_success(self: Any, task_token: str, outcome: str) -> None:
        quota.admit(task_token)

    StepFunctionBackend.send_task_success = send_task_success
    try:
        yield
    finally:
        StepFunctionBackend.send_task_success = original


def with_latency(client: Any, seconds: float) -> Any:
    """Every call of ``client`` takes ``seconds`` longer, as over a network."""
    if seconds > 0:
        client.meta.events.register("before-send", lambda **_: time.sleep(seconds))
    return client


def seed(s3: Any, n: int) -> list[str]:
    tokens = [f"token-{uuid.uuid4()}" for _ in range(n)]
    start_ms = int(time.time() * 1000) - n

    def put(index: int) -> None:
        body = {"taskToken": tokens[index], "timestamp": iso_timestamp_now(), "input": {"n": index}}
        key = f"{PREFIX}{MACHINE.name}/{new_token_id(start_ms + index)}.json"
        s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(body).encode())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(n)))
    return tokens


def iso_timestamp_now() -> str:
    from datetime import UTC, datetime

    return iso_timestamp(datetime.now(UTC))


def held_count(s3: Any) -> int:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}{MACHINE.name}/")
    return sum(len(page.get("Contents", [])) for page in pages)


def serial_baseline(latency: float) -> Callable[[], int]:
    """The seed's way: list, then GET, SendTaskSuccess, DELETE, one token at a time."""
    s3 = with_latency(boto3.client("s3"), latency)
    sfn = with_latency(boto3.client("stepfunctions"), latency)

    def run() -> int:
        done = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}{MACHINE.name}/"):
            for item in page.get("Contents", []):
                body = json.loads(s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())
                sfn.send_task_success(taskToken=body["taskToken"], output=json.dumps(body.get("input", {})))
                s3.delete_object(Bucket=BUCKET, Key=item["Key"])
                done += 1
        return done

    return run


def deployed_settings(args: argparse.Namespace) -> Settings:
    """The deployed stage's settings (engine.Deployed), with --concurrency and --rate-cap if given."""
    environment = {**engine.Deployed.read().environment, "Bucket": BUCKET, "Prefix": PREFIX}
    if args.concurrency:
        environment["ResumeConcurrency"] = str(args.concurrency)
    if args.rate_cap:
        environment["ResumeRateLimit"] = str(args.rate_cap)
    return Settings.from_env(environment)


def our_resumers(latency: float, settings: Settings, resumers: int) -> Callable[[], int]:
    # Warm containers, made before the clock starts, as the baseline's clients are:
    # building the services and their clients (about 0.2 s) is a cold start's cost.
    containers = [Services.build(settings, logging.getLogger("bench.quiet")) for _ in range(resumers)]
    for services in containers:
        with_latency(services.clients.s3(), latency)
        with_latency(services.clients.sfn(MACHINE.region), latency)

    def run() -> int:
        def one(services: Services) -> int:
            total = 0
            while True:  # as continuations would, until the backlog is gone
                # A whole-backlog resume (the API's, the sweep's, a continuation's) drains
                # under the shards' leases, as deployed.
                report = services.resumer.resume(MACHINE, Deadline(60), exclusive=True)
                total += report.resumed
                if report.remaining == 0 or not report.progressed:
                    return total

        with ThreadPoolExecutor(resumers) as pool:
            return sum(pool.map(one, containers))

    return run


@dataclass(frozen=True)
class Measured:
    rate: float
    duplicates: int
    lost: int


def measure(label: str, n: int, run: Callable[[], int], quota: SimulatedQuota, s3: Any) -> Measured:
    started = time.monotonic()
    resumed = run()
    elapsed = time.monotonic() - started
    calls = sum(quota.sent.values())
    duplicates = calls - len(quota.sent)
    lost = n - len(quota.sent)
    left = held_count(s3)
    print(
        f"  {label:<28} {n / elapsed:8.1f} tokens/s  {elapsed:6.2f} s  "
        f"resumed={resumed} SendTaskSuccess={calls} duplicates={duplicates} lost={lost} "
        f"still-held={left} throttled={quota.throttled}",
        flush=True,
    )
    return Measured(n / elapsed, duplicates, lost)


def scenario_speed(args: argparse.Namespace, s3: Any, targets: engine.Targets) -> None:
    settings = deployed_settings(args)
    print(
        f"speed (moto): N={args.speed_n}, latency {args.latency_ms} ms per call, no quota, "
        f"ResumeConcurrency={settings.resume_concurrency}",
        flush=True,
    )
    latency = args.latency_ms / 1000
    rates = {}
    for label, runner in (
        ("serial seed-style baseline", serial_baseline(latency)),
        ("sfn-pauser", our_resumers(latency, settings, 1)),
    ):
        seed(s3, args.speed_n)
        quota = SimulatedQuota(0, 0)
        with patched_send(quota):
            rates[label] = measure(label, args.speed_n, runner, quota, s3).rate
    serial, ours = rates.values()
    print(f"  speed-up: {ours / serial:.1f}x (target >= 15x)")
    targets.check(
        ours / serial >= 15, f"speed (moto): >= 15x the serial baseline at N={args.speed_n}", f"{ours / serial:.1f}x"
    )
    # Several containers resuming one backlog at once: the leases keep every send single.
    seed(s3, args.speed_n)
    quota = SimulatedQuota(0, 0)
    with patched_send(quota):
        shared = measure("4 resumers sharing it", args.speed_n, our_resumers(latency, settings, 4), quota, s3)
    targets.check(
        shared.duplicates == 0, "speed (moto): 4 resumers sharing a backlog: 0 duplicates", str(shared.duplicates)
    )
    targets.check(shared.lost == 0, "speed (moto): 4 resumers sharing a backlog: 0 lost", str(shared.lost))


def scenario_quota(args: argparse.Namespace, s3: Any, targets: engine.Targets) -> None:
    settings = deployed_settings(args)
    print(
        f"quota (moto): N={args.n}, SendTaskSuccess bucket {args.rate}/s burst {args.burst} (not told to the resumer), "
        f"{args.resumers} resumers x ResumeConcurrency={settings.resume_concurrency}, latency {args.latency_ms} ms",
        flush=True,
    )
    seed(s3, args.n)
    quota = SimulatedQuota(args.rate, args.burst)
    with patched_send(quota):
        measured = measure(
            "sfn-pauser", args.n, our_resumers(args.latency_ms / 1000, settings, args.resumers), quota, s3
        )
    # The first `burst` sends are free; the sustained rate is what the quota allows.
    sustained = (len(quota.sent) - args.burst) / max(quota.last - quota.first, 1e-9)
    print(f"  sustained {sustained:.1f}/s = {100 * sustained / args.rate:.1f}% of the quota (target >= 90%)")
    targets.check(
        sustained >= 0.9 * args.rate, f"quota (moto): >= 90% of {args.rate:g}/s", f"{sustained / args.rate:.1%}"
    )
    targets.check(
        measured.duplicates == 0 and measured.lost == 0,
        "quota (moto): 0 duplicates, 0 lost",
        f"{measured.duplicates} / {measured.lost}",
    )


def scenario_hot_path(args: argparse.Namespace, s3: Any, targets: engine.Targets) -> None:
    print("hot path (moto): 100 task-handler invocations on one warm container, deployed settings", flush=True)
    sfn = boto3.client("stepfunctions")
    per_guards: dict[int, Counter[str]] = {}
    for guards in (0, 1, 3):
        calls = per_guards[guards] = hot_path_calls(args, sfn, [f"dependency-{n}" for n in range(guards)])
        print(f"  {guards} guard(s): {sum(calls.values()) / 100:.2f} AWS calls per proceeding invocation {dict(calls)}")
    plain = per_guards[0]
    targets.check(
        plain["ListTagsForResource"] <= 1,
        "hot path (moto): <= 1 ListTagsForResource per 100",
        str(plain["ListTagsForResource"]),
    )
    for guards in (1, 3):
        extra = sum(per_guards[guards].values()) - sum(plain.values())
        targets.check(
            extra <= guards,
            f"hot path (moto): {guards} guard(s) add at most {guards} call(s) per container and cache period",
            str(extra),
        )
    # A protected section: the checkpoint records each execution inside, its leave step counts it out.
    section = hot_path_calls(args, sfn, [], section=True)
    added = section - plain
    print(
        f"  with a section: {sum(section.values()) / 100:.2f} AWS calls per execution (its checkpoint "
        f"and its leave step); added per execution: "
        f"{ {name: count / 100 for name, count in added.items()} } (+1 Lambda invocation, the leave step)"
    )
    targets.check(
        added == Counter({"PutObject": 100, "DeleteObject": 100}),
        "hot path (moto): a section adds one S3 write and one delete per execution",
        str(dict(added)),
    )


def hot_path_calls(args: argparse.Namespace, sfn: Any, guards: list[str], *, section: bool = False) -> Counter[str]:
    """The AWS calls of 100 proceeding invocations of a checkpoint declaring ``guards``, on a new
    container; with ``section``, each followed by its execution's leave step."""
    services = Services.build(deployed_settings(args), logging.getLogger("bench.quiet"))
    calls: Counter[str] = Counter()
    for client in (services.clients.s3(), services.clients.sfn(MACHINE.region)):
        client.meta.events.register("before-call", lambda model, **_: calls.update([model.name]))
    arn = sfn.create_state_machine(
        name=f"HotPath{len(guards)}{'Section' if section else ''}",
        definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
        roleArn="arn:aws:iam::123456789012:role/r",
    )["stateMachineArn"]

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 60_000

    for index in range(100):
        event: dict[str, Any] = {"taskToken": f"t-{index}", "stateMachineArn": arn, "executionArn": f"{arn}:e{index}"}
        if guards:
            event["guards"] = guards
        if section:
            event["section"] = "orders"
        services.pauser.handle(event, Deadline.for_context(Context()))
        if section:
            leave = {"leave": True, "stateMachineArn": arn, "executionArn": event["executionArn"]}
            services.pauser.handle(leave, Deadline.for_context(Context()))
    return calls


MOTO_SCENARIOS = ("speed", "quota", "hot-path")


def chosen(args: argparse.Namespace) -> tuple[list[str], tuple[engine.Scenario, ...]]:
    """The moto scenarios and the engine scenarios to run, from --quick, --full and --only."""
    if args.quick:
        catalogue, moto = engine.QUICK, []
    elif args.full:
        catalogue, moto = engine.FULL, list(MOTO_SCENARIOS)
    else:
        catalogue, moto = engine.DEFAULT, ["speed", "hot-path"]
    if not args.only:
        return moto, catalogue
    every = {scenario.name: scenario for scenario in (*engine.FULL, *engine.QUICK)}
    wanted = set(args.only)
    moto = [name for name in MOTO_SCENARIOS if name in wanted or "moto" in wanted]
    picked = tuple(scenario for name, scenario in every.items() if name in wanted)
    return moto, picked or (catalogue if "engine" in wanted else ())


def main(argv: list[str] | None = None) -> int:
    names = [scenario.name for scenario in (*engine.FULL, *engine.QUICK)]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the in-memory scenarios, small (seconds; for tests)")
    parser.add_argument("--full", action="store_true", help="also the 100,000-token runs at 300/s and moto's quota")
    parser.add_argument(
        "--only",
        choices=[*MOTO_SCENARIOS, "moto", "engine", *names],
        action="append",
        help="run only these scenarios (repeatable); 'moto' and 'engine' name each group",
    )
    parser.add_argument("--n", type=int, default=10_000, help="tokens in moto's quota scenario")
    parser.add_argument("--speed-n", type=int, default=400, help="tokens in moto's speed scenario")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="simulated latency per AWS call (moto)")
    parser.add_argument("--rate", type=float, default=100.0, help="simulated SendTaskSuccess refill per second (moto)")
    parser.add_argument("--burst", type=float, default=50.0, help="simulated SendTaskSuccess bucket size (moto)")
    parser.add_argument("--concurrency", type=int, default=0, help="ResumeConcurrency (moto; 0: the deployed value)")
    parser.add_argument("--resumers", type=int, default=1, help="resumers sharing the backlog (moto's quota)")
    parser.add_argument("--rate-cap", type=float, default=0.0, help="ResumeRateLimit (moto; 0: the deployed value)")
    args = parser.parse_args(argv)
    moto, scenarios = chosen(args)
    targets = engine.Targets()
    credentials = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    with mock.patch.dict(os.environ, credentials):
        os.environ.pop("AWS_ENDPOINT_URL", None)
        at_start = engine.host_speed()
        print(f"host speed: one botocore GetObject costs {at_start:.2f} ms of CPU here (single thread)", flush=True)
        if scenarios:
            engine.run(scenarios, targets, engine.QUICK_SERIAL_N if args.quick else engine.SERIAL_N)
        if moto:
            run_moto(args, moto, targets)
        at_end = engine.host_speed()
    print(
        f"host speed: {at_start:.2f} ms per GetObject at the start, {at_end:.2f} at the end "
        "(every figure is slower on a slower host; see engine.host_speed)"
    )
    print(targets.report())
    return 1 if targets.failed else 0


def run_moto(args: argparse.Namespace, scenarios: list[str], targets: engine.Targets) -> None:
    make_s3_atomic()
    with mock_aws():
        s3 = boto3.client("s3", config=Config(max_pool_connections=32))
        s3.create_bucket(Bucket=BUCKET)
        if "speed" in scenarios:
            scenario_speed(args, s3, targets)
        if "quota" in scenarios:
            scenario_quota(args, s3, targets)
        if "hot-path" in scenarios:
            scenario_hot_path(args, s3, targets)


if __name__ == "__main__":
    sys.exit(main())
