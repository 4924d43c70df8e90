#!/usr/bin/env python3
"""Run sfn-pauser locally: an embedded AWS (moto) plus ``chalice local``.

    python3 dev.py local                 the stack, until Ctrl-C
    python3 dev.py local --demo          the stack, one execution held and resumed, then exit
    python3 dev.py local --port 8001     chalice local on another port

One process holds moto's server, with real Step Functions executions, and the
task handler: moto's Lambda backend runs the Chalice ``pauser`` handler in this
process. ``chalice local`` serves the REST API in a subprocess. Both reach moto
through ``AWS_ENDPOINT_URL`` with dummy credentials, so nothing touches AWS.
Ctrl-C (or SIGTERM) stops everything.
"""

import argparse
import contextlib
import json
import logging
import os
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
REGION = "us-east-1"
STAGE = "dev"
MACHINE_NAME = "Orders"
DEFAULT_API_PORT = 8000
STARTUP_SECONDS = 60.0
STEP_SECONDS = 20.0
STOP_SECONDS = 5.0
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

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
    function_arn: str
    bucket: str
    prefix: str
    chalice: "subprocess.Popen[str]"
    sfn: Any
    s3: Any

    @property
    def folder(self) -> str:
        return f"{self.prefix}{MACHINE_NAME}/"


# ---------------------------------------------------------------- output


_print_lock = threading.Lock()


def say(text: str = "") -> None:
    with _print_lock:
        print(text, flush=True)


def relay(stream: Any, label: str) -> None:
    """Copy a subprocess's output line by line, labelled, until it closes."""
    for line in stream:
        say(f"  {label} | {line.rstrip()}")


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
    return f"{stack.api}/maintenance?" + urllib.parse.urlencode(
        {"stateMachineArn": stack.machine_arn}, safe=":"
    )


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


def route_lambda_to_chalice(stack: contextlib.ExitStack) -> None:
    """moto's Lambda backend runs the app's functions here, through Chalice's test client."""
    from chalice.test import Client
    from moto.awslambda_simple.models import LambdaSimpleBackend

    import app as chalice_app
    from tests.harness import FUNCTION_NAME, route_lambda_to
    from tests.moto_fidelity import make_s3_atomic

    make_s3_atomic()

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


def create_resources(sfn: Any, s3: Any, iam: Any, lambda_: Any, bucket: str) -> tuple[str, str]:
    """The bucket, the pauser function and a demo workflow; returns (function ARN, machine ARN)."""
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
    return function_arn, machine_arn


def start_chalice_local(
    port: int, env: dict[str, str], stack: contextlib.ExitStack
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
    relayer = threading.Thread(target=relay, args=(process.stdout, "api"), daemon=True)
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
            raise StackError(
                f"chalice local exited with code {stack.chalice.returncode} (its output is above)"
            )
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
    route_lambda_to_chalice(exits)

    import boto3

    def client(service: str) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=endpoint)

    sfn, s3 = client("stepfunctions"), client("s3")
    bucket = settings["Bucket"]
    function_arn, machine_arn = create_resources(sfn, s3, client("iam"), client("lambda"), bucket)
    function_name = function_arn.rsplit(":", 1)[-1]
    say(f"local: created bucket {bucket}, function {function_name}, state machine {MACHINE_NAME}")

    api = f"http://{HOST}:{args.port}"
    chalice = start_chalice_local(args.port, dict(os.environ), exits)
    say(f"local: chalice local (pid {chalice.pid}) starting on {api}")
    stack = Stack(
        endpoint, api, machine_arn, function_arn, bucket, settings.get("Prefix", ""), chalice, sfn, s3
    )
    wait_until_serving(stack)
    return stack


def print_banner(stack: Stack) -> None:
    arn = stack.machine_arn
    aws = (
        "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 "
        f"aws --endpoint-url {stack.endpoint}"
    )
    post = f"curl -s -X POST {stack.api}/{{path}} -H 'Content-Type: application/json' -d '{{body}}'"
    switch_on = post.format(
        path="maintenance",
        body=compact({"stateMachineArn": arn, "enabled": True, "reason": "db migration"}),
    )
    switch_off = post.format(path="maintenance", body=compact({"stateMachineArn": arn, "enabled": False}))
    execution = arn.replace(":stateMachine:", ":execution:") + ":order-1"
    cache = stage_environment().get("MaintenanceCacheSeconds", "the default")
    say(
        f"""
sfn-pauser is running locally (stage {STAGE}); nothing here talks to AWS.
  moto endpoint   {stack.endpoint}
  REST API        {stack.api}
  state machine   {arn}
  pauser function {stack.function_arn}
  token folder    s3://{stack.bucket}/{stack.folder}

Switch maintenance on:
  {switch_on}
Status (paused count, who, why):
  curl -s '{status_url(stack)}'
Start an execution (it is held while maintenance is on):
  {aws} stepfunctions start-execution --state-machine-arn {arn} --name order-1 --input '{{"order": 1}}'
  {aws} stepfunctions describe-execution --execution-arn {execution}
  {aws} s3 ls s3://{stack.bucket}/{stack.folder}
Switch maintenance off (resumes what is held):
  {switch_off}
Resume what is held (409 while maintenance is on, unless "force": true):
  {post.format(path="resume", body=compact({"stateMachineArn": arn}))}

The pauser caches the flag for MaintenanceCacheSeconds={cache}s: an execution that reaches the checkpoint
that soon after a switch may still see the old state. A token saved while maintenance was being lifted is
resumed by the handler's re-check after saving; the scheduled sweep (not run by chalice local) is the backstop.
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
        if status != 200:
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

        [key] = wait_for(
            held, timeout=STEP_SECONDS, what=f"a held token under s3://{stack.bucket}/{stack.folder}"
        )
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
    return parser.parse_args(argv)


def raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted; during the clean-up after, they are ignored."""
    previous = {
        signum: signal.signal(signum, raise_interrupted) for signum in (signal.SIGINT, signal.SIGTERM)
    }
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
