"""The REST API's requests, parsed and validated into typed commands.

Unknown fields are rejected by name, so a typo such as ``"enable"`` is a 400,
not a silently ignored switch. Every limit here is in the README and in
docs/openapi.json (a test keeps the two in step).
"""

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from chalicelib.arns import StateMachineArn, parse_state_machine_arn
from chalicelib.cron import Cron, CronError
from chalicelib.errors import InvalidField, MissingField
from chalicelib.events import GUARD_NAME, GUARD_NAME_EXPECTED, guard_names
from chalicelib.fields import Fields
from chalicelib.flag import parse_instant
from chalicelib.holds import MAX_SCOPE_MACHINES, MAX_SERIES

MAX_REASON = 512
MAX_MACHINES = 50
MAX_EXECUTIONS = 1000
MAX_PAGE = 1000
MAX_NEXT_TOKEN = 2048
DEFAULT_PAGE = 100
MAX_ERROR = 256  # SendTaskFailure's limits
MAX_CAUSE = 32_768
ABORT_ERROR = "SfnPauser.Aborted"

SWITCH_FIELDS = ["stateMachineArn", "stateMachineArns", "enabled", "reason", "until", "resume", "dryRun", "force"]
RESUME_FIELDS = ["stateMachineArn", "executionArns", "limit", "force"]
ABORT_FIELDS = ["stateMachineArn", "executionArns", "all", "error", "cause"]
PAGE_QUERY = ["stateMachineArn", "limit", "nextToken"]


@dataclass(frozen=True)
class SwitchMaintenance:
    machines: tuple[StateMachineArn, ...]
    enabled: bool
    reason: str | None
    until: datetime | None
    resume: bool
    dry_run: bool
    bulk: bool
    force: bool = False  # switching off: also end every hold that covers the machine

    @classmethod
    def turn(
        cls, machine: StateMachineArn, enabled: bool, *, reason: str | None = None, resume: bool = True
    ) -> "SwitchMaintenance":
        """The command for one machine, as the code (the sweep, tests) issues it."""
        return cls((machine,), enabled, reason, None, resume, dry_run=False, bulk=False)


@dataclass(frozen=True)
class ResumeHeld:
    machine: StateMachineArn
    executions: frozenset[str] | None
    limit: int | None
    force: bool


@dataclass(frozen=True)
class AbortHeld:
    machine: StateMachineArn
    executions: frozenset[str] | None
    error: str
    cause: str


@dataclass(frozen=True)
class Page:
    machine: StateMachineArn | None
    limit: int
    next_token: str | None


def json_body(raw: bytes | None, *, empty_ok: bool = False) -> object:
    """The request body as JSON, or a 400 that says what is wrong with it.

    Chalice's own ``json_body`` answers "Error Parsing JSON" without naming
    anything; callers deserve to know it is the body, and what was expected.
    With ``empty_ok``, no body at all reads as ``{}`` (a renew with the defaults).
    """
    if not raw or not raw.strip():
        if empty_ok:
            return {}
        raise MissingField("body", "a JSON object")
    try:
        return json.loads(raw)
    except ValueError as error:
        raise InvalidField("body", f"expected a JSON object, but it is not valid JSON ({error})") from None
    except RecursionError:
        # The parser recurses once per level: a body of [[[[...]]]] exhausts the stack.
        raise InvalidField("body", "expected a JSON object, but it is nested too deeply") from None


def parse_switch(body: object, now: datetime | None = None) -> SwitchMaintenance:
    fields = Fields(body)
    fields.reject_unknown(SWITCH_FIELDS)
    machines, bulk = _machines(fields)
    enabled = fields.boolean("enabled")
    until = _until(fields, now or datetime.now(UTC))
    if until is not None and not enabled:
        raise InvalidField("until", 'only applies when switching maintenance on ("enabled": true)')
    return SwitchMaintenance(
        machines=machines,
        enabled=enabled,
        reason=fields.string("reason", required=False, max_length=MAX_REASON),
        until=until,
        resume=fields.boolean("resume", default=True),
        dry_run=fields.boolean("dryRun", default=False),
        bulk=bulk,
        force=_force(fields, enabled),
    )


def _force(fields: Fields, enabled: bool) -> bool:
    force = fields.boolean("force", default=False)
    if force and enabled:
        raise InvalidField("force", 'only applies when switching maintenance off ("enabled": false)')
    return force


