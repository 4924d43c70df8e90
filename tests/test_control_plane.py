"""The CI control plane through the REST API, on moto: switching many machines, `until`,
dry runs, the caller's identity, the allow-list, the listings, selective resume, abort
and the audit trail.

Fake tokens (moto's plain mode) where only S3 and the answers matter; real executions
(the `workflow` fixture) wherever what happens to an execution is the point.
"""

import json
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import boto3
import pytest
from chalice.local import LambdaContext
from moto import mock_aws

import app as chalice_app
from chalicelib.arns import parse_state_machine_arn
from chalicelib.commands import ABORT_ERROR, MAX_ERROR, MAX_MACHINES
from chalicelib.deadline import Deadline
from chalicelib.maintenance import tag_value
from chalicelib.pauser import Pauser
from chalicelib.store import COUNT_PAGES, iso_timestamp, machine_tag, new_token_id, paused_at_of
from tests.conftest import BUCKET, PREFIX
from tests.harness import ACCOUNT, REGION, wait_until
from tests.sends import counting_sends
from tests.test_fleet import for_machine, refuse, tags_of_deleted_machines_are_not_found
from tests.test_store import SmallPages


def arn_of(name):
    return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"


ORDERS = arn_of("Orders")
BILLING = arn_of("Billing")
MISSING = arn_of("NoSuchMachine")
AUDIT_FOLDER = f"{PREFIX}_sfn-pauser/audit/"
JSON = {"Content-Type": "application/json"}
PASS = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})
DEPLOYER = f"arn:aws:iam::{ACCOUNT}:user/ci-deployer"
ON_CALL = f"arn:aws:sts::{ACCOUNT}:assumed-role/OnCall/alice"


@pytest.fixture(scope="module")
def session():
    return boto3.session.Session()


@pytest.fixture(autouse=True)
def warm_session(session, monkeypatch):
    # Each test builds the app's services afresh; one boto3 session keeps the parsed
    # service models, which are most of the cost of a cold start.
    monkeypatch.setattr(boto3.session, "Session", lambda **_: session)


class Plain:
    """moto in plain mode: S3 and the Step Functions control plane, no interpreter."""

    def __init__(self, session):
        self.s3 = session.client("s3", region_name=REGION)
        self.sfn = session.client("stepfunctions", region_name=REGION)

    def machine(self, name, kind="STANDARD"):
        return self.sfn.create_state_machine(
            name=name, definition=PASS, roleArn=f"arn:aws:iam::{ACCOUNT}:role/states", type=kind
        )["stateMachineArn"]

    def tags(self, arn):
        return {tag["key"]: tag["value"] for tag in self.sfn.list_tags_for_resource(resourceArn=arn)["tags"]}

    def keys(self, prefix=""):
        paginator = self.s3.get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in paginator.paginate(Bucket=BUCKET, Prefix=prefix)
            for item in page.get("Contents", [])
        ]

    def objects(self, prefix=""):
        """Every object below ``prefix`` with its ETag and body, to see what changed."""
        return {key: (self.s3.head_object(Bucket=BUCKET, Key=key)["ETag"], self.body(key)) for key in self.keys(prefix)}

    def body(self, key):
        return self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


@pytest.fixture
def plain(session):
    # conftest's plain_aws builds a fresh default boto3 session for each test (moto
    # resets boto3.DEFAULT_SESSION), a fifth of a second; this module's session is warm.
    with mock_aws():
        aws = Plain(session)
        aws.s3.create_bucket(Bucket=BUCKET)
        aws.machine("Orders")
        yield aws


def post(client, path, body):
    return client.http.post(path, headers=JSON, body=json.dumps(body))


def get(client, path, **query):
    return client.http.get(path + ("?" + urlencode(query) if query else ""))


def switch(client, **body):
    return post(client, "/maintenance", body)


def ok(response):
    assert response.status_code == 200, response.body
    return response.json_body


def assert_error(response, status, field, code=None):
    assert response.status_code == status, response.body
    error = json.loads(response.body)
    assert set(error) == {"Code", "Message"}
    if code is not None:
        assert error["Code"] == code, error
    assert error["Message"].startswith(f"{field}:"), error["Message"]
    return error


def hold(client, machine=ORDERS, execution=None):
    """A fake token held the way the checkpoint holds one (maintenance must be on); returns the token."""
    token = f"token-{uuid.uuid4()}"
    event = {"taskToken": token, "stateMachineArn": machine, "executionArn": execution or f"{machine}:{token}"}
    answer = client.lambda_.invoke("pauser", event).payload
    assert answer["status"] == "maintenance", answer
    return token


def events(client, machine=ORDERS, **query):
    return ok(get(client, "/audit", stateMachineArn=machine, **query))["events"]


def pages(client, path, items, **query):
    """Every page of a listing, following nextToken; the pages as lists of items."""
    found, token = [], None
    for _ in range(20):
        page = ok(get(client, path, **query, **({"nextToken": token} if token else {})))
        found.append(page[items])
        token = page["nextToken"]
        if token is None:
            return found
    raise AssertionError("the listing never ended")


def call_as(user_arn, method, path, body=None, query=None):
    """Call a route as API Gateway does after its IAM authorizer let ``user_arn`` in.

    The test client carries no identity, so this hands the app the API Gateway
    proxy event itself, with ``requestContext.identity`` filled in.
    """
    event = {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {"content-type": "application/json", "host": "abcdef1234.execute-api.us-east-1.amazonaws.com"},
        "multiValueHeaders": {"content-type": ["application/json"]},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {name: [value] for name, value in query.items()} if query else None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": method,
            "path": f"/api{path}",
            "stage": "api",
            "accountId": ACCOUNT,
            "requestId": str(uuid.uuid4()),
            "identity": {
                "userArn": user_arn,
                "caller": "AIDAEXAMPLECALLER",
                "user": "AIDAEXAMPLECALLER",
                "accountId": ACCOUNT,
                "accessKey": "AKIAEXAMPLE",
                "sourceIp": "203.0.113.7",
            },
        },
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }
    response = chalice_app.app(event, LambdaContext("sfn-pauser-dev", 512, max_runtime_ms=30_000))
    return response["statusCode"], json.loads(response["body"])


