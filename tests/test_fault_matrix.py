"""The fault matrix: every AWS call of every entry point, under every kind of fault.

Each entry point is run once cleanly at collection time, and the calls it makes
are recorded as *call sites* (``s3.PutObject[claims]``: the operation, and for
S3 which folder the key is in: ``held`` for the machines' token folders, else
the control folder's part, such as ``claims`` or ``tokens``, the token index).
The matrix is every (entry point, call site, fault) with the five faults of
:mod:`tests.fault_injection`, so a new call in the code is a new row without
anyone writing a test for it. The matrix holds
725 cells (145 call sites of 20 entry points, 5 faults each); a test keeps this
figure honest, so a new call site means updating it here and in docs/reliability.md.

A cell runs the entry point with the fault on that call site (for the pauser,
during its first invocation only; the checkpoint's ``Retry`` invokes it again),
clears the fault, repeats an API call whose answer was an error or said work
remains (as a caller would), runs one sweep, and then asserts:

- no execution fails: the checkpoint raises nothing but ``SfnPauser.Unavailable``
  and never sends SendTaskFailure for its own token;
- no token is lost: each one is answered at AWS or still held in its folder;
- none is sent twice (:mod:`tests.aws_model` counts repeats across calls);
- none is stranded: what should run again after one sweep has been answered;
- the answer says what happened: an HTTP error is 503, 403 or 502 with a
  ``Code``, never 500; a report's counts match what reached AWS; a handler's
  error is one of chalicelib.errors.

Real executions (moto's interpreter, examples/checkpoint.asl.json) run where an
execution is the point (the pauser); elsewhere moto's plain mode holds made-up
tokens that the AWS model knows as issued in us-east-1.
"""

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend

import app as chalice_app
from chalicelib.arns import parse_state_machine_arn
from chalicelib.events import CheckpointEvent
from tests import harness
from tests.aws_model import AwsModel, count_state_size_in_utf8_bytes
from tests.conftest import BUCKET, PREFIX
from tests.fault_injection import FAULT_KINDS, Call, FaultInjector
from tests.harness import ACCOUNT, MOTO_CONFIG, REGION, ROOT, wait_until
from tests.moto_fidelity import make_s3_atomic

CONTROL = f"{PREFIX}_sfn-pauser/"
PASS = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})
ROLE = f"arn:aws:iam::{ACCOUNT}:role/states-role"
HELD = 3
TRANSIENT = ("throttling", "5xx", "timeout", "lost-response")
HTTP_ERROR_FOR = {"throttling": 503, "5xx": 503, "timeout": 503, "lost-response": 503, "denied": 403}


# -- the world a cell runs in


@dataclass
class Invocation:
    error: str | None = None


@dataclass
class World:
    client: Client
    model: AwsModel
    faults: FaultInjector
    s3: Any
    sfn: Any
    machine: str = ""
    tokens: list[str] = field(default_factory=list)
    executions: list[str] = field(default_factory=list)
    pauser_runs: list[Invocation] = field(default_factory=list)
    in_flight: int = 0
    clear_after_first_pauser_run: bool = False
    hold_id: str = ""

    def api(self, method: str, path: str, body: Any = None) -> Any:
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs = {"headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}
        return self.client.http.request(method, path, **kwargs)

    def sweep(self) -> Any:
        event = self.client.events.generate_cw_event("aws.events", "Scheduled Event", {}, [], region=REGION)
        return self.client.lambda_.invoke("sweep", event).payload

    def held(self, name: str = "Orders") -> dict[str, str]:
        """The machine's folder: key -> the token it holds."""
        listed = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}{name}/")
        return {
            item["Key"]: json.loads(self.s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())["taskToken"]
            for item in listed.get("Contents", [])
        }

    def status(self, execution: str) -> str:
        return str(self.sfn.describe_execution(executionArn=execution)["status"])


