"""The token store: held tasks as S3 objects ``{Prefix}{StateMachineName}/{UUID}.json``.

A held task is any object whose name, directly inside a state machine's folder,
is a UUID followed by ``.json``. New keys are UUIDv7, so listing order is pause
order; keys written by the original SfnPauser (UUID4) are read the same way.
Anything else (bookkeeping, quarantine, audit) lives under ``{Prefix}_sfn-pauser/``
and is never taken for a token.
"""

import contextlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.events import CheckpointEvent

CONTROL_FOLDER = "_sfn-pauser"
# S3 answers a lost If-None-Match race with 412, or 409 while another write is in flight.
_CONFLICT_CODES = ("PreconditionFailed", "ConditionalRequestConflict")
_TOKEN_NAME = re.compile(
    r"(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.json",
    re.IGNORECASE,
)


_id_lock = threading.Lock()
_last_id_time = [0, 0]  # [milliseconds, sequence] of the last id this process made


def new_token_id(now_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, a 12-bit sequence, random bits.

    The sequence (RFC 9562 §6.2, method 1) keeps the ids one process makes within
    one millisecond in order, so keys sort by pause time. Hand-written because
    ``uuid.uuid7`` arrives only in Python 3.14 and the runtime carries no
    third-party UUID package; it is a few lines of bit layout.
    """
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _id_lock:
        # Within the same millisecond, or a clock step back of under 10 s, carry on
        # from the last id; anything else (an explicit time) starts afresh.
        if _last_id_time[0] - 10_000 < ms <= _last_id_time[0]:
            ms, sequence = _last_id_time[0], _last_id_time[1] + 1
            if sequence > 0xFFF:
                ms, sequence = ms + 1, 0
        else:
            sequence = 0
        _last_id_time[:] = [ms, sequence]
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= sequence << 64
    value |= 0x2 << 62  # RFC 4122 variant
    value |= int.from_bytes(os.urandom(8), "big") >> 2
    return str(uuid.UUID(int=value))


def paused_at_of(token_id: str) -> datetime | None:
    """The pause time a UUIDv7 key carries, or None for another UUID version."""
    parsed = uuid.UUID(token_id)
    if parsed.version != 7:
        return None
    return datetime.fromtimestamp((parsed.int >> 80) / 1000, tz=UTC)


def iso_timestamp(moment: datetime) -> str:
    """UTC ISO 8601 with milliseconds and ``Z``, e.g. ``2023-12-01T12:34:56.789Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class HeldKey:
    """A held task as the listing shows it, without reading its body."""

    key: str
    paused_at: datetime
    etag: str = ""


@dataclass(frozen=True)
class HeldTask:
    key: str
    task_token: str = field(repr=False)
    timestamp: str
    execution_arn: str | None = None
    state_machine_arn: str | None = None
    has_input: bool = False
    input: Any = None

    @property
    def output(self) -> str:
        """What resuming sends as the Task's output: the saved input, or ``{}``."""
        return json.dumps(self.input if self.has_input else {}, separators=(",", ":"))


class UnreadableHeldTask(Exception):
    """A token-named object whose body is not a held task (no usable ``taskToken``)."""


class TokenStore:
    def __init__(self, s3: Any, bucket: str, prefix: str) -> None:
        self._s3 = s3
        self.bucket = bucket
        self.prefix = prefix

    def folder(self, machine_name: str) -> str:
        return f"{self.prefix}{machine_name}/"

    def control_key(self, *parts: str) -> str:
        return self.prefix + "/".join((CONTROL_FOLDER, *parts))

    def save(self, event: CheckpointEvent, now: datetime | None = None) -> str:
        """Write the held task and return its key. Never overwrites an object."""
        now = now or datetime.now(UTC)
        token_id = new_token_id(int(now.timestamp() * 1000))
        key = f"{self.folder(event.state_machine.name)}{token_id}.json"
        body: dict[str, Any] = {
            "taskToken": event.task_token,
            "timestamp": iso_timestamp(now),
            "stateMachineArn": str(event.state_machine),
            "region": event.state_machine.region,
        }
        if event.execution_arn:
            body["executionArn"] = event.execution_arn
        if event.has_input:
            body["input"] = event.input
        self._s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=json.dumps(body, separators=(",", ":")).encode(),
            ContentType="application/json",
            IfNoneMatch="*",
        )
        return key

    def held(self, machine_name: str) -> Iterator[HeldKey]:
        """The machine's held tasks, oldest first within each page of 1,000.

        New (UUIDv7) keys list in pause order across pages too; a legacy UUID4
        key is placed by its LastModified within its page.
        """
        paginator = self._s3.get_paginator("list_objects_v2")
        folder = self.folder(machine_name)
        for page in paginator.paginate(Bucket=self.bucket, Prefix=folder, Delimiter="/"):
            found = []
            for item in page.get("Contents", []):
                match = _TOKEN_NAME.fullmatch(item["Key"][len(folder) :])
                if match is None:
                    continue
                paused_at = paused_at_of(match["id"]) or item["LastModified"]
                found.append(HeldKey(item["Key"], paused_at, item.get("ETag", "")))
            yield from sorted(found, key=lambda held: (held.paused_at, held.key))

    def held_page(self, machine_name: str, limit: int, after: str | None) -> tuple[list[HeldKey], str | None]:
        """One page of held tasks in key order (pause order for new keys), and the next token."""
        folder = self.folder(machine_name)
        extra = {"StartAfter": folder + after} if after else {}
        response = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=folder, Delimiter="/", MaxKeys=limit, **extra)
        found = []
        for item in response.get("Contents", []):
            match = _TOKEN_NAME.fullmatch(item["Key"][len(folder) :])
            if match is not None:
                found.append(HeldKey(item["Key"], paused_at_of(match["id"]) or item["LastModified"]))
        last = response.get("Contents", [])[-1:]
        next_token = last[0]["Key"][len(folder) :] if response.get("IsTruncated") and last else None
        return found, next_token

    def held_key(self, key: str) -> HeldKey | None:
        """The listing entry for one key this process saved (no S3 call)."""
        match = _TOKEN_NAME.fullmatch(key.rsplit("/", 1)[-1])
        if match is None:
            return None
        return HeldKey(key, paused_at_of(match["id"]) or datetime.now(UTC))

    def machines(self) -> Iterator[str]:
        """Names of the state machines whose folders exist (hold or held tokens)."""
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(self.prefix) :].rstrip("/")
                if name != CONTROL_FOLDER:
                    yield name

    def load(self, key: str) -> HeldTask | None:
        """Read a held task; None when it is already gone (another resumer took it)."""
        found = self._get(key)
        if found is None:
            return None
        try:
            body = json.loads(found[0])
        except ValueError:
            raise UnreadableHeldTask(f"{key}: body is not JSON") from None
        if not isinstance(body, dict):
            raise UnreadableHeldTask(f"{key}: body is not a JSON object")
        token = body.get("taskToken")
        if not isinstance(token, str) or not token:
            raise UnreadableHeldTask(f"{key}: body has no taskToken string")
        execution_arn = body.get("executionArn")
        state_machine_arn = body.get("stateMachineArn")
        return HeldTask(
            key=key,
            task_token=token,
            timestamp=str(body.get("timestamp", "")),
            execution_arn=execution_arn if isinstance(execution_arn, str) else None,
            state_machine_arn=state_machine_arn if isinstance(state_machine_arn, str) else None,
            has_input="input" in body,
            input=body.get("input"),
        )

    def load_quietly(self, key: str) -> HeldTask | None:
        """``load``, with None for an unreadable body (for listings that only show)."""
        try:
            return self.load(key)
        except UnreadableHeldTask:
            return None

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=key)

    # Bookkeeping documents (flag mirrors, leases, audit) live under the control
    # folder, away from the token folders.

    def put_document(self, key: str, body: dict[str, Any], *, create_only: bool = False) -> str | None:
        """Write a JSON document and return its ETag; with ``create_only``, None when it already exists."""
        extra = {"IfNoneMatch": "*"} if create_only else {}
        try:
            response = self._s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=json.dumps(body, separators=(",", ":")).encode(),
                ContentType="application/json",
                **extra,
            )
        except ClientError as error:
            if create_only and error.response["Error"]["Code"] in _CONFLICT_CODES:
                return None
            raise
        return str(response["ETag"])

    def get_document(self, key: str) -> tuple[dict[str, Any], str] | None:
        """A JSON document and its ETag, or None when there is none (or it is not JSON)."""
        found = self._get(key)
        if found is None:
            return None
        try:
            body = json.loads(found[0])
        except ValueError:
            return None
        return (body, found[1]) if isinstance(body, dict) else None

    def _get(self, key: str) -> tuple[bytes, str] | None:
        """An object's bytes and ETag; None when there is no such object."""
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise
        return response["Body"].read(), response["ETag"]

    def delete_if_unchanged(self, key: str, etag: str) -> bool:
        """Delete unless the object was rewritten since ``etag`` was read (If-Match)."""
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=key, IfMatch=etag)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("PreconditionFailed", "NoSuchKey", "404"):
                return False
            raise
        return True

    def list_page(self, folder_key: str, limit: int, after: str | None) -> tuple[list[str], str | None]:
        """One page of keys below a folder, and the key to start the next page after."""
        extra = {"StartAfter": folder_key + after} if after else {}
        response = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=folder_key, MaxKeys=limit, **extra)
        keys = [item["Key"] for item in response.get("Contents", [])]
        more = response.get("IsTruncated") and keys
        return keys, keys[-1][len(folder_key) :] if more else None

    def list_documents(self, folder_key: str) -> Iterator[tuple[str, datetime, str]]:
        """(key, LastModified, ETag) of every object below a control folder."""
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=folder_key):
            for item in page.get("Contents", []):
                yield item["Key"], item["LastModified"], item["ETag"]

    def delete_many(self, keys: list[str]) -> list[str]:
        """Delete up to 1,000 keys a request; return the keys S3 could not delete."""
        failed: list[str] = []
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            response = self._s3.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
            failed.extend(error["Key"] for error in response.get("Errors", []))
        return failed

    # Claims make each held task resumed by one resumer at a time. A claim is a
    # small object created with If-None-Match: *, which S3 lets exactly one writer
    # create (the others get 412, or 409 when they race). It is deleted with the
    # token once the outcome is known, or released when the send must be retried.
    # A resumer that dies leaves its claim behind; the sweep clears claims older
    # than their lease, and the token is resumed again.

    def claim_key(self, token_key: str) -> str:
        machine_name, name = token_key[len(self.prefix) :].rsplit("/", 1)
        return self.control_key("claims", machine_name, name)

    def claim(self, token_key: str, owner: str, now: datetime | None = None) -> str | None:
        """Claim a held task for this resumer; None when another resumer holds it."""
        key = self.claim_key(token_key)
        body = {"owner": owner, "claimedAt": iso_timestamp(now or datetime.now(UTC))}
        return key if self.put_document(key, body, create_only=True) else None

    def stale_claims(self, older_than: datetime) -> Iterator[tuple[str, str]]:
        """(key, ETag) of claims last written before ``older_than``."""
        for key, modified, etag in self.list_documents(self.control_key("claims", "")):
            if modified < older_than:
                yield key, etag

    def lease(self, machine_name: str, owner: str, seconds: float) -> tuple[str, str] | None:
        """Take the machine's drain lease for ``seconds``; None while another holder's is live.

        A lease whose holder died is taken over once it has expired: deleted with
        If-Match (so two takers cannot both delete it) and created anew.
        """
        key = self.control_key("leases", f"{machine_name}.json")
        now = datetime.now(UTC)
        body = {"owner": owner, "expiresAt": iso_timestamp(now + timedelta(seconds=seconds))}
        for _ in range(2):
            etag = self.put_document(key, body, create_only=True)
            if etag:
                return key, etag
            current = self.get_document(key)
            if current is None:
                continue
            held_until = str(current[0].get("expiresAt", ""))
            if held_until > iso_timestamp(now) or not self.delete_if_unchanged(key, current[1]):
                return None
        return None

    def release_lease(self, lease: tuple[str, str]) -> None:
        key, etag = lease
        with contextlib.suppress(ClientError, BotoCoreError):  # else it expires by itself
            self.delete_if_unchanged(key, etag)

    def quarantined(self, machine_name: str) -> Iterator[str]:
        """Keys of the machine's quarantined tasks."""
        for key, _, _ in self.list_documents(self.control_key("quarantine", machine_name, "")):
            yield key

    def quarantine(self, key: str, reason: str, machine_name: str) -> str:
        """Move a held task we can no longer act on aside, with the reason, for operators."""
        name = key.rsplit("/", 1)[-1]
        target = self.control_key("quarantine", machine_name, name)
        original = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        record = {
            "reason": reason,
            "quarantinedAt": iso_timestamp(datetime.now(UTC)),
            "originalKey": key,
            "original": original.decode("utf-8", errors="replace"),
        }
        self._s3.put_object(
            Bucket=self.bucket,
            Key=target,
            Body=json.dumps(record).encode(),
            ContentType="application/json",
        )
        self.delete(key)
        return target
