"""What each subcommand asks the API, how ``--wait`` waits, and what is printed.

Results go to stdout: the API's body with ``--json``, else a line or two per
state machine. Progress and errors go to stderr, so a pipeline can capture the
result and still show the rest in its log.
"""

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from sfn_pauser_cli.api import Api, ApiError, Unreachable

# The API takes at most this many state machines in one POST /maintenance.
MAX_MACHINES_PER_REQUEST = 50
# Status polls while waiting for the backlog: quick at first, then every few seconds
# (each poll lists the held tokens in S3).
FIRST_POLL_SECONDS = 0.5
MAX_POLL_SECONDS = 5.0
# A backlog that has not shrunk over this many polls gets a POST /resume: the
# resume chain may have stopped (it does when it makes no progress, and the
# scheduled sweep restarts it only a minute later).
STALL_POLLS = 3
# The overview asks for the API's largest page, so a fleet takes few requests.
OVERVIEW_PAGE = 1000
# A bound on the pages followed, against an API that keeps answering with a nextToken.
MAX_OVERVIEW_PAGES = 1000
REASON_WIDTH = 60


class Failure(Exception):
    """The request went through, but the outcome is not what was asked for (exit 1)."""


class TimedOut(Exception):
    """``--timeout`` passed before what ``--wait`` waits for (exit 3)."""


@dataclass
class Output:
    json_mode: bool
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def result(self, body: Any, lines: list[str]) -> None:
        if self.json_mode:
            print(json.dumps(body), file=self.out, flush=True)
        else:
            for line in lines:
                print(line, file=self.out, flush=True)

    def progress(self, text: str) -> None:
        print(f"sfn-pauser: {text}", file=self.err, flush=True)


# ---------------------------------------------------------------- on and off


def switch(
    api: Api,
    output: Output,
    machines: list[str],
    options: dict[str, Any],
    wait: float | None,
    *,
    drained: bool = False,
) -> None:
    """POST /maintenance for each machine (50 a request), then wait if asked.

    ``wait`` is the ``--timeout`` in seconds, or None without ``--wait``.
    ``drained`` (``on --wait-drained``, with ``wait``): after the task handlers,
    wait until nobody is inside each machine's protected section (drain.py).
    """
    enabled = bool(options["enabled"])
    body, results = _post_switch(api, machines, options)
    switched = [result for result in results if "error" not in result]
    refused = [result for result in results if "error" in result]
    for result in refused:
        error = result["error"] if isinstance(result["error"], dict) else {}
        output.progress(
            f"{_name(result.get('stateMachineArn'))}: {error.get('Code', 'Error')}: {error.get('Message', '')}"
        )
    if wait is None:
        output.result(body, [_switch_line(result) for result in switched])
    else:
        for result in switched:
            output.progress(_switch_line(result))
        deadline = time.monotonic() + wait
        if enabled:
            _wait_for_handlers(output, switched, wait)
        else:
            for result in switched:
                _wait_until_drained(api, output, result, deadline)
        if drained:
            statuses = _wait_for_drain(api, output, switched, deadline)
        else:
            statuses = {
                str(result["stateMachineArn"]): api.get("/maintenance", _query(result), deadline=deadline)
                for result in switched
            }
        final = [statuses.get(str(result.get("stateMachineArn")), result) for result in results]
        lines = _status_lines(statuses.values())
        if drained:
            lines = [
                line
                for status in statuses.values()
                for line in [*_status_lines([status]), f"{_name(status.get('stateMachineArn'))}: drained"]
            ]
        output.result(final[0] if len(machines) == 1 else {"results": final}, lines)
        for status in statuses.values():
            if bool(status.get("maintenance")) != enabled:
                raise Failure(
                    f"{_name(status.get('stateMachineArn'))}: maintenance is {_on_off(status.get('maintenance'))} "
                    f"again{_set_by(status)}; something else switched it while this command waited"
                )
    if refused:
        raise Failure(f"{len(refused)} of {len(results)} state machines were not switched")


