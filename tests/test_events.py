"""The task handler's event: the checkpoint Task's Payload, read strictly where it matters."""

import json
from pathlib import Path

import pytest

from chalicelib.errors import InvalidArn, InvalidField, MissingField
from chalicelib.events import parse_checkpoint_event, token_from

EVENTS = Path(__file__).parent / "events"


def checkpoint(**changes):
    """The example Payload (tests/events/checkpoint.json) with some fields changed; None removes one."""
    event = json.loads((EVENTS / "checkpoint.json").read_text())
    event.update(changes)
    return {name: value for name, value in event.items() if value is not None}


def test_reads_the_payload_the_example_state_machine_sends():
    parsed = parse_checkpoint_event(checkpoint())

    assert parsed.task_token == "AQCEAAAAKgAAAAMAAAAAAAAAAexampleTaskToken"
    assert str(parsed.state_machine) == "arn:aws:states:us-east-1:123456789012:stateMachine:Orders"
    assert parsed.execution_arn == "arn:aws:states:us-east-1:123456789012:execution:Orders:run-1"
    assert parsed.has_input
    assert parsed.input == {"order": 1}


def test_execution_arn_and_input_are_optional():
    parsed = parse_checkpoint_event(checkpoint(executionArn=None, input=None))

    assert parsed.execution_arn is None
    # No input is not the same as a null input: resuming then sends "{}".
    assert not parsed.has_input


@pytest.mark.parametrize("value", [None, False, 0, "", [], {}, "text", [1, {"a": None}]], ids=repr)
def test_any_json_input_is_kept_as_given_even_when_falsy(value):
    event = checkpoint()
    event["input"] = value  # set directly: checkpoint() treats None as "remove"

    parsed = parse_checkpoint_event(event)

    assert parsed.has_input
    assert parsed.input == value


def test_an_empty_execution_arn_counts_as_absent():
    assert parse_checkpoint_event(checkpoint(executionArn="")).execution_arn is None


def test_fields_it_does_not_know_are_ignored_so_workflows_can_pass_more():
    parsed = parse_checkpoint_event(checkpoint(traceId="abc", retries=2))

    assert parsed.task_token


def test_a_version_or_alias_arn_is_kept_and_knows_its_machine():
    parsed = parse_checkpoint_event(
        checkpoint(stateMachineArn="arn:aws:states:us-east-1:123456789012:stateMachine:Orders:PROD")
    )

    assert parsed.state_machine.qualifier == "PROD"
    assert parsed.state_machine.unqualified == "arn:aws:states:us-east-1:123456789012:stateMachine:Orders"


def test_the_task_token_never_shows_in_a_repr():
    # A token completes the Task for whoever holds it; reprs end up in logs and tracebacks.
    assert "exampleTaskToken" not in repr(parse_checkpoint_event(checkpoint()))


def test_an_execution_arn_longer_than_2048_characters_is_refused():
    with pytest.raises(InvalidField) as raised:
        parse_checkpoint_event(checkpoint(executionArn="x" * 2049))

    assert str(raised.value).startswith("executionArn:")


def test_the_first_bad_field_is_the_one_named():
    # taskToken, then stateMachineArn, then executionArn: one clear error at a time.
    with pytest.raises(MissingField) as raised:
        parse_checkpoint_event({"stateMachineArn": "nope", "executionArn": 1})
    assert raised.value.field == "taskToken"

    with pytest.raises(InvalidArn) as raised:
        parse_checkpoint_event(checkpoint(stateMachineArn="nope", executionArn=1))
    assert raised.value.field == "stateMachineArn"


def test_a_non_object_event_is_named_event():
    with pytest.raises(InvalidField) as raised:
        parse_checkpoint_event(["not", "an", "object"])

    assert str(raised.value).startswith("event:")


@pytest.mark.parametrize(
    ("event", "token"),
    [
        ({"taskToken": "abc"}, "abc"),
        ({"taskToken": "abc", "stateMachineArn": "nope"}, "abc"),
        ({"taskToken": ""}, None),
        ({"taskToken": "   "}, None),
        ({"taskToken": 12}, None),
        ({}, None),
        (["abc"], None),
        ("abc", None),
        (None, None),
    ],
    ids=repr,
)
def test_a_rejected_event_still_yields_its_token_when_it_has_a_usable_one(event, token):
    # So the handler can fail its own Task at once instead of leaving it to hang.
    assert token_from(event) == token
