"""The task handler's event: the ``Payload`` of the checkpoint Task state.

See the README's state machine definition. ``taskToken`` and ``stateMachineArn``
are required; ``executionArn`` and ``input`` are optional. Other fields are
ignored, so a workflow may pass more without breaking the pauser.

``guards`` (optional) names the dependencies the checkpoint protects: a hold
on any of them holds it (chalicelib/holds.py).
"""

import re
from dataclasses import dataclass, field
from typing import Any

from chalicelib.arns import StateMachineArn, parse_state_machine_arn
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
    return CheckpointEvent(
        task_token=task_token,
        state_machine=state_machine,
        execution_arn=execution_arn or None,
        input=fields.raw("input") if fields.has("input") else _NO_INPUT,
        guards=guard_names(fields, "guards") if fields.has("guards") else (),
    )


def guard_names(fields: Fields, name: str) -> tuple[str, ...]:
    return fields.names(name, pattern=GUARD_NAME, expected=GUARD_NAME_EXPECTED, max_items=MAX_GUARDS)


def token_from(event: object) -> str | None:
    """The task token of an event that failed validation, if it has a usable one."""
    if isinstance(event, dict):
        token = event.get("taskToken")
        if isinstance(token, str) and token.strip():
            return token
    return None