def parse_resume(body: object) -> ResumeHeld:
    fields = Fields(body)
    fields.reject_unknown(RESUME_FIELDS)
    return ResumeHeld(
        machine=parse_state_machine_arn(fields.string("stateMachineArn")),
        executions=_executions(fields),
        limit=fields.integer("limit", minimum=1, maximum=None),
        force=fields.boolean("force", default=False),
    )


def parse_abort(body: object) -> AbortHeld:
    fields = Fields(body)
    fields.reject_unknown(ABORT_FIELDS)
    machine = parse_state_machine_arn(fields.string("stateMachineArn"))
    executions = _executions(fields)
    abort_all = fields.boolean("all", default=False)
    if executions is None and not abort_all:
        raise MissingField("executionArns", 'a list of executions to abort, or "all": true to abort every held one')
    if executions is not None and abort_all:
        raise InvalidField("all", 'give either "executionArns" or "all": true, not both')
    error = fields.string("error", required=False, max_length=MAX_ERROR) or ABORT_ERROR
    cause = fields.string("cause", required=False, max_length=MAX_CAUSE)
    return AbortHeld(
        machine=machine,
        executions=executions,
        error=error,
        cause=cause or "aborted by an operator through sfn-pauser while held at the checkpoint",
    )


def parse_status(query: Mapping[str, str] | None) -> StateMachineArn:
    fields = Fields(dict(query or {}), what="query")
    fields.reject_unknown(["stateMachineArn"])
    return parse_state_machine_arn(fields.string("stateMachineArn"))


def parse_page(query: Mapping[str, str] | None, *, machine_required: bool) -> Page:
    """``?stateMachineArn=&limit=&nextToken=`` for the listings."""
    fields = Fields(dict(query or {}), what="query")
    fields.reject_unknown(PAGE_QUERY)
    arn = fields.string("stateMachineArn", required=machine_required)
    return Page(
        machine=parse_state_machine_arn(arn) if arn else None,
        limit=_page_size(fields, "limit"),
        next_token=_next_token(fields),
    )


def _page_size(fields: Fields, name: str) -> int:
    """A page size from the query string (text): 1 to ``MAX_PAGE``, ``DEFAULT_PAGE`` when absent."""
    limit = fields.raw(name)
    if limit is None:
        return DEFAULT_PAGE
    if not (isinstance(limit, str) and limit.isascii() and limit.isdigit() and 1 <= int(limit) <= MAX_PAGE):
        raise InvalidField(name, f"expected a whole number from 1 to {MAX_PAGE}, got {limit!r}")
    return int(limit)


def encode_next_token(position: str | None) -> str | None:
    """A listing's ``nextToken``: where the next page starts, opaque to the caller.

    The position is a key name or an ARN, and a machine's name may hold ``+ @ ( ü``
    and more, so it travels as unpadded base64url, which any query string carries.

    >>> encode_next_token("arn:aws:states:us-east-1:123456789012:stateMachine:orders+eu")
    'YXJuOmF3czpzdGF0ZXM6dXMtZWFzdC0xOjEyMzQ1Njc4OTAxMjpzdGF0ZU1hY2hpbmU6b3JkZXJzK2V1'
    """
    if position is None:
        return None
    return base64.urlsafe_b64encode(position.encode()).decode("ascii").rstrip("=")


_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
# Key names and ARNs never hold a control character; S3 refuses some in StartAfter.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _next_token(fields: Fields) -> str | None:
    """The position a ``nextToken`` stands for; a 400 for any token this API did not give out."""
    token = fields.string("nextToken", required=False, max_length=MAX_NEXT_TOKEN)
    if not token:
        return None
    try:
        position = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        position = None
    # Only the one spelling encode_next_token gives is ours (no padding, no stray bits).
    if (
        not _BASE64URL.fullmatch(token)
        or not position
        or _CONTROL.search(position)
        or encode_next_token(position) != token
    ):
        raise InvalidField("nextToken", "is not a token this API gave out; pass back nextToken as it was returned")
    return position


