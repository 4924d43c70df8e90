"""The token store on S3 (moto): the key and body layout, listing, and what is never a token."""

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import boto3
import pytest
from moto import mock_aws

from chalicelib.arns import parse_state_machine_arn
from chalicelib.config import Settings
from chalicelib.events import parse_checkpoint_event
from chalicelib.store import (
    Counted,
    TokenStore,
    UnreadableHeldTask,
    machine_tag,
    machine_tag_of,
    new_token_id,
    paused_at_of,
)
from tests.conftest import BUCKET
from tests.harness import REGION

ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:Orders"
ORDERS = parse_state_machine_arn(ARN)
EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:Orders:run-1"
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
NOON = datetime(2023, 12, 1, 12, 34, 56, 789000, tzinfo=UTC)


@pytest.fixture(scope="module")
def s3_client():
    return boto3.client("s3", region_name=REGION)


@pytest.fixture
def s3(s3_client):
    """A fresh moto S3 with the bucket. The client is shared: creating one costs more than a test."""
    with mock_aws():
        s3_client.create_bucket(Bucket=BUCKET)
        yield s3_client


def make_store(s3, prefix="tokens/"):
    # Through Settings, as the app does, so the Prefix is normalised the same way.
    settings = Settings.from_env({"Bucket": BUCKET, "Prefix": prefix})
    return TokenStore(s3, settings.bucket, settings.prefix)


def event(token="token-1", arn=ARN, **fields):
    return parse_checkpoint_event({"taskToken": token, "stateMachineArn": arn, **fields})


def body_of(s3, key):
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def put(s3, key, body):
    s3.put_object(Bucket=BUCKET, Key=key, Body=body if isinstance(body, bytes) else json.dumps(body).encode())


@pytest.mark.parametrize(
    ("prefix", "folder"),
    [
        ("", "Orders/"),
        ("tokens", "tokens/Orders/"),
        ("tokens/", "tokens/Orders/"),
        ("/tokens", "tokens/Orders/"),
    ],
)
def test_saves_a_held_task_as_prefix_name_uuid_json(s3, prefix, folder):
    key = make_store(s3, prefix).save(event())

    assert re.fullmatch(re.escape(folder) + UUID + r"\.json", key)
    assert body_of(s3, key)["taskToken"] == "token-1"


def test_the_key_is_a_version_8_uuid_carrying_the_pause_time_and_the_machine(s3):
    key = make_store(s3).save(event(), now=NOON)

    token_id = uuid.UUID(key.rsplit("/", 1)[-1].removesuffix(".json"))
    # RFC 9562's custom layout: UUIDv7's time bits, then a tag naming the machine.
    assert token_id.version == 8
    assert token_id.variant == uuid.RFC_4122
    # So a listing, sorted by key, is in pause order.
    assert paused_at_of(str(token_id)) == NOON
    assert machine_tag_of(str(token_id)) == machine_tag(parse_state_machine_arn(ARN))


def test_a_version_or_alias_arn_saves_into_the_machine_folder(s3):
    key = make_store(s3).save(event(arn=ARN + ":PROD"))

    assert key.startswith("tokens/Orders/")


def test_the_body_has_the_token_a_utc_millisecond_timestamp_and_who_is_held(s3):
    key = make_store(s3).save(event(executionArn=EXECUTION, input={"order": 7}), now=NOON)

    body = body_of(s3, key)
    assert body["taskToken"] == "token-1"
    assert body["timestamp"] == "2023-12-01T12:34:56.789Z"
    assert body["executionArn"] == EXECUTION
    assert body["input"] == {"order": 7}
    assert body["stateMachineArn"] == ARN


def test_the_timestamp_is_utc_whatever_the_clock_zone(s3):
    one_hour_east = datetime(2023, 12, 1, 13, 34, 56, 789000, tzinfo=timezone(timedelta(hours=1)))

    key = make_store(s3).save(event(), now=one_hour_east)

    assert body_of(s3, key)["timestamp"] == "2023-12-01T12:34:56.789Z"


def test_the_timestamp_of_a_save_without_a_given_time_is_now(s3):
    before = datetime.now(UTC) - timedelta(seconds=1)

    timestamp = body_of(s3, make_store(s3).save(event()))["timestamp"]

    assert TIMESTAMP.fullmatch(timestamp)
    assert before <= datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def test_input_is_saved_only_when_the_event_has_one(s3):
    store = make_store(s3)

    without = body_of(s3, store.save(event()))
    with_null = body_of(s3, store.save(event(token="token-2", input=None)))

    assert "input" not in without
    assert "executionArn" not in without
    # A null input is still an input: it goes back to the workflow as null.
    assert "input" in with_null and with_null["input"] is None


