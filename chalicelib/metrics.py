"""CloudWatch metrics as Embedded Metric Format (EMF) lines on stdout.

Plain EMF rather than Powertools Metrics: the runtime is deliberately chalice +
boto3, the format is one documented JSON shape, and Lambda ships stdout to
CloudWatch Logs, which turns these lines into metrics with no API call.

Two kinds of record: :meth:`Metrics.emit` is one machine's (the ``StateMachine``
dimension), for the dashboard; :meth:`Metrics.emit_fleet` is the whole fleet's
(no dimension), one a sweep, for the alarms: an alarm watches one metric, and
one fleet-wide metric costs one alarm however many machines there are. The
dashboard and alarms in ``.chalice/resources.json`` name these metrics, and
``tests/test_metrics.py`` reads the names from the calls in the code, so the
two cannot drift apart.
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
    "SweepErrors": "Count",
}


class Metrics:
    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.time) -> None:
        self._stream = stream
        self._clock = clock

    def emit(self, state_machine: str, **values: float) -> None:
        """One EMF record with the ``StateMachine`` dimension; zero values are still sent."""
        self._write(["StateMachine"], {"StateMachine": state_machine}, values)

    def emit_fleet(self, **values: float) -> None:
        """One EMF record with no dimension: the fleet's figure, what the alarms watch."""
        self._write([], {}, values)

    def _write(self, dimensions: list[str], members: dict[str, str], values: dict[str, float]) -> None:
        if not values:
            return
        record = {
            "_aws": {
                "Timestamp": int(self._clock() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": NAMESPACE,
                        "Dimensions": [dimensions],
                        "Metrics": [{"Name": name, "Unit": UNITS.get(name, "Count")} for name in values],
                    }
                ],
            },
            **members,
            **values,
        }
        stream = self._stream or sys.stdout
        stream.write(json.dumps(record) + "\n")
        stream.flush()
