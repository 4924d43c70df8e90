"""Resume benchmark on moto (in-process, plain Step Functions mode).

    python3 dev.py bench                    # both scenarios with the defaults
    python3 dev.py bench --n 2000 --rate 100 --burst 50 --latency-ms 20

Scenario "speed": N_speed tokens, simulated per-call latency, no quota. Our
resumer against a serial, seed-style baseline (GET, SendTaskSuccess, DELETE,
one token at a time) on the same backend.

Scenario "quota": N tokens against a simulated SendTaskSuccess token bucket
(rate, burst) that the resumer is not told about; throttled calls get
ThrottlingException as from AWS. Several resumers share the backlog.

Both print tokens/s, SendTaskSuccess calls against N (duplicates) and lost
tokens. Then hot-path figures: AWS calls per task-handler invocation.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.update(AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
os.environ.pop("AWS_ENDPOINT_URL", None)

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from moto import mock_aws  # noqa: E402
from moto.core.exceptions import AWSError  # noqa: E402
from moto.stepfunctions.models import StepFunctionBackend  # noqa: E402

from chalicelib.arns import parse_state_machine_arn  # noqa: E402
from chalicelib.clients import AwsClients  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.deadline import Deadline  # noqa: E402
from chalicelib.logs import DecisionLog  # noqa: E402
from chalicelib.resumer import Resumer  # noqa: E402
from chalicelib.services import Services  # noqa: E402
from chalicelib.store import TokenStore, iso_timestamp, new_token_id  # noqa: E402
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
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=f"{PREFIX}{MACHINE.name}/"
        ):
            for item in page.get("Contents", []):
                body = json.loads(s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())
                sfn.send_task_success(taskToken=body["taskToken"], output=json.dumps(body.get("input", {})))
                s3.delete_object(Bucket=BUCKET, Key=item["Key"])
                done += 1
        return done

    return run


def our_resumers(latency: float, concurrency: int, resumers: int, rate_cap: float) -> Callable[[], int]:
    def run() -> int:
        def one(_: int) -> int:
            clients = AwsClients(max_pool_connections=concurrency, send_rate_cap=rate_cap)
            with_latency(clients.s3(), latency)
            with_latency(clients.sfn(MACHINE.region), latency)
            store = TokenStore(clients.s3(), BUCKET, PREFIX)
            resumer = Resumer(store, clients, QUIET, concurrency)
            total = 0
            while True:  # as continuations would, until the backlog is gone
                report = resumer.resume(MACHINE, Deadline(60))
                total += report.resumed
                if report.remaining == 0 or not report.progressed:
                    return total

        with ThreadPoolExecutor(resumers) as pool:
            return sum(pool.map(one, range(resumers)))

    return run


def measure(label: str, n: int, run: Callable[[], int], quota: SimulatedQuota, s3: Any) -> float:
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
        f"still-held={left} throttled={quota.throttled}"
    )
    return n / elapsed


def scenario_speed(args: argparse.Namespace, s3: Any) -> None:
    print(f"speed: N={args.speed_n}, latency {args.latency_ms} ms per call, no quota")
    latency = args.latency_ms / 1000
    rates = {}
    for label, runner in (
        ("serial seed-style baseline", serial_baseline(latency)),
        (f"sfn-pauser x{args.concurrency} threads", our_resumers(latency, args.concurrency, 1, 0)),
    ):
        seed(s3, args.speed_n)
        quota = SimulatedQuota(0, 0)
        with patched_send(quota):
            rates[label] = measure(label, args.speed_n, runner, quota, s3)
    serial, ours = rates.values()
    print(f"  speed-up: {ours / serial:.1f}x (target >= 15x)")
    # Several containers resuming one backlog at once: claims keep every send single.
    seed(s3, args.speed_n)
    quota = SimulatedQuota(0, 0)
    with patched_send(quota):
        measure("4 resumers sharing it", args.speed_n, our_resumers(latency, args.concurrency, 4, 0), quota, s3)


def scenario_quota(args: argparse.Namespace, s3: Any) -> None:
    print(
        f"quota: N={args.n}, SendTaskSuccess bucket {args.rate}/s burst {args.burst} (not told to the resumer), "
        f"{args.resumers} resumers x {args.concurrency} threads, latency {args.latency_ms} ms"
    )
    seed(s3, args.n)
    quota = SimulatedQuota(args.rate, args.burst)
    with patched_send(quota):
        run = our_resumers(args.latency_ms / 1000, args.concurrency, args.resumers, args.rate_cap)
        measure("sfn-pauser", args.n, run, quota, s3)
    # The first `burst` sends are free; the sustained rate is what the quota allows.
    sustained = (len(quota.sent) - args.burst) / max(quota.last - quota.first, 1e-9)
    print(f"  sustained {sustained:.1f}/s = {100 * sustained / args.rate:.1f}% of the quota (target >= 90%)")


def scenario_hot_path(args: argparse.Namespace, s3: Any) -> None:
    print("hot path: 100 task-handler invocations on one warm container, default settings")
    settings = Settings.from_env({"Bucket": BUCKET, "Prefix": PREFIX})
    calls: Counter[str] = Counter()
    clients = AwsClients(max_pool_connections=settings.resume_concurrency)
    for client in (clients.s3(), clients.sfn(MACHINE.region)):
        client.meta.events.register(
            "before-call", lambda model, **_: calls.update([model.name])
        )
    services = Services.build(settings, logging.getLogger("bench.quiet"), clients)
    sfn = boto3.client("stepfunctions")
    arn = sfn.create_state_machine(
        name="HotPath", definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
        roleArn="arn:aws:iam::123456789012:role/r",
    )["stateMachineArn"]

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 60_000

    for index in range(100):
        event = {"taskToken": f"t-{index}", "stateMachineArn": arn, "executionArn": f"{arn}:e{index}"}
        services.pauser.handle(event, Deadline.for_context(Context()))
    total = sum(calls.values())
    print(f"  AWS calls per proceeding invocation: {total / 100:.2f} ({dict(calls)})")
    print(f"  ListTagsForResource per 100 invocations: {calls['ListTagsForResource']} (target <= 1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="tokens in the quota scenario")
    parser.add_argument("--speed-n", type=int, default=400, help="tokens in the speed scenario")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="simulated latency per AWS call")
    parser.add_argument("--rate", type=float, default=100.0, help="simulated SendTaskSuccess refill per second")
    parser.add_argument("--burst", type=float, default=50.0, help="simulated SendTaskSuccess bucket size")
    parser.add_argument("--concurrency", type=int, default=32, help="threads per resumer")
    parser.add_argument("--resumers", type=int, default=1, help="resumers sharing the backlog (quota scenario)")
    parser.add_argument("--rate-cap", type=float, default=0.0, help="ResumeRateLimit for each resumer (0: none)")
    parser.add_argument(
        "--only", choices=["speed", "quota", "hot-path"], action="append", help="run only these scenarios"
    )
    args = parser.parse_args()
    scenarios = args.only or ["speed", "quota", "hot-path"]
    make_s3_atomic()
    with mock_aws():
        s3 = boto3.client("s3", config=Config(max_pool_connections=32))
        s3.create_bucket(Bucket=BUCKET)
        if "speed" in scenarios:
            scenario_speed(args, s3)
        if "quota" in scenarios:
            scenario_quota(args, s3)
        if "hot-path" in scenarios:
            scenario_hot_path(args, s3)


if __name__ == "__main__":
    main()