def _post_switch(api: Api, machines: list[str], options: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    """The API's body as it is (merged when over 50 machines) and the per-machine results."""
    # Setting a state is safe to repeat, so a throttled or dropped request is tried again.
    if len(machines) == 1:
        body = api.post("/maintenance", {"stateMachineArn": machines[0], **options}, retry=True)
        return body, [_object(body, "POST /maintenance")]
    results: list[dict[str, Any]] = []
    bodies = []
    for start in range(0, len(machines), MAX_MACHINES_PER_REQUEST):
        chunk = machines[start : start + MAX_MACHINES_PER_REQUEST]
        body = api.post("/maintenance", {"stateMachineArns": chunk, **options}, retry=True)
        listed = _object(body, "POST /maintenance").get("results")
        if not isinstance(listed, list):
            raise Failure(f"POST /maintenance answered without a results list: {json.dumps(body)[:300]}")
        results.extend(_object(item, "POST /maintenance results") for item in listed)
        bodies.append(body)
    return (bodies[0] if len(bodies) == 1 else {"results": results}), results


def _wait_for_handlers(output: Output, switched: list[dict[str, Any]], timeout: float) -> None:
    """Sleep until every warm task handler has seen maintenance on (``effectiveWithinSeconds``)."""
    if any("effectiveWithinSeconds" not in result for result in switched):
        output.progress(
            "the API did not say how long task handlers may act on a cached flag (no effectiveWithinSeconds), "
            "so this command cannot wait for them"
        )
    seconds = max((_number(result.get("effectiveWithinSeconds")) for result in switched), default=0.0)
    if seconds <= 0:
        return
    output.progress(
        f"waiting {seconds:g}s: a warm task handler may act on the maintenance flag it cached up to {seconds:g}s "
        "ago (MaintenanceCacheSeconds), so until then an execution reaching the checkpoint may still go on"
    )
    if seconds > timeout:
        time.sleep(timeout)
        raise TimedOut(
            f"--timeout {timeout:g}s is shorter than the {seconds:g}s task handlers may take to see maintenance on; "
            "it is on, but an execution may still pass the checkpoint for a few seconds"
        )
    time.sleep(seconds)


def _wait_for_drain(
    api: Api, output: Output, switched: list[dict[str, Any]], deadline: float
) -> dict[str, dict[str, Any]]:
    """``on --wait-drained``: poll each machine until nobody is inside its protected section.

    The last answers (``drained: true``) by ARN: they are the final status.
    """
    from sfn_pauser_cli import drain  # drain.py builds on this module

    arns = [str(result["stateMachineArn"]) for result in switched]
    if not arns:  # every machine was refused: nothing to wait for (switch exits 1)
        return {}
    labels = _short_names(arns)  # namesakes in other regions or accounts by their whole ARNs
    output.progress(
        f"waiting until nobody is inside the protected section of {', '.join(labels)}: asking GET /maintenance "
        f"every {drain.POLL_SECONDS:g}s for up to {max(deadline - time.monotonic(), 0):.0f}s"
    )
    answers = drain.wait(
        output,
        [drain.machine_subject(api, arn, label) for arn, label in zip(arns, labels, strict=True)],
        deadline,
        timed_out="maintenance stays on, but the executions still inside may be calling what the deploy changes",
    )
    if answers is None:  # only a signal interrupts it
        raise KeyboardInterrupt
    return {arn: answers[label] for arn, label in zip(arns, labels, strict=True)}


def _wait_until_drained(api: Api, output: Output, switched: dict[str, Any], deadline: float) -> None:
    """``off --wait``: poll the status until nothing is held, nudging a backlog that stops shrinking.

    (Not the protected-section drain of ``on --wait-drained``: this is the resume backlog.)
    """
    name = _name(switched.get("stateMachineArn"))
    query = _query(switched)
    total = sum(_count(switched, key) for key in ("resumed", "expired", "failed", "remaining"))
    started = time.monotonic()
    delay = FIRST_POLL_SECONDS
    smallest: int | None = None
    flat = 0
    while True:
        status = api.get("/maintenance", query, deadline=deadline)
        held = _count(status, "paused", required=True)
        total = max(total, held)
        if held == 0:
            output.progress(f"{name}: nothing held ({total} released) after {time.monotonic() - started:.0f}s")
            return
        holds = [str(why) for why in status.get("heldBy") or () if why != "tag"]
        if status.get("maintenance") and not holds:
            raise Failure(
                f"{name}: maintenance is on again{_set_by(status)}, so {held} held executions stay held; "
                "this command does not switch it off a second time"
            )
        if holds:
            raise Failure(
                f"{name}: {held} held executions stay held by {', '.join(holds)}; "
                "release those holds (sfn-pauser release HOLD_ID), or switch off with --force"
            )
        if smallest is None or held < smallest:
            smallest, flat = held, 0
            output.progress(f"{name}: {held} held, {total - held} of {total} released so far{_oldest(status)}")
        else:
            flat += 1
        if flat >= STALL_POLLS:
            flat = 0
            _nudge(api, output, name, query, deadline)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimedOut(
                f"{name}: {held} executions still held after {time.monotonic() - started:.0f}s; maintenance is "
                "off and what is held goes on resuming (the scheduled sweep picks up a stalled backlog every minute)"
            )
        time.sleep(min(delay, remaining))
        delay = min(delay * 1.5, MAX_POLL_SECONDS)


def _nudge(api: Api, output: Output, name: str, query: dict[str, str], deadline: float) -> None:
    """POST /resume for a stalled backlog. Only a push: if it fails, the sweep still comes."""
    try:
        nudged = _object(api.post("/resume", query, deadline=deadline), "POST /resume")
    except (ApiError, Unreachable, Failure) as error:
        output.progress(f"{name}: the backlog stopped shrinking, and asking the API to resume it failed ({error})")
        return
    output.progress(f"{name}: the backlog stopped shrinking; asked the API to resume it: {_counts(nudged)}")


# ---------------------------------------------------------------- the others


def status(api: Api, output: Output, machine: str) -> None:
    body = _object(api.get("/maintenance", {"stateMachineArn": machine}), "GET /maintenance")
    output.result(body, _status_lines([body]))


def overview(api: Api, output: Output) -> None:
    """GET /maintenance without a machine, every page: a table of each machine in
    maintenance or holding executions (``--json``: the pages' entries as one body)."""
    entries = every_page(api, "/maintenance", {"limit": str(OVERVIEW_PAGE)}, "stateMachines")
    output.result({"stateMachines": entries, "nextToken": None}, _overview_table(entries))
    unreadable = [entry for entry in entries if "error" in entry]
    if unreadable:
        raise Failure(f"{len(unreadable)} of {len(entries)} state machines could not be read (see the table)")


def every_page(api: Api, path: str, query: dict[str, str], key: str) -> list[dict[str, Any]]:
    """Every item of a paged listing (``GET path``, its ``key`` list and ``nextToken``), in order.

    A token answered twice, or more than ``MAX_OVERVIEW_PAGES`` pages, is a listing that
    would not end: a failure, not a loop.
    """
    items: list[dict[str, Any]] = []
    token: str | None = None
    seen: set[str] = set()
    for _ in range(MAX_OVERVIEW_PAGES):
        body = _object(api.get(path, {**query, **({"nextToken": token} if token else {})}), f"GET {path}")
        listed = body.get(key)
        if not isinstance(listed, list):
            raise Failure(f"GET {path} answered without a {key} list: {json.dumps(body)[:300]}")
        items.extend(_object(item, f"GET {path} {key}") for item in listed)
        token = body.get("nextToken")
        if not token:
            return items
        if token in seen:
            raise Failure(f"GET {path} answered the nextToken {token!r} twice; the listing would not end")
        seen.add(str(token))
    raise Failure(f"GET {path} still had more after {MAX_OVERVIEW_PAGES} pages; stopped")


def resume(api: Api, output: Output, machine: str, options: dict[str, Any]) -> None:
    body = _object(api.post("/resume", {"stateMachineArn": machine, **options}), "POST /resume")
    output.result(body, [f"{_name(body.get('stateMachineArn', machine))}: {_counts(body)}"])


def abort(api: Api, output: Output, machine: str, options: dict[str, Any]) -> None:
    body = _object(api.post("/abort", {"stateMachineArn": machine, **options}), "POST /abort")
    line = f"aborted {_count(body, 'aborted')}, expired {_count(body, 'expired')}"
    if "failed" in body:
        line += f", failed {_count(body, 'failed')}"
    output.result(body, [f"{_name(body.get('stateMachineArn', machine))}: {line}, {_still_held(body)}"])


def audit(api: Api, output: Output, machine: str, query: dict[str, str]) -> None:
    body = _object(api.get("/audit", {"stateMachineArn": machine, **query}), "GET /audit")
    output.result(body, audit_lines(body, _name(machine), "stateMachineArn"))


def audit_lines(body: dict[str, Any], subject: str, subject_field: str) -> list[str]:
    """A page of an audit trail, one event a line, and how to ask for the next page.

    ``subject_field`` names what the trail is of (the same in every event), so it is left out.
    """
    events = body.get("events") if isinstance(body.get("events"), list) else []
    lines = [_event_line(event, subject_field) for event in events] or [f"{subject}: no events"]
    if body.get("nextToken"):
        lines.append(f"(older events: --next-token {body['nextToken']})")
    return lines


# ---------------------------------------------------------------- wording


def _switch_line(result: dict[str, Any]) -> str:
    name = _name(result.get("stateMachineArn"))
    state = _on_off(result.get("maintenance"))
    if result.get("dryRun"):
        verb = f"would switch maintenance {state}" if result.get("changed") else f"maintenance would stay {state}"
        return f"{name}: dry run: {verb}; {_count(result, 'paused')} held"
    if result.get("stillHeldBy"):
        # Off ends the tag only: holds taken by others keep maintenance on (or some checkpoints held).
        text = f"{name}: the switch {'switched' if result.get('changed') else 'was already'} off"
        text += f"; still held by {', '.join(map(str, result['stillHeldBy']))} (release them, or --force)"
    else:
        text = f"{name}: maintenance {'switched' if result.get('changed') else 'was already'} {state}"
        text += _reason_until(result)
    if result.get("endedHolds"):
        text += f"; ended the holds {', '.join(map(str, result['endedHolds']))}"
    if any(key in result for key in ("resumed", "remaining")):
        text += f"; {_counts(result)}"
    return text


def _status_lines(statuses: Iterator[dict[str, Any]] | Any) -> list[str]:
    lines = []
    for status in statuses:
        name = _name(status.get("stateMachineArn"))
        state = f"{name}: maintenance {_on_off(status.get('maintenance'))}"
        if status.get("maintenance") and status.get("since"):  # the tag's; a hold alone has none
            state += f" since {status['since']}{_set_by(status)}"
        if status.get("heldBy"):
            state += f"; held by {', '.join(map(str, status['heldBy']))}"
        lines.append(state + _reason_until(status))
        held = f"{name}: {_count(status, 'paused')} held{_oldest(status)}"
        if status.get("quarantined"):
            held += f"; {_count(status, 'quarantined')} quarantined (tokens that could not be resumed)"
        lines.append(held)
    return lines


def _overview_table(entries: list[dict[str, Any]]) -> list[str]:
    if not entries:
        return ["no state machine is in maintenance or holds executions"]
    names = _short_names([str(entry.get("stateMachineArn") or "?") for entry in entries])
    rows = [["STATE MACHINE", "MAINTENANCE", "HELD", "OLDEST", "BY", "REASON"]]
    for entry, name in zip(entries, names, strict=True):
        if "error" in entry:
            error = entry["error"] if isinstance(entry["error"], dict) else {}
            problem = f"cannot read it: {error.get('Code', 'Error')}: {error.get('Message', '')}"
            rows.append([name, "?", "?", "?", "", _clip(problem)])
            continue
        held = f"{'≥' if entry.get('pausedCapped') else ''}{_count(entry, 'paused')}"
        age = entry.get("oldestPausedAgeSeconds")
        oldest = _age(_number(age)) if age is not None else "-"
        reason = "; ".join(filter(None, [entry.get("reason"), entry.get("until") and f"until {entry['until']}"]))
        rows.append([name, _on_off(entry.get("maintenance")), held, oldest, _who(entry.get("by")), _clip(reason)])
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip()
            for row in rows]  # fmt: skip


