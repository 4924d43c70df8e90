"""Real executions in moto's interpreter, the checkpoint routed to the Chalice handler."""

import json

import pytest

from tests.conftest import PREFIX


def test_a_held_execution_stays_running_with_its_token_in_the_seed_layout(workflow, aws, bucket):
    workflow.maintenance("true")
    execution = workflow.start({"order": 1})

    [key] = workflow.wait_held(1)

    assert workflow.status(execution) == "RUNNING"
    assert key.startswith(f"{PREFIX}Orders/") and key.endswith(".json")
    body = json.loads(aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert body["taskToken"]
    assert body["executionArn"] == execution
    assert body["input"] == {"order": 1}


def test_lifting_maintenance_through_the_api_resumes_every_held_execution(workflow, client):
    workflow.maintenance("true")
    executions = [workflow.start({"order": n}) for n in range(3)]
    workflow.wait_held(3)

    response = client.http.post(
        "/maintenance",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"stateMachineArn": workflow.arn, "enabled": False}),
    )

    assert response.status_code == 200, response.body
    assert response.json_body["resumed"] == 3
    for n, execution in enumerate(executions):
        finished = workflow.wait_for(execution, "SUCCEEDED")
        assert json.loads(finished["output"]) == {"order": n}
    assert workflow.held_keys() == []


# With the cache off, the handler sees an untag at once; the cached path (and the
# sweep that bounds its delay) is tested in test_flag.py and test_sweep.py.
@pytest.mark.stage_env(MaintenanceCacheSeconds="0")
def test_untagging_lets_the_next_execution_through_and_it_resumes_the_held_ones(workflow):
    workflow.maintenance("true")
    held = [workflow.start({"order": n}) for n in range(2)]
    workflow.wait_held(2)

    workflow.maintenance(None)  # as `aws stepfunctions untag-resource` would
    passing = workflow.start({"order": "next"})

    for execution in [*held, passing]:
        workflow.wait_for(execution, "SUCCEEDED")
    assert workflow.held_keys() == []


def test_the_workflow_data_passes_through_the_checkpoint_unchanged(workflow):
    payload = {"order": {"id": "A-17", "lines": [1, 2.5, None, "x"]}, "ünïcode": "✓", "empty": {}}

    running = workflow.start(payload)
    finished = workflow.wait_for(running, "SUCCEEDED")

    assert json.loads(finished["output"]) == payload


def test_the_workflow_data_passes_through_a_pause_and_resume_unchanged(workflow, client):
    payload = {"order": {"id": "B-9", "total": 12.5}, "tags": ["a", "b"]}
    workflow.maintenance("TRUE")
    running = workflow.start(payload)
    workflow.wait_held(1)

    workflow.maintenance("false")
    response = client.http.post(
        "/resume",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"stateMachineArn": workflow.arn}),
    )

    assert response.json_body["resumed"] == 1
    assert json.loads(workflow.wait_for(running, "SUCCEEDED")["output"]) == payload


def test_a_payload_without_state_machine_arn_fails_its_execution_instead_of_hanging(aws, workflow):
    broken = json.loads(aws.sfn.describe_state_machine(stateMachineArn=workflow.arn)["definition"])
    del broken["States"]["MaintenanceCheckpoint"]["Parameters"]["Payload"]["stateMachineArn.$"]
    aws.sfn.update_state_machine(stateMachineArn=workflow.arn, definition=json.dumps(broken))

    running = workflow.start({"order": 1})
    failed = workflow.wait_for(running, "FAILED")

    assert failed.get("error") == "MissingField"
    assert "stateMachineArn" in failed.get("cause", "")
    assert workflow.held_keys() == []
