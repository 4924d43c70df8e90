"""Holds end to end: real executions in moto's interpreter, the checkpoint routed to the
handler, holds taken and released through the API, expired by the sweep."""

import json
import threading
import time
from collections import Counter
from typing import Any

import pytest

import app as chalice_app
from chalicelib.deadline import Deadline
from tests.conftest import Workflow
from tests.harness import ACCOUNT, ROOT, create_pauser_function

JSON = {"Content-Type": "application/json"}


def call(client: Any, method: str, path: str, body: Any = None) -> Any:
    request = getattr(client.http, method)
    if body is None:
        return request(path, headers=JSON)
    return request(path, headers=JSON, body=json.dumps(body))


def take(client: Any, **body: Any) -> dict[str, Any]:
    response = call(client, "post", "/holds", {"ttlSeconds": 600, **body})
    assert response.status_code == 201, response.body
    return response.json_body


def release(client: Any, hold_id: str) -> dict[str, Any]:
    response = call(client, "delete", f"/holds/{hold_id}")
    assert response.status_code == 200, response.body
    return response.json_body


def guarded(aws: Any, invocations: Any, name: str, guards: list[str] | None, region_client: Any = None) -> Workflow:
    """A workflow whose checkpoint declares ``guards`` in its Payload (none: the example as is)."""
    definition = json.loads((ROOT / "examples" / "checkpoint.asl.json").read_text())
    if guards is not None:
        definition["States"]["MaintenanceCheckpoint"]["Parameters"]["Payload"]["guards"] = guards
    function_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:sfn-pauser-dev-pauser"
    sfn = region_client or aws.sfn
    arn = sfn.create_state_machine(
        name=name,
        definition=json.dumps(definition).replace("${PauserFunctionArn}", function_arn),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/states-role",
    )["stateMachineArn"]
    flow = Workflow(aws, arn, invocations)
    if region_client is not None:
        flow.aws = type(aws)(aws.s3, region_client, aws.lambda_, aws.iam)
    return flow


@pytest.fixture
def functions(aws: Any) -> None:
    create_pauser_function(aws.iam, aws.lambda_)


def resumed_executions(caplog: Any) -> Counter[str]:
    """Each execution the resumer answered, as many times as it answered it (its decision log)."""
    decisions = [json.loads(record.getMessage()) for record in caplog.records if record.name == "sfn-pauser"]
    return Counter(each["execution"] for each in decisions if each.get("decision") == "resumed")


@pytest.mark.parametrize("first", [0, 1], ids=["released-in-order", "released-in-reverse"])
def test_two_overlapping_holds_keep_executions_held_until_the_second_ends(workflow, client, caplog, first):
    holds = [take(client, stateMachineArns=[workflow.arn], reason=f"pipeline {n}") for n in "AB"]
    executions = [workflow.start({"order": n}) for n in range(2)]
    workflow.wait_held(2)

    one = release(client, holds[first]["holdId"])

    other = holds[1 - first]["holdId"]
    assert one["released"] is True
    assert one["stillHeld"] == [{"stateMachineArn": workflow.arn, "heldBy": [other]}]
    assert [workflow.status(execution) for execution in executions] == ["RUNNING", "RUNNING"]
    assert len(workflow.held_keys()) == 2

    last = release(client, other)

    assert last["resumed"] == {workflow.arn: 2}
    for n, execution in enumerate(executions):
        assert json.loads(workflow.wait_for(execution, "SUCCEEDED")["output"]) == {"order": n}
    assert workflow.held_keys() == []
    assert resumed_executions(caplog) == Counter(executions)  # each exactly once