def _short_names(arns: list[str]) -> list[str]:
    """Each machine's name, or its whole ARN where namesakes (other regions or accounts) share the name.

    >>> _short_names(["arn:aws:states:eu-west-1:111111111111:stateMachine:A",
    ...               "arn:aws:states:us-east-1:111111111111:stateMachine:A",
    ...               "arn:aws:states:us-east-1:111111111111:stateMachine:B"])  # doctest: +NORMALIZE_WHITESPACE
    ['arn:aws:states:eu-west-1:111111111111:stateMachine:A', 'arn:aws:states:us-east-1:111111111111:stateMachine:A',
     'B']
    """
    names = [_name(arn) for arn in arns]
    return [arn if names.count(name) > 1 else name for arn, name in zip(arns, names, strict=True)]


def _who(by: Any) -> str:
    """An IAM ARN's resource part (``user/alice``, ``assumed-role/deployer/ci-42``); anything else as it is.

    >>> _who("arn:aws:sts::123456789012:assumed-role/deployer/ci-42")
    'assumed-role/deployer/ci-42'
    >>> _who(None)
    '-'
    """
    text = str(by or "-")
    parts = text.split(":", 5)
    return parts[5] if text.startswith("arn:") and len(parts) == 6 else text


def _age(seconds: float) -> str:
    """A held age in two units at most.

    >>> [_age(s) for s in (0, 59.6, 61, 3600 * 5 + 61, 86400 * 2 + 3600 * 3 + 59)]
    ['0s', '59s', '1m01s', '5h01m', '2d03h']
    """
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _clip(text: str) -> str:
    return text if len(text) <= REASON_WIDTH else text[: REASON_WIDTH - 1] + "…"


