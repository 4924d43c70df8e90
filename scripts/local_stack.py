#!/usr/bin/env python3
"""Run sfn-pauser locally: an embedded AWS (moto) plus ``chalice local``.

    python3 dev.py local                 the stack, until Ctrl-C
    python3 dev.py local --demo          the stack, one execution held and resumed, then exit
    python3 dev.py local --port 8001     chalice local on another port

One process holds moto's server, with real Step Functions executions, and the
app's functions: moto's Lambda backend runs the Chalice ``pauser`` (and
``resumer``) handler in this process, and a thread invokes the ``sweep``
handler on app.py's own schedule, as EventBridge does once deployed
(``chalice local`` runs neither). ``chalice local`` serves the REST API in a
subprocess. All of them reach moto through ``AWS_ENDPOINT_URL`` with dummy
credentials, so nothing touches AWS. Ctrl-C (or SIGTERM) stops everything.
"""

import argparse
import contextlib
import importlib.util
import io
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
REGION = "us-east-1"
STAGE = "dev"
MACHINE_NAME = "Orders"
SECTION_MACHINE_NAME = "Shipments"
DEFAULT_API_PORT = 8000
STARTUP_SECONDS = 60.0
STEP_SECONDS = 20.0
STOP_SECONDS = 5.0
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
RATE_UNIT_SECONDS = {"MINUTES": 60, "HOURS": 3600, "DAYS": 86400}
# Chalice's default, for a function config.json gives no lambda_timeout.
DEFAULT_LAMBDA_TIMEOUT = 60

T = TypeVar("T")


class StackError(Exception):
    """A step failed or timed out; the message says which and why."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` on the way (botocore retries some) swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True)
class Stack:
    endpoint: str
    api: str
    machine_arn: str
    section_arn: str
    function_arn: str
    bucket: str
    prefix: str
    chalice: "subprocess.Popen[str]"
    sfn: Any
    s3: Any
    sweep: "Schedule"
    cache_seconds: float

    @property
    def folder(self) -> str:
        return f"{self.prefix}{MACHINE_NAME}/"

    @property
    def tag_bound(self) -> float:
        """How soon a tag changed with the AWS CLI reaches every task handler: the sweep mirrors
        the tags, then a warm handler may use its cached flag for MaintenanceCacheSeconds."""
        return self.sweep.period + self.cache_seconds


# ---------------------------------------------------------------- output


_print_lock = threading.Lock()


def say(text: str = "") -> None:
    with _print_lock:
        print(text, flush=True)


def is_metric(line: str) -> bool:
    """Whether a line is a CloudWatch EMF record (a metric), which Lambda's stdout carries with the logs."""
    return line.startswith('{"_aws": ')


def relay(stream: Any, label: str, metrics: bool) -> None:
    """Copy a subprocess's output line by line, labelled, until it closes; EMF lines only if ``metrics``."""
    for line in stream:
        if not is_metric(line):
            say(f"  {label} | {line.rstrip()}")
        elif metrics:
            say(f"  {label} metric | {line.rstrip()}")


class Labelled(io.TextIOBase):
    """A text stream that says each line it is given, labelled like the rest of the output."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self._label = label
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            say(f"  {self._label} | {line}")
        return len(text)


# ---------------------------------------------------------------- helpers


def wait_for(probe: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Poll ``probe()`` until it returns something truthy, or raise StackError after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` (connections in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def http(method: str, url: str, body: Any = None, timeout: float = 35.0) -> tuple[int, Any]:
    """A JSON request; returns the status and the decoded body (HTTP errors included)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def stage_environment() -> dict[str, str]:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    return dict(config["stages"][STAGE].get("environment_variables", {}))


def status_url(stack: Stack) -> str:
    return f"{stack.api}/maintenance?" + urllib.parse.urlencode({"stateMachineArn": stack.machine_arn}, safe=":")