def parked(workflow, execution):
    """Held, and its checkpoint has answered: the handler re-checks the flag after saving
    the token and resumes it itself if maintenance was lifted meanwhile."""
    events = workflow.aws.sfn.get_execution_history(executionArn=execution)["events"]
    return any(event["type"] == "TaskSubmitted" for event in events)


def hold_in_order(workflow, count):
    """Real executions held one after the other, so their pause order is their start order."""
    executions = []
    for n in range(count):
        executions.append(workflow.start({"n": n}))
        workflow.wait_held(n + 1)
        wait_until(lambda execution=executions[-1]: parked(workflow, execution), what=f"run {n} parked")
    return executions


def in_an_hour():
    return (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)


# -- POST /maintenance: many machines


def test_switching_many_machines_answers_for_each_in_order_and_a_missing_one_does_not_stop_the_others(plain, client):
    payments = plain.machine("Payments")
    express = plain.machine("Quick", kind="EXPRESS")

    answer = ok(switch(client, stateMachineArns=[ORDERS, MISSING, express, payments], enabled=True, reason="deploy"))

    first, missing, fast, last = answer["results"]
    assert [item["stateMachineArn"] for item in answer["results"]] == [ORDERS, MISSING, express, payments]
    assert first["maintenance"] is True and first["changed"] is True
    assert last["maintenance"] is True and last["changed"] is True
    assert missing["error"]["Code"] == "StateMachineNotFound"
    assert missing["error"]["Status"] == 404
    assert MISSING in missing["error"]["Message"]
    assert (fast["error"]["Code"], fast["error"]["Status"]) == ("NotStandardWorkflow", 400)
    assert plain.tags(express) == {}
    assert plain.tags(ORDERS)["Maintenance"] == "true"
    assert plain.tags(payments)["Maintenance"] == "true"
    assert [event["action"] for event in events(client, ORDERS)] == ["maintenance-on"]
    assert [event["action"] for event in events(client, payments)] == ["maintenance-on"]


@pytest.mark.stage_env(AllowedStateMachines=f"arn:aws:states:*:{ACCOUNT}:stateMachine:Orders*")
def test_a_machine_outside_the_allow_list_fails_alone_in_a_bulk_switch_with_403(plain, client):
    plain.machine("Billing")

    answer = ok(switch(client, stateMachineArns=[BILLING, ORDERS], enabled=True))

    refused, switched = answer["results"]
    assert refused["stateMachineArn"] == BILLING
    assert refused["error"]["Code"] == "StateMachineNotAllowed"
    assert refused["error"]["Status"] == 403
    assert switched["changed"] is True
    assert plain.tags(BILLING) == {}
    assert plain.tags(ORDERS)["Maintenance"] == "true"


BAD_BULK = {
    "both-arn-and-arns": {"stateMachineArn": ORDERS, "stateMachineArns": [ORDERS]},
    "more-than-the-maximum": {"stateMachineArns": [arn_of(f"M{n}") for n in range(MAX_MACHINES + 1)]},
    "the-same-machine-twice": {"stateMachineArns": [ORDERS, BILLING, ORDERS]},
    "the-same-machine-by-its-alias": {"stateMachineArns": [ORDERS, ORDERS + ":PROD"]},
    "an-empty-list": {"stateMachineArns": []},
    "not-a-list": {"stateMachineArns": ORDERS},
}


@pytest.mark.parametrize("body", BAD_BULK.values(), ids=BAD_BULK.keys())
def test_a_bad_list_of_machines_is_a_400_naming_state_machine_arns_and_changes_nothing(plain, client, body):
    response = switch(client, enabled=True, **body)

    assert_error(response, 400, "stateMachineArns", "InvalidField")
    assert plain.tags(ORDERS) == {}
    assert plain.keys() == []


# -- POST /maintenance: until, dry runs, repeats, resume: false, reasons


def bad_until():
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    return {
        "in-the-past": {"enabled": True, "until": past},
        "not-a-time": {"enabled": True, "until": "tomorrow at six"},
        "an-impossible-date": {"enabled": True, "until": "2030-02-30T10:00:00Z"},
        "a-number": {"enabled": True, "until": 1893456000},
        "when-switching-off": {"enabled": False, "until": in_an_hour().isoformat()},
    }


@pytest.mark.parametrize("case", bad_until().keys())
def test_a_bad_until_is_a_400_naming_until_and_changes_nothing(plain, client, case):
    response = switch(client, stateMachineArn=ORDERS, **bad_until()[case])

    assert_error(response, 400, "until", "InvalidField")
    assert plain.tags(ORDERS) == {}
    assert plain.keys() == []


def test_until_is_recorded_on_the_tags_and_shown_by_the_status(plain, client):
    until = in_an_hour()
    expected = until.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    answer = ok(switch(client, stateMachineArn=ORDERS, enabled=True, until=until.isoformat()))

    assert answer["until"] == expected
    assert plain.tags(ORDERS)["MaintenanceUntil"] == expected
    status = ok(get(client, "/maintenance", stateMachineArn=ORDERS))
    assert status["maintenance"] is True
    assert status["until"] == expected
    [event] = events(client)
    assert event["until"] == expected


def test_switching_on_again_after_a_passed_until_puts_the_machine_back_in_maintenance(plain, client):
    # A window whose until passed a moment ago: the tags still say on until the
    # sweep (every minute) lifts it, but the machine is already out of maintenance.
    passed = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    plain.sfn.tag_resource(
        resourceArn=ORDERS,
        tags=[{"key": "Maintenance", "value": "true"}, {"key": "MaintenanceUntil", "value": passed}],
    )
    assert ok(get(client, "/maintenance", stateMachineArn=ORDERS))["maintenance"] is False

    answer = ok(switch(client, stateMachineArn=ORDERS, enabled=True))  # the pipeline's next run

    status = ok(get(client, "/maintenance", stateMachineArn=ORDERS))
    assert (status["maintenance"], status["until"]) == (True, None), status
    assert (answer["maintenance"], answer["changed"], answer["until"]) == (True, True, None), answer
    assert "MaintenanceUntil" not in plain.tags(ORDERS)


