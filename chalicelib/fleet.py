"""The fleet: which state machines sfn-pauser knows, and the one loop that works on them.

Every fleet-wide job (the sweep, the overview, a bulk switch) goes through
:meth:`Fleet.each`, so that one rule holds for all of them: one machine's trouble
is reported for that machine (a log line, a metric, its own entry in the answer)
and never stops the work for the others.
"""

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from botocore.exceptions import ClientError
from chalice import ChaliceViewError

from chalicelib import faults
from chalicelib.arns import AccountRegion, StateMachineArn, parse_state_machine_arn
from chalicelib.errors import InvalidArn, about_state_machine, as_http_error
from chalicelib.flag import MaintenanceFlag
from chalicelib.logs import DecisionLog
from chalicelib.metrics import Metrics
from chalicelib.store import TokenStore, UnreadableHeldTask, machine_tag, machine_tag_of

T = TypeVar("T")
# How many of a folder's oldest keys are looked at to find the machines holding tokens in it.
FOLDER_SAMPLE = 1000


@dataclass(frozen=True)
class MachineError:
    """What went wrong for one machine, as the HTTP error it would have been on its own."""

    machine: str
    code: str
    message: str
    status: int

    @classmethod
    def of(cls, machine: StateMachineArn, error: Exception) -> "MachineError":
        if isinstance(error, ClientError):
            error = about_state_machine(error, machine.unqualified)
        answer = as_http_error(error)
        if isinstance(answer, ChaliceViewError):
            return cls(str(machine), type(answer).__name__, str(answer), answer.STATUS_CODE)
        # A bug of ours, not the caller's nor AWS's: the type names it for the logs.
        return cls(str(machine), "InternalError", f"{type(error).__name__}: {error}", 500)

    def as_entry(self) -> dict[str, Any]:
        """The machine's entry in an answer: ``{"stateMachineArn", "error": {Code, Message, Status}}``."""
        return {
            "stateMachineArn": self.machine,
            "error": {"Code": self.code, "Message": self.message, "Status": self.status},
        }


class Fleet:
    def __init__(self, log: DecisionLog, metrics: Metrics) -> None:
        self._log = log
        self._metrics = metrics

    def each(
        self, job: str, machines: Iterable[StateMachineArn], work: Callable[[StateMachineArn], T]
    ) -> Iterator[tuple[StateMachineArn, T | MachineError]]:
        """``work`` on each machine in turn, lazily: its result, or the error it met.

        Any exception is caught for that machine alone (AWS errors of every kind,
        our own 4xx such as StateMachineNotFound, and bugs), logged as
        ``machine-failed`` with the job, counted in the ``MachineErrors`` metric,
        and yielded as a :class:`MachineError`; the loop goes on to the next.
        """
        for machine in machines:
            try:
                result: T | MachineError = work(machine)
            except Exception as error:  # the point of the loop: whatever it is, it stays this machine's
                result = MachineError.of(machine, error)
                self._log.decision(
                    "machine-failed",
                    logging.ERROR if result.code == "InternalError" else logging.WARNING,
                    job=job,
                    stateMachine=result.machine,
                    error=result.code,
                    status=result.status,
                    message=result.message,
                )
                self._metrics.emit(machine.name, MachineErrors=1)
            yield machine, result


@dataclass
class KnownMachines:
    """Each known machine, with when its mirror was last written (None: no mirror),
    and the token folders that cannot be a state machine's (a stray upload)."""

    machines: dict[StateMachineArn, str | None] = field(default_factory=dict)
    strays: list[str] = field(default_factory=list)


def known_machines(flag: MaintenanceFlag, store: TokenStore, home: AccountRegion | None = None) -> KnownMachines:
    """The machines with a flag mirror, and every machine holding tokens in a folder.

    A token folder names only the machine, and namesakes in other regions or
    accounts share it. Its machines are told apart by the tag in each key; the
    ARN of a tag no mirror accounts for comes from one of its held tokens (new
    tokens record it). The seed's tokens carry neither: their folder is placed
    in ``home`` (the seed only ever worked in its own account and region). A
    folder whose name no state machine may have is never made into an ARN.
    Only the first page of each folder is looked at: one machine's tokens sit
    together in time, and a machine that holds tokens has a mirror besides.
    """
    known = KnownMachines(dict(flag.mirrored()))
    mirrored_tags: dict[str, set[int]] = {}
    for machine in known.machines:
        mirrored_tags.setdefault(machine.name, set()).add(machine_tag(machine))
    for name in store.machines():
        try:
            found = _machines_of_folder(store, name, home, mirrored_tags.get(name, set()))
        except InvalidArn:
            known.strays.append(name)
            continue
        for machine in found:
            known.machines.setdefault(machine, None)
    return known


def _machines_of_folder(
    store: TokenStore, name: str, home: AccountRegion | None, mirrored: set[int]
) -> list[StateMachineArn]:
    """The machines whose tokens are in a folder and that no mirror accounts for."""
    if home is not None:
        parse_state_machine_arn(home.machine(name).unqualified)  # the folder's name must be a machine's
    try:
        first_page = list(itertools.islice(store.held(name), FOLDER_SAMPLE))
    except faults.AWS_ERRORS:
        # One folder S3 will not show (a prefix-scoped deny, a KMS key) is placed as
        # the seed's are; the work on that machine then meets the error as its own.
        first_page = []
    first_of_tag: dict[int | None, str] = {}
    for item in first_page:
        first_of_tag.setdefault(machine_tag_of(item.key.rsplit("/", 1)[-1].removesuffix(".json")), item.key)
    if not first_page and not mirrored:
        first_of_tag[None] = ""
    machines = []
    for tag, key in first_of_tag.items():
        if tag is not None and tag in mirrored:
            continue
        if tag is None and mirrored:
            continue  # a namesake's mirror already names this folder; the seed's tokens go with it
        machine = _machine_of(store, key, name, home)
        if machine is not None:
            machines.append(machine)
    return machines


def _machine_of(store: TokenStore, key: str, name: str, home: AccountRegion | None) -> StateMachineArn | None:
    try:
        task = store.load(key) if key else None
    except (UnreadableHeldTask, *faults.AWS_ERRORS):
        task = None
    if task is not None and task.state_machine_arn:
        try:
            return parse_state_machine_arn(task.state_machine_arn)
        except InvalidArn:
            pass
    return parse_state_machine_arn(home.machine(name).unqualified) if home else None