def compact(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "))


# ---------------------------------------------------------------- the stack


def start_moto(port: int, exits: contextlib.ExitStack) -> tuple[str, int]:
    """moto's server in a thread of this process (port 0: any free port); returns (endpoint, port)."""
    from moto.server import ThreadedMotoServer

    from tests.harness import MOTO_CONFIG

    # ThreadedMotoServer.start() waits forever if it cannot bind, so check first.
    if port and not port_is_free(port):
        raise StackError(f"port {port} is in use; pass another --moto-port")
    # Each request would otherwise print a line.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    exits.callback(server.stop)
    host, bound = server.get_host_and_port()
    endpoint = f"http://{host}:{bound}"
    # Real executions, and the in-process Lambda backend (no Docker); no env var does this.
    try:
        status, body = http("POST", f"{endpoint}/moto-api/config", MOTO_CONFIG, timeout=10)
    except OSError as error:
        raise StackError(f"moto did not take its config: {error}") from error
    if not 200 <= status < 300:
        raise StackError(f"moto refused its config: HTTP {status} {body}")
    return endpoint, bound


def label_metrics(shown: bool) -> None:
    """The functions' EMF lines (metrics) go to stdout as in Lambda; here they are labelled like
    their logs, or left out (the demo's narration has no use for them)."""
    from chalicelib import services
    from chalicelib.metrics import Metrics

    stream = Labelled("lambda metric") if shown else io.StringIO()

    class LabelledMetrics(Metrics):
        def __init__(self, stream_: Any = None, clock: Callable[[], float] = time.time) -> None:
            super().__init__(stream_ or stream, clock)

    services.Metrics = LabelledMetrics  # type: ignore[misc]


def route_lambda_to_chalice(stack: contextlib.ExitStack, metrics: bool) -> None:
    """moto's Lambda backend runs the app's functions here, through Chalice's test client."""
    from chalice.test import Client
    from moto.awslambda_simple.models import LambdaSimpleBackend

    import app as chalice_app
    from tests.harness import FUNCTION_NAME, route_lambda_to
    from tests.moto_fidelity import make_s3_atomic

    make_s3_atomic()
    label_metrics(metrics)

    client = stack.enter_context(Client(chalice_app.app, stage_name=STAGE, project_dir=str(ROOT)))
    for handler in chalice_app.app.log.handlers:
        handler.setFormatter(logging.Formatter("  lambda | %(message)s"))

    prefix = FUNCTION_NAME.removesuffix("pauser")

    def invoke(name: str, event: Any) -> Any:
        if not name.startswith(prefix):
            raise LookupError(f"no function {name} in the local stack (only {prefix}*)")
        return client.lambda_.invoke(name.removeprefix(prefix), event).payload

    original = LambdaSimpleBackend.__dict__["invoke"]
    LambdaSimpleBackend.invoke = route_lambda_to(invoke)  # type: ignore[method-assign]
    stack.callback(setattr, LambdaSimpleBackend, "invoke", original)


# ---------------------------------------------------------------- the schedule


def schedule_seconds(app: Any, name: str) -> float:
    """The period of the app's ``@app.schedule(Rate(...), name=name)``, so the local one cannot drift from it."""
    from chalice.app import Rate, ScheduledEventConfig

    for source in app.event_sources:
        if isinstance(source, ScheduledEventConfig) and source.name == name:
            expression = source.schedule_expression
            if not isinstance(expression, Rate):
                raise StackError(f"{name}'s schedule {expression!r} is not a Rate; the local stack runs Rates only")
            return float(expression.value * RATE_UNIT_SECONDS[expression.unit])
    raise StackError(f"app.py has no scheduled function named {name!r}")


def lambda_timeout(name: str) -> float:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    functions = config["stages"][STAGE].get("lambda_functions", {})
    return float(functions.get(name, {}).get("lambda_timeout", DEFAULT_LAMBDA_TIMEOUT))


def load_app_as(name: str) -> ModuleType:
    """app.py loaded once more as a module of its own: another Lambda container.

    Deployed, each function has its own containers, and what one caches (the
    maintenance flag it last read, for MaintenanceCacheSeconds) is not another's.
    A sweep sharing the pauser's module would refresh the pauser's cache too, and
    a tag change would reach it sooner here than it does deployed.
    """
    spec = importlib.util.spec_from_file_location(name, ROOT / "app.py")
    if spec is None or spec.loader is None:
        raise StackError(f"cannot load {ROOT / 'app.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class LambdaContext:
    """What Lambda hands a handler and the sweep reads: its function's ARN, and the time left."""

    def __init__(self, function_arn: str, timeout: float) -> None:
        self.invoked_function_arn = function_arn
        self.function_name = function_arn.rsplit(":", 1)[-1]
        self._ends_at = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._ends_at - time.monotonic()) * 1000))


