"""Maintenance control for operators and CI: switch it, see it, resume what is held."""

import re
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.arns import StateMachineArn
from chalicelib.clients import AwsClients
from chalicelib.deadline import Deadline
from chalicelib.errors import MaintenanceIsOn, NotStandardWorkflow, StateMachineNotFound
from chalicelib.flag import TAG, TAG_BY, TAG_REASON, TAG_SINCE, MaintenanceFlag
from chalicelib.resumer import Resumer
from chalicelib.store import TokenStore, iso_timestamp

# Tag values allow letters, numbers, spaces and _ . : / = + - @, up to 256 characters.
_TAG_UNSAFE = re.compile(r"[^\w\s.:/=+\-@]", re.UNICODE)
_TAG_MAX = 256


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
        resumer: Resumer,
        clients: AwsClients,
        cache_seconds: float,
    ) -> None:
        self._flag = flag
        self._store = store
        self._resumer = resumer
        self._clients = clients
        self._cache_seconds = cache_seconds

    def switch(
        self,
        machine: StateMachineArn,
        enabled: bool,
        *,
        actor: str,
        reason: str | None,
        resume: bool,
        deadline: Deadline,
    ) -> dict[str, Any]:
        """Turn maintenance on or off. Off resumes the held executions unless told not to."""
        self._require_standard(machine)
        before = self._flag.read(machine)
        sfn = self._clients.sfn(machine.region)
        if enabled:
            if not before.on:
                tags = {TAG: "true", TAG_SINCE: iso_timestamp(datetime.now(UTC)), TAG_BY: tag_value(actor)}
                if reason:
                    tags[TAG_REASON] = tag_value(reason)
                sfn.tag_resource(
                    resourceArn=machine.unqualified,
                    tags=[{"key": key, "value": value} for key, value in tags.items()],
                )
        else:
            sfn.untag_resource(resourceArn=machine.unqualified, tagKeys=[TAG, TAG_SINCE, TAG_BY, TAG_REASON])
        self._flag.remember(machine, enabled)
        result: dict[str, Any] = {
            "stateMachineArn": machine.unqualified,
            "maintenance": enabled,
            "changed": before.on != enabled,
        }
        if enabled:
            # Warm task handler containers may act on their cached flag this long.
            result["effectiveWithinSeconds"] = self._cache_seconds
        elif resume:
            result.update(self._resumer.resume(machine, deadline).as_dict())
        return result

    def status(self, machine: StateMachineArn) -> dict[str, Any]:
        state = self._flag.read(machine)
        held = list(self._store.held(machine.name))
        oldest = min((item.paused_at for item in held), default=None)
        return {
            "stateMachineArn": machine.unqualified,
            "maintenance": state.on,
            "since": state.since,
            "by": state.by,
            "reason": state.reason,
            "paused": len(held),
            "oldestPausedAt": iso_timestamp(oldest) if oldest else None,
        }

    def resume(self, machine: StateMachineArn, *, force: bool, deadline: Deadline) -> dict[str, Any]:
        """Resume what is held; refuses while maintenance is on unless forced."""
        if self._flag.read(machine).on and not force:
            raise MaintenanceIsOn(
                f"stateMachineArn: maintenance is on for {machine.unqualified}; "
                'switch it off first, or send "force": true to resume anyway'
            )
        return {"stateMachineArn": machine.unqualified, **self._resumer.resume(machine, deadline).as_dict()}

    def _require_standard(self, machine: StateMachineArn) -> None:
        sfn = self._clients.sfn(machine.region)
        try:
            described = sfn.describe_state_machine(stateMachineArn=machine.unqualified)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("StateMachineDoesNotExist", "ResourceNotFound"):
                raise StateMachineNotFound(
                    f"stateMachineArn: no state machine {machine.unqualified}"
                ) from None
            raise
        if described.get("type") == "EXPRESS":
            raise NotStandardWorkflow(
                "stateMachineArn",
                f"{machine.name} is an EXPRESS workflow; only STANDARD workflows can wait "
                "for a task token, so only they can be paused",
            )
