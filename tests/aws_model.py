"""What AWS answers where moto answers otherwise (shared/DESIGN.md §2 and §4), in one place.

Tests that depend on one of these answers use the ``aws_model`` fixture (or
:meth:`AwsModel.applied`); it sits on moto's Step Functions endpoint, so the
product's own clients, on any thread and in any region, meet it unchanged.

=====================================================  ====================  =======================
situation                                              AWS answers           moto 5.2.5 answers
=====================================================  ====================  =======================
SendTask* for a token already answered (by a           ``TaskTimedOut``      ``InvalidToken`` once
Success or a Failure)                                                         the execution finished;
                                                                              accepted while it runs
                                                                              (and always in plain
                                                                              mode)
SendTask* for a token of a closed Task attempt (a      ``TaskTimedOut``      accepted, or
Retry issued a newer token; the execution ended)                              ``InvalidToken``
SendTask* to another region's or account's endpoint    ``InvalidToken``      accepted in plain mode
than the one that issued the token
SendTaskSuccess ``output`` over 262,144 UTF-8 bytes    ``ValidationException``  accepted
StartExecution ``input`` over 262,144 UTF-8 bytes      ``ValidationException``  accepted
a state's or task's data measured against 256 KiB      in UTF-8 bytes         as ``\\uXXXX``-escaped
(``count_state_size_in_utf8_bytes``)                                          JSON (6 bytes a kana)
a token a test declares dead (:meth:`kill`)            ``TaskTimedOut`` or   never
                                                       ``TaskDoesNotExist``
=====================================================  ====================  =======================

A token is *issued* by a real execution (moto's interpreter makes ``$$.Task.Token``;
the model records its execution's account, region and state) or declared by a
test with :meth:`AwsModel.issue` (plain mode's made-up tokens). Tokens the model
was never told about are answered by moto alone, except for the size limits.

The model also counts what reached AWS per token: ``successes``, ``failures``,
``heartbeats``, ``misdirected`` (sent to an endpoint that did not issue it), and
``repeats`` - a SendTaskSuccess/Failure for a token already
answered by an *earlier call*. botocore marks every attempt of one call with the
same ``amz-sdk-invocation-id`` header, so the retry after a lost response is not
a repeat (AWS answers it ``TaskTimedOut`` all the same).
"""

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from moto.core.exceptions import AWSError
from moto.stepfunctions.parser.asl.eval.states import ContextObject
from moto.stepfunctions.responses import StepFunctionResponse

from tests.harness import ACCOUNT, REGION

# Execution input, state output and SendTaskSuccess output: 256 KiB of UTF-8.
PAYLOAD_LIMIT_BYTES = 262_144
_INVOCATION_HEADER = "amz-sdk-invocation-id"


class TaskTimedOut(AWSError):
    TYPE = "TaskTimedOut"


class TaskDoesNotExist(AWSError):
    TYPE = "TaskDoesNotExist"


class InvalidToken(AWSError):
    TYPE = "InvalidToken"


class ValidationException(AWSError):
    TYPE = "ValidationException"


_DEAD = {"TaskTimedOut": TaskTimedOut, "TaskDoesNotExist": TaskDoesNotExist}


@dataclass(frozen=True)
class Issue:
    """Who issued a token: the endpoint that will accept it, and the Task attempt it belongs to."""

    account: str
    region: str
    execution: str | None = None
    state: str | None = None


@dataclass(frozen=True)
class Answer:
    operation: str
    invocation: str | None


