"""An in-memory AWS for benchmarks: S3, Step Functions and Lambda behind real botocore clients.

moto in-process spends most of a call in its own request handling (about 250
tokens/s on two cores for the whole resume), so it measures moto, not the
engine. Here the clients are real boto3 clients: serialising, signing, the
``standard`` retry mode, event hooks (the send limiter's ``before-send`` and
``needs-retry``) and response parsing all run as against AWS, and that is
where the product's CPU per token goes. Only the HTTP exchange is replaced: a
``before-send`` handler answers each request from in-memory state, after a
simulated network latency, with the status codes, headers and error bodies
AWS uses (412 ``PreconditionFailed`` for a failed S3 condition, 400
``ThrottlingException`` when the SendTask* bucket is empty, ...).

The backend's own CPU (answering requests) is measured per thread and kept
apart, so the engine's CPU per token can be reported on its own.

    aws = MemoryAws(latency=0.02)
    aws.sfn.quota.set(rate=300, burst=1500)
    s3 = aws.session().client("s3")
    with aws.serving_new_sessions():     # the product's AwsClients builds its own session
        services = Services.build(settings, logger)
"""

import base64
import hashlib
import io
import json
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import boto3
import boto3.session
from botocore.awsrequest import AWSResponse, HeadersDict
from sortedcontainers import SortedList

REGION = "us-east-1"
ACCOUNT = "123456789012"
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
MAX_PAYLOAD_BYTES = 262_144
# Sorts after every key that starts with a given prefix (keys are at most 1,024 bytes).
_HIGHEST = "\U0010ffff"
SEND_OPERATIONS = ("SendTaskSuccess", "SendTaskFailure", "SendTaskHeartbeat")
# Step Functions' default control-plane buckets (burst, refill per second), DESIGN §2.
CONTROL_PLANE_QUOTAS = {
    "ListTagsForResource": (100, 1.0),
    "TagResource": (200, 1.0),
    "UntagResource": (200, 1.0),
    "DescribeStateMachine": (200, 20.0),
}

Answer = tuple[int, dict[str, str], bytes]


class _Raw(io.BytesIO):
    """What botocore reads a response body from (``stream()`` for content, ``read()`` for streaming)."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


class TokenBucket:
    """AWS's throttling model: ``burst`` tokens, refilled at ``rate`` per second; a call takes one."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = clock()
        self.first_empty_at: float | None = None  # when the burst ran out, if it did

    def set(self, rate: float, burst: float | None = None, hold: float | None = None) -> None:
        """Change the quota mid-run; what is in the bucket stays, up to the new burst and ``hold``."""
        with self._lock:
            self._refill(self._clock())
            self.rate = rate
            if burst is not None:
                self.burst = burst
            self._tokens = min(self._tokens, self.burst, float("inf") if hold is None else hold)

    def take(self) -> bool:
        with self._lock:
            now = self._clock()
            self._refill(now)
            if self._tokens < 1:
                if self.first_empty_at is None:
                    self.first_empty_at = now
                return False
            self._tokens -= 1
            return True

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now


class AwsError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class _Object:
    body: bytes
    etag: str
    modified: datetime
    content_type: str


def _etag(body: bytes) -> str:
    return '"' + hashlib.md5(body, usedforsecurity=False).hexdigest() + '"'


