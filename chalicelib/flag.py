"""The maintenance flag: the ``Maintenance`` tag of the (unqualified) state machine.

``true`` (case-insensitive, trimmed) means on; ``false``, any other value, or no
tag means off. ListTagsForResource refills at 1 call/s per account and region,
so the task handler reads the flag through a per-container cache that lives
``MaintenanceCacheSeconds`` (0 reads the tag on every call).
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import ClientError

from chalicelib.arns import StateMachineArn
from chalicelib.clients import AwsClients
from chalicelib.errors import StateMachineNotFound

TAG = "Maintenance"
TAG_SINCE = "MaintenanceSince"
TAG_BY = "MaintenanceBy"
TAG_REASON = "MaintenanceReason"
METADATA_TAGS = (TAG_SINCE, TAG_BY, TAG_REASON)


def parse_flag(value: str | None) -> bool:
    """>>> [parse_flag(v) for v in ("true", " TRUE ", "false", "yes", None)]
    [True, True, False, False, False]
    """
    return value is not None and value.strip().lower() == "true"


@dataclass(frozen=True)
class MaintenanceState:
    on: bool
    since: str | None = None
    by: str | None = None
    reason: str | None = None


class MaintenanceFlag:
    def __init__(
        self,
        clients: AwsClients,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clients = clients
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()
        self.tag_reads = 0

    def is_on(self, machine: StateMachineArn) -> bool:
        """The flag, from the cache when it is fresh enough."""
        arn = machine.unqualified
        now = self._clock()
        with self._lock:
            cached = self._cache.get(arn)
        if cached is not None and now < cached[0]:
            return cached[1]
        on = self.read(machine).on
        if self._cache_seconds > 0:
            with self._lock:
                self._cache[arn] = (now + self._cache_seconds, on)
        return on

    def read(self, machine: StateMachineArn) -> MaintenanceState:
        """The flag and who set it, straight from the tags (no cache)."""
        sfn = self._clients.sfn(machine.region)
        self.tag_reads += 1
        try:
            response = sfn.list_tags_for_resource(resourceArn=machine.unqualified)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("ResourceNotFound", "StateMachineDoesNotExist"):
                raise StateMachineNotFound(
                    f"stateMachineArn: no state machine {machine.unqualified}"
                ) from None
            raise
        tags = {tag["key"]: tag["value"] for tag in response.get("tags", [])}
        return MaintenanceState(
            on=parse_flag(tags.get(TAG)),
            since=tags.get(TAG_SINCE),
            by=tags.get(TAG_BY),
            reason=tags.get(TAG_REASON),
        )

    def remember(self, machine: StateMachineArn, on: bool) -> None:
        """Record a flag this container just wrote, so it acts on it at once."""
        if self._cache_seconds > 0:
            with self._lock:
                self._cache[machine.unqualified] = (self._clock() + self._cache_seconds, on)
