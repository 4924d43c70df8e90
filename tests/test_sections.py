"""Protected sections and drain, on real executions in moto's interpreter: who is inside
between a checkpoint with a ``section`` and its leave step, and when maintenance is drained."""

import json
from datetime import timedelta
from typing import Any

import pytest

import app as chalice_app
from chalicelib import sections
from chalicelib.deadline import Deadline
from chalicelib.errors import InvalidInput
from tests.conftest import Workflow
from tests.harness import ACCOUNT, ROOT, create_pauser_function, wait_until

FUNCTION = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:sfn-pauser-dev-pauser"
JSON = {"Content-Type": "application/json"}


def machine(aws: Any, invocations: Any, name: str, definition: dict[str, Any]) -> Workflow:
    arn = aws.sfn.create_state_machine(
        name=name,
        definition=json.dumps(definition).replace("${PauserFunctionArn}", FUNCTION),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/states-role",
    )["stateMachineArn"]
    return Workflow(aws, arn, invocations)


def example() -> dict[str, Any]:
    return json.loads((ROOT / "examples" / "section.asl.json").read_text())


def status(client: Any, arn: str) -> dict[str, Any]:
    response = client.http.get(f"/maintenance?stateMachineArn={arn}", headers=JSON)
    assert response.status_code == 200, response.body
    return response.json_body


def switch(client: Any, arn: str, enabled: bool) -> dict[str, Any]:
    body = json.dumps({"stateMachineArn": arn, "enabled": enabled})
    response = client.http.post("/maintenance", headers=JSON, body=body)
    assert response.status_code == 200, response.body
    return response.json_body


@pytest.fixture
def functions(aws: Any, bucket: str) -> None:
    create_pauser_function(aws.iam, aws.lambda_)


def test_an_execution_inside_the_section_keeps_maintenance_from_being_drained_until_it_leaves(
    aws, client, routed_lambda, functions
):
    flow = machine(aws, routed_lambda, "Orders", example())
    execution = flow.start({"workSeconds": 3})
    wait_until(lambda: status(client, flow.arn)["inside"] == 1, what="the execution inside its section")

    switch(client, flow.arn, True)

    during = status(client, flow.arn)
    assert (during["maintenance"], during["inside"], during["drained"]) == (True, 1, False)
    assert [each["executionArn"] for each in during["insideExecutions"]] == [execution]
    flow.wait_for(execution, "SUCCEEDED")
    after = status(client, flow.arn)
    assert (after["inside"], after["drained"]) == (0, True)


def test_an_execution_that_fails_inside_without_leaving_is_counted_out_by_the_sweep(
    aws, client, routed_lambda, functions, monkeypatch
):
    definition = example()
    # No Catch: the failure skips the leave step, as a workflow without one would.
    definition["States"]["ProtectedSection"] = {"Type": "Fail", "Error": "Boom", "Cause": "inside the section"}
    flow = machine(aws, routed_lambda, "Orders", definition)
    execution = flow.start({})
    flow.wait_for(execution, "FAILED")
    assert status(client, flow.arn)["inside"] == 1
    monkeypatch.setattr(sections, "STALE_AFTER", timedelta(0))  # the sweep asks about entries this old

    report = chalice_app.get_services().sweeper.sweep(Deadline(30))

    assert report.left_without_leaving == 1
    assert status(client, flow.arn)["inside"] == 0


def test_an_execution_still_running_inside_is_left_counted_by_the_sweep(
    aws, client, routed_lambda, functions, monkeypatch
):
    flow = machine(aws, routed_lambda, "Orders", example())
    execution = flow.start({"workSeconds": 3})
    wait_until(lambda: status(client, flow.arn)["inside"] == 1, what="the execution inside its section")
    monkeypatch.setattr(sections, "STALE_AFTER", timedelta(0))

    report = chalice_app.get_services().sweeper.sweep(Deadline(30))

    assert report.left_without_leaving == 0
    assert status(client, flow.arn)["inside"] == 1
    flow.wait_for(execution, "SUCCEEDED")


def test_each_map_iteration_inside_counts_and_the_section_drains_when_the_last_leaves(
    aws, client, routed_lambda, functions
):
    section = example()
    states = section["States"]
    checkpoint = states["MaintenanceCheckpoint"]
    # Each iteration's own entry: the Map's ItemSelector hands it $$.Map.Item.Index.
    checkpoint["Parameters"]["Payload"]["entry.$"] = "$.index"
    checkpoint["Next"] = "CallTheDependency"
    leave = states["LeaveSection"]
    leave["Parameters"]["Payload"]["entry.$"] = "$.index"
    iteration = {
        "StartAt": "MaintenanceCheckpoint",
        "States": {
            "MaintenanceCheckpoint": checkpoint,
            "CallTheDependency": {"Type": "Wait", "SecondsPath": "$.workSeconds", "Next": "LeaveSection"},
            "LeaveSection": leave,
        },
    }
    definition = {
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "ItemSelector": {"index.$": "$$.Map.Item.Index", "workSeconds.$": "$$.Map.Item.Value.workSeconds"},
                "ItemProcessor": iteration,
                "End": True,
            }
        },
    }
    flow = machine(aws, routed_lambda, "Batches", definition)
    execution = flow.start({"items": [{"workSeconds": 3}, {"workSeconds": 4}, {"workSeconds": 5}]})

    wait_until(lambda: status(client, flow.arn)["inside"] == 3, what="three iterations inside")
    switch(client, flow.arn, True)
    entries = sorted(each["entry"] for each in status(client, flow.arn)["insideExecutions"])
    assert entries == ["0", "1", "2"]
    wait_until(lambda: status(client, flow.arn)["inside"] == 1, what="two iterations gone", timeout=20)
    assert status(client, flow.arn)["drained"] is False

    flow.wait_for(execution, "SUCCEEDED", timeout=20)
    assert status(client, flow.arn)["drained"] is True


