"""What the bench's processes share: the account's SendTask* bucket, the drain leases, the run's bookkeeping.

bench/engine.py runs each shard's ``resumer`` invocations in a process of its
own (each Lambda invocation has a vCPU of its own; threads of one process share
one GIL). Every process keeps its own in-memory AWS, but three things are one
for all of them, as they are in AWS:

- the SendTask* token bucket (:class:`SharedTokenBucket`): the quota is per
  account and region, not per caller;
- the drain leases (:class:`SharedObjects`, served by :class:`SharingS3`): a
  lease is how one invocation learns that another drains a shard, and it
  decides whether an invocation fans out or takes a shard, so a copy per
  process would let two processes drain one shard;
- what the holder of a lease deleted (:class:`SharedObjects` again): it is
  published before the lease is given back and applied to a process's copy
  whenever it reads, takes or renews a lease, so a shard drained in one
  process and taken up later in another (or a token there claimed after a
  lease check) is seen as real S3 would show it, without the keys already
  resumed;
- the count of invocations asked for and not yet finished, the time cap and
  when the last invocation ended (:class:`RunState`): the parent ends the run
  once nothing runs anywhere and nothing can be asked for any more.

The objects are made in the parent from a "spawn" context and handed to the
processes when they start (shared memory and locks cannot travel in a queue).
"""

import math
import threading
import time
import uuid
from datetime import UTC, datetime
from multiprocessing.context import SpawnContext
from multiprocessing.managers import SyncManager
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.memory_aws import (
    Answer,
    AwsError,
    MemoryS3,
    TokenBucket,
    _bucket_and_key,
    _check_if_match,
    _etag,
    _header,
    _Object,
)


class SharedTokenBucket(TokenBucket):
    """:class:`TokenBucket` with its state in shared memory: one bucket for every process that takes from it.

    The arithmetic (``set``, ``take``, the refill) is TokenBucket's own; only
    where the numbers live differs. Times are ``time.monotonic()``, which on
    Linux (CLOCK_MONOTONIC) is one clock for every process of the machine.
    """

    _RATE, _BURST, _TOKENS, _AT, _EMPTY = range(5)

    def __init__(self, context: SpawnContext, rate: float = 0.0, burst: float = 0.0) -> None:
        # No super().__init__(): its attributes are the properties below, kept in self._state.
        self._clock = time.monotonic
        self._state = context.Array("d", 5, lock=False)
        self._lock = context.Lock()
        self.reset(rate, burst)

    def reset(self, rate: float, burst: float) -> None:
        """A full bucket of ``burst``, refilled at ``rate`` from now (a new scenario)."""
        with self._lock:
            self.rate, self.burst, self._tokens = rate, burst, burst
            self._at = self._clock()
            self.first_empty_at = None

    def _field(index: int) -> property:  # a helper of the class body only
        def get(self: "SharedTokenBucket") -> float:
            return float(self._state[index])

        def put(self: "SharedTokenBucket", value: float) -> None:
            self._state[index] = value

        return property(get, put)

    rate = _field(_RATE)
    burst = _field(_BURST)
    _tokens = _field(_TOKENS)
    _at = _field(_AT)
    del _field

    @property
    def first_empty_at(self) -> float | None:
        value = float(self._state[self._EMPTY])
        return None if math.isnan(value) else value

    @first_empty_at.setter
    def first_empty_at(self, value: float | None) -> None:
        self._state[self._EMPTY] = math.nan if value is None else value


class SharedObjects:
    """S3 objects every process sees alike (the leases), in a manager's dict, with S3's conditional writes."""

    def __init__(self, manager: SyncManager, context: SpawnContext) -> None:
        self._objects = manager.dict()
        self._gone = manager.list()  # (process, [(bucket, key), ...]): the deletes each process published
        self._lock = context.Lock()

    def clear(self) -> None:
        with self._lock:
            self._objects.clear()
            del self._gone[:]

    def publish(self, process: str, deleted: list[tuple[str, str]]) -> None:
        """Record the objects a process deleted in its own copy, for the others to apply."""
        self._gone.append((process, deleted))

    def gone_since(self, seen: int) -> list[tuple[str, list[tuple[str, str]]]]:
        """The batches of deletes published after the first ``seen``."""
        return list(self._gone[seen:])

    def handle(self, operation: str, key: str, body: bytes, headers: Any) -> Answer:
        with self._lock:
            current: _Object | None = self._objects.get(key)
            if operation == "PutObject":
                if _header(headers, "If-None-Match") == "*" and current is not None:
                    raise AwsError(
                        412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold"
                    )
                _check_if_match(current, _header(headers, "If-Match"))
                stored = _Object(
                    body, _etag(body), datetime.now(UTC), _header(headers, "Content-Type") or "binary/octet-stream"
                )
                self._objects[key] = stored
                return 200, {"ETag": stored.etag}, b""
            if operation == "DeleteObject":
                _check_if_match(current, _header(headers, "If-Match"))
                if current is not None:
                    del self._objects[key]
                return 204, {}, b""
        # GetObject, HeadObject
        return MemoryS3._answer_get(current, head=operation == "HeadObject")