def test_a_dry_run_changes_nothing_and_says_what_would_change_and_how_many_are_held(plain, client):
    ok(switch(client, stateMachineArn=ORDERS, enabled=True))
    hold(client)
    hold(client)
    before_tags, before_objects = plain.tags(ORDERS), plain.objects()

    would_lift = ok(switch(client, stateMachineArn=ORDERS, enabled=False, dryRun=True))
    would_repeat = ok(switch(client, stateMachineArn=ORDERS, enabled=True, dryRun=True))
    would_retag = ok(switch(client, stateMachineArn=ORDERS, enabled=True, reason="another reason", dryRun=True))

    assert would_lift["dryRun"] is True
    assert would_lift["maintenance"] is False and would_lift["changed"] is True
    assert would_lift["paused"] == 2
    assert would_repeat["changed"] is False and would_repeat["paused"] == 2
    assert would_retag["changed"] is True and would_retag["reason"] == "another reason"
    assert plain.tags(ORDERS) == before_tags
    assert plain.objects() == before_objects  # no token resumed, no mirror or audit event written
    assert [event["action"] for event in events(client)] == ["maintenance-on"]


def test_a_dry_run_on_a_machine_never_seen_writes_nothing_at_all(plain, client):
    answer = ok(switch(client, stateMachineArn=ORDERS, enabled=True, dryRun=True))

    assert answer["changed"] is True and answer["paused"] == 0
    assert plain.tags(ORDERS) == {}
    assert plain.keys() == []


def test_switching_off_a_machine_that_is_off_answers_changed_false(plain, client):
    ok(switch(client, stateMachineArn=ORDERS, enabled=True))
    first = ok(switch(client, stateMachineArn=ORDERS, enabled=False))

    repeat = ok(switch(client, stateMachineArn=ORDERS, enabled=False))

    assert first["changed"] is True
    assert repeat["changed"] is False
    assert repeat["maintenance"] is False
    assert plain.tags(ORDERS) == {}


def test_repeating_a_bulk_switch_answers_changed_false_for_each(plain, client):
    payments = plain.machine("Payments")
    ok(switch(client, stateMachineArns=[ORDERS, payments], enabled=True, reason="db"))
    tags_before = plain.tags(payments)

    repeat = ok(switch(client, stateMachineArns=[ORDERS, payments], enabled=True, reason="db"))

    assert [result["changed"] for result in repeat["results"]] == [False, False]
    assert plain.tags(payments) == tags_before


def test_the_reason_is_fitted_on_the_tag_and_kept_whole_in_the_audit(plain, client):
    reason = "deploy #42, db migration (ticket: OPS-7) " + "x" * 300

    ok(switch(client, stateMachineArn=ORDERS, enabled=True, reason=reason))

    assert plain.tags(ORDERS)["MaintenanceReason"] == tag_value(reason)
    assert len(tag_value(reason)) == 256
    assert tag_value(reason).startswith("deploy 42 db migration ticket: OPS-7 ")
    [event] = events(client)
    assert event["reason"] == reason


def test_switching_off_with_resume_false_leaves_real_executions_waiting_until_resumed(workflow, client):
    ok(switch(client, stateMachineArn=workflow.arn, enabled=True))
    executions = hold_in_order(workflow, 2)

    answer = ok(switch(client, stateMachineArn=workflow.arn, enabled=False, resume=False))

    assert answer == {"stateMachineArn": workflow.arn, "maintenance": False, "changed": True}
    assert len(workflow.held_keys()) == 2
    assert [workflow.status(execution) for execution in executions] == ["RUNNING", "RUNNING"]
    assert ok(post(client, "/resume", {"stateMachineArn": workflow.arn}))["resumed"] == 2
    for execution in executions:
        workflow.wait_for(execution, "SUCCEEDED")


def test_lifting_with_resume_false_leaves_the_held_executions_held_while_a_checkpoint_is_saving(
    plain, client, monkeypatch
):
    ok(switch(client, stateMachineArn=ORDERS, enabled=True))
    held = [hold(client) for _ in range(2)]
    save = Pauser._hold

    def lifted_while_saving(pauser, checkpoint):
        key = save(pauser, checkpoint)
        # An operator lifts maintenance, leaving what is held to be looked at first,
        # just as one more execution reaches the checkpoint.
        ok(switch(client, stateMachineArn=ORDERS, enabled=False, resume=False))
        return key

    monkeypatch.setattr(Pauser, "_hold", lifted_while_saving)
    with counting_sends() as sends:
        client.lambda_.invoke("pauser", {"taskToken": "arriving", "stateMachineArn": ORDERS, "executionArn": "late"})

    assert [token for token in held if token in sends.successes] == []
    assert len(plain.keys(f"{PREFIX}Orders/")) >= 2  # the arriving one may go on: maintenance is off


# -- who: the caller's IAM identity


def test_the_callers_iam_identity_is_who_switched_it_on_and_the_actor_of_every_action(workflow, client, aws):
    status, switched = call_as(DEPLOYER, "POST", "/maintenance", {"stateMachineArn": workflow.arn, "enabled": True})
    assert status == 200, switched
    [execution] = hold_in_order(workflow, 1)

    resumed = call_as(ON_CALL, "POST", "/resume", {"stateMachineArn": workflow.arn, "force": True})
    aborted = call_as(ON_CALL, "POST", "/abort", {"stateMachineArn": workflow.arn, "all": True})

    assert (resumed[0], aborted[0]) == (200, 200), (resumed, aborted)
    assert switched["by"] == DEPLOYER
    tags = {tag["key"]: tag["value"] for tag in aws.sfn.list_tags_for_resource(resourceArn=workflow.arn)["tags"]}
    assert tags["MaintenanceBy"] == DEPLOYER
    status, trail = call_as(DEPLOYER, "GET", "/audit", query={"stateMachineArn": workflow.arn})
    assert status == 200, trail
    assert [(event["action"], event["actor"]) for event in trail["events"]] == [
        ("abort", ON_CALL),
        ("resume", ON_CALL),
        ("maintenance-on", DEPLOYER),
    ]
    workflow.wait_for(execution, "SUCCEEDED")


# -- the allow-list

ORDERS_ONLY = f"arn:aws:states:*:{ACCOUNT}:stateMachine:Orders*"
ROUTES_FOR = {
    "switch": lambda client, arn: switch(client, stateMachineArn=arn, enabled=True),
    "switch-off": lambda client, arn: switch(client, stateMachineArn=arn, enabled=False),
    "status": lambda client, arn: get(client, "/maintenance", stateMachineArn=arn),
    "paused": lambda client, arn: get(client, "/maintenance/paused", stateMachineArn=arn),
    "resume": lambda client, arn: post(client, "/resume", {"stateMachineArn": arn, "force": True}),
    "abort": lambda client, arn: post(client, "/abort", {"stateMachineArn": arn, "all": True}),
    "audit": lambda client, arn: get(client, "/audit", stateMachineArn=arn),
}