class Schedule:
    """Invokes a scheduled handler every ``period`` seconds in a thread, as EventBridge and Lambda would.

    The first run comes one period after the start, as a new rule's does. Runs
    never overlap: one that outlasts the period delays the next (deployed,
    EventBridge would start another alongside it).
    """

    def __init__(self, handler: Callable[[Any, Any], Any], function_arn: str, period: float, timeout: float) -> None:
        self.handler = handler
        self.function_arn = function_arn
        self.period = period
        self.timeout = timeout
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"schedule {self.name}", daemon=True)

    @property
    def name(self) -> str:
        return self.function_arn.rsplit(":", 1)[-1]

    def start(self, exits: contextlib.ExitStack) -> None:
        self._thread.start()
        exits.callback(self.stop)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(STOP_SECONDS)

    def _loop(self) -> None:
        while not self._stopping.wait(self.period):
            self.invoke()

    def invoke(self) -> None:
        _, partition, _, region, account, *_ = self.function_arn.split(":")
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": account,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "region": region,
            "resources": [f"arn:{partition}:events:{region}:{account}:rule/{self.name}-event"],
            "detail": {},
        }
        try:
            self.handler(event, LambdaContext(self.function_arn, self.timeout))
        except Exception:
            # An unhandled error ends this invocation only, as in Lambda; the next run comes as scheduled.
            for line in traceback.format_exc().splitlines():
                say(f"  lambda | {line}")


def start_sweep(function_arn: str, every: float | None, exits: contextlib.ExitStack) -> Schedule:
    """The app's ``sweep`` on its schedule (``every`` seconds instead, for tests), in its own container."""
    container = load_app_as("sfn_pauser_sweep_container")
    arn = function_arn.rsplit(":", 1)[0] + f":sfn-pauser-{STAGE}-sweep"
    period = schedule_seconds(container.app, "sweep") if every is None else every
    schedule = Schedule(container.sweep, arn, period, lambda_timeout("sweep"))
    schedule.start(exits)
    return schedule


def create_resources(sfn: Any, s3: Any, iam: Any, lambda_: Any, bucket: str) -> tuple[str, str, str]:
    """The bucket, the pauser function and two demo workflows (examples/checkpoint.asl.json, and
    examples/section.asl.json with a protected section); returns the function's and machines' ARNs."""
    from tests.harness import create_pauser_function, definition

    s3.create_bucket(Bucket=bucket)
    function_arn = create_pauser_function(iam, lambda_)
    states_role = iam.create_role(
        RoleName="states-role",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    machine_arn = sfn.create_state_machine(
        name=MACHINE_NAME,
        definition=definition(function_arn),
        roleArn=states_role,
        type="STANDARD",
    )["stateMachineArn"]
    section = (ROOT / "examples" / "section.asl.json").read_text().replace("${PauserFunctionArn}", function_arn)
    section_arn = sfn.create_state_machine(
        name=SECTION_MACHINE_NAME, definition=section, roleArn=states_role, type="STANDARD"
    )["stateMachineArn"]
    return function_arn, machine_arn, section_arn


def start_chalice_local(
    port: int, env: dict[str, str], metrics: bool, stack: contextlib.ExitStack
) -> "subprocess.Popen[str]":
    chalice = shutil.which("chalice", path=str(Path(sys.executable).parent))
    if chalice is None:
        raise StackError(f"no chalice executable next to {sys.executable}; run it as `python3 dev.py local`")
    command = [chalice, "local", "--no-autoreload", "--stage", STAGE, "--host", HOST, "--port", str(port)]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        # Its own session: a terminal's Ctrl-C reaches this script only, which stops it in order.
        start_new_session=True,
    )
    relayer = threading.Thread(target=relay, args=(process.stdout, "api", metrics), daemon=True)
    relayer.start()
    stack.callback(relayer.join, STOP_SECONDS)
    stack.callback(stop_process, process)
    return process


def stop_process(process: "subprocess.Popen[str]") -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_serving(stack: Stack) -> None:
    def answered() -> bool:
        if stack.chalice.poll() is not None:
            raise StackError(f"chalice local exited with code {stack.chalice.returncode} (its output is above)")
        try:
            status, _ = http("GET", status_url(stack), timeout=5)
        except OSError:
            return False
        return status == 200

    wait_for(answered, timeout=STARTUP_SECONDS, what=f"chalice local to answer on {stack.api}")