def test_a_hold_that_is_never_released_expires_and_the_sweep_resumes_what_it_held(workflow, client):
    hold = take(client, stateMachineArns=[workflow.arn], ttlSeconds=2)
    execution = workflow.start({"order": 1})
    workflow.wait_held(1)
    time.sleep(2.1)  # the hold's TTL, as a crashed pipeline would leave it

    report = chalice_app.get_services().sweeper.sweep(Deadline(30))

    assert report.holds_expired == 1
    assert report.resumed == 1
    workflow.wait_for(execution, "SUCCEEDED")
    assert call(client, "get", f"/holds/{hold['holdId']}").status_code == 404


def test_a_dependency_hold_holds_every_checkpoint_that_guards_it_and_no_other(
    aws, bucket, client, routed_lambda, functions
):
    from tests.neighbours import sfn_in

    orders = guarded(aws, routed_lambda, "Orders", ["orders-db"])
    billing = guarded(aws, routed_lambda, "Billing", ["payments-api", "orders-db"], sfn_in(ACCOUNT, "us-west-2"))
    shipping = guarded(aws, routed_lambda, "Shipping", ["shipping-api"])
    # The first executions record which dependencies each machine's checkpoint guards.
    for flow in (orders, billing, shipping):
        flow.wait_for(flow.start({"warm": True}), "SUCCEEDED")

    hold = take(client, guards=["orders-db"], reason="migrate orders-db")

    assert hold["affected"] == sorted([orders.arn, billing.arn])
    held = [flow.start({"order": 1}) for flow in (orders, billing)]
    passing = shipping.start({"order": 1})
    shipping.wait_for(passing, "SUCCEEDED")
    orders.wait_held(1)
    billing.wait_held(1)
    assert [orders.status(held[0]), billing.status(held[1])] == ["RUNNING", "RUNNING"]

    released = release(client, hold["holdId"])

    assert released["resumed"] == {orders.arn: 1, billing.arn: 1}
    orders.wait_for(held[0], "SUCCEEDED")
    billing.wait_for(held[1], "SUCCEEDED")


def test_a_checkpoint_without_a_guarded_dependency_resumes_around_one_that_stays_held(
    aws, bucket, client, routed_lambda, functions
):
    # Two checkpoints' tokens in one folder: releasing the hold on one dependency
    # resumes its executions and leaves those another hold still covers.
    orders = guarded(aws, routed_lambda, "Orders", ["orders-db"])
    db, api = take(client, guards=["orders-db"]), take(client, guards=["payments-api"])
    held = orders.start({"order": 1})
    orders.wait_held(1)
    second = guarded(aws, routed_lambda, "Payments", ["payments-api"])
    waiting = second.start({"payment": 1})
    second.wait_held(1)

    release(client, api["holdId"])

    second.wait_for(waiting, "SUCCEEDED")
    assert orders.status(held) == "RUNNING"
    release(client, db["holdId"])
    orders.wait_for(held, "SUCCEEDED")


def test_the_tag_and_a_hold_each_keep_maintenance_on_without_the_other(workflow, client):
    workflow.maintenance("true")
    hold = take(client, stateMachineArns=[workflow.arn])
    execution = workflow.start({"order": 1})
    workflow.wait_held(1)

    # Tag on, hold released: still held, by the tag.
    assert release(client, hold["holdId"])["stillHeld"] == [{"stateMachineArn": workflow.arn, "heldBy": ["tag"]}]
    assert workflow.status(execution) == "RUNNING"

    # Tag off, hold active: held, by the hold.
    again = take(client, stateMachineArns=[workflow.arn])
    answer = call(client, "post", "/maintenance", {"stateMachineArn": workflow.arn, "enabled": False}).json_body
    assert answer["stillHeldBy"] == [again["holdId"]]
    assert answer["maintenance"] is True
    status = call(client, "get", f"/maintenance?stateMachineArn={workflow.arn}").json_body
    assert status["maintenance"] is True
    assert status["heldBy"] == [again["holdId"]]
    assert [each["holdId"] for each in status["holds"]] == [again["holdId"]]
    later = workflow.start({"order": 2})
    workflow.wait_held(2)
    assert [workflow.status(execution), workflow.status(later)] == ["RUNNING", "RUNNING"]

    release(client, again["holdId"])
    for each in (execution, later):
        workflow.wait_for(each, "SUCCEEDED")


