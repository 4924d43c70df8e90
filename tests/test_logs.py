"""The function's whole log, not only our own lines, never carries a task token.

Lambda's advanced logging controls (``AWS_LAMBDA_LOG_LEVEL=DEBUG``) set the root
logger to DEBUG; botocore would then log every request body, task tokens included.
"""

import json
import logging
from collections.abc import Iterator

import pytest

import app as chalice_app
from chalicelib.logs import SDK_LOGGERS, fingerprint, keep_sdk_loggers_above_debug
from tests.conftest import BUCKET


class Everything(logging.Handler):
    """Every record of every logger that reaches the root, as Lambda's log would show it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self) -> list[str]:
        # moto stands in for AWS: its own lines are AWS's side, not the function's log.
        return [record.getMessage() for record in self.records if not record.name.startswith("moto")]


@pytest.fixture
def root_at_debug() -> Iterator[Everything]:
    """The root logger at DEBUG, as Lambda sets it, and the SDK's loggers as a fresh container has them."""
    root = logging.getLogger()
    sdk = [logging.getLogger(name) for name in SDK_LOGGERS]
    before = root.level, [logger.level for logger in sdk]
    for logger in sdk:
        logger.setLevel(logging.NOTSET)
    root.setLevel(logging.DEBUG)
    handler = Everything()
    # Chalice's app logger does not propagate: it writes to stdout itself.
    watched = [root, chalice_app.app.log]
    for logger in watched:
        logger.addHandler(handler)
    yield handler
    for logger in watched:
        logger.removeHandler(handler)
    root.setLevel(before[0])
    for logger, level in zip(sdk, before[1], strict=True):
        logger.setLevel(level)


def test_a_hold_and_a_lift_at_debug_log_no_task_token_anywhere(root_at_debug, workflow, client):
    response = client.http.post(
        "/maintenance",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"stateMachineArn": workflow.arn, "enabled": True}),
    )
    assert response.status_code == 200, response.body
    execution = workflow.start({"order": 1})
    [key] = workflow.wait_held(1)
    token = json.loads(workflow.aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())["taskToken"]

    response = client.http.post(
        "/maintenance",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"stateMachineArn": workflow.arn, "enabled": False}),
    )
    assert response.status_code == 200, response.body
    workflow.wait_for(execution, "SUCCEEDED")

    lines = root_at_debug.lines()
    assert any(fingerprint(token) in line for line in lines)  # the log did see this token's decisions
    assert [line for line in lines if token in line] == []


@pytest.mark.parametrize("root_level", [logging.DEBUG, logging.INFO, logging.WARNING])
def test_the_sdk_loggers_stay_above_debug_and_never_below_the_root(root_at_debug, root_level):
    logging.getLogger().setLevel(root_level)

    keep_sdk_loggers_above_debug()
    logging.getLogger().setLevel(logging.DEBUG)  # lowered again later: the SDK's loggers keep their level

    for name in SDK_LOGGERS:
        assert logging.getLogger(name).getEffectiveLevel() == max(logging.INFO, root_level)
        assert not logging.getLogger(f"{name}.endpoint").isEnabledFor(logging.DEBUG)
