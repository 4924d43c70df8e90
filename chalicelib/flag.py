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
  Past about 1 execution/s those reads are throttled; a read that fails falls
  back to the latest flag known (this container's last good read, or the
  mirror if it is newer), and says so in a ``flag-fallback`` log line. Only
  with nothing known does the checkpoint hold.

A machine the mirror has never seen is read from its tags once, and mirrored.

Switches through the API are linearisable: the mirror is their single point of
order. Each switch writes it conditionally (``If-Match`` the version it read, or
``If-None-Match`` for a first), so of two overlapping switches one takes effect
after the other, never both from the same state; then it makes the tags follow
the mirror, and re-reads the mirror until no later switch has overtaken its tag
write (see ``MaintenanceControl.switch``). The mirror counts the switches whose
tags are still on their way (``open``); while any is, the sweep does not adopt
the tags into the mirror, since an overtaken switch's late tag write would
otherwise be taken for an operator's change. A switch that died on the way is
no longer counted after ``SWITCH_GRACE_SECONDS``.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import faults
from chalicelib.arns import StateMachineArn, parse_state_machine_arn
from chalicelib.clients import AwsClients
from chalicelib.errors import AwsAccessDenied, InvalidArn, about_state_machine
from chalicelib.logs import DecisionLog
from chalicelib.store import TokenStore, iso_timestamp, machine_path

TAG = "Maintenance"
TAG_SINCE = "MaintenanceSince"
TAG_BY = "MaintenanceBy"
TAG_REASON = "MaintenanceReason"
TAG_UNTIL = "MaintenanceUntil"
ALL_TAGS = (TAG, TAG_SINCE, TAG_BY, TAG_REASON, TAG_UNTIL)
# An API call lives at most 30 s (its Lambda timeout); twice that covers every tag
# write a switch can still have in flight.
SWITCH_GRACE_SECONDS = 60.0


