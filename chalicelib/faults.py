"""What an AWS error means to sfn-pauser, decided in one place.

Every entry point (the checkpoint, the resumer, the sweep, the API) asks these
questions of the same errors; answering them here keeps the rules from drifting:

- *transient*: throttling, 5xx, timeouts and lost connections. botocore's
  ``standard`` retry mode has already retried them; they pass with time, so a
  caller keeps what it holds and tries again later (or lets Step Functions retry).
- *denied*: the role may not act (IAM, an SCP, a KMS key policy).
- *not found*: the state machine (or object) does not exist.
- *dead token*: AWS's word that a task token can never succeed again.
- *conflict*: a conditional S3 write or delete lost to another writer.
"""

import threading
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, ConnectionClosedError, ReadTimeoutError

AWS_ERRORS = (ClientError, BotoCoreError)

THROTTLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "SlowDown",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
    }
)
_TRANSIENT_CODES = THROTTLE_CODES | {
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceException",
    "RequestTimeout",
    "RequestTimeoutException",
    "PriorRequestNotComplete",
}
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "KMS.AccessDeniedException",
        "AllAccessDisabled",
        "403",
    }
)
NOT_FOUND_CODES = frozenset({"StateMachineDoesNotExist", "ResourceNotFound", "NoSuchKey", "404"})
# A task token that can never succeed: malformed, timed out or already answered, gone.
DEAD_TOKEN_CODES = frozenset({"InvalidToken", "TaskTimedOut", "TaskDoesNotExist"})
# S3 answers a lost If-None-Match / If-Match race with 412, or 409 while another write is in flight.
CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412"})


def error_code(error: BaseException) -> str:
    """AWS's error code, or the exception's type for errors that never reached AWS."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code") or status_of(error) or "ClientError")
    return type(error).__name__


def status_of(error: BaseException) -> int:
    if isinstance(error, ClientError):
        return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return 0


def is_transient(error: BaseException) -> bool:
    """Throttling, 5xx, a timeout or a lost connection: it passes, so try again later."""
    if isinstance(error, BotoCoreError):
        return True
    if not isinstance(error, ClientError):
        return False
    return error_code(error) in _TRANSIENT_CODES or status_of(error) >= 500 or status_of(error) == 429


def is_throttling(error: BaseException) -> bool:
    return isinstance(error, ClientError) and is_throttling_answer(error_code(error), status_of(error))


def is_throttling_answer(code: str | None, status: int) -> bool:
    """The same rule for an answer seen before it is raised (botocore's ``needs-retry`` hook)."""
    return code in THROTTLE_CODES or status == 429


def is_denied(error: BaseException) -> bool:
    return isinstance(error, ClientError) and error_code(error) in DENIED_CODES


def is_not_found(error: BaseException) -> bool:
    return isinstance(error, ClientError) and error_code(error) in NOT_FOUND_CODES


def is_dead_token(error: BaseException) -> bool:
    return isinstance(error, ClientError) and error_code(error) in DEAD_TOKEN_CODES


def is_conflict(error: BaseException) -> bool:
    return isinstance(error, ClientError) and error_code(error) in CONFLICT_CODES


class LostAnswers:
    """Whether the call just made on this thread had an attempt whose answer was lost.

    botocore retries a request whose answer timed out or was cut off, and that
    attempt may have landed. For SendTaskSuccess the retry then meets AWS's
    answer for a token already answered (``TaskTimedOut``): the call succeeded,
    although it reports a dead token. A connect timeout, by contrast, never sent
    anything. The retry loop does not say which attempts it made, so a
    ``needs-retry`` hook remembers it, per thread (clients are shared by threads).
    """

    # Attempts that reached AWS, or may have: the answer was lost on the way back.
    _MAY_HAVE_LANDED = (ReadTimeoutError, ConnectionClosedError)

    def __init__(self) -> None:
        self._local = threading.local()

    def attach(self, client: Any, operations: tuple[str, ...]) -> None:
        service = client.meta.service_model.service_id.hyphenize()
        for operation in operations:
            client.meta.events.register(f"needs-retry.{service}.{operation}", self._observe)

    def reset(self) -> None:
        self._local.lost = False

    def happened(self) -> bool:
        """Since :meth:`reset` on this thread, an attempt may have landed without our hearing."""
        return bool(getattr(self._local, "lost", False))

    def _observe(self, caught_exception: BaseException | None = None, **_: Any) -> None:
        if isinstance(caught_exception, self._MAY_HAVE_LANDED):
            self._local.lost = True
