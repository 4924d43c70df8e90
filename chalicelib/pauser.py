"""The checkpoint: hold the execution while maintenance is on, let it go otherwise."""

import logging
from typing import Any

from botocore.exceptions import ClientError

from chalicelib import faults
from chalicelib.clients import AwsClients
from chalicelib.continuation import Drainer
from chalicelib.deadline import Deadline
from chalicelib.errors import (
    AwsAccessDenied,
    InvalidField,
    InvalidInput,
    OutputTooLarge,
    StateMachineNotFound,
    Unavailable,
)
from chalicelib.events import CheckpointEvent, is_leave, parse_checkpoint_event, parse_leave_event, token_from
from chalicelib.faults import AWS_ERRORS
from chalicelib.flag import MaintenanceFlag
from chalicelib.holds import Coverage
from chalicelib.logs import DecisionLog, fingerprint
from chalicelib.metrics import Metrics
from chalicelib.resumer import Resumer
from chalicelib.sections import Sections
from chalicelib.store import MAX_PAYLOAD_BYTES, TokenStore, dumps, utf8_size

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
        coverage: Coverage,
        sections: Sections,
    ) -> None:
        self._flag = flag
        self._store = store
        self._drainer = drainer
        self._resumer = resumer
        self._clients = clients
        self._log = log
        self._metrics = metrics
        self._default_region = default_region
        self._coverage = coverage
        self._sections = sections
        self._registered: set[tuple[str, str]] = set()  # (machine, guard) pairs this container recorded

    def handle(self, event: Any, deadline: Deadline) -> dict[str, Any]:
        """Hold or proceed.

        Only bad input fails the Task: it raises a named error, after failing the
        Task's own token (which also covers a state that invokes us with
        ``InvocationType: Event``, where a raised error would leave it hanging).
        An AWS fault that leaves the execution neither held nor passed raises
        :class:`Unavailable`, which the checkpoint's ``Retry`` retries; its own
        token is never failed for that.
        """
        if is_leave(event):
            return self.leave(event)
        try:
            checkpoint = parse_checkpoint_event(event)
            output = task_output(checkpoint)
        except InvalidInput as error:
            self._fail_own_task(event, error)
            raise
        machine = checkpoint.state_machine
        self._register_guards(checkpoint)
        try:
            if self._is_on(checkpoint):
                key = self._hold(checkpoint)
                if self._still_on(checkpoint):
                    return {"status": "maintenance", "saved_token_key": key}
                lifted_meanwhile = True
            else:
                self._proceed(checkpoint, output)
                lifted_meanwhile = False
        except AWS_ERRORS as error:
            code = faults.error_code(error)
            self._log.decision(
                "unavailable",
                logging.WARNING,
                stateMachine=machine.unqualified,
                execution=checkpoint.execution_arn,
                token=fingerprint(checkpoint.task_token),
                error=code,
            )
            raise Unavailable(
                f"AWS answered {code} for {machine.unqualified}; the execution was neither held nor "
                "let through, and the checkpoint's Retry will try again"
            ) from None
        try:
            if lifted_meanwhile:
                # Maintenance was lifted while this token was being saved: the lifter
                # may have listed the folder before it existed. Resume this token now
                # so it is not stranded; the rest is the lifter's (who may have said
                # "resume": false), the next proceeding execution's or the sweep's.
                self._log.decision("lifted-while-saving", stateMachine=machine.unqualified, key=key)
                report = self._resumer.resume_key(machine, key, deadline)
            else:
                report = self._drainer.drain(machine, deadline, exclusive=True, answered=checkpoint.task_token)
        except Exception as error:  # its own token is answered: nothing may fail this invocation now
            # This execution goes on either way; what is held stays held for the sweep.
            self._log.decision(
                "resume-failed",
                logging.WARNING if isinstance(error, AWS_ERRORS) else logging.ERROR,
                stateMachine=machine.unqualified,
                error=faults.error_code(error),
                message=redact(str(error), checkpoint.task_token)[:500],
            )
            return {"status": "proceeding", "resumed_tokens": 0}
        self._log.decision(
            "proceeding",
            stateMachine=machine.unqualified,
            execution=checkpoint.execution_arn,
            **report.as_dict(),
        )
        return {"status": "proceeding", "resumed_tokens": report.resumed}

    def leave(self, event: Any) -> dict[str, Any]:
        """The leave step (a plain ``lambda:invoke``): the execution is out of its protected section.

        Bad input raises a named error (the step fails); an AWS fault raises
        :class:`Unavailable`, which the leave step's ``Retry`` retries. Leaving twice is harmless.
        """
        leaving = parse_leave_event(event)
        try:
            self._sections.leave(leaving)
        except AWS_ERRORS as error:
            code = faults.error_code(error)
            self._log.decision("leave-unavailable", logging.WARNING, execution=leaving.execution_arn, error=code)
            raise Unavailable(
                f"AWS answered {code} recording that {leaving.execution_arn} left its section; "
                "the leave step's Retry will try again"
            ) from None
        self._log.decision("left", stateMachine=leaving.state_machine.unqualified, execution=leaving.execution_arn)
        return {"status": "left"}

    def _hold(self, checkpoint: CheckpointEvent) -> str:
        saved = self._store.save_once(checkpoint)
        self._log.decision(
            "paused" if saved.first else "already-held",
            stateMachine=checkpoint.state_machine.unqualified,
            execution=checkpoint.execution_arn,
            key=saved.key,
            token=fingerprint(checkpoint.task_token),
        )
        if saved.first:
            self._metrics.emit(checkpoint.state_machine.name, Paused=1)
        return saved.key

    def _is_on(self, checkpoint: CheckpointEvent) -> bool:
        """The flag; if it cannot be read, hold (the sweep lets it go once it can be read).

        Holding is the safe side: proceeding into a dependency under maintenance is
        the failure this product exists to prevent, and failing the execution for
        a passing fault, or for sfn-pauser's own IAM policy, is worse than a wait.
        The decision is logged at WARNING so that a lasting cause is seen.
        """
        machine = checkpoint.state_machine
        try:
            return self._flag.is_on(machine) or bool(self._coverage.holds_on(machine, checkpoint.guards))
        except (*AWS_ERRORS, AwsAccessDenied, StateMachineNotFound) as error:
            self._log.decision(
                "flag-unreadable",
                logging.WARNING,
                stateMachine=checkpoint.state_machine.unqualified,
                error=type(error).__name__,
            )
            return True

    def _still_on(self, checkpoint: CheckpointEvent) -> bool:
        """Re-check the flag after saving; if the check fails, stay held (the sweep is the backstop)."""
        machine = checkpoint.state_machine
        try:
            return self._flag.is_on_now(machine) or bool(
                self._coverage.holds_on(machine, checkpoint.guards, fresh=True)
            )
        except (*AWS_ERRORS, AwsAccessDenied, StateMachineNotFound) as error:
            self._log.decision("recheck-failed", logging.WARNING, error=type(error).__name__)
            return True

    def _register_guards(self, checkpoint: CheckpointEvent) -> None:
        """Record once per container which dependencies this machine's checkpoints guard.

        A hold on a dependency answers which machines it covers, and its release
        resumes them, from this record. It is bookkeeping: a failure is logged and
        tried again on the next invocation, and never holds or fails the execution.
        """
        machine = checkpoint.state_machine
        for guard in checkpoint.guards:
            if (machine.unqualified, guard) in self._registered:
                continue
            try:
                self._store.register_guard(guard, machine)
            except AWS_ERRORS as error:
                self._log.decision("guard-unrecorded", logging.WARNING, guard=guard, error=faults.error_code(error))
                continue
            self._registered.add((machine.unqualified, guard))

    def _proceed(self, checkpoint: CheckpointEvent, output: str) -> None:
        """Let the execution through with its own input as the Task's output.

        Past a checkpoint with a ``section``, the execution is recorded as inside first:
        there is then no moment in which it is past the checkpoint and not counted.
        """
        if checkpoint.section is not None and checkpoint.execution_arn is not None:
            self._sections.enter(
                checkpoint.state_machine,
                checkpoint.execution_arn,
                checkpoint.entry,
                checkpoint.section,
                checkpoint.guards,
            )
        sfn = self._clients.sfn(checkpoint.state_machine.region)
        try:
            sfn.send_task_success(taskToken=checkpoint.task_token, output=output)
        except ClientError as error:
            if not faults.is_dead_token(error):
                raise
            # Answered already: by an earlier delivery of this event, or by this very
            # call when its response was lost and botocore retried. Or the Task is
            # over (timed out, execution stopped). Either way there is nothing to do.
            self._log.decision(
                "already-answered",
                stateMachine=checkpoint.state_machine.unqualified,
                execution=checkpoint.execution_arn,
                token=fingerprint(checkpoint.task_token),
                error=faults.error_code(error),
            )

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
        except AWS_ERRORS as failure:
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


def task_output(checkpoint: CheckpointEvent) -> str:
    """The output the checkpoint passes on: the state's input as it came, or ``{}``.

    Bad input if it can never be sent: over Step Functions' limit in UTF-8 bytes,
    or nested deeper than JSON can be written here.
    """
    try:
        output = dumps(checkpoint.input if checkpoint.has_input else {})
    except RecursionError:
        raise InvalidField("input", "is nested too deeply to pass on as the task output") from None
    except ValueError as error:  # NaN or Infinity: not JSON, Step Functions refuses it
        raise InvalidField("input", f"cannot be passed on as JSON ({error})") from None
    size = utf8_size(output)
    if size > MAX_PAYLOAD_BYTES:
        raise OutputTooLarge(
            "input",
            f"is {size} bytes as UTF-8 JSON; a task output may be at most {MAX_PAYLOAD_BYTES} bytes",
        )
    return output
