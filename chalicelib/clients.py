"""boto3 clients, created on first use and shared (low-level clients are thread-safe).

Step Functions calls go to the region named in the state machine ARN, so there
is one ``stepfunctions`` client per region. Retries are botocore's ``standard``
mode: throttling and 5xx errors back off and retry without a hand-written loop.
"""

import threading
from typing import Any

import boto3
from botocore.config import Config


class AwsClients:
    def __init__(self, max_pool_connections: int = 16, session: Any = None) -> None:
        self._session = session or boto3.session.Session()
        self._config = Config(
            retries={"mode": "standard", "max_attempts": 3},
            max_pool_connections=max(10, max_pool_connections),
            connect_timeout=5,
            read_timeout=10,
        )
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str | None], Any] = {}

    def s3(self) -> Any:
        return self._client("s3", None)

    def sfn(self, region: str) -> Any:
        return self._client("stepfunctions", region)

    def _client(self, service: str, region: str | None) -> Any:
        key = (service, region)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = self._session.client(service, region_name=region, config=self._config)
            return self._clients[key]
