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
- emits backlog and oldest-age metrics.
"""

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
from chalicelib.errors import StateMachineNotFound
from chalicelib.flag import MaintenanceFlag
from chalicelib.fleet import known_machines
from chalicelib.logs import DecisionLog
from chalicelib.maintenance import MaintenanceControl
from chalicelib.metrics import Metrics
from chalicelib.store import TokenStore, UnreadableHeldTask

# ListTagsForResource refills at 1/s: refresh at most this many mirrors a run,
# the least recently refreshed first, so a large fleet is covered in turns.
MAX_TAG_READS_PER_SWEEP = 50
# No claim is held longer than one token's send (seconds); a Lambda lives 15 min.
CLAIM_LEASE = timedelta(minutes=15)
SWEEP_ACTOR = "sfn-pauser/sweep"


@dataclass
class SweepReport:
    machines: int = 0
    refreshed: int = 0
    lifted: list[str] = field(default_factory=list)
    resumed: int = 0
    heartbeats: int = 0
    expired: int = 0
    claims_cleared: int = 0

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
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._flag = flag
        self._store = store
        self._drainer = drainer
        self._control = control
        self._clients = clients
        self._log = log
        self._metrics = metrics
        self._heartbeat = heartbeat
        self._now = now

    def sweep(self, deadline: Deadline, home: AccountRegion | None = None) -> SweepReport:
        """One pass. ``home`` (this function's account and region) places the token
        folders whose tokens carry no ARN of their own (the seed's tokens)."""
        report = SweepReport()
        report.claims_cleared = self._clear_stale_claims()
        machines = known_machines(self._flag, self._store, home)
        report.machines = len(machines)
        by_age = sorted(machines.items(), key=lambda item: item[1] or "")
        for index, (machine, _) in enumerate(by_age):
            if deadline.expired():
                break
            try:
                self._sweep_one(machine, deadline, report, refresh=index < MAX_TAG_READS_PER_SWEEP)
            except StateMachineNotFound:
                self._log.decision("unknown-machine", logging.WARNING, stateMachine=machine.unqualified)
            except (ClientError, BotoCoreError) as error:
                self._log.decision(
                    "sweep-failed", logging.WARNING, stateMachine=machine.unqualified, error=type(error).__name__
                )
        self._log.decision("swept", **report.as_dict())
        return report

    def _sweep_one(self, machine: StateMachineArn, deadline: Deadline, report: SweepReport, refresh: bool) -> None:
        if refresh:
            state = self._flag.refresh(machine)
            report.refreshed += 1
            if state.expired(self._now()):
                self._control.switch(
                    machine,
                    SwitchMaintenance.turn(machine, False, reason="until reached", resume=False),
                    SWEEP_ACTOR,
                    deadline,
                )
                report.lifted.append(machine.unqualified)
            on = state.effective(self._now())
        else:
            on = self._flag.is_on_now(machine)
        if not on:
            report.resumed += self._drainer.drain(machine, deadline).resumed
        elif self._heartbeat:
            beats, expired = self._send_heartbeats(machine, deadline)
            report.heartbeats += beats
            report.expired += expired
        held = list(self._store.held(machine))
        oldest = min((item.paused_at for item in held), default=None)
        self._metrics.emit(
            machine.name,
            Backlog=len(held),
            OldestPausedAgeSeconds=(self._now() - oldest).total_seconds() if oldest else 0,
        )

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

        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(beat, [item.key for item in self._store.held(machine)]))
        return outcomes.count("beat"), outcomes.count("expired")

    def _clear_stale_claims(self) -> int:
        cleared = 0
        for key, etag in self._store.stale_claims(self._now() - CLAIM_LEASE):
            if self._store.delete_if_unchanged(key, etag):
                cleared += 1
        return cleared
