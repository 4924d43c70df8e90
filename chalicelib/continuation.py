"""Draining a backlog of any size: resume within this invocation's budget, then hand on.

When a resume leaves anything behind (the deadline stopped it, or some tokens
met a passing fault and stayed held) while it made progress, the rest continues
in a fresh asynchronous invocation of the ``resumer`` function, which does the
same until the backlog is empty. A chain stops when an invocation makes no
progress (every token failed with a retryable error, another resumer holds them
all, or a continuation's budget ran out before it tried one): the scheduled
sweep picks the backlog up again a minute later.
"""

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import faults
from chalicelib.arns import StateMachineArn, parse_state_machine_arn
from chalicelib.deadline import Deadline
from chalicelib.errors import InvalidField, Unavailable
from chalicelib.fields import Fields
from chalicelib.logs import DecisionLog
from chalicelib.metrics import Metrics
from chalicelib.resumer import SHARDS, Resumer, ResumeReport
from chalicelib.store import HeldTask

# A bound on a chain, so a fault cannot loop forever; at the pauser's 120 s and
# hundreds of tokens a second this is far beyond any real backlog.
MAX_GENERATIONS = 1000


class Drainer:
    def __init__(
        self,
        resumer: Resumer,
        lambda_client: Callable[[], Any],
        resumer_function: str | None,
        log: DecisionLog,
        metrics: Metrics,
    ) -> None:
        self._resumer = resumer
        self._lambda_client = lambda_client
        self._resumer_function = resumer_function
        self._log = log
        self._metrics = metrics

    def drain(
        self,
        machine: StateMachineArn,
        deadline: Deadline,
        *,
        generation: int = 0,
        exclusive: bool = True,
        limit: int | None = None,
        selected: Callable[[HeldTask], bool] | None = None,
        answered: str | None = None,
        shard: int | None = None,
        forced: bool = False,
    ) -> ResumeReport:
        """Resume now, and continue asynchronously if the deadline cut the work short.

        An exclusive drain of a large backlog fans out: the other shards go to
        invocations of their own (``continue_later`` with the shard), at once.
        """
        report = self._resumer.resume(
            machine,
            deadline,
            exclusive=exclusive,
            limit=limit,
            selected=selected,
            answered=answered,
            shard=shard,
            fan_out=lambda other: self.continue_later(machine, generation + 1, shard=other),
            forced=forced,
        )
        if report.resumed or report.expired or report.failed or report.throttled:
            self._metrics.emit(
                machine.name,
                Resumed=report.resumed,
                Expired=report.expired,
                Failed=report.failed,
                Throttled=report.throttled,
                Backlog=report.remaining,
            )
        # A continuation resumes the whole backlog, so only a whole-backlog drain hands on;
        # a selective or limited resume reports what remains and the caller decides.
        whole = selected is None and limit is None
        # A caller that spent its budget before draining (a slow API call, a pauser
        # near its timeout) hands the whole backlog on once; a continuation whose
        # own budget went on listing and leasing would only do so again, so it stops.
        untried = report.attempted == 0 and generation == 0 and report.out_of_time
        # Tokens a pass left behind in time (a 5xx, a claim another resumer dropped)
        # are the next invocation's at once, not the sweep's a minute later.
        # (Shards another resumer holds are its to finish.)
        left_behind = report.remaining and (report.shard is not None or not report.busy)
        if whole and left_behind and (report.progressed or untried):
            report.continued = self.continue_later(machine, generation + 1, shard=report.shard)
        elif report.remaining and not report.progressed and not report.busy:
            self._log.decision("stalled", logging.WARNING, stateMachine=machine.unqualified, remaining=report.remaining)
        return report

    def carry_on(self, continuation: "Continuation", deadline: Deadline) -> ResumeReport:
        """The ``resumer`` function's drain: an AWS fault is :class:`Unavailable`, by name.

        Lambda retries a failed asynchronous invocation twice with the same event,
        and the sweep takes up whatever is still held after that.
        """
        machine = continuation.machine
        try:
            return self.drain(machine, deadline, generation=continuation.generation, shard=continuation.shard)
        except faults.AWS_ERRORS as error:
            code = faults.error_code(error)
            self._log.decision(
                "continuation-unavailable", logging.WARNING, stateMachine=machine.unqualified, error=code
            )
            raise Unavailable(f"AWS answered {code} draining {machine.unqualified}; nothing was lost") from None

    def continue_later(self, machine: StateMachineArn, generation: int, *, shard: int | None = None) -> bool:
        if self._resumer_function is None or generation > MAX_GENERATIONS:
            return False
        event: dict[str, Any] = {"stateMachineArn": machine.unqualified, "generation": generation}
        if shard is not None:
            event["shard"] = shard
        try:
            self._lambda_client().invoke(
                FunctionName=self._resumer_function,
                InvocationType="Event",
                Payload=json.dumps(event),
            )
        except (ClientError, BotoCoreError) as error:
            # The sweep is the backstop: the backlog is still held, nothing is lost.
            self._log.decision("continue-failed", logging.WARNING, stateMachine=machine.unqualified, error=str(error))
            return False
        self._log.decision("continued", stateMachine=machine.unqualified, generation=generation, shard=shard)
        return True


@dataclass(frozen=True)
class Continuation:
    """What a ``resumer`` invocation carries on with: the machine, its place in the chain, the shard to take first."""

    machine: StateMachineArn
    generation: int = 0
    shard: int | None = None


def parse_continuation(event: object) -> Continuation:
    """The ``resumer`` function's event: ``{"stateMachineArn": ARN, "generation": int, "shard": int}``."""
    fields = Fields(event, what="event")
    machine = parse_state_machine_arn(fields.string("stateMachineArn"))
    return Continuation(machine, _whole(fields.raw("generation"), "generation") or 0, _shard(fields.raw("shard")))


def _whole(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidField(name, f"expected a whole number of at least 0, got {value!r}")
    return value


def _shard(value: object) -> int | None:
    shard = _whole(value, "shard")
    if shard is not None and shard >= SHARDS:
        raise InvalidField("shard", f"expected a shard number from 0 to {SHARDS - 1}, got {value!r}")
    return shard