def point_at(endpoint: str, moto_port: int, settings: dict[str, str]) -> None:
    """Point this process (and so chalice local, which inherits it) at the embedded AWS.

    Done before anything imports the app or creates a boto3 client. Service-specific endpoints,
    a profile or a session token would take precedence over, or spoil, the dummy credentials.
    """
    for name in [name for name in os.environ if name.startswith("AWS_ENDPOINT_URL_")]:
        del os.environ[name]
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.update(DUMMY_CREDENTIALS, AWS_ENDPOINT_URL=endpoint, AWS_DEFAULT_REGION=REGION)
    # Where moto's own Step Functions interpreter sends its Lambda calls (it defaults to 5000).
    os.environ["MOTO_PORT"] = str(moto_port)
    # chalice.test.Client swaps os.environ for a patched copy around each call, which is not
    # thread-safe; with the stage's variables already in place, a race between calls changes nothing.
    os.environ.update(settings)


def start_stack(args: argparse.Namespace, exits: contextlib.ExitStack) -> Stack:
    if not port_is_free(args.port):
        raise StackError(f"port {args.port} is in use; pass another --port")
    settings = stage_environment()
    endpoint, moto_port = start_moto(args.moto_port, exits)
    point_at(endpoint, moto_port, settings)
    say(f"local: moto (embedded AWS) on {endpoint}")
    # Metrics (EMF lines) are shown, labelled, with the stack; the demo's narration leaves them out.
    metrics = not args.demo
    route_lambda_to_chalice(exits, metrics)

    import boto3

    def client(service: str) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=endpoint)

    sfn, s3 = client("stepfunctions"), client("s3")
    bucket = settings["Bucket"]
    function_arn, machine_arn, section_arn = create_resources(sfn, s3, client("iam"), client("lambda"), bucket)
    function_name = function_arn.rsplit(":", 1)[-1]
    say(
        f"local: created bucket {bucket}, function {function_name}, "
        f"state machines {MACHINE_NAME} and {SECTION_MACHINE_NAME} (with a protected section)"
    )
    sweep = start_sweep(function_arn, args.sweep_seconds, exits)
    rule = "app.py's schedule" if args.sweep_seconds is None else "--sweep-seconds, for tests"
    say(f"local: the sweep runs every {sweep.period:g} s in this process ({rule})")

    api = f"http://{HOST}:{args.port}"
    chalice = start_chalice_local(args.port, dict(os.environ), metrics, exits)
    say(f"local: chalice local (pid {chalice.pid}) starting on {api}")
    from chalicelib.config import Settings

    cache_seconds = Settings.from_env().maintenance_cache_seconds
    stack = Stack(
        endpoint,
        api,
        machine_arn,
        section_arn,
        function_arn,
        bucket,
        settings.get("Prefix", ""),
        chalice,
        sfn,
        s3,
        sweep,
        cache_seconds,
    )
    wait_until_serving(stack)
    return stack


def shell_exports(stack: Stack) -> list[str]:
    """What the printed commands need, set once: the URLs, the ARN, dummy credentials and a region
    (the AWS CLI and the sfn-pauser CLI sign every request, moto accepts any key), and .venv/bin
    for the ``aws`` and ``sfn-pauser`` commands."""
    credentials = " ".join(f"{name}={value}" for name, value in DUMMY_CREDENTIALS.items())
    return [
        f"export API={stack.api} SFN_PAUSER_API={stack.api}",
        f"export AWS_ENDPOINT_URL={stack.endpoint} AWS_DEFAULT_REGION={REGION} {credentials}",
        f"export ARN={stack.machine_arn} SECTION_ARN={stack.section_arn}",
        f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"',
    ]


