"""CloudWatch metrics as Embedded Metric Format (EMF) lines on stdout.

Plain EMF rather than Powertools Metrics: the runtime is deliberately chalice +
boto3, the format is one documented JSON shape, and Lambda ships stdout to
CloudWatch Logs, which turns these lines into metrics with no API call.
"""

import json
import sys
import time
from collections.abc import Callable
from typing import TextIO

NAMESPACE = "SfnPauser"
UNITS = {
    "Paused": "Count",
    "Resumed": "Count",
    "Expired": "Count",
    "Failed": "Count",
    "Throttled": "Count",
    "Backlog": "Count",
    "Quarantined": "Count",
    "MachineErrors": "Count",
    "OldestPausedAgeSeconds": "Seconds",
}


class Metrics:
    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.time) -> None:
        self._stream = stream
        self._clock = clock

    def emit(self, state_machine: str, **values: float) -> None:
        """One EMF record with the ``StateMachine`` dimension; zero values are still sent."""
        if not values:
            return
        record = {
            "_aws": {
                "Timestamp": int(self._clock() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": NAMESPACE,
                        "Dimensions": [["StateMachine"]],
                        "Metrics": [{"Name": name, "Unit": UNITS.get(name, "Count")} for name in values],
                    }
                ],
            },
            "StateMachine": state_machine,
            **values,
        }
        stream = self._stream or sys.stdout
        stream.write(json.dumps(record) + "\n")
        stream.flush()