def test_two_tasks_paused_in_the_same_millisecond_get_two_keys(s3):
    store = make_store(s3)

    keys = {store.save(event(token="a"), now=NOON), store.save(event(token="b"), now=NOON)}

    assert len(keys) == 2
    assert sorted(body_of(s3, key)["taskToken"] for key in keys) == ["a", "b"]


def test_lists_held_tasks_oldest_first(s3):
    store = make_store(s3)
    for minutes, token in [(30, "third"), (10, "first"), (20, "second")]:
        store.save(event(token=token), now=NOON + timedelta(minutes=minutes))

    held = list(store.held("Orders"))

    assert [store.load(item.key).task_token for item in held] == ["first", "second", "third"]
    assert [item.paused_at for item in held] == sorted(item.paused_at for item in held)


def test_a_machine_with_nothing_held_lists_nothing(s3):
    assert list(make_store(s3).held("Orders")) == []


@pytest.mark.parametrize("prefix", ["", "tokens", "tokens/"])
def test_reads_tasks_the_original_sfn_pauser_saved(s3, prefix):
    # The seed's layout: a random UUID4 name and a body of only taskToken and timestamp.
    store = make_store(s3, prefix)
    legacy_key = f"{store.prefix}Orders/{uuid.uuid4()}.json"
    put(s3, legacy_key, {"taskToken": "seed-token", "timestamp": "2023-12-01T12:34:56.789Z"})

    [held] = list(store.held("Orders"))
    task = store.load(held.key)

    assert held.key == legacy_key
    assert task.task_token == "seed-token"
    assert task.timestamp == "2023-12-01T12:34:56.789Z"
    assert task.execution_arn is None
    assert task.state_machine_arn is None
    assert task.output == "{}"  # what the seed sent back


def test_orders_legacy_tasks_among_new_ones_by_when_they_were_written(s3):
    store = make_store(s3)
    now = datetime.now(UTC)
    store.save(event(token="new-later"), now=now + timedelta(hours=1))
    put(s3, f"tokens/Orders/{uuid.uuid4()}.json", {"taskToken": "legacy-now", "timestamp": "x"})
    store.save(event(token="new-earlier"), now=now - timedelta(hours=1))

    tokens = [store.load(item.key).task_token for item in store.held("Orders")]

    assert tokens == ["new-earlier", "legacy-now", "new-later"]


@pytest.mark.parametrize("prefix", ["", "tokens", "tokens/"])
def test_objects_with_any_other_name_are_never_taken_for_tokens(s3, prefix):
    store = make_store(s3, prefix)
    real = store.save(event())
    p = store.prefix
    name = f"{uuid.uuid4()}.json"
    for key in [
        f"{p}Orders/notes.txt",
        f"{p}Orders/x.json",
        f"{p}Orders/{name}.bak",
        f"{p}Orders/{name.removesuffix('.json')}",
        f"{p}Orders/sub/{name}",  # nested one level down
        f"{p}Orders/{uuid.uuid4().hex}.json",  # a UUID without its dashes
        f"{p}_sfn-pauser/quarantine/Orders/{name}",
        f"{p}_sfn-pauser/claims/Orders/{name}",
        f"{p}_sfn-pauser/Orders/{name}",
        f"{p}Orders-2/{name}",  # another machine whose name starts the same
        f"{p}orders/{name}",  # names are case-sensitive
        f"elsewhere/Orders/{name}",
    ]:
        put(s3, key, {"taskToken": "not-a-held-task", "timestamp": "2023-12-01T12:34:56.789Z"})

    assert [item.key for item in store.held("Orders")] == [real]


