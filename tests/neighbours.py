"""Namesakes and neighbours: the bucket an sfn-pauser shares with machines it must not touch.

The ``neighbourhood`` fixture (moto's plain mode, with :mod:`tests.aws_model` so a
token sent to the wrong region or account answers ``InvalidToken`` as AWS would)
holds, all under the dev stage's Prefix:

==================  =====================================================  ==========
who                 what                                                   held tokens
==================  =====================================================  ==========
``home``            ``Orders`` in us-east-1, the machine a test works for  3
``other_region``    ``Orders`` in eu-west-1: same name, same folder        2
``other_account``   ``Orders`` in 222222222222, us-east-1: same folder     1
``deleted``         ``Gone``, deleted after it held a token                1
``express``         ``Quick``, an EXPRESS machine with a stray token file  1
``outsider``        ``Private``, outside ``ALLOWED`` (use the stage_env    1
                    marker), in maintenance with an ``until`` long past
stray folder        ``tokens/old exports/readme.txt``: not a machine       -
==================  =====================================================  ==========

Every neighbour but ``home`` starts in maintenance where it exists in this
account (so nothing of theirs is due to be resumed); ``home`` starts off. The
tokens were saved as the checkpoint saves them, with their own machine's ARN.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from chalicelib.arns import parse_state_machine_arn
from chalicelib.events import CheckpointEvent
from tests import harness
from tests.aws_model import AwsModel
from tests.conftest import BUCKET, PREFIX
from tests.harness import ACCOUNT, REGION

OTHER_REGION = "eu-west-1"
OTHER_ACCOUNT = "222222222222"
STRAY_KEY = f"{PREFIX}old exports/readme.txt"
PASS = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})
# The allow-list of a stage that may act on the namesakes but not on ``Private``.
ALLOWED = f"arn:aws:states:*:*:stateMachine:Orders,arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:Gone"
ALLOWED += f",arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:Quick"


@dataclass
class Neighbourhood:
    model: AwsModel
    s3: Any
    home: str
    other_region: str
    other_account: str
    deleted: str
    express: str
    outsider: str
    tokens: dict[str, list[str]] = field(default_factory=dict)

    def neighbours(self) -> list[str]:
        return [self.other_region, self.other_account, self.deleted, self.express, self.outsider]

    def neighbour_tokens(self) -> set[str]:
        return {token for arn in self.neighbours() for token in self.tokens[arn]}

    def held(self) -> set[str]:
        """Every token still in a machine folder (quarantined ones are not held)."""
        held: set[str] = set()
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
            for item in page.get("Contents", []):
                if item["Key"].endswith(".json") and not item["Key"].startswith(f"{PREFIX}_sfn-pauser/"):
                    body = self.s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
                    held.add(json.loads(body)["taskToken"])
        return held

    def touched(self) -> set[str]:
        """Tokens that any SendTask* reached AWS for, answered, beaten or refused."""
        model = self.model
        return set(model.answered) | set(model.heartbeats) | set(model.misdirected)


def sfn_in(account: str, region: str) -> Any:
    """A Step Functions client acting in another moto account (moto reads ``x-moto-account-id``)."""
    client = boto3.client("stepfunctions", region_name=region)
    if account != ACCOUNT:
        client.meta.events.register("before-sign.*.*", _as_account(account))
    return client


def _as_account(account: str) -> Callable[..., None]:
    def add_header(request: Any, **_: Any) -> None:
        request.headers["x-moto-account-id"] = account

    return add_header


@pytest.fixture
def neighbourhood(plain_aws: None, aws_model: AwsModel, client: Any) -> Neighbourhood:
    role = f"arn:aws:iam::{ACCOUNT}:role/states-role"

    def create(name: str, account: str = ACCOUNT, region: str = REGION, **extra: Any) -> str:
        return sfn_in(account, region).create_state_machine(name=name, definition=PASS, roleArn=role, **extra)[
            "stateMachineArn"
        ]

    here = Neighbourhood(
        model=aws_model,
        s3=boto3.client("s3", region_name=REGION),
        home=create("Orders"),
        other_region=create("Orders", region=OTHER_REGION),
        other_account=create("Orders", account=OTHER_ACCOUNT),
        deleted=create("Gone"),
        express=create("Quick", type="EXPRESS"),
        outsider=create("Private"),
    )
    store = harness.container(BUCKET, PREFIX).store
    counts = {
        here.home: 3,
        here.other_region: 2,
        here.other_account: 1,
        here.deleted: 1,
        here.express: 1,
        here.outsider: 1,
    }
    for arn, count in counts.items():
        machine = parse_state_machine_arn(arn)
        here.tokens[arn] = []
        for n in range(count):
            token = f"{machine.account}-{machine.region}-{machine.name}-{n}-{'t' * 32}"
            aws_model.issue(token, machine.region, machine.account, execution=f"{arn}:run-{n}")
            store.save(CheckpointEvent(task_token=token, state_machine=machine, execution_arn=f"{arn}:run-{n}"))
            here.tokens[arn].append(token)
    for arn in (here.other_region, here.deleted, here.express, here.outsider):
        tags = [{"key": "Maintenance", "value": "true"}]
        if arn == here.outsider:
            tags.append({"key": "MaintenanceUntil", "value": "2001-01-01T00:00:00Z"})
        sfn_in(ACCOUNT, parse_state_machine_arn(arn).region).tag_resource(resourceArn=arn, tags=tags)
    sfn_in(OTHER_ACCOUNT, REGION).tag_resource(
        resourceArn=here.other_account, tags=[{"key": "Maintenance", "value": "true"}]
    )
    sfn_in(ACCOUNT, REGION).delete_state_machine(stateMachineArn=here.deleted)
    here.s3.put_object(Bucket=BUCKET, Key=STRAY_KEY, Body=b"exports moved to the archive bucket in 2022\n")
    return here
