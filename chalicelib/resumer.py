"""Resuming held tasks: in parallel, oldest first, each token sent once, nothing lost.

The rules that matter:
- A whole backlog is drained under a lease: a machine's keys fall in
  ``SHARDS`` shards, and the holder of a shard's lease is the only sender of
  its tokens, so it sends them without a claim each (see "Claims and leases").
  A large backlog fans out, one invocation per shard, because one Python
  process on one vCPU cannot send at the large regions' 500/s.
- Any other resume (a selection, a limit, an abort, a pauser's own token) claims
  each token before it sends it (see :meth:`TokenStore.claim`), so several of
  them can work on one backlog and each token is sent once.
- It is removed from its folder only once its outcome is known: SendTaskSuccess
  succeeded, or AWS said the token can never succeed (it then moves to
  quarantine with the reason). Any other error (throttling after retries, 5xx,
  timeouts, access denied) releases the claim and leaves it held.
- Work stops starting when the deadline passes; what is left is ``remaining``.
- As many tokens are in flight as the send rate needs (:mod:`chalicelib.concurrency`),
  up to ``ResumeConcurrency``; a send throttled past botocore's retries keeps its
  turn (and its claim, if it has one) and is sent again in the same pass, at the
  limiter's pace.

Claims and leases, so that each token is sent once whichever way it is resumed:

1. a claimer, after creating its claim, reads the lease of the token's shard,
   and backs off (releases the claim) while a live one is there;
2. a lease holder, once it has the lease, lists the machine's claims and leaves
   those tokens alone (S3's read-after-write makes every claim created before
   the lease visible to that listing; one created after meets rule 1);
3. a lease lasts the holder's deadline plus ``LEASE_MARGIN_SECONDS``, longer
   than a send started before the deadline can take, so a lapsed lease is never
   taken over while its holder may still be sending.
"""

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import faults
from chalicelib.arns import StateMachineArn
from chalicelib.clients import AwsClients
from chalicelib.concurrency import Parallelism
from chalicelib.deadline import Deadline
from chalicelib.limiter import AimdLimiter
from chalicelib.logs import DecisionLog, fingerprint
from chalicelib.sections import Sections
from chalicelib.store import (
    MAX_PAYLOAD_BYTES,
    HeldKey,
    HeldTask,
    TokenStore,
    UnreadableHeldTask,
    shard_of,
    utf8_size,
)

_K = TypeVar("_K")
_R = TypeVar("_R")

# The token is alive but the saved output cannot be sent (AWS answers InvalidOutput for
# output that is not JSON, ValidationException for output over 256 KiB): fail the Task
# with a named error instead of leaving the execution to hang until its timeout.
OUTPUT_ERRORS = frozenset({"InvalidOutput", "ValidationException"})
INVALID_OUTPUT_ERROR = "SfnPauser.InvalidOutput"
OUTPUT_TOO_LARGE_ERROR = "SfnPauser.OutputTooLarge"
# Deletes of finished tokens and their claims are batched (DeleteObjects takes
# 1,000 keys); a small batch and a short interval keep the window in which a
# crash would leave a sent token behind (to be quarantined later) short.
DELETE_BATCH = 100
DELETE_INTERVAL_SECONDS = 0.5
# A lease outlives its holder's deadline by this much: more than a send started just
# before the deadline can take (3 attempts of 5 s connect + 10 s read, plus backoff).
LEASE_MARGIN_SECONDS = 90.0
# One process spends about 3.5 ms of CPU per token, most of it in botocore's signing
# and parsing, and the GIL keeps it on one core: about 280 tokens/s on the one vCPU
# of a 1,769 MB function, short of the large regions' 500/s. So a machine's keys
# fall in three shards, each drained under its own lease, and a backlog of a full
# listing page or more is drained by one invocation per shard at once. Three, not
# two: two invocations would each need about 250/s, nearly all of a vCPU that one
# Python process with threads cannot quite fill (the bench's projection from the
# measured CPU: 540-630 tokens/s with two shards, 725-849 with three, `python3 dev.py
# bench`; see docs/scale.md). Their limiters share the account's SendTask* bucket
# (AIMD converges to fair shares). Changing this number moves keys
# between shards: while an earlier version (two shards) and this one drain the same
# machine at once, during a deploy of sfn-pauser, a token can be sent by both. Step
# Functions completes a task once, so no execution resumes twice, but the later send
# meets TaskTimedOut and that token is reported expired although its execution went on.
SHARDS = 3
FAN_OUT_BACKLOG = 1000
# Counting what is left of a backlog costs one listing per 1,000 tokens; past this
# many the count stops (``remainingCapped``), so an API call answers in time.
REMAINING_COUNT_CAP = 10_000
MAX_LAMBDA_SECONDS = 900.0
# The send rate assumed where no limiter paces the client (the limiter's own start).
UNPACED_RATE = 500.0
# Machines whose backlog a container remembers seeing, to order its next look (see ``resume``).
BACKLOG_MEMORY = 1000


