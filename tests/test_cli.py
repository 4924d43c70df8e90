"""The CI client (cli/sfn_pauser_cli) as a pipeline runs it: a subprocess over real HTTP.

Two servers stand in for a deployment, both on 127.0.0.1 and started here:
- the real API: ``chalice local`` pointed at a ``moto_server`` in plain Step
  Functions mode (SendTaskSuccess and SendTaskFailure accept any token, so held
  tasks are S3 objects with made-up tokens);
- a scripted API of this file's own, which records every request, to check the
  SigV4 signature and the paths the real one rarely takes (a stalled backlog, 50+
  machines, API Gateway's own errors).
"""

import contextlib
import doctest
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.harness import ACCOUNT, REGION, ROOT, definition, wait_until

CLI_PATH = ROOT / "cli"
sys.path.insert(0, str(CLI_PATH))  # the package, whether or not `pip install -e .` has run

import sfn_pauser_cli.api  # noqa: E402
import sfn_pauser_cli.commands  # noqa: E402
import sfn_pauser_cli.main  # noqa: E402

HOST = "127.0.0.1"
STAGE = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["dev"]["environment_variables"]
BUCKET = STAGE["Bucket"]
PREFIX = STAGE["Prefix"]
STARTUP_SECONDS = 60.0
# Made-up credentials: the CLI signs with them, moto and chalice local accept anything.
ACCESS_KEY = "AKIDCLITESTEXAMPLE"
SECRET_KEY = "cli-test-secret"
SESSION_TOKEN = "cli-test-session-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without AWS settings, proxies or a configured API."""
    dropped = ("AWS_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "SFN_PAUSER_")
    env = {name: value for name, value in os.environ.items() if not name.upper().startswith(dropped)}
    env.update(
        # No ~/.aws of the machine running the tests, and no wait on an instance metadata service.
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=os.pathsep.join(filter(None, [str(CLI_PATH), env.get("PYTHONPATH")])),
    )
    env.update(extra)
    return env


def cli_environment(**extra: str) -> dict[str, str]:
    credentials = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_DEFAULT_REGION": REGION,
    }
    return clean_environment(**{**credentials, **extra})


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.stdout)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> Run:
    """``python -m sfn_pauser_cli ARGS``, as a pipeline step runs it."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "sfn_pauser_cli", *args],
        env=cli_environment() if env is None else env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    run = Run(result.returncode, result.stdout, result.stderr, time.monotonic() - started)
    assert "Traceback" not in run.stderr, run.stderr
    return run


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


# ---------------------------------------------------------------- the real API on moto


@dataclass
class Stack:
    api: str
    sfn: Any
    s3: Any

    def create_machine(self) -> str:
        name = f"Cli{uuid.uuid4().hex[:10]}"
        function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:sfn-pauser-dev-pauser"
        return self.sfn.create_state_machine(
            name=name,
            definition=definition(function_arn),
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/states-role",
            type="STANDARD",
        )["stateMachineArn"]

    def hold(self, machine_arn: str, execution: str = "run") -> str:
        """A held task as the pauser saves one: ``{Prefix}{Name}/{uuid}.json`` with a made-up token."""
        name = machine_arn.rsplit(":", 1)[1]
        key = f"{PREFIX}{name}/{uuid.uuid4()}.json"
        body = {
            "taskToken": f"fake-token-{uuid.uuid4().hex}",
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "stateMachineArn": machine_arn,
            "executionArn": f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{name}:{execution}",
        }
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(body).encode())
        return key

    def held(self, machine_arn: str) -> list[str]:
        name = machine_arn.rsplit(":", 1)[1]
        listed = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}{name}/")
        return [item["Key"] for item in listed.get("Contents", [])]

    def tags(self, machine_arn: str) -> dict[str, str]:
        tags = self.sfn.list_tags_for_resource(resourceArn=machine_arn)["tags"]
        return {tag["key"]: tag["value"] for tag in tags}

    def get(self, path: str, **query: str) -> Any:
        """The API's answer, unsigned and straight from chalice local (which does not check)."""
        url = f"{self.api}{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    moto_server = shutil.which("moto_server", path=str(os.path.dirname(sys.executable)))
    chalice = shutil.which("chalice", path=str(os.path.dirname(sys.executable)))
    assert moto_server and chalice, f"moto_server and chalice belong next to {sys.executable}"
    moto_port, api_port = free_port(), free_port()
    endpoint = f"http://{HOST}:{moto_port}"
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    processes = [subprocess.Popen([moto_server, "-H", HOST, "-p", str(moto_port)], env=clean_environment(), **quiet)]
    try:
        wait_until(
            lambda: http_status(f"{endpoint}/moto-api/data.json") == 200,
            timeout=STARTUP_SECONDS,
            what="moto_server to answer",
        )
        # Plain Step Functions mode, stated rather than assumed: SendTask* accept any token.
        config = json.dumps({"stepfunctions": {"execute_state_machine": False}}).encode()
        request = urllib.request.Request(f"{endpoint}/moto-api/config", data=config, method="POST")
        urllib.request.urlopen(request, timeout=10).close()
        aws = {
            "endpoint_url": endpoint,
            "region_name": REGION,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        sfn, s3 = boto3.client("stepfunctions", **aws), boto3.client("s3", **aws)
        s3.create_bucket(Bucket=BUCKET)

        api = f"http://{HOST}:{api_port}"
        server_env = clean_environment(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION=REGION,
        )
        command = [chalice, "local", "--no-autoreload", "--stage", "dev", "--host", HOST, "--port", str(api_port)]
        processes.append(subprocess.Popen(command, cwd=ROOT, env=server_env, **quiet))
        unknown = urllib.parse.urlencode({"stateMachineArn": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:X"})

        def serving() -> bool:
            assert processes[-1].poll() is None, f"chalice local exited with {processes[-1].returncode}"
            return http_status(f"{api}/maintenance?{unknown}") == 404

        wait_until(serving, timeout=STARTUP_SECONDS, what="chalice local to answer")
        yield Stack(api=api, sfn=sfn, s3=s3)
    finally:
        for process in reversed(processes):
            stop(process)


@pytest.fixture
def machine(stack: Stack) -> str:
    return stack.create_machine()


def test_on_tags_the_machine_and_says_so(stack, machine):
    run = cli("on", "--api", stack.api, "--state-machine", machine, "--reason", "deploy 42", "--until", "2h")

    assert run.code == 0, run.stderr
    assert f"{machine.rsplit(':', 1)[1]}: maintenance switched on (reason: deploy 42; until " in run.stdout
    tags = stack.tags(machine)
    assert tags["Maintenance"] == "true"
    assert tags["MaintenanceReason"] == "deploy 42"
    assert tags["MaintenanceUntil"] > datetime.now(UTC).strftime("%Y-%m-%dT%H:%M")


def test_the_api_url_may_come_from_the_environment(stack, machine):
    run = cli("on", "--state-machine", machine, env=cli_environment(SFN_PAUSER_API=stack.api))

    assert run.code == 0, run.stderr
    assert stack.tags(machine)["Maintenance"] == "true"


def test_status_shows_maintenance_and_what_is_held(stack, machine):
    assert cli("on", "--api", stack.api, "--state-machine", machine, "--reason", "migration").code == 0
    stack.hold(machine, "first")
    stack.hold(machine, "second")

    run = cli("status", "--api", stack.api, "--state-machine", machine)

    assert run.code == 0, run.stderr
    name = machine.rsplit(":", 1)[1]
    assert re.search(rf"^{name}: maintenance on since \S+Z by .*\(reason: migration\)$", run.stdout, re.M), run.stdout
    assert re.search(rf"^{name}: 2 held, the oldest paused at \S+Z \(\d+s ago\)$", run.stdout, re.M), run.stdout


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The status table's rows by their first column (cells are apart by two spaces or more)."""
    lines = stdout.splitlines()
    assert re.match(r"STATE MACHINE\s+MAINTENANCE\s+HELD\s+OLDEST\s+BY\s+REASON$", lines[0]), stdout
    return {cells[0]: cells for cells in (re.split(r"\s{2,}", line) for line in lines[1:])}


def test_status_without_a_machine_is_a_table_of_every_machine_in_maintenance_or_holding(stack):
    switched, holding, idle = stack.create_machine(), stack.create_machine(), stack.create_machine()
    assert cli("on", "--api", stack.api, "--state-machine", switched, "--reason", "deploy 7").code == 0
    stack.hold(holding, "first")
    stack.hold(holding, "second")

    run = cli("status", "--api", stack.api)

    assert run.code == 0, run.stderr
    rows = table_rows(run.stdout)
    name = {arn: arn.rsplit(":", 1)[1] for arn in (switched, holding, idle)}
    assert rows[name[switched]][1:4] == ["on", "0", "-"]
    by = stack.get("/maintenance", stateMachineArn=switched)["by"]
    assert rows[name[switched]][4] == by.split(":", 5)[-1] and rows[name[switched]][5] == "deploy 7"
    assert rows[name[holding]][1:3] == ["off", "2"]
    assert re.fullmatch(r"\d+s", rows[name[holding]][3]), rows[name[holding]]
    assert rows[name[holding]][4] == "-"
    assert name[idle] not in rows


def test_status_json_without_a_machine_is_the_overview_of_all_pages_as_one(stack):
    holding = stack.create_machine()
    stack.hold(holding)

    run = cli("status", "--json", "--api", stack.api)

    assert run.code == 0, run.stderr
    body = run.json()
    assert body["nextToken"] is None
    [entry] = [entry for entry in body["stateMachines"] if entry["stateMachineArn"] == holding]
    assert (entry["maintenance"], entry["paused"], entry["pausedCapped"], entry["by"]) == (False, 1, False, None)


def test_json_prints_the_api_body_as_it_is(stack, machine):
    switched = cli("on", "--json", "--api", stack.api, "--state-machine", machine)
    status = cli("status", "--json", "--api", stack.api, "--state-machine", machine)

    assert switched.code == status.code == 0, switched.stderr + status.stderr
    assert switched.json() == {
        "stateMachineArn": machine,
        "maintenance": True,
        "changed": True,
        "effectiveWithinSeconds": float(STAGE["MaintenanceCacheSeconds"]),
        **{key: stack.get("/maintenance", stateMachineArn=machine)[key] for key in ("since", "by", "reason", "until")},
    }
    assert status.json() == stack.get("/maintenance", stateMachineArn=machine)


def test_off_resumes_what_is_held(stack, machine):
    assert cli("on", "--api", stack.api, "--state-machine", machine).code == 0
    stack.hold(machine)

    run = cli("off", "--api", stack.api, "--state-machine", machine)

    assert run.code == 0, run.stderr
    assert "maintenance switched off; resumed 1, expired 0, failed 0, 0 still held" in run.stdout
    assert "Maintenance" not in stack.tags(machine)
    assert stack.held(machine) == []


def test_off_wait_ends_with_nothing_held_and_shows_progress(stack, machine):
    assert cli("on", "--api", stack.api, "--state-machine", machine).code == 0
    for number in range(3):
        stack.hold(machine, f"run-{number}")

    run = cli("off", "--wait", "--timeout", "60", "--api", stack.api, "--state-machine", machine)

    assert run.code == 0, run.stderr
    name = machine.rsplit(":", 1)[1]
    assert f"{name}: maintenance switched off; resumed 3, expired 0, failed 0, 0 still held" in run.stderr
    assert f"{name}: nothing held (3 released)" in run.stderr
    assert f"{name}: maintenance off\n{name}: 0 held\n" == run.stdout
    assert stack.held(machine) == []


def test_off_wait_json_prints_the_final_status(stack, machine):
    run = cli("off", "--wait", "--json", "--api", stack.api, "--state-machine", machine)

    assert run.code == 0, run.stderr
    assert run.json() == stack.get("/maintenance", stateMachineArn=machine)
    assert run.json()["paused"] == 0


def test_off_wait_times_out_with_exit_3_when_the_backlog_cannot_drain(stack, machine):
    from chalicelib.store import TokenStore

    assert cli("on", "--api", stack.api, "--state-machine", machine).code == 0
    # Claimed by a resumer that died: no one may send it until the sweep (not run
    # by chalice local) clears the stale claim, so it stays held.
    TokenStore(stack.s3, BUCKET, PREFIX).claim(stack.hold(machine), owner="a-resumer-that-died")

    run = cli("off", "--wait", "--timeout", "1", "--api", stack.api, "--state-machine", machine)

    assert run.code == 3, run.stderr
    assert "1 still held" in run.stderr
    assert re.search(r"timed out: Cli\w+: 1 executions still held after \ds", run.stderr), run.stderr
    assert run.stdout == ""
    assert run.seconds < 30
    assert "Maintenance" not in stack.tags(machine)


def test_on_wait_waits_until_warm_handlers_see_maintenance_and_says_why(stack, machine):
    cache = float(STAGE["MaintenanceCacheSeconds"])
    assert cache > 1, "the stage's MaintenanceCacheSeconds makes this test meaningless"

    run = cli("on", "--wait", "--timeout", "1", "--api", stack.api, "--state-machine", machine)

    assert run.code == 3, run.stderr
    assert f"waiting {cache:g}s: a warm task handler may act on the maintenance flag it cached" in run.stderr
    assert f"--timeout 1s is shorter than the {cache:g}s" in run.stderr
    assert 1 <= run.seconds < cache
    assert stack.tags(machine)["Maintenance"] == "true"


def test_an_unknown_state_machine_is_exit_1_with_the_code_and_message(stack):
    unknown = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:NoSuchMachine"

    run = cli("status", "--api", stack.api, "--state-machine", unknown)

    assert run.code == 1
    assert f"sfn-pauser: StateMachineNotFound: stateMachineArn: no state machine {unknown} (HTTP 404)" in run.stderr


def test_json_prints_an_error_body_too(stack):
    unknown = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:NoSuchMachine"

    run = cli("on", "--json", "--api", stack.api, "--state-machine", unknown)

    assert run.code == 1
    assert run.json()["Code"] == "StateMachineNotFound"


def test_resume_is_refused_while_maintenance_is_on_unless_forced(stack, machine):
    assert cli("on", "--api", stack.api, "--state-machine", machine).code == 0
    stack.hold(machine)

    refused = cli("resume", "--api", stack.api, "--state-machine", machine)
    forced = cli("resume", "--force", "--api", stack.api, "--state-machine", machine)

    assert refused.code == 1
    assert "sfn-pauser: MaintenanceIsOn: stateMachineArn: maintenance is on for" in refused.stderr
    assert "(HTTP 409)" in refused.stderr
    assert forced.code == 0, forced.stderr
    assert "resumed 1, expired 0, failed 0, 0 still held" in forced.stdout
    assert stack.held(machine) == []


def test_abort_fails_only_the_execution_named(stack, machine):
    assert cli("on", "--api", stack.api, "--state-machine", machine).code == 0
    stack.hold(machine, "keep")
    stack.hold(machine, "drop")
    name = machine.rsplit(":", 1)[1]
    drop = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{name}:drop"

    run = cli("abort", "--api", stack.api, "--state-machine", machine, "--execution", drop, "--json")

    assert run.code == 0, run.stderr
    assert run.json()["aborted"] == 1
    assert stack.get("/maintenance", stateMachineArn=machine)["paused"] == 1


def test_audit_lists_what_the_cli_did_newest_first(stack, machine):
    for command in ("on", "off"):
        assert cli(command, "--api", stack.api, "--state-machine", machine, "--reason", f"step {command}").code == 0

    as_json = cli("audit", "--json", "--api", stack.api, "--state-machine", machine)
    as_text = cli("audit", "--limit", "1", "--api", stack.api, "--state-machine", machine)

    assert as_json.code == as_text.code == 0, as_json.stderr + as_text.stderr
    assert [event["action"] for event in as_json.json()["events"]] == ["maintenance-off", "maintenance-on"]
    assert as_json.json()["events"][1]["reason"] == "step on"
    first, more = as_text.stdout.splitlines()
    assert re.fullmatch(r"\S+Z  maintenance-off  by \S+  reason=\"step off\" .*", first), first
    assert more.startswith("(older events: --next-token ")


def test_bulk_switch_reports_each_machine_and_exits_1_if_any_failed(stack):
    machines = [stack.create_machine(), stack.create_machine()]
    unknown = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:NoSuchMachine"
    arguments = [part for arn in [*machines, unknown] for part in ("--state-machine", arn)]

    switched_on = cli("on", "--api", stack.api, *arguments)
    switched_off = cli("off", "--wait", "--api", stack.api, *arguments[:4], "--json")

    assert switched_on.code == 1
    assert "NoSuchMachine: StateMachineNotFound: stateMachineArn: no state machine" in switched_on.stderr
    assert "1 of 3 state machines were not switched" in switched_on.stderr
    for arn in machines:
        assert f"{arn.rsplit(':', 1)[1]}: maintenance switched on" in switched_on.stdout
    assert switched_off.code == 0, switched_off.stderr
    assert [status["maintenance"] for status in switched_off.json()["results"]] == [False, False]
    assert all("Maintenance" not in stack.tags(arn) for arn in machines)


def test_dry_run_changes_nothing(stack, machine):
    run = cli("on", "--dry-run", "--api", stack.api, "--state-machine", machine)

    assert run.code == 0, run.stderr
    assert "dry run: would switch maintenance on; 0 held" in run.stdout
    assert "Maintenance" not in stack.tags(machine)


# ---------------------------------------------------------------- a scripted API that records


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: list[tuple[str, str]]
    body: bytes
    raw_path: str

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


Reply = tuple[int, dict[str, str], Any]


@dataclass
class ScriptedApi:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    respond: Callable[[Recorded], Reply] = lambda request: (200, {}, {})

    def of(self, method: str, path: str) -> list[Recorded]:
        return [request for request in self.requests if (request.method, request.path) == (method, path)]


@pytest.fixture
def scripted() -> Iterator[ScriptedApi]:
    with serve_scripted() as api:
        yield api


@contextlib.contextmanager
def serve_scripted() -> Iterator[ScriptedApi]:
    """The scripted API on a free port of 127.0.0.1, for the length of the ``with``."""
    api = ScriptedApi(url="")

    class Handler(BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            split = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = Recorded(
                self.command,
                split.path.removeprefix("/api"),
                dict(urllib.parse.parse_qsl(split.query)),
                list(self.headers.items()),
                self.rfile.read(length),
                self.path,
            )
            api.requests.append(request)
            status, headers, body = api.respond(request)
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_DELETE = handle_one

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer((HOST, 0), Handler)
    api.url = f"http://{HOST}:{server.server_address[1]}/api"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


SCRIPTED_MACHINE = f"arn:aws:states:eu-central-1:{ACCOUNT}:stateMachine:Orders"
AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})"
)


def signature_of(request: Recorded, region: str) -> str:
    """The SigV4 signature recomputed from the request as it arrived, with the shared secret."""
    found = AUTHORIZATION.fullmatch(request.header("Authorization") or "")
    names = found["signed"].split(";")
    signed = AWSRequest(
        method=request.method,
        url=f"http://{request.header('Host')}{request.raw_path}",
        data=request.body,
        headers={name: request.header(name) for name in names},
    )
    signed.context["timestamp"] = request.header("X-Amz-Date")
    signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN), "execute-api", region)
    return signer.signature(signer.string_to_sign(signed, signer.canonical_request(signed)), signed)