@contextmanager
def world(interpreter: bool, **stage_env: str) -> Iterator[World]:
    """A fresh AWS (moto), the dev stage's handlers, the AWS model and the fault injector."""
    make_s3_atomic()
    count_state_size_in_utf8_bytes()
    project = json.loads((ROOT / ".chalice" / "config.json").read_text())
    variables = {**project["stages"]["dev"]["environment_variables"], **stage_env}
    shared = harness.shared_session()
    with (
        pytest.MonkeyPatch.context() as patch,
        mock_aws(config=MOTO_CONFIG) if interpreter else mock_aws(),
        AwsModel().applied() as model,
        FaultInjector.installed() as faults,
    ):
        for name, value in variables.items():
            patch.setenv(name, value)
        # Every session would read botocore's service models from disk again (a tenth
        # of a second a client, most of a cell's time); the product's and ours share one.
        patch.setattr(boto3.session, "Session", lambda *args, **kwargs: shared)
        patch.setattr(boto3, "DEFAULT_SESSION", shared)
        if stage_env:
            patch.setattr("chalice.cli.factory.CLIFactory.load_project_config", lambda self: _with(project, stage_env))
        chalice_app._services.clear()
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        with Client(chalice_app.app, stage_name="dev", project_dir=str(ROOT)) as client:
            here = World(client, model, faults, s3, boto3.client("stepfunctions", region_name=REGION))
            if interpreter:
                _route_lambda(here, patch)
            try:
                yield here
            finally:
                chalice_app._services.clear()


def _with(project: dict[str, Any], stage_env: dict[str, str]) -> dict[str, Any]:
    project["stages"]["dev"]["environment_variables"].update(stage_env)
    return project


def _route_lambda(here: World, patch: pytest.MonkeyPatch) -> None:
    """moto's Lambda runs our handlers; each pauser run is recorded, and the first one's end clears the faults."""

    def run(function_name: str, event: Any) -> Any:
        name = function_name.removeprefix("sfn-pauser-dev-")
        if name != "pauser":
            return here.client.lambda_.invoke(name, event).payload
        invocation = Invocation()
        here.pauser_runs.append(invocation)
        here.in_flight += 1
        try:
            return here.client.lambda_.invoke(name, event).payload
        except Exception as error:
            invocation.error = type(error).__name__
            raise
        finally:
            if here.clear_after_first_pauser_run and len(here.pauser_runs) == 1:
                here.faults.clear()
            here.in_flight -= 1

    patch.setattr(LambdaSimpleBackend, "invoke", harness.route_lambda_to(run))
    iam = boto3.client("iam", region_name=REGION)
    function_arn = harness.create_pauser_function(iam, boto3.client("lambda", region_name=REGION))
    here.machine = here.sfn.create_state_machine(
        name="Orders", definition=harness.definition(function_arn), roleArn=ROLE
    )["stateMachineArn"]


def _plain_machine(here: World, on: bool) -> None:
    here.machine = here.sfn.create_state_machine(name="Orders", definition=PASS, roleArn=ROLE)["stateMachineArn"]
    if on:
        _ok(here.api("POST", "/maintenance", {"stateMachineArn": here.machine, "enabled": True, "reason": "deploy"}))


def _seed_tokens(here: World) -> None:
    """Held tokens as a checkpoint would have saved them, issued (for the model) in us-east-1."""
    store = harness.container(BUCKET, PREFIX).store
    machine = parse_state_machine_arn(here.machine)
    for n in range(HELD):
        token = f"token-{n}-{'x' * 40}"
        here.model.issue(token, REGION)
        store.save(CheckpointEvent(task_token=token, state_machine=machine, execution_arn=f"{here.machine}:run-{n}"))
        here.tokens.append(token)


def _ok(response: Any) -> Any:
    assert response.status_code == 200, response.body
    return response.json_body


# -- the entry points: how each is set up, run once, and what must hold after it


@dataclass(frozen=True)
class EntryPoint:
    name: str
    interpreter: bool
    arrange: Callable[[World], None]
    act: Callable[[World], Any]
    stage_env: dict[str, str] = field(default_factory=dict)
    # After the fault, one clean repeat (if the answer was an error) and one sweep:
    # True when every held token must have been answered, False when all must still be held.
    releases: bool = True
    aborts: bool = False
    route: tuple[str, str] | None = None  # (method, path) of an API entry point
    # The fault hits only this many calls of its site (None: every call until cleared). An entry
    # whose site is reached in a later pauser run (a leave step) cannot clear after the first run.
    faulted_calls: int | None = None
    section: bool = False  # the machine has a protected section: nobody may stay counted inside


