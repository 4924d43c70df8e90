"""A passing AWS fault at the checkpoint never fails the execution, on real executions.

The example workflow's checkpoint runs in moto's interpreter and calls the
Chalice handler. A fault is injected into the handler's own AWS calls (the
first matching call of the run): an error after botocore's retries
(throttling, 5xx, a timeout), or a lost answer (the call landed, botocore sent
it again, and the caller sees what the retry met). The execution must end held
once (maintenance on) or SUCCEEDED with its data (off), never FAILED; where the
handler could neither hold nor pass it, it raised ``SfnPauser.Unavailable`` and
the checkpoint's ``Retry`` invoked it again.

The full matrix, every call of every entry point, is tests/test_fault_matrix.py;
these are the cases the issue reported, end to end.
"""

import json
from collections.abc import Callable
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError, ConnectTimeoutError

import app as chalice_app
from chalicelib.deadline import Deadline
from tests.conftest import BUCKET, PREFIX
from tests.harness import wait_until


def aws_error(code: str, status: int) -> Callable[[str], Exception]:
    return lambda operation: ClientError(
        {"Error": {"Code": code, "Message": "injected"}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


def timeout(operation: str) -> Exception:
    return ConnectTimeoutError(endpoint_url="https://injected")


LOST = None  # the call lands, its answer is lost, and botocore's retry is what the caller sees

FAULTS = {
    "throttled": aws_error("ThrottlingException", 400),
    "s3-slowdown": aws_error("SlowDown", 503),
    "5xx": aws_error("InternalError", 500),
    "timeout": timeout,
    "lost-response": LOST,
}


class OneFault:
    """The first product call of ``operation`` whose params match meets ``fault``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, operation: str, fault: Any, matching: Callable[[dict], bool]):
        self.hit = 0
        original = BaseClient._make_api_call

        def make_api_call(client: Any, name: str, params: dict[str, Any]) -> Any:
            if name != operation or self.hit or not matching(params):
                return original(client, name, params)
            self.hit += 1
            if fault is LOST:
                original(client, name, params)
                return original(client, name, params)
            raise fault(name)

        monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)


def held_task_write(params: dict[str, Any]) -> bool:
    return params.get("Key", "").startswith(f"{PREFIX}Orders/")


def index_write(params: dict[str, Any]) -> bool:
    return "/_sfn-pauser/tokens/" in params.get("Key", "")


def own_token(params: dict[str, Any]) -> bool:
    return True


def retried_errors(workflow: Any, execution: str) -> list[str]:
    history = workflow.aws.sfn.get_execution_history(executionArn=execution)["events"]
    return [event["taskFailedEventDetails"]["error"] for event in history if "taskFailedEventDetails" in event]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize(
    "operation, matching", [("PutObject", held_task_write), ("PutObject", index_write)], ids=["task", "index"]
)
def test_a_fault_on_the_token_write_leaves_the_execution_held_once(workflow, monkeypatch, fault, operation, matching):
    workflow.maintenance("true")
    injected = OneFault(monkeypatch, operation, FAULTS[fault], matching)

    execution = workflow.start({"order": 1})

    [key] = workflow.wait_held(1)
    assert injected.hit == 1
    assert workflow.status(execution) == "RUNNING"
    errors = retried_errors(workflow, execution)
    assert errors == ([] if fault == "lost-response" else ["SfnPauser.Unavailable"]), errors
    assert json.loads(workflow.aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())["executionArn"] == execution


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_on_its_own_send_task_success_lets_the_execution_through_with_its_data(workflow, monkeypatch, fault):
    injected = OneFault(monkeypatch, "SendTaskSuccess", FAULTS[fault], own_token)

    execution = workflow.start({"order": 2})

    finished = workflow.wait_for(execution, "SUCCEEDED", timeout=20)
    assert injected.hit == 1
    assert json.loads(finished["output"]) == {"order": 2}
    assert workflow.held_keys() == []
    errors = retried_errors(workflow, execution)
    assert errors == ([] if fault == "lost-response" else ["SfnPauser.Unavailable"]), errors


@pytest.mark.parametrize("fault", [name for name in FAULTS if name != "lost-response"])
def test_a_fault_reading_the_flag_holds_the_execution_rather_than_fail_it(workflow, monkeypatch, fault):
    # The mirror is not there yet, so the flag is read from the tags: a fault there holds
    # (the safe side). The re-check after saving, or else the sweep, lets it go once the
    # flag can be read; it never fails.
    injected = OneFault(monkeypatch, "ListTagsForResource", FAULTS[fault], own_token)

    execution = workflow.start({"order": 3})

    wait_until(lambda: workflow.held_keys() or workflow.status(execution) != "RUNNING", what="held or through")
    chalice_app.get_services().sweeper.sweep(Deadline(10))
    finished = workflow.wait_for(execution, "SUCCEEDED")
    assert injected.hit == 1
    assert json.loads(finished["output"]) == {"order": 3}
    assert retried_errors(workflow, execution) == []
