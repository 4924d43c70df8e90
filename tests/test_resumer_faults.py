"""Every AWS call the resumer makes, failing at each point, loses nothing.

A fault is injected on the client (botocore's ``before-call`` hook answers for
AWS), on some calls of one operation during a first resume. After it, the
leftovers a dead resumer would leave (claims) are cleared as the sweep would,
and a clean resume must finish the job: every token sent, nothing still held.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError

from chalicelib.arns import parse_state_machine_arn
from chalicelib.deadline import Deadline
from chalicelib.events import CheckpointEvent
from chalicelib.services import Services
from tests import harness
from tests.conftest import BUCKET, PREFIX
from tests.harness import REGION
from tests.sends import counting_sends

MACHINE = parse_state_machine_arn(f"arn:aws:states:{REGION}:123456789012:stateMachine:Faulty")
TOKENS = 12

# Where a resume talks to AWS, in order: list, claim (PutObject), read (GetObject),
# send, then batch delete (DeleteObjects). Each with the calls that fail: the
# listing and the batch delete happen once per pass for this backlog.
OPERATIONS = {
    "ListObjectsV2": ("s3", 1, 1),
    "PutObject": ("s3", 2, 5),
    "GetObject": ("s3", 2, 5),
    "SendTaskSuccess": ("sfn", 2, 5),
    "DeleteObjects": ("s3", 1, 1),
}
FAULTS = {
    "5xx": lambda: _error(500, "InternalError", "We encountered an internal error"),
    "throttling": lambda: _error(400, "ThrottlingException", "Rate exceeded"),
    "timeout": lambda: ReadTimeoutError(endpoint_url="https://aws.example"),
}


def _error(status: int, code: str, message: str) -> tuple[AWSResponse, dict[str, Any]]:
    response = AWSResponse("https://aws.example", status, {}, None)
    return response, {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}


class FaultInjector:
    """Fails calls ``first``..``last`` (1-based) of one operation with one fault."""

    def __init__(self, operation: str, fault: str, first: int, last: int) -> None:
        self.operation, self.fault = operation, fault
        self.first, self.last = first, last
        self.seen = 0
        self.injected = 0

    def attach(self, client: Any) -> None:
        client.meta.events.register_first("before-call", self.before_call)

    def before_call(self, model: Any, **_: Any) -> Any:
        if model.name != self.operation:
            return None
        self.seen += 1
        if not self.first <= self.seen <= self.last:
            return None
        self.injected += 1
        answer = FAULTS[self.fault]()
        if isinstance(answer, Exception):
            raise answer
        return answer


def container() -> Services:
    return harness.container(BUCKET, PREFIX)


def clear_claims_as_the_sweep_would(services: Services) -> None:
    for key, etag in services.store.stale_claims(datetime.now(UTC) + timedelta(seconds=1)):
        services.store.delete_if_unchanged(key, etag)


@pytest.mark.parametrize("exclusive", [False, True], ids=["claiming", "leased"])
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_failing_call_loses_nothing_and_the_failed_tokens_resume_later(plain_aws, operation, fault, exclusive):
    # Claiming: a selection, a limit or an abort claims each token. Leased: a whole
    # drain holds its shards' leases and sends without claims (PutObject is the lease).
    seeding = container()
    tokens = [f"token-{n:02d}" for n in range(TOKENS)]
    for token in tokens:
        seeding.store.save(CheckpointEvent(task_token=token, state_machine=MACHINE, input={}))
    faulty = container()
    service, first, last = OPERATIONS[operation]
    injector = FaultInjector(operation, fault, first, last)
    injector.attach(faulty.clients.s3() if service == "s3" else faulty.clients.sfn(REGION))

    with counting_sends() as sends:
        try:
            faulty.resumer.resume(MACHINE, Deadline(30), exclusive=exclusive)
        except (ReadTimeoutError, Exception) as error:  # a failed listing may end the pass
            assert operation == "ListObjectsV2", f"only a listing fault may end a resume: {error!r}"
        assert injector.injected > 0, "the fault never fired, so this case proves nothing"
        # Nothing a failed pass leaves behind is lost: every token is either sent or still held.
        still_held = {
            task.task_token for item in seeding.store.held(MACHINE.name) if (task := seeding.store.load(item.key))
        }
        assert set(tokens) == set(sends.successes) | still_held

        clear_claims_as_the_sweep_would(seeding)
        final = container().resumer.resume(MACHINE, Deadline(30), exclusive=exclusive)

    assert set(sends.successes) == set(tokens)
    assert list(seeding.store.held(MACHINE.name)) == []
    assert final.remaining == 0
    if operation != "DeleteObjects":
        # A token is sent twice only when it was sent and then could not be deleted;
        # AWS answers such a second send with TaskTimedOut (moto's plain mode accepts it).
        assert sends.duplicates() == 0
