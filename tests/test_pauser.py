"""The task handler, invoked as Lambda would (`client.lambda_.invoke("pauser", event)`) inside moto.

Where a real task token matters, the example workflow runs in moto's interpreter and
its checkpoint events are captured, so each test decides when and how the handler sees them.
"""

import json
import logging
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from chalice.local import LambdaContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend

import app as chalice_app
from chalicelib.arns import parse_state_machine_arn
from chalicelib.errors import InvalidInput
from chalicelib.flag import MaintenanceFlag, MaintenanceState
from chalicelib.store import TokenStore
from tests.conftest import BUCKET, PREFIX, STAGE
from tests.harness import ACCOUNT, MOTO_CONFIG, REGION, route_lambda_to, wait_until

EVENTS = Path(__file__).parent / "events"
ORDERS = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:Orders"
PASS = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})


def invoke(client, event):
    if event is None:
        # The test client turns a None payload into {}; Lambda hands a JSON null to the
        # handler as None, so call the handler as Lambda would, with the stage's environment.
        return _invoke_directly(event)
    return client.lambda_.invoke("pauser", event).payload


def _invoke_directly(event):
    with pytest.MonkeyPatch.context() as env:
        for name, value in STAGE["environment_variables"].items():
            env.setenv(name, value)
        context = LambdaContext("pauser", memory_size=512, max_runtime_ms=120_000)
        return chalice_app.app.handler_map["pauser"](event, context)


class Checkpoint:
    """Executions of the example workflow, stopped at the checkpoint with their events captured."""

    def __init__(self, workflow):
        self.workflow = workflow
        self._events = {}

    def capture(self, function_name, event):
        self._events[event["executionArn"]] = event
        return {}  # the Task keeps waiting for its token, as it does after a real invocation

    def arrive(self, payload):
        """Start an execution; return it and the event the handler would get."""
        execution = self.workflow.start(payload)
        event = wait_until(lambda: self._events.get(execution), what=f"{execution} to reach the checkpoint")
        return execution, event


@pytest.fixture(scope="module")
def session():
    return boto3.session.Session()


@pytest.fixture(autouse=True)
def warm_session(session, monkeypatch):
    # conftest rebuilds the app's services for each test; one shared boto3 session keeps
    # the parsed service models, which are most of the cost of a cold start.
    monkeypatch.setattr(boto3.session, "Session", lambda **_: session)


@pytest.fixture
def checkpoint(workflow, monkeypatch):
    captured = Checkpoint(workflow)
    monkeypatch.setattr(LambdaSimpleBackend, "invoke", route_lambda_to(captured.capture))
    return captured


@pytest.fixture
def log(caplog, monkeypatch):
    # Chalice stops app.log propagating (Lambda prints it itself); let caplog see it.
    monkeypatch.setattr(chalice_app.app.log, "propagate", True)
    return caplog


def held(aws, bucket):
    listed = aws.s3.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}Orders/")
    return [item["Key"] for item in listed.get("Contents", [])]