def parse_instant(text: str) -> datetime | None:
    """An ISO 8601 instant in UTC; a date or a time without an offset is taken as UTC.

    None for anything unreadable, including an instant whose UTC form lies outside
    the years 1-9999 (``9999-12-31T23:59:59-01:00``): callers treat None as "no
    such time", and a time that cannot be represented must never crash them.

    >>> parse_instant("2026-11-27T10:00:00+02:00").isoformat()
    '2026-11-27T08:00:00+00:00'
    >>> parse_instant("0001-01-01T00:00:00+01:00") is None
    True
    """
    try:
        moment = datetime.fromisoformat(text.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


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


@dataclass(frozen=True)
class Mirror:
    """The mirrored flag as read from S3, with the version (ETag) a conditional write needs."""

    state: MaintenanceState
    etag: str
    switched_at: str | None  # the last API switch that took effect, ISO 8601
    open: int = 0  # switches whose tag writes may still be landing
    refreshed_at: str | None = None  # when the state was last known true (read or switched), ISO 8601


@dataclass(frozen=True)
class Known:
    """A flag known from earlier, for when the tags cannot be read: what, from where, as of when."""

    state: MaintenanceState
    source: str  # "last-read" (this container's last good tag read) or "mirror"
    at: datetime | None


class MaintenanceFlag:
    def __init__(
        self,
        clients: AwsClients,
        store: TokenStore,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        log: DecisionLog | None = None,
    ) -> None:
        self._clients = clients
        self._store = store
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._now = now
        self._log = log or DecisionLog(logging.getLogger(__name__))
        self._cache: dict[str, tuple[float, MaintenanceState]] = {}
        self._last_read: dict[str, tuple[datetime, MaintenanceState]] = {}
        self._lock = threading.Lock()
        self._registered: set[str] = set()
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
        return self.state_now(machine).effective(self._now())

    def state_now(self, machine: StateMachineArn) -> MaintenanceState:
        """What :meth:`is_on_now` decides from, with who set it and why: the same reads."""
        if self._cache_seconds <= 0:
            return self._read_or_known(machine)
        mirror = self.mirror(machine)
        state = mirror.state if mirror is not None else self.refresh(machine)
        self._remember(machine, state)
        return state

    def read(self, machine: StateMachineArn) -> MaintenanceState:
        """The flag and who set it, straight from the tags (the source of truth)."""
        sfn = self._clients.sfn(machine.region)
        self.tag_reads += 1
        try:
            response = sfn.list_tags_for_resource(resourceArn=machine.unqualified)
        except ClientError as error:
            raise about_state_machine(error, machine.unqualified) from None
        state = MaintenanceState.from_tags({tag["key"]: tag["value"] for tag in response.get("tags", [])})
        with self._lock:
            self._last_read[machine.unqualified] = (self._now(), state)
        return state

    def _read_or_known(self, machine: StateMachineArn) -> MaintenanceState:
        """The tags, as ``MaintenanceCacheSeconds=0`` asks; if they cannot be read, the latest known flag.

        ListTagsForResource refills at 1/s per account and region, so above about
        1 execution/s reads are throttled past botocore's retries. Taking such a
        read for "on" held nearly every execution while maintenance was off; so a
        failed read falls back to :meth:`known` and logs ``flag-fallback`` with
        what it used. A machine that does not exist, or an ARN AWS refuses, is no
        failed read and raises as usual; with nothing known the error is raised
        too, and the checkpoint holds.
        """
        try:
            state = self.read(machine)
        except (*faults.AWS_ERRORS, AwsAccessDenied) as error:
            known = self.known(machine)
            if known is None:
                raise
            self._log.decision(
                "flag-fallback",
                logging.WARNING,
                stateMachine=machine.unqualified,
                error=faults.error_code(error) if isinstance(error, faults.AWS_ERRORS) else type(error).__name__,
                fallback=known.source,
                maintenance=known.state.effective(self._now()),
                knownAt=iso_timestamp(known.at) if known.at else None,
            )
            return known.state
        self._register(machine, state)
        return state

    def known(self, machine: StateMachineArn) -> Known | None:
        """The latest flag known without reading the tags: this container's last good read,
        or the mirror when it is newer (a switch, or the sweep's refresh, since that read).

        A switch whose tags are still on their way is the mirror's whatever the
        times say: a tag read in that window saw the tags before they followed it.
        """
        with self._lock:
            last = self._last_read.get(machine.unqualified)
        try:
            mirror = self.mirror(machine)
        except faults.AWS_ERRORS:
            mirror = None
        mirrored_at = parse_instant(mirror.refreshed_at) if mirror and mirror.refreshed_at else None
        if mirror is not None and (
            last is None or self.in_flight(mirror) or (mirrored_at is not None and mirrored_at >= last[0])
        ):
            return Known(mirror.state, "mirror", mirrored_at)
        return Known(last[1], "last-read", last[0]) if last is not None else None

    def current(self, machine: StateMachineArn) -> MaintenanceState:
        """What an operator is told: a switch on its way as it took effect, else the tags."""
        mirror = self.mirror(machine)
        if mirror is not None and self.in_flight(mirror):
            return mirror.state
        return self.read(machine)

    def refresh(self, machine: StateMachineArn) -> MaintenanceState:
        """Read the tags and mirror them (the sweep's job, and a first sight's).

        Never overwrites a switch: while one is on its way the mirror stands as it
        is, and the write is conditional on the version read, so a switch that
        takes effect meanwhile wins.
        """
        current = self.mirror(machine)
        if current is not None and self.in_flight(current):
            self._remember(machine, current.state)
            return current.state
        state = self.read(machine)
        switched_at = current.switched_at if current else None
        if self._write(machine, state, "tags", current, switched_at=switched_at, open=0) is None:
            latest = self.mirror(machine)
            state = latest.state if latest is not None else state
        self._remember(machine, state)
        return state

    def publish(self, machine: StateMachineArn, state: MaintenanceState, base: Mirror | None) -> Mirror | None:
        """Take effect as a switch: write the mirror if it is still at ``base``; None if a switch overtook it."""
        at = self._now()
        last = parse_instant(base.switched_at) if base is not None and base.switched_at else None
        if last is not None and at <= last:
            at = last + timedelta(milliseconds=1)  # the order of switches, even across skewed clocks
        open_before = base.open if base is not None and self.in_flight(base) else 0
        return self._write(machine, state, "api", base, switched_at=iso_timestamp(at), open=open_before + 1)

    def settle(self, latest: Mirror, machine: StateMachineArn, state: MaintenanceState | None = None) -> bool:
        """One switch's tags have landed: count it out, if the mirror is still ``latest``.

        ``state`` replaces the mirrored state at the same time (a switch undoing itself).
        """
        open_now = latest.open - 1 if self.in_flight(latest) else 0
        new_state = latest.state if state is None else state
        written = self._write(machine, new_state, "api", latest, switched_at=latest.switched_at, open=max(0, open_now))
        return written is not None

    def in_flight(self, mirror: Mirror) -> bool:
        """Whether a switch's tag write may still land (counted, and not older than the grace)."""
        if mirror.open <= 0:
            return False
        switched = parse_instant(mirror.switched_at) if mirror.switched_at else None
        return switched is not None and (self._now() - switched).total_seconds() < SWITCH_GRACE_SECONDS

    def record(self, machine: StateMachineArn, state: MaintenanceState, source: str) -> None:
        """Mirror a state unconditionally (an operator's repair, or a test standing in for a switch)."""
        switched_at = iso_timestamp(self._now()) if source == "api" else None
        self._store.put_document(self._mirror_key(machine), self._body(machine, state, source, switched_at, 0))
        self._remember(machine, state)

    def mirror(self, machine: StateMachineArn) -> Mirror | None:
        found = self._store.get_document(self._mirror_key(machine))
        if found is None:
            return None
        body, etag = found
        switched_at = body.get("switchedAt")
        open_switches = body.get("open")
        refreshed_at = body.get("refreshedAt")
        return Mirror(
            state=MaintenanceState(
                on=body.get("maintenance") is True,
                since=_text(body.get("since")),
                by=_text(body.get("by")),
                reason=_text(body.get("reason")),
                until=_text(body.get("until")),
            ),
            etag=etag,
            switched_at=switched_at if isinstance(switched_at, str) else None,
            open=open_switches if isinstance(open_switches, int) and not isinstance(open_switches, bool) else 0,
            refreshed_at=refreshed_at if isinstance(refreshed_at, str) else None,
        )

    def _write(
        self,
        machine: StateMachineArn,
        state: MaintenanceState,
        source: str,
        base: Mirror | None,
        switched_at: str | None,
        open: int,
    ) -> Mirror | None:
        body = self._body(machine, state, source, switched_at, open)
        key = self._mirror_key(machine)
        if base is None:
            etag = self._store.create(key, body)
        else:
            etag = self._store.put_document(key, body, if_match=base.etag)
        return Mirror(state, etag, switched_at, open, body["refreshedAt"]) if etag else None

    def _body(
        self, machine: StateMachineArn, state: MaintenanceState, source: str, switched_at: str | None, open: int
    ) -> dict[str, Any]:
        return {
            "stateMachineArn": machine.unqualified,
            "maintenance": state.on,
            **{k: v for k, v in asdict(state).items() if k != "on" and v is not None},
            "source": source,
            "refreshedAt": iso_timestamp(self._now()),
            **({"switchedAt": switched_at} if switched_at else {}),
            **({"open": open} if open else {}),
        }

    def _register(self, machine: StateMachineArn, state: MaintenanceState) -> None:
        """Without a cache the tags are read directly, but the sweep still finds machines
        by their mirrors: namesakes share a token folder, so the folder alone cannot
        name every machine holding tokens in it. One create per machine and container."""
        if machine.unqualified in self._registered:
            return
        try:
            self._write(machine, state, "tags", None, switched_at=None, open=0)
        except (ClientError, BotoCoreError):
            return  # the next invocation tries again
        self._registered.add(machine.unqualified)

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

    def _remember(self, machine: StateMachineArn, state: MaintenanceState) -> None:
        if self._cache_seconds > 0:
            with self._lock:
                self._cache[machine.unqualified] = (self._clock() + self._cache_seconds, state)

    def _mirror_key(self, machine: StateMachineArn) -> str:
        return self._store.control_key("flags", *machine_path(machine)[:3], f"{machine.name}.json")

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


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
