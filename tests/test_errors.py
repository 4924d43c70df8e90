"""What the API answers when AWS, not the caller, is the problem."""

import json

import app as chalice_app
from tests.harness import ACCOUNT, REGION
from tests.test_resumer_faults import FAULTS

ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:Orders"


def test_aws_throttling_is_a_503_to_retry_not_a_500(aws, bucket, client):
    aws.sfn.create_state_machine(
        name="Orders",
        definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/r",
    )
    sfn = chalice_app.get_services().clients.sfn(REGION)
    sfn.meta.events.register_first("before-call.sfn.DescribeStateMachine", lambda **_: FAULTS["throttling"]())

    response = client.http.get(f"/maintenance?stateMachineArn={ARN}")

    assert response.status_code == 503, response.body
    assert response.json_body["Code"] == "AwsUnavailable"
    assert "retry" in response.json_body["Message"]


def test_an_unreachable_aws_is_a_503(aws, bucket, client):
    aws.sfn.create_state_machine(
        name="Orders",
        definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/r",
    )
    sfn = chalice_app.get_services().clients.sfn(REGION)

    def unreachable(**_):
        raise FAULTS["timeout"]()

    sfn.meta.events.register_first("before-call.sfn.DescribeStateMachine", unreachable)

    response = client.http.post(
        "/resume", headers={"Content-Type": "application/json"}, body=json.dumps({"stateMachineArn": ARN})
    )

    assert response.status_code == 503, response.body
    assert b"Traceback" not in response.body
