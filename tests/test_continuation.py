"""Draining a backlog of any size: resume within the budget, then hand the rest to a fresh
asynchronous invocation of the resumer function, until the backlog is empty.

The chains run for real: moto's Lambda is routed to the Chalice handlers, and an
``Event`` invocation runs on a thread of its own, as Lambda runs it.
"""

import json
import logging
import os
import threading
from collections import Counter

import pytest
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.core.exceptions import AWSError
from moto.stepfunctions.parser.models import StepFunctionsParserBackend

import app as chalice_app
import chalicelib.continuation
from chalicelib.arns import parse_state_machine_arn
from chalicelib.config import Settings
from chalicelib.continuation import MAX_GENERATIONS, parse_continuation
from chalicelib.deadline import Deadline
from chalicelib.errors import InvalidArn, InvalidField, MissingField
from chalicelib.events import parse_checkpoint_event
from chalicelib.resumer import SHARDS
from chalicelib.services import Services
from tests.conftest import BUCKET, PREFIX, STAGE
from tests.harness import ACCOUNT, REGION, RESUMER_FUNCTION_NAME, create_pauser_function, route_lambda_to, wait_until

ORDERS = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:Orders"
# Each generation may look at its deadline this many times (about one look per token
# it takes on), so a small backlog already needs a chain. A budget in looks, not
# seconds, is the same on a loaded machine: a time budget this small can run out
# before a generation tries a token, and such a chain rightly stops.
GENERATION_LOOKS = 8
# Few sends in flight, so each generation resumes only a handful.
CONCURRENCY = "4"
CHAIN_ENV = {**STAGE["environment_variables"], "ResumeConcurrency": CONCURRENCY}


class ServiceUnavailable(AWSError):
    TYPE = "ServiceUnavailable"
    STATUS = 503


class Sends:
    """SendTaskSuccess as it reaches moto, counted per token; optionally passed on to moto.

    ``error`` fails every send, or only those to the tokens in ``failing``.
    """

    def __init__(self, original=None, error=None, failing=None):
        self.per_token = Counter()
        self._original = original
        self._error = error
        self._failing = failing
        self._lock = threading.Lock()

    def __call__(self, backend, task_token, outcome):
        with self._lock:
            self.per_token[task_token] += 1
        if self._error is not None and (self._failing is None or task_token in self._failing):
            raise self._error
        if self._original is not None:
            return self._original(backend, task_token, outcome)
        return None


def count_sends(monkeypatch, **kwargs):
    sends = Sends(**kwargs)
    monkeypatch.setattr(
        StepFunctionsParserBackend,
        "send_task_success",
        lambda self, task_token, outcome: sends(self, task_token, outcome),
    )
    return sends


class ResumerRuns:
    """Invocations of the resumer function: their events, and how many have not finished yet."""

    def __init__(self):
        self.events = []
        self.invocation_types = []
        self.unfinished = 0
        self._lock = threading.Lock()

    def invoked(self, event, invocation_type):
        with self._lock:
            self.events.append(event)
            self.invocation_types.append(invocation_type)
            self.unfinished += 1

    def finished(self):
        with self._lock:
            self.unfinished -= 1

    @property
    def generations(self):
        return [event.get("generation") for event in self.events]

    def wait_quiet(self, timeout=20.0):
        """Until every invocation asked for so far has run to its end (a new one is asked for
        before its parent ends, so a quiet chain is over)."""
        wait_until(lambda: self.events and self.unfinished == 0, timeout=timeout, what="the chain to end")


@pytest.fixture
def chain_env(monkeypatch):
    """The stage's variables in the process environment too, and os.environ put back afterwards.

    The Chalice test client swaps os.environ for a patched copy around each call and
    swaps the saved one back after. Chained invocations overlap on their threads, so
    a child can read the parent's restored (unpatched) environment, or leave its copy
    in place for the tests that follow.
    """
    monkeypatch.setattr(os, "environ", os.environ)  # so that this very object is put back
    for name, value in CHAIN_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def resumer_runs(routed_lambda, client, chain_env, monkeypatch):
    """moto's Lambda routed to the Chalice handlers, with the resumer's invocations recorded."""
    runs = ResumerRuns()

    def run_handler(function_name, event):
        try:
            return client.lambda_.invoke(function_name.removeprefix("sfn-pauser-dev-"), event).payload
        finally:
            if function_name == RESUMER_FUNCTION_NAME:
                runs.finished()

    routed = route_lambda_to(run_handler)

    def invoke(self, function_name, qualifier, body, headers, response_headers):
        if function_name.rsplit(":", 1)[-1] == RESUMER_FUNCTION_NAME:
            runs.invoked(json.loads(body), (headers or {}).get("X-Amz-Invocation-Type"))
        return routed(self, function_name, qualifier, body, headers, response_headers)

    monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke)
    # Every generation of the resumer function gets a budget that runs out fast.
    monkeypatch.setattr(chalice_app.Deadline, "for_context", staticmethod(short_budget))
    return runs