@pytest.mark.stage_env(AllowedStateMachines=ORDERS_ONLY)
@pytest.mark.parametrize("route", ROUTES_FOR.keys())
def test_every_route_refuses_a_machine_outside_the_allow_list_with_a_403_naming_it(plain, client, route):
    plain.machine("Billing")
    plain.sfn.tag_resource(resourceArn=BILLING, tags=[{"key": "Maintenance", "value": "true"}])

    error = assert_error(ROUTES_FOR[route](client, BILLING), 403, "stateMachineArn", "StateMachineNotAllowed")

    assert BILLING in error["Message"]
    assert plain.tags(BILLING) == {"Maintenance": "true"}
    assert plain.keys() == []


@pytest.mark.stage_env(AllowedStateMachines=ORDERS_ONLY)
@pytest.mark.parametrize("route", ROUTES_FOR.keys())
def test_every_route_serves_a_machine_inside_the_allow_list(plain, client, route):
    orders_eu = plain.machine("OrdersEU")

    ok(ROUTES_FOR[route](client, orders_eu))


@pytest.mark.stage_env(AllowedStateMachines=ORDERS_ONLY)
def test_the_overview_lists_only_machines_inside_the_allow_list(plain, client):
    orders_eu = plain.machine("OrdersEU")
    plain.machine("Billing")
    ok(switch(client, stateMachineArns=[ORDERS, orders_eu], enabled=True))
    hold(client, ORDERS)
    # Billing's workflow uses the checkpoint too, and an operator tagged it by hand:
    # it is in maintenance, mirrored and holding, but not this sfn-pauser's to show.
    plain.sfn.tag_resource(resourceArn=BILLING, tags=[{"key": "Maintenance", "value": "true"}])
    hold(client, BILLING)

    listed = ok(get(client, "/maintenance"))

    assert [machine["stateMachineArn"] for machine in listed["stateMachines"]] == [ORDERS, orders_eu]


# -- GET /maintenance without a machine: the overview


def test_the_overview_lists_only_machines_holding_tokens_or_in_maintenance_a_page_at_a_time(plain, client):
    names = ["Alpha", "Bravo", "Charlie", "Delta", "Echo"]
    listed = [plain.machine(name) for name in names]
    idle, untouched, drained = plain.machine("Idle"), plain.machine("Untouched"), plain.machine("Drained")
    ok(switch(client, stateMachineArns=[*listed, idle, drained], enabled=True))
    for machine in (arn_of("Bravo"), arn_of("Charlie"), arn_of("Charlie"), arn_of("Delta"), drained):
        hold(client, machine)
    # Charlie and Delta hold executions with maintenance off; Idle was on and is off
    # (its mirror remains); Drained held one that its lift resumed.
    with counting_sends():
        ok(switch(client, stateMachineArns=[arn_of("Charlie"), arn_of("Delta")], enabled=False, resume=False))
        ok(switch(client, stateMachineArns=[idle, drained], enabled=False))

    found = pages(client, "/maintenance", "stateMachines", limit="2")

    assert [len(page) for page in found] == [2, 2, 1]
    seen = [machine["stateMachineArn"] for page in found for machine in page]
    assert seen == sorted(listed)
    assert untouched not in seen and idle not in seen and drained not in seen
    by_arn = {machine["stateMachineArn"]: machine for page in found for machine in page}
    assert [(by_arn[arn]["maintenance"], by_arn[arn]["paused"]) for arn in listed] == [
        (True, 0),
        (True, 1),
        (False, 2),
        (False, 1),
        (True, 0),
    ]


def test_the_overview_says_who_switched_each_machine_on_why_and_until_when(plain, client):
    on, off = plain.machine("Alpha"), plain.machine("Bravo")
    ok(switch(client, stateMachineArn=on, enabled=True, reason="deploy 42", until="2099-01-01T00:00:00Z"))
    ok(switch(client, stateMachineArn=off, enabled=True))
    hold(client, off)
    ok(switch(client, stateMachineArn=off, enabled=False, resume=False))

    [page] = pages(client, "/maintenance", "stateMachines")

    by_arn = {machine["stateMachineArn"]: machine for machine in page}
    assert by_arn[on]["maintenance"] is True
    assert (by_arn[on]["reason"], by_arn[on]["until"]) == ("deploy 42", "2099-01-01T00:00:00.000Z")
    assert by_arn[on]["by"] and by_arn[on]["since"]
    assert ok(get(client, "/maintenance", stateMachineArn=on))["by"] == by_arn[on]["by"]
    # Off: nobody's, whatever it still holds.
    assert (by_arn[off]["maintenance"], by_arn[off]["paused"]) == (False, 1)
    assert [by_arn[off][key] for key in ("since", "by", "reason", "until")] == [None] * 4


BAD_LIMITS = ["0", "1001", "x", "-1", "1.5", " 7", "١٢"]  # the last: Arabic-Indic digits


@pytest.mark.parametrize("path", ["/maintenance", "/maintenance/paused", "/audit"])
@pytest.mark.parametrize("limit", BAD_LIMITS)
def test_a_bad_page_size_is_a_400_naming_limit(plain, client, path, limit):
    query = {"limit": limit} if path == "/maintenance" else {"stateMachineArn": ORDERS, "limit": limit}

    assert_error(get(client, path, **query), 400, "limit", "InvalidField")


UNKNOWN_QUERIES = {
    "overview": ("/maintenance", {"verbose": "1"}, "verbose"),
    "overview-misspelt": ("/maintenance", {"Limit": "2"}, "Limit"),
    "status-with-a-page-size": ("/maintenance", {"stateMachineArn": ORDERS, "limit": "2"}, "limit"),
    "paused": ("/maintenance/paused", {"stateMachineArn": ORDERS, "all": "true"}, "all"),
    "audit": ("/audit", {"stateMachineArn": ORDERS, "since": "yesterday"}, "since"),
}


@pytest.mark.parametrize(("path", "query", "field"), UNKNOWN_QUERIES.values(), ids=UNKNOWN_QUERIES.keys())
def test_an_unknown_query_parameter_is_a_400_naming_it(plain, client, path, query, field):
    assert_error(get(client, path, **query), 400, field, "UnknownField")


