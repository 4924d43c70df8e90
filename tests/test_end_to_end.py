"""Real executions in moto's interpreter, the checkpoint routed to the Chalice handler."""

import json

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