class Looks:
    """A clock that moves one unit each time it is read."""

    def __init__(self):
        self._now = 0
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            self._now += 1
            return self._now


def short_budget(context=None, cap_seconds=None):
    return Deadline(GENERATION_LOOKS, clock=Looks())


def build():
    settings = Settings(
        bucket=BUCKET, prefix=PREFIX, resume_concurrency=int(CONCURRENCY), resumer_function=RESUMER_FUNCTION_NAME
    )
    return Services.build(settings, logging.getLogger("test-continuation"))


def hold(services, token, arn=ORDERS):
    return services.store.save(parse_checkpoint_event({"taskToken": token, "stateMachineArn": arn}))


def tokens_held(aws, name="Orders"):
    listed = aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}{name}/")
    return [
        json.loads(aws.s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())["taskToken"]
        for item in listed.get("Contents", [])
    ]


# (a) A chain drains a whole backlog, each token sent once.


@pytest.mark.stage_env(ResumeConcurrency=CONCURRENCY)
def test_a_drain_cut_short_hands_on_and_the_chain_resumes_every_execution_exactly_once(
    workflow, aws, resumer_runs, monkeypatch
):
    workflow.maintenance("true")
    executions = [workflow.start({"order": n}) for n in range(30)]
    workflow.wait_held(30)
    tokens = tokens_held(aws)
    sends = count_sends(monkeypatch, original=StepFunctionsParserBackend.send_task_success)
    workflow.maintenance(None)

    report = build().drainer.drain(parse_state_machine_arn(workflow.arn), short_budget())

    assert report.out_of_time and report.continued
    assert 0 < report.resumed < 30
    assert chain_step(resumer_runs.events[0]) == {"stateMachineArn": workflow.arn, "generation": 1}
    resumer_runs.wait_quiet()
    # Generation 0 above, then each continuation numbered one more than its parent.
    assert len(resumer_runs.generations) >= 2
    assert resumer_runs.generations == list(range(1, len(resumer_runs.generations) + 1))
    assert set(resumer_runs.invocation_types) == {"Event"}
    for execution in executions:
        workflow.wait_for(execution, "SUCCEEDED")
    assert workflow.held_keys() == []
    assert sends.per_token == Counter(dict.fromkeys(tokens, 1))


def chain_step(event: dict[str, object]) -> dict[str, object]:
    """A continuation's event less its shard (the shard a token falls in is a hash of its key)."""
    assert event.get("shard") in range(SHARDS)
    return {key: value for key, value in event.items() if key != "shard"}


def test_a_drain_that_finishes_in_time_does_not_hand_on(aws, bucket, monkeypatch):
    sends = count_sends(monkeypatch)
    services = build()
    for n in range(5):
        hold(services, f"token-{n}")
    invokes = record_invokes(services)

    report = services.drainer.drain(parse_state_machine_arn(ORDERS), Deadline(30))

    assert (report.resumed, report.remaining, report.continued) == (5, 0, False)
    assert invokes == []
    assert sum(sends.per_token.values()) == 5


def test_a_pass_that_leaves_tokens_behind_in_time_hands_them_on_instead_of_waiting_for_the_sweep(
    aws, bucket, monkeypatch
):
    # A 5xx outlasted botocore's retries for one token; the pass ended well in time.
    count_sends(monkeypatch, error=ServiceUnavailable("Service unavailable"), failing={"token-2"})
    services = build()
    for n in range(5):
        hold(services, f"token-{n}")
    invokes = record_invokes(services)

    report = services.drainer.drain(parse_state_machine_arn(ORDERS), Deadline(30))

    assert not report.out_of_time
    assert (report.resumed, report.remaining, report.continued) == (4, 1, True)
    assert [chain_step(json.loads(params["Payload"])) for params in invokes] == [
        {"stateMachineArn": ORDERS, "generation": 1}
    ]


