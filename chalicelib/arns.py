"""State machine ARNs: parsing, and the unqualified form that carries the tags.

Version and alias ARNs (``...:stateMachine:Name:3``, ``...:stateMachine:Name:PROD``)
belong to the state machine ``Name``: its tags, and its token folder, are the
unqualified machine's.
"""

import functools
import re
from dataclasses import dataclass

from botocore.loaders import create_loader

from chalicelib.errors import InvalidArn

# Names may not contain white space, brackets, wildcards, " # % \ ^ | ~ ` $ & , ; : /
# or control characters (CreateStateMachine's rules); the same rule keeps a name safe
# as an S3 key segment. Digits are ASCII only: \d would also match other scripts'.
_NAME = r"[^\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f\ufffe\uffff]{1,80}"
# The partition and the region are checked against botocore's data, not a pattern.
_ARN = re.compile(
    r"arn:(?P<partition>[^:]*)"
    r":states:(?P<region>[^:]*)"
    r":(?P<account>[0-9]{12})"
    r":stateMachine:(?P<name>" + _NAME + r")"
    r"(?::(?P<qualifier>[A-Za-z0-9_-]{1,128}))?"
)
_EXAMPLE = "arn:aws:states:us-east-1:123456789012:stateMachine:Name"


@dataclass(frozen=True)
class Partition:
    """A partition as botocore's bundled ``partitions`` data describes it."""

    name: str
    region_pattern: re.Pattern[str]
    regions: frozenset[str]

    def holds(self, region: str) -> bool:
        """Whether ``region`` belongs here: botocore matches a region to its partition the same way."""
        return self.region_pattern.fullmatch(region) is not None


@functools.cache
def partitions() -> dict[str, Partition]:
    """Every partition the installed botocore knows (``aws``, ``aws-cn``, ``aws-us-gov``,
    ``aws-iso*``, ``aws-eusc``, ...), read once from its bundled data: no AWS call.

    A partition or region newer than the deployed botocore needs a boto3 upgrade.
    """
    found = {}
    for data in create_loader().load_data("partitions")["partitions"]:
        # ASCII: region names are; Python's \w and \d would also match other scripts'.
        pattern = re.compile(data["regionRegex"], re.ASCII)
        # Listed regions that do not match (aws-global, ...) are endpoint aliases, not regions.
        regions = frozenset(region for region in data["regions"] if pattern.fullmatch(region))
        found[data["id"]] = Partition(data["id"], pattern, regions)
    return found


def known_regions(partition: str) -> frozenset[str]:
    """The regions botocore lists for ``partition`` (empty for a partition it does not know).

    >>> "eusc-de-east-1" in known_regions("aws-eusc")
    True
    """
    known = partitions().get(partition)
    return known.regions if known else frozenset()


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
    shown = value if len(value) <= 200 else value[:200] + "…"
    match = _ARN.fullmatch(value)
    if match is None:
        raise InvalidArn(field, f"{shown!r} is not a state machine ARN; expected one like {_EXAMPLE}")
    partition = partitions().get(match["partition"])
    if partition is None:
        raise InvalidArn(
            field, f"{shown!r} is not a state machine ARN: its partition is none of {', '.join(partitions())}"
        )
    if not partition.holds(match["region"]):
        raise InvalidArn(
            field, f"{shown!r} is not a state machine ARN: {match['region']!r} is not a region of {partition.name}"
        )
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