def test_maintenance_on_holds_the_execution_and_saves_its_token(checkpoint, aws, bucket, client):
    checkpoint.workflow.maintenance("true")
    execution, event = checkpoint.arrive({"order": 1})

    response = invoke(client, event)

    assert response == {"status": "maintenance", "saved_token_key": response["saved_token_key"]}
    key = response["saved_token_key"]
    assert key.startswith(f"{PREFIX}Orders/") and key.endswith(".json")
    body = json.loads(aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert body["taskToken"] == event["taskToken"]
    assert body["executionArn"] == execution
    assert body["input"] == {"order": 1}
    assert checkpoint.workflow.status(execution) == "RUNNING"


def test_maintenance_off_sends_its_own_token_and_the_workflow_data_passes_through(checkpoint, client):
    execution, event = checkpoint.arrive({"order": 2, "lines": [1, None]})

    response = invoke(client, event)

    assert response == {"status": "proceeding", "resumed_tokens": 0}
    finished = checkpoint.workflow.wait_for(execution, "SUCCEEDED")
    assert json.loads(finished["output"]) == {"order": 2, "lines": [1, None]}


@pytest.mark.parametrize("value", ["false", "yes", ""], ids=["false", "yes", "empty"])
def test_any_tag_value_but_true_lets_the_execution_go(checkpoint, client, value):
    checkpoint.workflow.maintenance(value)
    execution, event = checkpoint.arrive({})

    assert invoke(client, event)["status"] == "proceeding"
    checkpoint.workflow.wait_for(execution, "SUCCEEDED")


# With the cache off, the second invocation sees the untag at once.
@pytest.mark.stage_env(MaintenanceCacheSeconds="0")
def test_proceeding_resumes_the_executions_held_before_it(checkpoint, aws, bucket, client):
    checkpoint.workflow.maintenance("true")
    waiting = [checkpoint.arrive({"order": n}) for n in range(2)]
    for _, event in waiting:
        assert invoke(client, event)["status"] == "maintenance"

    checkpoint.workflow.maintenance(None)
    execution, event = checkpoint.arrive({"order": "next"})
    response = invoke(client, event)

    assert response == {"status": "proceeding", "resumed_tokens": 2}
    for n, (held_execution, _) in enumerate(waiting):
        finished = checkpoint.workflow.wait_for(held_execution, "SUCCEEDED")
        assert json.loads(finished["output"]) == {"order": n}
    checkpoint.workflow.wait_for(execution, "SUCCEEDED")
    assert held(aws, bucket) == []


def test_a_token_saved_while_maintenance_is_lifted_elsewhere_is_resumed_at_once(checkpoint, aws, bucket, client):
    checkpoint.workflow.maintenance("true")
    first, first_event = checkpoint.arrive({"order": 1})
    assert invoke(client, first_event)["status"] == "maintenance"  # this container now caches "on"

    # The API, in another container, lifts maintenance: it writes the flag mirror.
    machine = parse_state_machine_arn(checkpoint.workflow.arn)
    elsewhere = MaintenanceFlag(None, TokenStore(aws.s3, bucket, PREFIX), cache_seconds=10)
    elsewhere.record(machine, MaintenanceState(on=False), source="api")
    checkpoint.workflow.maintenance(None)
    second, second_event = checkpoint.arrive({"order": 2})
    response = invoke(client, second_event)

    # The stale cache held the second token, but the re-check after saving saw the lift:
    # the lifter may have listed the folder before this token was in it, so the handler
    # resumes its own token. The rest is the lifter's (it may have said "resume": false).
    assert response == {"status": "proceeding", "resumed_tokens": 1}
    checkpoint.workflow.wait_for(second, "SUCCEEDED")
    assert checkpoint.workflow.status(first) == "RUNNING"
    assert len(held(aws, bucket)) == 1


def test_a_flag_that_cannot_be_read_holds_the_execution_instead_of_failing_it(
    checkpoint, aws, bucket, client, monkeypatch
):
    # S3 and the tags both throttled past botocore's retries. Holding is safe (the sweep
    # resumes it within a minute if maintenance is off); failing it loses the execution.
    def unreadable(self, machine):
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "GetObject")

    monkeypatch.setattr(MaintenanceFlag, "is_on", unreadable)
    monkeypatch.setattr(MaintenanceFlag, "is_on_now", unreadable)
    execution, event = checkpoint.arrive({"order": 1})

    response = invoke(client, event)

    assert response["status"] == "maintenance"
    assert held(aws, bucket) == [response["saved_token_key"]]
    assert checkpoint.workflow.status(execution) == "RUNNING"


def test_a_version_arn_is_held_by_its_machine_tag_in_its_machine_folder(checkpoint, client):
    checkpoint.workflow.maintenance("true")
    _, event = checkpoint.arrive({})

    response = invoke(client, {**event, "stateMachineArn": checkpoint.workflow.arn + ":1"})

    assert response["status"] == "maintenance"
    assert response["saved_token_key"].startswith(f"{PREFIX}Orders/")


def test_a_bad_event_with_a_real_token_fails_its_execution_at_once(checkpoint, client, aws, bucket):
    # The explicit SendTaskFailure also covers a state that invokes the pauser
    # asynchronously, where a raised error alone would leave the Task waiting.
    checkpoint.workflow.maintenance("true")
    execution, event = checkpoint.arrive({})

    with pytest.raises(InvalidInput):
        invoke(client, {**event, "stateMachineArn": "arn:aws:lambda:us-east-1:123456789012:function:pauser"})

    failed = checkpoint.workflow.wait_for(execution, "FAILED")
    assert failed["error"] == "InvalidArn"  # moto drops SendTaskFailure's cause, AWS keeps it
    assert held(aws, bucket) == []


