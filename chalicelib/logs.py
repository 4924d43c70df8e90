"""One structured JSON line per decision, and never a whole task token.

A task token is a credential: whoever holds it can complete the Task. Logs carry
only :func:`fingerprint`, enough to correlate lines about the same token.
"""

import hashlib
import json
import logging
from typing import Any

# The AWS SDK and the HTTP stack under it: at DEBUG botocore logs whole request
# bodies, and SendTaskSuccess, SendTaskFailure and SendTaskHeartbeat carry the taskToken.
SDK_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")


def fingerprint(task_token: str) -> str:
    """A short, stable, irreversible stand-in for a token in logs and responses."""
    return "sha256:" + hashlib.sha256(task_token.encode()).hexdigest()[:12]


def keep_sdk_loggers_above_debug() -> None:
    """Set the SDK's loggers to INFO, or to their effective level if that is higher.

    Lambda's advanced logging controls (``AWS_LAMBDA_LOG_LEVEL=DEBUG``) set the root
    logger to DEBUG, and the SDK's loggers inherit it. An explicit level on each
    one stops that inheritance, so a root logger lowered later does not reach them.
    """
    for name in SDK_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logging.INFO, logger.getEffectiveLevel()))


class DecisionLog:
    """Writes ``{"decision": ..., **fields}`` lines at INFO (or the given level)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def decision(self, decision: str, level: int = logging.INFO, **fields: Any) -> None:
        record = {"decision": decision}
        record.update({name: value for name, value in fields.items() if value is not None})
        self._logger.log(level, json.dumps(record, default=str, sort_keys=False))
