"""Holds as records (chalicelib/holds.py): when one is active, what it covers, and the book's
conditional writes. End to end, on real executions, in test_holds_api.py."""

import threading
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.arns import parse_state_machine_arn
from chalicelib.commands import HoldLimits, parse_new_hold, parse_renew
from chalicelib.cron import Cron
from chalicelib.errors import InvalidInput
from chalicelib.holds import Book, Coverage, Hold, HoldBook, Recurrence, Scope
from chalicelib.store import TokenStore

ORDERS = parse_state_machine_arn("arn:aws:states:us-east-1:123456789012:stateMachine:orders-eu")
BILLING = parse_state_machine_arn("arn:aws:states:us-west-2:123456789012:stateMachine:billing")
T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
LIMITS = HoldLimits(default_ttl=3600, max_ttl=86_400)


def hold(scope: Scope, *, hours: float = 1, **extra: object) -> Hold:
    return Hold(
        hold_id=Hold.new_id(), scope=scope, by="ci", created_at=T0, expires_at=T0 + timedelta(hours=hours), **extra
    )


def weekly(schedule: str = "cron(0 2 ? * SUN *)", hours: float = 2, **extra: object) -> Hold:
    window = Recurrence(Cron.parse(schedule), timedelta(hours=hours))
    return hold(Scope(machines=(ORDERS.unqualified,)), hours=24 * 365, recurrence=window, **extra)


# -- what a hold covers


def test_a_hold_by_pattern_covers_the_machines_that_match_and_no_others():
    by_pattern = hold(Scope(machines=("arn:aws:states:*:123456789012:stateMachine:orders-*",)))

    assert by_pattern.covers(ORDERS, (), T0)
    assert not by_pattern.covers(BILLING, (), T0)


def test_a_hold_on_a_dependency_covers_only_checkpoints_that_guard_it():
    on_db = hold(Scope(guards=("orders-db",)))

    assert on_db.covers(BILLING, ("payments-api", "orders-db"), T0)
    assert not on_db.covers(BILLING, ("payments-api",), T0)
    assert not on_db.covers(ORDERS, (), T0)


def test_a_hold_ends_at_its_expiry_and_not_a_moment_before():
    one_hour = hold(Scope(guards=("orders-db",)))

    assert one_hour.active(T0 + timedelta(minutes=59, seconds=59))
    assert not one_hour.active(T0 + timedelta(hours=1))
    assert one_hour.ended(T0 + timedelta(hours=1))


def test_a_scheduled_hold_opens_at_its_start_and_says_when():
    later = hold(Scope(guards=("orders-db",)), hours=3, starts_at=T0 + timedelta(hours=2))

    assert not later.active(T0)
    assert later.next_opening(T0) == T0 + timedelta(hours=2)
    assert later.active(T0 + timedelta(hours=2))
    assert later.next_opening(T0 + timedelta(hours=2)) is None


# -- weekly windows, on a fake clock: every instant is given, none is read


@pytest.mark.parametrize(
    ("moment", "active"),
    [
        ("2026-12-06T01:59:59Z", False),  # Sunday, a second before the window
        ("2026-12-06T02:00:00Z", True),  # it opens
        ("2026-12-06T03:59:59Z", True),
        ("2026-12-06T04:00:00Z", False),  # it closes after its two hours
        ("2026-12-07T02:30:00Z", False),  # Monday
        ("2026-12-13T02:30:00Z", True),  # the next Sunday
    ],
)
def test_a_weekly_window_opens_and_closes_at_the_right_instants(moment, active):
    window = weekly()

    assert window.active(datetime.fromisoformat(moment)) is active


def test_a_weekly_window_says_when_it_next_opens_across_a_month_end():
    window = weekly()  # Sundays 02:00 UTC: 2027-01-31 is a Sunday, and so is 2027-02-07

    assert window.next_opening(datetime(2027, 1, 30, 23, 0, tzinfo=UTC)) == datetime(2027, 1, 31, 2, 0, tzinfo=UTC)
    assert window.next_opening(datetime(2027, 1, 31, 2, 0, tzinfo=UTC)) == datetime(2027, 2, 7, 2, 0, tzinfo=UTC)
    assert window.active(datetime(2027, 1, 31, 3, 0, tzinfo=UTC))


def test_a_window_crossing_midnight_and_a_year_end_stays_open_until_its_duration_ends():
    # Every day at 23:00 for three hours: the last of 2026 closes at 02:00 on 1 January.
    nightly = weekly("cron(0 23 * * ? *)", hours=3)

    assert nightly.active(datetime(2027, 1, 1, 1, 59, tzinfo=UTC))
    assert not nightly.active(datetime(2027, 1, 1, 2, 0, tzinfo=UTC))


def test_a_window_never_outlives_its_series():
    window = weekly()
    ends = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
    shortened = Hold(**{**window.__dict__, "expires_at": ends})

    assert shortened.active(datetime(2026, 12, 6, 2, 59, tzinfo=UTC))
    assert not shortened.active(ends)
    assert shortened.next_opening(datetime(2026, 12, 6, 2, 59, tzinfo=UTC)) is None


def test_a_hold_survives_its_round_trip_through_the_book():
    original = weekly(reason="db migration", starts_at=T0 + timedelta(days=1))

    assert Hold.from_dict(original.as_dict()) == original


# -- requests