class HeldBy(Protocol):
    """What the resumer asks of the holds (chalicelib/holds.py's ``Coverage``)."""

    def task_held(self, machine: StateMachineArn, guards: tuple[str, ...]) -> frozenset[str]: ...

    def still_active(self, hold_ids: frozenset[str]) -> bool: ...


@dataclass(frozen=True)
class Abort:
    """Fail held tasks instead of resuming them (SendTaskFailure with this error and cause)."""

    error: str
    cause: str


class Outcome(Enum):
    RESUMED = "resumed"
    EXPIRED = "expired"
    FAILED = "failed"
    KEPT = "kept"
    BUSY = "busy"  # claimed by another resumer
    GONE = "gone"  # already resumed by another resumer
    SKIPPED = "skipped"  # not this machine's, or not selected
    HELD = "held"  # a hold still covers it (chalicelib/holds.py): it stays, and is not "remaining"
    LEFT = "left"  # beyond the caller's limit


@dataclass
class ResumeReport:
    resumed: int = 0
    expired: int = 0
    failed: int = 0
    remaining: int = 0
    remaining_capped: bool = False
    attempted: int = 0
    throttled: int = 0
    complete: bool = True
    out_of_time: bool = False  # the deadline, not a limit, stopped the work
    busy: bool = False  # another resumer holds a lease of the machine and drains that shard
    continued: bool = False  # a fresh invocation carries on with the rest
    shard: int | None = None  # a shard this drain left tokens in: a hand-on takes it up first
    keep_lease: bool = False  # finished tokens could be neither deleted nor claimed (see ``_Deletions``)
    held: int = 0  # left in place because a hold still covers them
    held_by: frozenset[str] = frozenset()  # those holds

    def add(self, outcome: Outcome) -> None:
        if outcome is Outcome.RESUMED:
            self.resumed += 1
        elif outcome is Outcome.EXPIRED:
            self.expired += 1
        elif outcome is Outcome.FAILED:
            self.failed += 1
        elif outcome in (Outcome.KEPT, Outcome.BUSY, Outcome.LEFT):
            self.remaining += 1
        elif outcome is Outcome.HELD:
            self.held += 1

    def absorb(self, part: "ResumeReport") -> None:
        """Add one shard's pass to the report of a drain."""
        self.resumed += part.resumed
        self.expired += part.expired
        self.failed += part.failed
        self.remaining += part.remaining
        self.remaining_capped |= part.remaining_capped
        self.attempted += part.attempted
        self.throttled += part.throttled
        self.complete &= part.complete
        self.out_of_time |= part.out_of_time
        self.held += part.held
        self.held_by |= part.held_by

    @property
    def progressed(self) -> bool:
        return self.resumed + self.expired + self.failed > 0

    def as_dict(self) -> dict[str, int | bool]:
        shown: dict[str, int | bool] = {
            "resumed": self.resumed,
            "expired": self.expired,
            "failed": self.failed,
            "remaining": self.remaining,
            "remainingCapped": self.remaining_capped,
            "continuing": self.continued or self.busy,
        }
        if self.held:
            shown["held"] = self.held  # left in place: a hold still covers them
        return shown


