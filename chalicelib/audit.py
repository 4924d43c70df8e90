"""The audit trail: one S3 object per action, written once and never rewritten.

``{Prefix}_sfn-pauser/audit/{partition}/{account}/{region}/{Name}/{inverted ms}-{id}.json``
for a machine, ``{Prefix}_sfn-pauser/audit/holds/{holdId}/{inverted ms}-{id}.json`` for a
hold: the inverted timestamp makes S3's ascending listing newest first, so a page of
a trail is one ListObjectsV2 call plus one GET per event shown.
"""

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from chalicelib.arns import StateMachineArn
from chalicelib.flag import parse_instant
from chalicelib.store import TokenStore, iso_timestamp, machine_path

_LATEST_MS = 10**13 - 1  # year 2286: 13 digits keep every key the same length


class AuditTrail:
    def __init__(self, store: TokenStore, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = store
        self._now = now

    def record(
        self, machine: StateMachineArn, action: str, actor: str, at: str | None = None, **details: Any
    ) -> dict[str, Any]:
        """Write one event; ``at`` is when it took effect (a switch's moment in the flag mirror), else now."""
        moment = parse_instant(at) if at else None
        at = moment or self._now()
        ms = int(at.timestamp() * 1000)
        key = self._folder(machine) + f"{_LATEST_MS - ms:013d}-{uuid.uuid4().hex[:12]}.json"
        event = {
            "at": iso_timestamp(at),
            "action": action,
            "stateMachineArn": machine.unqualified,
            "actor": actor,
            **{name: value for name, value in details.items() if value is not None},
        }
        self._store.create(key, event)
        return event

    def record_hold(self, hold_id: str, action: str, actor: str, at: datetime | None = None, **details: Any) -> None:
        """One event in a hold's history (``audit/holds/{holdId}/``): taken, renewed, released, expired."""
        at = at or self._now()
        ms = int(at.timestamp() * 1000)
        key = self._hold_folder(hold_id) + f"{_LATEST_MS - ms:013d}-{uuid.uuid4().hex[:12]}.json"
        event = {"at": iso_timestamp(at), "action": action, "holdId": hold_id, "actor": actor}
        self._store.create(key, {**event, **{name: value for name, value in details.items() if value is not None}})

    def page(self, machine: StateMachineArn, limit: int, after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """Up to ``limit`` of a machine's events, newest first, and the key to start the next page after."""
        return self._page(self._folder(machine), limit, after)

    def hold_page(self, hold_id: str, limit: int, after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """Up to ``limit`` of a hold's events, newest first, whether the hold has ended or not."""
        return self._page(self._hold_folder(hold_id), limit, after)

    def _page(self, folder: str, limit: int, after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        keys, next_key = self._store.list_page(folder, limit, after)
        events = [found[0] for key in keys if (found := self._store.get_document(key))]
        return events, next_key

    def _folder(self, machine: StateMachineArn) -> str:
        return self._store.control_key("audit", *machine_path(machine), "")

    def _hold_folder(self, hold_id: str) -> str:
        return self._store.control_key("audit", "holds", hold_id, "")
