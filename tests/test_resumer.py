"""Resuming held tasks: every answer AWS can give, and the rule that a token is deleted only once its
outcome is known.

S3 is moto; Step Functions is a scripted fake, because moto never answers TaskTimedOut,
TaskDoesNotExist, throttling or 5xx (shared/DESIGN.md §4).
"""

import itertools
import json
import logging
import threading
from datetime import UTC, datetime, timedelta

import boto3
import botocore.session
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.validate import validate_parameters
from moto import mock_aws

from chalicelib.arns import parse_state_machine_arn
from chalicelib.deadline import Deadline
from chalicelib.events import parse_checkpoint_event
from chalicelib.faults import LostAnswers
from chalicelib.logs import DecisionLog
from chalicelib.resumer import SHARDS, Resumer
from chalicelib.store import HeldKey, TokenStore
from tests.conftest import BUCKET, PREFIX
from tests.harness import ACCOUNT, REGION
from tests.moto_fidelity import make_s3_atomic

ORDERS = parse_state_machine_arn(f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:Orders")
QUARANTINE = f"{PREFIX}_sfn-pauser/quarantine/"
T0 = datetime(2023, 12, 1, 12, 0, tzinfo=UTC)
SFN_MODEL = botocore.session.get_session().get_service_model("stepfunctions")


def aws_error(code, status=400, operation="SendTaskSuccess"):
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} (injected)"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


class StepFunctions:
    """SendTaskSuccess and SendTaskFailure, answering as scripted per token; every call recorded.

    Parameters are checked against the real service model, so the fake cannot accept
    a call that AWS would refuse.
    """

    def __init__(self):
        self.calls = []
        self.on_call = None
        self._answers = {}
        self._times = {}
        self._lock = threading.Lock()

    def answer(self, token, error, operation="SendTaskSuccess", times=None):
        """Answer ``error`` for this token, every time or only the first ``times`` times."""
        self._answers[(operation, token)] = error
        if times is not None:
            self._times[(operation, token)] = times

    def send_task_success(self, **params):
        return self._call("SendTaskSuccess", params)

    def send_task_failure(self, **params):
        return self._call("SendTaskFailure", params)

    def sent(self, operation="SendTaskSuccess"):
        return [params for name, params in self.calls if name == operation]

    def _call(self, operation, params):
        validate_parameters(params, SFN_MODEL.operation_model(operation).input_shape)
        with self._lock:
            self.calls.append((operation, params))
        if self.on_call:
            self.on_call()
        key = (operation, params["taskToken"])
        with self._lock:
            error = self._answers.get(key)
            if key in self._times:
                self._times[key] -= 1
                if self._times[key] <= 0:
                    del self._answers[key], self._times[key]
        if error is not None:
            raise error
        return {}


class Clients:
    """What the Resumer takes from AwsClients: S3, and a Step Functions client per region."""

    def __init__(self, s3, sfn):
        self._s3 = s3
        self._sfn = sfn
        self.regions = set()
        self.limiters = {}  # no send pacing in these tests
        self.lost_answers = LostAnswers()  # no botocore retries in the fake client: never set

    def s3(self):
        return self._s3

    def sfn(self, region):
        self.regions.add(region)
        return self._sfn


@pytest.fixture(scope="module")
def s3_client():
    return boto3.client("s3", region_name=REGION)


@pytest.fixture
def s3(s3_client):
    make_s3_atomic()  # claims rely on S3's one-writer-wins; moto needs help (tests/moto_fidelity.py)
    with mock_aws():
        s3_client.create_bucket(Bucket=BUCKET)
        yield s3_client


@pytest.fixture
def store(s3):
    return TokenStore(s3, BUCKET, PREFIX)


@pytest.fixture
def sfn():
    return StepFunctions()


def resume(store, sfn, deadline=None, concurrency=1, machine=ORDERS, exclusive=False):
    clients = Clients(store._s3, sfn)
    resumer = Resumer(store, clients, DecisionLog(logging.getLogger("test-resumer")), concurrency)
    report = resumer.resume(machine, deadline or Deadline(60), exclusive=exclusive)
    assert clients.regions <= {machine.region}  # a token goes to its own machine's region
    return report