def _event_line(event: Any, subject_field: str) -> str:
    if not isinstance(event, dict):
        return json.dumps(event)
    shown = ("at", "action", "actor", subject_field)
    rest = " ".join(f"{key}={json.dumps(value)}" for key, value in event.items() if key not in shown)
    return f"{event.get('at', '?')}  {event.get('action', '?')}  by {event.get('actor', '?')}  {rest}".rstrip()


def _counts(body: dict[str, Any]) -> str:
    text = (
        f"resumed {_count(body, 'resumed')}, expired {_count(body, 'expired')}, "
        f"failed {_count(body, 'failed')}, {_still_held(body)}"
    )
    if body.get("continuing"):
        text += " (the rest goes on resuming in the background)"
    return text


def _still_held(body: dict[str, Any]) -> str:
    # Past a large backlog the API stops counting (remainingCapped): the count is a floor.
    return f"{_count(body, 'remaining')}{'+' if body.get('remainingCapped') else ''} still held"


def _reason_until(body: dict[str, Any]) -> str:
    parts = [f"reason: {body['reason']}"] if body.get("reason") else []
    if body.get("until"):
        parts.append(f"until {body['until']}")
    return f" ({'; '.join(parts)})" if parts else ""


def _set_by(status: dict[str, Any]) -> str:
    return f" by {status['by']}" if status.get("by") else ""


def _oldest(status: dict[str, Any]) -> str:
    if not status.get("oldestPausedAt"):
        return ""
    age = status.get("oldestPausedAgeSeconds")
    return f", the oldest paused at {status['oldestPausedAt']}" + (
        f" ({_number(age):.0f}s ago)" if age is not None else ""
    )


def _on_off(value: Any) -> str:
    return "on" if value else "off"


def _name(arn: Any) -> str:
    """A state machine's name (with its version or alias) from its ARN, for people to read."""
    text = str(arn or "?")
    return text.split(":stateMachine:", 1)[1] if ":stateMachine:" in text else text


def _query(result: dict[str, Any]) -> dict[str, str]:
    return {"stateMachineArn": str(result["stateMachineArn"])}


# ---------------------------------------------------------------- reading answers


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Failure(f"{what} answered {json.dumps(body)[:300]}, not a JSON object")
    return body


def _count(body: dict[str, Any], key: str, *, required: bool = False) -> int:
    if required and key not in body:
        raise Failure(f"the API's answer has no {key!r}: {json.dumps(body)[:300]}")
    value = body.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Failure(f"the API's {key!r} is {value!r}, not a number")
    return int(value)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