def _hold_real_executions(here: World, count: int) -> None:
    here.sfn.tag_resource(resourceArn=here.machine, tags=[{"key": "Maintenance", "value": "true"}])
    for _ in range(count):
        _start(here)
    wait_until(lambda: len(here.held()) == count and here.in_flight == 0, what=f"{count} held executions")
    here.tokens = list(here.held().values())


def _start(here: World) -> str:
    execution = here.sfn.start_execution(
        stateMachineArn=here.machine, name=f"run-{len(here.executions)}", input=json.dumps({"n": len(here.executions)})
    )["executionArn"]
    here.executions.append(execution)
    return execution


def _arrange_pauser_on(here: World) -> None:
    here.sfn.tag_resource(resourceArn=here.machine, tags=[{"key": "Maintenance", "value": "true"}])
    here.clear_after_first_pauser_run = True


def _arrange_pauser_off(here: World) -> None:
    _hold_real_executions(here, 2)
    _ok(here.api("POST", "/maintenance", {"stateMachineArn": here.machine, "enabled": False, "resume": False}))
    here.clear_after_first_pauser_run = True


def _act_pauser(here: World) -> None:
    execution = _start(here)

    def settled() -> bool:
        # A run that raised SfnPauser.Unavailable is retried: wait for the run after it.
        if here.in_flight or not here.pauser_runs:
            return False
        return here.status(execution) != "RUNNING" or (here.pauser_runs[-1].error is None and _holds(here, execution))

    wait_until(settled, timeout=30, what="the execution to be held or finished")


def _arrange_section(here: World) -> None:
    """The example with a protected section (examples/section.asl.json), maintenance off."""
    definition = (ROOT / "examples" / "section.asl.json").read_text()
    function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:sfn-pauser-dev-pauser"
    here.machine = here.sfn.create_state_machine(
        name="Sections", definition=definition.replace("${PauserFunctionArn}", function_arn), roleArn=ROLE
    )["stateMachineArn"]


def _act_section(here: World) -> None:
    execution = here.sfn.start_execution(
        stateMachineArn=here.machine, name=f"run-{len(here.executions)}", input=json.dumps({"workSeconds": 0})
    )["executionArn"]
    here.executions.append(execution)
    wait_until(lambda: here.status(execution) != "RUNNING", timeout=60, what="the execution through its section")


def _inside(here: World) -> list[str]:
    listed = here.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{CONTROL}inside/")
    return [item["Key"] for item in listed.get("Contents", [])]


def _holds(here: World, execution: str) -> bool:
    return here.model.latest_token(execution) in here.held().values()


def _arrange_resumer(here: World) -> None:
    _plain_machine(here, on=False)
    _seed_tokens(here)


def _act_resumer(here: World) -> Any:
    return here.client.lambda_.invoke("resumer", {"stateMachineArn": here.machine, "generation": 1}).payload


def _arrange_sweep(here: World) -> None:
    # One machine lifted with the AWS CLI while its mirror still says on (the sweep lets it
    # go), one still in maintenance whose held tasks get heartbeats (they must stay held).
    _plain_machine(here, on=True)
    _seed_tokens(here)
    here.sfn.untag_resource(resourceArn=here.machine, tagKeys=["Maintenance"])
    kept = here.sfn.create_state_machine(name="Kept", definition=PASS, roleArn=ROLE)["stateMachineArn"]
    _ok(here.api("POST", "/maintenance", {"stateMachineArn": kept, "enabled": True}))
    store = harness.container(BUCKET, PREFIX).store
    for n in range(2):
        token = f"kept-{n}-{'y' * 40}"
        here.model.issue(token, REGION)
        store.save(CheckpointEvent(task_token=token, state_machine=parse_state_machine_arn(kept)))


def _api_entry(
    name: str,
    method: str,
    path: str,
    body: Callable[[World], Any],
    *,
    on: bool,
    releases: bool,
    aborts: bool = False,
    lifted: bool = False,
) -> EntryPoint:
    def arrange(here: World) -> None:
        _plain_machine(here, on=on or lifted)
        _seed_tokens(here)
        if lifted:
            _ok(here.api("POST", "/maintenance", {"stateMachineArn": here.machine, "enabled": False, "resume": False}))

    def act(here: World) -> Any:
        given = body(here)
        if method == "GET":
            query = "&".join(f"{key}={value}" for key, value in given.items())
            return here.api("GET", f"{path}?{query}" if query else path)
        return here.api(method, path, given)

    return EntryPoint(name, False, arrange, act, releases=releases, aborts=aborts, route=(method, path))