@pytest.mark.parametrize(
    ("command", "method", "path"),
    [
        (["on", "--reason", "deploy #42 (ünïcode)"], "POST", "/maintenance"),
        (["status"], "GET", "/maintenance"),
    ],
)
def test_requests_are_signed_with_sigv4_for_execute_api(scripted, command, method, path):
    scripted.respond = lambda request: (200, {}, {"stateMachineArn": SCRIPTED_MACHINE, "maintenance": True})

    run = cli(
        *command,
        "--api",
        scripted.url,
        "--state-machine",
        SCRIPTED_MACHINE,
        env=cli_environment(AWS_REGION="eu-central-1", AWS_DEFAULT_REGION="us-west-2"),
    )

    assert run.code == 0, run.stderr
    [request] = scripted.requests
    assert (request.method, request.path) == (method, path)
    found = AUTHORIZATION.fullmatch(request.header("Authorization") or "")
    assert found, request.header("Authorization")
    assert (found["key"], found["region"], found["service"]) == (ACCESS_KEY, "eu-central-1", "execute-api")
    amz_date = request.header("X-Amz-Date")
    assert re.fullmatch(r"\d{8}T\d{6}Z", amz_date) and amz_date[:8] == found["date"]
    assert request.header("X-Amz-Security-Token") == SESSION_TOKEN
    assert {"host", "x-amz-date", "x-amz-security-token"} <= set(found["signed"].split(";"))
    if method == "POST":
        assert "content-type" in found["signed"].split(";")
        assert request.json()["stateMachineArn"] == SCRIPTED_MACHINE
    else:
        assert request.query == {"stateMachineArn": SCRIPTED_MACHINE}
        assert "%3A" in request.raw_path  # AWS's strict query encoding, which API Gateway checks
    assert signature_of(request, "eu-central-1") == found["signature"]


