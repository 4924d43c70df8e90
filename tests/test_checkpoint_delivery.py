"""At-least-once delivery and the workflow's data, on real executions in moto's interpreter.

Step Functions and Lambda deliver the checkpoint's event at least once: a
handler that timed out after saving is invoked again with the same token. One
token must be one held entry, however often it comes, and the lift must count
it once. The data the workflow passes through is measured in UTF-8 bytes, as
AWS measures its 256 KiB limits.
"""

import json

import pytest
from moto.awslambda_simple.models import LambdaSimpleBackend

from tests.conftest import BUCKET, PREFIX
from tests.harness import route_lambda_to, wait_until


class Checkpoint:
    """Executions of the example workflow stopped at the checkpoint, their events captured,
    so that each test delivers an event as often as it likes."""

    def __init__(self, workflow):
        self.workflow = workflow
        self._events = {}

    def capture(self, function_name, event):
        self._events[event["executionArn"]] = event
        return {}

    def arrive(self, payload):
        execution = self.workflow.start(payload)
        return execution, wait_until(lambda: self._events.get(execution), what=f"{execution} at the checkpoint")


@pytest.fixture
def checkpoint(workflow, monkeypatch):
    captured = Checkpoint(workflow)
    monkeypatch.setattr(LambdaSimpleBackend, "invoke", route_lambda_to(captured.capture))
    return captured


def deliver(client, event):
    return client.lambda_.invoke("pauser", event).payload


def switch(client, arn, enabled):
    response = client.http.post(
        "/maintenance",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"stateMachineArn": arn, "enabled": enabled}),
    )
    assert response.status_code == 200, response.body
    return response.json_body


def status(client, arn):
    response = client.http.get(f"/maintenance?stateMachineArn={arn}")
    assert response.status_code == 200, response.body
    return response.json_body


def quarantined(aws):
    listed = aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}_sfn-pauser/quarantine/")
    return [item["Key"] for item in listed.get("Contents", [])]


def test_the_same_event_delivered_three_times_is_held_once_and_resumed_once(checkpoint, client, aws):
    checkpoint.workflow.maintenance("true")
    execution, event = checkpoint.arrive({"order": 1})

    answers = [deliver(client, event) for _ in range(3)]

    assert {answer["saved_token_key"] for answer in answers} == {answers[0]["saved_token_key"]}
    assert checkpoint.workflow.held_keys() == [answers[0]["saved_token_key"]]
    assert status(client, checkpoint.workflow.arn)["paused"] == 1
    lifted = switch(client, checkpoint.workflow.arn, False)
    assert (lifted["resumed"], lifted["expired"], lifted["remaining"]) == (1, 0, 0)
    checkpoint.workflow.wait_for(execution, "SUCCEEDED")
    assert checkpoint.workflow.held_keys() == []
    assert quarantined(aws) == []


def test_a_repeated_delivery_after_the_lift_lets_the_execution_go_and_leaves_nothing_to_expire(checkpoint, client, aws):
    checkpoint.workflow.maintenance("true")
    execution, event = checkpoint.arrive({"order": 2})
    assert deliver(client, event)["status"] == "maintenance"
    # Lifted without resuming, so the entry is still there when the retry comes.
    response = client.http.post(
        "/maintenance",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"stateMachineArn": checkpoint.workflow.arn, "enabled": False, "resume": False}),
    )
    assert response.status_code == 200, response.body

    assert deliver(client, event)["status"] == "proceeding"

    finished = checkpoint.workflow.wait_for(execution, "SUCCEEDED")
    assert json.loads(finished["output"]) == {"order": 2}
    # The earlier entry of the same token is gone, not left to be "resumed" into an
    # already-answered token (TaskTimedOut on AWS) and reported expired.
    assert checkpoint.workflow.held_keys() == []
    assert quarantined(aws) == []


def test_a_repeated_delivery_writes_no_second_index_or_entry(checkpoint, client, aws):
    checkpoint.workflow.maintenance("true")
    _, event = checkpoint.arrive({})
    deliver(client, event)
    before = aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["KeyCount"]

    deliver(client, event)

    assert aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["KeyCount"] == before


# 60,000 kana are 180,000 bytes as UTF-8, but 360,000 as json.dumps' default \uXXXX escapes:
# within Step Functions' 256 KiB only if nothing escapes them.
JAPANESE = {"注文": "テ" * 60_000}


@pytest.mark.parametrize("maintenance", ["false", "true"])
def test_non_ascii_data_passes_through_as_it_came_held_or_not(checkpoint, client, maintenance):
    checkpoint.workflow.maintenance(maintenance)
    execution, event = checkpoint.arrive(JAPANESE)

    deliver(client, event)
    if maintenance == "true":
        switch(client, checkpoint.workflow.arn, False)

    finished = checkpoint.workflow.wait_for(execution, "SUCCEEDED")
    assert json.loads(finished["output"]) == JAPANESE


def test_a_held_body_keeps_non_ascii_as_utf8(checkpoint, client, aws):
    checkpoint.workflow.maintenance("true")
    _, event = checkpoint.arrive(JAPANESE)

    key = deliver(client, event)["saved_token_key"]

    raw = aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert len(raw) < 200_000
    assert "テ".encode() in raw


def test_input_that_can_never_be_the_output_fails_its_task_with_a_named_error(workflow):
    # 90,000 kana: 270,000 bytes, over the 262,144 a task output may have.
    execution = workflow.start({"注文": "テ" * 90_000})

    failed = workflow.wait_for(execution, "FAILED")

    assert failed.get("error") == "SfnPauser.OutputTooLarge", failed
    assert "262144" in failed.get("cause", "")