def _machine(here: World) -> dict[str, Any]:
    return {"stateMachineArn": here.machine}


def _hold_entry(
    name: str, method: str, path: str, *, taken: bool, releases: bool, body: Any = None, on: bool = False
) -> EntryPoint:
    """A holds route; with ``taken``, a hold on the machine exists first (``{hold}`` in the path).

    ``body`` may be a function of the world (as for ``_api_entry``), and ``on`` sets the tag too.
    """

    def arrange(here: World) -> None:
        _plain_machine(here, on=on)
        _seed_tokens(here)
        if taken:
            answer = here.api("POST", "/holds", {"stateMachineArns": [here.machine], "ttlSeconds": 600})
            assert answer.status_code == 201, answer.body
            here.hold_id = answer.json_body["holdId"]

    def act(here: World) -> Any:
        given = {"stateMachineArns": [here.machine], "ttlSeconds": 600} if body == "scope" else body
        given = given(here) if callable(given) else given
        return here.api(method, path.replace("{hold}", here.hold_id), given)

    return EntryPoint(name, False, arrange, act, releases=releases, route=(method, path))


ENTRY_POINTS = {
    entry.name: entry
    for entry in (
        EntryPoint("pauser-on", True, _arrange_pauser_on, _act_pauser, releases=False),
        EntryPoint("pauser-off", True, _arrange_pauser_off, _act_pauser),
        # The checkpoint records the execution inside, its leave step counts it out.
        EntryPoint("section", True, _arrange_section, _act_section, faulted_calls=1, section=True),
        EntryPoint("resumer", False, _arrange_resumer, _act_resumer),
        EntryPoint("sweep", False, _arrange_sweep, World.sweep, stage_env={"HeartbeatHeldTasks": "true"}),
        _api_entry(
            "POST /maintenance on",
            "POST",
            "/maintenance",
            lambda here: {**_machine(here), "enabled": True, "reason": "deploy"},
            on=False,
            releases=False,
        ),
        _api_entry(
            "POST /maintenance off",
            "POST",
            "/maintenance",
            lambda here: {**_machine(here), "enabled": False},
            on=True,
            releases=True,
        ),
        _api_entry("GET /maintenance one", "GET", "/maintenance", _machine, on=True, releases=False),
        _api_entry("GET /maintenance overview", "GET", "/maintenance", lambda here: {}, on=True, releases=False),
        _api_entry("GET /maintenance/paused", "GET", "/maintenance/paused", _machine, on=True, releases=False),
        _api_entry("POST /resume", "POST", "/resume", _machine, on=False, releases=True, lifted=True),
        _api_entry(
            "POST /abort",
            "POST",
            "/abort",
            lambda here: {**_machine(here), "all": True},
            on=True,
            releases=True,
            aborts=True,
        ),
        _api_entry("GET /audit", "GET", "/audit", _machine, on=True, releases=False),
        _hold_entry("POST /holds", "POST", "/holds", taken=False, releases=False, body="scope"),
        _hold_entry("POST /holds/{id}/renew", "POST", "/holds/{hold}/renew", taken=True, releases=False, body={}),
        _hold_entry("DELETE /holds/{id}", "DELETE", "/holds/{hold}", taken=True, releases=True),
        _hold_entry("GET /holds", "GET", "/holds", taken=True, releases=False),
        _hold_entry("GET /holds/{id}", "GET", "/holds/{hold}", taken=True, releases=False),
        _hold_entry("GET /holds/{id}/audit", "GET", "/holds/{hold}/audit", taken=True, releases=False),
        # Off with force: the tag and a hold on the machine both end, and what they held resumes.
        _hold_entry(
            "POST /maintenance off force",
            "POST",
            "/maintenance",
            taken=True,
            releases=True,
            body=lambda here: {**_machine(here), "enabled": False, "force": True},
            on=True,
        ),
    )
}


# -- call sites: an operation, and for S3 the folder its key is in


def site_of(call: Call) -> str:
    return f"{call.name}[{_folder_of(call.params)}]" if call.service == "s3" and _folder_of(call.params) else call.name