def test_a_tampered_request_does_not_match_its_signature(scripted):
    """The check above would catch a wrong signature: change one byte of the body and it differs."""
    scripted.respond = lambda request: (200, {}, {"stateMachineArn": SCRIPTED_MACHINE, "maintenance": True})

    assert cli("on", "--api", scripted.url, "--state-machine", SCRIPTED_MACHINE).code == 0

    [request] = scripted.requests
    signed = AUTHORIZATION.fullmatch(request.header("Authorization"))["signature"]
    assert signature_of(request, REGION) == signed
    request.body = request.body.replace(b"true", b"false")
    assert signature_of(request, REGION) != signed


def overview_entry(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "stateMachineArn": f"arn:aws:states:eu-central-1:{ACCOUNT}:stateMachine:{name}",
        "maintenance": False, "since": None, "by": None, "reason": None, "until": None,
        "paused": 0, "pausedCapped": False, "oldestPausedAt": None, "oldestPausedAgeSeconds": None,
        **fields,
    }  # fmt: skip


OVERVIEW_PAGES = {
    None: (
        [overview_entry("Alpha", maintenance=True, since="2026-01-01T10:00:00.000Z", reason="deploy 9",
                        by=f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/ci-9", until="2026-01-01T12:00:00.000Z")],
        "page-2",
    ),
    "page-2": (
        [overview_entry("Bravo", paused=1000, pausedCapped=True, oldestPausedAt="2026-01-01T08:00:00.000Z",
                        oldestPausedAgeSeconds=7384.5)],
        "page-3",
    ),
    "page-3": ([overview_entry("Charlie", paused=3, oldestPausedAgeSeconds=42.0)], None),
}  # fmt: skip


def answer_overview(pages: dict[str | None, tuple[list[dict[str, Any]], str | None]]) -> Callable[[Recorded], Reply]:
    def respond(request: Recorded) -> Reply:
        entries, token = pages[request.query.get("nextToken")]
        return 200, {}, {"stateMachines": entries, "nextToken": token}

    return respond


def test_status_without_a_machine_follows_every_page_and_counts_capped_backlogs_as_at_least(scripted):
    scripted.respond = answer_overview(OVERVIEW_PAGES)

    run = cli("status", "--api", scripted.url)

    assert run.code == 0, run.stderr
    assert [request.query for request in scripted.requests] == [
        {"limit": "1000"},
        {"limit": "1000", "nextToken": "page-2"},
        {"limit": "1000", "nextToken": "page-3"},
    ]
    assert all(request.path == "/maintenance" and request.header("Authorization") for request in scripted.requests)
    rows = table_rows(run.stdout)
    assert list(rows) == ["Alpha", "Bravo", "Charlie"]
    assert rows["Alpha"] == [
        "Alpha",
        "on",
        "0",
        "-",
        "assumed-role/deployer/ci-9",
        "deploy 9; until 2026-01-01T12:00:00.000Z",
    ]
    assert rows["Bravo"] == ["Bravo", "off", "≥1000", "2h03m", "-"]
    assert rows["Charlie"] == ["Charlie", "off", "3", "42s", "-"]


def test_status_json_without_a_machine_prints_every_pages_entries_as_one_overview(scripted):
    scripted.respond = answer_overview(OVERVIEW_PAGES)

    run = cli("status", "--json", "--api", scripted.url)

    assert run.code == 0, run.stderr
    everything = [entry for entries, _ in OVERVIEW_PAGES.values() for entry in entries]
    assert run.json() == {"stateMachines": everything, "nextToken": None}


def test_status_without_a_machine_shows_one_it_cannot_read_and_exits_1(scripted):
    denied = {
        "stateMachineArn": f"arn:aws:states:eu-central-1:{ACCOUNT}:stateMachine:Denied",
        "error": {"Code": "AwsAccessDenied", "Message": "AWS refused access", "Status": 403},
    }
    scripted.respond = answer_overview({None: ([overview_entry("Alpha", paused=1), denied], None)})

    run = cli("status", "--api", scripted.url)

    assert run.code == 1
    rows = table_rows(run.stdout)
    assert rows["Alpha"][1:3] == ["off", "1"]
    assert rows["Denied"] == ["Denied", "?", "?", "?", "cannot read it: AwsAccessDenied: AWS refused access"]
    assert "1 of 2 state machines could not be read" in run.stderr


def test_status_without_a_machine_says_when_nothing_is_held_or_in_maintenance(scripted):
    scripted.respond = answer_overview({None: ([], None)})

    run = cli("status", "--api", scripted.url)

    assert run.code == 0, run.stderr
    assert run.stdout == "no state machine is in maintenance or holds executions\n"


def test_status_without_a_machine_stops_when_the_api_repeats_a_page(scripted):
    scripted.respond = answer_overview({None: ([], "again"), "again": ([], "again")})

    run = cli("status", "--api", scripted.url)

    assert run.code == 1
    assert "answered the nextToken 'again' twice" in run.stderr
    assert len(scripted.requests) == 2


def test_off_wait_nudges_a_backlog_that_stopped_shrinking(scripted):
    def respond(request: Recorded) -> Reply:
        if request.path == "/resume":
            return 200, {}, {"resumed": 2, "expired": 0, "failed": 0, "remaining": 0, "continuing": False}
        if request.method == "POST":
            return 200, {}, {
                "stateMachineArn": SCRIPTED_MACHINE, "maintenance": False, "changed": True,
                "resumed": 1, "expired": 0, "failed": 0, "remaining": 2, "continuing": False,
            }  # fmt: skip
        held = 0 if scripted.of("POST", "/resume") else 2
        return 200, {}, {"stateMachineArn": SCRIPTED_MACHINE, "maintenance": False, "paused": held}

    scripted.respond = respond

    run = cli("off", "--wait", "--timeout", "60", "--api", scripted.url, "--state-machine", SCRIPTED_MACHINE)

    assert run.code == 0, run.stderr
    assert "Orders: 2 held, 1 of 3 released so far" in run.stderr
    assert "Orders: the backlog stopped shrinking; asked the API to resume it: resumed 2" in run.stderr
    assert "Orders: nothing held (3 released)" in run.stderr
    [nudge] = scripted.of("POST", "/resume")
    assert nudge.json() == {"stateMachineArn": SCRIPTED_MACHINE}
    assert len(scripted.of("GET", "/maintenance")) >= 5  # 4 polls until the nudge, 1 after, 1 final status


def test_off_wait_goes_on_waiting_when_the_nudge_is_denied(scripted):
    """A pipeline role without POST /resume still gets its wait: the backlog drains by itself (the sweep)."""
    polls = []

    def respond(request: Recorded) -> Reply:
        if request.path == "/resume":
            return 403, {"x-amzn-ErrorType": "AccessDeniedException"}, {"Message": "not authorized"}
        if request.method == "POST":
            return 200, {}, {"stateMachineArn": SCRIPTED_MACHINE, "maintenance": False, "remaining": 1}
        polls.append(request)
        held = 1 if len(polls) <= 4 else 0
        return 200, {}, {"stateMachineArn": SCRIPTED_MACHINE, "maintenance": False, "paused": held}

    scripted.respond = respond

    run = cli("off", "--wait", "--api", scripted.url, "--state-machine", SCRIPTED_MACHINE)

    assert run.code == 0, run.stderr
    assert "asking the API to resume it failed (AccessDeniedException: not authorized)" in run.stderr
    assert "Orders: nothing held (1 released)" in run.stderr


def test_off_wait_stops_when_maintenance_is_switched_on_again(scripted):
    def respond(request: Recorded) -> Reply:
        if request.method == "POST":
            return 200, {}, {"stateMachineArn": SCRIPTED_MACHINE, "maintenance": False, "remaining": 4}
        return 200, {}, {"stateMachineArn": SCRIPTED_MACHINE, "maintenance": True, "by": "someone", "paused": 4}

    scripted.respond = respond

    run = cli("off", "--wait", "--api", scripted.url, "--state-machine", SCRIPTED_MACHINE)

    assert run.code == 1
    assert "Orders: maintenance is on again by someone, so 4 held executions stay held" in run.stderr


def test_on_wait_returns_after_effective_within_seconds_and_prints_the_final_status(scripted):
    final = {"stateMachineArn": SCRIPTED_MACHINE, "maintenance": True, "since": "2026-01-01T00:00:00.000Z", "paused": 0}

    def respond(request: Recorded) -> Reply:
        if request.method == "POST":
            return 200, {}, {"stateMachineArn": SCRIPTED_MACHINE, "maintenance": True, "effectiveWithinSeconds": 1}
        return 200, {}, final

    scripted.respond = respond

    run = cli("on", "--wait", "--json", "--api", scripted.url, "--state-machine", SCRIPTED_MACHINE)

    assert run.code == 0, run.stderr
    assert run.json() == final
    assert "waiting 1s" in run.stderr
    assert run.seconds >= 1
    switched, polled = scripted.requests
    assert polled.header("X-Amz-Date") >= switched.header("X-Amz-Date")


def test_more_than_50_machines_go_in_requests_of_50(scripted):
    def respond(request: Recorded) -> Reply:
        arns = request.json()["stateMachineArns"]
        return 200, {}, {"results": [{"stateMachineArn": arn, "maintenance": True, "changed": True} for arn in arns]}

    scripted.respond = respond
    machines = [f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:M{number}" for number in range(120)]
    arguments = [part for arn in [*machines, machines[0]] for part in ("--state-machine", arn)]

    run = cli("on", "--json", "--api", scripted.url, *arguments)

    assert run.code == 0, run.stderr
    assert [len(request.json()["stateMachineArns"]) for request in scripted.requests] == [50, 50, 20]
    assert [result["stateMachineArn"] for result in run.json()["results"]] == machines


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (403, {"x-amzn-ErrorType": "MissingAuthenticationTokenException"}, {"message": "Missing Authentication Token"},
         "NoSuchRoute: the API has no route GET /maintenance"),
        (403, {"x-amzn-ErrorType": "AccessDeniedException"},
         {"Message": "User: arn:aws:sts::1:assumed-role/ci is not authorized to perform: execute-api:Invoke"},
         "AccessDeniedException: User: arn:aws:sts::1:assumed-role/ci is not authorized"),
        (500, {"Content-Type": "text/html"}, b"<html>oops</html>", "HTTP500: <html>oops</html> (HTTP 500)"),
    ],
)  # fmt: skip
def test_api_gateway_errors_are_told_plainly(scripted, status, headers, body, expected):
    scripted.respond = lambda request: (status, headers, body)

    run = cli("status", "--api", scripted.url, "--state-machine", SCRIPTED_MACHINE)

    assert run.code == 1
    assert expected in run.stderr


def test_throttled_and_unavailable_reads_are_tried_again(scripted):
    answers = iter([(429, {}, {"message": "Too Many Requests"}), (503, {}, {"message": "Service Unavailable"})])
    ok = (200, {}, {"stateMachineArn": SCRIPTED_MACHINE, "maintenance": False, "paused": 0})
    scripted.respond = lambda request: next(answers, ok)

    run = cli("status", "--api", scripted.url, "--state-machine", SCRIPTED_MACHINE)

    assert run.code == 0, run.stderr
    assert len(scripted.requests) == 3


# ---------------------------------------------------------------- no server needed


MACHINE = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:Orders"
API = "http://127.0.0.1:9/api"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["on", "--state-machine", MACHINE], "no API URL: pass --api URL or set SFN_PAUSER_API"),
        (["on", "--api", "ftp://example.com", "--state-machine", MACHINE], "expected the stage URL"),
        (["on", "--api", API], "the following arguments are required: --state-machine"),
        (["on", "--api", API, "--state-machine", "Orders"], "expected a state machine ARN"),
        (["status", "--api", API, "--state-machine", MACHINE, "--state-machine", MACHINE + "2"], "takes one"),
        (["off", "--api", API, "--state-machine", MACHINE, "--timeout", "5"], "add --wait"),
        (["off", "--api", API, "--state-machine", MACHINE, "--wait", "--timeout", "0"], "above 0"),
        (["off", "--api", API, "--state-machine", MACHINE, "--wait", "--no-resume"], "in vain"),
        (["on", "--api", API, "--state-machine", MACHINE, "--wait", "--dry-run"], "nothing to --wait for"),
        (["on", "--api", API, "--state-machine", MACHINE, "--until", "2020-01-01T00:00:00Z"], "not in the future"),
        (["on", "--api", API, "--state-machine", MACHINE, "--until", "soon"], "expected an ISO 8601 time"),
        (["status", "--api", API, "--state-machine", MACHINE, "--wait"], "unrecognized arguments: --wait"),
        (["abort", "--api", API, "--state-machine", MACHINE], "abort needs --execution ARN (one or more) or --all"),
        (["resume", "--api", API, "--state-machine", MACHINE, "--execution", "run-1"], "expected an execution ARN"),
        (["resume", "--api", API, "--state-machine", MACHINE, "--limit", "0"], "at least 1"),
        (["pause", "--api", API, "--state-machine", MACHINE], "invalid choice: 'pause'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_usage_errors_exit_2_and_send_nothing(arguments, message):
    run = cli(*arguments)

    assert run.code == 2
    assert message in run.stderr
    assert "usage: sfn-pauser" in run.stderr


def test_no_credentials_is_exit_2_and_says_where_botocore_looked():
    env = clean_environment(AWS_DEFAULT_REGION=REGION)
    deployed = f"https://a1b2c3.execute-api.{REGION}.amazonaws.com/api"

    run = cli("status", "--api", deployed, "--state-machine", MACHINE, env=env)

    assert run.code == 2
    assert "sfn-pauser: error: no AWS credentials found" in run.stderr
    assert "aws-actions/configure-aws-credentials" in run.stderr


def test_no_region_for_a_custom_domain_is_exit_2():
    env = clean_environment(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)

    run = cli("status", "--api", "https://pauser.example.com", "--state-machine", MACHINE, env=env)

    assert run.code == 2
    assert "no region to sign for: pass --region, or set AWS_REGION" in run.stderr


@pytest.mark.parametrize("api", ["http://127.0.0.1:8000", "http://localhost:8000/api"])
def test_no_region_for_a_local_api_says_any_region_will_do_not_custom_domain(api):
    env = clean_environment(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)

    run = cli("status", "--api", api, "--state-machine", MACHINE, env=env)

    assert run.code == 2
    assert "no region to sign for: pass --region, or set AWS_REGION" in run.stderr
    assert "a local API checks no signature, so any values will do" in run.stderr
    assert "AWS_DEFAULT_REGION=us-east-1" in run.stderr
    assert "custom domain" not in run.stderr


def test_no_credentials_for_a_local_api_says_dummy_ones_will_do():
    env = clean_environment(AWS_DEFAULT_REGION=REGION)

    run = cli("status", "--api", "http://127.0.0.1:8000", "--state-machine", MACHINE, env=env)

    assert run.code == 2
    assert "no AWS credentials found to sign with; a local API checks no signature" in run.stderr
    assert "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing" in run.stderr
    assert "aws-actions" not in run.stderr


def test_a_refused_connection_is_exit_1_with_a_clear_message():
    api = f"http://{HOST}:{free_port()}/api"

    run = cli("status", "--api", api, "--state-machine", MACHINE)

    assert run.code == 1
    assert f"sfn-pauser: error: cannot reach {api}: connection refused" in run.stderr


def test_the_region_is_the_api_hosts_before_the_environments(monkeypatch):
    import botocore.session

    resolve = sfn_pauser_cli.api.resolve_region
    session = botocore.session.get_session()
    monkeypatch.setenv("AWS_REGION", "us-east-1")

    assert resolve(None, "https://a1.execute-api.eu-west-1.amazonaws.com/api", session) == "eu-west-1"
    assert resolve("ap-south-1", "https://a1.execute-api.eu-west-1.amazonaws.com/api", session) == "ap-south-1"
    assert resolve(None, "https://pauser.example.com", session) == "us-east-1"


@pytest.mark.parametrize("module", [sfn_pauser_cli.api, sfn_pauser_cli.commands, sfn_pauser_cli.main])
def test_the_examples_in_the_docstrings_hold(module):
    failed, attempted = doctest.testmod(module)

    assert attempted and not failed


def test_the_sfn_pauser_command_is_installed():
    """``python3 dev.py`` installs the project (``pip install -e .``), which makes the command."""
    command = shutil.which("sfn-pauser", path=os.path.dirname(sys.executable))
    assert command, f"no sfn-pauser next to {sys.executable}: run `python3 dev.py test`, or `pip install -e .`"

    result = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=30, env=cli_environment())

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sfn-pauser {sfn_pauser_cli.__version__}"


