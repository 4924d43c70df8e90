"""Maintenance control for operators and CI: switch it, see it, resume or abort what is held.

Every state-changing call is checked against the allow-list, the machine's
existence and type, and recorded in the audit trail with who did it and why.
"""

import contextlib
import fnmatch
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.arns import StateMachineArn, known_regions, parse_state_machine_arn
from chalicelib.audit import AuditTrail
from chalicelib.clients import AwsClients
from chalicelib.commands import AbortHeld, Page, ResumeHeld, SwitchMaintenance, encode_next_token
from chalicelib.continuation import Drainer
from chalicelib.deadline import Deadline
from chalicelib.errors import (
    InvalidArn,
    MaintenanceIsOn,
    NotStandardWorkflow,
    StateMachineNotAllowed,
    SwitchContended,
    about_state_machine,
    aws_errors_as_http,
)
from chalicelib.faults import AWS_ERRORS
from chalicelib.flag import (
    ALL_TAGS,
    TAG,
    TAG_BY,
    TAG_REASON,
    TAG_SINCE,
    TAG_UNTIL,
    MaintenanceFlag,
    MaintenanceState,
    Mirror,
)
from chalicelib.fleet import Fleet, MachineError, known_machines
from chalicelib.resumer import Abort, Resumer
from chalicelib.store import TokenStore, iso_timestamp

# Tag values allow letters, numbers, spaces and _ . : / = + - @, up to 256 characters.
_TAG_UNSAFE = re.compile(r"[^\w\s.:/=+\-@]", re.UNICODE)
_TAG_MAX = 256
# Conditional writes lost to other switches of the same machine before giving up (409).
MAX_SWITCH_ATTEMPTS = 5


def tag_value(text: str) -> str | None:
    """Fit free text (a reason, an IAM ARN) into what a tag value may hold.

    None when nothing of it fits: an empty value is never written as a tag, so it
    reads back as None, and a state holding ``""`` would never equal the one read.

    >>> tag_value("deploy #42, db migration")
    'deploy 42 db migration'
    >>> tag_value("#!&$") is None
    True
    """
    return " ".join(_TAG_UNSAFE.sub("", text).split())[:_TAG_MAX] or None