def _machines(fields: Fields) -> tuple[tuple[StateMachineArn, ...], bool]:
    if fields.has("stateMachineArn") and fields.has("stateMachineArns"):
        raise InvalidField("stateMachineArns", 'give either "stateMachineArn" or "stateMachineArns", not both')
    if not fields.has("stateMachineArns"):
        return (parse_state_machine_arn(fields.string("stateMachineArn")),), False
    arns = fields.string_list("stateMachineArns", max_items=MAX_MACHINES)
    machines = tuple(parse_state_machine_arn(arn, field=f"stateMachineArns[{i}]") for i, arn in enumerate(arns))
    if len({machine.unqualified for machine in machines}) != len(machines):
        raise InvalidField("stateMachineArns", "lists the same state machine twice")
    return machines, True


def _executions(fields: Fields) -> frozenset[str] | None:
    if not fields.has("executionArns"):
        return None
    return frozenset(fields.string_list("executionArns", max_items=MAX_EXECUTIONS))


def _until(fields: Fields, now: datetime) -> datetime | None:
    text = fields.string("until", required=False, max_length=64)
    if text is None:
        return None
    until = parse_instant(text)
    if until is None:
        raise InvalidField("until", f"expected an ISO 8601 time such as 2026-12-01T18:00:00Z, got {text!r}")
    if until <= now:
        raise InvalidField("until", f"{text} is in the past; expected a time after now")
    return until


# -- holds

HOLD_FIELDS = ["stateMachineArns", "guards", "reason", "ttlSeconds", "startsAt", "expiresAt", "recurrence"]
RENEW_FIELDS = ["ttlSeconds"]
HOLDS_QUERY = ["stateMachineArn", "guard", "maxResults", "nextToken"]
HOLD_AUDIT_QUERY = ["limit", "nextToken"]
RECURRENCE_FIELDS = ["schedule", "durationSeconds"]
_HOLD_ID = re.compile(r"hold-[0-9a-f]{16}")
_PATTERN_CHARACTERS = re.compile(r"[*?]")
_EXAMPLE_PATTERN = "arn:aws:states:*:*:stateMachine:orders-*"


@dataclass(frozen=True)
class HoldLimits:
    """``HoldDefaultTtlSeconds`` and ``HoldMaxTtlSeconds``."""

    default_ttl: int
    max_ttl: int


@dataclass(frozen=True)
class NewHold:
    machines: tuple[str, ...]  # unqualified ARNs and ARN patterns
    guards: tuple[str, ...]
    reason: str | None
    expires_at: datetime
    starts_at: datetime | None
    recurrence: tuple[str, int] | None  # the schedule as given, and the window's seconds


@dataclass(frozen=True)
class HoldsQuery:
    machine: StateMachineArn | None
    guard: str | None
    limit: int
    next_token: str | None


def parse_new_hold(body: object, limits: HoldLimits, now: datetime | None = None) -> NewHold:
    """``POST /holds``: a scope (machines and/or guards), and an end no later than the limits allow.

    A hold always ends: ``ttlSeconds`` (or the default) from now, or an
    ``expiresAt``. A scheduled one opens at ``startsAt``; a recurring one opens
    at each fire time of ``recurrence.schedule`` for ``durationSeconds``, until
    ``expiresAt`` (the end of the series, at most a year away).
    """
    now = now or datetime.now(UTC)
    fields = Fields(body)
    fields.reject_unknown(HOLD_FIELDS)

    def given(name: str) -> bool:  # a null field is one left out, as the optional fields' parsers read it
        return fields.raw(name) is not None

    machines = _scope_machines(fields, MAX_SCOPE_MACHINES)
    guards = guard_names(fields, "guards") if given("guards") else ()
    if not machines and not guards:
        raise MissingField("stateMachineArns", 'a scope: "stateMachineArns", "guards", or both')
    reason = fields.string("reason", required=False, max_length=MAX_REASON)
    starts_at = _instant(fields, "startsAt")
    if starts_at is not None and starts_at <= now - timedelta(minutes=1):
        raise InvalidField("startsAt", "is in the past; expected a time after now (leave it out to start now)")
    recurrence = None
    if given("recurrence"):
        window = Fields(fields.raw("recurrence"), what="recurrence")
        window.reject_unknown(RECURRENCE_FIELDS)
        text = window.string("schedule", max_length=256)
        assert text is not None
        try:
            schedule = Cron.parse(text)
        except CronError as error:
            raise InvalidField("recurrence.schedule", str(error)) from None
        seconds = window.integer("durationSeconds", minimum=60, maximum=limits.max_ttl)
        if seconds is None:
            raise MissingField("recurrence.durationSeconds", f"the window's length, 60 to {limits.max_ttl} seconds")
        recurrence = (schedule.expression, seconds)
    if given("ttlSeconds") and given("expiresAt"):
        raise InvalidField("expiresAt", 'give either "ttlSeconds" or "expiresAt", not both')
    expires_at = _instant(fields, "expiresAt")
    ttl = fields.integer("ttlSeconds", minimum=1, maximum=limits.max_ttl)
    begins = starts_at or now
    if recurrence is not None:
        if ttl is not None:
            raise InvalidField("ttlSeconds", 'a recurring hold ends at "expiresAt" (the end of its series), not a TTL')
        expires_at = expires_at or now + MAX_SERIES
        if expires_at > now + MAX_SERIES:
            raise InvalidField("expiresAt", f"a series may last at most {MAX_SERIES.days} days; renew it to go on")
    elif expires_at is None:
        expires_at = begins + timedelta(seconds=ttl or limits.default_ttl)
    elif expires_at - begins > timedelta(seconds=limits.max_ttl):
        raise InvalidField(
            "expiresAt", f"a hold may last at most {limits.max_ttl} seconds (HoldMaxTtlSeconds) from its start"
        )
    if expires_at <= begins:
        raise InvalidField("expiresAt", "is not after the hold's start; expected a later time")
    return NewHold(machines, guards, reason, expires_at, starts_at, recurrence)


