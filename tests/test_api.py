"""The REST API through Chalice's test client, on moto: answers, errors that name the field, never a 500."""

import json
import re
import uuid
from urllib.parse import urlencode

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws
from moto.stepfunctions.exceptions import ResourceNotFound, StateMachineDoesNotExist
from moto.stepfunctions.models import StepFunctionBackend

from chalicelib.commands import MAX_REASON
from tests.conftest import BUCKET, PREFIX
from tests.harness import ACCOUNT, MOTO_CONFIG, REGION

ORDERS = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:Orders"
EXPRESS = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:Quick"
UNKNOWN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:NoSuchMachine"
JSON = {"Content-Type": "application/json"}
PASS = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


@pytest.fixture(scope="module")
def session():
    return boto3.session.Session()


@pytest.fixture(autouse=True)
def warm_session(session, monkeypatch):
    # conftest rebuilds the app's services for each test; one shared boto3 session keeps
    # the parsed service models, which are most of the cost of a cold start.
    monkeypatch.setattr(boto3.session, "Session", lambda **_: session)


@pytest.fixture(scope="module")
def s3(session):
    return session.client("s3", region_name=REGION)


@pytest.fixture(scope="module")
def sfn(session):
    return session.client("stepfunctions", region_name=REGION)


@pytest.fixture
def machines(s3, sfn):
    """A fresh moto with the token bucket, a Standard machine Orders and an Express one, Quick."""
    with mock_aws(config=MOTO_CONFIG):
        s3.create_bucket(Bucket=BUCKET)
        role = f"arn:aws:iam::{ACCOUNT}:role/states"
        sfn.create_state_machine(name="Orders", definition=PASS, roleArn=role)
        sfn.create_state_machine(name="Quick", definition=PASS, roleArn=role, type="EXPRESS")
        yield


@pytest.fixture
def unknown_machines_are_not_found(monkeypatch):
    """moto lists no tags for a machine it does not know; AWS answers ResourceNotFound."""
    list_tags = StepFunctionBackend.list_tags_for_resource

    def like_aws(self, arn):
        if ":stateMachine:" in arn:
            try:
                self.describe_state_machine(arn)
            except StateMachineDoesNotExist:
                raise ResourceNotFound(arn) from None
        return list_tags(self, arn)

    monkeypatch.setattr(StepFunctionBackend, "list_tags_for_resource", like_aws)


class Raw(str):
    """A body sent exactly as written, not encoded as JSON."""


def post(client, path, body):
    return client.http.post(path, headers=JSON, body=body if isinstance(body, Raw) else json.dumps(body))


def status_of(client, query):
    return client.http.get("/maintenance" + ("?" + urlencode(query) if query else ""))


def tags(sfn, arn=ORDERS):
    return {tag["key"]: tag["value"] for tag in sfn.list_tags_for_resource(resourceArn=arn)["tags"]}


def hold(s3, token, name="Orders"):
    """A held task in the original SfnPauser's layout."""
    key = f"{PREFIX}{name}/{uuid.uuid4()}.json"
    body = {"taskToken": token, "timestamp": "2023-12-01T12:34:56.789Z"}
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(body).encode())
    return key


def assert_error(response, status, field, code=None):
    """A Chalice error body naming the field, and nothing a client should not see."""
    assert response.status_code == status, response.body
    assert b"Traceback" not in response.body
    error = json.loads(response.body)
    assert set(error) == {"Code", "Message"}
    if code is not None:
        assert error["Code"] == code
    assert error["Message"].startswith(f"{field}:"), error["Message"]