def _http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class MemoryS3:
    """Buckets of objects, with S3's conditional writes and deletes and ListObjectsV2 paging."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[dict[str, _Object], SortedList]] = {}

    def create_bucket(self, bucket: str) -> None:
        with self._lock:
            self._buckets.setdefault(bucket, ({}, SortedList()))

    def put(self, bucket: str, key: str, body: bytes, content_type: str = "binary/octet-stream") -> str:
        """Write an object directly (for seeding backlogs without going through HTTP)."""
        objects, keys = self._bucket(bucket)
        stored = _Object(body, _etag(body), datetime.now(UTC), content_type)
        with self._lock:
            if key not in objects:
                keys.add(key)
            objects[key] = stored
        return stored.etag

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        _, keys = self._bucket(bucket)
        with self._lock:
            return [key for key in keys.irange(minimum=prefix) if key.startswith(prefix)] if prefix else list(keys)

    def exists(self, bucket: str, key: str) -> bool:
        return key in self._bucket(bucket)[0]

    def drop(self, bucket: str, keys: list[str]) -> None:
        """Remove objects directly, as a delete made elsewhere would (no hook, no answer)."""
        objects, listed = self._bucket(bucket)
        with self._lock:
            for key in keys:
                if objects.pop(key, None) is not None:
                    listed.remove(key)

    def _removed(self, bucket: str, keys: list[str]) -> None:
        """Called with the keys a DeleteObject or DeleteObjects removed; a subclass may keep track."""

    def _bucket(self, bucket: str) -> tuple[dict[str, _Object], SortedList]:
        found = self._buckets.get(bucket)
        if found is None:
            raise AwsError(404, "NoSuchBucket", "The specified bucket does not exist")
        return found

    def handle(self, operation: str, request: Any, body: bytes) -> Answer:
        parts = urlsplit(request.url)
        bucket, key = _bucket_and_key(parts.hostname or "", parts.path)
        query = {name: values[0] for name, values in parse_qs(parts.query, keep_blank_values=True).items()}
        headers = request.headers
        if operation == "PutObject":
            return self._put_object(bucket, key, body, headers)
        if operation in ("GetObject", "HeadObject"):
            return self._get_object(bucket, key, head=operation == "HeadObject")
        if operation == "DeleteObject":
            return self._delete_object(bucket, key, _header(headers, "If-Match"))
        if operation == "DeleteObjects":
            return self._delete_objects(bucket, body)
        if operation == "ListObjectsV2":
            return self._list(bucket, query)
        raise NotImplementedError(f"the in-memory S3 does not answer {operation}")

    def _put_object(self, bucket: str, key: str, body: bytes, headers: Any) -> Answer:
        objects, keys = self._bucket(bucket)
        if_none_match = _header(headers, "If-None-Match")
        if_match = _header(headers, "If-Match")
        stored = _Object(
            body, _etag(body), datetime.now(UTC), _header(headers, "Content-Type") or "binary/octet-stream"
        )
        with self._lock:
            current = objects.get(key)
            if if_none_match == "*" and current is not None:
                raise AwsError(
                    412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold"
                )
            _check_if_match(current, if_match)
            if current is None:
                keys.add(key)
            objects[key] = stored
        return 200, {"ETag": stored.etag}, b""

    def _get_object(self, bucket: str, key: str, head: bool) -> Answer:
        objects, _ = self._bucket(bucket)
        return self._answer_get(objects.get(key), head)

    @staticmethod
    def _answer_get(found: _Object | None, head: bool) -> Answer:
        """GetObject's (or HeadObject's) answer for what is stored at a key, if anything."""
        if found is None:
            if head:
                return 404, {}, b""
            raise AwsError(404, "NoSuchKey", "The specified key does not exist.")
        headers = {
            "ETag": found.etag,
            "Content-Length": str(len(found.body)),
            "Content-Type": found.content_type,
            "Last-Modified": _http_date(found.modified),
            "Accept-Ranges": "bytes",
        }
        return 200, headers, b"" if head else found.body

    def _delete_object(self, bucket: str, key: str, if_match: str | None) -> Answer:
        objects, keys = self._bucket(bucket)
        with self._lock:
            current = objects.get(key)
            _check_if_match(current, if_match)
            if current is not None:
                del objects[key]
                keys.remove(key)
        if current is not None:
            self._removed(bucket, [key])
        return 204, {}, b""

    def _delete_objects(self, bucket: str, body: bytes) -> Answer:
        objects, keys = self._bucket(bucket)
        root = ElementTree.fromstring(body)
        wanted = [element.findtext(f"{S3_NS}Key") or "" for element in root.iter(f"{S3_NS}Object")]
        quiet = (root.findtext(f"{S3_NS}Quiet") or "").lower() == "true"
        if len(wanted) > 1000:
            raise AwsError(400, "MalformedXML", "The XML you provided was not well-formed")
        removed = []
        with self._lock:
            for key in wanted:
                if objects.pop(key, None) is not None:
                    keys.remove(key)
                    removed.append(key)
        if removed:
            self._removed(bucket, removed)
        deleted = "" if quiet else "".join(f"<Deleted><Key>{escape(key)}</Key></Deleted>" for key in wanted)
        return 200, {}, _xml(f'<DeleteResult xmlns="{S3_NS[1:-1]}">{deleted}</DeleteResult>')

    def _list(self, bucket: str, query: dict[str, str]) -> Answer:
        objects, keys = self._bucket(bucket)
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        max_keys = min(1000, int(query.get("max-keys", "1000")))
        encode = query.get("encoding-type") == "url"
        token = query.get("continuation-token")
        start_after = query.get("start-after", "")
        after = base64.urlsafe_b64decode(token.encode()).decode() if token else start_after
        contents: list[str] = []
        common: list[str] = []
        truncated = False
        position = after  # where the next page starts (exclusive)
        with self._lock:
            lowest = max(prefix, after)
            candidates = keys.irange(minimum=lowest)
            while (key := next(candidates, None)) is not None:
                if key <= after:
                    continue
                if not key.startswith(prefix):
                    break
                if len(contents) + len(common) >= max_keys:
                    truncated = True
                    break
                cut = key.find(delimiter, len(prefix)) if delimiter else -1
                if cut >= 0:
                    # A rolled-up prefix stands for all its keys: skip past them at once.
                    rolled = key[: cut + len(delimiter)]
                    common.append(rolled)
                    position = rolled + _HIGHEST
                    candidates = keys.irange(minimum=position)
                else:
                    contents.append(key)
                    position = key
            entries = [(key, objects[key]) for key in contents]

        def shown(text: str) -> str:
            return escape(quote(text, safe="/") if encode else text)

        body = [f'<ListBucketResult xmlns="{S3_NS[1:-1]}"><Name>{escape(bucket)}</Name>']
        body.append(f"<Prefix>{shown(prefix)}</Prefix>")
        if delimiter:
            body.append(f"<Delimiter>{shown(delimiter)}</Delimiter>")
        body.append(f"<MaxKeys>{max_keys}</MaxKeys><KeyCount>{len(contents) + len(common)}</KeyCount>")
        body.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        if encode:
            body.append("<EncodingType>url</EncodingType>")
        if token:
            body.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
        if start_after:
            body.append(f"<StartAfter>{shown(start_after)}</StartAfter>")
        if truncated:
            next_token = base64.urlsafe_b64encode(position.encode()).decode()
            body.append(f"<NextContinuationToken>{next_token}</NextContinuationToken>")
        for key, item in entries:
            body.append(
                f"<Contents><Key>{shown(key)}</Key><LastModified>{_iso(item.modified)}</LastModified>"
                f"<ETag>{escape(item.etag)}</ETag><Size>{len(item.body)}</Size>"
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
        body.extend(f"<CommonPrefixes><Prefix>{shown(rolled)}</Prefix></CommonPrefixes>" for rolled in common)
        body.append("</ListBucketResult>")
        return 200, {}, _xml("".join(body))


def _bucket_and_key(host: str, path: str) -> tuple[str, str]:
    """Virtual-hosted (``bucket.s3.amazonaws.com/key``) or path-style (``s3.amazonaws.com/bucket/key``)."""
    if host.startswith("s3.") or host.startswith("s3-"):
        bucket, _, key = path.lstrip("/").partition("/")
        return unquote(bucket), unquote(key)
    return host.split(".s3", 1)[0], unquote(path[1:])


def _header(headers: Any, name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _xml(text: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + text).encode()


class SendLog:
    """Every SendTask* request as it reached AWS: when, and what it was answered."""

    def __init__(self) -> None:
        self.successes: list[float] = []  # accepted SendTaskSuccess/Failure, by time
        self.throttles: list[float] = []
        self.requests = 0
        self.duplicates = 0  # a Success or Failure for a token already answered


class MemoryStepFunctions:
    """Waiting task tokens, state machines with tags, and the account's quotas per call."""

    def __init__(self, send_rate: float = 0.0, send_burst: float = 0.0) -> None:
        self._lock = threading.Lock()
        # SendTaskSuccess, SendTaskFailure and SendTaskHeartbeat share one bucket.
        # A rate and burst of 0 means no quota.
        self.quota = TokenBucket(send_rate, send_burst)
        self.control = {name: TokenBucket(rate, burst) for name, (burst, rate) in CONTROL_PLANE_QUOTAS.items()}
        self.waiting: set[str] = set()
        self.answered: dict[str, str] = {}  # token -> "success" | "failure"
        self.machines: dict[str, dict[str, Any]] = {}
        self.log = SendLog()

    def wait(self, tokens: list[str]) -> None:
        """Tokens of Tasks that wait for an answer (as executions held at the checkpoint would)."""
        with self._lock:
            self.waiting.update(tokens)

    def create_state_machine(self, name: str, tags: dict[str, str] | None = None) -> str:
        arn = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"
        with self._lock:
            self.machines[arn] = {"name": name, "tags": dict(tags or {}), "created": time.time()}
        return arn

    def handle(self, operation: str, body: bytes) -> Answer:
        request = json.loads(body or b"{}")
        if operation in SEND_OPERATIONS:
            return _json(self._send(operation, request))
        if operation in self.control and not self.control[operation].take():
            raise AwsError(400, "ThrottlingException", "Rate exceeded")
        if operation == "ListTagsForResource":
            machine = self._machine(request["resourceArn"], "ResourceNotFound")
            return _json({"tags": [{"key": key, "value": value} for key, value in machine["tags"].items()]})
        if operation == "TagResource":
            machine = self._machine(request["resourceArn"], "ResourceNotFound")
            with self._lock:
                machine["tags"].update({tag["key"]: tag["value"] for tag in request.get("tags", [])})
            return _json({})
        if operation == "UntagResource":
            machine = self._machine(request["resourceArn"], "ResourceNotFound")
            with self._lock:
                for key in request.get("tagKeys", []):
                    machine["tags"].pop(key, None)
            return _json({})
        if operation == "DescribeStateMachine":
            arn = request["stateMachineArn"]
            machine = self._machine(arn, "StateMachineDoesNotExist")
            return _json(
                {
                    "stateMachineArn": arn,
                    "name": machine["name"],
                    "status": "ACTIVE",
                    "definition": json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
                    "roleArn": f"arn:aws:iam::{ACCOUNT}:role/bench",
                    "type": "STANDARD",
                    "creationDate": machine["created"],
                }
            )
        raise NotImplementedError(f"the in-memory Step Functions does not answer {operation}")

    def _machine(self, arn: str, missing: str) -> dict[str, Any]:
        # Tags belong to the unqualified machine (versions and aliases share them).
        base = ":".join(arn.split(":")[:7])
        machine = self.machines.get(base)
        if machine is None:
            raise AwsError(400, missing, f"State Machine Does Not Exist: '{arn}'")
        return machine

    def _send(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        token = request.get("taskToken", "")
        now = time.monotonic()
        unlimited = self.quota.rate == 0 and self.quota.burst == 0
        admitted = unlimited or self.quota.take()
        with self._lock:
            self.log.requests += 1
            if not admitted:
                self.log.throttles.append(now)
                raise AwsError(400, "ThrottlingException", "Rate exceeded")
            if token not in self.waiting and token not in self.answered:
                raise AwsError(400, "InvalidToken", "Invalid Token: 'Invalid token'")
            if token in self.answered:
                # A token answered once is closed: every later SendTask* call is refused.
                if operation != "SendTaskHeartbeat":
                    self.log.duplicates += 1
                raise AwsError(400, "TaskTimedOut", "Task Timed Out: 'Provided task does not exist anymore'")
            if operation == "SendTaskHeartbeat":
                return {}
            if operation == "SendTaskSuccess":
                output = request.get("output", "")
                if len(output.encode()) > MAX_PAYLOAD_BYTES:
                    raise AwsError(400, "ValidationException", "output: Member must have length <= 262144")
                try:
                    json.loads(output)
                except ValueError:
                    raise AwsError(400, "InvalidOutput", "Invalid Output: 'not JSON'") from None
            self.waiting.discard(token)
            self.answered[token] = "success" if operation == "SendTaskSuccess" else "failure"
            self.log.successes.append(now)
        return {}


def _json(document: dict[str, Any]) -> Answer:
    return 200, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(document).encode()


class MemoryLambda:
    """Asynchronous invocations (``InvocationType=Event``), handed to ``on_invoke``."""

    def __init__(self) -> None:
        self.on_invoke: Callable[[str, bytes], None] | None = None
        self.invocations: list[tuple[str, bytes]] = []

    def handle(self, operation: str, request: Any, body: bytes) -> Answer:
        if operation != "Invoke" or _header(request.headers, "X-Amz-Invocation-Type") != "Event":
            raise NotImplementedError(f"the in-memory Lambda answers only asynchronous Invoke, not {operation}")
        function = unquote(urlsplit(request.url).path.split("/functions/", 1)[1].split("/", 1)[0])
        self.invocations.append((function, body))
        if self.on_invoke is not None:
            self.on_invoke(function, body)
        return 202, {}, b""


class MemoryAws:
    """The backend and its simulated network: every request waits ``latency`` seconds in all.

    The backend answers a request as it arrives; the client then waits the round
    trip, as a thread blocked on its socket does.
    """

    def __init__(self, latency: float = 0.02, send_rate: float = 0.0, send_burst: float = 0.0) -> None:
        self.latency = latency
        self.s3 = MemoryS3()
        self.sfn = MemoryStepFunctions(send_rate, send_burst)
        self.lambda_ = MemoryLambda()
        self.calls: Counter[str] = Counter()
        self.sessions = 0  # sessions created while serving_new_sessions() was active
        self._cpu = threading.local()
        self._cpu_lock = threading.Lock()
        self._cpu_total = 0.0

    @property
    def cpu_seconds(self) -> float:
        """CPU time spent answering requests (not the clients' own), across all threads."""
        with self._cpu_lock:
            return self._cpu_total

    def session(self) -> boto3.session.Session:
        """A boto3 session whose clients talk to this backend."""
        session = boto3.session.Session(aws_access_key_id="bench", aws_secret_access_key="bench", region_name=REGION)
        session.events.register("before-send", self._before_send)
        return session

    @contextmanager
    def serving_new_sessions(self) -> Iterator[None]:
        """Every boto3 session created meanwhile talks to this backend.

        The product builds its clients itself (``Services.build`` -> ``AwsClients``
        -> ``boto3.session.Session()``), so the figures are those of the clients,
        retry mode and pool sizes it configures, not of a copy kept in the bench.
        """
        backend = self
        original = boto3.session.Session

        class BenchSession(original):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.setdefault("aws_access_key_id", "bench")
                kwargs.setdefault("aws_secret_access_key", "bench")
                kwargs.setdefault("region_name", REGION)
                super().__init__(*args, **kwargs)
                self.events.register("before-send", backend._before_send)
                backend.sessions += 1

        with (
            mock.patch.object(boto3.session, "Session", BenchSession),
            mock.patch.object(boto3, "Session", BenchSession),
        ):
            yield

    def _before_send(self, request: Any, event_name: str, **_: Any) -> AWSResponse:
        _, service, operation = event_name.split(".", 2)
        body = _read_body(request)  # the HTTP layer's work (aws-chunked, checksums): the client's CPU
        started = time.thread_time()
        try:
            status, headers, payload = self._answer(service, operation, request, body)
        except AwsError as error:
            status, headers, payload = _error(service, error)
        used = time.thread_time() - started
        with self._cpu_lock:
            self._cpu_total += used
            self.calls[operation] += 1
        # The whole round trip in one wait, after the answer: a client thread blocks once
        # per call, reading the response from its socket (sending does not block). Two
        # waits (one each way) woke the thread, and took the GIL, twice per call, which
        # put about a quarter more CPU on every token than a real network does.
        if self.latency:
            time.sleep(self.latency)
        headers = {**headers, "x-amz-request-id": uuid.uuid4().hex, "x-amzn-RequestId": str(uuid.uuid4())}
        return AWSResponse(request.url, status, HeadersDict(headers), _Raw(payload))

    def _answer(self, service: str, operation: str, request: Any, body: bytes) -> Answer:
        if service == "s3":
            return self.s3.handle(operation, request, body)
        if service == "sfn":
            return self.sfn.handle(operation, body)
        if service == "lambda":
            return self.lambda_.handle(operation, request, body)
        raise NotImplementedError(f"the in-memory AWS has no {service}")


def _read_body(request: Any) -> bytes:
    body = request.body
    if body is None:
        return b""
    if hasattr(body, "read"):
        body = body.read()
    data = body.encode() if isinstance(body, str) else bytes(body)
    if _header(request.headers, "Content-Encoding") == "aws-chunked":
        return _decode_aws_chunked(data)
    return data


def _decode_aws_chunked(data: bytes) -> bytes:
    """``size\\r\\nbytes\\r\\n ... 0\\r\\ntrailers\\r\\n\\r\\n``: the chunks, checked against the CRC32 trailer."""
    out = bytearray()
    at = 0
    while True:
        end = data.index(b"\r\n", at)
        size = int(data[at:end].split(b";", 1)[0], 16)
        at = end + 2
        if size == 0:
            break
        out += data[at : at + size]
        at += size + 2
    for line in data[at:].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-amz-checksum-crc32":
            expected = base64.b64decode(value.strip())
            if zlib.crc32(out).to_bytes(4, "big") != expected:
                raise AwsError(400, "BadDigest", "The CRC32 you specified did not match the calculated checksum.")
    return bytes(out)


def _error(service: str, error: AwsError) -> Answer:
    if service == "s3":
        body = (
            f"<Error><Code>{error.code}</Code><Message>{escape(error.message)}</Message>"
            f"<RequestId>{uuid.uuid4().hex}</RequestId></Error>"
        )
        return error.status, {"Content-Type": "application/xml"}, _xml(body)
    document = {"__type": error.code, "message": error.message}
    headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-ErrorType": error.code}
    return error.status, headers, json.dumps(document).encode()


def _check_if_match(current: Any, if_match: str | None) -> None:
    """S3's answer to ``If-Match``: 404 for a missing object, 412 for a changed one."""
    if if_match is None:
        return
    if current is None:
        raise AwsError(404, "NoSuchKey", "The specified key does not exist.")
    if if_match != current.etag:
        raise AwsError(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
