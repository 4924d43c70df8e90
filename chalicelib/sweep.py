"""The scheduled sweep: the backstop that makes every lift take effect.

Every minute it, for each state machine it knows (mirrored flags and token
folders):
- refreshes the flag mirror from the tags, so a tag changed with the AWS CLI
  reaches the task handlers;
- lifts maintenance whose recorded ``until`` has passed;
- resumes the held tasks of machines no longer in maintenance (a lift by CLI
  tag, a token saved while maintenance was being lifted, a chain that stalled);
- optionally sends SendTaskHeartbeat to held tasks, so a Task's
  HeartbeatSeconds does not kill them while they wait;
- clears claims left by resumers that died, so their tokens resume again;
- emits each machine's backlog, oldest held age and quarantine (one listing
  each, whatever the backlog), then the fleet's: the largest age, the totals
  and the machines whose sweep failed, which is what the alarms watch.
"""

import itertools
import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import faults
from chalicelib.arns import AccountRegion, StateMachineArn
from chalicelib.clients import AwsClients
from chalicelib.commands import SwitchMaintenance
from chalicelib.continuation import Drainer
from chalicelib.deadline import Deadline
from chalicelib.errors import StateMachineNotFound, Unavailable
from chalicelib.flag import MaintenanceFlag
from chalicelib.fleet import Fleet, MachineError, known_machines
from chalicelib.hold_control import HoldControl
from chalicelib.logs import DecisionLog
from chalicelib.maintenance import MaintenanceControl
from chalicelib.metrics import Metrics
from chalicelib.sections import Sections
from chalicelib.store import TokenStore, UnreadableHeldTask, iso_timestamp

# ListTagsForResource refills at 1/s: refresh at most this many mirrors a run,
# the least recently visited first, so a large fleet is covered in turns: each
# machine's tags are read at least once every ceil(machines / 50) runs.
MAX_TAG_READS_PER_SWEEP = 50
# No claim is held longer than one token's send (seconds); a Lambda lives 15 min.
CLAIM_LEASE = timedelta(minutes=15)
SWEEP_ACTOR = "sfn-pauser/sweep"
HEARTBEAT_WORKERS = 8
# Bookkeeping of the refresh rotation, in the control folder.
_VISITS = ("sweep", "visits.json")


@dataclass(frozen=True)
class Gauges:
    """One machine's figures as the sweep measured them (each from one listing, so capped)."""

    held: int = 0
    oldest_age: float = 0.0
    quarantined: int = 0


