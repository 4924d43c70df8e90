"""Resuming held tasks: send each saved token's success, then forget it.

The rule that matters: a held task is removed from its folder only once its
outcome is known. SendTaskSuccess succeeded, or AWS said the token can never
succeed (it is then moved to quarantine with the reason). Any other error
(throttling after retries, 5xx, timeouts, access denied) leaves it held for the
next resume.
"""

import logging
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from enum import Enum

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.arns import StateMachineArn, parse_state_machine_arn
from chalicelib.clients import AwsClients
from chalicelib.deadline import Deadline
from chalicelib.errors import InvalidArn
from chalicelib.logs import DecisionLog, fingerprint
from chalicelib.store import HeldKey, HeldTask, TokenStore, UnreadableHeldTask

# AWS's word that a token can never succeed: malformed, timed out or closed, gone.
DEAD_TOKEN_ERRORS = frozenset({"InvalidToken", "TaskTimedOut", "TaskDoesNotExist"})
# The token is alive but the saved output cannot be sent: fail the Task instead of
# leaving the execution to hang until its timeout.
OUTPUT_ERRORS = frozenset({"InvalidOutput"})
INVALID_OUTPUT_ERROR = "SfnPauser.InvalidOutput"


class Outcome(Enum):
    RESUMED = "resumed"
    EXPIRED = "expired"
    FAILED = "failed"
    KEPT = "kept"
    GONE = "gone"
    FOREIGN = "foreign"


@dataclass
class ResumeReport:
    resumed: int = 0
    expired: int = 0
    failed: int = 0
    remaining: int = 0

    def add(self, outcome: Outcome) -> None:
        if outcome is Outcome.RESUMED:
            self.resumed += 1
        elif outcome is Outcome.EXPIRED:
            self.expired += 1
        elif outcome is Outcome.FAILED:
            self.failed += 1
        elif outcome is Outcome.KEPT:
            self.remaining += 1

    def as_dict(self) -> dict[str, int]:
        return {
            "resumed": self.resumed,
            "expired": self.expired,
            "failed": self.failed,
            "remaining": self.remaining,
        }


class Resumer:
    def __init__(
        self,
        store: TokenStore,
        clients: AwsClients,
        log: DecisionLog,
        concurrency: int,
    ) -> None:
        self._store = store
        self._clients = clients
        self._log = log
        self._concurrency = concurrency

    def resume(self, machine: StateMachineArn, deadline: Deadline) -> ResumeReport:
        """Resume the machine's held tasks, oldest first, until done or out of time."""
        report = ResumeReport()
        held = self._store.held(machine.name)
        in_flight: set[Future[Outcome]] = set()
        with ThreadPoolExecutor(max_workers=self._concurrency) as pool:
            for item in held:
                if deadline.expired():
                    report.remaining += 1
                    break
                in_flight.add(pool.submit(self._resume_one, machine, item))
                if len(in_flight) >= self._concurrency:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    _collect(done, report)
            done, _ = wait(in_flight)
            _collect(done, report)
        report.remaining += _count(held)
        return report

    def _resume_one(self, machine: StateMachineArn, item: HeldKey) -> Outcome:
        try:
            task = self._store.load(item.key)
        except UnreadableHeldTask as error:
            self._store.quarantine(item.key, str(error), machine.name)
            self._log.decision("quarantined", logging.ERROR, key=item.key, reason=str(error))
            return Outcome.FAILED
        except (ClientError, BotoCoreError) as error:
            self._log.decision("kept", logging.WARNING, key=item.key, error=_code(error))
            return Outcome.KEPT
        if task is None:
            return Outcome.GONE
        if not _belongs_to(task, machine):
            # Machines of one name in two regions or accounts share a folder (the
            # layout is the seed's); a token is only ever sent to its own machine.
            return Outcome.FOREIGN
        try:
            return self._send(machine, task)
        except (ClientError, BotoCoreError) as error:
            self._log.decision(
                "kept",
                logging.WARNING,
                key=task.key,
                execution=task.execution_arn,
                token=fingerprint(task.task_token),
                error=_code(error),
            )
            return Outcome.KEPT

    def _send(self, machine: StateMachineArn, task: HeldTask) -> Outcome:
        sfn = self._clients.sfn(machine.region)
        common = {
            "stateMachine": machine.unqualified,
            "execution": task.execution_arn,
            "key": task.key,
            "token": fingerprint(task.task_token),
        }
        try:
            sfn.send_task_success(taskToken=task.task_token, output=task.output)
        except ClientError as error:
            code = _code(error)
            if code in DEAD_TOKEN_ERRORS:
                target = self._store.quarantine(task.key, code, machine.name)
                self._log.decision("expired", logging.WARNING, error=code, quarantine=target, **common)
                return Outcome.EXPIRED
            if code in OUTPUT_ERRORS:
                sfn.send_task_failure(
                    taskToken=task.task_token,
                    error=INVALID_OUTPUT_ERROR,
                    cause=f"sfn-pauser could not send the saved input of {task.key} "
                    f"as the task output: {error.response['Error'].get('Message', code)}",
                )
                self._store.delete(task.key)
                self._log.decision("failed", logging.ERROR, error=code, **common)
                return Outcome.FAILED
            raise
        try:
            self._store.delete(task.key)
        except (ClientError, BotoCoreError) as error:
            # The execution has resumed; the leftover object will meet TaskTimedOut
            # on the next resume and be quarantined, so nothing is lost either way.
            self._log.decision("resumed", logging.WARNING, deleteError=_code(error), **common)
            return Outcome.RESUMED
        self._log.decision("resumed", **common)
        return Outcome.RESUMED


def _belongs_to(task: HeldTask, machine: StateMachineArn) -> bool:
    if task.state_machine_arn is None:
        return True
    try:
        return parse_state_machine_arn(task.state_machine_arn).unqualified == machine.unqualified
    except InvalidArn:
        return True


def _collect(done: set[Future[Outcome]], report: ResumeReport) -> None:
    for future in done:
        report.add(future.result())


def _count(items: Iterator[HeldKey]) -> int:
    return sum(1 for _ in items)


def _code(error: Exception) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "ClientError"))
    return type(error).__name__
