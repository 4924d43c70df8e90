"""Least privilege, proven: each function runs its part of the flow as an IAM user whose
policy is the generated file for that function (prod stage), with moto enforcing IAM.

The flow: the task handler holds executions (it reads the flag from the tags the first
time and saves tokens), the REST API switches maintenance on and off and resumes and
aborts what is held, the resumer continues a drain that ran out of time, and the sweep
sends heartbeats, lifts a maintenance window whose ``until`` has passed and resumes.
Each part runs through its entry point in app.py, with ``get_services`` returning that
function's object graph built on the user's keys.

Then every action of every generated policy is removed in turn: that function's part
now meets AccessDenied for the call the action authorises. The CloudWatch Logs actions
are exempt: moto serves no Lambda logging, so nothing here calls them (their scope, the
function's own log group, is checked in test_policies.py).

Where moto's enforcement stops (shared/DESIGN.md §4), the test policies are adapted in
``for_moto``, explicitly; the scoping itself is checked statically in test_policies.py.
Under enforcement moto's interpreter cannot make its own Lambda call, so
``_invoke_lambda_function`` runs the pauser in-process as the pauser's user; the
resumer function is a stub that records continuations; and AWS's ``InvalidOutput``,
which moto never answers, is injected for chosen tokens so that the SendTaskFailure
paths run too.
"""

import contextlib
import copy
import io
import json
import threading
import zipfile
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import boto3
import botocore.session
import pytest
from botocore.loaders import create_loader
from chalice.test import Client
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.core import disable_iam_authentication, enable_iam_authentication
from moto.core.exceptions import AWSError
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
from moto.stepfunctions.parser.models import StepFunctionsParserBackend

import app as chalice_app
from chalicelib import sections
from chalicelib.arns import account_region_of, parse_state_machine_arn
from chalicelib.clients import AwsClients
from chalicelib.commands import SwitchMaintenance
from chalicelib.config import Settings
from chalicelib.deadline import Deadline
from chalicelib.services import Services
from tests.harness import ACCOUNT, MOTO_CONFIG, REGION, ROOT, definition, wait_until
from tests.moto_fidelity import make_s3_atomic

STAGE = "prod"
ENV = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"][STAGE]["environment_variables"]
BUCKET, PREFIX = ENV["Bucket"], ENV["Prefix"]
FUNCTIONS = ("pauser", "resumer", "sweep", "api_handler")
PAUSER_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:sfn-pauser-{STAGE}-pauser"
JSON = {"Content-Type": "application/json"}
# The API calls each action authorises (the rest are named as their action).
OPERATIONS = {
    "s3:ListBucket": {"ListObjectsV2"},
    "s3:DeleteObject": {"DeleteObject", "DeleteObjects"},
    "lambda:InvokeFunction": {"Invoke"},
}
# A boto3 session per user re-reads every service model; one loader serves them all.
LOADER = create_loader()


def _session_with(access_key: str, secret_key: str) -> botocore.session.Session:
    session = botocore.session.Session()
    session.register_component("data_loader", LOADER)
    session.set_credentials(access_key, secret_key)
    return session


# Set-up calls, made with IAM enforcement off (the account's root, in effect).
SETUP = boto3.session.Session(botocore_session=_session_with("testing", "testing"), region_name=REGION)


def generated(function: str) -> dict[str, Any]:
    return json.loads((ROOT / ".chalice" / f"policy-{STAGE}-{function}.json").read_text())


def operations_of(action: str) -> set[str]:
    return OPERATIONS.get(action, {action.split(":", 1)[1]})


def for_moto(policy: dict[str, Any]) -> dict[str, Any]:
    """The generated policy as moto 5.2.5 can enforce it; each change is where moto stops.

    - ``states:`` actions: moto matches them only against ``Resource: "*"``; a policy
      scoped to state machine ARNs is denied even for those machines.
    - ``lambda:InvokeFunction``: moto checks the operation's name, ``lambda:Invoke``,
      and only against ``"*"``.
    - ``s3:DeleteObject``: moto authorises DeleteObjects (one POST to the bucket)
      against the bucket's ARN; AWS authorises each key against its object ARN. The
      bucket ARN is added to the statement's resources.
    - The ``s3:prefix`` condition of ListBucket stays; moto does not evaluate S3
      condition keys.
    """
    adapted = copy.deepcopy(policy)
    for statement in adapted["Statement"]:
        actions = statement["Action"]
        if all(action.startswith("states:") for action in actions):
            statement["Resource"] = ["*"]
        if actions == ["lambda:InvokeFunction"]:
            statement["Action"], statement["Resource"] = ["lambda:Invoke"], ["*"]
        if "s3:DeleteObject" in actions:
            statement["Resource"] = [*statement["Resource"], f"arn:aws:s3:::{BUCKET}"]
    return adapted