def parse_renew(body: object, limits: HoldLimits) -> int:
    """``POST /holds/{holdId}/renew``: the new TTL from now, in seconds."""
    fields = Fields({} if body is None else body)
    fields.reject_unknown(RENEW_FIELDS)
    return fields.integer("ttlSeconds", minimum=1, maximum=limits.max_ttl) or limits.default_ttl


def parse_hold_id(text: str) -> str:
    if not _HOLD_ID.fullmatch(text or ""):
        raise InvalidField("holdId", f"expected a hold id such as hold-0123456789abcdef, got {text!r}")
    return text


def parse_holds_query(query: Mapping[str, str] | None) -> HoldsQuery:
    fields = Fields(dict(query or {}), what="query")
    fields.reject_unknown(HOLDS_QUERY)
    arn = fields.string("stateMachineArn", required=False)
    guard = fields.string("guard", required=False, max_length=64)
    if guard is not None and not GUARD_NAME.fullmatch(guard):
        raise InvalidField("guard", f"expected {GUARD_NAME_EXPECTED}, got {guard!r}")
    machine = parse_state_machine_arn(arn) if arn else None
    return HoldsQuery(machine, guard, _page_size(fields, "maxResults"), _next_token(fields))


def parse_hold_audit_page(query: Mapping[str, str] | None) -> Page:
    """``GET /holds/{holdId}/audit?limit=&nextToken=``: paged as ``GET /audit`` is; the hold is in the path."""
    fields = Fields(dict(query or {}), what="query")
    fields.reject_unknown(HOLD_AUDIT_QUERY)
    return Page(machine=None, limit=_page_size(fields, "limit"), next_token=_next_token(fields))


def _scope_machines(fields: Fields, most: int) -> tuple[str, ...]:
    if fields.raw("stateMachineArns") is None:
        return ()
    arns = fields.string_list("stateMachineArns", max_items=most)
    machines = []
    for index, arn in enumerate(arns):
        name = f"stateMachineArns[{index}]"
        if _PATTERN_CHARACTERS.search(arn):
            if not arn.startswith("arn:") or len(arn) > 2048:
                raise InvalidField(name, f"expected an ARN, or an ARN pattern such as {_EXAMPLE_PATTERN}, got {arn!r}")
            machines.append(arn)
        else:
            machines.append(parse_state_machine_arn(arn, field=name).unqualified)
    return tuple(dict.fromkeys(machines))


def _instant(fields: Fields, name: str) -> datetime | None:
    text = fields.string(name, required=False, max_length=64)
    if text is None:
        return None
    moment = parse_instant(text)
    if moment is None:
        raise InvalidField(name, f"expected an ISO 8601 time such as 2026-12-01T18:00:00Z, got {text!r}")
    return moment
