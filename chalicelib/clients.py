"""boto3 clients, created on first use and shared (low-level clients are thread-safe).

Step Functions calls go to the region named in the state machine ARN, so there
is one ``stepfunctions`` client per region, and one send limiter per region (the
SendTask* quota is per account and region). Retries are botocore's ``standard``
mode: throttling and 5xx errors back off and retry without a hand-written loop.
"""

import threading
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import boto3
import botocore.session
import botocore.utils
from botocore.config import Config

from chalicelib.faults import LostAnswers
from chalicelib.limiter import PACED_OPERATIONS, AimdLimiter


class AwsClients:
    def __init__(
        self,
        max_pool_connections: int = 16,
        session: Any = None,
        send_rate_cap: float | None = None,
    ) -> None:
        self._session = session or boto3.session.Session(botocore_session=_botocore_session())
        self._send_rate_cap = send_rate_cap or None
        self.limiters: dict[str, AimdLimiter] = {}
        self.lost_answers = LostAnswers()
        self._config = Config(
            retries={"mode": "standard", "total_max_attempts": 3},
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

    def lambda_(self) -> Any:
        return self._client("lambda", None)

    def _client(self, service: str, region: str | None) -> Any:
        key = (service, region)
        with self._lock:
            if key not in self._clients:
                client = self._session.client(service, region_name=region, config=self._config)
                if service == "stepfunctions" and region is not None:
                    self.limiters[region] = AimdLimiter(max_rate=self._send_rate_cap)
                    self.limiters[region].attach(client)
                    self.lost_answers.attach(client, PACED_OPERATIONS)
                self._clients[key] = client
            return self._clients[key]


def _botocore_session() -> botocore.session.Session:
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp)
    return core


def parse_timestamp(value: Any) -> datetime:
    """botocore's timestamp parser, without dateutil for the two forms S3 answers in.

    botocore reads every timestamp with dateutil's general parser, which was about a
    tenth of a drained token's CPU (its listing's ``LastModified`` and GetObject's
    ``Last-Modified`` header). Those two forms, ISO 8601 with ``Z`` and an HTTP
    date in GMT, have exact parsers in the standard library; anything else (epoch
    seconds from the JSON services, other offsets) is botocore's own parser's.
    """
    if isinstance(value, str):
        try:
            if value.endswith("Z"):
                return datetime.fromisoformat(value)
            if value.endswith(" GMT"):
                return parsedate_to_datetime(value)
        except (TypeError, ValueError):
            pass
    return botocore.utils.parse_timestamp(value)  # type: ignore[no-any-return]