def decisions(log):
    return [record for record in log.records if record.name == "sfn-pauser"]


@pytest.mark.stage_env(MaintenanceCacheSeconds="0")
def test_every_decision_is_one_json_line_at_info_without_the_token(checkpoint, client, log):
    checkpoint.workflow.maintenance("true")
    _, held_event = checkpoint.arrive({"order": 1})
    invoke(client, held_event)
    checkpoint.workflow.maintenance(None)
    _, passing_event = checkpoint.arrive({"order": 2})
    invoke(client, passing_event)

    records = decisions(log)
    lines = [json.loads(record.getMessage()) for record in records]
    assert [line["decision"] for line in lines] == ["paused", "resumed", "proceeding"]
    for record in records:
        assert record.levelno == logging.INFO
        assert "\n" not in record.getMessage()
    # A task token completes its Task for whoever holds it: logs carry a fingerprint only.
    for token in (held_event["taskToken"], passing_event["taskToken"]):
        assert token not in log.text
        assert all(token not in record.getMessage() for record in records)


def test_a_rejected_event_is_logged_without_its_token(checkpoint, client, log):
    _, event = checkpoint.arrive({})

    with pytest.raises(InvalidInput):
        invoke(client, {**event, "stateMachineArn": "Orders"})

    lines = [json.loads(record.getMessage()) for record in decisions(log)]
    [rejected] = [line for line in lines if line["decision"] == "rejected"]
    assert rejected["error"] == "InvalidArn"
    assert event["taskToken"] not in log.text


# Malformed events (tests/events/bad/*.json): the error's type names the problem, its
# message the field, and nothing is held.
BAD_EVENTS = [
    ("missing-task-token", "MissingField", "taskToken"),
    ("task-token-null", "MissingField", "taskToken"),
    ("task-token-empty", "InvalidField", "taskToken"),
    ("task-token-blank", "InvalidField", "taskToken"),
    ("task-token-a-number", "InvalidField", "taskToken"),
    ("task-token-an-object", "InvalidField", "taskToken"),
    ("missing-state-machine-arn", "MissingField", "stateMachineArn"),
    ("state-machine-arn-null", "MissingField", "stateMachineArn"),
    ("state-machine-arn-empty", "InvalidField", "stateMachineArn"),
    ("state-machine-arn-a-list", "InvalidField", "stateMachineArn"),
    ("state-machine-arn-of-a-lambda-function", "InvalidArn", "stateMachineArn"),
    ("state-machine-arn-of-an-execution", "InvalidArn", "stateMachineArn"),
    ("state-machine-arn-of-an-activity", "InvalidArn", "stateMachineArn"),
    ("state-machine-arn-short-account", "InvalidArn", "stateMachineArn"),
    ("state-machine-arn-a-bare-name", "InvalidArn", "stateMachineArn"),
    ("state-machine-name-with-a-space", "InvalidArn", "stateMachineArn"),
    ("execution-arn-a-number", "InvalidField", "executionArn"),
    ("execution-arn-an-object", "InvalidField", "executionArn"),
    ("event-empty-object", "MissingField", "taskToken"),
    ("event-a-list", "InvalidField", "event"),
    ("event-a-string", "InvalidField", "event"),
    ("event-a-number", "InvalidField", "event"),
    ("event-null", "InvalidField", "event"),
]


@pytest.fixture(scope="module")
def s3(session):
    return session.client("s3", region_name=REGION)


@pytest.fixture(scope="module")
def sfn(session):
    return session.client("stepfunctions", region_name=REGION)


@pytest.fixture
def orders_in_maintenance(s3, sfn):
    """A fresh moto where Orders is in maintenance, so any event wrongly accepted would be held.

    Lighter than conftest's `aws` (its clients are made once per module), for the many
    tests below that need no execution.
    """
    with mock_aws(config=MOTO_CONFIG):
        s3.create_bucket(Bucket=BUCKET)
        sfn.create_state_machine(
            name="Orders",
            definition=PASS,
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/states",
            tags=[{"key": "Maintenance", "value": "true"}],
        )
        yield