def without(policy: dict[str, Any], action: str) -> dict[str, Any]:
    reduced = copy.deepcopy(policy)
    for statement in reduced["Statement"]:
        statement["Action"] = [granted for granted in statement["Action"] if granted != action]
    reduced["Statement"] = [statement for statement in reduced["Statement"] if statement["Action"]]
    return reduced


@dataclass
class Context:
    """The Lambda context the handlers read."""

    function: str
    seconds: float = 30.0

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:sfn-pauser-{STAGE}-{self.function}"

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


class TrippedDeadline(Deadline):
    """Not expired when first asked (the sweep's loop), expired ever after (inside the drain)."""

    def __init__(self) -> None:
        super().__init__(30)
        self._asked = 0

    def expired(self) -> bool:
        self._asked += 1
        return self._asked > 1


class World:
    """One moto account: the token bucket, a user per function, and the operator's admin keys."""

    def __init__(self, policies: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: dict[str, list[tuple[str, int, str]]] = defaultdict(list)
        self.continuations: list[dict[str, Any]] = []
        self.invalid_output: set[str] = set()
        self._done: dict[str, threading.Event] = defaultdict(threading.Event)
        self._local = threading.local()
        self._sessions: dict[str, boto3.session.Session] = {}
        iam = SETUP.client("iam")
        with disable_iam_authentication():
            SETUP.client("s3").create_bucket(Bucket=BUCKET)
            self._sessions["admin"] = self._user(iam, "operator", {"Effect": "Allow", "Action": "*", "Resource": "*"})
            for function in FUNCTIONS:
                self._sessions[function] = self._user(iam, function, policies[function]["Statement"])
            role = iam.create_role(RoleName="states", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
            self._role = role
        self.admin = self._session("admin")
        self.s3 = self.admin.client("s3")
        self.sfn = self.admin.client("stepfunctions")
        self.machines: dict[str, str] = {}
        self._create_resumer_function(role)
        monkeypatch.setattr(chalice_app, "get_services", self._services_of_current_function)
        monkeypatch.setattr(lambda_eval_utils, "_invoke_lambda_function", self._invoke_pauser)
        monkeypatch.setattr(LambdaSimpleBackend, "invoke", self._record_continuation)
        send_task_success = StepFunctionsParserBackend.send_task_success

        def answer_invalid_output(backend: Any, task_token: str, outcome: str) -> Any:
            if task_token in self.invalid_output:  # AWS's answer to an unusable output; moto never gives it
                raise AWSError("The output is not usable", exception_type="InvalidOutput")
            return send_task_success(backend, task_token, outcome)

        monkeypatch.setattr(StepFunctionsParserBackend, "send_task_success", answer_invalid_output)
        self.api = Client(chalice_app.app, stage_name=STAGE, project_dir=str(ROOT))

    # Set-up

    def _user(self, iam: Any, name: str, statements: Any) -> boto3.session.Session:
        iam.create_user(UserName=name)
        document = {"Version": "2012-10-17", "Statement": statements}
        iam.put_user_policy(UserName=name, PolicyName="generated", PolicyDocument=json.dumps(document))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        session = _session_with(key["AccessKeyId"], key["SecretAccessKey"])
        session.register("after-call", self._recorder(name))
        # One boto3 session per user: boto3 registers its client customisations on the
        # botocore session each time a boto3 session wraps it, and twice breaks S3.
        return boto3.session.Session(botocore_session=session, region_name=REGION)

    def _recorder(self, name: str) -> Any:
        def record(http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
            code = parsed.get("Error", {}).get("Code", "")
            if any(error.get("Code") == "AccessDenied" for error in parsed.get("Errors", [])):
                code = "AccessDenied"  # DeleteObjects answers 200 and denies key by key
            self.calls[name].append((model.name, http_response.status_code, code))

        return record

    def _session(self, name: str) -> boto3.session.Session:
        return self._sessions[name]

    def _create_resumer_function(self, role: str) -> None:
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("app.py", "def resumer(event, context):\n    return event\n")
        with disable_iam_authentication():
            SETUP.client("lambda").create_function(
                FunctionName=ENV["ResumerFunctionName"],
                Runtime="python3.11",
                Role=role,
                Handler="app.resumer",
                Code={"ZipFile": archive.getvalue()},
            )

    def machine(self, name: str, kind: str = "STANDARD", heartbeat_seconds: int | None = None) -> str:
        asl = json.loads(definition(PAUSER_ARN))
        if heartbeat_seconds:
            asl["States"]["MaintenanceCheckpoint"]["HeartbeatSeconds"] = heartbeat_seconds
        arn = self.sfn.create_state_machine(name=name, definition=json.dumps(asl), roleArn=self._role, type=kind)[
            "stateMachineArn"
        ]
        self.machines[name] = arn
        return arn

    # The functions, each on its own keys

    def services(self, function: str, **settings: Any) -> Services:
        """A cold container of ``function``: its own clients, caches and claim owner."""
        config = replace(Settings.from_env(ENV), **settings)
        clients = AwsClients(session=self._session(function))
        return Services.build(config, chalice_app.app.log, clients)

    def as_function(self, function: str, **settings: Any) -> "_As":
        return _As(self, function, settings)

    def _services_of_current_function(self) -> Services:
        return self.services(self._local.function, **self._local.settings)

    def _invoke_pauser(self, parameters: dict[str, Any], region: str, state_credentials: Any) -> dict[str, Any]:
        """The state machine's call of the pauser, run in-process as the pauser's user."""
        event = json.loads(parameters["Payload"])
        execution = event.get("executionArn", "")
        try:
            with self.as_function("pauser"):
                result = chalice_app.pauser(event, Context("pauser"))
            return {"StatusCode": 200, "Payload": result}
        except Exception as error:
            payload = {"errorType": type(error).__name__, "errorMessage": str(error)}
            return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": payload}
        finally:
            self._done[execution].set()

    def _record_continuation(
        self, function_name: str, qualifier: Any, body: Any, headers: Any, response_headers: Any
    ) -> bytes:
        """Stands in for LambdaSimpleBackend.invoke (bound to the world, not to the backend)."""
        self.continuations.append({"function": function_name, **json.loads(body)})
        return b""

    # What the operator and the workflows do (admin keys)

    def start(self, machine: str, name: str) -> str:
        """Start an execution and wait until the pauser's invocation for it has returned."""
        arn = f"{self.machines[machine].replace(':stateMachine:', ':execution:')}:{name}"
        done = self._done[arn]  # made here, before the interpreter's thread can look for it
        self.sfn.start_execution(stateMachineArn=self.machines[machine], name=name, input=json.dumps({"n": name}))
        assert done.wait(10), f"the pauser was not invoked for {name}"
        return arn

    def tag(self, machine: str, **tags: str) -> None:
        self.sfn.tag_resource(
            resourceArn=self.machines[machine], tags=[{"key": key, "value": value} for key, value in tags.items()]
        )

    def tags(self, machine: str) -> dict[str, str]:
        listed = self.sfn.list_tags_for_resource(resourceArn=self.machines[machine])["tags"]
        return {tag["key"]: tag["value"] for tag in listed}

    def held(self, machine: str) -> list[dict[str, Any]]:
        listed = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}{machine}/", Delimiter="/")
        return [
            json.loads(self.s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())
            for item in listed.get("Contents", [])
        ]

    def token_of(self, machine: str, execution: str) -> str:
        return next(body["taskToken"] for body in self.held(machine) if body.get("executionArn") == execution)

    def described(self, execution: str) -> dict[str, Any]:
        return self.sfn.describe_execution(executionArn=execution)

    def finished(self, execution: str) -> dict[str, Any]:
        """The execution once it has left RUNNING (moto moves on from a sent token on its own thread)."""
        return wait_until(
            lambda: (found := self.described(execution))["status"] != "RUNNING" and found,
            timeout=10,
            what=f"{execution} to finish",
        )

    def finish(self) -> None:
        """Fail what is still held, so no execution is left waiting on a token."""
        for machine in self.machines:
            for body in self.held(machine):
                with contextlib.suppress(self.sfn.exceptions.ClientError):
                    self.sfn.send_task_failure(taskToken=body["taskToken"], error="TestOver")

    # What the tests read

    def denied(self, function: str) -> set[str]:
        return {operation for operation, status, code in self.calls[function] if status == 403 or "Denied" in code}

    def called(self, function: str) -> set[str]:
        return {operation for operation, _, _ in self.calls[function]}

    def post(self, path: str, body: dict[str, Any]) -> Any:
        with self.as_function("api_handler"):
            return self.api.http.post(path, headers=JSON, body=json.dumps(body))

    def get(self, path: str) -> Any:
        with self.as_function("api_handler"):
            return self.api.http.get(path)


class _As:
    """Runs the app's entry points as ``function`` on this thread."""

    def __init__(self, world: World, function: str, settings: dict[str, Any]) -> None:
        self._world, self._function, self._settings = world, function, settings

    def __enter__(self) -> None:
        local = self._world._local
        self._saved = (getattr(local, "function", None), getattr(local, "settings", {}))
        local.function, local.settings = self._function, self._settings

    def __exit__(self, *_: Any) -> None:
        self._world._local.function, self._world._local.settings = self._saved


@pytest.fixture
def world_of(monkeypatch):
    """Build a moto account whose function users hold the given policies; IAM is enforced inside."""
    worlds = []

    def build(policies: dict[str, dict[str, Any]]) -> World:
        world = World(policies, monkeypatch)
        worlds.append(world)
        return world

    make_s3_atomic()
    with mock_aws(config=MOTO_CONFIG), enable_iam_authentication():
        yield build
        for world in worlds:
            world.finish()


def full_policies() -> dict[str, dict[str, Any]]:
    return {function: for_moto(generated(function)) for function in FUNCTIONS}


# Each function's part of the flow. Each asserts what the positive test needs only when
# ``strict``; with an action removed, the part runs on and the denial is what is checked.


def attempt(strict: bool, call: Any) -> Any:
    """Run an entry point; with an action removed it may raise (the denial is recorded)."""
    if strict:
        return call()
    try:
        return call()
    except Exception:
        return {}


def pauser_part(world: World, strict: bool) -> None:
    """The task handler: holds while maintenance is on, proceeds and resumes after a lift."""
    world.machine("Orders")
    world.tag("Orders", Maintenance="true")  # as `aws stepfunctions tag-resource` would
    held = world.start("Orders", "held")  # first sight: reads the tags, mirrors them, saves
    if strict:
        assert world.described(held)["status"] == "RUNNING"  # waits on its token
        assert [body["executionArn"] for body in world.held("Orders")] == [held]
    lift = {"stateMachineArn": world.machines["Orders"], "enabled": False, "resume": False}
    lifted = world.post("/maintenance", lift)
    if strict:
        assert lifted.status_code == 200, lifted.body
    # Out of time at once: proceeds, and hands the held one on to the resumer. Invoked
    # directly, with a token no execution waits on (AWS: answered already), so that the
    # hand-on does not hang on the interpreter's timing.
    rushing = {"taskToken": "rushed-" + "t" * 32, "stateMachineArn": world.machines["Orders"]}
    with world.as_function("pauser"):
        rushed = attempt(strict, lambda: chalice_app.pauser(rushing, Context("pauser", 0)))
    then = world.start("Orders", "then")  # proceeds, and resumes the held one itself
    with world.as_function("pauser"), pytest.raises(Exception, match="stateMachineArn"):
        # A malformed Payload: the handler fails its own Task (SendTaskFailure) and raises.
        chalice_app.pauser(
            {"taskToken": "t" * 32, "stateMachineArn": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:"},
            Context("pauser"),
        )
    if strict:
        assert rushed == {"status": "proceeding", "resumed_tokens": 0}, rushed
        for execution in (held, then):
            assert world.finished(execution)["status"] == "SUCCEEDED"
        assert world.held("Orders") == []
        assert [(c["function"], c["generation"]) for c in world.continuations] == [(ENV["ResumerFunctionName"], 1)]


def api_part(world: World, strict: bool) -> None:
    """The REST API: switch on, status, abort one, switch off (out of time), resume."""
    arn = world.machine("Billing")
    switched = world.post("/maintenance", {"stateMachineArn": arn, "enabled": True, "reason": "db migration"})
    kept = world.start("Billing", "kept")
    aborted = world.start("Billing", "aborted")
    status = world.get(f"/maintenance?stateMachineArn={arn}")
    abort = world.post("/abort", {"stateMachineArn": arn, "executionArns": [aborted]})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chalice_app, "_api_deadline", lambda: Deadline(0))
        lifted = world.post("/maintenance", {"stateMachineArn": arn, "enabled": False})
    resumed = world.post("/resume", {"stateMachineArn": arn})
    if strict:
        assert switched.status_code == 200 and switched.json_body["maintenance"] is True, switched.body
        assert status.json_body["maintenance"] is True and status.json_body["paused"] == 2, status.body
        assert abort.json_body["aborted"] == 1, abort.body
        assert world.finished(aborted)["status"] == "FAILED"
        assert lifted.json_body["continuing"] is True, lifted.body
        assert world.continuations and world.continuations[0]["stateMachineArn"] == arn
        assert resumed.json_body["resumed"] == 1, resumed.body
        assert world.finished(kept)["status"] == "SUCCEEDED"
        assert world.tags("Billing") == {}
        assert world.held("Billing") == []


def resumer_part(world: World, strict: bool) -> None:
    """The resumer: a drain out of time continues itself, the next one finishes the backlog."""
    arn = world.machine("Shipping")
    world.tag("Shipping", Maintenance="true")
    ok, unusable = world.start("Shipping", "ok"), world.start("Shipping", "unusable")
    if strict:
        assert len(world.held("Shipping")) == 2
    world.invalid_output.add(world.token_of("Shipping", unusable))
    with world.as_function("resumer"):
        first = attempt(strict, lambda: chalice_app.resumer({"stateMachineArn": arn}, Context("resumer", 0)))
        second = attempt(
            strict, lambda: chalice_app.resumer({"stateMachineArn": arn, "generation": 1}, Context("resumer"))
        )
    if strict:
        assert first["continuing"] is True and world.continuations[0]["generation"] == 1
        assert second == {**second, "resumed": 1, "failed": 1, "remaining": 0}
        assert world.finished(ok)["status"] == "SUCCEEDED"
        assert world.finished(unusable)["error"] == "SfnPauser.InvalidOutput"
        assert world.held("Shipping") == []


def sweep_part(world: World, strict: bool) -> None:
    """The sweep: heartbeats while on, lifts a window whose ``until`` passed, resumes."""
    # HeartbeatHeldTasks is for checkpoints with HeartbeatSeconds (moto refuses others' heartbeats).
    arn = world.machine("Invoices", heartbeat_seconds=3600)
    world.tag("Invoices", Maintenance="true")
    beat, unusable = world.start("Invoices", "beat"), world.start("Invoices", "unusable")
    world.invalid_output.add(world.token_of("Invoices", unusable))
    # One execution counted inside a protected section: the sweep asks whether it has ended
    # (this one never existed, so it is counted out).
    inside = arn.replace(":stateMachine:", ":execution:") + ":gone"
    world.services("pauser").sections.enter(parse_state_machine_arn(arn), inside, None, "orders", ())
    event = {
        "version": "0",
        "id": "sweep-1",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": datetime.now(UTC).isoformat(),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/sweep"],
        "detail": {},
    }
    with (
        world.as_function("sweep", heartbeat_held_tasks=True),
        mock.patch.object(sections, "STALE_AFTER", timedelta(0)),
    ):
        beats = attempt(strict, lambda: chalice_app.sweep(event, Context("sweep")))
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    world.tag("Invoices", MaintenanceUntil=past)
    sweeper = world.services("sweep").sweeper
    home = account_region_of(Context("sweep").invoked_function_arn)
    lifted = attempt(strict, lambda: sweeper.sweep(TrippedDeadline(), home).as_dict())  # lifts, then out of time
    with world.as_function("sweep"):
        drained = attempt(strict, lambda: chalice_app.sweep(event, Context("sweep")))
    # A lift overtaken by a pipeline's switch on: the pipeline's TagResource lands
    # before the sweep's UntagResource, so the sweep puts the tags back to what the
    # switch that took effect last says (it never switches maintenance on itself).
    overtaken = world.machine("Refunds")
    world.tag("Refunds", Maintenance="true", MaintenanceUntil=past)
    pipeline = world.services("api_handler").control
    lifting = world.services("sweep")
    switched_on: list[Any] = []

    def pipeline_switches_on(**_: Any) -> None:
        if not switched_on:
            command = SwitchMaintenance.turn(parse_state_machine_arn(overtaken), True, reason="deploy", resume=False)
            switched_on.append(pipeline.switch(command.machines[0], command, "ci", Deadline(10)))

    attempt(strict, lambda: lifting.flag.refresh(parse_state_machine_arn(overtaken)))  # known by its mirror
    lifting.clients.sfn(REGION).meta.events.register("before-call.sfn.UntagResource", pipeline_switches_on)
    raced = attempt(strict, lambda: lifting.sweeper.sweep(Deadline(10), home).as_dict())
    if strict:
        assert switched_on and raced["lifted"] == [overtaken], raced
        assert world.tags("Refunds").get("Maintenance") == "true"
        assert beats["heartbeats"] == 2, beats
        assert lifted["lifted"] == [arn] and world.tags("Invoices") == {}
        assert world.continuations and world.continuations[0]["stateMachineArn"] == arn
        assert drained["resumed"] == 1, drained
        assert world.finished(beat)["status"] == "SUCCEEDED"
        assert world.finished(unusable)["error"] == "SfnPauser.InvalidOutput"
        assert world.held("Invoices") == []


PARTS = {"pauser": pauser_part, "api_handler": api_part, "resumer": resumer_part, "sweep": sweep_part}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_runs_its_part_of_the_flow_on_exactly_its_generated_policy(world_of, function):
    world = world_of(full_policies())

    PARTS[function](world, strict=True)

    for user in FUNCTIONS:
        assert world.denied(user) == set(), f"{user} was denied {world.denied(user)}"
    # Every action of the function's policy was used, so removing it below is a real test.
    unused = [
        action
        for statement in generated(function)["Statement"]
        for action in statement["Action"]
        if not action.startswith("logs:") and not operations_of(action) & world.called(function)
    ]
    assert unused == []


CASES = [
    pytest.param(function, action, id=f"{function}-{action}")
    for function in FUNCTIONS
    for statement in generated(function)["Statement"]
    for action in statement["Action"]
    # Logs are exempt: nothing in moto writes a Lambda function's logs.
    if not action.startswith("logs:")
]


@pytest.mark.parametrize(("function", "action"), CASES)
def test_removing_any_single_action_makes_that_functions_part_fail_with_access_denied(world_of, function, action):
    policies = full_policies()
    policies[function] = for_moto(without(generated(function), action))
    world = world_of(policies)

    PARTS[function](world, strict=False)

    assert world.denied(function) & operations_of(action), (
        f"{function} without {action}: denied {world.denied(function)}, called {world.called(function)}"
    )


def test_the_task_handler_cannot_tag_a_state_machine(world_of):
    world = world_of(full_policies())
    arn = world.machine("Orders")
    sfn = world.services("pauser").clients.sfn(REGION)

    for attempt in (
        lambda: sfn.tag_resource(resourceArn=arn, tags=[{"key": "Maintenance", "value": "true"}]),
        lambda: sfn.untag_resource(resourceArn=arn, tagKeys=["Maintenance"]),
    ):
        with pytest.raises(sfn.exceptions.ClientError) as denied:
            attempt()
        assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert world.tags("Orders") == {}


def test_the_api_rejects_an_express_state_machine_with_400_not_standard_workflow(world_of):
    world = world_of(full_policies())
    arn = world.machine("Quick", kind="EXPRESS")

    response = world.post("/maintenance", {"stateMachineArn": arn, "enabled": True})

    assert response.status_code == 400, response.body
    assert response.json_body["Code"] == "NotStandardWorkflow"
    assert "stateMachineArn" in response.json_body["Message"]
    assert world.tags("Quick") == {}


def test_the_api_reads_an_ended_holds_history_on_its_generated_policy(world_of):
    world = world_of(full_policies())
    arn = world.machine("Ledger")
    hold_id = world.post("/holds", {"stateMachineArns": [arn], "ttlSeconds": 600}).json_body["holdId"]
    with world.as_function("api_handler"):
        assert world.api.http.delete(f"/holds/{hold_id}").json_body["released"] is True

    first = world.get(f"/holds/{hold_id}/audit?limit=1")
    rest = world.get(f"/holds/{hold_id}/audit?nextToken={first.json_body['nextToken']}")

    assert first.status_code == rest.status_code == 200, first.body + rest.body
    assert [event["action"] for event in first.json_body["events"] + rest.json_body["events"]] == ["released", "hold"]
    assert world.denied("api_handler") == set()


def test_a_hold_history_the_role_may_not_list_is_a_403_not_a_500(world_of):
    policies = full_policies()
    policies["api_handler"] = for_moto(without(generated("api_handler"), "s3:ListBucket"))
    world = world_of(policies)
    arn = world.machine("Ledger")
    hold_id = world.post("/holds", {"stateMachineArns": [arn], "ttlSeconds": 600}).json_body["holdId"]

    response = world.get(f"/holds/{hold_id}/audit")

    assert (response.status_code, response.json_body["Code"]) == (403, "AwsAccessDenied"), response.body