def print_banner(stack: Stack) -> None:
    def post(path: str, fields: str) -> str:
        body = '{"stateMachineArn": "\'$ARN\'"' + fields + "}"
        return f"curl -s -X POST \"$API/{path}\" -H 'Content-Type: application/json' -d '{body}'"

    exports = "\n".join(f"  {line}" for line in shell_exports(stack))
    # A new name on every paste (a name is required by moto, unlike AWS, which would make one up).
    unique_name = '--name "order-$(date +%s)-$RANDOM"'
    sweep = stack.sweep.period
    cache = stack.cache_seconds
    say(
        f"""
sfn-pauser is running locally (stage {STAGE}); nothing here talks to AWS.
  REST API        {stack.api} (chalice local)
  moto endpoint   {stack.endpoint} (the embedded AWS: S3, Step Functions, Lambda)
  state machine   {stack.machine_arn}
  pauser function {stack.function_arn}
  sweep           every {sweep:g} s, in this process
  token folder    s3://{stack.bucket}/{stack.folder}

In another shell, set these once (the commands below use them; aws and sfn-pauser are in .venv/bin):
{exports}

Switch maintenance on through the REST API, and see the status (paused count, who, why):
  {post("maintenance", ', "enabled": true, "reason": "db migration"')}
  curl -s "$API/maintenance?stateMachineArn=$ARN"
Start an execution (held while maintenance is on), see it, and the held tokens:
  EXECUTION=$(aws stepfunctions start-execution --state-machine-arn "$ARN" {unique_name} --input '{{"order": 1}}' \
--query executionArn --output text)
  aws stepfunctions describe-execution --execution-arn "$EXECUTION" --query status
  aws s3 ls s3://{stack.bucket}/{stack.folder}
Switch maintenance off (resumes what is held), or resume without switching (409 while on, unless "force": true):
  {post("maintenance", ', "enabled": false')}
  {post("resume", "")}
The same with the sfn-pauser CLI (it signs its requests: the exports give it credentials and a region):
  sfn-pauser on --state-machine "$ARN" --reason "db migration"
  sfn-pauser status --state-machine "$ARN"
  sfn-pauser off --state-machine "$ARN" --wait
Or with the tag, through the AWS CLI:
  aws stepfunctions tag-resource --resource-arn "$ARN" --tags key=Maintenance,value=true
  aws stepfunctions untag-resource --resource-arn "$ARN" --tag-keys Maintenance

As deployed, a switch through the REST API or the CLI reaches every pauser within MaintenanceCacheSeconds
({cache:g} s, the flag a warm pauser may reuse), and a tag change within the sweep's period plus that
({sweep:g} + {cache:g} = {stack.tag_bound:g} s): the sweep mirrors the tags and resumes what a lift left held.
Ctrl-C stops everything.
"""
    )


# ---------------------------------------------------------------- the demo


