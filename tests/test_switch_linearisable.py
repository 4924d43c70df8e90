"""Switches of one machine are linearisable, whatever their AWS calls' timing.

Two pipelines switch the same machine at once, one's TagResource answering
slowly: once both have answered, the tags, the status, the task handlers and
the sweep must all agree with the call that took effect last, and the audit
trail must list them in that order. Each test puts the other switch (or the
sweep) inside the window of one AWS call, through botocore's event hooks on
that container's client.
"""

import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib.arns import parse_state_machine_arn
from chalicelib.commands import SwitchMaintenance
from chalicelib.deadline import Deadline
from chalicelib.services import Services
from tests import harness
from tests.conftest import BUCKET, PREFIX
from tests.harness import ACCOUNT, REGION
from tests.moto_fidelity import make_s3_atomic

PASS = json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})


@pytest.fixture
def machine() -> Iterator[Any]:
    make_s3_atomic()
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        arn = boto3.client("stepfunctions", region_name=REGION).create_state_machine(
            name="Orders", definition=PASS, roleArn=f"arn:aws:iam::{ACCOUNT}:role/r"
        )["stateMachineArn"]
        yield parse_state_machine_arn(arn)


def container() -> Services:
    return harness.container(BUCKET, PREFIX)


def switch(services: Services, machine: Any, enabled: bool, actor: str) -> dict[str, Any]:
    command = SwitchMaintenance.turn(machine, enabled, reason=actor, resume=False)
    return services.control.switch(machine, command, actor, Deadline(10))


def once_during(services: Services, event: str, action: Callable[[], Any]) -> list[Any]:
    """Run ``action`` the first time ``services`` makes the call named by ``event``."""
    results: list[Any] = []

    def hook(**_: Any) -> None:
        if not results:
            results.append(action())

    services.clients.sfn(REGION).meta.events.register(event, hook)
    return results


def tags_say_on(machine: Any) -> bool:
    tags = boto3.client("stepfunctions", region_name=REGION).list_tags_for_resource(resourceArn=machine.unqualified)
    return any(tag["key"] == "Maintenance" and tag["value"] == "true" for tag in tags["tags"])


def everyone_says(machine: Any) -> set[bool]:
    """The flag as the tags, the status, a fresh task handler and a sweep see it."""
    observer = container()
    seen = {tags_say_on(machine), observer.control.status(machine)["maintenance"], observer.flag.is_on_now(machine)}
    observer.sweeper.sweep(Deadline(10))
    seen |= {tags_say_on(machine), container().flag.is_on_now(machine)}
    return seen


def audit_actions(machine: Any) -> list[str]:
    events, _ = container().control._audit.page(machine, 10, None)
    return [event["action"] for event in events]


def test_an_off_inside_a_slow_on_tag_write_wins_because_it_took_effect_last(machine):
    on, off = container(), container()
    off_answer = once_during(on, "before-call.sfn.TagResource", lambda: switch(off, machine, False, "pipeline-b"))

    on_answer = switch(on, machine, True, "pipeline-a")

    assert on_answer["maintenance"] is True and on_answer["changed"] is True
    assert off_answer[0]["maintenance"] is False and off_answer[0]["changed"] is True
    assert everyone_says(machine) == {False}
    assert audit_actions(machine) == ["maintenance-off", "maintenance-on"]  # newest first


def test_an_on_inside_a_slow_untag_wins_because_it_took_effect_last(machine):
    first, on, off = container(), container(), container()
    switch(first, machine, True, "earlier")
    on_answer = once_during(off, "before-call.sfn.UntagResource", lambda: switch(on, machine, True, "pipeline-a"))

    off_answer = switch(off, machine, False, "pipeline-b")

    assert off_answer["maintenance"] is False
    assert on_answer[0]["maintenance"] is True
    assert everyone_says(machine) == {True}
    assert audit_actions(machine) == ["maintenance-on", "maintenance-off", "maintenance-on"]


def test_a_sweep_between_an_overtaken_tag_write_and_its_correction_does_not_flip_the_flag(machine):
    on, off, sweeper = container(), container(), container()
    # ON publishes; OFF takes effect after it and finishes; ON's tag write then lands
    # (the tags say "on"), and the sweep reads them before ON puts them right.
    once_during(on, "before-call.sfn.TagResource", lambda: switch(off, machine, False, "pipeline-b"))
    swept = once_during(on, "after-call.sfn.TagResource", lambda: sweeper.sweeper.sweep(Deadline(10)))

    switch(on, machine, True, "pipeline-a")

    assert swept, "the sweep ran inside the window"
    assert everyone_says(machine) == {False}


def test_a_cli_tag_change_after_the_switches_have_answered_is_adopted_by_the_next_sweep(machine):
    api = container()
    switch(api, machine, True, "pipeline-a")
    boto3.client("stepfunctions", region_name=REGION).untag_resource(
        resourceArn=machine.unqualified, tagKeys=["Maintenance"]
    )

    container().sweeper.sweep(Deadline(10))

    assert container().flag.is_on_now(machine) is False
    assert container().control.status(machine)["maintenance"] is False


def test_concurrent_identical_switches_answer_changed_once(machine):
    first, second = container(), container()
    inner = once_during(first, "before-call.sfn.TagResource", lambda: switch(second, machine, True, "same"))

    outer = switch(first, machine, True, "same")

    # The outer one took effect first (its mirror write came before its tag write);
    # the inner one, inside that window, found maintenance already on.
    assert [outer["changed"], inner[0]["changed"]] == [True, False]
    assert everyone_says(machine) == {True}
