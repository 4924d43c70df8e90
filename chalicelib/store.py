"""The token store: held tasks as S3 objects ``{Prefix}{StateMachineName}/{UUID}.json``.

A held task is any object whose name, directly inside a state machine's folder,
is a UUID followed by ``.json``. New keys are UUIDv7, so listing order is pause
order; keys written by the original SfnPauser (UUID4) are read the same way.
Anything else (bookkeeping, quarantine, audit) lives under ``{Prefix}_sfn-pauser/``
and is never taken for a token.
"""

import contextlib
import hashlib
import itertools
import json
import os
import re
import threading
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import faults
from chalicelib.arns import StateMachineArn, parse_state_machine_arn
from chalicelib.errors import InvalidArn
from chalicelib.events import CheckpointEvent

CONTROL_FOLDER = "_sfn-pauser"
# ListObjectsV2 answers at most 1,000 keys a call.
LIST_PAGE_SIZE = 1000
# A count on a request path lists at most this many pages (10,000 keys, about 1 s).
COUNT_PAGES = 10
_TOKEN_NAME = re.compile(
    r"(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.json",
    re.IGNORECASE,
)


_id_lock = threading.Lock()
_last_id_time = [0, 0]  # [milliseconds, sequence] of the last id this process made


def new_token_id(now_ms: int | None = None, machine_tag: int | None = None) -> str:
    """A time-ordered UUID: 48 bits of Unix milliseconds, a 12-bit sequence, then the rest.

    Without ``machine_tag`` it is a UUIDv7 (RFC 9562) with 62 random bits. With
    one it is a UUIDv8, RFC 9562's layout for custom data, with the same time and
    sequence bits, whose last 62 bits are the tag (30 bits) and 32 random bits.
    The tag names the state machine (see :func:`machine_tag`), so that namesakes
    in two regions or accounts, which share a folder, can be told apart from a
    listing, without reading each body.

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
    value |= (0x7 if machine_tag is None else 0x8) << 76
    value |= sequence << 64
    value |= 0x2 << 62  # RFC 4122 variant
    if machine_tag is None:
        value |= int.from_bytes(os.urandom(8), "big") >> 2
    else:
        value |= (machine_tag & _TAG_MASK) << 32
        value |= int.from_bytes(os.urandom(4), "big")
    return str(uuid.UUID(int=value))


_TAG_MASK = (1 << 30) - 1


def machine_tag(machine: StateMachineArn) -> int:
    """30 bits that name a state machine (its unqualified ARN) in the keys of its held tasks.

    Two namesakes share a tag once in a billion pairs; even then nothing is sent
    to the wrong machine, since a resume checks the ARN recorded in the body.
    """
    return int.from_bytes(hashlib.sha256(machine.unqualified.encode()).digest()[:4], "big") & _TAG_MASK


def machine_tag_of(token_id: str) -> int | None:
    """The machine tag a UUIDv8 key carries; None for keys without one (UUIDv7, the seed's UUID4)."""
    parsed = uuid.UUID(token_id)
    return (parsed.int >> 32) & _TAG_MASK if parsed.version == 8 else None


def paused_at_of(token_id: str) -> datetime | None:
    """The pause time a time-ordered key carries, or None for another UUID version."""
    parsed = uuid.UUID(token_id)
    if parsed.version not in (7, 8):
        return None
    return datetime.fromtimestamp((parsed.int >> 80) / 1000, tz=UTC)


def shard_of(key: str, shards: int) -> int:
    """Which of ``shards`` drain shards a held task's key falls in (a stable hash, even over any key)."""
    return zlib.crc32(key.encode()) % shards if shards > 1 else 0


def dumps(value: Any) -> str:
    """Compact JSON that keeps non-ASCII as it is: AWS's 256 KiB limits count UTF-8
    bytes, and ``\\uXXXX`` escapes would double or triple the size of, say, Japanese."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# Step Functions' limit on a task output (and an execution's input), in UTF-8 bytes.
MAX_PAYLOAD_BYTES = 262_144


def utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))


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
class Counted:
    """A count that stops at a cap: with ``capped``, at least ``count`` (more were not listed)."""

    count: int
    capped: bool
    oldest: datetime | None = None


@dataclass(frozen=True)
class Saved:
    key: str
    first: bool  # False: the token was already held (a repeated delivery)


@dataclass(frozen=True)
class HeldTask:
    key: str
    task_token: str = field(repr=False)
    timestamp: str
    execution_arn: str | None = None
    state_machine_arn: str | None = None
    has_input: bool = False
    input: Any = None
    guards: tuple[str, ...] = ()  # the dependencies its checkpoint declared (holds on them hold it)
    section: str | None = None  # its checkpoint starts a protected section: resuming records it inside
    entry: str | None = None  # which Map iteration, for the record

    @property
    def output(self) -> str:
        """What resuming sends as the Task's output: the saved input, or ``{}``."""
        return dumps(self.input if self.has_input else {})

    def belongs_to(self, machine: StateMachineArn) -> bool:
        """Whether this task waits in ``machine`` (and not in a namesake sharing its folder).

        The seed's tokens recorded no ARN: they belong to whichever machine of
        that name sfn-pauser works for (the seed worked in one account and region).
        """
        if self.state_machine_arn is None:
            return True
        try:
            return parse_state_machine_arn(self.state_machine_arn).unqualified == machine.unqualified
        except InvalidArn:
            return True


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
        """Hold a task and return its key; see :meth:`save_once`."""
        return self.save_once(event, now).key

    def save_once(self, event: CheckpointEvent, now: datetime | None = None) -> "Saved":
        """Hold a task once, however often its token is delivered, and return its key.

        Step Functions and Lambda deliver at least once: a handler that timed out
        after saving is invoked again with the same token. A small index object
        per token (:meth:`token_index_key`), created with ``If-None-Match: *``
        before the held task itself, names the one key the token is held under;
        a second delivery finds it and returns that key instead of a second entry.
        A lost response on either write is recognised as this call's own write
        (:meth:`create`), not mistaken for someone else's.
        """
        now = now or datetime.now(UTC)
        machine = event.state_machine
        key = f"{self.folder(machine.name)}{new_token_id(int(now.timestamp() * 1000), machine_tag(machine))}.json"
        index_key = self.token_index_key(event.task_token)
        if self.create(index_key, {"key": key, "stateMachineArn": machine.unqualified}) is None:
            held_under = self._indexed_key(index_key)
            if held_under is not None:
                if self._holds_token(held_under, event.task_token):
                    return Saved(held_under, first=False)
                # The first delivery died between the index and the task: finish its work.
                key = held_under
        body: dict[str, Any] = {
            "taskToken": event.task_token,
            "timestamp": iso_timestamp(now),
            "stateMachineArn": str(machine),
            "region": machine.region,
        }
        if event.execution_arn:
            body["executionArn"] = event.execution_arn
        if event.has_input:
            body["input"] = event.input
        if event.guards:
            body["guards"] = list(event.guards)
        if event.section:
            body["section"] = event.section
            if event.entry is not None:
                body["entry"] = event.entry
        if self.create(key, body) is None and not self._holds_token(key, event.task_token):
            raise UnreadableHeldTask(f"{key}: another task is held under this task's key")
        return Saved(key, first=True)

    def forget(self, task_token: str) -> bool:
        """Remove the held entry of a token its own delivery has just answered; True if there was one."""
        index_key = self.token_index_key(task_token)
        held_under = self._indexed_key(index_key)
        if held_under is None or not self._holds_token(held_under, task_token):
            return False
        self.delete_many([held_under, index_key])
        return True

    def token_index_key(self, task_token: str) -> str:
        """Where the key a token is held under is recorded (a hash: the token is a credential)."""
        return self.control_key("tokens", hashlib.sha256(task_token.encode()).hexdigest() + ".json")

    def _indexed_key(self, index_key: str) -> str | None:
        found = self.get_document(index_key)
        key = found[0].get("key") if found else None
        return key if isinstance(key, str) and key.startswith(self.prefix) else None

    def _holds_token(self, key: str, task_token: str) -> bool:
        try:
            task = self.load(key)
        except UnreadableHeldTask:
            return False
        return task is not None and task.task_token == task_token

    def held(self, machine: StateMachineArn | str) -> Iterator[HeldKey]:
        """A machine's held tasks, oldest first within each page of 1,000.

        Given an ARN, only that machine's: keys tagged for a namesake (another
        region or account, same folder) are left out; keys that carry no tag (the
        seed's, or saved before tags) are listed for every machine of the name,
        and a resume checks their body. Given a name, the whole folder.

        Time-ordered keys list in pause order across pages too; a legacy UUID4
        key is placed by its LastModified within its page.
        """
        paginator = self._s3.get_paginator("list_objects_v2")
        folder = self.folder(machine if isinstance(machine, str) else machine.name)
        for page in paginator.paginate(Bucket=self.bucket, Prefix=folder, Delimiter="/"):
            found = self._held_in(page, folder, machine)
            yield from sorted(found, key=lambda held: (held.paused_at, held.key))

    def held_page(self, machine: StateMachineArn, limit: int, after: str | None) -> tuple[list[HeldKey], str | None]:
        """One page of a machine's held tasks in key order (pause order for new keys), and the next token."""
        folder = self.folder(machine.name)
        extra = {"StartAfter": folder + after} if after else {}
        response = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=folder, Delimiter="/", MaxKeys=limit, **extra)
        found = self._held_in(response, folder, machine)
        last = response.get("Contents", [])[-1:]
        next_token = last[0]["Key"][len(folder) :] if response.get("IsTruncated") and last else None
        return found, next_token

    @staticmethod
    def _held_in(page: dict[str, Any], folder: str, machine: StateMachineArn | str) -> list[HeldKey]:
        wanted = None if isinstance(machine, str) else machine_tag(machine)
        found = []
        for item in page.get("Contents", []):
            match = _TOKEN_NAME.fullmatch(item["Key"][len(folder) :])
            if match is None:
                continue
            tag = machine_tag_of(match["id"])
            if wanted is not None and tag is not None and tag != wanted:
                continue
            paused_at = paused_at_of(match["id"]) or item["LastModified"]
            found.append(HeldKey(item["Key"], paused_at, item.get("ETag", "")))
        return found

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
            guards=_names(body.get("guards")),
            section=section if isinstance(section := body.get("section"), str) else None,
            entry=entry if isinstance(entry := body.get("entry"), str) else None,
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

    def put_document(self, key: str, body: dict[str, Any], *, if_match: str | None = None) -> str | None:
        """Write a JSON document and return its ETag; with ``if_match``, None when it changed since.

        Like :meth:`create`, a 412 is checked against what is there: a retried
        write whose first attempt landed (its answer lost) is this call's own.
        """
        if not if_match:
            response = self._s3.put_object(
                Bucket=self.bucket, Key=key, Body=dumps(body).encode(), ContentType="application/json"
            )
            return str(response["ETag"])
        return self._write_conditionally(key, body, IfMatch=if_match)

    def create(self, key: str, body: dict[str, Any]) -> str | None:
        """Create a JSON document and return its ETag; None when another writer's is there.

        A lost response is not a failed request: botocore retries a PUT whose
        answer timed out, and the retry of an ``If-None-Match: *`` write that had
        landed answers 412. So on 412 the object is read back, and if it is
        byte for byte what this call wrote (every body we create carries a time
        and an id of its own), it is this call's write, and its ETag is returned.
        """
        return self._write_conditionally(key, body, IfNoneMatch="*")

    def _write_conditionally(self, key: str, body: dict[str, Any], **condition: str) -> str | None:
        data = dumps(body).encode()
        try:
            response = self._s3.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType="application/json", **condition
            )
        except ClientError as error:
            if not (faults.is_conflict(error) or faults.is_not_found(error)):
                raise
            found = self._get(key)
            return found[1] if found is not None and found[0] == data else None
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

    def list_documents(self, folder_key: str, start_after: str | None = None) -> Iterator[tuple[str, datetime, str]]:
        """(key, LastModified, ETag) of every object below a control folder (after ``start_after``)."""
        paginator = self._s3.get_paginator("list_objects_v2")
        extra = {"StartAfter": start_after} if start_after else {}
        for page in paginator.paginate(Bucket=self.bucket, Prefix=folder_key, **extra):
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
        body = {"owner": owner, "claimedAt": iso_timestamp(now or datetime.now(UTC)), "id": uuid.uuid4().hex}
        return key if self.create(key, body) else None

    def stale_claims(self, older_than: datetime) -> Iterator[tuple[str, str]]:
        """(key, ETag) of claims last written before ``older_than``."""
        for key, modified, etag in self.list_documents(self.control_key("claims", "")):
            if modified < older_than:
                yield key, etag

    def lease(self, machine: StateMachineArn, owner: str, seconds: float, shard: int = 0) -> tuple[str, str] | None:
        """Take a shard of the machine's drain lease for ``seconds``; None while another holder's is live.

        A lease whose holder died is taken over once it has expired: deleted with
        If-Match (so two takers cannot both delete it) and created anew. Leases are
        per machine, not per folder: a namesake's drain does not hold this one up.
        """
        key = self._lease_key(machine, shard)
        now = datetime.now(UTC)
        body = {"owner": owner, "expiresAt": iso_timestamp(now + timedelta(seconds=seconds)), "id": uuid.uuid4().hex}
        for _ in range(2):
            etag = self.create(key, body)
            if etag:
                return key, etag
            current = self.get_document(key)
            if current is None:
                continue
            held_until = str(current[0].get("expiresAt", ""))
            if held_until > iso_timestamp(now) or not self.delete_if_unchanged(key, current[1]):
                return None
        return None

    def lease_taken(self, machine: StateMachineArn, shard: int = 0) -> bool:
        """Whether a live drain lease is on the machine's shard (one GET; a lapsed one does not count)."""
        current = self.get_document(self._lease_key(machine, shard))
        return current is not None and str(current[0].get("expiresAt", "")) > iso_timestamp(datetime.now(UTC))

    def _lease_key(self, machine: StateMachineArn, shard: int) -> str:
        # Shard 0 keeps the key of the single lease of earlier versions. "#" cannot be
        # part of a state machine's name, so no machine's key is another's shard.
        return self.control_key("leases", *machine_path(machine)) + (f"#{shard}" if shard else "") + ".json"

    def claimed(self, machine: StateMachineArn) -> set[str]:
        """The token keys of the machine's folder that some resumer has claimed (one listing per 1,000 claims)."""
        folder = self.control_key("claims", machine.name, "")
        return {f"{self.folder(machine.name)}{key[len(folder) :]}" for key, _, _ in self.list_documents(folder)}

    def release_lease(self, lease: tuple[str, str]) -> None:
        key, etag = lease
        with contextlib.suppress(ClientError, BotoCoreError):  # else it expires by itself
            self.delete_if_unchanged(key, etag)

    # Deletes that S3 refused after a token's outcome was known are kept as a list
    # under ``deferred/``, which the sweep works off: a finished token must not
    # stay where a resumer would send it again.

    def defer_deletes(self, keys: list[str]) -> str:
        """Keep keys whose delete failed, for :meth:`finish_deferred_deletes`; returns the list's key."""
        key = self.control_key("deferred", f"{new_token_id()}.json")
        self.put_document(key, {"keys": keys})
        return key

    def finish_deferred_deletes(self) -> int:
        """Delete what resumers could not; returns how many keys were deleted."""
        deleted = 0
        for key, _, _ in self.list_documents(self.control_key("deferred", "")):
            found = self.get_document(key)
            keys = found[0].get("keys") if found else None
            pending = (
                [k for k in keys if isinstance(k, str) and k.startswith(self.prefix)] if isinstance(keys, list) else []
            )
            if not self.delete_many(pending):
                self.delete(key)
                deleted += len(pending)
        return deleted

    # Which machines' checkpoints guard which dependency (written by the task handler).

    def register_guard(self, guard: str, machine: StateMachineArn) -> None:
        self._s3.put_object(
            Bucket=self.bucket, Key=self._guard_folder(guard) + "/".join(machine_path(machine)), Body=b""
        )

    def guarded_by(self, guard: str) -> Iterator[StateMachineArn]:
        """The machines whose checkpoints have declared ``guard``."""
        folder = self._guard_folder(guard)
        for key, _, _ in self.list_documents(folder):
            parts = key[len(folder) :].split("/")
            if len(parts) == 4:
                partition, account, region, name = parts
                try:
                    yield parse_state_machine_arn(f"arn:{partition}:states:{region}:{account}:stateMachine:{name}")
                except InvalidArn:
                    continue

    def _guard_folder(self, guard: str) -> str:
        # A guard may hold "/": quoted, so that "db" and "db/replica" are two folders.
        return self.control_key("guards", urllib.parse.quote(guard, safe="") + "/")

    def quarantined(self, machine: StateMachineArn) -> Iterator[str]:
        """Keys of the machine's quarantined tasks."""
        for key, _, _ in self.list_documents(self.quarantine_folder(machine)):
            yield key

    def quarantine_folder(self, machine: StateMachineArn) -> str:
        return self.control_key("quarantine", *machine_path(machine), "")

    def quarantine(self, key: str, reason: str, machine: StateMachineArn) -> str:
        """Move a held task we can no longer act on aside, with the reason, for operators.

        The record is written before the task is deleted, so a failure between
        the two leaves the task held, never lost.
        """
        target = self.quarantine_folder(machine) + key.rsplit("/", 1)[-1]
        found = self._get(key)
        if found is None:
            return target
        original = found[0].decode("utf-8", errors="replace")
        record = {
            "reason": reason,
            "quarantinedAt": iso_timestamp(datetime.now(UTC)),
            "originalKey": key,
            "original": original,
        }
        self.put_document(target, record)
        self.delete_many([key, *self.index_keys_of(original)])
        return target

    def index_keys_of(self, body: str) -> list[str]:
        """The token index entry of a held task's body, to delete with it (none for an unreadable body)."""
        try:
            token = json.loads(body).get("taskToken")
        except (ValueError, AttributeError):
            return []
        return [self.token_index_key(token)] if isinstance(token, str) and token else []

    # Counting for status and metrics: a listing read one page at a time, and at
    # most ``pages`` pages, so the time, the calls and the memory a count takes do
    # not grow with the backlog (1,000,000 held keys would be about 1,000 calls
    # and 330 MiB listed whole). Past the cap a count is "at least".

    def count_held(self, machine: StateMachineArn, pages: int = COUNT_PAGES) -> "Counted":
        """How many tasks ``machine`` holds, counted from its folder's first ``pages`` pages,
        and the oldest of them.

        Only the machine's own keys count: a namesake's (another region or
        account, same folder) are listed but left out, so the pages bound the
        calls, not the count. Time-ordered keys list in pause order, so the first
        one is the oldest whatever the backlog; a legacy UUID4 key is placed by
        its LastModified among the pages listed.
        """
        folder = self.folder(machine.name)
        count, oldest = 0, None
        last: dict[str, Any] = {}
        for last in self._first_pages(folder, pages, Delimiter="/"):
            found = [held.paused_at for held in self._held_in(last, folder, machine)]
            count += len(found)
            oldest = min(filter(None, [oldest, *found]), default=None)
        return Counted(count, bool(last.get("IsTruncated")), oldest)

    def count_quarantined(self, machine: StateMachineArn, pages: int = COUNT_PAGES) -> "Counted":
        """How many of the machine's tasks are in quarantine, from at most ``pages`` pages."""
        count = 0
        last: dict[str, Any] = {}
        for last in self._first_pages(self.quarantine_folder(machine), pages):
            count += len(last.get("Contents", []))
        return Counted(count, bool(last.get("IsTruncated")))

    def _first_pages(self, prefix: str, pages: int, **extra: str) -> Iterator[dict[str, Any]]:
        """Up to ``pages`` listing pages below ``prefix``, one at a time. The paginator asks
        for a page only once the previous one is taken, so stopping here stops the
        calls; the last page taken says (``IsTruncated``) whether more were left."""
        paginator = self._s3.get_paginator("list_objects_v2")
        listing = paginator.paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": LIST_PAGE_SIZE}, **extra
        )
        yield from itertools.islice(listing, pages)


def _names(value: object) -> tuple[str, ...]:
    return tuple(item for item in value if isinstance(item, str)) if isinstance(value, list) else ()


def machine_path(machine: StateMachineArn) -> tuple[str, str, str, str]:
    """Bookkeeping is kept per machine (partition, account, region, name), never per name alone."""
    return machine.partition, machine.account, machine.region, machine.name