@pytest.mark.parametrize("path", ["/maintenance/paused", "/audit"])
def test_a_malformed_next_token_is_a_400_naming_it_not_an_outage_to_retry(plain, client, path):
    # A nextToken is only ever one this API issued; S3 takes it as StartAfter.
    ok(switch(client, stateMachineArn=ORDERS, enabled=True))

    assert_error(get(client, path, stateMachineArn=ORDERS, nextToken="page\x03two\x1f"), 400, "nextToken")


@pytest.mark.parametrize("path", ["/maintenance/paused", "/audit"])
def test_a_listing_of_one_machine_needs_the_machine(plain, client, path):
    assert_error(get(client, path, limit="5"), 400, "stateMachineArn", "MissingField")


# -- GET /maintenance/paused


def test_the_paused_listing_shows_held_executions_oldest_first_and_never_a_token(workflow, client, aws):
    ok(switch(client, stateMachineArn=workflow.arn, enabled=True))
    executions = hold_in_order(workflow, 3)
    tokens = [
        json.loads(aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())["taskToken"]
        for key in workflow.held_keys()
    ]

    response = get(client, "/maintenance/paused", stateMachineArn=workflow.arn)

    listing = ok(response)
    assert [item["executionArn"] for item in listing["paused"]] == executions
    assert [item["pausedAt"] for item in listing["paused"]] == sorted(item["pausedAt"] for item in listing["paused"])
    assert all(item["ageSeconds"] >= 0 for item in listing["paused"])
    assert listing["nextToken"] is None
    assert len(tokens) == 3
    for token in tokens:
        assert token not in response.body.decode()
    assert "taskToken" not in response.body.decode()


def test_the_paused_listing_pages_with_limit_and_next_token(plain, client):
    ok(switch(client, stateMachineArn=ORDERS, enabled=True))
    held = [f"{ORDERS.replace('stateMachine', 'execution')}:run-{n}" for n in range(5)]
    tokens = [hold(client, execution=execution) for execution in held]

    found = pages(client, "/maintenance/paused", "paused", stateMachineArn=ORDERS, limit="2")

    assert [len(page) for page in found] == [2, 2, 1]
    assert [item["executionArn"] for page in found for item in page] == held
    shown = json.dumps(found)
    assert not any(token in shown for token in tokens)


def test_a_machine_lists_only_its_own_executions_when_a_namesake_in_another_region_shares_its_folder(
    plain, client, session
):
    # Held tasks live in {Prefix}{Name}/, so Orders in us-east-1 and Orders in
    # eu-west-1 share a folder; each machine's listing and count are still its own
    # (the keys carry a tag of their machine, so counting needs no GET per token).
    west = session.client("stepfunctions", region_name="eu-west-1").create_state_machine(
        name="Orders", definition=PASS, roleArn=f"arn:aws:iam::{ACCOUNT}:role/states"
    )["stateMachineArn"]
    ok(switch(client, stateMachineArns=[ORDERS, west], enabled=True))
    hold(client, ORDERS, execution="east-run")

    listing = ok(get(client, "/maintenance/paused", stateMachineArn=west))
    status = ok(get(client, "/maintenance", stateMachineArn=west))

    assert listing["paused"] == [], listing
    assert status["paused"] == 0, status
    assert ok(get(client, "/maintenance", stateMachineArn=ORDERS))["paused"] == 1
    assert [
        item["executionArn"] for item in ok(get(client, "/maintenance/paused", stateMachineArn=ORDERS))["paused"]
    ] == ["east-run"]


# -- POST /resume


def test_resuming_chosen_executions_resumes_only_those(workflow, client):
    workflow.maintenance("true")
    first, second, third, fourth = hold_in_order(workflow, 4)
    workflow.maintenance(None)

    answer = ok(post(client, "/resume", {"stateMachineArn": workflow.arn, "executionArns": [second, fourth]}))

    assert answer["resumed"] == 2
    workflow.wait_for(second, "SUCCEEDED")
    workflow.wait_for(fourth, "SUCCEEDED")
    assert [workflow.status(first), workflow.status(third)] == ["RUNNING", "RUNNING"]
    assert len(workflow.held_keys()) == 2


def test_a_limit_resumes_only_the_oldest(workflow, client):
    workflow.maintenance("true")
    oldest, second, newest = hold_in_order(workflow, 3)
    workflow.maintenance(None)

    answer = ok(post(client, "/resume", {"stateMachineArn": workflow.arn, "limit": 2}))

    assert (answer["resumed"], answer["remaining"]) == (2, 1)
    workflow.wait_for(oldest, "SUCCEEDED")
    workflow.wait_for(second, "SUCCEEDED")
    assert workflow.status(newest) == "RUNNING"
    assert len(workflow.held_keys()) == 1


def test_a_limit_counts_only_the_chosen_executions(workflow, client):
    workflow.maintenance("true")
    oldest, second, newest = hold_in_order(workflow, 3)
    workflow.maintenance(None)

    answer = ok(
        post(client, "/resume", {"stateMachineArn": workflow.arn, "executionArns": [second, newest], "limit": 1})
    )

    # The oldest of the chosen is resumed; the unchosen oldest does not use up the limit.
    assert answer["resumed"] == 1, answer
    workflow.wait_for(second, "SUCCEEDED")
    assert [workflow.status(oldest), workflow.status(newest)] == ["RUNNING", "RUNNING"]


def test_force_resumes_while_maintenance_is_on_and_is_audited(workflow, client, aws):
    ok(switch(client, stateMachineArn=workflow.arn, enabled=True))
    executions = hold_in_order(workflow, 2)

    answer = ok(post(client, "/resume", {"stateMachineArn": workflow.arn, "force": True}))

    assert answer["resumed"] == 2
    for execution in executions:
        workflow.wait_for(execution, "SUCCEEDED")
    tags = {tag["key"]: tag["value"] for tag in aws.sfn.list_tags_for_resource(resourceArn=workflow.arn)["tags"]}
    assert tags["Maintenance"] == "true"  # forcing a resume does not lift maintenance
    newest = events(client, workflow.arn)[0]
    assert newest["action"] == "resume"
    assert newest["force"] is True
    assert newest["result"]["resumed"] == 2


# -- POST /abort