def test_a_dependency_hold_is_drained_only_when_no_checkpoint_guarding_it_is_inside(
    aws, client, routed_lambda, functions
):
    guarded = example()
    guarded["States"]["MaintenanceCheckpoint"]["Parameters"]["Payload"]["guards"] = ["orders-db"]
    flow = machine(aws, routed_lambda, "Orders", guarded)
    execution = flow.start({"workSeconds": 3})
    wait_until(lambda: status(client, flow.arn)["inside"] == 1, what="the execution inside its section")

    taken = client.http.post("/holds", headers=JSON, body=json.dumps({"guards": ["orders-db"], "ttlSeconds": 600}))
    hold_id = taken.json_body["holdId"]
    during = client.http.get(f"/holds/{hold_id}", headers=JSON).json_body
    assert (during["drained"], during["inside"]) == (False, 1)
    assert during["insideExecutions"][0]["executionArn"] == execution
    assert during["oldestInsideAt"] == status(client, flow.arn)["oldestInsideAt"]
    flow.wait_for(execution, "SUCCEEDED")
    after = client.http.get(f"/holds/{hold_id}", headers=JSON).json_body
    assert (after["drained"], after["oldestInsideAt"]) == (True, None)
    other = client.http.post("/holds", headers=JSON, body=json.dumps({"guards": ["payments-api"]})).json_body
    assert client.http.get(f"/holds/{other['holdId']}", headers=JSON).json_body["drained"] is True


def test_a_checkpoint_without_a_section_records_nobody_and_makes_no_extra_call(aws, client, routed_lambda, functions):
    calls: list[str] = []
    services = chalice_app.get_services()
    services.clients.s3().meta.events.register("before-call", lambda model, **_: calls.append(model.name))
    plain = json.loads((ROOT / "examples" / "checkpoint.asl.json").read_text())
    flows = [machine(aws, routed_lambda, "Plain", plain), machine(aws, routed_lambda, "Section", example())]
    counts = []
    for flow in flows:
        flow.wait_for(flow.start({"workSeconds": 0}), "SUCCEEDED")  # warms the container's caches
        calls.clear()
        flow.wait_for(flow.start({"workSeconds": 0}), "SUCCEEDED")
        counts.append(sorted(calls))

    plain_calls, section_calls = counts
    # A section costs one PutObject as the execution passes and one DeleteObject as it leaves.
    assert sorted([*plain_calls, "DeleteObject", "PutObject"]) == section_calls
    assert status(client, flows[0].arn)["inside"] == 0


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"leave": "yes", "stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:O"}, "leave"),
        ({"leave": True, "executionArn": "x"}, "stateMachineArn"),
        ({"leave": True, "stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:O"}, "executionArn"),
        (
            {
                "leave": True,
                "stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:O",
                "executionArn": "x",
                "entry": [1],
            },
            "entry",
        ),
    ],
)
def test_a_bad_leave_event_names_its_field(aws, bucket, client, event, field):
    with pytest.raises(InvalidInput, match=f"^{field}:"):
        chalice_app.get_services().pauser.handle(event, Deadline(10))


def test_a_checkpoint_with_a_section_needs_the_execution_arn(aws, bucket, client):
    event = {"taskToken": "t", "stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:O"}
    with pytest.raises(InvalidInput, match=r"^executionArn:"):
        chalice_app.get_services().pauser.handle({**event, "section": "orders"}, Deadline(10))


def test_leaving_twice_is_harmless(aws, bucket, client):
    event = {
        "leave": True,
        "stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:O",
        "executionArn": "arn:aws:states:us-east-1:123456789012:execution:O:1",
    }
    pauser = chalice_app.get_services().pauser

    assert pauser.handle(event, Deadline(10)) == {"status": "left"}
    assert pauser.handle(event, Deadline(10)) == {"status": "left"}


def test_a_held_execution_is_counted_inside_from_the_moment_it_is_resumed(aws, client, routed_lambda, functions):
    flow = machine(aws, routed_lambda, "Orders", example())
    switch(client, flow.arn, True)
    execution = flow.start({"workSeconds": 3})
    flow.wait_held(1)
    assert status(client, flow.arn)["inside"] == 0  # held at the checkpoint: not inside yet

    resumed = switch(client, flow.arn, False)

    assert resumed["resumed"] == 1
    inside = status(client, flow.arn)
    assert [each["executionArn"] for each in inside["insideExecutions"]] == [execution]
    flow.wait_for(execution, "SUCCEEDED")
    assert status(client, flow.arn)["inside"] == 0