def test_load_returns_none_for_a_task_another_resumer_already_took(s3):
    store = make_store(s3)
    key = store.save(event())
    store.delete(key)

    assert store.load(key) is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00garbage",
        b"[1, 2]",
        b'"taskToken"',
        b"{}",
        b'{"timestamp": "2023-12-01T12:34:56.789Z"}',
        b'{"taskToken": ""}',
        b'{"taskToken": 42}',
        b'{"taskToken": null}',
    ],
    ids=[
        "empty",
        "not-json",
        "not-utf8",
        "array",
        "string",
        "empty-object",
        "no-token",
        "empty-token",
        "numeric-token",
        "null-token",
    ],
)
def test_a_body_without_a_usable_token_is_unreadable_and_names_the_key(s3, body):
    key = f"tokens/Orders/{uuid.uuid4()}.json"
    put(s3, key, body)

    with pytest.raises(UnreadableHeldTask) as raised:
        make_store(s3).load(key)

    assert key in str(raised.value)


def test_load_reads_back_what_save_wrote(s3):
    store = make_store(s3)
    key = store.save(event(executionArn=EXECUTION, input=[1, "two", None]), now=NOON)

    task = store.load(key)

    assert task.key == key
    assert task.task_token == "token-1"
    assert task.timestamp == "2023-12-01T12:34:56.789Z"
    assert task.execution_arn == EXECUTION
    assert parse_state_machine_arn(task.state_machine_arn).unqualified == ARN
    assert json.loads(task.output) == [1, "two", None]


@pytest.mark.parametrize(("prefix", "control"), [("", "_sfn-pauser/"), ("tokens", "tokens/_sfn-pauser/")])
def test_quarantine_moves_a_task_out_of_the_token_folder_with_the_reason(s3, prefix, control):
    store = make_store(s3, prefix)
    key = store.save(event(executionArn=EXECUTION))
    name = key.rsplit("/", 1)[-1]

    target = store.quarantine(key, "TaskTimedOut", ORDERS)

    assert target == f"{control}quarantine/aws/123456789012/us-east-1/Orders/{name}"
    record = body_of(s3, target)
    assert record["reason"] == "TaskTimedOut"
    assert record["originalKey"] == key
    assert json.loads(record["original"])["executionArn"] == EXECUTION
    assert TIMESTAMP.fullmatch(record["quarantinedAt"])
    assert store.load(key) is None
    assert list(store.held("Orders")) == []


def test_the_control_folder_is_not_listed_as_a_state_machine(s3):
    store = make_store(s3)
    store.save(event())
    billing = parse_state_machine_arn(ARN.replace("Orders", "Billing"))
    store.quarantine(store.save(event(token="token-2", arn=str(billing))), "InvalidToken", billing)

    assert sorted(store.machines()) == ["Orders"]


def test_tasks_paused_in_the_same_millisecond_list_in_the_order_they_arrived(s3):
    store = make_store(s3)
    tokens = [f"token-{n:02d}" for n in range(20)]
    for token in tokens:
        store.save(event(token=token), now=NOON + timedelta(days=1))

    assert [store.load(item.key).task_token for item in store.held("Orders")] == tokens


def test_a_held_task_can_be_claimed_by_one_resumer_only(s3):
    # Many resumers may work one backlog; the claim is what makes each token sent once.
    store = make_store(s3)
    key = store.save(event())

    mine = store.claim(key, owner="resumer-a")
    theirs = store.claim(key, owner="resumer-b")

    assert mine is not None and mine.startswith("tokens/_sfn-pauser/claims/Orders/")
    assert theirs is None
    assert [item.key for item in store.held("Orders")] == [key]  # a claim is never a token


def test_a_drain_lease_is_exclusive_until_given_back(s3):
    store = make_store(s3)

    first = store.lease(ORDERS, owner="resumer-a", seconds=60)
    while_held = store.lease(ORDERS, owner="resumer-b", seconds=60)
    store.release_lease(first)
    after_release = store.lease(ORDERS, owner="resumer-b", seconds=60)

    assert first is not None
    assert while_held is None
    assert after_release is not None


def test_a_lease_whose_holder_died_is_taken_over_once_it_has_expired(s3):
    store = make_store(s3)
    assert store.lease(ORDERS, owner="crashed", seconds=-1) is not None

    assert store.lease(ORDERS, owner="resumer-b", seconds=60) is not None


def test_leases_are_per_machine(s3):
    store = make_store(s3)

    assert store.lease(ORDERS, owner="a", seconds=60) is not None
    assert store.lease(parse_state_machine_arn(ARN.replace("Orders", "Billing")), owner="b", seconds=60) is not None