def test_aborting_all_fails_every_held_execution_with_the_default_error(workflow, client):
    ok(switch(client, stateMachineArn=workflow.arn, enabled=True))
    executions = hold_in_order(workflow, 2)

    answer = ok(post(client, "/abort", {"stateMachineArn": workflow.arn, "all": True}))

    assert (answer["aborted"], answer["remaining"]) == (2, 0)
    for execution in executions:
        assert workflow.wait_for(execution, "FAILED").get("error") == ABORT_ERROR
    assert workflow.held_keys() == []


def test_aborting_chosen_executions_fails_only_those_with_the_given_error(workflow, client):
    workflow.maintenance("true")
    first, second, third = hold_in_order(workflow, 3)

    answer = ok(
        post(
            client,
            "/abort",
            {"stateMachineArn": workflow.arn, "executionArns": [second], "error": "Deploy.Cancelled", "cause": "x"},
        )
    )

    assert answer["aborted"] == 1
    assert workflow.wait_for(second, "FAILED").get("error") == "Deploy.Cancelled"
    assert [workflow.status(first), workflow.status(third)] == ["RUNNING", "RUNNING"]
    assert len(workflow.held_keys()) == 2


BAD_ABORTS = {
    "neither-executions-nor-all": ({}, "executionArns", "MissingField"),
    "all-false-and-no-executions": ({"all": False}, "executionArns", "MissingField"),
    "both-executions-and-all": ({"executionArns": ["e"], "all": True}, "all", "InvalidField"),
    "error-too-long": ({"all": True, "error": "E" * (MAX_ERROR + 1)}, "error", "InvalidField"),
    "error-not-a-string": ({"all": True, "error": 42}, "error", "InvalidField"),
    "empty-executions": ({"executionArns": []}, "executionArns", "InvalidField"),
    "a-blank-execution": ({"executionArns": [" "]}, "executionArns[0]", "InvalidField"),
    "all-a-string": ({"all": "true"}, "all", "InvalidField"),
}


@pytest.mark.parametrize(("body", "field", "code"), BAD_ABORTS.values(), ids=BAD_ABORTS.keys())
def test_a_bad_abort_is_a_400_naming_the_field_and_aborts_nothing(plain, client, body, field, code):
    ok(switch(client, stateMachineArn=ORDERS, enabled=True))
    hold(client)
    before = plain.objects()

    assert_error(post(client, "/abort", {"stateMachineArn": ORDERS, **body}), 400, field, code)
    assert plain.objects() == before


def test_an_abort_is_audited_with_the_actor_and_the_counts(plain, client):
    ok(switch(client, stateMachineArn=ORDERS, enabled=True))
    chosen = hold(client, execution="arn:chosen")
    hold(client, execution="arn:other")

    with counting_sends():
        status, answer = call_as(
            ON_CALL, "POST", "/abort", {"stateMachineArn": ORDERS, "executionArns": ["arn:chosen"], "cause": "bad"}
        )

    assert status == 200, answer
    event = events(client)[0]
    assert event["action"] == "abort"
    assert event["actor"] == ON_CALL
    assert (event["error"], event["cause"], event["executions"]) == (ABORT_ERROR, "bad", 1)
    assert (event["result"]["aborted"], event["result"]["remaining"]) == (1, 0)
    assert chosen not in json.dumps(event)


# -- GET /audit


def test_the_audit_trail_has_one_event_per_action_newest_first(plain, client):
    ok(switch(client, stateMachineArn=ORDERS, enabled=True, reason="deploy"))
    hold(client)
    with counting_sends():
        ok(switch(client, stateMachineArn=ORDERS, enabled=False, resume=False))
        ok(post(client, "/resume", {"stateMachineArn": ORDERS}))
        ok(post(client, "/abort", {"stateMachineArn": ORDERS, "all": True}))
    # Reading, refusing and dry runs are not actions.
    ok(get(client, "/maintenance", stateMachineArn=ORDERS))
    ok(get(client, "/maintenance/paused", stateMachineArn=ORDERS))
    ok(switch(client, stateMachineArn=ORDERS, enabled=True, dryRun=True))
    assert_error(switch(client, stateMachineArn=ORDERS, enabled=True, until="soon"), 400, "until")

    trail = events(client)

    assert [event["action"] for event in trail] == ["abort", "resume", "maintenance-off", "maintenance-on"]
    assert [event["at"] for event in trail] == sorted((event["at"] for event in trail), reverse=True)
    assert trail[-1]["reason"] == "deploy"
    assert trail[1]["result"]["resumed"] == 1
    assert all(event["stateMachineArn"] == ORDERS for event in trail)
    assert len(plain.keys(AUDIT_FOLDER)) == 4


def test_the_audit_trail_pages_and_an_event_once_written_is_never_rewritten(plain, client):
    ok(switch(client, stateMachineArn=ORDERS, enabled=True, reason="first"))
    written = plain.objects(AUDIT_FOLDER)
    for n in range(4):
        ok(switch(client, stateMachineArn=ORDERS, enabled=n % 2 == 1, reason=f"again {n}"))

    found = pages(client, "/audit", "events", stateMachineArn=ORDERS, limit="2")

    assert [len(page) for page in found] == [2, 2, 1]
    trail = [event for page in found for event in page]
    assert [event.get("reason") for event in trail] == ["again 3", "again 2", "again 1", "again 0", "first"]
    assert len({json.dumps(event, sort_keys=True) for event in trail}) == 5
    now = plain.objects(AUDIT_FOLDER)
    assert len(now) == 5
    assert {key: now[key] for key in written} == written


# -- one machine's trouble is that machine's: bulk switches and the overview


def held_without_a_mirror(plain, machine):
    """A token in the machine's folder, as the checkpoint saves it, and no flag mirror
    (the overview then reads the machine's tags)."""
    key = f"{PREFIX}{machine.rsplit(':', 1)[-1]}/{new_token_id()}.json"
    body = {"taskToken": f"token-{uuid.uuid4()}", "timestamp": "2026-12-01T12:00:00.000Z", "stateMachineArn": machine}
    plain.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(body).encode())


AWS_FAULTS = {
    "throttled": ("ThrottlingException", 400, "AwsUnavailable", 503),
    "5xx": ("InternalFailure", 500, "AwsUnavailable", 503),
    "denied-by-an-scp": ("AccessDeniedException", 400, "AwsAccessDenied", 403),
    "an-unknown-error": ("KmsThrottlingBurpException", 400, "AwsError", 502),
}


