"""One structured JSON line per decision, and never a whole task token.

A task token is a credential: whoever holds it can complete the Task. Logs carry
only :func:`fingerprint`, enough to correlate lines about the same token.
"""

import hashlib
import json
import logging
from typing import Any


def fingerprint(task_token: str) -> str:
    """A short, stable, irreversible stand-in for a token in logs and responses."""
    return "sha256:" + hashlib.sha256(task_token.encode()).hexdigest()[:12]


class DecisionLog:
    """Writes ``{"decision": ..., **fields}`` lines at INFO (or the given level)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def decision(self, decision: str, level: int = logging.INFO, **fields: Any) -> None:
        record = {"decision": decision}
        record.update({name: value for name, value in fields.items() if value is not None})
        self._logger.log(level, json.dumps(record, default=str, sort_keys=False))