def test_switching_off_with_force_ends_every_hold_on_the_machine_and_resumes(workflow, client):
    holds = [take(client, stateMachineArns=[workflow.arn]) for _ in range(2)]
    execution = workflow.start({"order": 1})
    workflow.wait_held(1)

    refused = call(client, "post", "/resume", {"stateMachineArn": workflow.arn})
    assert refused.status_code == 409
    assert "holds cover" in refused.json_body["Message"]

    answer = call(client, "post", "/maintenance", {"stateMachineArn": workflow.arn, "enabled": False, "force": True})

    assert answer.status_code == 200, answer.body
    assert sorted(answer.json_body["endedHolds"]) == sorted(hold["holdId"] for hold in holds)
    assert answer.json_body["resumed"] == 1
    workflow.wait_for(execution, "SUCCEEDED")
    assert call(client, "get", "/holds").json_body["holds"] == []


def test_a_dry_run_with_force_names_the_holds_it_would_end_and_ends_none(workflow, client):
    holds = sorted(take(client, stateMachineArns=[workflow.arn])["holdId"] for _ in range(2))
    execution = workflow.start({"order": 1})
    workflow.wait_held(1)

    body = {"stateMachineArn": workflow.arn, "enabled": False, "force": True, "dryRun": True}
    answer = call(client, "post", "/maintenance", body).json_body

    assert (answer["dryRun"], answer["endedHolds"]) == (True, holds)
    assert sorted(each["holdId"] for each in call(client, "get", "/holds").json_body["holds"]) == holds
    assert workflow.status(execution) == "RUNNING"
    assert len(workflow.held_keys()) == 1


def test_a_bulk_force_ends_the_holds_of_the_machines_it_switches_and_not_of_one_it_refuses(
    aws, workflow, client, routed_lambda
):
    other = guarded(aws, routed_lambda, "Billing", None)
    absent = workflow.arn.replace(":Orders", ":Absent")
    on_orders, on_billing = (take(client, stateMachineArns=[arn])["holdId"] for arn in (workflow.arn, other.arn))
    # A pattern hold covers the absent machine's name too: refused, it must keep it.
    on_pattern = take(client, stateMachineArns=[workflow.arn.replace(":Orders", ":A*")])["holdId"]

    body = {"stateMachineArns": [workflow.arn, absent, other.arn], "enabled": False, "force": True}
    answer = call(client, "post", "/maintenance", body)

    assert answer.status_code == 200, answer.body
    results = {each["stateMachineArn"]: each for each in answer.json_body["results"]}
    assert results[workflow.arn]["endedHolds"] == [on_orders]
    assert results[other.arn]["endedHolds"] == [on_billing]
    assert results[absent]["error"]["Status"] == 404
    assert "endedHolds" not in results[absent]
    assert [each["holdId"] for each in call(client, "get", "/holds").json_body["holds"]] == [on_pattern]


def test_switching_off_counts_each_token_a_dependency_hold_still_covers_once(
    aws, bucket, client, routed_lambda, functions
):
    orders = guarded(aws, routed_lambda, "Orders", ["orders-db"])
    orders.maintenance("true")
    db = take(client, guards=["orders-db"])
    for n in range(3):
        orders.start({"order": n})
    orders.wait_held(3)
    body = {"stateMachineArn": orders.arn, "enabled": False}

    first = call(client, "post", "/maintenance", body).json_body
    again = call(client, "post", "/maintenance", body).json_body  # this container remembers the pass

    for answer in (first, again):
        assert (answer["held"], answer["resumed"], answer["stillHeldBy"]) == (3, 0, [db["holdId"]])
    assert len(orders.held_keys()) == 3


