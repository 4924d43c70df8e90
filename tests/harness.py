"""Helpers the tests share: the embedded AWS, real executions, and polling with a deadline."""

import io
import json
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
ACCOUNT = "123456789012"
FUNCTION_NAME = "sfn-pauser-dev-pauser"
RESUMER_FUNCTION_NAME = "sfn-pauser-dev-resumer"
# moto runs state machines for real, and its Lambda backend is the in-process stub
# that tests route to the Chalice handler (shared/DESIGN.md §4).
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}

T = TypeVar("T")


def wait_until(probe: Callable[[], T], *, timeout: float = 15.0, what: str = "condition") -> T:
    """Poll until ``probe()`` is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def definition(function_arn: str) -> str:
    text = (ROOT / "examples" / "checkpoint.asl.json").read_text()
    return text.replace("${PauserFunctionArn}", function_arn)


def create_pauser_function(iam: Any, lambda_: Any) -> str:
    """Create the app's functions in moto (the pauser and the resumer); return the pauser's ARN."""
    role = iam.create_role(
        RoleName="pauser-role",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("app.py", "def handler(event, context):\n    return event\n")
    arns = [
        lambda_.create_function(
            FunctionName=name,
            Runtime="python3.11",
            Role=role,
            Handler=f"app.{name.rsplit('-', 1)[-1]}",
            Code={"ZipFile": archive.getvalue()},
        )["FunctionArn"]
        for name in (FUNCTION_NAME, RESUMER_FUNCTION_NAME)
    ]
    return arns[0]


def route_lambda_to(invoke: Callable[[str, Any], Any]) -> Callable[..., bytes]:
    """A stand-in for LambdaSimpleBackend.invoke that runs ``invoke(function_name, event)``.

    An exception becomes an unhandled function error, as Lambda reports it, so the
    Task fails with the exception's type as its error. An ``Event`` (asynchronous)
    invocation runs on a thread of its own and answers at once, as Lambda does.
    """

    def fake_invoke(
        self: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response_headers: Any
    ) -> bytes:
        event = json.loads(body) if body else {}
        name = function_name.rsplit(":", 1)[-1] if function_name.startswith("arn:") else function_name
        if (headers or {}).get("X-Amz-Invocation-Type") == "Event":
            threading.Thread(target=invoke, args=(name, event), daemon=True).start()
            return b""
        try:
            result = invoke(name, event)
        except Exception as error:
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": type(error).__name__, "errorMessage": str(error)}).encode()
        return json.dumps(result).encode()

    return fake_invoke


_session: list[Any] = []


def shared_session() -> Any:
    """One boto3 session for every test container: a new session re-reads every
    service model from disk (a tenth of a second per client), which would
    dominate tests that build many containers."""
    if not _session:
        import boto3

        _session.append(boto3.session.Session(region_name=REGION))
    return _session[0]


def container(bucket: str, prefix: str, **settings: Any) -> Any:
    """One warm Lambda container: its own clients, limiters, caches and claim owner."""
    import logging

    from chalicelib.clients import AwsClients
    from chalicelib.config import Settings
    from chalicelib.services import Services

    config = Settings(bucket=bucket, prefix=prefix, **settings)
    clients = AwsClients(
        max_pool_connections=config.resume_concurrency,
        session=shared_session(),
        send_rate_cap=config.resume_rate_limit,
    )
    return Services.build(config, logging.getLogger("test.container"), clients)
