"""Waiting until nobody is inside a protected section: ``on --wait-drained`` and ``run``'s drain wait.

Maintenance (or a hold) keeps executions out of a protected section from the
moment task handlers see it, but an execution that passed the checkpoint a
moment earlier is not held: it may still be calling the dependency the deploy
is about to change, until it reaches the section's leave step. The API counts
those executions: ``GET /maintenance?stateMachineArn=`` per state machine and
``GET /holds/{holdId}`` over a hold's scope answer ``drained: true`` once
maintenance is on (the hold is active) and nobody is inside.

This polls that every ``POLL_SECONDS`` until each one answers ``drained: true``,
until the deadline (``TimedOut``, exit 3, with who is still inside), or until
``interrupted()``. Throttling, API Gateway's 502, 503 and 504 and a connection
that fails are tried again until the deadline; any other error answer ends the
wait (exit 1), and so does an answer without ``drained`` (an API older than this
client: waiting for a field it never sends would only end at the timeout).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sfn_pauser_cli.api import Api, ApiError, Unreachable, route
from sfn_pauser_cli.commands import Failure, Output, TimedOut, _count, _name, _object, _set_by, _short_names

# How often the API is asked: fixed, so that a pipeline's log shows a steady pace.
POLL_SECONDS = 2.0
# While nothing changes, the progress line is repeated this often, so the log shows the wait goes on.
REPEAT_SECONDS = 30.0
# Answers tried again until the deadline; any other error answer is final.
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
# Slices of a sleep between polls, so that a signal is noticed quickly.
SLICE_SECONDS = 0.2


@dataclass(frozen=True)
class Inside:
    """One execution inside a protected section, as the API lists it."""

    machine: str
    execution: str
    entry: str | None
    since: str | None


@dataclass(frozen=True)
class Reading:
    drained: bool
    inside: int
    capped: bool  # the API stopped counting: at least ``inside``
    oldest: str | None
    executions: tuple[Inside, ...]  # up to 20, oldest first


@dataclass
class Subject:
    """What is polled: a state machine (``on``) or a hold (``run``)."""

    label: str  # how progress lines name it: the machine's name, or the hold's ID
    what: str  # the request, for messages
    fetch: Callable[[float], Any]  # the answer, given the deadline
    still_waitable: Callable[[dict[str, Any]], None]  # raises Failure when no drain can come (maintenance off ...)
    older_api: str  # what to do when the answer has no ``drained``
    machine: str | None = None  # the state machine of every execution listed (``on``); None: each says (``run``)


def wait(
    output: Output,
    subjects: list[Subject],
    deadline: float,
    interrupted: Callable[[], bool] = lambda: False,
    *,
    timed_out: str,
) -> dict[str, dict[str, Any]] | None:
    """Each subject's first answer that says ``drained: true``, by label; None once ``interrupted()``.

    ``timed_out`` ends the TimedOut message, after who is still inside.
    """
    started = time.monotonic()
    pending = {subject.label: subject for subject in subjects}
    drained: dict[str, dict[str, Any]] = {}
    readings: dict[str, Reading] = {}
    problems: dict[str, str] = {}
    shown: dict[str, tuple[Any, float]] = {}
    total = max(deadline - started, 0.0)

    def show(subject: Subject, signature: Any, lines: list[str]) -> None:
        """Print ``lines`` when they say something new, or again after REPEAT_SECONDS."""
        before = shown.get(subject.label)
        now = time.monotonic()
        if before is None or before[0] != signature or now - before[1] >= REPEAT_SECONDS:
            shown[subject.label] = (signature, now)
            for line in lines:
                output.progress(line)

    while True:
        for label, subject in list(pending.items()):
            if interrupted():
                return None
            try:
                body = _object(subject.fetch(deadline), subject.what)
            except (ApiError, Unreachable) as error:
                if isinstance(error, ApiError) and error.status not in TRANSIENT_STATUSES:
                    raise
                problem = problems[label] = _problem(error)
                retry = f"{label}: {subject.what} failed ({problem}); trying again in {POLL_SECONDS:g}s"
                show(subject, ("error", problem), [retry])
                continue
            problems.pop(label, None)
            reading = read(body, subject)
            readings[label] = reading
            if reading.drained:
                drained[label] = body
                del pending[label]
                output.progress(f"{label}: drained: nobody inside {_where(subject)} "
                                f"(after {time.monotonic() - started:.0f}s)")  # fmt: skip
                continue
            subject.still_waitable(body)
            waited = f" (waited {time.monotonic() - started:.0f}s of {total:.0f}s)"
            lines = progress_lines(subject, reading)
            show(subject, (reading.inside, reading.capped, reading.executions), [lines[0] + waited, *lines[1:]])
        if not pending:
            return drained
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            elapsed = time.monotonic() - started
            for label, subject in pending.items():
                for line in still_inside_lines(subject, readings.get(label), problems.get(label)):
                    output.progress(line)
            raise TimedOut(
                f"{', '.join(pending)}: not drained after {elapsed:.0f}s (who is still inside is listed above); "
                + timed_out
            )
        pause = time.monotonic() + min(POLL_SECONDS, remaining)
        while time.monotonic() < pause:
            if interrupted():
                return None
            time.sleep(min(SLICE_SECONDS, max(0.0, pause - time.monotonic())))


# ---------------------------------------------------------------- the two subjects


def machine_subject(api: Api, machine: str, label: str | None = None) -> Subject:
    """A state machine under ``on --wait-drained``: GET /maintenance?stateMachineArn=."""
    name = label or _name(machine)

    def still_waitable(status: dict[str, Any]) -> None:
        if "maintenance" in status and not status["maintenance"]:
            raise Failure(
                f"{name}: maintenance is off again{_set_by(status)}, so nothing keeps executions out of the "
                "protected section; this command does not wait for it to drain"
            )

    return Subject(
        label=name,
        what="GET /maintenance",
        fetch=lambda deadline: api.get("/maintenance", {"stateMachineArn": machine}, deadline=deadline),
        still_waitable=still_waitable,
        older_api="use --wait instead of --wait-drained, or upgrade the API",
        machine=machine,
    )


def hold_subject(api: Api, hold_id: str) -> Subject:
    """A hold under ``run``: GET /holds/{holdId}, over every state machine of its scope."""

    def still_waitable(hold: dict[str, Any]) -> None:
        if hold.get("active") is False:
            raise Failure(
                f"{hold_id}: the hold is not active any more, so nothing keeps executions out of the sections "
                "it covers; run does not wait for them to drain"
            )

    return Subject(
        label=hold_id,
        what="GET /holds/{holdId}",
        fetch=lambda deadline: api.get(route("holds", hold_id), {}, deadline=deadline),
        still_waitable=still_waitable,
        older_api="pass --no-wait-drained to run the command without waiting, or upgrade the API",
    )


# ---------------------------------------------------------------- reading answers


def read(body: dict[str, Any], subject: Subject) -> Reading:
    """
    >>> subject = Subject("Orders", "GET /maintenance", print, print, "upgrade", "arn:m")
    >>> read({"drained": False, "inside": 1, "insideExecutions": [
    ...     {"executionArn": "arn:e", "entry": "Charge", "since": "2026-01-01T00:00:00Z"}]}, subject)
    ... # doctest: +NORMALIZE_WHITESPACE
    Reading(drained=False, inside=1, capped=False, oldest='2026-01-01T00:00:00Z',
            executions=(Inside(machine='arn:m', execution='arn:e', entry='Charge', since='2026-01-01T00:00:00Z'),))
    >>> read({"maintenance": True}, subject)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    sfn_pauser_cli.commands.Failure: GET /maintenance answered without 'drained': ...
    """
    if "drained" not in body:
        raise Failure(
            f"{subject.what} answered without 'drained': the API is older than this client and does not say "
            f"whether executions are inside a protected section, so waiting for it to drain would never end; "
            f"{subject.older_api}"
        )
    if not isinstance(body["drained"], bool):
        raise Failure(f"{subject.what}: 'drained' is {body['drained']!r}, not true or false")
    listed = body.get("insideExecutions")
    executions = tuple(
        Inside(
            machine=str(subject.machine or item.get("stateMachineArn") or "?"),
            execution=str(item.get("executionArn") or "?"),
            entry=None if item.get("entry") is None else str(item["entry"]),
            since=None if item.get("since") is None else str(item["since"]),
        )
        for item in (listed if isinstance(listed, list) else [])
        if isinstance(item, dict)
    )
    inside = max(_count(body, "inside"), len(executions))
    oldest = body.get("oldestInsideAt") or next((item.since for item in executions if item.since), None)
    return Reading(body["drained"], inside, body.get("insideCapped") is True, oldest, executions)


# ---------------------------------------------------------------- wording


def progress_lines(subject: Subject, reading: Reading) -> list[str]:
    """
    >>> orders = "arn:aws:states:eu-west-1:1:stateMachine:Orders"
    >>> progress_lines(Subject("Orders", "", print, print, "", orders),
    ...                Reading(False, 2, False, "2026-01-01T00:00:00Z", ()))
    ['Orders: 2 inside, the oldest since 2026-01-01T00:00:00Z']
    >>> progress_lines(Subject("hold-1", "", print, print, ""), Reading(False, 3, False, None, (
    ...     Inside(orders, "e1", None, "t1"), Inside("arn:aws:states:eu-west-1:1:stateMachine:Pay", "e2", None, "t2"),
    ...     Inside(orders, "e3", None, "t3"))))  # doctest: +NORMALIZE_WHITESPACE
    ['hold-1: 3 inside the protected sections it covers', 'Orders: 2 inside, the oldest since t1',
     'Pay: 1 inside, the oldest since t2']
    """
    if subject.machine is not None:
        return [f"{subject.label}: {_amount(reading)} inside{_since(reading.oldest)}"]
    lines = [f"{subject.label}: {_amount(reading)} inside the protected sections it covers{_listed(reading)}"]
    for name, group in _by_machine(reading.executions):
        lines.append(f"{name}: {len(group)} inside{_since(group[0].since)}")
    return lines


def still_inside_lines(subject: Subject, reading: Reading | None, problem: str | None) -> list[str]:
    """Who is still inside at the timeout: each execution listed, by state machine."""
    if reading is None:
        return [f"{subject.label}: no answer from {subject.what} while waiting ({problem or '?'})"]
    lines = []
    if problem:
        lines.append(f"{subject.label}: the last tries failed ({problem}); the last answer was:")
    if subject.machine is not None:
        lines.append(f"{subject.label}: {_amount(reading)} still inside{_since(reading.oldest)}")
    else:
        lines.append(f"{subject.label}: {_amount(reading)} still inside the protected sections it covers")
    for name, group in _by_machine(reading.executions):
        if subject.machine is None:
            lines.append(f"{name}: {len(group)} still inside")
        for item in group:
            entry = f", entry {item.entry}" if item.entry else ""  # a Map iteration's own
            lines.append(f"  {item.execution} (inside since {item.since or '?'}{entry})")
    unlisted = reading.inside - len(reading.executions)
    if unlisted > 0 or (reading.capped and reading.executions):
        lines.append(f"  ... and {'at least ' if reading.capped else ''}{max(unlisted, 0)} more, not listed")
    return lines


def _where(subject: Subject) -> str:
    return "the protected section" if subject.machine is not None else "the protected sections it covers"


def _amount(reading: Reading) -> str:
    return f"at least {reading.inside}" if reading.capped else str(reading.inside)


def _since(moment: str | None) -> str:
    return f", the oldest since {moment}" if moment else ""


def _listed(reading: Reading) -> str:
    listed = len(reading.executions)
    return f" ({listed} listed)" if listed < reading.inside or reading.capped else ""


def _by_machine(executions: tuple[Inside, ...]) -> list[tuple[str, list[Inside]]]:
    """The executions by state machine (first seen, first), each machine by its short name."""
    groups: dict[str, list[Inside]] = {}
    for item in executions:
        groups.setdefault(item.machine, []).append(item)
    return list(zip(_short_names(list(groups)), groups.values(), strict=True))


def _problem(error: ApiError | Unreachable) -> str:
    if isinstance(error, ApiError):
        return f"{error.code}: {error.message} (HTTP {error.status})"
    return str(error)