def _folder_of(params: dict[str, Any]) -> str | None:
    key = params.get("Key", params.get("Prefix"))
    if not isinstance(key, str):
        return None
    if key.startswith(CONTROL):
        return key[len(CONTROL) :].split("/", 1)[0] or "control"
    return "held" if key.startswith(PREFIX) else None


def at_site(site: str) -> Callable[[dict[str, Any]], bool]:
    folder = site.partition("[")[2].rstrip("]") or None

    def matches(params: dict[str, Any]) -> bool:
        return folder is None or _folder_of(params) == folder

    return matches


def _begin_act(here: World) -> None:
    """What the arrangement did is not the entry point's: forget its calls and pauser runs."""
    here.faults.calls.clear()
    here.pauser_runs.clear()


def run_entry_point(entry: EntryPoint, here: World) -> Any:
    entry.arrange(here)
    _begin_act(here)
    return entry.act(here)


def discover() -> dict[str, list[str]]:
    """Each entry point's call sites, from one clean run of it."""
    sites: dict[str, list[str]] = {}
    for entry in ENTRY_POINTS.values():
        with world(entry.interpreter, **entry.stage_env) as here:
            run_entry_point(entry, here)
            sites[entry.name] = list(dict.fromkeys(site_of(call) for call in here.faults.calls))
    return sites


_discovered: dict[str, list[str]] = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.function.__name__ != "test_a_fault_on_any_call_of_any_entry_point_loses_and_strands_nothing":
        return
    if not _discovered:
        _discovered.update(discover())
    cells = [
        pytest.param(entry, site, fault, id=f"{entry}|{site}|{fault}")
        for entry, entry_sites in _discovered.items()
        for site in entry_sites
        for fault in FAULT_KINDS
    ]
    metafunc.parametrize(("entry_name", "site", "fault"), cells)


# -- the cells


def test_a_fault_on_any_call_of_any_entry_point_loses_and_strands_nothing(entry_name: str, site: str, fault: str):
    entry = ENTRY_POINTS[entry_name]
    service, operation = site.partition("[")[0].split(".")
    with world(entry.interpreter, **entry.stage_env) as here:
        entry.arrange(here)
        _begin_act(here)
        injected = here.faults.inject(service, operation, fault, when=at_site(site), calls=entry.faulted_calls)
        answered_before = set(here.model.answered)
        try:
            outcome: Any = entry.act(here)
        except Exception as error:
            outcome = error
        here.faults.clear()
        assert injected.fired > 0 or fault == "lost-response", "the fault never fired: this cell proves nothing"
        answered_now = set(here.model.answered) - answered_before

        _the_answer_says_what_happened(entry, fault, outcome, here, answered_now)
        if entry.route is not None and _asks_to_repeat(outcome):
            entry.act(here)
        here.sweep()

        _nothing_is_lost_doubled_or_stranded(entry, here)


def _asks_to_repeat(response: Any) -> bool:
    """A caller repeats a call that failed (503, 403 once fixed) or that says work remains."""
    return response.status_code not in (200, 201) or bool(response.json_body.get("remaining"))


def _the_answer_says_what_happened(
    entry: EntryPoint, fault: str, outcome: Any, here: World, answered: set[str]
) -> None:
    if entry.interpreter:
        errors = [run.error for run in here.pauser_runs if run.error]
        assert set(errors) <= {"SfnPauser.Unavailable"}, f"the checkpoint raised {errors}"
        return
    if isinstance(outcome, BaseException):
        assert type(outcome).__module__ == "chalicelib.errors", f"{entry.name} raised {outcome!r}"
        return
    if entry.route is None:
        if isinstance(outcome, dict) and "resumed" in outcome:
            assert outcome["resumed"] == len(answered), f"reported {outcome}, AWS answered {len(answered)}"
        return
    assert outcome.status_code != 500, outcome.body
    if outcome.status_code not in (200, 201):
        assert outcome.status_code == HTTP_ERROR_FOR[fault], (outcome.status_code, outcome.body)
        assert outcome.json_body.get("Code") and outcome.json_body.get("Message"), outcome.body
        return
    body = outcome.json_body
    count = body.get("aborted", body.get("resumed"))
    if isinstance(count, dict):  # a released hold: per machine
        count = sum(count.values())
    if count is not None:
        assert count == len(answered), f"the answer says {count} were let go; AWS answered {len(answered)}"