def looks(count=200):
    """A budget of ``count`` looks at the clock: a token throttled for good is retried
    until the deadline, and this deadline comes without waiting for real time."""
    ticks = itertools.count()
    return Deadline(count, clock=lambda: float(next(ticks)))


def counts(report):
    return {name: getattr(report, name) for name in ("resumed", "expired", "failed", "remaining")}


def hold(store, token, minutes=0, arn=str(ORDERS), **fields):
    """Hold a task as the handler does, paused ``minutes`` after T0."""
    event = parse_checkpoint_event({"taskToken": token, "stateMachineArn": arn, **fields})
    return store.save(event, now=T0 + timedelta(minutes=minutes))


def held_keys(store, name="Orders"):
    return [item.key for item in store.held(name)]


def control_objects(s3, folder):
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}_sfn-pauser/{folder}/")
    return [item["Key"] for item in listed.get("Contents", [])]


def quarantined(s3):
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=QUARANTINE)
    return {item["Key"]: json.loads(s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())
            for item in listed.get("Contents", [])}  # fmt: skip


def test_resumes_a_held_task_with_its_saved_input_as_the_output_then_deletes_it(store, sfn):
    hold(store, "token-1", input={"order": 7, "lines": [1, None]})

    report = resume(store, sfn)

    [sent] = sfn.sent()
    assert sent["taskToken"] == "token-1"
    # The workflow's data passes through the checkpoint unchanged.
    assert json.loads(sent["output"]) == {"order": 7, "lines": [1, None]}
    assert counts(report) == {"resumed": 1, "expired": 0, "failed": 0, "remaining": 0}
    assert held_keys(store) == []


def test_a_task_held_without_input_resumes_with_an_empty_object(store, sfn, s3):
    # The original SfnPauser's layout: a UUID4 name, only taskToken and timestamp.
    key = f"{PREFIX}Orders/3b241101-e2bb-4255-8caf-4136c566a962.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b'{"taskToken": "seed-token", "timestamp": "2023-12-01T12:34:56.789Z"}')

    report = resume(store, sfn)

    assert sfn.sent() == [{"taskToken": "seed-token", "output": "{}"}]
    assert report.resumed == 1
    assert held_keys(store) == []


def test_a_null_input_goes_back_as_null(store, sfn):
    hold(store, "token-1", input=None)

    resume(store, sfn)

    assert sfn.sent()[0]["output"] == "null"


def test_resumes_oldest_first(store, sfn):
    for minutes, token in [(20, "third"), (0, "first"), (10, "second")]:
        hold(store, token, minutes)

    resume(store, sfn, concurrency=1)

    assert [sent["taskToken"] for sent in sfn.sent()] == ["first", "second", "third"]


def test_sends_each_token_exactly_once_with_many_workers(store, sfn):
    tokens = [f"token-{n}" for n in range(25)]
    for n, token in enumerate(tokens):
        hold(store, token, n)

    report = resume(store, sfn, concurrency=8)

    assert sorted(sent["taskToken"] for sent in sfn.sent()) == sorted(tokens)
    assert report.resumed == 25
    assert held_keys(store) == []


def test_resumes_only_the_named_machine(store, sfn):
    hold(store, "orders-token")
    billing = hold(store, "billing-token", arn=str(ORDERS).replace("Orders", "Billing"))

    resume(store, sfn)

    assert [sent["taskToken"] for sent in sfn.sent()] == ["orders-token"]
    assert held_keys(store, "Billing") == [billing]


def test_nothing_held_is_nothing_to_do(store, sfn):
    assert counts(resume(store, sfn)) == {"resumed": 0, "expired": 0, "failed": 0, "remaining": 0}
    assert sfn.calls == []


