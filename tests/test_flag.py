"""The maintenance flag: the Maintenance tag of the unqualified machine, kept off the hot path.

The tags are the source of truth; the task handler reads them through an S3 mirror and a
per-container cache, because ListTagsForResource refills at 1 call/s per account.
"""

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws

import app as chalice_app
from chalicelib.arns import parse_state_machine_arn
from chalicelib.errors import AwsAccessDenied, InvalidArn, StateMachineNotFound
from chalicelib.flag import MaintenanceFlag, MaintenanceState, parse_flag, parse_instant
from chalicelib.store import TokenStore
from tests.conftest import BUCKET, PREFIX
from tests.harness import ACCOUNT, REGION
from tests.test_fleet import for_machine, refuse

ORDERS = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:Orders"
BILLING = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:Billing"
MACHINE = parse_state_machine_arn(ORDERS)
MIRROR = f"{PREFIX}_sfn-pauser/flags/aws/{ACCOUNT}/{REGION}/Orders.json"
PASS = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "on"),
    [
        ("true", True),
        ("TRUE", True),
        ("True", True),
        (" true ", True),
        ("\ttrue\n", True),
        ("false", False),
        ("FALSE", False),
        (None, False),
        ("", False),
        ("yes", False),
        ("1", False),
        ("on", False),
        ("t", False),
        ("truee", False),
        ("true!", False),
        ("maintenance", False),
    ],
    ids=repr,
)
def test_only_true_in_any_case_and_spacing_means_on(value, on):
    assert parse_flag(value) is on


class Clients:
    """The part of AwsClients the flag uses: one Step Functions client, its tag reads recorded."""

    def __init__(self, sfn):
        self._sfn = sfn
        self.regions = []
        self.tag_reads = []
        sfn.meta.events.register(
            "before-parameter-build.sfn.ListTagsForResource", self._record, unique_id="test-flag-tag-reads"
        )

    def sfn(self, region):
        self.regions.append(region)
        return self._sfn

    def close(self):
        self._sfn.meta.events.unregister(
            "before-parameter-build.sfn.ListTagsForResource", unique_id="test-flag-tag-reads"
        )

    def _record(self, params, **_):
        self.tag_reads.append(params["resourceArn"])


class Clock:
    """A monotonic clock the test moves by hand, so a cache window passes without waiting."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture(scope="module")
def sfn_client():
    return boto3.client("stepfunctions", region_name=REGION)


@pytest.fixture(scope="module")
def s3_client():
    return boto3.client("s3", region_name=REGION)


@pytest.fixture
def moto(sfn_client, s3_client):
    with mock_aws():
        s3_client.create_bucket(Bucket=BUCKET)
        for name in ("Orders", "Billing"):
            sfn_client.create_state_machine(name=name, definition=PASS, roleArn=f"arn:aws:iam::{ACCOUNT}:role/states")
        yield


@pytest.fixture
def sfn(moto, sfn_client):
    return sfn_client


@pytest.fixture
def s3(moto, s3_client):
    return s3_client


@pytest.fixture
def mirror_reads(s3):
    """Keys of the flag mirrors read from S3 during the test."""
    reads = []

    def record(params, **_):
        if "/flags/" in params["Key"]:
            reads.append(params["Key"])

    s3.meta.events.register("before-parameter-build.s3.GetObject", record, unique_id="test-flag-mirror")
    yield reads
    s3.meta.events.unregister("before-parameter-build.s3.GetObject", unique_id="test-flag-mirror")


@pytest.fixture
def store(s3):
    return TokenStore(s3, BUCKET, PREFIX)


@pytest.fixture
def clients(sfn):
    recording = Clients(sfn)
    yield recording
    recording.close()


@pytest.fixture
def clock():
    return Clock()


def flag_for(clients, store, cache_seconds, clock=None, now=NOW):
    """One container's flag."""
    return MaintenanceFlag(clients, store, cache_seconds, clock=clock or Clock(), now=lambda: now)