class SharingS3(MemoryS3):
    """A process's own in-memory S3, except for keys under ``shared_prefixes``: those are :class:`SharedObjects`.

    Listing a shared prefix is not answered (nothing in a resume lists leases).
    """

    SHARED_OPERATIONS = ("PutObject", "GetObject", "HeadObject", "DeleteObject")

    def __init__(self, shared: SharedObjects, shared_prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self._shared = shared
        self._shared_prefixes = shared_prefixes
        self.shared_calls = 0
        self.written: set[str] = set()  # shared keys this process wrote (a lease it took)
        self._count_lock = threading.Lock()
        self._process = uuid.uuid4().hex  # which batches of deletes are this copy's own
        self._deleted: list[tuple[str, str]] = []  # deleted here and not yet published
        self._seen = 0  # batches of deletes already applied (or published) here
        self._sync_lock = threading.Lock()

    def handle(self, operation: str, request: Any, body: bytes) -> Answer:
        parts = urlsplit(request.url)
        _, key = _bucket_and_key(parts.hostname or "", parts.path)
        if key.startswith(self._shared_prefixes):
            if operation not in self.SHARED_OPERATIONS:
                raise NotImplementedError(f"the bench shares no {operation} of {key!r} between processes")
            # Before a lease is given back, what was deleted under it is published; when
            # one is read (a claimer checking it), taken or renewed, what the others
            # published is applied first, so no token they resumed is read here again.
            self.sync()
            answer = self._shared.handle(operation, key, body, request.headers)
            if operation == "PutObject":
                self.sync()
            with self._count_lock:
                self.shared_calls += 1
                if operation == "PutObject":
                    self.written.add(key)
            return answer
        if operation == "ListObjectsV2" and any(
            prefix.startswith(self._query_prefix(parts.query)) for prefix in self._shared_prefixes
        ):
            raise NotImplementedError("the bench does not list the objects it shares between processes")
        return super().handle(operation, request, body)

    def sync(self) -> None:
        """Publish the deletes made in this copy, then apply those the other processes published."""
        with self._sync_lock:
            with self._count_lock:
                mine, self._deleted = self._deleted, []
            if mine:
                self._shared.publish(self._process, mine)
            batches = self._shared.gone_since(self._seen)
            self._seen += len(batches)
            for process, deleted in batches:
                if process == self._process:
                    continue
                for bucket in {bucket for bucket, _ in deleted}:
                    self.drop(bucket, [key for each, key in deleted if each == bucket])

    def _removed(self, bucket: str, keys: list[str]) -> None:
        with self._count_lock:
            self._deleted.extend((bucket, key) for key in keys)

    @staticmethod
    def _query_prefix(query: str) -> str:
        return parse_qs(query, keep_blank_values=True).get("prefix", [""])[0] or "\0"


class RunState:
    """Across processes: invocations asked for and not finished, the time cap, when the last one ended."""

    _OUTSTANDING, _STOP_AT, _FINISHED_AT = range(3)

    def __init__(self, context: SpawnContext) -> None:
        self._state = context.Array("d", 3, lock=False)
        self._lock = context.Lock()

    def reset(self, stop_at: float) -> None:
        with self._lock:
            self._state[self._OUTSTANDING] = 0
            self._state[self._STOP_AT] = stop_at
            self._state[self._FINISHED_AT] = 0.0

    @property
    def stop_at(self) -> float:
        return float(self._state[self._STOP_AT])

    @property
    def outstanding(self) -> int:
        return int(self._state[self._OUTSTANDING])

    @property
    def finished_at(self) -> float:
        return float(self._state[self._FINISHED_AT])

    def ask(self) -> bool:
        """Count an invocation asked for, unless the time cap has passed (then it is dropped)."""
        with self._lock:
            if time.monotonic() >= self._state[self._STOP_AT]:
                return False
            self._state[self._OUTSTANDING] += 1
            return True

    def done(self) -> None:
        """An invocation ended (after any it asked for was counted, so the count reaches 0 only at the end)."""
        with self._lock:
            self._state[self._OUTSTANDING] -= 1
            if self._state[self._OUTSTANDING] <= 0:
                self._state[self._FINISHED_AT] = time.monotonic()