class AwsModel:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.issued: dict[str, Issue] = {}
        self._latest: dict[tuple[str | None, str | None], str] = {}
        self.answered: dict[str, Answer] = {}
        self._dead: dict[str, str] = {}
        self.successes: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.heartbeats: Counter[str] = Counter()
        self.repeats: Counter[str] = Counter()
        self.misdirected: Counter[str] = Counter()  # sent to an endpoint that did not issue it
        self.outputs: dict[str, str] = {}

    # -- what a test declares

    def issue(self, token: str, region: str = REGION, account: str = ACCOUNT, execution: str | None = None) -> None:
        """Declare a made-up token as issued by ``account`` in ``region`` (plain mode)."""
        with self._lock:
            self.issued[token] = Issue(account, region, execution)

    def kill(self, token: str, code: str = "TaskTimedOut") -> None:
        """From now on every SendTask* for ``token`` answers ``code`` (TaskTimedOut or TaskDoesNotExist)."""
        if code not in _DEAD:
            raise ValueError(f"{code}: expected one of {sorted(_DEAD)}")
        with self._lock:
            self._dead[token] = code

    # -- what a test reads

    def tokens_of(self, execution: str) -> list[str]:
        """The tokens issued to one execution, oldest first."""
        with self._lock:
            return [token for token, issue in self.issued.items() if issue.execution == execution]

    def latest_token(self, execution: str) -> str | None:
        tokens = self.tokens_of(execution)
        return tokens[-1] if tokens else None

    def sent_twice(self) -> dict[str, int]:
        with self._lock:
            return dict(self.repeats)

    # -- the endpoint

    def _issued(self, context: ContextObject, token: str) -> None:
        data = context.context_object_data
        machine = str(data.get("StateMachine", {}).get("Id", ""))
        parts = machine.split(":")
        execution = data.get("Execution", {}).get("Id")
        state = (data.get("State") or {}).get("Name")
        with self._lock:
            self.issued[token] = Issue(parts[4], parts[3], execution, state)
            self._latest[(execution, state)] = token

    def _check(self, response: StepFunctionResponse, operation: str, token: str) -> str | None:
        """Raise AWS's answer where it differs from moto's; return the call's invocation id."""
        invocation = _header(response.headers, _INVOCATION_HEADER)
        with self._lock:
            if token in self._dead:
                raise _DEAD[self._dead[token]](f"Task {self._dead[token]} (declared by the test)")
            issue = self.issued.get(token)
            if issue is not None and (issue.account, issue.region) != (response.current_account, response.region):
                self.misdirected[token] += 1
                raise InvalidToken(
                    f"Invalid Token: issued by {issue.account} in {issue.region}, "
                    f"sent to {response.current_account} in {response.region}"
                )
            answered = self.answered.get(token)
            if answered is not None:
                if operation != "SendTaskHeartbeat" and answered.invocation != invocation:
                    self.repeats[token] += 1
                raise TaskTimedOut("Task Timed Out: the task was already answered")
            replaced = issue is not None and self._latest.get((issue.execution, issue.state), token) != token
            if replaced:
                raise TaskTimedOut("Task Timed Out: a newer attempt of this Task replaced it")
        return invocation

    def _answered(self, operation: str, token: str, invocation: str | None, output: str | None) -> None:
        with self._lock:
            if operation == "SendTaskHeartbeat":
                self.heartbeats[token] += 1
                return
            self.answered[token] = Answer(operation, invocation)
            if operation == "SendTaskSuccess":
                self.successes[token] += 1
                self.outputs[token] = output or ""
            else:
                self.failures[token] += 1

    def _send(self, operation: str, original: Callable[[StepFunctionResponse], Any]) -> Callable[..., Any]:
        model = self

        def send(response: StepFunctionResponse) -> Any:
            token = str(response._get_param("taskToken"))
            output = response._get_param("output") if operation == "SendTaskSuccess" else None
            if output is not None and len(str(output).encode("utf-8")) > PAYLOAD_LIMIT_BYTES:
                raise ValidationException(_too_long("output"))
            invocation = model._check(response, operation, token)
            try:
                result = original(response)
            except Exception as error:
                # moto's interpreter forgets a finished execution's tokens; AWS says the task timed out.
                if getattr(error, "code", None) == "InvalidToken" and token in model.issued:
                    raise TaskTimedOut("Task Timed Out: the execution has ended") from None
                raise
            model._answered(operation, token, invocation, output)
            return result

        return send

    @contextmanager
    def applied(self) -> Iterator["AwsModel"]:
        """Put the model in front of moto's Step Functions endpoint for the duration."""
        originals = {
            name: getattr(StepFunctionResponse, name)
            for name in ("send_task_success", "send_task_failure", "send_task_heartbeat", "start_execution")
        }
        update_task_token = ContextObject.update_task_token
        model = self

        def issue_token(context: ContextObject) -> str:
            token = update_task_token(context)
            model._issued(context, token)
            return token

        def start_execution(response: StepFunctionResponse) -> Any:
            given = response._get_param("input")
            if given is not None and len(str(given).encode("utf-8")) > PAYLOAD_LIMIT_BYTES:
                raise ValidationException(_too_long("input"))
            return originals["start_execution"](response)

        StepFunctionResponse.send_task_success = self._send("SendTaskSuccess", originals["send_task_success"])
        StepFunctionResponse.send_task_failure = self._send("SendTaskFailure", originals["send_task_failure"])
        StepFunctionResponse.send_task_heartbeat = self._send("SendTaskHeartbeat", originals["send_task_heartbeat"])
        StepFunctionResponse.start_execution = start_execution
        ContextObject.update_task_token = issue_token
        try:
            yield self
        finally:
            for name, method in originals.items():
                setattr(StepFunctionResponse, name, method)
            ContextObject.update_task_token = update_task_token


def _too_long(field: str) -> str:
    return (
        f"1 validation error detected: Value at '{field}' failed to satisfy constraint: "
        f"Member must have length less than or equal to {PAYLOAD_LIMIT_BYTES}"
    )


def _header(headers: Any, name: str) -> str | None:
    for key, value in dict(headers).items():
        if key.lower() == name:
            return str(value)
    return None


@pytest.fixture
def aws_model() -> Iterator[AwsModel]:
    """The AWS answers moto does not give, in front of moto for one test."""
    with AwsModel().applied() as model:
        yield model


def count_state_size_in_utf8_bytes() -> None:
    """Measure the 256 KiB state and task-result limits as AWS does: in UTF-8 bytes.

    moto's interpreter measures ``json.dumps`` with its default ``ensure_ascii``,
    which writes each non-ASCII character as a 6-byte ``\\uXXXX``: 180 KB of
    Japanese, well within AWS's limit, counts as 360 KB there.
    """
    from moto.stepfunctions.parser.asl.component.state import state
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_lambda
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service
    from moto.stepfunctions.parser.quotas import MAX_STATE_SIZE_UTF8_BYTES

    def is_within_size_quota(value: Any) -> bool:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        return len(text.encode("utf-8")) <= MAX_STATE_SIZE_UTF8_BYTES

    for module in (state, state_task_lambda, state_task_service):
        module.is_within_size_quota = is_within_size_quota  # type: ignore[attr-defined]
