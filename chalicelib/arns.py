"""State machine ARNs: parsing, and the unqualified form that carries the tags.

Version and alias ARNs (``...:stateMachine:Name:3``, ``...:stateMachine:Name:PROD``)
belong to the state machine ``Name``: its tags, and its token folder, are the
unqualified machine's.
"""

import re
from dataclasses import dataclass

from chalicelib.errors import InvalidArn

# Names may not contain white space, brackets, wildcards, " # % \ ^ | ~ ` $ & , ; : /
# or control characters (CreateStateMachine's rules); the same rule keeps a name safe
# as an S3 key segment. Digits are ASCII only: \d would also match other scripts'.
_NAME = r"[^\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f\ufffe\uffff]{1,80}"
_ARN = re.compile(
    r"arn:(?P<partition>aws(?:-[a-z]+)*)"
    r":states:(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]+)"
    r":(?P<account>[0-9]{12})"
    r":stateMachine:(?P<name>" + _NAME + r")"
    r"(?::(?P<qualifier>[A-Za-z0-9_-]{1,128}))?"
)
_EXAMPLE = "arn:aws:states:us-east-1:123456789012:stateMachine:Name"


@dataclass(frozen=True)
class StateMachineArn:
    partition: str
    region: str
    account: str
    name: str
    qualifier: str | None = None

    @property
    def unqualified(self) -> str:
        """The ARN of the state machine itself, which holds the ``Maintenance`` tag."""
        return f"arn:{self.partition}:states:{self.region}:{self.account}:stateMachine:{self.name}"

    def __str__(self) -> str:
        suffix = f":{self.qualifier}" if self.qualifier else ""
        return self.unqualified + suffix


def parse_state_machine_arn(value: object, field: str = "stateMachineArn") -> StateMachineArn:
    """Parse a state machine ARN, or raise :class:`InvalidArn` naming ``field``.

    >>> parse_state_machine_arn("arn:aws:states:eu-west-1:123456789012:stateMachine:Orders:PROD").name
    'Orders'
    """
    if not isinstance(value, str):
        raise InvalidArn(field, f"expected a state machine ARN string like {_EXAMPLE}")
    match = _ARN.fullmatch(value)
    if match is None:
        shown = value if len(value) <= 200 else value[:200] + "…"
        raise InvalidArn(field, f"{shown!r} is not a state machine ARN; expected one like {_EXAMPLE}")
    return StateMachineArn(**match.groupdict())


@dataclass(frozen=True)
class AccountRegion:
    partition: str
    region: str
    account: str

    def machine(self, name: str) -> StateMachineArn:
        return StateMachineArn(self.partition, self.region, self.account, name)


def account_region_of(function_arn: str) -> AccountRegion | None:
    """Where a Lambda function runs, from its ARN (``context.invoked_function_arn``).

    >>> account_region_of("arn:aws:lambda:eu-west-1:123456789012:function:f").region
    'eu-west-1'
    """
    parts = function_arn.split(":")
    if len(parts) < 7 or parts[0] != "arn" or parts[2] != "lambda":
        return None
    return AccountRegion(parts[1], parts[3], parts[4])