# -- holds, against the real API (the scripted answers are in test_cli_holds.py)


def test_hold_holds_and_release_work_against_the_real_api(stack, machine):
    stack.hold(machine, "waiting")

    taken = cli("hold", "--api", stack.api, "--state-machine", machine, "--ttl", "5m", "--reason", "deploy 9")

    assert taken.code == 0, taken.stderr
    hold_id = taken.stdout.strip()
    assert re.fullmatch(r"hold-[0-9a-f]{16}", hold_id), taken.stdout
    listed = cli("holds", "--api", stack.api, "--state-machine", machine, "--json")
    assert [hold["holdId"] for hold in json.loads(listed.stdout)["holds"]] == [hold_id]
    assert stack.get("/maintenance", stateMachineArn=machine)["heldBy"] == [hold_id]

    released = cli("release", hold_id, "--api", stack.api)

    assert released.code == 0, released.stderr
    assert "resumed 1" in released.stdout, released.stdout
    assert stack.held(machine) == []


def test_off_names_the_holds_still_on_and_off_force_ends_them_against_the_real_api(stack, machine):
    name = machine.rsplit(":", 1)[1]
    stack.hold(machine, "waiting")
    hold_id = cli("hold", "--api", stack.api, "--state-machine", machine, "--ttl", "5m").stdout.strip()

    status = cli("status", "--api", stack.api, "--state-machine", machine)
    # off --wait would only wait out its timeout while the hold keeps the execution: it says why at once.
    waiting = cli("off", "--wait", "--timeout", "60", "--api", stack.api, "--state-machine", machine)
    forced = cli("off", "--force", "--api", stack.api, "--state-machine", machine)

    assert f"{name}: maintenance on; held by {hold_id}\n" in status.stdout, status.stdout
    assert waiting.code == 1, waiting.stderr
    assert f"the switch was already off; still held by {hold_id} (release them, or --force)" in waiting.stderr
    assert f"stay held by {hold_id}; release those holds" in waiting.stderr, waiting.stderr
    assert waiting.seconds < 30
    assert forced.code == 0, forced.stderr
    assert f"ended the holds {hold_id}; resumed 1" in forced.stdout, forced.stdout
    assert stack.held(machine) == []


