"""Counting what reaches Step Functions, in moto's plain mode (no interpreter).

In plain mode moto accepts any token, which is what concurrency and fault tests
need: thousands of tokens without thousands of waiting executions. The
correctness of a real wait is covered by the end-to-end tests.
"""

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from moto.stepfunctions.models import StepFunctionBackend


class SendLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.successes: Counter[str] = Counter()
        self.outputs: dict[str, str] = {}
        self.heartbeats: Counter[str] = Counter()

    def duplicates(self) -> int:
        return sum(count - 1 for count in self.successes.values() if count > 1)


@contextmanager
def counting_sends() -> Iterator[SendLog]:
    log = SendLog()
    original_success = StepFunctionBackend.send_task_success
    original_heartbeat = StepFunctionBackend.send_task_heartbeat

    def send_task_success(self: Any, task_token: str, outcome: str) -> None:
        with log._lock:
            log.successes[task_token] += 1
            log.outputs[task_token] = outcome

    def send_task_heartbeat(self: Any, task_token: str) -> None:
        with log._lock:
            log.heartbeats[task_token] += 1

    StepFunctionBackend.send_task_success = send_task_success
    StepFunctionBackend.send_task_heartbeat = send_task_heartbeat
    try:
        yield log
    finally:
        StepFunctionBackend.send_task_success = original_success
        StepFunctionBackend.send_task_heartbeat = original_heartbeat