class Demo:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.step = 0

    def announce(self, text: str) -> None:
        self.step += 1
        say(f"\n[{self.step}] {text}")

    def api(self, method: str, path: str, body: Any = None) -> Any:
        url = status_url(self.stack) if path == "status" else f"{self.stack.api}/{path}"
        shown = f"{method} {url}" + (f" {compact(body)}" if body is not None else "")
        say(f"    -> {shown}")
        try:
            status, answer = http(method, url, body)
        except OSError as error:
            raise StackError(f"{method} {url} failed: {error}") from error
        say(f"    <- {status} {compact(answer)}")
        if status not in (200, 201):
            raise StackError(f"{method} {url} answered {status}: {answer}")
        return answer

    def execution(self, arn: str) -> dict[str, Any]:
        return dict(self.stack.sfn.describe_execution(executionArn=arn))

    def require_running(self, arn: str) -> None:
        described = self.execution(arn)
        if described["status"] != "RUNNING":
            raise StackError(f"the execution is {described['status']}, not RUNNING: {self.failure(arn)}")

    def failure(self, arn: str) -> str:
        events = self.stack.sfn.get_execution_history(executionArn=arn, reverseOrder=True)["events"]
        for event in events:
            for name, details in event.items():
                if name.endswith("FailedEventDetails") and isinstance(details, dict):
                    return f"{details.get('error')}: {details.get('cause')}"
        return "no failure recorded"

    def held_keys(self) -> list[str]:
        listed = self.stack.s3.list_objects_v2(Bucket=self.stack.bucket, Prefix=self.stack.folder)
        return [item["Key"] for item in listed.get("Contents", [])]

    def run(self) -> None:
        from chalicelib.logs import fingerprint

        stack = self.stack
        self.announce("Switch maintenance on through the REST API")
        switched = self.api(
            "POST", "maintenance", {"stateMachineArn": stack.machine_arn, "enabled": True, "reason": "demo"}
        )
        if switched.get("maintenance") is not True:
            raise StackError(f"maintenance did not switch on: {switched}")

        self.announce("Start an execution; it reaches the checkpoint while maintenance is on")
        payload = {"orderId": "A-1001", "items": [{"sku": "tea", "quantity": 2}], "amount": 12.5}
        name = f"demo-{time.strftime('%Y%m%dT%H%M%S')}"
        execution_arn = stack.sfn.start_execution(
            stateMachineArn=stack.machine_arn, name=name, input=json.dumps(payload)
        )["executionArn"]
        say(f"    execution {execution_arn}")
        say(f"    input     {compact(payload)}")

        self.announce("Wait for the pauser to hold it: its task token is saved in S3")

        def held() -> list[str] | None:
            keys = self.held_keys()
            if not keys:
                self.require_running(execution_arn)
            return keys

        [key] = wait_for(held, timeout=STEP_SECONDS, what=f"a held token under s3://{stack.bucket}/{stack.folder}")
        body = json.loads(stack.s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read())
        say(f"    saved     s3://{stack.bucket}/{key}")
        say(f"    token     {fingerprint(body['taskToken'])} (a fingerprint: the token is a credential)")
        if body.get("executionArn") != execution_arn:
            raise StackError(f"{key} holds {body.get('executionArn')}, not {execution_arn}")
        self.require_running(execution_arn)
        say("    execution RUNNING (waiting at MaintenanceCheckpoint)")
        status = self.api("GET", "status")
        if status.get("paused") != 1 or status.get("maintenance") is not True:
            raise StackError(f"expected maintenance on with 1 paused, got {status}")

        self.announce("Switch maintenance off through the REST API: it resumes what is held")
        switched = self.api("POST", "maintenance", {"stateMachineArn": stack.machine_arn, "enabled": False})
        if switched.get("resumed") != 1:
            raise StackError(f"expected 1 resumed execution, got {switched}")

        self.announce("Wait for the execution to finish")

        def finished() -> dict[str, Any] | None:
            described = self.execution(execution_arn)
            if described["status"] in ("FAILED", "TIMED_OUT", "ABORTED"):
                raise StackError(f"the execution ended {described['status']}: {self.failure(execution_arn)}")
            return described if described["status"] == "SUCCEEDED" else None

        described = wait_for(finished, timeout=STEP_SECONDS, what=f"{execution_arn} to succeed")
        output = json.loads(described["output"])
        say(f"    execution SUCCEEDED, output {compact(output)}")
        if output != payload:
            raise StackError(f"the output differs from the input: {output} != {payload}")
        say("    output == input: the workflow's data passed through the checkpoint unchanged")
        left = self.held_keys()
        say(f"    s3://{stack.bucket}/{stack.folder}: {len(left)} held tokens")
        if left:
            raise StackError(f"tokens are still held after the resume: {left}")
        self.overlapping_holds()

    def overlapping_holds(self) -> None:
        """Two pipelines hold the machine at once; the first to finish lifts nothing."""
        stack = self.stack
        self.announce("Two pipelines take overlapping holds (each with a TTL, so a crash cannot hold for ever)")
        holds = [
            self.api("POST", "holds", {"stateMachineArns": [stack.machine_arn], "ttlSeconds": 600, "reason": who})
            for who in ("pipeline A", "pipeline B")
        ]
        first, second = (hold["holdId"] for hold in holds)
        execution_arn = stack.sfn.start_execution(
            stateMachineArn=stack.machine_arn, name=f"demo-holds-{time.strftime('%Y%m%dT%H%M%S')}", input="{}"
        )["executionArn"]
        say(f"    execution {execution_arn}")
        wait_for(self.held_keys, timeout=STEP_SECONDS, what="the execution to be held")
        say("    held at MaintenanceCheckpoint")

        self.announce("Pipeline A finishes first and releases its hold: pipeline B's still holds the execution")
        released = self.api("DELETE", f"holds/{first}")
        if released.get("stillHeld") != [{"stateMachineArn": stack.machine_arn, "heldBy": [second]}]:
            raise StackError(f"expected the execution still held by {second}, got {released}")
        self.require_running(execution_arn)
        say("    execution RUNNING")

        self.announce("Pipeline B releases the last hold: the execution resumes")
        released = self.api("DELETE", f"holds/{second}")
        if released.get("resumed") != {stack.machine_arn: 1}:
            raise StackError(f"expected 1 execution resumed, got {released}")
        wait_for(
            lambda: self.execution(execution_arn)["status"] == "SUCCEEDED" or None,
            timeout=STEP_SECONDS,
            what=f"{execution_arn} to succeed",
        )
        say("    execution SUCCEEDED")
        self.drain()

    def drain(self) -> None:
        """Maintenance on while one execution is inside the protected section: the wait, then drained."""
        stack = self.stack
        where = f"status?{stack.section_arn}"
        self.announce(
            f"{SECTION_MACHINE_NAME} has a protected section (examples/section.asl.json): start an execution "
            "that passes the checkpoint and works inside it for 3 s"
        )
        execution_arn = stack.sfn.start_execution(
            stateMachineArn=stack.section_arn,
            name=f"demo-drain-{time.strftime('%Y%m%dT%H%M%S')}",
            input=json.dumps({"workSeconds": 3}),
        )["executionArn"]
        say(f"    execution {execution_arn}")
        wait_for(lambda: self.section_status(quiet=True)["inside"] == 1 or None, timeout=STEP_SECONDS,
                 what="the execution inside the section")  # fmt: skip

        self.announce("Switch maintenance on: new executions stop at the checkpoint, but one is still inside")
        self.api("POST", "maintenance", {"stateMachineArn": stack.section_arn, "enabled": True, "reason": "deploy"})
        status = self.section_status()
        if status.get("drained") is not False or status.get("inside") != 1:
            raise StackError(f"expected 1 inside and not drained, got {status}")

        self.announce("Wait until drained (what `sfn-pauser on --wait-drained` does): then the deploy may start")
        started = time.monotonic()
        wait_for(lambda: self.section_status(quiet=True).get("drained") or None, timeout=STEP_SECONDS,
                 what=f"{where} to be drained")  # fmt: skip
        self.section_status()
        say(f"    drained after {time.monotonic() - started:.1f} s: the execution left the section")
        if self.execution(execution_arn)["status"] not in ("RUNNING", "SUCCEEDED"):
            raise StackError(f"the execution ended {self.execution(execution_arn)['status']}")
        self.api("POST", "maintenance", {"stateMachineArn": stack.section_arn, "enabled": False})

    def section_status(self, *, quiet: bool = False) -> dict[str, Any]:
        url = f"{self.stack.api}/maintenance?" + urllib.parse.urlencode(
            {"stateMachineArn": self.stack.section_arn}, safe=":"
        )
        if not quiet:
            say(f"    -> GET {url}")
        status, answer = http("GET", url)
        if status != 200:
            raise StackError(f"GET {url} answered {status}: {answer}")
        if not quiet:
            shown = {key: answer.get(key) for key in ("maintenance", "inside", "oldestInsideAt", "drained")}
            say(f"    <- {status} {compact(shown)}")
        return dict(answer)


