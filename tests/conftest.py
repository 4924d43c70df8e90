"""Shared fixtures: moto as the whole of AWS, the Chalice test client, real workflows."""

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from chalice.cli.factory import CLIFactory
from chalice.test import Client
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend

from tests.harness import (
    ACCOUNT,
    MOTO_CONFIG,
    REGION,
    ROOT,
    create_pauser_function,
    definition,
    route_lambda_to,
    wait_until,
)
from tests.moto_fidelity import make_s3_atomic

os.environ.update(
    AWS_DEFAULT_REGION=REGION,
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_PROFILE", None)

import app as chalice_app

# Shared fixtures of their own modules: aws_model (what AWS answers that moto does not),
# faults, and the neighbourhood (namesakes in two regions and accounts, bad neighbours).
pytest_plugins = ["tests.aws_model", "tests.fault_injection", "tests.neighbours"]

STAGE = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["dev"]
BUCKET = STAGE["environment_variables"]["Bucket"]
PREFIX = STAGE["environment_variables"]["Prefix"]


@dataclass
class Aws:
    s3: Any
    sfn: Any
    lambda_: Any
    iam: Any


@pytest.fixture
def aws() -> Iterator[Aws]:
    from tests.aws_model import count_state_size_in_utf8_bytes  # a plugin: imported after pytest registers it

    make_s3_atomic()
    count_state_size_in_utf8_bytes()
    with mock_aws(config=MOTO_CONFIG):
        yield Aws(
            s3=boto3.client("s3", region_name=REGION),
            sfn=boto3.client("stepfunctions", region_name=REGION),
            lambda_=boto3.client("lambda", region_name=REGION),
            iam=boto3.client("iam", region_name=REGION),
        )


@pytest.fixture
def plain_aws() -> Iterator[None]:
    """moto without the interpreter: SendTaskSuccess accepts any token, for tests of
    many fake tokens (count the sends with tests/sends.py)."""
    make_s3_atomic()
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        yield


@pytest.fixture
def bucket(aws: Aws) -> str:
    aws.s3.create_bucket(Bucket=BUCKET)
    return BUCKET


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "stage_env(**variables): override the dev stage's environment variables for one test"
    )


@pytest.fixture
def client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """The Chalice test client on the dev stage, with any ``stage_env`` overrides applied."""
    marker = request.node.get_closest_marker("stage_env")
    project = json.loads((ROOT / ".chalice" / "config.json").read_text())
    variables = project["stages"]["dev"]["environment_variables"]
    if marker is not None:
        variables.update(marker.kwargs)
        monkeypatch.setattr(CLIFactory, "load_project_config", lambda self: project)
    # The test client swaps os.environ around each call; handlers running at once on
    # several threads (async invocations) could restore a copy without the stage's
    # variables. With them set for the whole test, any copy has them.
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    # Each test gets fresh services (and so fresh flag caches) for its fresh moto.
    chalice_app._services.clear()
    with Client(chalice_app.app, stage_name="dev", project_dir=str(ROOT)) as test_client:
        yield test_client
    chalice_app._services.clear()


class Invocations:
    """The handler invocations moto's Lambda backend has running now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0

    @contextlib.contextmanager
    def one(self) -> Iterator[None]:
        with self._lock:
            self.running += 1
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture
def routed_lambda(client: Client, monkeypatch: pytest.MonkeyPatch) -> Invocations:
    """moto's Lambda backend now runs our Chalice handler for real."""
    invocations = Invocations()

    def run_handler(function_name: str, event: object) -> object:
        with invocations.one():
            return client.lambda_.invoke(function_name.removeprefix("sfn-pauser-dev-"), event).payload

    monkeypatch.setattr(LambdaSimpleBackend, "invoke", route_lambda_to(run_handler))
    return invocations


class Workflow:
    """A real state machine from examples/, executed by moto, wired to the pauser."""

    def __init__(self, aws: Aws, arn: str, invocations: Invocations) -> None:
        self.aws = aws
        self.arn = arn
        self._invocations = invocations
        self.name = arn.rsplit(":", 1)[-1]
        self._count = 0

    def start(self, payload: Any = None) -> str:
        self._count += 1
        return self.aws.sfn.start_execution(
            stateMachineArn=self.arn,
            name=f"run-{self._count}",  # moto names every unnamed execution "None"
            input=json.dumps({} if payload is None else payload),
        )["executionArn"]

    def status(self, execution_arn: str) -> str:
        return self.aws.sfn.describe_execution(executionArn=execution_arn)["status"]

    def wait_for(self, execution_arn: str, status: str, timeout: float = 15.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            described = self.aws.sfn.describe_execution(executionArn=execution_arn)
            return described if described["status"] == status else None

        return wait_until(reached, timeout=timeout, what=f"{execution_arn} to be {status}")

    def held_keys(self) -> list[str]:
        listed = self.aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}{self.name}/")
        return [item["Key"] for item in listed.get("Contents", [])]

    def wait_held(self, count: int, timeout: float = 15.0) -> list[str]:
        """``count`` tokens held, and their checkpoints' invocations over: held, not about to
        re-check the flag after saving (which may resume the token itself)."""
        return wait_until(
            lambda: (keys := self.held_keys()) and len(keys) == count and not self._invocations.running and keys,
            timeout=timeout,
            what=f"{count} held token(s)",
        )

    def maintenance(self, value: str | None) -> None:
        """Set the Maintenance tag as an operator would with the AWS CLI (None removes it)."""
        if value is None:
            self.aws.sfn.untag_resource(resourceArn=self.arn, tagKeys=["Maintenance"])
        else:
            self.aws.sfn.tag_resource(resourceArn=self.arn, tags=[{"key": "Maintenance", "value": value}])


@pytest.fixture
def workflow(aws: Aws, bucket: str, routed_lambda: Invocations) -> Workflow:
    function_arn = create_pauser_function(aws.iam, aws.lambda_)
    arn = aws.sfn.create_state_machine(
        name="Orders",
        definition=definition(function_arn),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/states-role",
    )["stateMachineArn"]
    return Workflow(aws, arn, routed_lambda)