def test_lists_what_a_machine_has_in_quarantine(s3):
    store = make_store(s3)
    target = store.quarantine(store.save(event()), "InvalidToken", ORDERS)
    other = parse_state_machine_arn(ARN.replace("Orders", "Orders-2"))
    store.quarantine(store.save(event(token="token-2", arn=str(other))), "InvalidToken", other)
    namesake = parse_state_machine_arn(ARN.replace("us-east-1", "eu-west-1"))
    store.quarantine(store.save(event(token="token-3", arn=str(namesake))), "InvalidToken", namesake)

    assert list(store.quarantined(ORDERS)) == [target]


# -- a lost response is not a failed request (botocore retries; the retry meets our own write)


class LostResponses:
    """The s3 client's PutObject lands, but its answer is lost: botocore sends it again,
    and that answer (412 for a conditional write that had landed) is what the caller sees."""

    def __init__(self, s3, monkeypatch, matching):
        self.lost = 0
        original = s3._make_api_call

        def make_api_call(operation, params):
            if operation == "PutObject" and matching(params["Key"]):
                self.lost += 1
                original(operation, params)
            return original(operation, params)

        monkeypatch.setattr(s3, "_make_api_call", make_api_call)


@pytest.mark.parametrize("lost", ["index", "task", "both"])
def test_a_hold_whose_write_answer_was_lost_is_recognised_as_its_own(s3, monkeypatch, lost):
    store = make_store(s3)
    matching = {
        "index": lambda key: "/_sfn-pauser/tokens/" in key,
        "task": lambda key: key.startswith("tokens/Orders/"),
        "both": lambda key: True,
    }[lost]
    faults = LostResponses(s3, monkeypatch, matching)

    saved = store.save_once(event())

    assert faults.lost >= 1
    assert saved.first is True
    assert [item.key for item in store.held(ORDERS)] == [saved.key]
    assert body_of(s3, saved.key)["taskToken"] == "token-1"


def test_a_claim_whose_answer_was_lost_is_this_resumers_claim(s3, monkeypatch):
    store = make_store(s3)
    key = store.save(event())
    faults = LostResponses(s3, monkeypatch, lambda key: "/claims/" in key)

    claimed = store.claim(key, owner="resumer-a")

    assert faults.lost == 1
    assert claimed == store.claim_key(key)
    assert store.claim(key, owner="resumer-b") is None  # still exclusive


def test_a_lease_whose_answer_was_lost_is_this_resumers_lease(s3, monkeypatch):
    store = make_store(s3)
    faults = LostResponses(s3, monkeypatch, lambda key: "/leases/" in key)

    lease = store.lease(ORDERS, owner="resumer-a", seconds=60)

    assert faults.lost == 1
    assert lease is not None
    assert store.lease(ORDERS, owner="resumer-b", seconds=60) is None


def test_another_writers_document_is_never_taken_for_ours(s3):
    store = make_store(s3)
    key = store.control_key("claims", "Orders", "x.json")

    assert store.create(key, {"owner": "a", "id": "1"}) is not None
    assert store.create(key, {"owner": "b", "id": "2"}) is None


def test_a_second_delivery_of_a_token_returns_the_first_key(s3):
    store = make_store(s3)

    first = store.save_once(event(executionArn=EXECUTION), now=NOON)
    again = store.save_once(event(executionArn=EXECUTION), now=NOON + timedelta(seconds=90))

    assert (first.first, again.first) == (True, False)
    assert again.key == first.key
    assert [item.key for item in store.held(ORDERS)] == [first.key]


def test_a_delivery_that_died_between_the_index_and_the_task_is_finished_by_the_next(s3):
    store = make_store(s3)
    saved = store.save_once(event())
    s3.delete_object(Bucket=BUCKET, Key=saved.key)  # as if the first delivery had died before writing it

    again = store.save_once(event())

    assert again.key == saved.key
    assert body_of(s3, again.key)["taskToken"] == "token-1"


def test_namesakes_in_two_regions_list_and_count_only_their_own(s3):
    store = make_store(s3)
    west = parse_state_machine_arn(ARN.replace("us-east-1", "eu-west-1"))
    east_key = store.save(event(token="east"))
    west_key = store.save(event(token="west", arn=str(west)))

    assert [item.key for item in store.held(ORDERS)] == [east_key]
    assert [item.key for item in store.held(west)] == [west_key]
    assert sorted(item.key for item in store.held("Orders")) == sorted([east_key, west_key])
    assert [item.key for item in store.held_page(west, 10, None)[0]] == [west_key]


