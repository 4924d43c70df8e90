"""Maintenance control for operators and CI: switch it, see it, resume what is held."""

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib.arns import StateMachineArn
from chalicelib.clients import AwsClients
from chalicelib.continuation import Drainer
from chalicelib.deadline import Deadline
from chalicelib.errors import InvalidArn, MaintenanceIsOn, NotStandardWorkflow, about_state_machine
from chalicelib.flag import ALL_TAGS, TAG, TAG_BY, TAG_REASON, TAG_SINCE, TAG_UNTIL, MaintenanceFlag, MaintenanceState
from chalicelib.store import HeldTask, TokenStore, iso_timestamp

# Tag values allow letters, numbers, spaces and _ . : / = + - @, up to 256 characters.
_TAG_UNSAFE = re.compile(r"[^\w\s.:/=+\-@]", re.UNICODE)
_TAG_MAX = 256


@functools.cache
def known_regions(partition: str) -> frozenset[str]:
    """Step Functions regions in botocore's bundled endpoint data (no AWS call).

    A typo such as ``us-east-7`` is a 400 instead of a connection error; a region
    newer than the deployed botocore needs a boto3 upgrade.
    """
    return frozenset(boto3.session.Session().get_available_regions("stepfunctions", partition_name=partition))


def tag_value(text: str) -> str:
    """Fit free text (a reason, an IAM ARN) into what a tag value may hold.

    >>> tag_value("deploy #42, db migration")
    'deploy 42 db migration'
    """
    return " ".join(_TAG_UNSAFE.sub("", text).split())[:_TAG_MAX]


class MaintenanceControl:
    def __init__(
        self,
        flag: MaintenanceFlag,
        store: TokenStore,
        drainer: Drainer,
        clients: AwsClients,
        cache_seconds: float,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._flag = flag
        self._store = store
        self._drainer = drainer
        self._clients = clients
        self._cache_seconds = cache_seconds
        self._now = now

    def switch(
        self,
        machine: StateMachineArn,
        enabled: bool,
        *,
        actor: str,
        reason: str | None,
        resume: bool,
        deadline: Deadline,
        until: datetime | None = None,
    ) -> dict[str, Any]:
        """Turn maintenance on or off. Off resumes the held executions unless told not to.

        The tags are the source of truth (the console shows them); the S3 mirror
        is written first when switching off, so a task handler that re-checks
        after saving a token sees the lift before the resume lists the folder.
        """
        self.require_standard(machine)
        before = self._flag.read(machine)
        sfn = self._clients.sfn(machine.region)
        if enabled:
            state = MaintenanceState(
                on=True,
                since=before.since if before.on else iso_timestamp(self._now()),
                by=before.by if before.on else tag_value(actor),
                reason=tag_value(reason) if reason else (before.reason if before.on else None),
                until=iso_timestamp(until) if until else (before.until if before.on else None),
            )
            changed = state != before
            if changed:
                tags = {TAG: "true", TAG_SINCE: state.since, TAG_BY: state.by, TAG_REASON: state.reason}
                tags[TAG_UNTIL] = state.until
                sfn.tag_resource(
                    resourceArn=machine.unqualified,
                    tags=[{"key": key, "value": value} for key, value in tags.items() if value],
                )
                stale = [key for key, value in tags.items() if not value]
                if stale:
                    sfn.untag_resource(resourceArn=machine.unqualified, tagKeys=stale)
            self._flag.record(machine, state, source="api")
        else:
            changed = before.on
            self._flag.record(machine, MaintenanceState(on=False), source="api")
            sfn.untag_resource(resourceArn=machine.unqualified, tagKeys=list(ALL_TAGS))
        result: dict[str, Any] = {
            "stateMachineArn": machine.unqualified,
            "maintenance": enabled,
            "changed": changed,
        }
        if enabled:
            # Warm task handler containers may act on their cached flag this long.
            result["effectiveWithinSeconds"] = self._cache_seconds
        elif resume:
            result.update(self._drainer.drain(machine, deadline, exclusive=False).as_dict())
        return result

    def status(self, machine: StateMachineArn) -> dict[str, Any]:
        self.require_standard(machine)
        state = self._flag.read(machine)
        held = list(self._store.held(machine.name))
        oldest = min((item.paused_at for item in held), default=None)
        quarantined = sum(1 for _ in self._store.quarantined(machine.name))
        return {
            "stateMachineArn": machine.unqualified,
            "maintenance": state.effective(self._now()),
            "since": state.since,
            "by": state.by,
            "reason": state.reason,
            "until": state.until,
            "paused": len(held),
            "oldestPausedAt": iso_timestamp(oldest) if oldest else None,
            "oldestPausedAgeSeconds": round((self._now() - oldest).total_seconds(), 3) if oldest else None,
            "quarantined": quarantined,
        }

    def resume(
        self,
        machine: StateMachineArn,
        *,
        force: bool,
        deadline: Deadline,
        limit: int | None = None,
        selected: Callable[[HeldTask], bool] | None = None,
    ) -> dict[str, Any]:
        """Resume what is held, oldest first; refuses while maintenance is on unless forced."""
        self.require_standard(machine)
        if self._flag.read(machine).effective(self._now()) and not force:
            raise MaintenanceIsOn(
                f"stateMachineArn: maintenance is on for {machine.unqualified}; "
                'switch it off first, or send "force": true to resume anyway'
            )
        report = self._drainer.drain(machine, deadline, exclusive=False, limit=limit, selected=selected)
        return {"stateMachineArn": machine.unqualified, **report.as_dict()}

    def require_standard(self, machine: StateMachineArn) -> None:
        """404 for an unknown machine, 400 for an Express one (it can never wait for a token)."""
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