# (b) A chain that makes no progress stops.


def record_invokes(services):
    invokes = []
    services.clients.lambda_().meta.events.register(
        "before-parameter-build.lambda.Invoke", lambda params, **_: invokes.append(params)
    )
    return invokes


def test_a_drain_that_makes_no_progress_does_not_hand_on_and_logs_stalled(aws, bucket, monkeypatch, caplog):
    # Every send fails with an error worth retrying later (a 5xx, after botocore's own
    # retries): the tokens stay held, and a chain would only spin. The sweep retries.
    sends = count_sends(monkeypatch, error=ServiceUnavailable("Service unavailable"))
    create_pauser_function(aws.iam, aws.lambda_)
    services = build()
    for n in range(40):
        hold(services, f"token-{n}")
    invokes = record_invokes(services)

    with caplog.at_level(logging.INFO, logger="test-continuation"):
        report = services.drainer.drain(parse_state_machine_arn(ORDERS), short_budget())

    assert report.out_of_time  # the deadline cut it short, and still it must not continue
    assert sends.per_token  # the sends were tried, and failed
    assert (report.resumed, report.expired, report.failed, report.remaining) == (0, 0, 0, 40)
    assert report.continued is False
    assert invokes == []
    decisions = [json.loads(record.getMessage()) for record in caplog.records]
    stalled = [decision for decision in decisions if decision["decision"] == "stalled"]
    assert stalled == [{"decision": "stalled", "stateMachine": ORDERS, "remaining": 40}]
    assert len(tokens_held(aws)) == 40


def test_a_drain_whose_budget_is_already_spent_hands_the_whole_backlog_on(aws, bucket, monkeypatch, caplog):
    # A caller that used up its time before draining (a slow API call, a pauser near its
    # timeout) made no attempt, so nothing has stalled: the backlog belongs to a fresh
    # invocation now, not to the sweep a minute later.
    count_sends(monkeypatch)
    create_pauser_function(aws.iam, aws.lambda_)
    services = build()
    for n in range(3):
        hold(services, f"token-{n}")
    invokes = record_invokes(services)

    with caplog.at_level(logging.INFO, logger="test-continuation"):
        report = services.drainer.drain(parse_state_machine_arn(ORDERS), Deadline(0))

    assert report.out_of_time and report.remaining == 3
    assert [chain_step(json.loads(params["Payload"])) for params in invokes] == [
        {"stateMachineArn": ORDERS, "generation": 1}
    ]
    assert report.continued is True
    assert "stalled" not in caplog.text


# (c) The resumer function's event.


@pytest.mark.parametrize(
    ("event", "error", "field"),
    [
        pytest.param(None, InvalidField, "event", id="null"),
        pytest.param([ORDERS], InvalidField, "event", id="an-array"),
        pytest.param({}, MissingField, "stateMachineArn", id="empty"),
        pytest.param({"generation": 1}, MissingField, "stateMachineArn", id="no-arn"),
        pytest.param({"stateMachineArn": 7}, InvalidField, "stateMachineArn", id="arn-a-number"),
        pytest.param({"stateMachineArn": "Orders"}, InvalidArn, "stateMachineArn", id="arn-a-bare-name"),
        pytest.param(
            {"stateMachineArn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:Orders"},
            InvalidArn,
            "stateMachineArn",
            id="arn-of-a-function",
        ),
        pytest.param({"stateMachineArn": ORDERS, "generation": "1"}, InvalidField, "generation", id="gen-a-string"),
        pytest.param({"stateMachineArn": ORDERS, "generation": -1}, InvalidField, "generation", id="gen-negative"),
        pytest.param({"stateMachineArn": ORDERS, "generation": 1.5}, InvalidField, "generation", id="gen-a-fraction"),
        pytest.param({"stateMachineArn": ORDERS, "generation": True}, InvalidField, "generation", id="gen-a-boolean"),
        pytest.param({"stateMachineArn": ORDERS, "shard": SHARDS}, InvalidField, "shard", id="shard-too-high"),
        pytest.param({"stateMachineArn": ORDERS, "shard": -1}, InvalidField, "shard", id="shard-negative"),
        pytest.param({"stateMachineArn": ORDERS, "shard": "0"}, InvalidField, "shard", id="shard-a-string"),
    ],
)
def test_a_bad_continuation_event_is_rejected_naming_the_field(event, error, field):
    # A malformed generation read as 0 would restart the count that bounds a chain.
    with pytest.raises(error) as raised:
        parse_continuation(event)

    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}:")


