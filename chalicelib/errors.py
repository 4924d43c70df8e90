"""Errors that name the problem.

Each error's class name is what a caller sees: Step Functions records it as the
Task's error when the task handler raises, and Chalice returns it as the ``Code``
of an HTTP error body. So the names are part of the contract, and each one
derives from the Chalice view error that carries the right HTTP status.
"""

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from chalice import BadRequestError, ChaliceViewError, ConflictError, ForbiddenError, NotFoundError

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


class NotStandardWorkflow(InvalidField):
    """Express workflows cannot wait for a task token, so they cannot be paused."""


class StateMachineNotFound(NotFoundError):
    pass


class StateMachineNotAllowed(ForbiddenError):
    pass


class MaintenanceIsOn(ConflictError):
    pass


class AwsUnavailable(ChaliceViewError):
    """AWS throttled us or failed for a passing reason: the caller should retry."""

    STATUS_CODE = 503


class ConfigurationError(Exception):
    """An environment variable is missing or malformed; the message names it."""


_NOT_FOUND = ("StateMachineDoesNotExist", "ResourceNotFound")
_REJECTED_ARN = ("InvalidArn", "ValidationException")
_DENIED = ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException")


def about_state_machine(error: ClientError, arn: str) -> Exception:
    """What a Step Functions error about one state machine means to our caller."""
    code = error.response.get("Error", {}).get("Code", "")
    if code in _NOT_FOUND:
        return StateMachineNotFound(f"stateMachineArn: no state machine {arn}")
    if code in _REJECTED_ARN:
        message = error.response.get("Error", {}).get("Message", code)
        return InvalidArn("stateMachineArn", f"AWS rejected {arn}: {message}")
    if code in _DENIED:
        return StateMachineNotAllowed(f"stateMachineArn: sfn-pauser's role may not act on {arn} ({code})")
    return error


_RETRYABLE = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "SlowDown",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalError",
        "InternalServerError",
        "ServiceException",
        "RequestTimeout",
    }
)


def retryable_as_503(method: F) -> F:
    """Answer AWS's passing failures (after botocore's retries) with 503, not 500."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in _RETRYABLE or status >= 500:
                raise AwsUnavailable(f"AWS answered {code or status}; nothing was lost, retry later") from None
            raise
        except BotoCoreError as error:
            raise AwsUnavailable(f"AWS could not be reached ({type(error).__name__}); retry later") from None

    return wrapper  # type: ignore[return-value]