@pytest.mark.parametrize("fault", AWS_FAULTS.values(), ids=AWS_FAULTS.keys())
@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
def test_a_bulk_switch_in_which_aws_fails_one_machine_switches_the_others_and_answers_for_each(
    plain, client, monkeypatch, fault, enabled
):
    code, status, answered, answered_status = fault
    payments, billing = plain.machine("Payments"), plain.machine("Billing")
    if not enabled:
        ok(switch(client, stateMachineArns=[ORDERS, payments, billing], enabled=True))
    operation = "TagResource" if enabled else "UntagResource"
    refuse(monkeypatch, operation, code, status, when=for_machine(payments))

    answer = ok(switch(client, stateMachineArns=[ORDERS, payments, billing], enabled=enabled))

    first, failed, last = answer["results"]
    assert (first["maintenance"], first["changed"]) == (enabled, True)
    assert (last["maintenance"], last["changed"]) == (enabled, True)
    assert failed["stateMachineArn"] == payments
    assert (failed["error"]["Code"], failed["error"]["Status"]) == (answered, answered_status)
    assert code in failed["error"]["Message"] or answered == "AwsAccessDenied"
    for machine in (ORDERS, billing):
        assert (plain.tags(machine).get("Maintenance") == "true") is enabled


@pytest.mark.parametrize("enabled", [True, False], ids=["tag", "untag"])
def test_a_denied_tag_write_on_one_machine_answers_403_aws_access_denied(plain, client, monkeypatch, enabled):
    if not enabled:
        ok(switch(client, stateMachineArn=ORDERS, enabled=True))
    refuse(monkeypatch, "TagResource" if enabled else "UntagResource", "AccessDeniedException")

    response = switch(client, stateMachineArn=ORDERS, enabled=enabled)

    assert response.status_code == 403, response.body
    assert json.loads(response.body)["Code"] == "AwsAccessDenied"


def deleted(plain, monkeypatch, machine):
    plain.sfn.delete_state_machine(stateMachineArn=machine)
    tags_of_deleted_machines_are_not_found(monkeypatch)


def denied(plain, monkeypatch, machine):
    refuse(monkeypatch, "ListTagsForResource", "AccessDeniedException", when=for_machine(machine))


def throttled(plain, monkeypatch, machine):
    refuse(monkeypatch, "ListTagsForResource", "ThrottlingException", when=for_machine(machine))


@pytest.mark.parametrize(
    ("trouble", "code", "status"),
    [
        (deleted, "StateMachineNotFound", 404),
        (denied, "AwsAccessDenied", 403),
        (throttled, "AwsUnavailable", 503),
    ],
    ids=["deleted", "denied", "throttled"],
)
def test_the_overview_lists_a_machine_it_cannot_read_with_its_own_error_and_the_others_as_usual(
    plain, client, monkeypatch, trouble, code, status
):
    gone = plain.machine("Gone")
    ok(switch(client, stateMachineArn=ORDERS, enabled=True))
    hold(client, ORDERS)
    held_without_a_mirror(plain, gone)
    trouble(plain, monkeypatch, gone)

    first = ok(get(client, "/maintenance", limit="1"))
    second = ok(get(client, "/maintenance", limit="1", nextToken=first["nextToken"]))

    [entry] = first["stateMachines"]
    assert entry["stateMachineArn"] == gone
    assert (entry["error"]["Code"], entry["error"]["Status"]) == (code, status)
    assert [(item["stateMachineArn"], item["maintenance"], item["paused"]) for item in second["stateMachines"]] == [
        (ORDERS, True, 1)
    ]
    assert second["nextToken"] is None


# -- instants beyond the calendar (issue 8, item 7)

BEYOND_THE_CALENDAR = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"]


@pytest.mark.parametrize("until", BEYOND_THE_CALENDAR)
def test_an_until_beyond_the_calendar_is_a_400_naming_until_and_changes_nothing(plain, client, until):
    response = switch(client, stateMachineArn=ORDERS, enabled=True, until=until)

    assert_error(response, 400, "until", "InvalidField")
    assert plain.tags(ORDERS) == {}
    assert plain.keys() == []


@pytest.mark.parametrize("until", [*BEYOND_THE_CALENDAR, "next tuesday"])
def test_an_unreadable_until_tag_holds_executions_and_neither_the_status_nor_the_sweep_fails(workflow, client, until):
    # Set with the AWS CLI: nothing checked the value on its way in.
    workflow.aws.sfn.tag_resource(
        resourceArn=workflow.arn,
        tags=[{"key": "Maintenance", "value": "true"}, {"key": "MaintenanceUntil", "value": until}],
    )
    execution = workflow.start({"n": 1})
    workflow.wait_held(1)
    wait_until(lambda: parked(workflow, execution), what="the execution parked")

    status = ok(get(client, "/maintenance", stateMachineArn=workflow.arn))
    overview = ok(get(client, "/maintenance"))
    report = chalice_app.get_services().sweeper.sweep(Deadline(30))

    assert (status["maintenance"], status["until"], status["paused"]) == (True, until, 1)
    assert [machine["maintenance"] for machine in overview["stateMachines"]] == [True]
    assert report.lifted == []
    assert workflow.status(execution) == "RUNNING"
    assert len(workflow.held_keys()) == 1


# -- a reason no tag can hold (issue 8, item 14)


def test_repeating_a_switch_whose_reason_no_tag_can_hold_changes_nothing_the_second_time(plain, client):
    first = ok(switch(client, stateMachineArn=ORDERS, enabled=True, reason="#!&$"))
    tags = plain.tags(ORDERS)

    repeat = ok(switch(client, stateMachineArn=ORDERS, enabled=True, reason="#!&$"))

    assert (first["changed"], repeat["changed"]) == (True, False)
    assert (first["reason"], repeat["reason"]) == (None, None)
    assert "MaintenanceReason" not in tags and plain.tags(ORDERS) == tags
    # Each call is audited (with its reason whole); only the first one changed anything.
    trail = events(client)
    assert [(event["action"], event["changed"]) for event in trail] == [
        ("maintenance-on", False),
        ("maintenance-on", True),
    ]
    assert {event["reason"] for event in trail} == {"#!&$"}


# -- pagination over every name AWS allows (issue 8, item 10)