def tag(sfn, arn, value, **more):
    """What an operator does with `aws stepfunctions tag-resource` / `untag-resource`."""
    if value is None:
        sfn.untag_resource(resourceArn=arn, tagKeys=["Maintenance"])
    else:
        pairs = {"Maintenance": value, **more}
        sfn.tag_resource(resourceArn=arn, tags=[{"key": k, "value": v} for k, v in pairs.items()])


@pytest.mark.parametrize("cache_seconds", [0, 10], ids=["uncached", "cached"])
@pytest.mark.parametrize(("value", "on"), [("true", True), (" True ", True), ("false", False), (None, False)])
def test_reads_the_maintenance_tag(sfn, clients, store, cache_seconds, value, on):
    if value is not None:
        tag(sfn, ORDERS, value)

    assert flag_for(clients, store, cache_seconds).is_on(MACHINE) is on


@pytest.mark.parametrize("suffix", [":1", ":PROD"], ids=["version", "alias"])
def test_a_version_or_alias_reads_the_tag_of_its_unqualified_machine(sfn, clients, store, suffix):
    tag(sfn, ORDERS, "true")

    on = flag_for(clients, store, 0).is_on(parse_state_machine_arn(ORDERS + suffix))

    assert on is True
    assert clients.tag_reads == [ORDERS]


def test_asks_the_region_the_machine_lives_in(clients, store):
    machine = parse_state_machine_arn(f"arn:aws:states:eu-west-1:{ACCOUNT}:stateMachine:Orders")

    flag_for(clients, store, 0).is_on(machine)

    assert clients.regions == ["eu-west-1"]


def test_with_a_zero_second_cache_every_check_reads_the_tag(sfn, clients, store):
    flag = flag_for(clients, store, 0)

    results = []
    for value in ("true", None, "true"):
        tag(sfn, ORDERS, value)
        results.append(flag.is_on(MACHINE))

    # The seed's behaviour: a CLI tag change is seen at once, at one tag read per check.
    assert results == [True, False, True]
    assert len(clients.tag_reads) == 3


def test_within_the_cache_window_a_second_check_makes_no_call_at_all(sfn, mirror_reads, clients, store, clock):
    tag(sfn, ORDERS, "true")
    flag = flag_for(clients, store, 10, clock)

    assert flag.is_on(MACHINE) is True
    reads = (len(clients.tag_reads), len(mirror_reads))
    clock.now += 9.9
    assert flag.is_on(MACHINE) is True

    assert (len(clients.tag_reads), len(mirror_reads)) == reads


def test_a_machine_seen_for_the_first_time_is_read_from_its_tags_once_then_mirrored(sfn, s3, clients, store):
    tag(sfn, ORDERS, "true")
    first, second = flag_for(clients, store, 10), flag_for(clients, store, 10)

    assert first.is_on(MACHINE) is True
    assert second.is_on(MACHINE) is True  # another container: it finds the mirror

    assert clients.tag_reads == [ORDERS]
    mirror = json.loads(s3.get_object(Bucket=BUCKET, Key=MIRROR)["Body"].read())
    assert mirror["maintenance"] is True


def test_the_mirror_lives_in_the_control_folder_never_among_held_tasks(sfn, clients, store):
    flag_for(clients, store, 10).is_on(MACHINE)

    assert MIRROR.startswith(f"{PREFIX}_sfn-pauser/")
    assert list(store.held("Orders")) == []
    assert list(store.machines()) == []


def test_after_the_window_a_switch_made_by_another_container_is_seen(sfn, clients, store, clock):
    handler = flag_for(clients, store, 10, clock)
    api = flag_for(clients, store, 10)
    assert handler.is_on(MACHINE) is False

    api.record(MACHINE, MaintenanceState(on=True), source="api")  # POST /maintenance elsewhere
    clock.now += 5
    stale = handler.is_on(MACHINE)
    clock.now += 5
    fresh = handler.is_on(MACHINE)

    # Seen at most MaintenanceCacheSeconds late, and without spending a tag read.
    assert (stale, fresh) == (False, True)
    assert clients.tag_reads == [ORDERS]


