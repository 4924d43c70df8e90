"""Holds: the reasons maintenance is on, each with its own scope and end.

A machine's checkpoint holds while its ``Maintenance`` tag is on (the
"manual" hold, which has no expiry and is what the AWS CLI and the seed's
users switch) **or** while any active hold covers it. A hold covers:

- state machines, by ARN or ARN pattern (``*`` and ``?``); or
- dependencies: a checkpoint that declares ``"guards": ["orders-db"]`` in its
  Payload is covered by a hold on ``orders-db``, in whichever state machine,
  region or account it runs, as long as it uses this bucket.

Holds overlap safely: each ends on its own (released, expired, or its window
closed), and a checkpoint is let through only when none covers it. What a hold
held is resumed when the last hold covering it ends: at once when it is
released through the API, within the sweep period when it expires or its
window closes (the sweep resumes what no hold covers any more).

The holds live in one S3 document, ``{Prefix}_sfn-pauser/holds/book.json``:
the task handler reads it once per ``MaintenanceCacheSeconds`` per container,
whatever the number of guards, and every change is a conditional write
(``If-Match`` its ETag), so two pipelines changing holds at once never lose
each other's change. Ended holds are removed from it (their history stays in
the audit trail), so it stays small: at most ``MAX_HOLDS`` holds.
"""

import fnmatch
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.arns import StateMachineArn
from chalicelib.cron import Cron
from chalicelib.errors import HoldsContended
from chalicelib.flag import parse_instant
from chalicelib.store import TokenStore, iso_timestamp

MAX_SCOPE_MACHINES = 50
# Every checkpoint reads the whole book once per cache period: keep it small.
MAX_HOLDS = 200
# A recurring window series lasts at most this long; renew extends it.
MAX_SERIES = timedelta(days=366)
# Conditional writes lost to other changes of the book before giving up (409).
MAX_BOOK_ATTEMPTS = 8
TAG_HOLD = "tag"  # how the Maintenance tag is named among a machine's holds


@dataclass(frozen=True)
class Scope:
    machines: tuple[str, ...] = ()  # unqualified ARNs, or patterns with * and ?
    guards: tuple[str, ...] = ()

    def covers_machine(self, machine: StateMachineArn) -> bool:
        return any(fnmatch.fnmatchcase(machine.unqualified, pattern) for pattern in self.machines)

    def covers_guards(self, guards: Iterable[str]) -> bool:
        return bool(set(self.guards).intersection(guards))

    def as_dict(self) -> dict[str, list[str]]:
        return {"stateMachineArns": list(self.machines), "guards": list(self.guards)}


@dataclass(frozen=True)
class Recurrence:
    """A window that opens at each fire time of ``schedule`` and lasts ``duration``."""

    schedule: Cron
    duration: timedelta

    def as_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.expression, "durationSeconds": int(self.duration.total_seconds())}


