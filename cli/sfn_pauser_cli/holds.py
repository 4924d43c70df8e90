"""Holds: take one, renew it, release it, list them, read one's history, and how each is printed.

A hold keeps executions at the checkpoint for its scope (state machine ARNs or
ARN patterns, and guards) until it is released or expires. Unlike the
``Maintenance`` tag, which is one flag per state machine, holds add up: a
machine is held while any hold (or the tag) covers it, so releasing one hold
never lifts another's. ``sfn-pauser run`` (runner.py) takes one around a
command.
"""

import json
from typing import Any

from sfn_pauser_cli.api import Api, ApiError, route
from sfn_pauser_cli.commands import (
    Failure,
    Output,
    _age,
    _clip,
    _object,
    _short_names,
    _who,
    audit_lines,
    every_page,
)

# How heldBy names the Maintenance tag (``sfn-pauser on``) among hold IDs.
TAG_HOLDER = "tag"
# The table's scope column is cut after this many characters (--json has it whole).
SCOPE_WIDTH = 100


def take(api: Api, output: Output, body: dict[str, Any]) -> dict[str, Any]:
    """POST /holds. Not retried: a request that timed out may have made a hold,
    and a second one would be another hold (the first would last until its TTL)."""
    hold = checked_hold(api.post("/holds", body), "POST /holds")
    for line in summary(hold):
        output.progress(line)
    return hold


def hold(api: Api, output: Output, body: dict[str, Any]) -> None:
    """``sfn-pauser hold``: the hold's ID alone on stdout (``--json``: its body), what it covers on stderr."""
    taken = take(api, output, body)
    output.result(taken, [taken["holdId"]])


def renew(api: Api, output: Output, hold_id: str, ttl: int | None) -> None:
    body = {"ttlSeconds": ttl} if ttl is not None else {}
    try:
        renewed = renew_request(api, hold_id, body)
    except ApiError as error:
        if error.status == 404:
            output.progress(
                f"{hold_id}: a hold that has ended (expired or released) cannot be renewed; "
                "take a new one with `sfn-pauser hold`"
            )
        raise
    output.result(renewed, [f"{hold_id}: renewed, expires at {renewed.get('expiresAt') or '?'}"])


def renew_request(api: Api, hold_id: str, body: dict[str, Any], deadline: float | None = None) -> dict[str, Any]:
    # Setting a new expiry is safe to repeat, so a throttled or dropped request is tried again.
    answer = api.post(route("holds", hold_id, "renew"), body, retry=True, deadline=deadline)
    return checked_hold(answer, "POST /holds/{holdId}/renew")


def release(api: Api, output: Output, hold_id: str) -> None:
    """``sfn-pauser release``: what was resumed, and what is still held and by what."""
    released = release_request(api, hold_id)
    output.result(released, release_lines(hold_id, released))


def release_request(api: Api, hold_id: str, deadline: float | None = None) -> dict[str, Any]:
    # DELETE /holds/{holdId} is idempotent: a second one answers released: false.
    return _object(api.delete(route("holds", hold_id), deadline=deadline), "DELETE /holds/{holdId}")


def listing(api: Api, output: Output, query: dict[str, str]) -> None:
    """GET /holds, every page: a table (``--json``: every page's holds as one body)."""
    found = every_page(api, "/holds", query, "holds")
    output.result({"holds": found, "nextToken": None}, table(found))


def audit(api: Api, output: Output, hold_id: str, query: dict[str, str]) -> None:
    """``sfn-pauser audit --hold``: who took, renewed, released or ended the hold, newest first.

    It answers for a hold that has ended too; 404 only for an id with no history at all.
    """
    body = _object(api.get(route("holds", hold_id, "audit"), query), "GET /holds/{holdId}/audit")
    events = body.get("events") if isinstance(body.get("events"), list) else []
    output.result(body, audit_lines({**body, "events": [taken_briefly(event) for event in events]}, hold_id, "holdId"))


# ---------------------------------------------------------------- wording


def taken_briefly(event: Any) -> Any:
    """A ``hold`` event with the hold it took cut to one line's fields (``--json`` has it whole).

    >>> taken_briefly({"action": "hold", "hold": {"holdId": "hold-1", "scope": {"guards": ["db"]},
    ...     "reason": None, "expiresAt": "2026-01-01T10:30:00.000Z"}})
    {'action': 'hold', 'scope': 'guards db', 'expiresAt': '2026-01-01T10:30:00.000Z'}
    """
    if not isinstance(event, dict) or not isinstance(event.get("hold"), dict):
        return event
    taken = event["hold"]
    brief = {key: taken[key] for key in ("reason", "startsAt", "expiresAt", "recurrence") if taken.get(key)}
    return {**{key: value for key, value in event.items() if key != "hold"}, "scope": scope(taken), **brief}


