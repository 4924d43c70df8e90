"""A pause racing a lift: nothing may be stranded.

A task handler that read "on" (from its warm cache, or from the mirror) saves its
token while an operator lifts maintenance, through the API or by removing the
tag with the AWS CLI. Hypothesis chooses how the two interleave, one AWS call
at a time, through a deterministic scheduler; then one sweep runs. Every held
token must have been sent exactly once and the folder must be empty. After an
API lift nothing may be stranded even before the sweep: the re-check after
saving catches it.
"""

import json
import threading
from collections import Counter
from typing import Any

import boto3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from chalicelib.arns import parse_state_machine_arn
from chalicelib.commands import SwitchMaintenance
from chalicelib.deadline import Deadline
from chalicelib.events import CheckpointEvent
from chalicelib.services import Services
from tests import harness
from tests.conftest import BUCKET, PREFIX
from tests.harness import ACCOUNT, REGION
from tests.moto_fidelity import make_s3_atomic
from tests.sends import counting_sends

HANDLER, LIFTER = 0, 1
GRANT_TIMEOUT = 5.0


class Turns:
    """Lets each actor's AWS calls through one at a time, in the order of ``schedule``.

    Actors are told apart by their clients (one ``Services`` per container), so
    calls from an actor's worker threads are gated too.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: Counter[int] = Counter()
        self._granted: int | None = None
        self._open = False
        self.done: set[int] = set()

    def gate(self, services: Services, actor: int) -> None:
        def before_call(**_: Any) -> None:
            with self._cond:
                self._waiting[actor] += 1
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._open or self._granted == actor, timeout=GRANT_TIMEOUT)
                self._waiting[actor] -= 1
                if self._granted == actor:
                    self._granted = None
                self._cond.notify_all()

        for client in (services.clients.s3(), services.clients.sfn(REGION)):
            client.meta.events.register_first("before-call", before_call)

    def open(self) -> None:
        """The race is over: let every later call through at once."""
        with self._cond:
            self._open = True
            self._cond.notify_all()

    def finished(self, actor: int) -> None:
        with self._cond:
            self.done.add(actor)
            self._cond.notify_all()

    def play(self, schedule: list[int], actors: int = 2) -> None:
        """Grant calls in ``schedule`` order; then, so that every run of one example
        is the same, keep granting to the lowest-numbered waiting actor."""
        for actor in schedule:
            self._grant(lambda a=actor: a if self._waiting[a] > 0 else None, actor)
        while True:
            with self._cond:
                if len(self.done) == actors:
                    return
            self._grant(lambda: next((a for a in range(actors) if self._waiting[a] > 0), None), None)

    def _grant(self, choose: Any, named: int | None) -> None:
        with self._cond:
            ready = self._cond.wait_for(
                lambda: (
                    choose() is not None or (named in self.done if named is not None else False) or len(self.done) == 2
                ),
                timeout=GRANT_TIMEOUT,
            )
            actor = choose()
            if not ready or actor is None:
                return
            self._granted = actor
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._granted is None, timeout=GRANT_TIMEOUT)


def container() -> Services:
    return harness.container(BUCKET, PREFIX)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    schedule=st.lists(st.sampled_from([HANDLER, LIFTER]), max_size=24),
    warm_cache=st.booleans(),
    lift=st.sampled_from(["api", "cli"]),
    already_held=st.integers(min_value=0, max_value=3),
)
def test_a_pause_racing_a_lift_strands_nothing_after_one_sweep(schedule, warm_cache, lift, already_held):
    make_s3_atomic()
    with mock_aws(), counting_sends() as sends:
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        sfn = boto3.client("stepfunctions", region_name=REGION)
        arn = sfn.create_state_machine(
            name="Racy",
            definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/r",
        )["stateMachineArn"]
        machine = parse_state_machine_arn(arn)
        handler, lifter = container(), container()
        lifter.control.switch(machine, SwitchMaintenance.turn(machine, True, reason="deploy"), "ci", Deadline(5))
        held_before = [f"held-{n}" for n in range(already_held)]
        for token in held_before:
            lifter.store.save(CheckpointEvent(task_token=token, state_machine=machine))
        if warm_cache:
            assert handler.flag.is_on(machine)

        turns = Turns()
        turns.gate(handler, HANDLER)
        turns.gate(lifter, LIFTER)
        results: dict[str, Any] = {}

        def pause() -> None:
            try:
                event = {"taskToken": "racer", "stateMachineArn": arn, "executionArn": f"{arn}:racer"}
                results["handler"] = handler.pauser.handle(event, Deadline(10))
            finally:
                turns.finished(HANDLER)

        def lift_maintenance() -> None:
            try:
                if lift == "api":
                    lifter.control.switch(machine, SwitchMaintenance.turn(machine, False), "ci", Deadline(10))
                else:
                    lifter.clients.sfn(REGION).untag_resource(resourceArn=arn, tagKeys=["Maintenance"])
            finally:
                turns.finished(LIFTER)

        threads = [threading.Thread(target=pause), threading.Thread(target=lift_maintenance)]
        for thread in threads:
            thread.start()
        turns.play(schedule)
        for thread in threads:
            thread.join(timeout=30)
        turns.open()
        assert "handler" in results, "the handler did not finish"

        everyone = {"racer", *held_before}
        if lift == "api":
            assert set(sends.successes) == everyone, "an API lift strands nothing, even before the sweep"
        container().sweeper.sweep(Deadline(10))

        assert set(sends.successes) == everyone
        assert sends.duplicates() == 0
        assert list(lifter.store.held(machine.name)) == []