@pytest.mark.parametrize("code", ["InvalidToken", "TaskTimedOut", "TaskDoesNotExist"])
def test_a_token_aws_calls_dead_is_counted_expired_and_moved_to_quarantine_with_the_reason(store, sfn, s3, code):
    key = hold(store, "dead-token", executionArn=f"arn:aws:states:{REGION}:{ACCOUNT}:execution:Orders:run-1")
    sfn.answer("dead-token", aws_error(code))

    report = resume(store, sfn)

    assert counts(report) == {"resumed": 0, "expired": 1, "failed": 0, "remaining": 0}
    assert held_keys(store) == []
    # Kept for operators, out of the token folder, with why and what it was.
    [(target, record)] = quarantined(s3).items()
    assert target == QUARANTINE + f"aws/{ACCOUNT}/{REGION}/Orders/" + key.rsplit("/", 1)[-1]
    assert record["reason"] == code
    assert record["originalKey"] == key
    assert json.loads(record["original"])["taskToken"] == "dead-token"


ENDPOINT = f"https://states.{REGION}.amazonaws.com/"


@pytest.mark.parametrize(
    "error",
    [
        aws_error("ThrottlingException"),
        aws_error("ServiceUnavailable", 503),
        aws_error("InternalServerError", 500),
        aws_error("InternalFailure", 500),
        aws_error("AccessDeniedException"),
        aws_error("KMSThrottlingException"),
        ReadTimeoutError(endpoint_url=ENDPOINT),
        ConnectTimeoutError(endpoint_url=ENDPOINT),
        EndpointConnectionError(endpoint_url=ENDPOINT),
    ],
    ids=[
        "throttled",
        "service-unavailable",
        "internal-server-error",
        "internal-failure",
        "access-denied",
        "kms-throttled",
        "read-timeout",
        "connect-timeout",
        "endpoint-unreachable",
    ],
)
def test_never_deletes_a_token_whose_send_failed(store, sfn, s3, error):
    key = hold(store, "live-token", input={"order": 1})
    before = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    sfn.answer("live-token", error)

    report = resume(store, sfn, deadline=looks())

    # The outcome is unknown, so the task stays exactly where it was, for the next resume.
    assert counts(report) == {"resumed": 0, "expired": 0, "failed": 0, "remaining": 1}
    assert held_keys(store) == [key]
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == before
    assert quarantined(s3) == {}


def test_output_aws_refuses_fails_the_task_instead_of_leaving_it_to_hang(store, sfn):
    key = hold(store, "token-1", input={"big": "x"})
    sfn.answer("token-1", aws_error("InvalidOutput"))

    report = resume(store, sfn)

    [failure] = sfn.sent("SendTaskFailure")
    assert failure["taskToken"] == "token-1"
    assert failure["error"] == "SfnPauser.InvalidOutput"
    assert key in failure["cause"]  # so an operator can find what could not be sent
    assert counts(report) == {"resumed": 0, "expired": 0, "failed": 1, "remaining": 0}
    assert held_keys(store) == []


def test_a_task_whose_failure_could_not_be_sent_either_is_kept(store, sfn):
    key = hold(store, "token-1")
    sfn.answer("token-1", aws_error("InvalidOutput"))
    sfn.answer("token-1", aws_error("ThrottlingException"), operation="SendTaskFailure")

    report = resume(store, sfn, deadline=looks())

    assert report.remaining == 1
    assert held_keys(store) == [key]


def test_reports_each_outcome_once(store, sfn):
    # The throttled one last: it is retried until the budget runs out, and the others
    # must have started by then.
    for minutes, token in enumerate(["ok", "dead", "bad-output", "throttled"]):
        hold(store, token, minutes)
    sfn.answer("dead", aws_error("TaskTimedOut"))
    sfn.answer("throttled", aws_error("ThrottlingException"))
    sfn.answer("bad-output", aws_error("InvalidOutput"))

    report = resume(store, sfn, concurrency=4, deadline=looks())

    assert counts(report) == {"resumed": 1, "expired": 1, "failed": 1, "remaining": 1}


def test_a_throttled_token_is_sent_again_in_the_same_pass_and_keeps_its_place(store, sfn, s3):
    # Throttled past botocore's own retries: the token is not skipped for a later pass
    # (or the sweep) while newer ones go ahead; it waits for the limiter's next slot.
    tokens = [f"token-{n}" for n in range(5)]
    for minutes, token in enumerate(tokens):
        hold(store, token, minutes)
    sfn.answer("token-1", aws_error("ThrottlingException"), times=3)

    report = resume(store, sfn, concurrency=1)

    assert counts(report) == {"resumed": 5, "expired": 0, "failed": 0, "remaining": 0}
    assert [sent["taskToken"] for sent in sfn.sent()] == ["token-0", *["token-1"] * 4, *tokens[2:]]
    assert held_keys(store) == []
    assert control_objects(s3, "claims") == []