@dataclass
class SweepReport:
    machines: int = 0
    refreshed: int = 0
    lifted: list[str] = field(default_factory=list)
    resumed: int = 0
    heartbeats: int = 0
    expired: int = 0
    claims_cleared: int = 0
    deferred_deleted: int = 0  # finished tokens whose delete a resumer had to leave to the sweep
    holds_expired: int = 0  # holds that reached their expiresAt (what they held resumes here)
    left_without_leaving: int = 0  # executions found ended inside a protected section, and counted out
    # Machines AWS no longer has: their held tasks are drained (to quarantine, as
    # AWS refuses their tokens) and their mirrors removed once they hold none.
    deleted: list[str] = field(default_factory=list)
    # Machines the sweep does not act on: outside the allow-list, or another account's.
    skipped: list[dict[str, str]] = field(default_factory=list)
    # Token folders no state machine can have (a name with a space, say): skipped.
    stray_folders: list[str] = field(default_factory=list)
    # One entry per machine whose sweep failed, as an API answer would give it.
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class Sweeper:
    def __init__(
        self,
        flag: MaintenanceFlag,
        store: TokenStore,
        drainer: Drainer,
        control: MaintenanceControl,
        clients: AwsClients,
        log: DecisionLog,
        metrics: Metrics,
        heartbeat: bool,
        *,
        fleet: Fleet,
        holds: HoldControl,
        sections: Sections,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._holds = holds
        self._sections = sections
        self._flag = flag
        self._store = store
        self._drainer = drainer
        self._control = control
        self._clients = clients
        self._log = log
        self._metrics = metrics
        self._heartbeat = heartbeat
        self._fleet = fleet
        self._now = now

    def sweep(self, deadline: Deadline, home: AccountRegion | None = None) -> SweepReport:
        """One pass. ``home`` (this function's account and region) places the token
        folders whose tokens carry no ARN of their own (the seed's tokens)."""
        report = SweepReport()
        # Bookkeeping first; if S3 refuses it, the machines still get their turn.
        report.deferred_deleted = self._housekeeping("deferred-deletes", self._store.finish_deferred_deletes)
        report.claims_cleared = self._housekeeping("stale-claims", self._clear_stale_claims)
        report.holds_expired = self._housekeeping("expired-holds", lambda: len(self._holds.end_expired(SWEEP_ACTOR)))
        # Executions that ended inside a protected section without leaving it (a budget of checks a run).
        report.left_without_leaving = self._housekeeping(
            "inside-checks", lambda: self._sections.check_stale(deadline, home)
        )
        try:
            known = known_machines(self._flag, self._store, home)
        except faults.AWS_ERRORS as error:
            code = faults.error_code(error)
            self._log.decision("sweep-unavailable", logging.WARNING, error=code)
            raise Unavailable(
                f"AWS answered {code} while listing the machines to sweep; the next run tries again"
            ) from None
        report.machines = len(known.machines)
        for machine, reason in self._not_ours(known.machines, home):
            del known.machines[machine]
            report.skipped.append({"stateMachineArn": machine.unqualified, "reason": reason})
            self._log.decision("not-swept", stateMachine=machine.unqualified, reason=reason)
        for name in known.strays:
            self._log.decision("stray-folder", logging.WARNING, folder=self._store.folder(name))
        report.stray_folders = known.strays
        # A machine's turn comes by when its tags were last read or tried, so one
        # whose read fails (denied, throttled, deleted) does not keep the front.
        visits = self._visits()
        rotation = sorted(
            known.machines, key=lambda machine: max(known.machines[machine] or "", visits.get(machine.unqualified, ""))
        )
        refresh = set(rotation[:MAX_TAG_READS_PER_SWEEP])
        in_time = itertools.takewhile(lambda _: not deadline.expired(), rotation)
        visited: dict[str, str] = {}
        measured: list[Gauges] = []
        for machine, outcome in self._fleet.each(
            "sweep", in_time, lambda machine: self._sweep_one(machine, deadline, report, machine in refresh, measured)
        ):
            if machine in refresh:
                visited[machine.unqualified] = iso_timestamp(self._now())
            if isinstance(outcome, MachineError):
                report.errors.append(outcome.as_entry())
        self._record_visits(visits, visited, known.machines)
        # Every run, even with nothing held, so that an alarm on these sees zeros, not gaps.
        self._metrics.emit_fleet(
            Backlog=sum(gauges.held for gauges in measured),
            OldestPausedAgeSeconds=max((gauges.oldest_age for gauges in measured), default=0),
            Quarantined=sum(gauges.quarantined for gauges in measured),
            SweepErrors=len(report.errors),
        )
        # Each error has its own line already; a fleet's worth would not fit one log event.
        self._log.decision("swept", **{**report.as_dict(), "errors": len(report.errors)})
        return report

    def _sweep_one(
        self, machine: StateMachineArn, deadline: Deadline, report: SweepReport, refresh: bool, measured: list[Gauges]
    ) -> None:
        """The machine's turn; its figures join ``measured`` (none for a machine AWS no longer has)."""
        state = None
        asked_at = self._now()
        try:
            if refresh:
                state = self._flag.refresh(machine)
                report.refreshed += 1
                on = state.effective(self._now())
            else:
                on = self._flag.is_on_now(machine)  # reads the tags only when there is no mirror
        except StateMachineNotFound:
            self._retire(machine, deadline, report, asked_at)
            return
        # A hold on the machine keeps it on like the tag; a hold on a dependency
        # keeps only the tokens of checkpoints that guard it, which the drain leaves.
        on = on or bool(self._holds.machine_holds(machine))
        if not on:
            report.resumed += self._drainer.drain(machine, deadline).resumed
        elif self._heartbeat:
            beats, expired = self._send_heartbeats(machine, deadline)
            report.heartbeats += beats
            report.expired += expired
        # One listing a minute per machine and folder, whatever they hold: a count stops
        # at a page (at least 1,000), and the oldest key is the first listed.
        held = self._store.count_held(machine, pages=1)
        quarantined = self._store.count_quarantined(machine, pages=1)
        gauges = Gauges(
            held=held.count,
            oldest_age=(self._now() - held.oldest).total_seconds() if held.oldest else 0.0,
            quarantined=quarantined.count,
        )
        self._metrics.emit(
            machine.name,
            Backlog=gauges.held,
            OldestPausedAgeSeconds=gauges.oldest_age,
            Quarantined=gauges.quarantined,
        )
        measured.append(gauges)  # before the lift, whose failure is an error of its own
        if state is not None and state.expired(self._now()):
            # Last, so that a machine the sweep may not switch (an Express
            # workflow) is still drained: a passed `until` is off for the task
            # handlers too. Its error is its own entry.
            self._control.switch(
                machine,
                SwitchMaintenance.turn(machine, False, reason="until reached", resume=False),
                SWEEP_ACTOR,
                deadline,
            )
            report.lifted.append(machine.unqualified)

    def _not_ours(
        self, machines: dict[StateMachineArn, str | None], home: AccountRegion | None
    ) -> list[tuple[StateMachineArn, str]]:
        """Machines the sweep leaves alone, and why.

        Outside ``AllowedStateMachines``: this sfn-pauser does not act on them at
        all. In another account (a namesake sharing the bucket): this function's
        role cannot answer its tokens, and AWS would call them invalid, so acting
        on them could only quarantine live executions.
        """
        not_ours = []
        for machine in machines:
            if not self._control.allows(machine):
                not_ours.append((machine, "outside AllowedStateMachines"))
            elif home is not None and (machine.partition, machine.account) != (home.partition, home.account):
                not_ours.append((machine, f"in account {machine.account}, not this function's {home.account}"))
        return not_ours

    def _retire(self, machine: StateMachineArn, deadline: Deadline, report: SweepReport, asked_at: datetime) -> None:
        """A deleted machine is in no maintenance: let go of what it holds, then of its mirror."""
        report.deleted.append(machine.unqualified)
        drained = self._drainer.drain(machine, deadline)
        report.resumed += drained.resumed
        report.expired += drained.expired
        forgotten = not drained.remaining and drained.complete and self._flag.forget(machine, asked_at)
        self._log.decision(
            "machine-deleted",
            logging.WARNING,
            stateMachine=machine.unqualified,
            resumed=drained.resumed,
            expired=drained.expired,
            remaining=drained.remaining,
            mirrorRemoved=forgotten,
        )

    def _housekeeping(self, what: str, work: Callable[[], int]) -> int:
        try:
            return work()
        except faults.AWS_ERRORS as error:
            self._log.decision("housekeeping-failed", logging.WARNING, work=what, error=faults.error_code(error))
            return 0

    def _visits(self) -> dict[str, str]:
        """When each machine's tags were last read or tried (ISO 8601), by ARN; none if unreadable."""
        try:
            found = self._store.get_document(self._store.control_key(*_VISITS))
        except faults.AWS_ERRORS as error:
            # The turns then follow the mirrors' ages alone: late, not lost.
            self._log.decision("visits-unreadable", logging.WARNING, error=faults.error_code(error))
            return {}
        visits = found[0].get("visits") if found else None
        return {str(arn): str(when) for arn, when in visits.items()} if isinstance(visits, dict) else {}

    def _record_visits(
        self, visits: dict[str, str], visited: dict[str, str], machines: dict[StateMachineArn, str | None]
    ) -> None:
        if not visited:
            return
        current = {machine.unqualified for machine in machines}
        kept = {arn: when for arn, when in {**visits, **visited}.items() if arn in current}
        try:
            self._store.put_document(self._store.control_key(*_VISITS), {"visits": kept})
        except faults.AWS_ERRORS as error:
            # The next run starts from the mirrors' ages again: late, not lost.
            self._log.decision("visits-not-recorded", logging.WARNING, error=faults.error_code(error))

    def _send_heartbeats(self, machine: StateMachineArn, deadline: Deadline) -> tuple[int, int]:
        sfn = self._clients.sfn(machine.region)

        def beat(key: str) -> str:
            if deadline.expired():
                return "skipped"
            try:
                task = self._store.load(key)
                if task is None:
                    return "gone"
                if not task.belongs_to(machine):
                    return "namesake's"  # its own machine's sweep keeps it alive, in its region
                sfn.send_task_heartbeat(taskToken=task.task_token)
            except UnreadableHeldTask:
                return "unreadable"
            except ClientError as error:
                if faults.is_dead_token(error):
                    self._store.quarantine(key, faults.error_code(error), machine)
                    self._log.decision("expired", logging.WARNING, key=key, error=faults.error_code(error))
                    return "expired"
                return "failed"
            except BotoCoreError:
                return "failed"
            return "beat"

        # The listing is streamed, a few beats in flight at a time, and stops at the
        # deadline: a backlog held whole would be about 350 bytes a key.
        outcomes: Counter[str] = Counter()
        in_flight: set[Future[str]] = set()
        with ThreadPoolExecutor(max_workers=HEARTBEAT_WORKERS) as pool:
            for item in self._store.held(machine):
                if deadline.expired():
                    break
                in_flight.add(pool.submit(beat, item.key))
                if len(in_flight) >= HEARTBEAT_WORKERS:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    outcomes.update(future.result() for future in done)
            outcomes.update(future.result() for future in wait(in_flight).done)
        return outcomes["beat"], outcomes["expired"]

    def _clear_stale_claims(self) -> int:
        cleared = 0
        for key, etag in self._store.stale_claims(self._now() - CLAIM_LEASE):
            if self._store.delete_if_unchanged(key, etag):
                cleared += 1
        return cleared