def test_a_tag_changed_with_the_cli_reaches_handlers_when_the_sweep_refreshes_the_mirror(sfn, clients, store, clock):
    handler = flag_for(clients, store, 10, clock)
    assert handler.is_on(MACHINE) is False

    tag(sfn, ORDERS, "true")
    clock.now += 10
    before_sweep = handler.is_on(MACHINE)
    flag_for(clients, store, 10).refresh(MACHINE)  # what the scheduled sweep does each minute
    clock.now += 10
    after_sweep = handler.is_on(MACHINE)

    assert (before_sweep, after_sweep) == (False, True)


def test_versions_aliases_and_the_machine_share_one_cache_entry(clients, store, clock):
    flag = flag_for(clients, store, 10, clock)

    for arn in (ORDERS, ORDERS + ":1", ORDERS + ":PROD"):
        flag.is_on(parse_state_machine_arn(arn))

    assert clients.tag_reads == [ORDERS]


def test_each_machine_has_its_own_flag(sfn, clients, store, clock):
    tag(sfn, ORDERS, "true")
    flag = flag_for(clients, store, 10, clock)

    assert flag.is_on(MACHINE) is True
    assert flag.is_on(parse_state_machine_arn(BILLING)) is False
    assert sorted(clients.tag_reads) == [BILLING, ORDERS]


def test_a_flag_this_container_just_wrote_takes_effect_here_at_once(clients, store, clock):
    flag = flag_for(clients, store, 10, clock)
    assert flag.is_on(MACHINE) is False

    flag.record(MACHINE, MaintenanceState(on=True), source="api")

    assert flag.is_on(MACHINE) is True


@pytest.mark.parametrize("cache_seconds", [0, 10], ids=["uncached", "cached"])
@pytest.mark.parametrize(
    ("until", "on"),
    [(NOW - timedelta(seconds=1), False), (NOW + timedelta(hours=1), True)],
    ids=["passed", "ahead"],
)
def test_maintenance_with_an_until_that_has_passed_is_off(sfn, clients, store, cache_seconds, until, on):
    tag(sfn, ORDERS, "true", MaintenanceUntil=until.strftime("%Y-%m-%dT%H:%M:%S.000Z"))

    assert flag_for(clients, store, cache_seconds).is_on(MACHINE) is on


def test_read_always_asks_the_tags_and_reports_who_set_it_and_why(sfn, clients, store, clock):
    tag(
        sfn,
        ORDERS,
        "true",
        MaintenanceSince="2023-12-01T12:34:56.789Z",
        MaintenanceBy="arn:aws:iam::123456789012:user/ops",
        MaintenanceReason="db migration",
    )
    flag = flag_for(clients, store, 10, clock)
    flag.is_on(MACHINE)

    state = flag.read(MACHINE)

    # The operator's view (GET /maintenance) must not come from a cache or a mirror.
    assert len(clients.tag_reads) == 2
    assert state.on is True
    assert state.since == "2023-12-01T12:34:56.789Z"
    assert state.by == "arn:aws:iam::123456789012:user/ops"
    assert state.reason == "db migration"