@pytest.mark.parametrize(
    "other",
    [
        f"arn:aws:states:eu-west-1:{ACCOUNT}:stateMachine:Orders",
        f"arn:aws:states:{REGION}:210987654321:stateMachine:Orders",
    ],
    ids=["other-region", "other-account"],
)
def test_a_task_held_for_a_same_named_machine_elsewhere_is_left_alone(store, sfn, s3, other):
    # Both machines share the folder `Orders/` (the seed's layout); a token is only
    # ever sent to its own machine.
    key = hold(store, "theirs", arn=other)

    resume(store, sfn)

    assert sfn.calls == []
    assert held_keys(store) == [key]
    assert quarantined(s3) == {}


def test_a_task_held_by_a_version_or_alias_is_resumed_with_its_machine(store, sfn):
    hold(store, "by-version", 0, arn=f"{ORDERS}:3")
    hold(store, "by-alias", 1, arn=f"{ORDERS}:PROD")

    report = resume(store, sfn)

    assert report.resumed == 2


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_an_expired_deadline_resumes_nothing_and_reports_everything_remaining(store, sfn):
    keys = [hold(store, f"token-{n}", n) for n in range(4)]
    spent = Deadline(0, clock=Clock())

    report = resume(store, sfn, deadline=spent)

    assert sfn.calls == []
    assert counts(report) == {"resumed": 0, "expired": 0, "failed": 0, "remaining": 4}
    assert held_keys(store) == keys


def test_when_time_runs_out_midway_the_newest_stay_held_and_are_counted(store, sfn):
    keys = [hold(store, f"token-{n}", n) for n in range(6)]
    clock = Clock()
    sfn.on_call = lambda: setattr(clock, "now", clock.now + 1)  # each send takes a second
    deadline = Deadline(2.5, clock=clock)

    report = resume(store, sfn, deadline=deadline, concurrency=1)

    assert 1 <= report.resumed < 6
    assert report.resumed + report.remaining == 6
    assert held_keys(store) == keys[report.resumed :]


def test_an_unreadable_object_is_quarantined_and_the_others_still_resume(store, sfn, s3):
    broken = f"{PREFIX}Orders/3b241101-e2bb-4255-8caf-4136c566a962.json"
    s3.put_object(Bucket=BUCKET, Key=broken, Body=b"{not json")
    hold(store, "good")

    report = resume(store, sfn)

    assert [sent["taskToken"] for sent in sfn.sent()] == ["good"]
    assert report.resumed == 1 and report.failed == 1
    assert held_keys(store) == []
    [record] = quarantined(s3).values()
    assert record["originalKey"] == broken
    assert "not JSON" in record["reason"]


class FlakyStore(TokenStore):
    """The real store, with one S3 operation failing for chosen keys."""

    def __init__(self, store, failing, keys):
        super().__init__(store._s3, store.bucket, store.prefix)
        self._failing = failing
        self._keys = set(keys)

    def _maybe_fail(self, operation, key):
        if operation == self._failing and key in self._keys:
            raise aws_error("SlowDown", 503, operation)

    def load(self, key):
        self._maybe_fail("load", key)
        return super().load(key)

    def delete(self, key):
        self._maybe_fail("delete", key)
        return super().delete(key)

    def delete_many(self, keys):
        # As DeleteObjects reports it: the others are deleted, the failing keys come back.
        if self._failing != "delete":
            return super().delete_many(keys)
        failing = [key for key in keys if key in self._keys]
        return failing + super().delete_many([key for key in keys if key not in self._keys])

    def quarantine(self, key, reason, machine):
        self._maybe_fail("quarantine", key)
        return super().quarantine(key, reason, machine)


def test_an_s3_error_reading_a_task_keeps_it(store, sfn):
    key = hold(store, "token-1")

    report = resume(FlakyStore(store, "load", [key]), sfn)

    assert sfn.calls == []
    assert report.remaining == 1
    assert held_keys(store) == [key]