class _Quota:
    """How many held tasks a resume may take on (``limit``), counted across workers."""

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._taken = 0
        self._lock = threading.Lock()

    @property
    def exhausted(self) -> bool:
        return self._limit is not None and self._taken >= self._limit

    def take(self) -> bool:
        with self._lock:
            if self.exhausted:
                return False
            self._taken += 1
            return True


class _Deletions:
    """Finished tokens and their claims, deleted in batches from any worker thread.

    ``holder`` is a lease holder's owner name: its tokens carry no claim, so one
    whose delete fails is claimed then (see :meth:`_guard`).
    """

    def __init__(self, store: TokenStore, log: DecisionLog, holder: str | None) -> None:
        self._store = store
        self._log = log
        self._holder = holder
        self._lock = threading.Lock()
        self._keys: list[str] = []
        self._unclaimed: list[str] = []
        self._flushed_at = time.monotonic()
        self.unguarded = False  # a finished token may be left with nothing to keep it from a second send

    def add(self, *keys: str, unclaimed: str | None = None) -> None:
        with self._lock:
            self._keys.extend(keys)
            if unclaimed is not None:
                self._unclaimed.append(unclaimed)
            due = len(self._keys) >= DELETE_BATCH or (time.monotonic() - self._flushed_at >= DELETE_INTERVAL_SECONDS)
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            keys, self._keys = self._keys, []
            unclaimed, self._unclaimed = self._unclaimed, []
            self._flushed_at = time.monotonic()
        if not keys:
            return
        try:
            failed = self._store.delete_many(keys)
        except (ClientError, BotoCoreError) as error:
            failed = keys
            self._log.decision("delete-failed", logging.WARNING, keys=len(keys), error=_code(error))
        if not failed:
            return
        # The executions have resumed, and their tokens must not be sent again (AWS
        # would answer TaskTimedOut, and they would be reported expired). Their
        # claims, left in place, keep other resumers off them; the list of what is
        # finished goes where the sweep deletes it, once S3 answers again.
        left = set(failed)
        failed += self._guard([key for key in unclaimed if key in left])
        try:
            deferred = self._store.defer_deletes(failed)
        except (ClientError, BotoCoreError) as error:
            # Nothing is lost even so: a leftover token meets TaskTimedOut once its
            # claim goes stale, and is quarantined.
            self._log.decision("delete-failed", logging.WARNING, keys=len(failed), error=_code(error))
            return
        self._log.decision("delete-deferred", logging.WARNING, keys=len(failed), deferred=deferred)

    def _guard(self, keys: list[str]) -> list[str]:
        """Claim finished tokens a lease holder sent without a claim and could not delete.

        Once the holder gives its lease back, nothing else would keep the next
        resumer from sending them again. Where a claim cannot be made either, the
        holder keeps its lease until it lapses (``unguarded``), which gives the
        sweep time to work off the deferred deletes.
        """
        claims = []
        for key in keys:
            try:
                claim = self._store.claim(key, self._holder or "")
            except (ClientError, BotoCoreError):
                claim = None
            if claim is None:
                self.unguarded = True
            else:
                claims.append(claim)
        return claims


@dataclass
class _Pass:
    """What every worker of one resume pass shares."""

    deadline: Deadline
    deletions: _Deletions
    quota: _Quota
    parallelism: Parallelism
    limiter: AimdLimiter | None
    selected: Callable[[HeldTask], bool] | None
    abort: Abort | None
    leased: bool  # under a shard's lease: no claims (rules 1-3 in the module's doc)
    honour_holds: bool = True  # leave tokens a hold still covers (not for an abort or a forced resume)
    held_by: set[str] = field(default_factory=set)
    held_lock: threading.Lock = field(default_factory=threading.Lock)

    def held_back(self, holds: frozenset[str]) -> None:
        with self.held_lock:
            self.held_by |= holds

    def waited(self) -> float:
        return self.limiter.waited() if self.limiter is not None else 0.0


