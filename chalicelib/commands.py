"""The REST API's requests, parsed and validated into typed commands.

Unknown fields are rejected by name, so a typo such as ``"enable"`` is a 400,
not a silently ignored switch.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass

from chalicelib.arns import StateMachineArn, parse_state_machine_arn
from chalicelib.errors import InvalidField, MissingField
from chalicelib.fields import Fields

MAX_REASON = 1024


@dataclass(frozen=True)
class SwitchMaintenance:
    machine: StateMachineArn
    enabled: bool
    reason: str | None
    resume: bool


@dataclass(frozen=True)
class ResumeHeld:
    machine: StateMachineArn
    force: bool


def json_body(raw: bytes | None) -> object:
    """The request body as JSON, or a 400 that says what is wrong with it.

    Chalice's own ``json_body`` answers "Error Parsing JSON" without naming
    anything; callers deserve to know it is the body, and what was expected.
    """
    if not raw or not raw.strip():
        raise MissingField("body", "a JSON object")
    try:
        return json.loads(raw)
    except ValueError as error:
        raise InvalidField("body", f"expected a JSON object, but it is not valid JSON ({error})") from None


def parse_switch(body: object) -> SwitchMaintenance:
    fields = Fields(body)
    fields.reject_unknown(["stateMachineArn", "enabled", "reason", "resume"])
    return SwitchMaintenance(
        machine=parse_state_machine_arn(fields.string("stateMachineArn")),
        enabled=fields.boolean("enabled"),
        reason=fields.string("reason", required=False, max_length=MAX_REASON),
        resume=fields.boolean("resume", default=True),
    )


def parse_resume(body: object) -> ResumeHeld:
    fields = Fields(body)
    fields.reject_unknown(["stateMachineArn", "force"])
    return ResumeHeld(
        machine=parse_state_machine_arn(fields.string("stateMachineArn")),
        force=fields.boolean("force", default=False),
    )


def parse_status(query: Mapping[str, str] | None) -> StateMachineArn:
    fields = Fields(dict(query or {}), what="query")
    fields.reject_unknown(["stateMachineArn"])
    return parse_state_machine_arn(fields.string("stateMachineArn"))