def test_an_s3_error_quarantining_an_unreadable_object_keeps_it_and_the_rest_still_resume(store, sfn, s3):
    broken = f"{PREFIX}Orders/3b241101-e2bb-4255-8caf-4136c566a962.json"
    s3.put_object(Bucket=BUCKET, Key=broken, Body=b"{not json")
    good = [hold(store, f"good-{n}", n) for n in range(3)]

    # One S3 hiccup must not abort the whole resume (and turn POST /resume into a 500).
    report = resume(FlakyStore(store, "quarantine", [broken]), sfn)

    assert sorted(sent["taskToken"] for sent in sfn.sent()) == ["good-0", "good-1", "good-2"]
    assert report.resumed == 3
    assert report.remaining == 1
    assert set(held_keys(store)) == {broken}
    assert set(good).isdisjoint(held_keys(store))


def test_a_task_resumed_but_not_deleted_still_counts_as_resumed(store, sfn):
    # The execution has moved on; the leftover object meets TaskTimedOut on a later
    # resume and is quarantined, so nothing is sent twice to a live Task.
    key = hold(store, "token-1")

    report = resume(FlakyStore(store, "delete", [key]), sfn)

    assert report.resumed == 1
    assert held_keys(store) == [key]


class GhostStore(TokenStore):
    """Lists one more task than there is: another resumer took it between list and load."""

    def __init__(self, store, ghost):
        super().__init__(store._s3, store.bucket, store.prefix)
        self._ghost = ghost

    def held(self, machine_name):
        yield HeldKey(self._ghost, T0 - timedelta(days=1))
        yield from super().held(machine_name)


def test_a_task_another_resumer_already_took_is_skipped(store, sfn):
    hold(store, "real")

    report = resume(GhostStore(store, f"{PREFIX}Orders/3b241101-e2bb-4255-8caf-4136c566a962.json"), sfn)

    assert [sent["taskToken"] for sent in sfn.sent()] == ["real"]
    assert counts(report) == {"resumed": 1, "expired": 0, "failed": 0, "remaining": 0}


def test_a_task_claimed_by_another_resumer_is_left_to_it(store, sfn):
    # Every proceeding invocation, the API and the sweep may resume at once; a claim
    # makes each token theirs alone, so no token is sent twice.
    hold(store, "mine", 0)
    theirs = hold(store, "theirs", 1)
    store.claim(theirs, owner="another-resumer")

    report = resume(store, sfn)

    assert [sent["taskToken"] for sent in sfn.sent()] == ["mine"]
    assert report.resumed == 1 and report.remaining == 1
    assert held_keys(store) == [theirs]


def test_leaves_no_claim_behind_whatever_the_outcome(store, sfn, s3):
    for minutes, token in enumerate(["ok", "dead", "throttled", "bad-output"]):
        hold(store, token, minutes)
    sfn.answer("dead", aws_error("TaskTimedOut"))
    sfn.answer("throttled", aws_error("ThrottlingException"))
    sfn.answer("bad-output", aws_error("InvalidOutput"))

    resume(store, sfn, deadline=looks())

    # A claim left behind would hold the throttled token back until the sweep clears it.
    assert control_objects(s3, "claims") == []


def test_an_exclusive_resume_leaves_the_machine_to_the_resumer_already_draining_it(store, sfn):
    key = hold(store, "waiting")
    for shard in range(SHARDS):
        assert store.lease(ORDERS, owner="another-resumer", seconds=60, shard=shard) is not None

    report = resume(store, sfn, exclusive=True)

    assert sfn.calls == []
    assert report.busy
    assert report.remaining >= 1
    assert held_keys(store) == [key]


def test_an_exclusive_resume_gives_its_lease_back_when_done(store, sfn, s3):
    hold(store, "waiting")

    report = resume(store, sfn, exclusive=True)

    assert report.resumed == 1
    assert control_objects(s3, "leases") == []


def test_an_exclusive_resume_without_a_deadline_still_works(store, sfn):
    # Deadline.unlimited() is public; the lease it asks for must not overflow.
    hold(store, "waiting")

    report = resume(store, sfn, deadline=Deadline.unlimited(), exclusive=True)

    assert report.resumed == 1