def _nothing_is_lost_doubled_or_stranded(entry: EntryPoint, here: World) -> None:
    assert here.model.sent_twice() == {}, "a token was sent twice"
    if entry.interpreter:
        _executions_end_well(entry, here)
        if entry.section:
            assert _inside(here) == [], "an execution that left its section is still counted inside"
        return
    held = set(here.held().values())
    answered = set(here.model.answered)
    lost = [token for token in here.tokens if token not in held and token not in answered]
    assert lost == [], f"lost: neither answered nor held: {lost}"
    if entry.releases:
        answers = here.model.failures if entry.aborts else here.model.successes
        stranded = [token for token in here.tokens if answers[token] != 1]
        assert stranded == [], f"not let go after the fault cleared and one sweep: {stranded}"
        # An answered token left in its folder is sent again later (TaskTimedOut) and counted expired.
        assert held.isdisjoint(here.tokens), "a token stayed in its folder after it was answered"
    else:
        assert answered.isdisjoint(here.tokens), "a token was let go that should stay held"
    if entry.name == "sweep":
        kept = [token for token in here.held("Kept").values()]
        assert len(kept) == 2 and not answered.intersection(kept), "the sweep lost a task it should keep alive"


def _executions_end_well(entry: EntryPoint, here: World) -> None:
    statuses = {execution: here.status(execution) for execution in here.executions}
    assert "FAILED" not in statuses.values(), statuses
    new = here.executions[-1]
    if not entry.releases:
        held = list(here.held().values())
        assert held == [here.model.latest_token(new)], "held once, with the live token of the execution"
        assert statuses[new] == "RUNNING"
        _ok(here.api("POST", "/maintenance", {"stateMachineArn": here.machine, "enabled": False}))
    for execution in here.executions:
        harness.wait_until(lambda e=execution: here.status(e) == "SUCCEEDED", what=f"{execution} to succeed")
    assert here.held() == {}, "a token stayed behind its execution"
    assert not here.model.failures, "the checkpoint failed a task"


# -- the instruments prove themselves


@pytest.fixture
def product_clients(plain_aws):
    from chalicelib.clients import AwsClients

    return AwsClients(session=harness.shared_session())


@pytest.mark.parametrize(
    ("fault", "error", "attempts", "reached"),
    [
        ("throttling", "SlowDown", 3, 0),
        ("5xx", "InternalError", 3, 0),
        ("timeout", "ConnectTimeoutError", 3, 0),
        ("lost-response", "PreconditionFailed", 2, 2),
        ("denied", "AccessDenied", 1, 0),
    ],
)
def test_each_fault_answers_every_attempt_as_aws_would(faults, product_clients, fault, error, attempts, reached):
    faults.inject("s3", "PutObject", fault)

    with pytest.raises(Exception) as raised:
        product_clients.s3().put_object(Bucket=BUCKET, Key="k", Body=b"x", IfNoneMatch="*")

    [call] = faults.calls
    assert (call.error, call.attempts, call.reached) == (error, attempts, reached), raised.value
    landed = "Contents" in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=BUCKET)
    assert landed == (fault == "lost-response"), "only a lost response lets the write land"


def test_a_fault_touches_only_the_product_its_operation_and_its_first_calls(faults, product_clients):
    faults.inject("s3", "PutObject", "denied", when=lambda params: params["Key"].startswith("a/"), calls=1)
    theirs = boto3.client("s3", region_name=REGION)

    theirs.put_object(Bucket=BUCKET, Key="a/tests-own-client", Body=b"x")
    product_clients.s3().put_object(Bucket=BUCKET, Key="b/other-key", Body=b"x")
    with pytest.raises(Exception, match="AccessDenied"):
        product_clients.s3().put_object(Bucket=BUCKET, Key="a/first", Body=b"x")
    product_clients.s3().put_object(Bucket=BUCKET, Key="a/second", Body=b"x")
    product_clients.s3().get_object(Bucket=BUCKET, Key="a/second")

    assert [(call.params["Key"], call.error) for call in faults.calls] == [
        ("b/other-key", None),
        ("a/first", "AccessDenied"),
        ("a/second", None),
        ("a/second", None),
    ]


