"""The maintenance flag: the ``Maintenance`` tag of the (unqualified) state machine.

``true`` (case-insensitive, trimmed) means on; ``false``, any other value, or no
tag means off. A recorded ``MaintenanceUntil`` in the past also means off.

ListTagsForResource refills at 1 call/s per account and region, so the task
handler must not read the tags on its hot path. The flag is mirrored in S3
(``{Prefix}_sfn-pauser/flags/{partition}/{account}/{region}/{Name}.json``): the API writes
the mirror when it switches maintenance, and the scheduled sweep refreshes it
from the tags every minute. Each container reuses what it read for
``MaintenanceCacheSeconds``. So:

- a switch through the API is seen within ``MaintenanceCacheSeconds``;
- a tag changed with the AWS CLI is seen within the sweep period (60 s) plus
  ``MaintenanceCacheSeconds``;
- ``MaintenanceCacheSeconds=0`` reads the tags on every invocation, as the seed did.

A machine the mirror has never seen is read from its tags once, and mirrored.
"""

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.arns import StateMachineArn, parse_state_machine_arn
from chalicelib.clients import AwsClients
from chalicelib.errors import InvalidArn, about_state_machine
from chalicelib.store import TokenStore, iso_timestamp

TAG = "Maintenance"
TAG_SINCE = "MaintenanceSince"
TAG_BY = "MaintenanceBy"
TAG_REASON = "MaintenanceReason"
TAG_UNTIL = "MaintenanceUntil"
ALL_TAGS = (TAG, TAG_SINCE, TAG_BY, TAG_REASON, TAG_UNTIL)


def parse_instant(text: str) -> datetime | None:
    """An ISO 8601 instant; a date or a time without an offset is taken as UTC.

    >>> parse_instant("2026-11-27T10:00:00+02:00").isoformat()
    '2026-11-27T08:00:00+00:00'
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


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
    until: str | None = None

    def expired(self, now: datetime) -> bool:
        """True when an ``until`` is recorded and has passed (an unreadable one never passes)."""
        until = parse_instant(self.until) if self.until else None
        return self.on and until is not None and until <= now

    def effective(self, now: datetime) -> bool:
        return self.on and not self.expired(now)

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> "MaintenanceState":
        return cls(
            on=parse_flag(tags.get(TAG)),
            since=tags.get(TAG_SINCE),
            by=tags.get(TAG_BY),
            reason=tags.get(TAG_REASON),
            until=tags.get(TAG_UNTIL),
        )


class MaintenanceFlag:
    def __init__(
        self,
        clients: AwsClients,
        store: TokenStore,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._clients = clients
        self._store = store
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._now = now
        self._cache: dict[str, tuple[float, MaintenanceState]] = {}
        self._lock = threading.Lock()
        self.tag_reads = 0

    def is_on(self, machine: StateMachineArn) -> bool:
        """The flag as the task handler sees it: from this container's cache when fresh."""
        arn = machine.unqualified
        with self._lock:
            cached = self._cache.get(arn)
        if cached is not None and self._clock() < cached[0]:
            return cached[1].effective(self._now())
        return self.is_on_now(machine)

    def is_on_now(self, machine: StateMachineArn) -> bool:
        """The flag from the mirror (or the tags, with no cache), bypassing this container's cache."""
        if self._cache_seconds <= 0:
            return self.read(machine).effective(self._now())
        state = self._read_mirror(machine)
        if state is None:
            state = self.refresh(machine)
        self._remember(machine, state)
        return state.effective(self._now())

    def read(self, machine: StateMachineArn) -> MaintenanceState:
        """The flag and who set it, straight from the tags (the source of truth)."""
        sfn = self._clients.sfn(machine.region)
        self.tag_reads += 1
        try:
            response = sfn.list_tags_for_resource(resourceArn=machine.unqualified)
        except ClientError as error:
            raise about_state_machine(error, machine.unqualified) from None
        return MaintenanceState.from_tags({tag["key"]: tag["value"] for tag in response.get("tags", [])})

    def refresh(self, machine: StateMachineArn) -> MaintenanceState:
        """Read the tags and mirror them (the sweep's job, and a first sight's)."""
        state = self.read(machine)
        self.record(machine, state, source="tags")
        return state

    def record(self, machine: StateMachineArn, state: MaintenanceState, source: str) -> None:
        """Mirror a state this process knows (it just wrote or read the tags)."""
        body: dict[str, Any] = {
            "stateMachineArn": machine.unqualified,
            "maintenance": state.on,
            **{k: v for k, v in asdict(state).items() if k != "on" and v is not None},
            "source": source,
            "refreshedAt": iso_timestamp(self._now()),
        }
        self._store.put_document(self._mirror_key(machine), body)
        self._remember(machine, state)

    def mirrored(self) -> Iterator[tuple[StateMachineArn, str]]:
        """Every mirrored machine, with when its mirror was last written (ISO 8601)."""
        for key, modified, _ in self._store.list_documents(self._store.control_key("flags", "")):
            partition, account, region, file_name = key.rsplit("/", 4)[-4:]
            name = file_name.removesuffix(".json")
            try:
                arn = parse_state_machine_arn(f"arn:{partition}:states:{region}:{account}:stateMachine:{name}")
            except InvalidArn:
                continue
            yield arn, iso_timestamp(modified)

    def _read_mirror(self, machine: StateMachineArn) -> MaintenanceState | None:
        found = self._store.get_document(self._mirror_key(machine))
        if found is None:
            return None
        body, _ = found
        return MaintenanceState(
            on=body.get("maintenance") is True,
            since=body.get("since"),
            by=body.get("by"),
            reason=body.get("reason"),
            until=body.get("until"),
        )

    def _remember(self, machine: StateMachineArn, state: MaintenanceState) -> None:
        if self._cache_seconds > 0:
            with self._lock:
                self._cache[machine.unqualified] = (self._clock() + self._cache_seconds, state)

    def _mirror_key(self, machine: StateMachineArn) -> str:
        return self._store.control_key(
            "flags", machine.partition, machine.account, machine.region, f"{machine.name}.json"
        )

    def forget(self, machine: StateMachineArn, asked_at: datetime) -> bool:
        """Remove the mirror of a machine AWS said at ``asked_at`` it no longer has.

        A mirror written since then (a namesake created anew and switched) is kept,
        and so is one rewritten while this runs (the delete is If-Match).
        """
        key = self._mirror_key(machine)
        found = self._store.get_document(key)
        if found is None or str(found[0].get("refreshedAt", "")) >= iso_timestamp(asked_at):
            return False
        with self._lock:
            self._cache.pop(machine.unqualified, None)
        return self._store.delete_if_unchanged(key, found[1])