def test_resuming_a_machine_a_pattern_hold_covers_answers_404_when_it_does_not_exist(workflow, client):
    take(client, stateMachineArns=[workflow.arn.replace(":Orders", ":*")])

    absent = call(client, "post", "/resume", {"stateMachineArn": workflow.arn.replace(":Orders", ":Absent")})
    covered = call(client, "post", "/resume", {"stateMachineArn": workflow.arn})

    assert (absent.status_code, absent.json_body["Code"]) == (404, "StateMachineNotFound")
    assert (covered.status_code, covered.json_body["Code"]) == (409, "MaintenanceIsOn")


def test_the_overview_lists_a_machine_a_hold_covers_before_anything_is_held(aws, workflow, client, routed_lambda):
    # Named in a hold, or matched by a pattern hold, with nothing held yet and no tag:
    # still in maintenance, so the overview (and `sfn-pauser status`) shows it.
    billing = guarded(aws, routed_lambda, "Billing", None)
    # A switch writes the machine's flag mirror: what makes a machine known without held tokens.
    switched = call(client, "post", "/maintenance", {"stateMachineArn": billing.arn, "enabled": False})
    assert switched.status_code == 200, switched.body
    assert call(client, "get", "/maintenance").json_body["stateMachines"] == []
    named = take(client, stateMachineArns=[workflow.arn])["holdId"]
    pattern = take(client, stateMachineArns=[billing.arn.replace(":Billing", ":Bill*")])["holdId"]

    entries = {each["stateMachineArn"]: each for each in call(client, "get", "/maintenance").json_body["stateMachines"]}

    assert (entries[workflow.arn]["maintenance"], entries[workflow.arn]["holds"]) == (True, [named])
    assert (entries[workflow.arn]["paused"], entries[billing.arn]["holds"]) == (0, [pattern])
    release(client, named)
    release(client, pattern)
    assert call(client, "get", "/maintenance").json_body["stateMachines"] == []


def test_the_holds_api_lists_filters_pages_and_forgets_ended_holds(workflow, client):
    on_machine = take(client, stateMachineArns=[workflow.arn])
    on_db = [take(client, guards=["orders-db"]) for _ in range(3)]

    assert len(call(client, "get", "/holds").json_body["holds"]) == 4
    by_guard = call(client, "get", "/holds?guard=orders-db").json_body["holds"]
    assert sorted(each["holdId"] for each in by_guard) == sorted(each["holdId"] for each in on_db)
    by_machine = call(client, "get", f"/holds?stateMachineArn={workflow.arn}").json_body["holds"]
    assert [each["holdId"] for each in by_machine] == [on_machine["holdId"]]
    pages, token = [], None
    while True:
        query = "/holds?maxResults=3" + (f"&nextToken={token}" if token else "")
        page = call(client, "get", query).json_body
        pages.append(len(page["holds"]))
        token = page["nextToken"]
        if not token:
            break
    assert pages == [3, 1]

    renewed = call(client, "post", f"/holds/{on_machine['holdId']}/renew", {"ttlSeconds": 7200}).json_body
    assert renewed["expiresAt"] > on_machine["expiresAt"]
    assert release(client, on_machine["holdId"])["released"] is True
    assert release(client, on_machine["holdId"])["released"] is False  # idempotent
    assert call(client, "get", f"/holds/{on_machine['holdId']}").status_code == 404
    assert call(client, "post", f"/holds/{on_machine['holdId']}/renew").status_code == 404


def trail(client: Any, hold_id: str, query: str = "") -> dict[str, Any]:
    response = call(client, "get", f"/holds/{hold_id}/audit{query}")
    assert response.status_code == 200, response.body
    return response.json_body