def test_a_fault_reaches_calls_made_on_worker_threads(faults, product_clients):
    from concurrent.futures import ThreadPoolExecutor

    faults.inject("stepfunctions", "SendTaskSuccess", "throttling")
    sfn = product_clients.sfn(REGION)
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(
            pool.map(lambda n: _error_of(lambda: sfn.send_task_success(taskToken=f"t{n}", output="{}")), range(4))
        )

    assert outcomes == ["ThrottlingException"] * 4


def _error_of(call: Callable[[], Any]) -> str | None:
    try:
        call()
    except Exception as error:
        return getattr(error, "response", {}).get("Error", {}).get("Code") or type(error).__name__
    return None


def test_the_matrix_size_in_the_docstring_is_the_matrix_run():
    cells = sum(len(sites) for sites in _discovered.values()) * len(FAULT_KINDS)
    written = re.search(r"The matrix holds\s+(\d+) cells", __doc__ or "")
    assert written and int(written[1]) == cells, f"the matrix now has {cells} cells: update the docstring and docs"
    for doc in ("README.md", "docs/reliability.md"):
        assert f"{cells} cells" in (ROOT / doc).read_text(), f"{doc} does not give the matrix's size, {cells} cells"


def test_the_matrix_knows_every_entry_point_and_its_calls():
    assert set(_discovered) == set(ENTRY_POINTS)
    assert all(_discovered.values()), {name: sites for name, sites in _discovered.items() if not sites}
    assert "s3.PutObject[held]" in _discovered["pauser-on"]
    assert "stepfunctions.SendTaskSuccess" in _discovered["pauser-off"]


def test_the_model_answers_a_second_send_timed_out_and_counts_it_as_a_repeat(workflow, aws, aws_model):
    workflow.maintenance("true")
    execution = workflow.start({"n": 1})
    workflow.wait_held(1)
    token = aws_model.latest_token(execution)

    aws.sfn.send_task_success(taskToken=token, output="{}")
    with pytest.raises(aws.sfn.exceptions.ClientError, match="TaskTimedOut"):
        aws.sfn.send_task_success(taskToken=token, output="{}")

    workflow.wait_for(execution, "SUCCEEDED")
    with pytest.raises(aws.sfn.exceptions.ClientError, match="TaskTimedOut"):
        aws.sfn.send_task_heartbeat(taskToken=token)  # moto alone says InvalidToken here
    assert (aws_model.successes[token], aws_model.repeats[token]) == (1, 1)


def test_a_retry_after_a_lost_answer_meets_task_timed_out_but_is_no_repeat(faults, aws_model, product_clients):
    aws_model.issue("lost-answer-token")
    faults.inject("stepfunctions", "SendTaskSuccess", "lost-response")

    with pytest.raises(Exception, match="TaskTimedOut"):
        product_clients.sfn(REGION).send_task_success(taskToken="lost-answer-token", output="{}")

    assert aws_model.successes["lost-answer-token"] == 1
    assert aws_model.sent_twice() == {}


def test_the_model_counts_the_payload_limits_in_utf8_bytes(plain_aws, aws_model):
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = sfn.create_state_machine(name="Sized", definition=PASS, roleArn=ROLE)["stateMachineArn"]
    fits = json.dumps("テ" * 87_000, ensure_ascii=False)  # 261,002 bytes, 87,002 characters
    too_big = json.dumps("テ" * 87_400, ensure_ascii=False)  # 262,202 bytes, 87,402 characters

    sfn.send_task_success(taskToken="sized", output=fits)
    sfn.start_execution(stateMachineArn=machine, name="fits", input=fits)
    with pytest.raises(sfn.exceptions.ClientError, match="ValidationException"):
        sfn.send_task_success(taskToken="sized-too", output=too_big)
    with pytest.raises(sfn.exceptions.ClientError, match="ValidationException"):
        sfn.start_execution(stateMachineArn=machine, name="too-big", input=too_big)


@pytest.mark.parametrize("code", ["TaskTimedOut", "TaskDoesNotExist"])
def test_a_test_can_declare_a_token_dead(plain_aws, aws_model, code):
    sfn = boto3.client("stepfunctions", region_name=REGION)
    aws_model.kill("doomed", code)

    for send in (
        lambda: sfn.send_task_heartbeat(taskToken="doomed"),
        lambda: sfn.send_task_success(taskToken="doomed", output="{}"),
    ):
        with pytest.raises(sfn.exceptions.ClientError, match=code):
            send()