def test_a_hold_without_a_ttl_gets_the_default_and_one_past_the_maximum_is_refused():
    assert parse_new_hold({"guards": ["orders-db"]}, LIMITS, T0).expires_at == T0 + timedelta(hours=1)

    with pytest.raises(InvalidInput, match="ttlSeconds: expected at least 1 and at most 86400"):
        parse_new_hold({"guards": ["orders-db"], "ttlSeconds": 86_401}, LIMITS, T0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "stateMachineArns: is required"),
        ({"guards": ["orders db"]}, r"guards\[0\]: expected 1-64 letters"),
        ({"guards": ["a"] * 11}, "guards: expected at most 10 items"),
        ({"stateMachineArns": ["orders-*"]}, r"stateMachineArns\[0\]: expected an ARN"),
        ({"guards": ["db"], "ttlSeconds": 60, "expiresAt": "2026-12-02T13:00:00Z"}, "expiresAt: give either"),
        ({"guards": ["db"], "expiresAt": "2026-12-04T13:00:00Z"}, "expiresAt: a hold may last at most 86400"),
        ({"guards": ["db"], "startsAt": "2026-12-01T00:00:00Z"}, "startsAt: is in the past"),
        ({"guards": ["db"], "recurrence": {"schedule": "cron(0 2 * * * *)", "durationSeconds": 60}}, "recurrence"),
        ({"guards": ["db"], "recurrence": {"schedule": "cron(0 2 ? * SUN *)"}}, "recurrence.durationSeconds"),
        ({"guards": ["db"], "ttl": 60}, "ttl: unknown field"),
    ],
)
def test_a_bad_hold_request_names_its_field(body, message):
    with pytest.raises(InvalidInput, match=message):
        parse_new_hold(body, LIMITS, T0)


def test_a_null_field_of_a_new_hold_is_one_left_out():
    # JSON clients (and the CLI's templates) send null for an option they do not set.
    parsed = parse_new_hold(
        {"guards": ["db"], "stateMachineArns": None, "ttlSeconds": 120, "expiresAt": None, "recurrence": None},
        LIMITS,
        T0,
    )

    assert (parsed.machines, parsed.guards, parsed.expires_at) == ((), ("db",), T0 + timedelta(seconds=120))
    with pytest.raises(InvalidInput, match="stateMachineArns: is required"):
        parse_new_hold({"guards": None, "stateMachineArns": None}, LIMITS, T0)


def test_a_renew_without_a_body_takes_the_default_ttl():
    assert parse_renew({}, LIMITS) == 3600
    assert parse_renew({"ttlSeconds": 120}, LIMITS) == 120


# -- the book: one document, changed only conditionally


@pytest.fixture
def book(aws, bucket):
    return HoldBook(TokenStore(aws.s3, bucket, "tokens/"), cache_seconds=0)


def test_concurrent_changes_of_the_book_all_land(book):
    # Pipelines take and release holds at the same moment: each change is an If-Match
    # write of the version it read, so none overwrites another's.
    taken = [hold(Scope(guards=(f"db-{n}",))) for n in range(8)]

    def take(one: Hold) -> None:
        book.change(lambda current: ([*current.holds, one], None))

    threads = [threading.Thread(target=take, args=(one,)) for one in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert {each.hold_id for each in book.read().holds} == {each.hold_id for each in taken}


def test_a_release_racing_a_new_hold_removes_only_the_released_one(book):
    first, second = hold(Scope(guards=("orders-db",))), hold(Scope(guards=("orders-db",)))
    book.change(lambda current: ([first], None))
    barrier = threading.Barrier(2)

    def release() -> None:
        barrier.wait()
        book.change(lambda current: ([h for h in current.holds if h.hold_id != first.hold_id], None))

    def take() -> None:
        barrier.wait()
        book.change(lambda current: ([*current.holds, second], None))

    threads = [threading.Thread(target=release), threading.Thread(target=take)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [each.hold_id for each in book.read().holds] == [second.hold_id]
    coverage = Coverage(book, now=lambda: T0)
    assert coverage.task_held(ORDERS, ("orders-db",)) == {second.hold_id}


def test_an_entry_this_version_cannot_read_is_kept_through_changes(book, aws, bucket):
    aws.s3.put_object(Bucket=bucket, Key=book.key, Body=b'{"holds": [{"holdId": "from-a-later-version"}]}')

    book.change(lambda current: ([hold(Scope(guards=("db",)))], None))

    assert book.read().unreadable == ({"holdId": "from-a-later-version"},)


def test_a_dependency_hold_covers_only_checkpoints_of_machines_within_the_allow_list(book):
    # Outside the list nothing would resume it: the release and the sweep act only within it.
    book.change(lambda current: ([hold(Scope(guards=("orders-db",)))], None))
    only_orders = Coverage(book, allowed=(f"{ORDERS.unqualified}",), now=lambda: T0)

    assert only_orders.holds_on(ORDERS, ("orders-db",))
    assert only_orders.holds_on(BILLING, ("orders-db",)) == []


def test_a_pattern_hold_covers_only_machines_within_the_allow_list(book):
    book.change(lambda current: ([hold(Scope(machines=("arn:aws:states:*:*:stateMachine:*",)))], None))
    only_orders = Coverage(book, allowed=(f"{ORDERS.unqualified}",), now=lambda: T0)

    assert only_orders.holds_on(ORDERS)
    assert not only_orders.holds_on(BILLING)
    assert only_orders.holds_on(BILLING, ("anything",)) == []


def test_an_empty_book_is_no_hold():
    assert Book().covering(ORDERS, ("orders-db",), T0) == []