def test_a_holds_audit_trail_says_who_took_renewed_and_released_it_newest_first(workflow, client, monkeypatch):
    def as_caller(name: str) -> None:
        monkeypatch.setattr(chalice_app, "_caller", lambda: f"arn:aws:sts::{ACCOUNT}:assumed-role/{name}")

    as_caller("deployer")
    hold_id = take(client, stateMachineArns=[workflow.arn], reason="deploy 42")["holdId"]
    as_caller("on-call")
    call(client, "post", f"/holds/{hold_id}/renew", {"ttlSeconds": 1200})
    as_caller("release-bot")
    release(client, hold_id)

    # Ended, it is gone from the holds; its history is not.
    assert call(client, "get", f"/holds/{hold_id}").status_code == 404
    answer = trail(client, hold_id)
    assert (answer["holdId"], answer["nextToken"]) == (hold_id, None)
    assert [(event["action"], event["actor"].rsplit("/", 1)[1]) for event in answer["events"]] == [
        ("released", "release-bot"),
        ("renew", "on-call"),
        ("hold", "deployer"),
    ]
    assert {event["holdId"] for event in answer["events"]} == {hold_id}
    taken = answer["events"][-1]
    assert (taken["hold"]["reason"], taken["hold"]["scope"]["stateMachineArns"]) == ("deploy 42", [workflow.arn])
    assert answer["events"][1]["expiresAt"] > taken["hold"]["expiresAt"]


def test_a_holds_audit_trail_pages_newest_first_by_next_token(workflow, client):
    hold_id = take(client, stateMachineArns=[workflow.arn])["holdId"]
    call(client, "post", f"/holds/{hold_id}/renew", {"ttlSeconds": 1200})
    release(client, hold_id)

    actions, token = [], None
    while True:
        page = trail(client, hold_id, "?limit=1" + (f"&nextToken={token}" if token else ""))
        assert len(page["events"]) == 1, page
        actions += [event["action"] for event in page["events"]]
        token = page["nextToken"]
        if not token:
            break
    assert actions == ["released", "renew", "hold"]
    first = trail(client, hold_id, "?limit=1")["nextToken"]
    # Another hold's token is a valid position, but an id with no history is still unknown.
    unknown = call(client, "get", f"/holds/hold-0123456789abcdef/audit?nextToken={first}")
    assert (unknown.status_code, unknown.json_body["Code"]) == (404, "HoldNotFound")


def test_a_hold_ended_by_forcing_maintenance_off_says_so_in_its_trail(workflow, client):
    hold_id = take(client, stateMachineArns=[workflow.arn])["holdId"]

    call(client, "post", "/maintenance", {"stateMachineArn": workflow.arn, "enabled": False, "force": True})

    [forced, taken] = trail(client, hold_id)["events"]
    assert (forced["action"], forced["stateMachineArns"], taken["action"]) == ("forced-off", [workflow.arn], "hold")


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("post", "/holds", {"guards": ["bad name"]}, 400, "guards[0]"),
        ("post", "/holds", {"stateMachineArns": ["arn:aws:states:us-east-1:123456789012:stateMachine:Nope"]}, 404, ""),
        ("get", "/holds/not-a-hold", None, 400, "holdId"),
        ("delete", "/holds/hold-xyz", None, 400, "holdId"),
        ("get", "/holds?guard=a%20b", None, 400, "guard"),
        ("post", "/holds/hold-0123456789abcdef/renew", {"ttlSeconds": 0}, 400, "ttlSeconds"),
        ("get", "/holds/hold-xyz/audit", None, 400, "holdId"),
        ("get", "/holds/hold-0123456789abcdef/audit", None, 404, "holdId"),
        ("get", "/holds/hold-0123456789abcdef/audit?limit=0", None, 400, "limit"),
        ("get", "/holds/hold-0123456789abcdef/audit?stateMachineArn=x", None, 400, "stateMachineArn"),
    ],
)
def test_a_bad_holds_request_gets_a_clear_error(workflow, client, method, path, body, status, field):
    response = call(client, method, path, body)

    assert response.status_code == status, response.body
    assert field in response.json_body["Message"]


