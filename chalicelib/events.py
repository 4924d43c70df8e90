"""The task handler's event: the ``Payload`` of the checkpoint Task state.

See the README's state machine definition. ``taskToken`` and ``stateMachineArn``
are required; ``executionArn`` and ``input`` are optional. Other fields are
ignored, so a workflow may pass more without breaking the pauser.

``guards`` (optional) names the dependencies the checkpoint protects: a hold
on any of them holds it (chalicelib/holds.py).

``section`` (optional) says the state machine marks the end of its protected
section with a leave step; an execution that passes such a checkpoint is
recorded as inside until it leaves (chalicelib/sections.py). ``entry``
(optional, such as ``$$.Map.Item.Index``) tells apart Map iterations of one
execution. The leave step's event is ``{"leave": true, "stateMachineArn",
"executionArn", "entry"?}``.
"""

import re
from dataclasses import dataclass, field
from typing import Any

from chalicelib.arns import StateMachineArn, parse_state_machine_arn
from chalicelib.errors import InvalidField, MissingField
from chalicelib.fields import Fields

_NO_INPUT = object()
# A dependency's name: what a pipeline and a checkpoint agree to call it.
GUARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,63}")
GUARD_NAME_EXPECTED = "1-64 letters, digits and . _ : @ / + -, starting with a letter or digit"
MAX_GUARDS = 10


@dataclass(frozen=True)
class CheckpointEvent:
    task_token: str = field(repr=False)
    state_machine: StateMachineArn
    execution_arn: str | None = None
    input: Any = _NO_INPUT
    guards: tuple[str, ...] = ()
    section: str | None = None
    entry: str | None = None

    @property
    def has_input(self) -> bool:
        return self.input is not _NO_INPUT


def parse_checkpoint_event(event: object) -> CheckpointEvent:
    """Validate the event, raising an error that names the first bad field."""
    fields = Fields(event, what="event")
    task_token = fields.string("taskToken")
    assert task_token is not None
    state_machine = parse_state_machine_arn(fields.string("stateMachineArn"), field="stateMachineArn")
    execution_arn = fields.string("executionArn", required=False, max_length=2048)
    section = _section(fields)
    if section is not None and not execution_arn:
        raise MissingField("executionArn", "$$.Execution.Id: a checkpoint with a section records who is inside")
    return CheckpointEvent(
        task_token=task_token,
        state_machine=state_machine,
        execution_arn=execution_arn or None,
        input=fields.raw("input") if fields.has("input") else _NO_INPUT,
        guards=guard_names(fields, "guards") if fields.has("guards") else (),
        section=section,
        entry=entry_of(fields),
    )


@dataclass(frozen=True)
class LeaveEvent:
    """The leave step's event: this execution (or Map iteration) has left the protected section."""

    state_machine: StateMachineArn
    execution_arn: str
    entry: str | None = None


def is_leave(event: object) -> bool:
    return isinstance(event, dict) and "leave" in event


def parse_leave_event(event: object) -> LeaveEvent:
    fields = Fields(event, what="event")
    if fields.raw("leave") is not True:
        raise InvalidField("leave", 'expected true (the leave step\'s Payload has "leave": true)')
    state_machine = parse_state_machine_arn(fields.string("stateMachineArn"), field="stateMachineArn")
    execution_arn = fields.string("executionArn", max_length=2048)
    assert execution_arn is not None
    return LeaveEvent(state_machine, execution_arn, entry_of(fields))


def _section(fields: Fields) -> str | None:
    section = fields.string("section", required=False, max_length=64)
    if section is not None and not GUARD_NAME.fullmatch(section):
        raise InvalidField("section", f"expected {GUARD_NAME_EXPECTED}, got {section!r}")
    return section


def entry_of(fields: Fields) -> str | None:
    """``entry``: a Map iteration's index (a whole number) or any short string; None when absent."""
    value = fields.raw("entry")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)) or len(str(value)) > 256 or str(value) == "":
        raise InvalidField("entry", f"expected a whole number or a string of 1-256 characters, got {value!r}")
    return str(value)


def guard_names(fields: Fields, name: str) -> tuple[str, ...]:
    return fields.names(name, pattern=GUARD_NAME, expected=GUARD_NAME_EXPECTED, max_items=MAX_GUARDS)


def token_from(event: object) -> str | None:
    """The task token of an event that failed validation, if it has a usable one."""
    if isinstance(event, dict):
        token = event.get("taskToken")
        if isinstance(token, str) and token.strip():
            return token
    return None