def stubbed(*errors):
    """Step Functions whose ListTagsForResource answers the given errors, then no tags."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    stubber = Stubber(sfn)
    for code in errors:
        stubber.add_client_error(
            "list_tags_for_resource",
            service_error_code=code,
            http_status_code=400,
            expected_params={"resourceArn": ORDERS},
        )
    stubber.add_response("list_tags_for_resource", {"tags": []}, {"resourceArn": ORDERS})
    stubber.activate()
    return Clients(sfn)


# moto answers an empty tag list for any ARN; AWS answers ResourceNotFound.
@pytest.mark.parametrize("code", ["ResourceNotFound", "StateMachineDoesNotExist"])
@pytest.mark.parametrize("cache_seconds", [0, 10], ids=["uncached", "cached"])
def test_an_unknown_machine_is_not_found_naming_the_field(store, code, cache_seconds):
    flag = flag_for(stubbed(code), store, cache_seconds)

    with pytest.raises(StateMachineNotFound) as raised:
        flag.is_on(parse_state_machine_arn(ORDERS + ":PROD"))

    assert raised.value.STATUS_CODE == 404
    assert str(raised.value).startswith("stateMachineArn:")


def test_a_tag_that_cannot_be_read_is_never_taken_for_maintenance_off(store):
    # Throttling after botocore's retries: guessing "off" would release executions mid-maintenance.
    flag = flag_for(stubbed("ThrottlingException"), store, 10)

    with pytest.raises(ClientError):
        flag.is_on(MACHINE)


def test_a_failed_read_is_neither_cached_nor_mirrored(store, s3):
    clients = stubbed("ThrottlingException")
    flag = flag_for(clients, store, 10)

    with pytest.raises(ClientError):
        flag.is_on(MACHINE)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=MIRROR)

    assert flag.is_on(MACHINE) is False
    assert len(clients.tag_reads) == 2


def test_an_arn_that_aws_rejects_is_a_bad_request_naming_the_field(store):
    # Our parser accepts some ARNs AWS refuses (a partition that does not match the
    # region, say). AWS's InvalidArn must become ours (400), not an unhandled 500.
    flag = flag_for(stubbed("InvalidArn"), store, 0)

    with pytest.raises(InvalidArn) as raised:
        flag.read(MACHINE)

    assert str(raised.value).startswith("stateMachineArn:")


# -- instants a user wrote: whatever they are, reading them never raises

OFFSETS = st.timedeltas(min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)).map(
    timezone
)
# The calendar's first and last day, where an offset can carry the UTC time out of it.
EDGES = st.datetimes(max_value=datetime(1, 1, 2), timezones=OFFSETS) | st.datetimes(
    min_value=datetime(9999, 12, 31), timezones=OFFSETS
)


@settings(max_examples=300, deadline=None)
@given(
    st.text()
    | st.datetimes(timezones=st.timezones()).map(datetime.isoformat)
    | st.datetimes(timezones=OFFSETS).map(datetime.isoformat)
    | EDGES.map(datetime.isoformat)
)
def test_reading_an_instant_never_raises_and_gives_a_utc_time_or_none(text):
    moment = parse_instant(text)

    assert moment is None or moment.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_an_instant_beyond_the_calendar_in_utc_is_unreadable(text):
    assert parse_instant(text) is None


@pytest.mark.parametrize("until", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "whenever"])
def test_an_unreadable_until_never_passes_so_maintenance_stays_on(until):
    state = MaintenanceState(on=True, until=until)

    assert (state.expired(NOW), state.effective(NOW)) == (False, True)


# -- MaintenanceCacheSeconds=0 above 1 execution/s (issue 9, item 3): ListTagsForResource
#    refills at 1/s, so reads are throttled; a failed read follows the latest flag known,
#    and only with nothing known does the checkpoint hold.

THROTTLED = "ThrottlingException"


@dataclass(frozen=True)
class Refused:
    code: str


def answering(*replies):
    """Step Functions whose ListTagsForResource answers in turn: a Maintenance value (None: no
    tag), or a :class:`Refused` error as AWS gives it once botocore's retries are spent."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    stubber = Stubber(sfn)
    for reply in replies:
        if isinstance(reply, Refused):
            stubber.add_client_error(
                "list_tags_for_resource", reply.code, http_status_code=400, expected_params={"resourceArn": ORDERS}
            )
        else:
            tags = [] if reply is None else [{"key": "Maintenance", "value": reply}]
            stubber.add_response("list_tags_for_resource", {"tags": tags}, {"resourceArn": ORDERS})
    stubber.activate()
    return Clients(sfn)


class Moment:
    """Wall-clock time the test moves by hand."""

    def __init__(self):
        self.at = NOW

    def __call__(self):
        return self.at


def fallbacks(caplog):
    return [json.loads(r.getMessage()) for r in caplog.records if '"flag-fallback"' in r.getMessage()]


