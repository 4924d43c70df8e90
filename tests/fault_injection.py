"""Faults injected into the product's own AWS calls, one HTTP attempt at a time.

A fault answers for AWS on every attempt botocore makes (so it outlasts the
``standard`` retries), or loses the answer to an attempt that really reached
moto (so the retry meets the aftermath: a 412 for a conditional write that
landed, a ``TaskTimedOut`` from :mod:`tests.aws_model` for a token already
answered). The kinds, as AWS and botocore would show them:

=================  ==========================================================
``throttling``     every attempt 400 ThrottlingException (S3: 503 SlowDown)
``5xx``            every attempt 500 InternalError, then 503 ServiceUnavailable
``timeout``        every attempt ConnectTimeoutError: the request never leaves
``lost-response``  the first attempt reaches moto, then ReadTimeoutError;
                   botocore retries, and the retry reaches moto too
``denied``         403 AccessDenied (S3), 400 AccessDeniedException (others)
=================  ==========================================================

How: ``BaseClient._make_api_call`` (one call, however many attempts) and
``Endpoint._do_get_response`` (one attempt) are wrapped for the whole process,
so clients on any thread are covered. Only clients made by the product's
``AwsClients`` are touched: the tests' own clients and moto's interpreter (which
invokes Lambda through boto3) see AWS as it is. Every product call is recorded
(``calls``), faulted or not, which is how a clean run lists an entry point's calls.

    with FaultInjector.installed() as faults:
        faults.inject("s3", "PutObject", "lost-response", when=key_under("tokens/"))
        ...  # run an entry point
        faults.clear()
"""

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.client import BaseClient
from botocore.endpoint import Endpoint
from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError
from botocore.retries.standard import ExponentialBackoff

from chalicelib.clients import AwsClients

FAULT_KINDS = ("throttling", "5xx", "timeout", "lost-response", "denied")
_PRODUCT = "_sfn_pauser_product_client"

Params = dict[str, Any]


@dataclass
class Fault:
    """One fault on one operation: for ``calls`` matching calls, or until cleared (None)."""

    service: str  # botocore's service name: "s3", "stepfunctions", "lambda"
    operation: str  # "PutObject", "SendTaskSuccess", ...
    kind: str
    when: Callable[[Params], bool] | None = None
    calls: int | None = None
    fired: int = 0  # calls it hit (for lost-response: calls whose answer it lost)

    def matches(self, service: str, operation: str, params: Params) -> bool:
        if (self.service, self.operation) != (service, operation):
            return False
        if self.calls is not None and self.fired >= self.calls:
            return False
        return self.when is None or self.when(params)