def test_run_holds_around_a_failing_command_and_releases_it_against_the_real_api(stack, machine):
    stack.hold(machine, "waiting")
    command = [sys.executable, "-c", "import sys; sys.exit(3)"]

    run = cli("run", "--api", stack.api, "--state-machine", machine, "--ttl", "2m", "--", *command)

    assert run.code == 3, run.stderr
    assert stack.get("/holds", stateMachineArn=machine)["holds"] == []
    assert stack.held(machine) == []  # the release resumed what the hold kept


# -- the drain wait against the real API (the scripted answers are in test_cli_drain.py)


def test_run_waits_for_the_drain_and_runs_the_command_against_the_real_api(stack, machine):
    command = [sys.executable, "-c", "print('deployed')"]

    run = cli("run", "--api", stack.api, "--state-machine", machine, "--ttl", "2m", "--drain-timeout", "60s",
              "--", *command)  # fmt: skip

    assert run.code == 0, run.stderr
    assert "drained: nobody inside the protected sections it covers" in run.stderr
    assert run.stdout == "deployed\n"
    assert stack.get("/holds", stateMachineArn=machine)["holds"] == []


def test_on_wait_drained_returns_once_the_last_execution_left_against_the_real_api(stack, machine):
    # One execution inside the protected section, as its checkpoint records it; it leaves
    # (its leave step deletes the record) only after the CLI has seen it inside.
    name = machine.rsplit(":", 1)[1]
    key = f"{PREFIX}_sfn-pauser/inside/aws/{ACCOUNT}/{REGION}/{name}/{uuid.uuid4().hex}.json"
    execution = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{name}:inside"
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    body = {"executionArn": execution, "entry": None, "section": "orders", "guards": [], "since": since}
    stack.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(body).encode())
    left = threading.Event()

    def leave_once_seen() -> None:
        # The CLI first waits effectiveWithinSeconds (10 s here), then asks every 2 s.
        time.sleep(14)
        stack.s3.delete_object(Bucket=BUCKET, Key=key)
        left.set()

    leaving = threading.Thread(target=leave_once_seen)
    leaving.start()
    run = cli("on", "--wait-drained", "--timeout", "60", "--api", stack.api, "--state-machine", machine)
    leaving.join()

    assert run.code == 0, run.stderr
    assert left.is_set()
    assert f"{name}: 1 inside" in run.stderr, run.stderr
    assert f"{name}: drained: nobody inside the protected section" in run.stderr
    assert run.stdout.endswith(f"{name}: drained\n"), run.stdout
    assert stack.tags(machine)["Maintenance"] == "true"
