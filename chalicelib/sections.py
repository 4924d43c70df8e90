"""Who is inside a protected section: between a checkpoint that declares ``section`` and its leave step.

Switching maintenance on stops new executions at the checkpoint; it does nothing
for those that passed it a moment earlier and still call the dependency. A
deploy is safe once the section is empty (``drained``). So an execution that
passes such a checkpoint (let through, or resumed) is recorded as inside, and
its leave step removes the record:

``{Prefix}_sfn-pauser/inside/{partition}/{account}/{region}/{Name}/{hash}.json``,
one object per execution (per Map iteration, with ``entry``), written before the
execution is let through, so that no moment exists in which it is past the
checkpoint and not counted.

An execution that ends without leaving (it failed inside the section with no
``Catch`` to the leave step, was stopped, timed out) must not count for ever:
the sweep asks DescribeExecution about the entries older than
``STALE_AFTER``, a few each run, and removes those that ended. DescribeExecution
is throttled per account and region (a bucket of 300 refilled at 15/s in the
large regions, 250 at 10/s elsewhere, per the Step Functions quotas page), and
the account's own tools need it too: the sweep makes at most
``CHECKS_PER_SWEEP`` calls a run (one a second on average), going round the
entries in key order from where the last run stopped. So an entry whose
execution ended is removed within ``ceil(entries inside / CHECKS_PER_SWEEP)``
sweep runs after it is ``STALE_AFTER`` old.
"""

import hashlib
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from botocore.exceptions import ClientError

from chalicelib import faults
from chalicelib.arns import AccountRegion, StateMachineArn
from chalicelib.clients import AwsClients
from chalicelib.deadline import Deadline
from chalicelib.events import LeaveEvent
from chalicelib.logs import DecisionLog
from chalicelib.store import TokenStore, iso_timestamp, machine_path

STALE_AFTER = timedelta(seconds=60)
CHECKS_PER_SWEEP = 60
SHOWN = 20  # the oldest executions an answer names
COUNTED = 1000  # entries counted per machine; past it, "at least" (capped)
FILTERED = 200  # entries read to match a hold's guards; past it, all count
ENDED = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
_CURSOR = ("sweep", "inside-cursor.json")


@dataclass(frozen=True)
class Inside:
    execution_arn: str
    entry: str | None
    since: datetime
    guards: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, str | None]:
        return {"executionArn": self.execution_arn, "entry": self.entry, "since": iso_timestamp(self.since)}


@dataclass(frozen=True)
class Occupancy:
    """Who is inside a machine's section: a count (capped) and the oldest few."""

    count: int = 0
    capped: bool = False
    oldest: datetime | None = None
    shown: tuple[Inside, ...] = field(default=())

    def as_dict(self) -> dict[str, object]:
        return {
            "inside": self.count,
            "insideCapped": self.capped,
            "oldestInsideAt": iso_timestamp(self.oldest) if self.oldest else None,
            "insideExecutions": [inside.as_dict() for inside in self.shown],
        }