@pytest.mark.parametrize("value", ["true", "false"])
def test_without_a_cache_a_throttled_read_follows_this_containers_last_good_read(store, caplog, value):
    # The sweep mirrored the opposite half a minute ago; this container read the tags since.
    MaintenanceFlag(None, store, 10, now=lambda: NOW - timedelta(seconds=30)).record(
        MACHINE, MaintenanceState(on=value != "true"), "tags"
    )
    moment = Moment()
    flag = MaintenanceFlag(answering(value, Refused(THROTTLED)), store, 0, now=moment)
    assert flag.is_on(MACHINE) is (value == "true")
    moment.at = NOW + timedelta(seconds=5)

    with caplog.at_level(logging.WARNING):
        on = flag.is_on(MACHINE)

    assert on is (value == "true")
    assert fallbacks(caplog) == [
        {
            "decision": "flag-fallback",
            "stateMachine": ORDERS,
            "error": THROTTLED,
            "fallback": "last-read",
            "maintenance": value == "true",
            "knownAt": "2026-01-01T12:00:00.000Z",
        }
    ]


def test_without_a_cache_a_throttled_read_sees_a_switch_made_since_the_last_good_read(store, caplog):
    moment = Moment()
    flag = MaintenanceFlag(answering("false", Refused(THROTTLED)), store, 0, now=moment)
    assert flag.is_on(MACHINE) is False
    # A switch through the API writes the mirror; its tags are throttled like everything else.
    MaintenanceFlag(None, store, 10, now=lambda: NOW + timedelta(seconds=1)).record(
        MACHINE, MaintenanceState(on=True), "api"
    )
    moment.at = NOW + timedelta(seconds=2)

    with caplog.at_level(logging.WARNING):
        on = flag.is_on(MACHINE)

    assert on is True
    assert [(line["fallback"], line["maintenance"]) for line in fallbacks(caplog)] == [("mirror", True)]


def test_without_a_cache_a_throttled_read_in_a_fresh_container_follows_the_mirror(store):
    MaintenanceFlag(None, store, 10, now=lambda: NOW).record(MACHINE, MaintenanceState(on=True), "api")

    assert MaintenanceFlag(answering(Refused(THROTTLED)), store, 0, now=Moment()).is_on(MACHINE) is True


@pytest.mark.parametrize(
    ("code", "raised"),
    [(THROTTLED, ClientError), ("AccessDeniedException", AwsAccessDenied)],
    ids=["throttled", "denied"],
)
def test_without_a_cache_a_failed_read_with_nothing_known_raises_so_the_checkpoint_holds(store, caplog, code, raised):
    flag = MaintenanceFlag(answering(Refused(code)), store, 0, now=Moment())

    with caplog.at_level(logging.WARNING), pytest.raises(raised):
        flag.is_on(MACHINE)
    assert fallbacks(caplog) == []


def test_without_a_cache_a_machine_aws_no_longer_has_is_not_found_whatever_was_known(store):
    flag = MaintenanceFlag(answering("false", Refused("StateMachineDoesNotExist")), store, 0, now=Moment())
    flag.is_on(MACHINE)

    with pytest.raises(StateMachineNotFound):
        flag.is_on(MACHINE)


@pytest.mark.stage_env(MaintenanceCacheSeconds="0")
@pytest.mark.parametrize("known", ["false", "true", None], ids=["known-off", "known-on", "nothing-known"])
def test_without_a_cache_a_checkpoint_whose_tag_reads_are_throttled_follows_the_last_known_flag(
    workflow, monkeypatch, caplog, known
):
    monkeypatch.setattr(chalice_app.app.log, "propagate", True)  # Chalice keeps app.log to itself
    if known is not None:
        workflow.maintenance(known)
        first = workflow.start({"order": 1})
        if known == "true":
            workflow.wait_held(1)
        else:
            workflow.wait_for(first, "SUCCEEDED")
    refuse(monkeypatch, "ListTagsForResource", THROTTLED, when=for_machine(workflow.arn))

    with caplog.at_level(logging.INFO):
        execution = workflow.start({"order": 2})
        if known == "false":
            finished = workflow.wait_for(execution, "SUCCEEDED")
            assert json.loads(finished["output"]) == {"order": 2}
        else:
            workflow.wait_held(2 if known else 1)
            assert workflow.status(execution) == "RUNNING"

    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "sfn-pauser"]
    if known is None:
        assert "flag-unreadable" in [line["decision"] for line in lines]
        assert fallbacks(caplog) == []
    else:
        assert {line["maintenance"] for line in fallbacks(caplog)} == {known == "true"}