# Each malformed request: what is sent, the Code expected (None: any), and the field
# its Message must name. None of them may change anything.
SWITCH, STATUS, RESUME = ("POST", "/maintenance"), ("GET", "/maintenance"), ("POST", "/resume")
BAD_REQUESTS = {
    "switch-without-a-body": (SWITCH, Raw(""), None, "body"),
    "switch-body-not-json": (SWITCH, Raw('{"stateMachineArn": '), None, "body"),
    "switch-body-a-list": (SWITCH, [ORDERS, True], "InvalidField", "body"),
    "switch-body-a-string": (SWITCH, "on", "InvalidField", "body"),
    "switch-body-null": (SWITCH, None, "InvalidField", "body"),
    "switch-unknown-field": (
        SWITCH,
        {"stateMachineArn": ORDERS, "enabled": True, "enable": True},
        "UnknownField",
        "enable",
    ),
    "switch-without-arn": (SWITCH, {"enabled": True}, "MissingField", "stateMachineArn"),
    "switch-arn-a-bare-name": (
        SWITCH,
        {"stateMachineArn": "Orders", "enabled": True},
        "InvalidArn",
        "stateMachineArn",
    ),
    "switch-arn-of-an-execution": (
        SWITCH,
        {"stateMachineArn": ORDERS.replace("stateMachine", "execution") + ":run-1", "enabled": True},
        "InvalidArn",
        "stateMachineArn",
    ),
    "switch-arn-a-number": (
        SWITCH,
        {"stateMachineArn": 7, "enabled": True},
        "InvalidField",
        "stateMachineArn",
    ),
    "switch-without-enabled": (SWITCH, {"stateMachineArn": ORDERS}, "MissingField", "enabled"),
    "switch-enabled-null": (SWITCH, {"stateMachineArn": ORDERS, "enabled": None}, "MissingField", "enabled"),
    "switch-enabled-a-string": (
        SWITCH,
        {"stateMachineArn": ORDERS, "enabled": "true"},
        "InvalidField",
        "enabled",
    ),
    "switch-enabled-a-number": (SWITCH, {"stateMachineArn": ORDERS, "enabled": 1}, "InvalidField", "enabled"),
    "switch-reason-too-long": (
        SWITCH,
        {"stateMachineArn": ORDERS, "enabled": True, "reason": "x" * 1025},
        "InvalidField",
        "reason",
    ),
    "switch-reason-not-a-string": (
        SWITCH,
        {"stateMachineArn": ORDERS, "enabled": True, "reason": ["deploy"]},
        "InvalidField",
        "reason",
    ),
    "switch-resume-not-a-boolean": (
        SWITCH,
        {"stateMachineArn": ORDERS, "enabled": False, "resume": "no"},
        "InvalidField",
        "resume",
    ),
    "status-unknown-query-parameter": (
        STATUS,
        {"stateMachineArn": ORDERS, "verbose": "1"},
        "UnknownField",
        "verbose",
    ),
    "status-misspelt-query-parameter": (
        STATUS,
        {"statemachinearn": ORDERS},
        "UnknownField",
        "statemachinearn",
    ),
    "status-arn-without-name": (
        STATUS,
        {"stateMachineArn": ORDERS[: -len("Orders")]},
        "InvalidArn",
        "stateMachineArn",
    ),
    "status-arn-of-a-lambda-function": (
        STATUS,
        {"stateMachineArn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:sfn-pauser-dev-pauser"},
        "InvalidArn",
        "stateMachineArn",
    ),
    "resume-without-a-body": (RESUME, Raw(""), None, "body"),
    "resume-body-a-list": (RESUME, [{"stateMachineArn": ORDERS}], "InvalidField", "body"),
    "resume-unknown-field": (RESUME, {"stateMachineArn": ORDERS, "forced": True}, "UnknownField", "forced"),
    "resume-without-arn": (RESUME, {"force": True}, "MissingField", "stateMachineArn"),
    "resume-arn-null": (RESUME, {"stateMachineArn": None}, "MissingField", "stateMachineArn"),
    "resume-arn-empty-qualifier": (
        RESUME,
        {"stateMachineArn": ORDERS + ":"},
        "InvalidArn",
        "stateMachineArn",
    ),
    "resume-arn-in-a-list": (RESUME, {"stateMachineArn": [ORDERS]}, "InvalidField", "stateMachineArn"),
    "resume-force-a-string": (RESUME, {"stateMachineArn": ORDERS, "force": "yes"}, "InvalidField", "force"),
    "resume-force-a-number": (RESUME, {"stateMachineArn": ORDERS, "force": 1}, "InvalidField", "force"),
}