def test_a_renew_racing_the_expiry_either_keeps_everything_held_or_resumes_it(workflow, client):
    # The renew lands just before or just after the TTL, while the sweep runs: either
    # the hold goes on (and so does the wait), or it has ended (and what it held resumes).
    hold = take(client, stateMachineArns=[workflow.arn], ttlSeconds=2)
    execution = workflow.start({"order": 1})
    workflow.wait_held(1)
    time.sleep(1.9)
    answers: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    def renew() -> None:
        barrier.wait()
        answers["renew"] = call(client, "post", f"/holds/{hold['holdId']}/renew", {"ttlSeconds": 600}).status_code

    def sweep() -> None:
        barrier.wait()
        time.sleep(0.1)
        answers["sweep"] = chalice_app.get_services().sweeper.sweep(Deadline(30))

    threads = [threading.Thread(target=renew), threading.Thread(target=sweep)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    chalice_app.get_services().sweeper.sweep(Deadline(30))  # the next minute's

    if answers["renew"] == 200:
        assert workflow.status(execution) == "RUNNING"
        assert call(client, "get", f"/holds/{hold['holdId']}").status_code == 200
        release(client, hold["holdId"])
    else:
        assert answers["renew"] == 404
    workflow.wait_for(execution, "SUCCEEDED")
    assert workflow.held_keys() == []


def test_a_release_racing_a_new_hold_lifts_nothing_the_new_hold_covers_and_strands_nothing(workflow, client, caplog):
    # The book's conditional writes order the two. Either the release's lift saw the new
    # hold (the executions stay held until it ends), or it came first and resumed them
    # before the new hold existed. Either way each execution resumes exactly once.
    first = take(client, stateMachineArns=[workflow.arn])
    executions = [workflow.start({"order": n}) for n in range(3)]
    workflow.wait_held(3)
    barrier = threading.Barrier(2)
    answers: dict[str, Any] = {}

    def release_first() -> None:
        barrier.wait()
        answers["release"] = release(client, first["holdId"])

    def take_second() -> None:
        barrier.wait()
        answers["take"] = take(client, stateMachineArns=[workflow.arn])

    threads = [threading.Thread(target=release_first), threading.Thread(target=take_second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    second = answers["take"]["holdId"]
    if answers["release"]["stillHeld"]:
        assert answers["release"]["stillHeld"] == [{"stateMachineArn": workflow.arn, "heldBy": [second]}]
        assert [workflow.status(each) for each in executions] == ["RUNNING"] * 3
        assert len(workflow.held_keys()) == 3
    release(client, second)
    for each in executions:
        workflow.wait_for(each, "SUCCEEDED")
    assert workflow.held_keys() == []
    assert resumed_executions(caplog) == Counter(executions)


def test_a_release_leaves_another_accounts_machines_to_their_own_sweep(aws, bucket, client):
    # A namesake in another account guards the same dependency and shares the bucket:
    # this role cannot answer its tokens (AWS would call them invalid, and quarantine
    # would follow), so the release names it instead of touching it.
    from chalicelib.arns import AccountRegion, parse_state_machine_arn
    from chalicelib.events import parse_checkpoint_event

    services = chalice_app.get_services()
    theirs = parse_state_machine_arn("arn:aws:states:us-east-1:210987654321:stateMachine:Orders")
    services.store.register_guard("orders-db", theirs)
    event = {"taskToken": "their-token", "stateMachineArn": str(theirs), "guards": ["orders-db"]}
    key = services.store.save(parse_checkpoint_event(event))
    hold = take(client, guards=["orders-db"])

    answer = services.holds.release(
        hold["holdId"], "ci", Deadline(30), AccountRegion(partition="aws", region="us-east-1", account=ACCOUNT)
    )

    assert answer["otherAccounts"] == [str(theirs)]
    assert answer["resumed"] == {}
    assert aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read()  # still held, not quarantined