class Sections:
    def __init__(
        self,
        store: TokenStore,
        clients: AwsClients,
        log: DecisionLog,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._clients = clients
        self._log = log
        self._now = now

    def enter(
        self, machine: StateMachineArn, execution_arn: str, entry: str | None, section: str, guards: Iterable[str]
    ) -> None:
        """Record an execution as inside, before it is let through (idempotent)."""
        body = {
            "executionArn": execution_arn,
            "entry": entry,
            "section": section,
            "guards": list(guards),
            "since": iso_timestamp(self._now()),
        }
        self._store.put_document(self._key(machine, execution_arn, entry), body)

    def leave(self, event: LeaveEvent) -> None:
        """The leave step: the execution is out (deleting what is not there is no error)."""
        self._store.delete(self._key(event.state_machine, event.execution_arn, event.entry))

    def occupancy(self, machine: StateMachineArn, guards: frozenset[str] | None = None) -> Occupancy:
        """Who is inside; with ``guards``, only executions whose checkpoint guards one of them."""
        listed = list(itertools.islice(self._store.list_documents(self._folder(machine)), COUNTED + 1))
        capped = len(listed) > COUNTED
        listed.sort(key=lambda item: item[1])
        if guards is not None and not capped and len(listed) <= FILTERED:
            found = [inside for key, _, _ in listed if (inside := self._read(key)) is not None]
            matching = [inside for inside in found if guards.intersection(inside.guards)]
            return Occupancy(len(matching), False, matching[0].since if matching else None, tuple(matching[:SHOWN]))
        shown = tuple(inside for key, _, _ in listed[:SHOWN] if (inside := self._read(key)) is not None)
        # The entries' own times to the millisecond; S3's LastModified (the listing's order) has seconds.
        oldest = min((inside.since for inside in shown), default=listed[0][1] if listed else None)
        return Occupancy(min(len(listed), COUNTED), capped, oldest, tuple(sorted(shown, key=lambda i: i.since)))

    def check_stale(self, deadline: Deadline, home: AccountRegion | None) -> int:
        """The sweep's share: ask about up to ``CHECKS_PER_SWEEP`` old entries, remove the ended ones."""
        root = self._store.control_key("inside", "")
        cursor_key = self._store.control_key(*_CURSOR)
        found = self._store.get_document(cursor_key)
        after = str(found[0].get("after") or "") if found else ""
        checked = removed = 0
        last = after
        for key, modified in self._rotation(root, after):
            if checked >= CHECKS_PER_SWEEP or deadline.expired():
                break
            last = key
            if self._now() - modified < STALE_AFTER:
                continue
            machine = self._machine_of(key[len(root) :], home)
            inside = self._read(key) if machine is not None else None
            if machine is None or inside is None:
                continue
            checked += 1
            try:
                status = self._clients.sfn(machine.region).describe_execution(executionArn=inside.execution_arn)[
                    "status"
                ]
            except ClientError as error:
                if faults.is_throttling(error):
                    break  # the account's DescribeExecution bucket is for everyone: stop here
                if faults.error_code(error) not in ("ExecutionDoesNotExist", "InvalidArn"):
                    raise
                status = "GONE"
            if status in ENDED or status == "GONE":
                self._store.delete(key)
                removed += 1
                self._log.decision(
                    "left-without-leaving",
                    stateMachine=machine.unqualified,
                    execution=inside.execution_arn,
                    status=status,
                )
        if last != after:
            self._store.put_document(cursor_key, {"after": last})
        return removed

    def _rotation(self, root: str, after: str) -> Iterable[tuple[str, datetime]]:
        """Every entry once, in key order from ``after``, wrapping round to the start."""
        for key, modified, _ in self._store.list_documents(root, start_after=after or None):
            yield key, modified
        if after:
            for key, modified, _ in self._store.list_documents(root):
                if key > after:
                    return
                yield key, modified

    def _read(self, key: str) -> Inside | None:
        found = self._store.get_document(key)
        if found is None:
            return None
        body = found[0]
        since = body.get("since")
        try:
            moment = datetime.fromisoformat(str(since).replace("Z", "+00:00")) if since else self._now()
        except ValueError:
            moment = self._now()
        arn = body.get("executionArn")
        if not isinstance(arn, str):
            return None
        guards = tuple(item for item in body.get("guards") or () if isinstance(item, str))
        entry = body.get("entry")
        return Inside(arn, entry if isinstance(entry, str) else None, moment, guards)

    def _machine_of(self, path: str, home: AccountRegion | None) -> StateMachineArn | None:
        """The machine of an entry (``partition/account/region/Name/hash.json``), if this account's."""
        parts = path.split("/")
        if len(parts) != 5:
            return None
        partition, account, region, name, _ = parts
        if home is not None and (partition, account) != (home.partition, home.account):
            return None  # another account's: its own sweep asks about it
        return StateMachineArn(partition, region, account, name)

    def _key(self, machine: StateMachineArn, execution_arn: str, entry: str | None) -> str:
        digest = hashlib.sha256(f"{execution_arn}#{entry or ''}".encode()).hexdigest()[:40]
        return self._folder(machine) + f"{digest}.json"

    def _folder(self, machine: StateMachineArn) -> str:
        return self._store.control_key("inside", *machine_path(machine), "")
