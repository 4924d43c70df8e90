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

from botocore.exceptions import BotoCoreError, ClientError

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
    return isinstance(error, ClientError) and (error_code(error) in THROTTLE_CODES or status_of(error) == 429)


def is_denied(error: BaseException) -> bool:
    return isinstance(error, ClientError) and error_code(error) in DENIED_CODES


def is_not_found(error: BaseException) -> bool:
    return isinstance(error, ClientError) and error_code(error) in NOT_FOUND_CODES


def is_dead_token(error: BaseException) -> bool:
    return isinstance(error, ClientError) and error_code(error) in DEAD_TOKEN_CODES


def is_conflict(error: BaseException) -> bool:
    return isinstance(error, ClientError) and error_code(error) in CONFLICT_CODES