class Resumer:
    def __init__(
        self,
        store: TokenStore,
        clients: AwsClients,
        log: DecisionLog,
        concurrency: int,
        holds: HeldBy | None = None,
        sections: Sections | None = None,
    ) -> None:
        self._store = store
        self._clients = clients
        self._log = log
        self._concurrency = concurrency  # a cap: the pass finds what it needs below it
        self._owner = uuid.uuid4().hex[:12]
        self._saw_backlog: dict[str, bool] = {}
        self._holds = holds
        self._sections = sections
        # Machines whose last whole pass left only tokens that holds cover, and those holds:
        # until one of them ends, looking again would only read the same tokens again.
        self._held_back: dict[str, tuple[int, frozenset[str]]] = {}

    def resume(
        self,
        machine: StateMachineArn,
        deadline: Deadline,
        *,
        limit: int | None = None,
        selected: Callable[[HeldTask], bool] | None = None,
        exclusive: bool = False,
        abort: Abort | None = None,
        answered: str | None = None,
        shard: int | None = None,
        fan_out: Callable[[int], bool] | None = None,
        forced: bool = False,
    ) -> ResumeReport:
        """Resume the machine's held tasks, oldest first, until done, ``limit`` or the deadline.

        ``answered`` is a task token its caller has just answered itself: if a
        repeated delivery of it was held, that entry is removed, not sent again.

        With ``exclusive``, drain the whole backlog under the shards' leases,
        ``shard`` first, and leave shards whose lease another resumer holds to it:
        the many proceeding invocations of a busy workflow then leave a backlog to
        the ones already draining it, instead of all racing for each token.
        ``fan_out(shard)`` asks for another invocation to drain that shard; it is
        asked for a backlog of a full listing page or more.

        Tokens that a hold still covers (a hold on a dependency their checkpoint
        guards) stay held, unless ``forced`` or ``abort``: they are ``held``, not
        ``remaining``, so nothing hands them on; they go when their holds end.
        """
        honour_holds = not forced and abort is None and self._holds is not None
        waiting = self._held_back.get(machine.unqualified)
        if honour_holds and waiting and self._holds is not None and self._holds.still_active(waiting[1]):
            # As of this container's last whole pass: the tokens saved since are held too.
            self._forget(machine, answered)
            return ResumeReport(held=waiting[0], held_by=waiting[1])
        order = _shard_order(shard)
        if (
            exclusive
            and self._saw_backlog.get(machine.unqualified)
            and all(self._store.lease_taken(machine, each) for each in order)
        ):
            # While a backlog drains, each of the many proceeding invocations would
            # list a page of 1,000 keys only to find the leases taken: look at the
            # leases first. A container that last saw the folder empty lists first,
            # so the common case (nothing held) stays one call.
            self._forget(machine, answered)
            return ResumeReport(remaining=1, complete=False, busy=True)
        held = self._store.held(machine)
        first_page = list(itertools.islice(held, FAN_OUT_BACKLOG))
        self._remember(machine, backlog=bool(first_page))
        if not first_page:
            return ResumeReport()
        self._forget(machine, answered)
        listed = itertools.chain(first_page, held)
        if not exclusive:
            report = self._resume(
                machine, listed, deadline, limit, selected, abort, leased=False, honour_holds=honour_holds
            )
        else:
            fan = fan_out if len(first_page) >= FAN_OUT_BACKLOG else None
            report = self._drain(machine, listed, deadline, order, fan, honour_holds=honour_holds)
        self._note_held_back(machine, report, whole=selected is None and limit is None)
        return report

    def _note_held_back(self, machine: StateMachineArn, report: ResumeReport, *, whole: bool) -> None:
        if whole and report.held and report.complete and not report.remaining:
            if len(self._held_back) >= BACKLOG_MEMORY:
                self._held_back.clear()
            self._held_back[machine.unqualified] = (report.held, report.held_by)
        else:
            self._held_back.pop(machine.unqualified, None)

    def _drain(
        self,
        machine: StateMachineArn,
        listed: Iterator[HeldKey],
        deadline: Deadline,
        order: list[int],
        fan_out: Callable[[int], bool] | None,
        *,
        honour_holds: bool,
    ) -> ResumeReport:
        """Drain the shards whose leases this resumer can take, in one pass.

        A small backlog: every shard whose lease is free. A large one (``fan_out``
        given): the first free shard, and the others are asked for, each in an
        invocation of its own (or, where one could not be asked for, kept here).
        """
        seconds = min(deadline.remaining(), MAX_LAMBDA_SECONDS) + LEASE_MARGIN_SECONDS
        report = ResumeReport()
        leases: dict[int, tuple[str, str]] = {}
        busy = 0
        # A small backlog's pass wants every shard: their leases are taken at once, one
        # round trip instead of one per shard (a large one's first lease decides the rest).
        taking = (
            _at_once(lambda shard: self._store.lease(machine, self._owner, seconds, shard), order)
            if fan_out is None
            else None
        )
        for shard in order:
            if leases and fan_out is not None and self._hand(machine, shard, fan_out):
                continue
            try:
                lease = taking[shard].result() if taking else self._store.lease(machine, self._owner, seconds, shard)
            except (ClientError, BotoCoreError) as error:
                # The shard stays held, for the hand-on (or the sweep): as a token kept.
                code = _code(error)
                self._log.decision("lease-failed", logging.WARNING, stateMachine=machine.unqualified, error=code)
                report.remaining += 1
                report.complete = False
                report.shard = shard if report.shard is None else report.shard
                continue
            if lease is None:
                busy += 1
            else:
                leases[shard] = lease
        if busy:
            # Another resumer drains those shards; what they hold is not counted here.
            report.busy = True
            report.remaining += 1
            report.complete = False
        if not leases:
            return report
        mine = set(leases)
        part: ResumeReport | None = None
        try:
            skipped = _Skipped(self._store.claimed(machine))
            held = (item for item in listed if shard_of(item.key, SHARDS) in mine and skipped.unclaimed(item))
            part = self._resume(machine, held, deadline, None, None, None, leased=True, honour_holds=honour_holds)
        finally:
            if part is None or not part.keep_lease:
                for released in _at_once(self._store.release_lease, list(leases.values())).values():
                    released.result()
        if part.out_of_time or part.keep_lease:
            # Claimed tokens are their claimers' (or, once a claim is stale, the sweep's).
            part.remaining += skipped.count
            part.complete = False
        else:
            self._tail(machine, mine, deadline, part, honour_holds=honour_holds)
        report.absorb(part)
        if part.remaining and report.shard is None:
            report.shard = min(mine)
        return report

    def _tail(
        self,
        machine: StateMachineArn,
        shards: set[int],
        deadline: Deadline,
        drained: ResumeReport,
        *,
        honour_holds: bool,
    ) -> None:
        """Once its leases are given back, resume what the drain's listing could not see.

        A token saved after the listing passed its place, one whose claimer backed
        off (rule 1), or one the holder left to its claimer (rule 2) is still held:
        a last listing finds it, and it is resumed as any claimer would resume it.
        If another holder has the lease by then, the claim backs off again and
        that holder's own tail finds the token; if none has, it is sent here. So
        no token is left to the sweep for having come at the wrong moment.
        """
        late = self._resume(
            machine,
            (item for item in self._store.held(machine) if shard_of(item.key, SHARDS) in shards),
            deadline,
            None,
            None,
            None,
            leased=False,
            honour_holds=honour_holds,
        )
        # What the last listing found and could not resume is what the shards still hold:
        # the drain's own count of what it left gives way to it.
        drained.remaining, drained.remaining_capped, drained.complete, drained.held = 0, False, True, 0
        drained.absorb(late)

    def _hand(self, machine: StateMachineArn, shard: int, fan_out: Callable[[int], bool]) -> bool:
        """Ask for an invocation to drain ``shard``, unless a resumer already holds its lease."""
        try:
            if self._store.lease_taken(machine, shard):
                return True
        except (ClientError, BotoCoreError):
            pass  # the invocation asked for finds out for itself
        return fan_out(shard)

    def _forget(self, machine: StateMachineArn, answered: str | None) -> None:
        """Remove the entry of a token its own delivery has just let through, if one was held.

        An earlier delivery of the same token had held it; sending it again would
        meet TaskTimedOut and count an execution that went on as expired. Only
        asked while the folder holds something, so an empty folder costs nothing.
        """
        if answered is not None and self._store.forget(answered):
            self._log.decision("duplicate-forgotten", stateMachine=machine.unqualified, token=fingerprint(answered))

    def _remember(self, machine: StateMachineArn, *, backlog: bool) -> None:
        if len(self._saw_backlog) >= BACKLOG_MEMORY:
            self._saw_backlog.clear()
        self._saw_backlog[machine.unqualified] = backlog

    def resume_key(self, machine: StateMachineArn, key: str, deadline: Deadline) -> ResumeReport:
        """Resume one held task by its key (a handler's own, saved while maintenance was lifted)."""
        held = self._store.held_key(key)
        if held is None:
            return ResumeReport()
        return self._resume(machine, iter([held]), deadline, None, None, None, leased=False, honour_holds=True)

    def _resume(
        self,
        machine: StateMachineArn,
        held: Iterator[HeldKey],
        deadline: Deadline,
        limit: int | None,
        selected: Callable[[HeldTask], bool] | None,
        abort: Abort | None,
        *,
        leased: bool,
        honour_holds: bool,
    ) -> ResumeReport:
        report = ResumeReport()
        self._clients.sfn(machine.region)  # creates the region's client, and its limiter
        limiter = self._clients.limiters.get(machine.region)
        throttles_before = limiter.throttles if limiter else 0
        # A limit over chosen executions must take the oldest chosen ones, so those are
        # decided one at a time, in listing order (selective resumes are small).
        cap = 1 if selected is not None and limit is not None else self._concurrency
        run = _Pass(
            deadline=deadline,
            deletions=_Deletions(self._store, self._log, self._owner if leased else None),
            quota=_Quota(limit),
            parallelism=Parallelism(cap, (lambda: limiter.rate) if limiter else (lambda: UNPACED_RATE)),
            limiter=limiter,
            selected=selected,
            abort=abort,
            leased=leased,
            honour_holds=honour_holds and self._holds is not None,
        )
        started = 0
        in_flight: set[Future[Outcome]] = set()
        # Threads start as the target asks for them, so a small backlog never makes many.
        with ThreadPoolExecutor(max_workers=cap) as pool:
            for item in held:
                if deadline.expired() or run.quota.exhausted:
                    report.remaining += 1
                    report.complete = False
                    report.out_of_time = deadline.expired()
                    break
                started += 1
                in_flight.add(pool.submit(self._timed, machine, item, run))
                while len(in_flight) >= run.parallelism.target():
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    _collect(done, report)
            done, _ = wait(in_flight)
            _collect(done, report)
        run.deletions.flush()
        report.attempted = started
        report.keep_lease = run.deletions.unguarded
        report.held_by = frozenset(run.held_by)
        if not report.complete:
            counted = _count(held, REMAINING_COUNT_CAP)
            report.remaining += counted
            report.remaining_capped = counted == REMAINING_COUNT_CAP
        if limiter is not None:
            report.throttled = limiter.throttles - throttles_before
        return report

    def _timed(self, machine: StateMachineArn, item: HeldKey, run: _Pass) -> Outcome:
        """Resume one, and tell the pass how long it took, less its waits for the limiter."""
        started, waited = time.monotonic(), run.waited()
        try:
            return self._resume_one(machine, item, run)
        finally:
            run.parallelism.observe(time.monotonic() - started - (run.waited() - waited))

    def _resume_one(self, machine: StateMachineArn, item: HeldKey, run: _Pass) -> Outcome:
        selected = run.selected
        try:
            if selected is not None:
                # Selective resumes read before claiming, so they do not hold
                # claims on tokens they will not send.
                task = self._store.load(item.key)
                if task is None or not selected(task):
                    return Outcome.SKIPPED
            if not run.quota.take():
                return Outcome.LEFT
            claim = None if run.leased else self._claim(machine, item.key)
            if claim is None and not run.leased:
                return Outcome.BUSY
        except UnreadableHeldTask as error:
            return self._quarantine_unreadable(machine, item, str(error))
        except (ClientError, BotoCoreError) as error:
            self._log.decision("kept", logging.WARNING, key=item.key, error=_code(error))
            return Outcome.KEPT
        try:
            outcome, task = self._claimed(machine, item, run)
        except Exception:
            self._release(claim)
            raise
        if outcome in (Outcome.KEPT, Outcome.GONE, Outcome.SKIPPED, Outcome.HELD):
            self._release(claim)
        elif outcome is Outcome.RESUMED and task is not None:
            index = self._store.token_index_key(task.task_token)
            if claim is None:
                run.deletions.add(item.key, index, unclaimed=item.key)
            else:
                run.deletions.add(item.key, claim, index)
        elif claim is not None:
            run.deletions.add(claim)
        return outcome

    def _claim(self, machine: StateMachineArn, key: str) -> str | None:
        """Claim a held task, unless a drain holds the lease of its shard (rule 1 of the module's doc)."""
        claim = self._store.claim(key, self._owner)
        if claim is None:
            return None
        try:
            leased = self._store.lease_taken(machine, shard_of(key, SHARDS))
        except Exception:
            self._release(claim)
            raise
        if leased:
            # The holder sends without claims and may have listed them before this
            # one existed: the token is its to send.
            self._release(claim)
            return None
        return claim

    def _claimed(self, machine: StateMachineArn, item: HeldKey, run: _Pass) -> tuple[Outcome, HeldTask | None]:
        try:
            task = self._store.load(item.key)
        except UnreadableHeldTask as error:
            return self._quarantine_unreadable(machine, item, str(error)), None
        except (ClientError, BotoCoreError) as error:
            self._log.decision("kept", logging.WARNING, key=item.key, error=_code(error))
            return Outcome.KEPT, None
        if task is None:
            return Outcome.GONE, None
        if not task.belongs_to(machine):
            # Machines of one name in two regions or accounts share a folder (the
            # layout is the seed's); a token is only ever sent to its own machine.
            return Outcome.SKIPPED, task
        try:
            if run.honour_holds and self._holds is not None:
                # A book that cannot be read keeps the token: sending it could
                # lift a hold that is still active.
                holds = self._holds.task_held(machine, task.guards)
                if holds:
                    run.held_back(holds)
                    return Outcome.HELD, task
            return self._send_until_not_throttled(machine, task, run), task
        except (ClientError, BotoCoreError) as error:
            self._log.decision(
                "kept",
                logging.WARNING,
                key=task.key,
                execution=task.execution_arn,
                token=fingerprint(task.task_token),
                error=_code(error),
            )
            return Outcome.KEPT, task

    def _send_until_not_throttled(self, machine: StateMachineArn, task: HeldTask, run: _Pass) -> Outcome:
        """Send, and while the answer is throttling (after botocore's own retries), send again.

        The limiter has slowed down by then, so the next attempt waits for a slot at
        the lower rate: the token keeps its claim and its place among the oldest,
        instead of being skipped and left for a later pass (or the sweep). Only the
        deadline ends the retries; the token is then kept for the hand-on.

        An answer lost in any attempt, before a throttle as much as after, means the
        token may have been answered: so lost answers are counted from the first.
        """
        self._clients.lost_answers.reset()
        while True:
            try:
                return self._send(machine, task, run.abort)
            except ClientError as error:
                if not faults.is_throttling(error) or run.deadline.expired():
                    raise

    def _send(self, machine: StateMachineArn, task: HeldTask, abort: Abort | None) -> Outcome:
        sfn = self._clients.sfn(machine.region)
        common = {
            "stateMachine": machine.unqualified,
            "execution": task.execution_arn,
            "key": task.key,
            "token": fingerprint(task.task_token),
        }
        output = task.output if abort is None else ""
        try:
            if abort is not None:
                sfn.send_task_failure(taskToken=task.task_token, error=abort.error, cause=abort.cause)
            elif utf8_size(output) > MAX_PAYLOAD_BYTES:
                return self._fail_output(
                    machine,
                    task,
                    OUTPUT_TOO_LARGE_ERROR,
                    f"the saved input is {utf8_size(output)} bytes as UTF-8 "
                    f"JSON, over the {MAX_PAYLOAD_BYTES}-byte limit of a task output",
                    common,
                )
            else:
                if task.section is not None and task.execution_arn and self._sections is not None:
                    # Inside its protected section from now: recorded before it is let through.
                    self._sections.enter(machine, task.execution_arn, task.entry, task.section, task.guards)
                sfn.send_task_success(taskToken=task.task_token, output=output)
        except ClientError as error:
            code = _code(error)
            if not (faults.is_dead_token(error) and self._clients.lost_answers.happened()):
                if faults.is_dead_token(error):
                    target = self._store.quarantine(task.key, code, machine)
                    self._log.decision("expired", logging.WARNING, error=code, quarantine=target, **common)
                    return Outcome.EXPIRED
                if code in OUTPUT_ERRORS and abort is None:
                    message = error.response["Error"].get("Message", code)
                    return self._fail_output(machine, task, INVALID_OUTPUT_ERROR, f"AWS refused it: {message}", common)
                raise
            # An earlier attempt of this very call landed and its answer was lost;
            # botocore's retry met the token it had just answered.
            self._log.decision("answer-lost", error=code, **common)
        self._log.decision("resumed" if abort is None else "aborted", **common)
        return Outcome.RESUMED

    def _fail_output(
        self, machine: StateMachineArn, task: HeldTask, error: str, why: str, common: dict[str, Any]
    ) -> Outcome:
        """Fail a Task whose saved input can never be sent as its output, instead of letting it hang."""
        try:
            self._clients.sfn(machine.region).send_task_failure(
                taskToken=task.task_token,
                error=error,
                cause=f"sfn-pauser could not send the saved input of {task.key} as the task output: {why}",
            )
        except ClientError as failure:
            if not faults.is_dead_token(failure):
                raise
            target = self._store.quarantine(task.key, _code(failure), machine)
            self._log.decision("expired", logging.WARNING, error=_code(failure), quarantine=target, **common)
            return Outcome.EXPIRED
        self._store.delete_many([task.key, self._store.token_index_key(task.task_token)])
        self._log.decision("failed", logging.ERROR, error=error, **common)
        return Outcome.FAILED

    def _quarantine_unreadable(self, machine: StateMachineArn, item: HeldKey, reason: str) -> Outcome:
        try:
            self._store.quarantine(item.key, reason, machine)
        except (ClientError, BotoCoreError) as error:
            self._log.decision("kept", logging.WARNING, key=item.key, error=_code(error))
            return Outcome.KEPT
        self._log.decision("quarantined", logging.ERROR, key=item.key, reason=reason)
        return Outcome.FAILED

    def _release(self, claim: str | None) -> None:
        if claim is None:
            return
        try:
            self._store.delete(claim)
        except (ClientError, BotoCoreError) as error:
            # A claim left behind only delays the token until the sweep clears it.
            self._log.decision("release-failed", logging.WARNING, claim=claim, error=_code(error))


class _Skipped:
    """Tokens a lease holder leaves to the resumers that claimed them (rule 2), counted."""

    def __init__(self, claimed: set[str]) -> None:
        self._claimed = claimed
        self.count = 0

    def unclaimed(self, item: HeldKey) -> bool:
        if item.key in self._claimed:
            self.count += 1
            return False
        return True


def _collect(done: set[Future[Outcome]], report: ResumeReport) -> None:
    for future in done:
        report.add(future.result())


def _at_once(call: Callable[[_K], _R], items: list[_K]) -> dict[_K, "Future[_R]"]:
    """``call`` for each item in threads of its own, so a few round trips take the time of one."""
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        return {item: pool.submit(call, item) for item in items}


def _shard_order(first: int | None) -> list[int]:
    start = first if first is not None and 0 <= first < SHARDS else 0
    return [(start + offset) % SHARDS for offset in range(SHARDS)]


def _count(items: Iterator[HeldKey], cap: int) -> int:
    return sum(1 for _ in itertools.islice(items, cap))


def _code(error: Exception) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "ClientError"))
    return type(error).__name__