def bucket_keys(s3, prefix=""):
    return [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


def test_every_bad_event_file_is_in_the_table():
    assert sorted(path.stem for path in (EVENTS / "bad").glob("*.json")) == sorted(name for name, *_ in BAD_EVENTS)


@pytest.mark.parametrize(("name", "error", "field"), BAD_EVENTS, ids=[name for name, *_ in BAD_EVENTS])
def test_a_malformed_event_is_refused_naming_the_field(orders_in_maintenance, s3, client, name, error, field):
    event = json.loads((EVENTS / "bad" / f"{name}.json").read_text())

    with pytest.raises(InvalidInput) as raised:
        invoke(client, event)

    # Step Functions records the type as the Task's error, and the message as its cause.
    assert type(raised.value).__name__ == error
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}:")
    assert bucket_keys(s3) == []


def test_the_example_event_is_held_so_the_table_tests_something(orders_in_maintenance, s3, client):
    event = json.loads((EVENTS / "checkpoint.json").read_text())

    assert invoke(client, event)["status"] == "maintenance"
    assert len(bucket_keys(s3, f"{PREFIX}Orders/")) == 1


# Whatever is wrong with an event, the handler names the field; it never holds it.
GOOD = json.loads((EVENTS / "checkpoint.json").read_text())
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
not_strings = json_values.filter(lambda value: not isinstance(value, str) and value is not None)
blank = st.text(alphabet=" \t\n", max_size=3)
# moto (not AWS) crashes on a region it does not know, and the handler reads the region
# of any `arn:...` text to fail the Task; keep invented text clear of that shape.
invented = st.text(max_size=60).filter(lambda text: text.strip() and not text.startswith("arn:"))
broken_arns = st.sampled_from(
    [
        GOOD["stateMachineArn"].replace("stateMachine", "execution") + ":run-1",
        GOOD["stateMachineArn"].replace(":states:", ":lambda:"),
        GOOD["stateMachineArn"].replace("Orders", "Ord ers"),
        GOOD["stateMachineArn"].replace("123456789012", "1234"),
        GOOD["stateMachineArn"] + ":",
        GOOD["stateMachineArn"] + ":v1.0",
    ]
)
corruptions = st.one_of(
    st.tuples(st.just("taskToken"), st.sampled_from(["missing", None]) | not_strings | blank),
    st.tuples(st.just("stateMachineArn"), st.sampled_from(["missing", None]) | not_strings | blank),
    st.tuples(st.just("stateMachineArn"), invented | broken_arns),
    st.tuples(st.just("executionArn"), not_strings | st.just("x" * 2049)),
)
extras = st.dictionaries(st.text(max_size=10).filter(lambda name: name not in GOOD), json_values, max_size=3)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(corruption=corruptions, extra=extras)
def test_whatever_is_wrong_with_an_event_the_error_names_the_field(
    orders_in_maintenance, s3, client, corruption, extra
):
    field, value = corruption
    event = {**GOOD, **extra}
    if value == "missing":
        del event[field]
    else:
        event[field] = value

    with pytest.raises(InvalidInput) as raised:
        invoke(client, event)

    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}:")
    assert bucket_keys(s3) == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=json_values.filter(lambda value: not isinstance(value, dict)))
def test_an_event_that_is_not_an_object_is_refused_as_event(orders_in_maintenance, s3, client, event):
    with pytest.raises(InvalidInput) as raised:
        invoke(client, event)

    assert raised.value.field == "event"
    assert bucket_keys(s3) == []


def test_once_its_own_token_is_answered_nothing_fails_the_invocation(checkpoint, client, monkeypatch, log):
    # A failure while resuming the backlog (here a bug) must not fail an invocation whose
    # execution has already been let through: it is logged, and the sweep is the backstop.
    def broken_drain(*args, **kwargs):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(chalice_app.get_services().drainer, "drain", broken_drain)
    execution, event = checkpoint.arrive({"order": 9})

    response = invoke(client, event)

    assert response == {"status": "proceeding", "resumed_tokens": 0}
    checkpoint.workflow.wait_for(execution, "SUCCEEDED")
    failed = [json.loads(r.getMessage()) for r in log.records if '"resume-failed"' in r.getMessage()]
    assert failed and failed[0]["error"] == "RuntimeError"