def test_a_continuation_event_gives_the_machine_generation_and_shard():
    continuation = parse_continuation({"stateMachineArn": f"{ORDERS}:PROD", "generation": 7, "shard": SHARDS - 1})

    assert (continuation.machine.unqualified, continuation.generation, continuation.shard) == (ORDERS, 7, SHARDS - 1)


def test_a_hand_made_continuation_without_a_generation_starts_a_chain_and_takes_any_shard():
    continuation = parse_continuation({"stateMachineArn": ORDERS})

    assert (continuation.generation, continuation.shard) == (0, None)


def test_the_resumer_function_rejects_a_bad_event_naming_the_field(client):
    with pytest.raises(MissingField, match="stateMachineArn"):
        client.lambda_.invoke("resumer", {"generation": 1})


# (d) A bound on a chain.


def test_no_continuation_is_asked_for_past_max_generations(aws, bucket):
    create_pauser_function(aws.iam, aws.lambda_)
    drainer = build().drainer
    machine = parse_state_machine_arn(ORDERS)

    assert drainer.continue_later(machine, MAX_GENERATIONS) is True
    assert drainer.continue_later(machine, MAX_GENERATIONS + 1) is False


@pytest.mark.stage_env(ResumeConcurrency=CONCURRENCY)
def test_max_generations_stops_a_chain_and_leaves_the_rest_held_for_the_sweep(aws, bucket, resumer_runs, monkeypatch):
    monkeypatch.setattr(chalicelib.continuation, "MAX_GENERATIONS", 2)
    sends = count_sends(monkeypatch)
    create_pauser_function(aws.iam, aws.lambda_)
    services = build()
    for n in range(60):
        hold(services, f"token-{n}")

    report = services.drainer.drain(parse_state_machine_arn(ORDERS), short_budget())
    assert report.continued
    resumer_runs.wait_quiet()

    assert resumer_runs.generations == [1, 2]
    left = tokens_held(aws)
    assert left, "the backlog was too small to reach the bound; hold more tokens"
    # Nothing lost and nothing sent twice: each token is either resumed once or still held.
    assert set(sends.per_token.values()) == {1}
    assert not set(sends.per_token) & set(left)
    assert len(sends.per_token) + len(left) == 60


# (e) A chain whose budget goes before any token is tried.


@pytest.mark.stage_env(ResumeConcurrency=CONCURRENCY)
def test_a_chain_whose_budgets_go_on_listing_and_leasing_stops_after_the_first_hand_on_and_logs_stalled(
    aws, bucket, resumer_runs, monkeypatch, caplog
):
    # Each generation's budget is used up before it tries a single token (as listing
    # and leasing did under a tiny budget): a chain would only spin until the bound.
    monkeypatch.setattr(chalicelib.continuation, "MAX_GENERATIONS", 20)
    monkeypatch.setattr(
        chalice_app.Deadline, "for_context", staticmethod(lambda context, cap_seconds=None: Deadline(0))
    )
    sends = count_sends(monkeypatch)
    create_pauser_function(aws.iam, aws.lambda_)
    services = build()
    for n in range(5):
        hold(services, f"token-{n}")

    with caplog.at_level(logging.INFO, logger=chalice_app.app.log.name):
        report = services.drainer.drain(parse_state_machine_arn(ORDERS), Deadline(0))
        assert report.continued  # the caller's own budget was spent: one hand-on
        resumer_runs.wait_quiet()

    assert resumer_runs.generations == [1]
    assert sends.per_token == Counter()
    assert len(tokens_held(aws)) == 5  # left held, for the sweep
    stalled = [
        json.loads(record.getMessage())
        for record in caplog.records
        if record.name == chalice_app.app.log.name and '"stalled"' in record.getMessage()
    ]
    assert stalled == [{"decision": "stalled", "stateMachine": ORDERS, "remaining": 5}]
