"""The holds API: take, renew, release and see holds (chalicelib/holds.py says what a hold is).

Every action is recorded in the audit trail, under ``audit/holds/``. Releasing a
hold resumes at once what no other hold (and no ``Maintenance`` tag) still
covers, in this function's account; what it cannot reach (another account
sharing the bucket) is resumed by that account's sweep.
"""

from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.arns import AccountRegion, StateMachineArn, parse_state_machine_arn
from chalicelib.audit import AuditTrail
from chalicelib.commands import HoldsQuery, NewHold, Page, ResumeHeld, SwitchMaintenance, encode_next_token
from chalicelib.continuation import Drainer
from chalicelib.cron import Cron
from chalicelib.deadline import Deadline
from chalicelib.errors import HoldNotFound, MaintenanceIsOn, TooManyHolds, aws_errors_as_http
from chalicelib.fleet import known_machines
from chalicelib.holds import MAX_HOLDS, MAX_SERIES, TAG_HOLD, Book, Hold, HoldBook, Recurrence, Scope
from chalicelib.maintenance import MaintenanceControl
from chalicelib.sections import SHOWN, Sections
from chalicelib.store import TokenStore, iso_timestamp


class HoldControl:
    def __init__(
        self,
        book: HoldBook,
        control: MaintenanceControl,
        drainer: Drainer,
        store: TokenStore,
        audit: AuditTrail,
        sections: Sections,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sections = sections
        self._book = book
        self._control = control
        self._drainer = drainer
        self._store = store
        self._audit = audit
        self._now = now

    @aws_errors_as_http
    def take(self, new: NewHold, actor: str) -> dict[str, Any]:
        """``POST /holds``: a new hold, in effect for every checkpoint it covers within the cache period."""
        for arn in new.machines:
            if "*" not in arn and "?" not in arn:
                self._control.check(_machine(arn))  # 403 outside the allow-list, 404 for none such
        now = self._now()
        hold = Hold(
            hold_id=Hold.new_id(),
            scope=Scope(new.machines, new.guards),
            by=actor,
            created_at=now,
            expires_at=new.expires_at,
            reason=new.reason,
            starts_at=new.starts_at,
            recurrence=Recurrence(Cron.parse(new.recurrence[0]), timedelta(seconds=new.recurrence[1]))
            if new.recurrence
            else None,
        )

        def add(book: Book) -> tuple[list[Hold], None]:
            current = [each for each in book.holds if not each.ended(now)]
            if len(current) >= MAX_HOLDS:
                raise TooManyHolds(
                    f"holds: this bucket already has {len(current)} holds, the most a checkpoint reads "
                    f"({MAX_HOLDS}); release some, or scope one hold more widely"
                )
            return [*book.holds, hold], None

        self._book.change(add)
        self._audit.record_hold(hold.hold_id, "hold", actor, at=hold.created_at, hold=hold.as_dict())
        return {
            **hold.as_dict(now),
            "affected": [str(machine) for machine in self.affected(hold)],
            # Warm task handlers reuse the holds they read for MaintenanceCacheSeconds.
            "effectiveWithinSeconds": self._control.cache_seconds,
        }

    @aws_errors_as_http
    def renew(self, hold_id: str, ttl_seconds: int, actor: str) -> dict[str, Any]:
        """``POST /holds/{holdId}/renew``: the hold lasts ``ttl_seconds`` from now (a series, a year)."""
        now = self._now()

        def extend(book: Book) -> tuple[list[Hold], Hold]:
            hold = book.get(hold_id)
            if hold is None or hold.ended(now):
                raise HoldNotFound(f"holdId: {hold_id} has ended (released or expired) or never existed")
            if hold.recurrence is not None:
                expires_at = now + MAX_SERIES
            else:
                expires_at = max(now, hold.starts_at or now) + timedelta(seconds=ttl_seconds)
            longer = replace(hold, expires_at=expires_at)
            return [longer if each.hold_id == hold_id else each for each in book.holds], longer

        _, hold = self._book.change(extend)
        self._audit.record_hold(hold_id, "renew", actor, expiresAt=hold.as_dict()["expiresAt"])
        return hold.as_dict(now)

    @aws_errors_as_http
    def release(self, hold_id: str, actor: str, deadline: Deadline, home: AccountRegion | None) -> dict[str, Any]:
        """``DELETE /holds/{holdId}``: end the hold, and resume what nothing else covers. Idempotent.

        Only machines in ``home``'s account (this function's) are resumed here: this
        role cannot answer another account's tokens (AWS would call them invalid, and
        they would be quarantined). Their own sweep resumes them (``otherAccounts``).
        """
        _, ended = self._book.change(lambda book: _without(book, {hold_id}))
        if not ended:
            return {"holdId": hold_id, "released": False, "resumed": {}, "stillHeld": []}
        self._audit.record_hold(hold_id, "released", actor)
        machines = self.affected(ended[0])
        ours = [m for m in machines if home is None or (m.partition, m.account) == (home.partition, home.account)]
        resumed, still_held = self.lift(ours, deadline)
        answer = {"holdId": hold_id, "released": True, "resumed": resumed, "stillHeld": still_held}
        if len(ours) < len(machines):
            answer["otherAccounts"] = [str(machine) for machine in machines if machine not in ours]
        return answer

    def end_covering(self, machines: Iterable[StateMachineArn], actor: str, *, dry_run: bool) -> dict[str, list[str]]:
        """End every hold that covers one of ``machines`` (``POST /maintenance`` with ``force``).

        One change of the book for them all. Answers, for each machine, the ids of
        the holds that ended (with ``dry_run``, that would end: nothing is written).
        """
        book = self._book.read()
        covering = {
            machine.unqualified: {hold.hold_id for hold in self.covering(machine, book)} for machine in machines
        }
        every = set().union(*covering.values())
        if not every or dry_run:
            return {arn: sorted(ids) for arn, ids in covering.items()}
        _, ended = self._book.change(lambda latest: _without(latest, every))
        ended_ids = {hold.hold_id for hold in ended or ()}
        for hold in ended or ():
            arns = sorted(arn for arn, ids in covering.items() if hold.hold_id in ids)
            self._audit.record_hold(hold.hold_id, "forced-off", actor, stateMachineArns=arns)
        return {arn: sorted(ids & ended_ids) for arn, ids in covering.items()}

    def lift(
        self, machines: Iterable[StateMachineArn], deadline: Deadline
    ) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """Resume, in each machine, what no hold covers any more; say what is still held and by what."""
        resumed: dict[str, int] = {}
        still_held: list[dict[str, Any]] = []
        book = self._book.read()
        for machine in machines:
            held_by = self.held_by(machine, book, guards=False)
            if held_by:
                still_held.append({"stateMachineArn": machine.unqualified, "heldBy": held_by})
                continue
            report = self._drainer.drain(machine, deadline)
            resumed[machine.unqualified] = report.resumed
            if report.held:
                still_held.append({"stateMachineArn": machine.unqualified, "heldBy": sorted(report.held_by)})
        return resumed, still_held

    @aws_errors_as_http
    def get(self, hold_id: str) -> dict[str, Any]:
        now = self._now()
        hold = self._book.read().get(hold_id)
        if hold is None or hold.ended(now):
            raise HoldNotFound(f"holdId: {hold_id} has ended (released or expired) or never existed")
        affected = self.affected(hold)
        return {**hold.as_dict(now), "affected": [str(machine) for machine in affected], **self._drain(hold, affected)}

    @aws_errors_as_http
    def audit(self, hold_id: str, page: Page) -> dict[str, Any]:
        """``GET /holds/{holdId}/audit``: who took, renewed, released or ended the hold, newest first.

        Read from the trail, not the book, so it answers for a hold that has ended too
        (which ``GET /holds/{holdId}`` no longer knows). 404 for an id with no event at all.
        """
        events, next_key = self._audit.hold_page(hold_id, page.limit, page.next_token)
        # A page past the end of a real hold's history is empty, not missing: its first page says which.
        if not events and (page.next_token is None or not self._audit.hold_page(hold_id, 1, None)[0]):
            raise HoldNotFound(
                f"holdId: {hold_id} has no recorded history (never taken here, or past AuditRetentionDays)"
            )
        return {"holdId": hold_id, "events": events, "nextToken": encode_next_token(next_key)}

    def _drain(self, hold: Hold, machines: list[StateMachineArn]) -> dict[str, Any]:
        """Whether the hold's scope is drained: it is active and nobody is inside a section it covers."""
        inside, capped, shown, oldest = 0, False, [], None
        for machine in machines:
            # A hold on the machine covers every section of it; one on a dependency only the
            # executions whose checkpoint guards it.
            guards = None if hold.scope.covers_machine(machine) else frozenset(hold.scope.guards)
            occupancy = self._sections.occupancy(machine, guards)
            inside += occupancy.count
            capped |= occupancy.capped
            if occupancy.oldest is not None and (oldest is None or occupancy.oldest < oldest):
                oldest = occupancy.oldest
            shown += [{"stateMachineArn": machine.unqualified, **each.as_dict()} for each in occupancy.shown]
        shown.sort(key=lambda each: str(each["since"]))
        return {
            "drained": hold.active(self._now()) and inside == 0 and not capped,
            "inside": inside,
            "insideCapped": capped,
            "oldestInsideAt": iso_timestamp(oldest) if oldest else None,
            "insideExecutions": shown[:SHOWN],
        }

    @aws_errors_as_http
    def listing(self, query: HoldsQuery) -> dict[str, Any]:
        """``GET /holds``: the holds that have not ended, by id, filtered and paged."""
        now = self._now()
        book = self._book.read()
        holds = sorted((hold for hold in book.holds if not hold.ended(now)), key=lambda hold: hold.hold_id)
        if query.machine is not None:
            covering = {hold.hold_id for hold in self.covering(query.machine, book, active_only=False)}
            holds = [hold for hold in holds if hold.hold_id in covering]
        if query.guard is not None:
            holds = [hold for hold in holds if query.guard in hold.scope.guards]
        if query.next_token:
            holds = [hold for hold in holds if hold.hold_id > query.next_token]
        page = holds[: query.limit]
        more = len(holds) > query.limit
        return {
            "holds": [hold.as_dict(now) for hold in page],
            "nextToken": encode_next_token(page[-1].hold_id) if more else None,
        }

    # -- maintenance, with holds

    @aws_errors_as_http
    def switch(self, command: SwitchMaintenance, actor: str, deadline: Deadline) -> dict[str, Any]:
        """``POST /maintenance``: the tag (the machine's manual hold), and the holds beside it.

        Switching off ends the tag only; ``stillHeldBy`` names the holds that keep
        the machine (or checkpoints of it) held. With ``force``, every hold
        covering the machine ends too (each recorded in the audit trail).
        """
        forced: dict[str, list[str]] = {}
        if command.force:
            # Only the machines the switch itself accepts: one it refuses (403, 404, ...)
            # answers its own error, in bulk beside the others, and keeps its holds.
            accepted = [machine for machine in command.machines if self._control.accepts(machine, bulk=command.bulk)]
            forced = self.end_covering(accepted, actor, dry_run=command.dry_run)
        result = self._control.switch_all(command, actor, deadline)
        if command.enabled:
            return result
        book = self._book.read()
        for entry in result["results"] if command.bulk else [result]:
            if "error" in entry:
                continue
            machine = _machine(entry["stateMachineArn"])
            if command.force:
                entry["endedHolds"] = forced.get(machine.unqualified, [])
            if command.dry_run:
                continue
            still = [why for why in self.held_by(machine, book) if why != TAG_HOLD]
            if still:
                # Only with holds in play, so the answer without them is the seed-era one.
                entry["stillHeldBy"] = still
                entry["maintenance"] = bool(self.machine_holds(machine, book))
        return result

    @aws_errors_as_http
    def overview(self, page: Page) -> dict[str, Any]:
        """``GET /maintenance``: the machines in maintenance or holding tokens; a hold on a machine is on."""
        book = self._book.read()
        now = self._now()
        # Machines named in an active hold are in maintenance, held executions or not.
        named = {
            _machine(arn)
            for hold in book.holds
            if hold.active(now)
            for arn in hold.scope.machines
            if "*" not in arn and "?" not in arn
        }
        answer = self._control.overview(page, named, held=lambda machine: bool(self.machine_holds(machine, book)))
        for entry in answer["stateMachines"]:
            if "error" not in entry:
                holds = self.machine_holds(_machine(entry["stateMachineArn"]), book)
                entry["maintenance"] = entry["maintenance"] or bool(holds)
                if holds:
                    entry["holds"] = sorted(hold.hold_id for hold in holds)
        return answer

    @aws_errors_as_http
    def status(self, machine: StateMachineArn) -> dict[str, Any]:
        """``GET /maintenance?stateMachineArn=``: the flag and counts, and the holds that cover it."""
        status = self._control.status(machine)
        book = self._book.read()
        now = self._now()
        holds = self.covering(machine, book, active_only=False)
        status["heldBy"] = self.held_by(machine, book)
        status["maintenance"] = status["maintenance"] or bool(self.machine_holds(machine, book))
        status["holds"] = [hold.as_dict(now) for hold in holds]
        # Drained: maintenance on (by the tag or any hold) and nobody inside its protected section.
        occupancy = self._sections.occupancy(machine)
        status.update(occupancy.as_dict())
        status["drained"] = bool(status["heldBy"]) and occupancy.count == 0 and not occupancy.capped
        return status

    @aws_errors_as_http
    def resume(self, command: ResumeHeld, actor: str, deadline: Deadline) -> dict[str, Any]:
        """``POST /resume``: refused (409) while a hold covers the machine, unless forced."""
        machine = command.machine
        if not command.force:
            holds = [hold.hold_id for hold in self.machine_holds(machine, self._book.read())]
            if holds:
                self._control.check(machine)  # a machine absent or not allowed answers that, not 409
                raise MaintenanceIsOn(
                    f"stateMachineArn: holds cover {machine.unqualified} ({', '.join(holds)}); release them, "
                    'or send "force": true to resume anyway'
                )
        return self._control.resume(command, actor, deadline)

    # -- which machines a hold covers

    def affected(self, hold: Hold) -> list[StateMachineArn]:
        """The machines the hold covers now: named or matched ones this sfn-pauser knows and may
        act on, and those whose checkpoints have declared one of its guards."""
        found: dict[str, StateMachineArn] = {}
        for arn in hold.scope.machines:
            if "*" not in arn and "?" not in arn:
                found[arn] = _machine(arn)
        if any("*" in arn or "?" in arn for arn in hold.scope.machines):
            for machine in known_machines(self._control.flag, self._store).machines:
                if hold.scope.covers_machine(machine):
                    found[machine.unqualified] = machine
        for guard in hold.scope.guards:
            for machine in self._store.guarded_by(guard):
                found[machine.unqualified] = machine
        return sorted((m for m in found.values() if self._control.allows(m)), key=str)

    def covering(self, machine: StateMachineArn, book: Book, *, active_only: bool = True) -> list[Hold]:
        """The holds that cover the machine, or one of its checkpoints (by the guards it declared)."""
        now = self._now()
        guards = self._guards_of(machine, book)
        return [
            hold
            for hold in book.holds
            if not hold.ended(now)
            and (hold.active(now) or not active_only)
            and (hold.scope.covers_machine(machine) or hold.scope.covers_guards(guards))
        ]

    def held_by(self, machine: StateMachineArn, book: Book, *, guards: bool = True) -> list[str]:
        """Why maintenance is on for the machine: ``tag``, and the ids of the holds covering it
        (with ``guards``, also those on a dependency one of its checkpoints guards)."""
        reasons = [TAG_HOLD] if self._control.flag.current(machine).effective(self._now()) else []
        holds = self.covering(machine, book) if guards else self.machine_holds(machine, book)
        return reasons + sorted(hold.hold_id for hold in holds)

    def machine_holds(self, machine: StateMachineArn, book: Book | None = None) -> list[Hold]:
        """The active holds on the machine itself (by ARN or pattern), from this container's
        copy of the book unless one is given."""
        book = book or self._book.cached()
        now = self._now()
        return [hold for hold in book.holds if hold.active(now) and hold.scope.covers_machine(machine)]

    def end_expired(self, actor: str) -> list[Hold]:
        """Remove the holds whose ``expiresAt`` has passed (the sweep's); what they held resumes
        as the sweep drains each machine that nothing covers any more."""
        now = self._now()
        _, ended = self._book.change(lambda book: _without(book, {h.hold_id for h in book.holds if h.ended(now)}))
        for hold in ended or ():
            self._audit.record_hold(hold.hold_id, "expired", actor, at=hold.expires_at)
        return list(ended or ())

    def _guards_of(self, machine: StateMachineArn, book: Book) -> set[str]:
        wanted = {guard for hold in book.holds for guard in hold.scope.guards}
        return {
            guard
            for guard in wanted
            if any(other.unqualified == machine.unqualified for other in self._store.guarded_by(guard))
        }


def _without(book: Book, hold_ids: set[str]) -> tuple[list[Hold], list[Hold]] | None:
    ended = [hold for hold in book.holds if hold.hold_id in hold_ids]
    if not ended:
        return None
    return [hold for hold in book.holds if hold.hold_id not in hold_ids], ended


def _machine(arn: str) -> StateMachineArn:
    return parse_state_machine_arn(arn, field="stateMachineArns")