def test_quarantine_removes_the_token_index_with_the_task(s3):
    store = make_store(s3)
    key = store.save(event())

    store.quarantine(key, "TaskTimedOut", ORDERS)

    assert store.save_once(event()).first is True  # the index no longer points at a moved task


# -- counting without listing the whole backlog (issue 9, item 6)


class SmallPages:
    """S3 listings in pages of ``size`` keys instead of 1,000, for every listing a client makes
    (with or without a page size of its own), each recorded: a backlog of hundreds then
    lists as one of hundreds of thousands would."""

    def __init__(self, s3, monkeypatch, size):
        self.calls = []
        self._s3 = s3
        self._size = size
        monkeypatch.setattr("chalicelib.store.LIST_PAGE_SIZE", size)
        monkeypatch.setattr("chalicelib.fleet.FOLDER_SAMPLE", size)  # a folder's first page
        s3.meta.events.register("before-parameter-build.s3.ListObjectsV2", self._list, unique_id="small-pages")

    def _list(self, params, **_):
        params["MaxKeys"] = min(params.get("MaxKeys", self._size), self._size)
        self.calls.append(dict(params))

    def of(self, prefix):
        """The listings of exactly ``prefix``."""
        return [call for call in self.calls if call["Prefix"] == prefix]

    def close(self):
        self._s3.meta.events.unregister("before-parameter-build.s3.ListObjectsV2", unique_id="small-pages")


@pytest.fixture
def small_pages(s3, monkeypatch):
    pages = SmallPages(s3, monkeypatch, 10)
    yield pages
    pages.close()


def backlog(s3, store, machine, count, start=NOON):
    """``count`` keys held for ``machine``, paused in order from about ``start``; their keys."""
    first = int(start.timestamp() * 1000)
    keys = [f"{store.folder(machine.name)}{new_token_id(first + n, machine_tag(machine))}.json" for n in range(count)]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"{}")
    return keys


def paused_at(key):
    return paused_at_of(key.rsplit("/", 1)[-1].removesuffix(".json"))


@pytest.mark.parametrize("held", [31, 250])
def test_a_count_past_its_cap_lists_the_same_pages_whatever_the_backlog_and_says_at_least(s3, small_pages, held):
    store = make_store(s3)
    keys = backlog(s3, store, ORDERS, held)

    counted = store.count_held(ORDERS, pages=3)

    assert (counted.count, counted.capped, counted.oldest) == (30, True, paused_at(keys[0]))
    assert len(small_pages.calls) == 3


def test_a_count_under_its_cap_is_exact_and_not_capped(s3, small_pages):
    store = make_store(s3)
    keys = backlog(s3, store, ORDERS, 25)

    counted = store.count_held(ORDERS, pages=3)

    assert (counted.count, counted.capped, counted.oldest) == (25, False, paused_at(keys[0]))
    assert len(small_pages.calls) == 3


def test_a_count_asks_s3_for_full_pages(s3):
    asked = []

    def record(params, **_):
        asked.append(params.get("MaxKeys"))

    s3.meta.events.register("before-parameter-build.s3.ListObjectsV2", record)
    try:
        make_store(s3).count_held(ORDERS)
    finally:
        s3.meta.events.unregister("before-parameter-build.s3.ListObjectsV2", record)

    assert asked == [1000]


def test_a_namesakes_keys_take_pages_but_never_count(s3, small_pages):
    store = make_store(s3)
    west = parse_state_machine_arn(ARN.replace("us-east-1", "eu-west-1"))
    west_keys = backlog(s3, store, west, 30)
    keys = backlog(s3, store, ORDERS, 5, start=NOON + timedelta(minutes=1))

    assert store.count_held(west, pages=3) == Counted(30, True, paused_at(west_keys[0]))
    assert store.count_held(ORDERS, pages=3) == Counted(0, True, None)  # at least none: the pages ran out
    assert store.count_held(ORDERS, pages=4) == Counted(5, False, paused_at(keys[0]))


def test_a_count_of_the_quarantine_stops_at_its_cap_too(s3, small_pages):
    store = make_store(s3)
    for key in backlog(s3, store, ORDERS, 45):
        store.quarantine(key, "TaskTimedOut", ORDERS)
    small_pages.calls.clear()

    assert store.count_quarantined(ORDERS, pages=3) == Counted(30, True)
    assert store.count_quarantined(ORDERS, pages=5) == Counted(45, False)
    assert len(small_pages.calls) == 3 + 5