def summary(hold: dict[str, Any]) -> list[str]:
    """What a hold covers, from when until when, and which machines it holds now (for stderr)."""
    hold_id = hold["holdId"]
    reason = f" (reason: {hold['reason']})" if hold.get("reason") else ""
    lines = [f"{hold_id}: holds {scope(hold)}{reason}"]
    recurrence = hold.get("recurrence") if isinstance(hold.get("recurrence"), dict) else None
    if hold.get("active"):
        when = "active now"
    elif hold.get("startsAt"):
        when = f"not active yet: starts at {hold['startsAt']}"
    else:
        when = "not active now"
    when += f"; expires at {hold.get('expiresAt') or '?'}"
    if recurrence:
        when += f"; recurs on {recurrence.get('schedule', '?')} for {_span(recurrence.get('durationSeconds'))}"
    if hold.get("nextOpening"):
        when += f"; next opening {hold['nextOpening']}"
    lines.append(f"{hold_id}: {when}")
    affected = [str(arn) for arn in hold.get("affected") or []]
    if affected:
        count = f"{len(affected)} state machine{'s' if len(affected) != 1 else ''}"
        lines.append(f"{hold_id}: covers {count} now: {', '.join(labels(affected))}")
    elif hold.get("active"):
        lines.append(
            f"{hold_id}: warning: it covers no state machine now: no machine matches its ARNs or has its guards"
        )
    return lines


def scope(hold: dict[str, Any]) -> str:
    """``guards db, payments; Orders, arn:aws:states:*:…:stateMachine:Pay*``

    >>> scope({"scope": {"guards": ["db"], "stateMachineArns": ["arn:aws:states:eu-west-1:1:stateMachine:A"]}})
    'guards db; A'
    >>> scope({"scope": {"stateMachineArns": ["arn:aws:states:*:111111111111:stateMachine:P*"]}})
    'arn:aws:states:*:111111111111:stateMachine:P*'
    """
    covered = hold.get("scope") if isinstance(hold.get("scope"), dict) else {}
    guards = [str(guard) for guard in covered.get("guards") or []]
    machines = [str(arn) for arn in covered.get("stateMachineArns") or []]
    parts = [f"guards {', '.join(guards)}"] if guards else []
    if machines:
        parts.append(", ".join(labels(machines)))
    return "; ".join(parts) or "nothing"


def labels(arns: list[str]) -> list[str]:
    """Machines by name, but a pattern whose region or account is a wildcard, and namesakes, whole."""
    short = _short_names(arns)
    return [arn if any(mark in arn.split(":stateMachine:")[0] for mark in "*?") else name
            for arn, name in zip(arns, short, strict=True)]  # fmt: skip


def release_lines(hold_id: str, body: dict[str, Any]) -> list[str]:
    """``hold-1: released``, then per machine what was resumed and what still holds it.

    >>> release_lines("hold-1", {"released": True, "resumed": {"arn:aws:states:eu-west-1:1:stateMachine:A": 3},
    ...     "stillHeld": [{"stateMachineArn": "arn:aws:states:eu-west-1:1:stateMachine:B",
    ...                    "heldBy": ["hold-2", "tag"]}]})  # doctest: +NORMALIZE_WHITESPACE
    ['hold-1: released', 'A: resumed 3',
     'B: still held by hold-2 and the Maintenance tag (sfn-pauser on)']
    """
    if body.get("released"):
        lines = [f"{hold_id}: released"]
    else:
        lines = [f"{hold_id}: had already ended (expired or released); nothing to release"]
    resumed = body.get("resumed") if isinstance(body.get("resumed"), dict) else {}
    still = [entry for entry in body.get("stillHeld") or [] if isinstance(entry, dict)]
    arns = list(dict.fromkeys([*map(str, resumed), *(str(entry.get("stateMachineArn")) for entry in still)]))
    names = dict(zip(arns, labels(arns), strict=True))
    for arn, count in resumed.items():
        lines.append(f"{names[str(arn)]}: resumed {count}")
    for entry in still:
        holders = [
            "the Maintenance tag (sfn-pauser on)" if holder == TAG_HOLDER else str(holder)
            for holder in entry.get("heldBy") or []
        ]
        by = " and ".join([", ".join(holders[:-1]), holders[-1]] if len(holders) > 1 else holders) or "?"
        lines.append(f"{names[str(entry.get('stateMachineArn'))]}: still held by {by}")
    return lines


def table(holds: list[dict[str, Any]]) -> list[str]:
    if not holds:
        return ["no holds"]
    rows = [["HOLD", "ACTIVE", "SCOPE", "BY", "EXPIRES", "NEXT OPENING", "REASON"]]
    for item in holds:
        rows.append([
            str(item.get("holdId") or "?"),
            "yes" if item.get("active") else "no",
            _cut(scope(item), SCOPE_WIDTH),
            _who(item.get("by")),
            str(item.get("expiresAt") or "-"),
            str(item.get("nextOpening") or "-"),
            _clip(str(item.get("reason") or "")),
        ])  # fmt: skip
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip()
            for row in rows]  # fmt: skip


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _span(seconds: Any) -> str:
    """
    >>> _span(7200), _span(90), _span(None)
    ('2h00m', '1m30s', '?')
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return "?"
    return _age(seconds)


# ---------------------------------------------------------------- reading answers


def checked_hold(body: Any, what: str) -> dict[str, Any]:
    hold = _object(body, what)
    if not isinstance(hold.get("holdId"), str) or not hold["holdId"]:
        raise Failure(f"{what} answered without a holdId: {json.dumps(body)[:300]}")
    return hold
