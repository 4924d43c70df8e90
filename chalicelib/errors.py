"""Errors that name the problem.

Each error's class name is what a caller sees: Step Functions records it as the
Task's error when the task handler raises, and Chalice returns it as the ``Code``
of an HTTP error body. So the names are part of the contract, and each one
derives from the Chalice view error that carries the right HTTP status.
"""

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import ClientError
from chalice import BadRequestError, ChaliceViewError, ConflictError, ForbiddenError, NotFoundError

from chalicelib import faults

F = TypeVar("F", bound=Callable[..., Any])


class InvalidInput(BadRequestError):
    """A field of an event or request body is missing, mistyped or malformed."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class MissingField(InvalidInput):
    def __init__(self, field: str, expected: str) -> None:
        super().__init__(field, f"is required ({expected})")


class InvalidField(InvalidInput):
    pass


class UnknownField(InvalidInput):
    def __init__(self, fields: list[str], known: list[str]) -> None:
        super().__init__(
            ", ".join(sorted(fields)),
            f"unknown field(s); expected only {', '.join(sorted(known))}",
        )


class InvalidArn(InvalidField):
    pass


class OutputTooLarge(InvalidField):
    """The state's input can never be passed on as the Task's output: it is over 256 KiB."""


# A Task error name, like SfnPauser.Unavailable below; resuming a held task whose
# saved input is too large fails it with the same name.
OutputTooLarge.__name__ = OutputTooLarge.__qualname__ = "SfnPauser.OutputTooLarge"


class NotStandardWorkflow(InvalidField):
    """Express workflows cannot wait for a task token, so they cannot be paused."""


class StateMachineNotFound(NotFoundError):
    pass


class StateMachineNotAllowed(ForbiddenError):
    pass


class MaintenanceIsOn(ConflictError):
    pass


class SwitchContended(ConflictError):
    """Other switches of the same machine kept taking effect first; this one changed nothing."""


class HoldsContended(ConflictError):
    """Other changes of the holds kept landing first; this one changed nothing."""


class HoldNotFound(NotFoundError):
    """No such hold, or it has ended (released, expired)."""


class TooManyHolds(ConflictError):
    """The bucket already has as many holds as a checkpoint can afford to read."""


class AwsUnavailable(ChaliceViewError):
    """AWS throttled us or failed for a passing reason: the caller should retry."""

    STATUS_CODE = 503


class AwsAccessDenied(ForbiddenError):
    """AWS refused sfn-pauser's own role (IAM policy, SCP, KMS key policy)."""


class AwsError(ChaliceViewError):
    """AWS answered with an error that is neither passing nor the caller's fault."""

    STATUS_CODE = 502


class Unavailable(Exception):
    """The checkpoint could neither hold nor pass the execution because AWS failed
    for a passing reason (throttling, 5xx, a timeout). Nothing was saved twice and
    nothing was lost: the checkpoint's ``Retry`` on this error invokes it again.
    """


# Step Functions records the Lambda's error type as the Task's error, and ASL
# error names conventionally carry a namespace (``States.Timeout``,
# ``Lambda.ServiceException``); the Retry in the README names this one.
Unavailable.__name__ = Unavailable.__qualname__ = "SfnPauser.Unavailable"


class ConfigurationError(Exception):
    """An environment variable is missing or malformed; the message names it."""


def about_state_machine(error: ClientError, arn: str) -> Exception:
    """What a Step Functions error about one state machine means to our caller."""
    code = faults.error_code(error)
    if code in ("StateMachineDoesNotExist", "ResourceNotFound"):
        return StateMachineNotFound(f"stateMachineArn: no state machine {arn}")
    if code in ("InvalidArn", "ValidationException"):
        message = error.response.get("Error", {}).get("Message", code)
        return InvalidArn("stateMachineArn", f"AWS rejected {arn}: {message}")
    if faults.is_denied(error):
        return AwsAccessDenied(f"stateMachineArn: sfn-pauser's role may not act on {arn} ({code})")
    return error


def as_http_error(error: Exception) -> Exception:
    """An AWS error that reached the API, as the HTTP error a caller can act on."""
    if isinstance(error, ChaliceViewError) or not isinstance(error, faults.AWS_ERRORS):
        return error
    code = faults.error_code(error)
    if faults.is_transient(error):
        return AwsUnavailable(f"AWS answered {code}; nothing was lost, retry later")
    if faults.is_denied(error):
        return AwsAccessDenied(f"sfn-pauser's role was denied by AWS ({code}); check its IAM policy and any SCP")
    return AwsError(f"AWS answered {code}: {error}")


def aws_errors_as_http(method: F) -> F:
    """Answer AWS's failures (after botocore's retries) with 503, 403 or 502, never 500."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except faults.AWS_ERRORS as error:
            raise as_http_error(error) from None

    return wrapper  # type: ignore[return-value]