@dataclass(frozen=True)
class Hold:
    hold_id: str
    scope: Scope
    by: str
    created_at: datetime
    expires_at: datetime
    reason: str | None = None
    starts_at: datetime | None = None
    recurrence: Recurrence | None = None

    @staticmethod
    def new_id() -> str:
        return f"hold-{uuid.uuid4().hex[:16]}"

    def ended(self, now: datetime) -> bool:
        return now >= self.expires_at

    def window(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The window open at ``now`` (start, end), or None."""
        if self.ended(now) or (self.starts_at is not None and now < self.starts_at):
            return None
        if self.recurrence is None:
            return (self.starts_at or self.created_at, self.expires_at)
        opened = self.recurrence.schedule.previous_at_or_before(now)
        if opened is None or (self.starts_at is not None and opened < self.starts_at):
            return None
        closes = min(opened + self.recurrence.duration, self.expires_at)
        return (opened, closes) if now < closes else None

    def active(self, now: datetime) -> bool:
        return self.window(now) is not None

    def next_opening(self, now: datetime) -> datetime | None:
        """When the next window opens (after ``now``), or None when none will before it expires."""
        if self.ended(now):
            return None
        if self.recurrence is None:
            return self.starts_at if self.starts_at is not None and now < self.starts_at else None
        after = max(now, self.starts_at - timedelta(minutes=1)) if self.starts_at else now
        opening = self.recurrence.schedule.next_after(after)
        return opening if opening is not None and opening < self.expires_at else None

    def covers(self, machine: StateMachineArn, guards: Iterable[str], now: datetime) -> bool:
        return self.active(now) and (self.scope.covers_machine(machine) or self.scope.covers_guards(guards))

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "holdId": self.hold_id,
            "scope": self.scope.as_dict(),
            "reason": self.reason,
            "by": self.by,
            "createdAt": iso_timestamp(self.created_at),
            "expiresAt": iso_timestamp(self.expires_at),
        }
        if self.starts_at is not None:
            body["startsAt"] = iso_timestamp(self.starts_at)
        if self.recurrence is not None:
            body["recurrence"] = self.recurrence.as_dict()
        if now is not None:
            window = self.window(now)
            body["active"] = window is not None
            if window is not None:
                body["activeUntil"] = iso_timestamp(window[1])
            opening = self.next_opening(now)
            body["nextOpening"] = iso_timestamp(opening) if opening else None
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> "Hold | None":
        """A hold from the book; None for an entry this version cannot read (it is kept, not used)."""
        try:
            scope = body["scope"]
            recurrence = body.get("recurrence")
            created, expires = parse_instant(body["createdAt"]), parse_instant(body["expiresAt"])
            starts = parse_instant(body["startsAt"]) if body.get("startsAt") else None
            if created is None or expires is None:
                return None
            return cls(
                hold_id=str(body["holdId"]),
                scope=Scope(tuple(scope.get("stateMachineArns", ())), tuple(scope.get("guards", ()))),
                by=str(body.get("by") or "unknown"),
                created_at=created,
                expires_at=expires,
                reason=body.get("reason"),
                starts_at=starts,
                recurrence=Recurrence(
                    Cron.parse(recurrence["schedule"]), timedelta(seconds=int(recurrence["durationSeconds"]))
                )
                if recurrence
                else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


@dataclass(frozen=True)
class Book:
    """The holds as read at one moment, with the ETag a change must match."""

    holds: tuple[Hold, ...] = ()
    etag: str | None = None
    unreadable: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    def get(self, hold_id: str) -> Hold | None:
        return next((hold for hold in self.holds if hold.hold_id == hold_id), None)

    def covering(self, machine: StateMachineArn, guards: Iterable[str], now: datetime) -> list[Hold]:
        guards = tuple(guards)
        return [hold for hold in self.holds if hold.covers(machine, guards, now)]


class HoldBook:
    """The holds document: read (cached for the task handler, or fresh), and changed conditionally."""

    def __init__(
        self,
        store: TokenStore,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, Book] | None = None
        self.key = store.control_key("holds", "book.json")

    def cached(self) -> Book:
        """The book as the task handler sees it: this container's copy while fresh."""
        with self._lock:
            cached = self._cached
        if cached is not None and self._clock() < cached[0]:
            return cached[1]
        return self.read()

    def read(self) -> Book:
        found = self._store.get_document(self.key)
        if found is None:
            book = Book()
        else:
            body, etag = found
            entries = body.get("holds") if isinstance(body.get("holds"), list) else []
            holds, unreadable = [], []
            for entry in entries:
                hold = Hold.from_dict(entry) if isinstance(entry, dict) else None
                if hold is None:
                    unreadable.append(entry)
                else:
                    holds.append(hold)
            book = Book(tuple(holds), etag, tuple(unreadable))
        with self._lock:
            self._cached = (self._clock() + self._cache_seconds, book)
        return book

    def change(self, edit: Callable[[Book], tuple[list[Hold], Any] | None]) -> tuple[Book, Any]:
        """Apply ``edit`` to the latest book and write it conditionally, retrying on a lost race.

        ``edit`` returns the new list of holds and a result, or None to write nothing.
        Returns the book as written (or as read, when nothing was written) and the result.
        """
        for _ in range(MAX_BOOK_ATTEMPTS):
            book = self.read()
            edited = edit(book)
            if edited is None:
                return book, None
            holds, result = edited
            body = {"holds": [*(hold.as_dict() for hold in holds), *book.unreadable]}
            if book.etag is None:
                etag = self._store.create(self.key, body)
            else:
                etag = self._store.put_document(self.key, body, if_match=book.etag)
            if etag is not None:
                written = Book(tuple(holds), etag, book.unreadable)
                with self._lock:
                    self._cached = (self._clock() + self._cache_seconds, written)
                return written, result
        raise HoldsContended(
            "holds: other changes of the holds kept landing first; nothing was changed by this call, retry it"
        )


class Coverage:
    """Whether maintenance is on for a checkpoint: its machine's tag, or a hold covering it."""

    def __init__(
        self,
        book: HoldBook,
        allowed: tuple[str, ...] = ("*",),
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._book = book
        self._allowed = allowed
        self._now = now

    def holds_on(self, machine: StateMachineArn, guards: Iterable[str] = (), *, fresh: bool = False) -> list[Hold]:
        """The active holds covering a checkpoint of ``machine`` that guards ``guards``.

        A hold covers only machines within ``AllowedStateMachines``: by ARN, by
        pattern, or on a dependency (every checkpoint there that guards it). This
        deployment may resume only those, so one it held outside them would wait
        for its next execution to be let go. Another account's or region's
        checkpoints are covered by their own deployment, with its own list.
        """
        book = self._book.read() if fresh else self._book.cached()
        guards = tuple(guards)
        allowed = any(fnmatch.fnmatchcase(machine.unqualified, pattern) for pattern in self._allowed)
        now = self._now()
        return [
            hold
            for hold in book.holds
            if hold.active(now) and allowed and (hold.scope.covers_machine(machine) or hold.scope.covers_guards(guards))
        ]

    def task_held(self, machine: StateMachineArn, guards: Iterable[str]) -> frozenset[str]:
        """The ids of the holds that still cover a held task (empty: it may be resumed)."""
        return frozenset(hold.hold_id for hold in self.holds_on(machine, guards))

    def still_active(self, hold_ids: Iterable[str]) -> bool:
        """Whether every one of these holds is still active (this container's copy of the book)."""
        book, now = self._book.cached(), self._now()
        return all((hold := book.get(hold_id)) is not None and hold.active(now) for hold_id in hold_ids)