@dataclass
class Call:
    """One product call to AWS, as botocore made it (retries included)."""

    service: str
    operation: str
    params: Params = field(repr=False)
    fault: Fault | None = None
    attempts: int = 0
    reached: int = 0  # attempts that reached moto
    error: str | None = None  # the error code (or exception type) the caller saw

    @property
    def name(self) -> str:
        return f"{self.service}.{self.operation}"


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self.faults: list[Fault] = []
        self.calls: list[Call] = []

    def inject(
        self,
        service: str,
        operation: str,
        kind: str,
        *,
        when: Callable[[Params], bool] | None = None,
        calls: int | None = None,
    ) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {FAULT_KINDS}")
        fault = Fault(service, operation, kind, when, calls)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def operations(self) -> list[str]:
        """``service.Operation`` of every recorded call, in first-seen order."""
        return list(dict.fromkeys(call.name for call in self.calls))

    def calls_to(self, operation: str) -> list[Call]:
        return [call for call in self.calls if call.operation == operation]

    @classmethod
    @contextmanager
    def installed(cls) -> Iterator["FaultInjector"]:
        """Wrap botocore for the duration; nested installs are refused (one truth per test)."""
        if getattr(BaseClient._make_api_call, "_fault_injector", None) is not None:
            raise RuntimeError("a FaultInjector is already installed")
        injector = cls()
        originals = (
            BaseClient._make_api_call,
            Endpoint._do_get_response,
            AwsClients._client,
            ExponentialBackoff.delay_amount,
        )
        make_api_call, do_get_response, product_client, _ = originals

        def api_call(client: BaseClient, operation: str, params: Params) -> Any:
            if not getattr(client, _PRODUCT, False):
                return make_api_call(client, operation, params)
            return injector._call(client, operation, params, make_api_call)

        api_call._fault_injector = injector  # type: ignore[attr-defined]

        def attempt(endpoint: Endpoint, request: Any, operation_model: Any, context: Any) -> Any:
            return injector._attempt(endpoint, request, operation_model, context, do_get_response)

        def make_client(clients: AwsClients, service: str, region: str | None) -> Any:
            client = product_client(clients, service, region)
            setattr(client, _PRODUCT, True)
            return client

        BaseClient._make_api_call = api_call  # type: ignore[method-assign]
        Endpoint._do_get_response = attempt  # type: ignore[method-assign]
        AwsClients._client = make_client  # type: ignore[method-assign]
        # botocore backs off up to a second between throttled attempts: the attempts
        # are the point here, not the waiting.
        ExponentialBackoff.delay_amount = lambda self, context: 0  # type: ignore[method-assign]
        try:
            yield injector
        finally:
            (
                BaseClient._make_api_call,
                Endpoint._do_get_response,
                AwsClients._client,
                ExponentialBackoff.delay_amount,
            ) = originals  # type: ignore[method-assign]

    def _call(self, client: BaseClient, operation: str, params: Params, original: Callable[..., Any]) -> Any:
        service = client.meta.service_model.service_name
        with self._lock:
            fault = next((f for f in self.faults if f.matches(service, operation, params)), None)
            call = Call(service, operation, dict(params), fault)
            self.calls.append(call)
            if fault is not None and fault.kind != "lost-response":
                fault.fired += 1
        outer = getattr(self._local, "call", None)
        self._local.call = call
        try:
            return original(client, operation, params)
        except ClientError as error:
            call.error = str(error.response.get("Error", {}).get("Code"))
            raise
        except Exception as error:
            call.error = type(error).__name__
            raise
        finally:
            self._local.call = outer

    def _attempt(
        self, endpoint: Endpoint, request: Any, operation_model: Any, context: Any, original: Callable[..., Any]
    ) -> Any:
        call: Call | None = getattr(self._local, "call", None)
        if call is None:
            return original(endpoint, request, operation_model, context)
        call.attempts += 1
        kind = call.fault.kind if call.fault else None
        if kind is None or (kind == "lost-response" and call.attempts > 1):
            call.reached += 1
            return original(endpoint, request, operation_model, context)
        if kind == "lost-response":
            call.reached += 1
            answer = original(endpoint, request, operation_model, context)
            landed = answer[0] is not None and answer[0][0].status_code < 300
            if not landed:
                return answer
            with self._lock:
                assert call.fault is not None
                call.fault.fired += 1
            return None, ReadTimeoutError(endpoint_url=request.url)
        if kind == "timeout":
            return None, ConnectTimeoutError(endpoint_url=request.url)
        return _error_answer(request.url, *_ERRORS[kind](call.service, call.attempts)), None


def _throttling(service: str, attempt: int) -> tuple[int, str]:
    return (503, "SlowDown") if service == "s3" else (400, "ThrottlingException")


def _server_error(service: str, attempt: int) -> tuple[int, str]:
    return (500, "InternalError") if attempt % 2 else (503, "ServiceUnavailable")


def _denied(service: str, attempt: int) -> tuple[int, str]:
    return (403, "AccessDenied") if service == "s3" else (400, "AccessDeniedException")


_ERRORS: dict[str, Callable[[str, int], tuple[int, str]]] = {
    "throttling": _throttling,
    "5xx": _server_error,
    "denied": _denied,
}


class _Body:
    """The raw stream botocore reads an answer's bytes from."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield b""


def _error_answer(url: str, status: int, code: str) -> tuple[AWSResponse, dict[str, Any]]:
    """An error answer as botocore's parser would have made it from AWS's bytes."""
    response = AWSResponse(url, status, {}, _Body())
    parsed = {
        "Error": {"Code": code, "Message": f"injected {code}"},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}},
    }
    return response, parsed


def key_under(prefix: str) -> Callable[[Params], bool]:
    """A predicate: the call's S3 ``Key`` (or listing ``Prefix``) starts with ``prefix``."""

    def matches(params: Params) -> bool:
        return str(params.get("Key", params.get("Prefix", ""))).startswith(prefix)

    return matches


@pytest.fixture
def faults() -> Iterator[FaultInjector]:
    """A fault injector on the product's clients for one test (records every call too)."""
    with FaultInjector.installed() as injector:
        yield injector