class MaintenanceControl:
    def __init__(
        self,
        flag: MaintenanceFlag,
        store: TokenStore,
        drainer: Drainer,
        resumer: Resumer,
        audit: AuditTrail,
        clients: AwsClients,
        cache_seconds: float,
        allowed: tuple[str, ...] = ("*",),
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        fleet: Fleet,
    ) -> None:
        self._flag = flag
        self._store = store
        self._drainer = drainer
        self._resumer = resumer
        self._audit = audit
        self._clients = clients
        self._cache_seconds = cache_seconds
        self._allowed = allowed
        self._now = now
        self._fleet = fleet

    @property
    def flag(self) -> MaintenanceFlag:
        return self._flag

    @property
    def cache_seconds(self) -> float:
        """How long a warm task handler may act on a flag or holds it read (MaintenanceCacheSeconds)."""
        return self._cache_seconds

    # -- switching

    @aws_errors_as_http
    def switch_all(self, command: SwitchMaintenance, actor: str, deadline: Deadline) -> dict[str, Any]:
        """The ``POST /maintenance`` command: one machine, or a result for each of many.

        In a bulk switch each machine answers for itself, AWS's failures included
        (a throttled TagResource is that machine's 503), and the others are switched.
        """
        if not command.bulk:
            return self.switch(command.machines[0], command, actor, deadline)
        switched = self._fleet.each(
            "switch", command.machines, lambda machine: self.switch(machine, command, actor, deadline)
        )
        return {
            "results": [outcome.as_entry() if isinstance(outcome, MachineError) else outcome for _, outcome in switched]
        }

    def switch(
        self, machine: StateMachineArn, command: SwitchMaintenance, actor: str, deadline: Deadline
    ) -> dict[str, Any]:
        """Turn maintenance on or off; off resumes the held executions unless told not to.

        Linearisable: the switch takes effect at a conditional write of the S3
        mirror (see chalicelib/flag.py), and its answer, its audit record and its
        ``changed`` are those of that moment. The tags, which the console and the
        AWS CLI show, then follow the mirror. Switching off, the mirror is written
        before the folder is listed, so a task handler that re-checks after saving
        a token sees the lift or is resumed by it.
        """
        self.check(machine)
        tags = self._flag.read(machine)
        for _ in range(MAX_SWITCH_ATTEMPTS):
            base = self._flag.mirror(machine)
            before = base.state if base is not None and self._flag.in_flight(base) else tags
            after = self._target(before, command, actor)
            changed = after != before if command.enabled else before.on
            result: dict[str, Any] = {"stateMachineArn": machine.unqualified, "maintenance": command.enabled}
            if command.dry_run:
                held = self._store.count_held(machine)
                return {
                    **result,
                    "changed": changed,
                    "dryRun": True,
                    "paused": held.count,
                    "pausedCapped": held.capped,
                    **_shown(after),
                }
            published = self._flag.publish(machine, after, base)
            if published is not None:
                break
        else:
            raise SwitchContended(
                f"stateMachineArn: other switches of {machine.unqualified} kept taking effect first; "
                "nothing was changed by this call, retry it"
            )
        try:
            if after != tags:
                self._write_tags(machine, after)
            self._follow_mirror(machine, published)
        except Exception:
            # The tags could not follow: undo this switch where no other has come
            # since, so that the answer (an error) and the state agree. Where one
            # has, it is counted out after the grace, and the tags win.
            with contextlib.suppress(*AWS_ERRORS):
                self._flag.settle(published, machine, state=before)
            raise
        if command.enabled:
            result.update(changed=changed, effectiveWithinSeconds=self._cache_seconds, **_shown(after))
        else:
            result["changed"] = changed
            if command.resume:
                result.update(self._drainer.drain(machine, deadline).as_dict())
        self._audit.record(
            machine,
            "maintenance-on" if command.enabled else "maintenance-off",
            actor,
            at=published.switched_at,
            reason=command.reason,
            until=iso_timestamp(command.until) if command.until else None,
            changed=changed,
            result={key: value for key, value in result.items() if key in ("resumed", "expired", "remaining")} or None,
        )
        return result

    def _follow_mirror(self, machine: StateMachineArn, ours: Mirror) -> None:
        """Make the tags say what the mirror says, then count this switch out.

        A later switch may have taken effect while our tag write was on its way,
        and our write may have landed after its own: then the tags say ours. So
        re-read the mirror and write the tags again for every switch that came
        since, until this call can count itself out of a mirror nobody changed.
        """
        tags_for = ours.switched_at
        for _ in range(MAX_SWITCH_ATTEMPTS * 2):
            latest = self._flag.mirror(machine)
            if latest is None:
                return
            if latest.switched_at != tags_for:
                self._write_tags(machine, latest.state)
                tags_for = latest.switched_at
                continue
            if self._flag.settle(latest, machine):
                return

    def _target(self, before: MaintenanceState, command: SwitchMaintenance, actor: str) -> MaintenanceState:
        if not command.enabled:
            return MaintenanceState(on=False)
        # A maintenance whose `until` has passed is over, even before the sweep untags it.
        keep = before.effective(self._now())
        return MaintenanceState(
            on=True,
            since=before.since if keep else iso_timestamp(self._now()),
            by=before.by if keep else tag_value(actor),
            reason=tag_value(command.reason) if command.reason else (before.reason if keep else None),
            until=iso_timestamp(command.until) if command.until else (before.until if keep else None),
        )

    def _write_tags(self, machine: StateMachineArn, state: MaintenanceState) -> None:
        """Write the whole state to the tags (idempotent): on, with who, why, since and until; or off."""
        sfn = self._clients.sfn(machine.region)
        try:
            if not state.on:
                sfn.untag_resource(resourceArn=machine.unqualified, tagKeys=list(ALL_TAGS))
                return
            tags = {
                TAG: "true",
                TAG_SINCE: state.since,
                TAG_BY: state.by,
                TAG_REASON: state.reason,
                TAG_UNTIL: state.until,
            }
            sfn.tag_resource(
                resourceArn=machine.unqualified,
                tags=[{"key": key, "value": value} for key, value in tags.items() if value],
            )
            stale = [key for key, value in tags.items() if not value]
            if stale:
                sfn.untag_resource(resourceArn=machine.unqualified, tagKeys=stale)
        except ClientError as error:
            raise about_state_machine(error, machine.unqualified) from None

    # -- seeing

    @aws_errors_as_http
    def status(self, machine: StateMachineArn) -> dict[str, Any]:
        """The flag, and what is held counted up to a cap (``pausedCapped``: at least ``paused``),
        so the answer comes in bounded time whatever the backlog."""
        self.check(machine)
        state = self._flag.current(machine)
        held = self._store.count_held(machine)
        quarantined = self._store.count_quarantined(machine)
        return {
            "stateMachineArn": machine.unqualified,
            "maintenance": state.effective(self._now()),
            **_shown(state),
            "paused": held.count,
            "pausedCapped": held.capped,
            "oldestPausedAt": iso_timestamp(held.oldest) if held.oldest else None,
            "oldestPausedAgeSeconds": self._age(held.oldest),
            "quarantined": quarantined.count,
            "quarantinedCapped": quarantined.capped,
        }

    @aws_errors_as_http
    def overview(
        self,
        page: Page,
        named: Iterable[StateMachineArn] = (),
        held: Callable[[StateMachineArn], bool] = lambda machine: False,
    ) -> dict[str, Any]:
        """Every machine that holds tokens or is in maintenance (as mirrored, or ``held``
        by something besides the tag; ``named`` are machines to look at besides those
        known from the bucket), by ARN, with who switched it on and why (from the reads
        that decide `maintenance`: no extra call).

        A machine that cannot be read (deleted, denied, throttled) is listed with
        its own error; the others are listed as usual.
        """
        machines = sorted({*known_machines(self._flag, self._store).machines, *named}, key=str)
        machines = [m for m in machines if self.allows(m) and (not page.next_token or str(m) > page.next_token)]
        listed: list[dict[str, Any]] = []

        def entry_of(machine: StateMachineArn) -> dict[str, Any] | None:
            return self._overview_entry(machine, listed_anyway=held(machine))

        for position, (_, entry) in enumerate(self._fleet.each("overview", machines, entry_of)):
            if isinstance(entry, MachineError):
                listed.append(entry.as_entry())
            elif entry is not None:
                listed.append(entry)
            if len(listed) == page.limit and position + 1 < len(machines):
                return {"stateMachines": listed, "nextToken": encode_next_token(listed[-1]["stateMachineArn"])}
        return {"stateMachines": listed, "nextToken": None}

    def _overview_entry(self, machine: StateMachineArn, *, listed_anyway: bool = False) -> dict[str, Any] | None:
        # One page per machine: a page of the overview may name 1,000 machines.
        held = self._store.count_held(machine, pages=1)
        state = self._flag.state_now(machine)
        on = state.effective(self._now())
        if not on and not held.count and not held.capped and not listed_anyway:
            return None
        return {
            "stateMachineArn": machine.unqualified,
            "maintenance": on,
            **_shown(state),
            "paused": held.count,
            "pausedCapped": held.capped,
            "oldestPausedAt": iso_timestamp(held.oldest) if held.oldest else None,
            "oldestPausedAgeSeconds": self._age(held.oldest),
        }

    @aws_errors_as_http
    def paused(self, machine: StateMachineArn, page: Page) -> dict[str, Any]:
        """The held executions, oldest first; never their tokens."""
        self.check(machine)
        items, next_token = self._store.held_page(machine, page.limit, page.next_token)
        held = []
        for item in items:
            task = self._store.load_quietly(item.key)
            if task and task.state_machine_arn and not _same_machine(task.state_machine_arn, machine):
                continue  # a namesake in another region or account shares the folder
            held.append(
                {
                    "executionArn": task.execution_arn if task else None,
                    "pausedAt": iso_timestamp(item.paused_at),
                    "ageSeconds": self._age(item.paused_at),
                    "key": item.key,
                }
            )
        return {"stateMachineArn": machine.unqualified, "paused": held, "nextToken": encode_next_token(next_token)}

    @aws_errors_as_http
    def audit(self, machine: StateMachineArn, page: Page) -> dict[str, Any]:
        self.check(machine)
        events, next_token = self._audit.page(machine, page.limit, page.next_token)
        return {"stateMachineArn": machine.unqualified, "events": events, "nextToken": encode_next_token(next_token)}

    # -- acting on what is held

    @aws_errors_as_http
    def resume(self, command: ResumeHeld, actor: str, deadline: Deadline) -> dict[str, Any]:
        """Resume what is held, oldest first; refuses while maintenance is on unless forced."""
        machine = command.machine
        self.check(machine)
        if self._flag.current(machine).effective(self._now()) and not command.force:
            raise MaintenanceIsOn(
                f"stateMachineArn: maintenance is on for {machine.unqualified}; "
                'switch it off first, or send "force": true to resume anyway'
            )
        executions = command.executions
        report = self._drainer.drain(
            machine,
            deadline,
            forced=command.force,
            # The whole backlog drains under the leases (and fans out); a selection
            # or a limit claims what it takes, beside any drain that is running.
            exclusive=executions is None and command.limit is None,
            limit=command.limit,
            selected=(lambda task: task.execution_arn in executions) if executions is not None else None,
        )
        result = {"stateMachineArn": machine.unqualified, **report.as_dict()}
        self._audit.record(
            machine,
            "resume",
            actor,
            force=command.force or None,
            executions=len(executions) if executions is not None else None,
            limit=command.limit,
            result=report.as_dict(),
        )
        return result

    @aws_errors_as_http
    def abort(self, command: AbortHeld, actor: str, deadline: Deadline) -> dict[str, Any]:
        """Fail held executions with SendTaskFailure, for operators who will not continue them."""
        machine = command.machine
        self.check(machine)
        executions = command.executions
        report = self._resumer.resume(
            machine,
            deadline,
            selected=(lambda task: task.execution_arn in executions) if executions is not None else None,
            abort=Abort(command.error, command.cause),
        )
        result = {
            "stateMachineArn": machine.unqualified,
            "aborted": report.resumed,
            "expired": report.expired,
            "failed": report.failed,
            "remaining": report.remaining,
        }
        self._audit.record(
            machine,
            "abort",
            actor,
            error=command.error,
            cause=command.cause,
            executions=len(executions) if executions is not None else "all",
            result=result,
        )
        return result

    # -- checks

    def accepts(self, machine: StateMachineArn, *, bulk: bool) -> bool:
        """Whether a switch of ``machine`` gets past :meth:`check`.

        Alone, its error is the request's; in bulk, the machine's own result says
        it (``switch_all`` meets the same error), so here it is only False.
        """
        if not bulk:
            self.check(machine)
            return True
        try:
            self.check(machine)
        except Exception:  # any error is the machine's own, and switch_all answers it
            return False
        return True

    def check(self, machine: StateMachineArn) -> None:
        """403 outside the allow-list, 400 for an unknown region or an Express machine, 404 if absent."""
        if not self.allows(machine):
            raise StateMachineNotAllowed(
                f"stateMachineArn: {machine.unqualified} is not in this sfn-pauser's AllowedStateMachines "
                f"({', '.join(self._allowed)})"
            )
        # The parser knows the region's shape; this is botocore's list of those that exist,
        # so a typo such as us-east-7 is a 400 instead of a connection error.
        if machine.region not in known_regions(machine.partition):
            raise InvalidArn(
                "stateMachineArn",
                f"{machine.region} is not a region of partition {machine.partition} that this sfn-pauser knows",
            )
        sfn = self._clients.sfn(machine.region)
        try:
            described = sfn.describe_state_machine(stateMachineArn=machine.unqualified)
        except ClientError as error:
            raise about_state_machine(error, machine.unqualified) from None
        if described.get("type") == "EXPRESS":
            raise NotStandardWorkflow(
                "stateMachineArn",
                f"{machine.name} is an EXPRESS workflow; only STANDARD workflows can wait "
                "for a task token, so only they can be paused",
            )

    def allows(self, machine: StateMachineArn) -> bool:
        """Whether the machine is within this sfn-pauser's AllowedStateMachines."""
        return any(fnmatch.fnmatchcase(machine.unqualified, pattern) for pattern in self._allowed)

    def _age(self, moment: datetime | None) -> float | None:
        return round((self._now() - moment).total_seconds(), 3) if moment else None


def _same_machine(arn: str, machine: StateMachineArn) -> bool:
    try:
        return parse_state_machine_arn(arn).unqualified == machine.unqualified
    except InvalidArn:
        return True


def _shown(state: MaintenanceState) -> dict[str, Any]:
    return {"since": state.since, "by": state.by, "reason": state.reason, "until": state.until}