# ---------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 dev.py local",
        description="Run sfn-pauser locally on an embedded AWS (moto) with chalice local. "
        "Ctrl-C or SIGTERM stops everything.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_API_PORT,
        help=f"port of the REST API (chalice local) on {HOST} (default {DEFAULT_API_PORT})",
    )
    parser.add_argument(
        "--moto-port",
        type=int,
        default=0,
        help=f"port of the embedded AWS (moto server) on {HOST} (default: a free port)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="walk one execution through pause and resume, narrated, then stop (exit 0 on success)",
    )
    parser.add_argument(
        "--sweep-seconds",
        type=positive_seconds,
        metavar="SECONDS",
        help="for tests only: run the sweep this often instead of on app.py's schedule (its @app.schedule Rate), "
        "so a tag change takes effect sooner than it would deployed",
    )
    return parser.parse_args(argv)


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected more than 0 seconds, not {text}")
    return seconds


def raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted; during the clean-up after, they are ignored."""
    previous = {signum: signal.signal(signum, raise_interrupted) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    started = time.monotonic()
    code = 0
    try:
        # Leaving, signals_raise() goes first: the clean-up runs with signals ignored.
        with contextlib.ExitStack() as exits, signals_raise():
            stack = start_stack(args, exits)
            say(f"local: ready in {time.monotonic() - started:.1f}s")
            if args.demo:
                Demo(stack).run()
                say(f"\nlocal --demo: done in {time.monotonic() - started:.1f}s; stopping")
            else:
                print_banner(stack)
                returncode = stack.chalice.wait()
                raise StackError(f"chalice local exited on its own with code {returncode}")
    except Interrupted as interrupted:
        say(f"\nlocal: {interrupted} received; stopped")
        # Ctrl-C is how the plain stack is meant to end; a cut-short demo is a failure.
        code = 128 + interrupted.signum if args.demo else 0
    except StackError as error:
        say(f"\nlocal: FAILED: {error}")
        code = 1
    except Exception as error:
        traceback.print_exc()
        say(f"\nlocal: FAILED: {type(error).__name__}: {error}")
        code = 1
    say("local: chalice local and moto are stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