NAMES_AWS_ALLOWS = ["orders+eu", "billing@v2", "retry(1)", "Bestellungen-Süd", "Orders"]


def test_the_overview_pages_one_machine_at_a_time_through_every_name_aws_allows(plain, client):
    arns = [arn_of("Orders")] + [plain.machine(name) for name in NAMES_AWS_ALLOWS[:-1]]
    for arn in arns:
        ok(switch(client, stateMachineArn=arn, enabled=True))

    found = pages(client, "/maintenance", "stateMachines", limit="1")

    assert [len(page) for page in found[: len(arns)]] == [1] * len(arns)
    assert sorted(entry["stateMachineArn"] for page in found for entry in page) == sorted(arns)


@pytest.mark.parametrize("path", ["/maintenance", "/maintenance/paused", "/audit"])
@pytest.mark.parametrize(
    "token",
    [
        arn_of("orders+eu"),  # a position as it was before it became a token
        "YWJj=",  # padded: not how this API spells one
        "YWJ",  # "ab" with stray bits: a second spelling of the token YWI
        "_w",  # decodes to a byte that is not UTF-8
        "AA",  # decodes to a control character
        "a",  # cannot be base64 at all
    ],
)
def test_a_next_token_this_api_did_not_give_out_is_a_400_naming_it(plain, client, path, token):
    query = {"nextToken": token} if path == "/maintenance" else {"stateMachineArn": ORDERS, "nextToken": token}

    assert_error(get(client, path, **query), 400, "nextToken", "InvalidField")


# -- every partition botocore knows (issue 8, item 9)

EUSC = "eusc-de-east-1"


def test_a_machine_in_the_aws_eusc_partition_is_switched_held_listed_and_lifted(plain, client, session):
    sfn = session.client("stepfunctions", region_name=EUSC)
    machine = sfn.create_state_machine(
        name="Orders", definition=PASS, roleArn=f"arn:aws-eusc:iam::{ACCOUNT}:role/states"
    )["stateMachineArn"]
    assert machine == f"arn:aws-eusc:states:{EUSC}:{ACCOUNT}:stateMachine:Orders"

    on = ok(switch(client, stateMachineArn=machine, enabled=True, reason="deploy"))
    token = hold(client, machine=machine)
    status = ok(get(client, "/maintenance", stateMachineArn=machine))
    overview = ok(get(client, "/maintenance"))
    with counting_sends() as sends:
        off = ok(switch(client, stateMachineArn=machine, enabled=False))

    assert (on["maintenance"], on["changed"]) == (True, True)
    assert {tag["key"]: tag["value"] for tag in sfn.list_tags_for_resource(resourceArn=machine)["tags"]} == {}
    assert (status["maintenance"], status["paused"], status["reason"]) == (True, 1, "deploy")
    assert machine in [entry["stateMachineArn"] for entry in overview["stateMachines"]]
    assert (off["maintenance"], off["resumed"]) == (False, 1)
    assert sends.successes == {token: 1}


# -- counts in bounded time whatever the backlog (issue 9, item 6)

FOLDER = f"{PREFIX}Orders/"
QUARANTINE = f"{PREFIX}_sfn-pauser/quarantine/aws/{ACCOUNT}/{REGION}/Orders/"


def small_pages(client, monkeypatch):
    """The app's S3 listings in pages of 5 keys (COUNT_PAGES of them stand in for 10,000), recorded."""
    return SmallPages(chalice_app.get_services().clients.s3(), monkeypatch, 5)


def backlog(plain, count, machine=ORDERS):
    """``count`` tasks held for ``machine``, written straight to S3 as the checkpoint names them; their keys."""
    parsed = parse_state_machine_arn(machine)
    first = int(datetime.now(UTC).timestamp() * 1000) - 3_600_000
    keys = [f"{PREFIX}{parsed.name}/{new_token_id(first + n, machine_tag(parsed))}.json" for n in range(count)]
    for key in keys:
        plain.s3.put_object(
            Bucket=BUCKET, Key=key, Body=json.dumps({"taskToken": key, "stateMachineArn": machine}).encode()
        )
    return keys


def paused_at(key):
    return iso_timestamp(paused_at_of(key.rsplit("/", 1)[-1].removesuffix(".json")))


@pytest.mark.parametrize("held", [60, 300])
def test_the_status_counts_a_backlog_past_its_cap_in_the_same_listings_whatever_its_size(
    plain, client, monkeypatch, held
):
    keys = backlog(plain, held)
    pages = small_pages(client, monkeypatch)

    status = ok(get(client, "/maintenance", stateMachineArn=ORDERS))

    assert (status["paused"], status["pausedCapped"]) == (5 * COUNT_PAGES, True)
    assert status["oldestPausedAt"] == paused_at(keys[0])
    assert (len(pages.of(FOLDER)), len(pages.of(QUARANTINE))) == (COUNT_PAGES, 1)


def test_the_status_counts_a_backlog_under_its_cap_exactly(plain, client, monkeypatch):
    keys = backlog(plain, 12)
    small_pages(client, monkeypatch)

    status = ok(get(client, "/maintenance", stateMachineArn=ORDERS))

    assert (status["paused"], status["pausedCapped"], status["oldestPausedAt"]) == (12, False, paused_at(keys[0]))
    assert (status["quarantined"], status["quarantinedCapped"]) == (0, False)


def test_a_dry_run_counts_a_backlog_past_its_cap_in_bounded_listings(plain, client, monkeypatch):
    backlog(plain, 300)
    pages = small_pages(client, monkeypatch)

    answer = ok(switch(client, stateMachineArn=ORDERS, enabled=False, dryRun=True))

    assert (answer["paused"], answer["pausedCapped"]) == (5 * COUNT_PAGES, True)
    assert len(pages.of(FOLDER)) == COUNT_PAGES


@pytest.mark.parametrize("held", [12, 300])
def test_the_overview_lists_each_machine_once_whatever_its_backlog(plain, client, monkeypatch, held):
    backlog(plain, held)
    pages = small_pages(client, monkeypatch)

    [entry] = ok(get(client, "/maintenance"))["stateMachines"]

    assert (entry["stateMachineArn"], entry["paused"], entry["pausedCapped"]) == (ORDERS, 5, True)
    assert len(pages.of(FOLDER)) == 2  # the folder's first page to find its machines, then the count