def send(client, route, payload):
    method, path = route
    return status_of(client, payload) if method == "GET" else post(client, path, payload)


@pytest.mark.parametrize(("route", "payload", "code", "field"), BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_a_malformed_request_is_a_400_naming_the_field(machines, client, s3, sfn, route, payload, code, field):
    held = hold(s3, "waiting")

    response = send(client, route, payload)

    assert_error(response, 400, field, code)
    assert tags(sfn) == {}  # maintenance untouched
    assert s3.head_object(Bucket=BUCKET, Key=held)  # nothing resumed


def test_a_body_sent_as_a_form_is_refused_as_unsupported_not_misread(machines, client):
    response = client.http.post(
        "/maintenance",
        headers={"Content-Type": "application/x-www-form-urlencoded"},  # curl -d without -H
        body=json.dumps({"stateMachineArn": ORDERS, "enabled": True}),
    )

    assert response.status_code == 415
    assert b"Traceback" not in response.body


@pytest.mark.parametrize(
    ("route", "payload"),
    [
        (SWITCH, {"stateMachineArn": UNKNOWN, "enabled": True}),
        (SWITCH, {"stateMachineArn": UNKNOWN + ":PROD", "enabled": False}),
        (STATUS, {"stateMachineArn": UNKNOWN}),
        (RESUME, {"stateMachineArn": UNKNOWN}),
    ],
    ids=["switch-on", "switch-off-by-alias", "status", "resume"],
)
def test_an_unknown_state_machine_is_a_404_naming_the_field(
    machines, unknown_machines_are_not_found, client, route, payload
):
    response = send(client, route, payload)

    assert_error(response, 404, "stateMachineArn", "StateMachineNotFound")


def test_a_region_that_does_not_exist_is_a_client_error_not_a_500(machines, client):
    # An operator's typo. In AWS the endpoint does not resolve; in moto the region is unknown.
    response = post(client, "/resume", {"stateMachineArn": ORDERS.replace("us-east-1", "us-east-7")})

    assert response.status_code in (400, 404), response.body
    assert_error(response, response.status_code, "stateMachineArn")


def test_switching_on_tags_the_machine_and_says_how_soon_it_takes_effect(machines, client, sfn):
    response = post(client, "/maintenance", {"stateMachineArn": ORDERS, "enabled": True, "reason": "deploy #42"})

    assert response.status_code == 200, response.body
    assert response.json_body == {
        "stateMachineArn": ORDERS,
        "maintenance": True,
        "changed": True,
        # Warm task handlers may act on a cached flag this long (MaintenanceCacheSeconds).
        "effectiveWithinSeconds": 10.0,
        # Who, why, since when and until when, as the tags now record it.
        "since": tags(sfn)["MaintenanceSince"],
        "by": "unknown",  # the test client carries no IAM identity
        "reason": "deploy 42",
        "until": None,
    }
    assert tags(sfn)["Maintenance"] == "true"


def test_switching_on_twice_changes_nothing_the_second_time(machines, client, sfn):
    body = {"stateMachineArn": ORDERS, "enabled": True, "reason": "db migration"}
    post(client, "/maintenance", body)
    first = tags(sfn)

    response = post(client, "/maintenance", body)

    assert response.status_code == 200, response.body
    assert response.json_body["changed"] is False
    # Who switched it on, and since when, still read as the first time.
    assert tags(sfn) == first


@pytest.mark.parametrize("suffix", [":1", ":PROD"], ids=["version", "alias"])
def test_a_version_or_alias_arn_switches_its_machine(machines, client, sfn, suffix):
    response = post(client, "/maintenance", {"stateMachineArn": ORDERS + suffix, "enabled": True})

    assert response.status_code == 200, response.body
    assert response.json_body["stateMachineArn"] == ORDERS
    assert tags(sfn)["Maintenance"] == "true"


def test_an_express_workflow_cannot_be_paused(machines, client, sfn):
    response = post(client, "/maintenance", {"stateMachineArn": EXPRESS, "enabled": True})

    assert_error(response, 400, "stateMachineArn", "NotStandardWorkflow")
    assert tags(sfn, EXPRESS) == {}


def test_a_reason_of_the_longest_length_is_accepted_and_fitted_to_a_tag(machines, client, sfn):
    response = post(client, "/maintenance", {"stateMachineArn": ORDERS, "enabled": True, "reason": "y" * MAX_REASON})

    assert response.status_code == 200, response.body
    assert tags(sfn)["MaintenanceReason"] == "y" * 256  # a tag value holds 256 characters


def test_the_status_says_who_switched_it_on_why_when_and_what_is_held(machines, client, s3):
    post(client, "/maintenance", {"stateMachineArn": ORDERS, "enabled": True, "reason": "db migration"})
    hold(s3, "a")
    hold(s3, "b")
    hold(s3, "elsewhere", name="Billing")

    response = status_of(client, {"stateMachineArn": ORDERS})

    assert response.status_code == 200, response.body
    status = response.json_body
    assert status["stateMachineArn"] == ORDERS
    assert status["maintenance"] is True
    assert status["reason"] == "db migration"
    assert status["by"]
    assert TIMESTAMP.fullmatch(status["since"])
    assert status["paused"] == 2
    assert TIMESTAMP.fullmatch(status["oldestPausedAt"])


def test_the_status_of_a_machine_never_paused(machines, client):
    response = status_of(client, {"stateMachineArn": ORDERS + ":PROD"})

    assert response.status_code == 200, response.body
    assert response.json_body["maintenance"] is False
    assert response.json_body["paused"] == 0
    assert response.json_body["oldestPausedAt"] is None


def test_switching_off_with_resume_false_leaves_the_held_executions_held(machines, client, s3, sfn):
    sfn.tag_resource(resourceArn=ORDERS, tags=[{"key": "Maintenance", "value": "true"}])
    key = hold(s3, "waiting")

    response = post(client, "/maintenance", {"stateMachineArn": ORDERS, "enabled": False, "resume": False})

    assert response.status_code == 200, response.body
    assert response.json_body == {"stateMachineArn": ORDERS, "maintenance": False, "changed": True}
    assert "Maintenance" not in tags(sfn)
    assert s3.head_object(Bucket=BUCKET, Key=key)


def test_switching_off_resumes_what_is_held_and_reports_it(machines, client, s3, sfn):
    sfn.tag_resource(resourceArn=ORDERS, tags=[{"key": "Maintenance", "value": "true"}])
    hold(s3, "stale-token")  # moto answers InvalidToken for a token it never issued

    response = post(client, "/maintenance", {"stateMachineArn": ORDERS, "enabled": False})

    assert response.status_code == 200, response.body
    assert response.json_body["changed"] is True
    assert response.json_body["expired"] == 1
    assert response.json_body["remaining"] == 0


def test_resume_while_maintenance_is_on_is_a_conflict_unless_forced(machines, client, s3, sfn):
    sfn.tag_resource(resourceArn=ORDERS, tags=[{"key": "Maintenance", "value": "true"}])
    key = hold(s3, "stale-token")

    refused = post(client, "/resume", {"stateMachineArn": ORDERS})

    assert_error(refused, 409, "stateMachineArn", "MaintenanceIsOn")
    assert s3.head_object(Bucket=BUCKET, Key=key)

    forced = post(client, "/resume", {"stateMachineArn": ORDERS, "force": True})

    assert forced.status_code == 200, forced.body
    assert forced.json_body["stateMachineArn"] == ORDERS
    assert forced.json_body["expired"] == 1
    assert {"resumed", "expired", "remaining"} <= set(forced.json_body)


def test_resume_with_maintenance_off_needs_no_force(machines, client):
    response = post(client, "/resume", {"stateMachineArn": ORDERS, "force": False})

    assert response.status_code == 200, response.body
    assert response.json_body["resumed"] == 0
    assert response.json_body["remaining"] == 0


# Fuzzing: whatever is wrong with a request, the answer is a 400 that names a field.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
not_booleans = json_values.filter(lambda value: not isinstance(value, bool) and value is not None)
not_strings = json_values.filter(lambda value: not isinstance(value, str) and value is not None)
not_arns = st.text(max_size=60).filter(lambda text: text.strip() and not text.startswith("arn:")) | st.sampled_from(
    [ORDERS + ":", ORDERS.replace(":states:", ":lambda:"), ORDERS.replace("Orders", "Ord ers")]
)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def corrupt(valid, fields):
    """One thing wrong with a valid body, and the field the error must name."""
    unknown = st.dictionaries(
        st.text(min_size=1, max_size=10).filter(lambda name: name not in valid and ":" not in name),
        json_values,
        min_size=1,
        max_size=2,
    ).map(lambda extra: ({**valid, **extra}, ", ".join(sorted(extra))))
    wrong = []
    for field, bad_values in fields.items():
        wrong.append(bad_values.map(lambda value, field=field: ({**valid, field: value}, field)))
    return st.one_of(unknown, *wrong)


switch_bodies = corrupt(
    {"stateMachineArn": ORDERS, "enabled": True, "reason": "r", "resume": True},
    {
        "stateMachineArn": not_strings | not_arns,
        "enabled": not_booleans,
        "reason": not_strings | st.text(min_size=1025, max_size=1100),
        "resume": not_booleans,
    },
)
resume_bodies = corrupt(
    {"stateMachineArn": ORDERS, "force": True},
    {"stateMachineArn": not_strings | not_arns, "force": not_booleans},
)


@FUZZ
@given(body_and_field=switch_bodies)
def test_any_malformed_switch_is_a_400_naming_the_field(machines, client, sfn, body_and_field):
    body, field = body_and_field

    assert_error(post(client, "/maintenance", body), 400, field)
    assert tags(sfn) == {}


@FUZZ
@given(body_and_field=resume_bodies)
def test_any_malformed_resume_is_a_400_naming_the_field(machines, client, body_and_field):
    body, field = body_and_field

    assert_error(post(client, "/resume", body), 400, field)


@FUZZ
@given(
    path=st.sampled_from(["/maintenance", "/resume"]),
    body=json_values.map(json.dumps).map(Raw) | st.text(max_size=40).map(Raw),
)
def test_any_body_at_all_is_answered_without_a_500(machines, client, path, body):
    response = post(client, path, body)

    assert 400 <= response.status_code < 500, response.body
    assert b"Traceback" not in response.body


@FUZZ
@given(query=st.dictionaries(st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=40), max_size=3))
def test_any_status_query_is_answered_without_a_500(machines, client, query):
    response = status_of(client, query)

    # Without a stateMachineArn, GET /maintenance is the (valid) overview of every machine.
    valid_overview = not query and response.status_code == 200
    assert valid_overview or 400 <= response.status_code < 500, response.body
    assert b"Traceback" not in response.body


@pytest.mark.parametrize("path", ["/maintenance", "/resume", "/abort"])
@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_a_body_nested_too_deeply_for_the_parser_is_a_400_naming_the_body(machines, client, path, opening):
    closing = "]" if opening == "[" else "}"
    body = Raw(opening * 50_000 + "1" + closing * 50_000)

    response = post(client, path, body)

    assert_error(response, 400, "body", "InvalidField")
    assert "nested too deeply" in json.loads(response.body)["Message"]
