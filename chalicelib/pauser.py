"""The checkpoint: hold the execution while maintenance is on, let it go otherwise."""

import json
import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.clients import AwsClients
from chalicelib.continuation import Drainer
from chalicelib.deadline import Deadline
from chalicelib.events import CheckpointEvent, parse_checkpoint_event, token_from
from chalicelib.flag import MaintenanceFlag
from chalicelib.logs import DecisionLog, fingerprint
from chalicelib.metrics import Metrics
from chalicelib.resumer import Resumer
from chalicelib.store import TokenStore

# AWS limits a SendTaskFailure cause to 32,768 characters.
_MAX_CAUSE = 32_768


class Pauser:
    def __init__(
        self,
        flag: MaintenanceFlag,
        store: TokenStore,
        drainer: Drainer,
        resumer: Resumer,
        clients: AwsClients,
        log: DecisionLog,
        metrics: Metrics,
        default_region: str | None,
    ) -> None:
        self._flag = flag
        self._store = store
        self._drainer = drainer
        self._resumer = resumer
        self._clients = clients
        self._log = log
        self._metrics = metrics
        self._default_region = default_region

    def handle(self, event: Any, deadline: Deadline) -> dict[str, Any]:
        """Hold or proceed. Raises on bad input, after failing the Task's own token.

        Raising fails the Task at once under a synchronous ``lambda:invoke``; the
        explicit SendTaskFailure also covers a state that invokes us with
        ``InvocationType: Event``, where a raised error would leave it hanging.
        """
        try:
            checkpoint = parse_checkpoint_event(event)
            if self._is_on(checkpoint):
                key = self._hold(checkpoint)
                if self._still_on(checkpoint):
                    return {"status": "maintenance", "saved_token_key": key}
                lifted_meanwhile = True
            else:
                self._proceed(checkpoint)
                lifted_meanwhile = False
        except Exception as error:
            self._fail_own_task(event, error)
            raise
        machine = checkpoint.state_machine
        try:
            if lifted_meanwhile:
                # Maintenance was lifted while this token was being saved: the lifter
                # may have listed the folder before it existed. Resume this token now
                # so it is not stranded; the rest is the lifter's (who may have said
                # "resume": false), the next proceeding execution's or the sweep's.
                self._log.decision("lifted-while-saving", stateMachine=machine.unqualified, key=key)
                report = self._resumer.resume_key(machine, key, deadline)
            else:
                report = self._drainer.drain(machine, deadline, exclusive=True)
        except (ClientError, BotoCoreError) as error:
            # This execution goes on either way; what is held stays held for the sweep.
            self._log.decision("resume-failed", logging.WARNING, stateMachine=machine.unqualified, error=str(error))
            return {"status": "proceeding", "resumed_tokens": 0}
        self._log.decision(
            "proceeding",
            stateMachine=machine.unqualified,
            execution=checkpoint.execution_arn,
            **report.as_dict(),
        )
        return {"status": "proceeding", "resumed_tokens": report.resumed}

    def _hold(self, checkpoint: CheckpointEvent) -> str:
        key = self._store.save(checkpoint)
        self._log.decision(
            "paused",
            stateMachine=checkpoint.state_machine.unqualified,
            execution=checkpoint.execution_arn,
            key=key,
            token=fingerprint(checkpoint.task_token),
        )
        self._metrics.emit(checkpoint.state_machine.name, Paused=1)
        return key

    def _is_on(self, checkpoint: CheckpointEvent) -> bool:
        """The flag; if it cannot be read for a passing reason, hold (the sweep lets it go).

        Holding is the safe side: proceeding into a dependency under maintenance is
        the failure this product exists to prevent. A machine sfn-pauser may not
        read is a configuration error, and fails the Task so that it is seen.
        """
        try:
            return self._flag.is_on(checkpoint.state_machine)
        except (ClientError, BotoCoreError) as error:
            self._log.decision(
                "flag-unreadable",
                logging.WARNING,
                stateMachine=checkpoint.state_machine.unqualified,
                error=type(error).__name__,
            )
            return True

    def _still_on(self, checkpoint: CheckpointEvent) -> bool:
        """Re-check the flag after saving; if the check fails, stay held (the sweep is the backstop)."""
        try:
            return self._flag.is_on_now(checkpoint.state_machine)
        except (ClientError, BotoCoreError) as error:
            self._log.decision("recheck-failed", logging.WARNING, error=type(error).__name__)
            return True

    def _proceed(self, checkpoint: CheckpointEvent) -> None:
        output = checkpoint.input if checkpoint.has_input else {}
        sfn = self._clients.sfn(checkpoint.state_machine.region)
        sfn.send_task_success(taskToken=checkpoint.task_token, output=_json(output))

    def _fail_own_task(self, event: Any, error: Exception) -> None:
        token = token_from(event)
        if token is None:
            return
        region = _region_of(event) or self._default_region
        cause = redact(str(error), token)[:_MAX_CAUSE]
        self._log.decision(
            "rejected",
            logging.ERROR,
            error=type(error).__name__,
            cause=cause,
            token=fingerprint(token),
        )
        if region is None:
            return
        try:
            self._clients.sfn(region).send_task_failure(taskToken=token, error=type(error).__name__, cause=cause)
        except (ClientError, BotoCoreError) as failure:
            # The raise that follows still fails a synchronous Task.
            self._log.decision("fail-own-task-failed", logging.WARNING, error=str(type(failure).__name__))


def redact(text: str, token: str) -> str:
    """Replace any copy of the token (AWS errors may echo it) with its fingerprint."""
    # A token this short is no real credential, and replacing it would mangle the text.
    return text.replace(token, fingerprint(token)) if len(token) >= 16 else text


def _region_of(event: Any) -> str | None:
    arn = event.get("stateMachineArn") if isinstance(event, dict) else None
    if isinstance(arn, str) and arn.count(":") >= 4 and arn.startswith("arn:"):
        return arn.split(":")[3] or None
    return None


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
