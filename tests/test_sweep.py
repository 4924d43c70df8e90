"""The scheduled sweep: the backstop that makes a CLI untag, an expired ``until`` or a dead
resumer's claim take effect, and that keeps held tasks alive with heartbeats.

Most tests hold fake tokens and record what reaches moto's Step Functions backend;
where the outcome is an execution moving on, real executions run through the
``workflow`` fixture.
"""

import json
import logging
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from moto.core.exceptions import AWSError
from moto.s3.models import s3_backends
from moto.stepfunctions.parser.models import StepFunctionsParserBackend

import chalicelib.sweep
from chalicelib.arns import AccountRegion, parse_state_machine_arn
from chalicelib.config import Settings
from chalicelib.deadline import Deadline
from chalicelib.events import parse_checkpoint_event
from chalicelib.flag import MaintenanceState
from chalicelib.services import Services
from chalicelib.store import iso_timestamp, machine_tag, new_token_id
from tests.conftest import BUCKET, PREFIX
from tests.harness import ACCOUNT, REGION
from tests.test_fleet import for_machine, refuse, tags_of_deleted_machines_are_not_found
from tests.test_store import SmallPages

PASS = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})
ROLE = f"arn:aws:iam::{ACCOUNT}:role/states-role"
HOME = AccountRegion("aws", REGION, ACCOUNT)
CONTROL = f"{PREFIX}_sfn-pauser/"


class TaskTimedOut(AWSError):
    TYPE = "TaskTimedOut"
    STATUS = 400


class SendTasks:
    """moto's SendTaskSuccess and SendTaskHeartbeat, recorded per token, answering as scripted.

    The ``aws`` fixture runs moto's interpreter, whose backend knows only real tokens;
    these tests hold made-up ones, so the calls are answered here instead.
    """

    def __init__(self):
        self.successes = Counter()
        self.heartbeats = Counter()
        self.heartbeat_errors = {}
        self.success_errors = {}
        self._lock = threading.Lock()

    def send_task_success(self, backend, task_token, outcome):
        with self._lock:
            self.successes[task_token] += 1
        if task_token in self.success_errors:
            raise self.success_errors[task_token]

    def send_task_heartbeat(self, backend, task_token):
        with self._lock:
            self.heartbeats[task_token] += 1
        if task_token in self.heartbeat_errors:
            raise self.heartbeat_errors[task_token]


@pytest.fixture
def sends(monkeypatch):
    recorder = SendTasks()
    monkeypatch.setattr(
        StepFunctionsParserBackend,
        "send_task_success",
        lambda self, task_token, outcome: recorder.send_task_success(self, task_token, outcome),
    )
    monkeypatch.setattr(
        StepFunctionsParserBackend,
        "send_task_heartbeat",
        lambda self, task_token: recorder.send_task_heartbeat(self, task_token),
    )
    return recorder


def build(heartbeat=False, allowed=("*",)):
    settings = Settings(bucket=BUCKET, prefix=PREFIX, heartbeat_held_tasks=heartbeat, allowed_state_machines=allowed)
    return Services.build(settings, logging.getLogger("test-sweep"))


def create_machine(aws, name="Orders", tags=None, kind="STANDARD"):
    return aws.sfn.create_state_machine(
        name=name,
        definition=PASS,
        roleArn=ROLE,
        type=kind,
        tags=[{"key": key, "value": value} for key, value in (tags or {}).items()],
    )["stateMachineArn"]


def hold(services, arn, token):
    return services.store.save(parse_checkpoint_event({"taskToken": token, "stateMachineArn": arn}))


def held_keys(services, name="Orders"):
    return [item.key for item in services.store.held(name)]


def tags_of(aws, arn):
    return {tag["key"]: tag["value"] for tag in aws.sfn.list_tags_for_resource(resourceArn=arn)["tags"]}


def mirror_key(name):
    return f"{CONTROL}flags/aws/{ACCOUNT}/{REGION}/{name}.json"


def mirror_of(aws, name):
    return json.loads(aws.s3.get_object(Bucket=BUCKET, Key=mirror_key(name))["Body"].read())


def exists(aws, key):
    return aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=key).get("KeyCount", 0) > 0


def backdate(key, **age):
    """Make an object look as if written ``age`` ago, as a resumer that died then would leave it."""
    stored = s3_backends[ACCOUNT]["aws"].buckets[BUCKET].keys[key]
    stored.last_modified -= timedelta(**age)


# (a) A tag removed with the AWS CLI.


def test_resumes_what_a_cli_untag_left_behind_after_one_sweep(workflow, aws):
    workflow.maintenance("true")
    executions = [workflow.start({"order": n}) for n in range(2)]
    workflow.wait_held(2)
    workflow.maintenance(None)  # aws stepfunctions untag-resource: the mirror is not told
    machine = parse_state_machine_arn(workflow.arn)
    services = build()

    # The handlers read the mirror, not the tags, so until the sweep they still hold.
    assert services.flag.is_on(machine) is True
    assert mirror_of(aws, "Orders")["maintenance"] is True

    report = services.sweeper.sweep(Deadline(30))

    assert mirror_of(aws, "Orders")["maintenance"] is False
    assert build().flag.is_on(machine) is False
    assert (report.refreshed, report.resumed) == (1, 2)
    for n, execution in enumerate(executions):
        assert json.loads(workflow.wait_for(execution, "SUCCEEDED")["output"]) == {"order": n}
    assert workflow.held_keys() == []


def test_leaves_held_what_is_still_in_maintenance(aws, bucket, sends):
    arn = create_machine(aws, tags={"Maintenance": "true"})
    services = build()
    keys = [hold(services, arn, f"token-{n}") for n in range(2)]

    report = services.sweeper.sweep(Deadline(30))

    assert report.resumed == 0
    assert sends.successes == Counter()
    assert held_keys(services) == keys
    assert mirror_of(aws, "Orders")["maintenance"] is True


# (b) An ``until`` recorded on the tags.


def test_lifts_maintenance_whose_until_has_passed_and_resumes_its_held_tasks(aws, bucket, sends):
    past = iso_timestamp(datetime.now(UTC) - timedelta(minutes=5))
    arn = create_machine(aws, tags={"Maintenance": "true", "MaintenanceUntil": past, "MaintenanceReason": "deploy"})
    services = build()
    for n in range(3):
        hold(services, arn, f"token-{n}")

    report = services.sweeper.sweep(Deadline(30))

    assert report.lifted == [arn]
    assert not {"Maintenance", "MaintenanceUntil", "MaintenanceReason"} & set(tags_of(aws, arn))
    assert mirror_of(aws, "Orders")["maintenance"] is False
    assert report.resumed == 3
    assert sends.successes == Counter({"token-0": 1, "token-1": 1, "token-2": 1})
    assert held_keys(services) == []


def test_does_not_lift_maintenance_whose_until_is_still_ahead(aws, bucket, sends):
    future = iso_timestamp(datetime.now(UTC) + timedelta(hours=1))
    arn = create_machine(aws, tags={"Maintenance": "true", "MaintenanceUntil": future})
    services = build()
    hold(services, arn, "token-0")

    report = services.sweeper.sweep(Deadline(30))

    assert report.lifted == []
    assert tags_of(aws, arn)["Maintenance"] == "true"
    assert sends.successes == Counter()
    assert len(held_keys(services)) == 1


# (c) Heartbeats for held tasks.


def test_sends_one_heartbeat_per_held_task_of_a_machine_in_maintenance(aws, bucket, sends):
    arn = create_machine(aws, tags={"Maintenance": "true"})
    services = build(heartbeat=True)
    keys = [hold(services, arn, f"token-{n}") for n in range(3)]

    report = services.sweeper.sweep(Deadline(30))

    assert sends.heartbeats == Counter({"token-0": 1, "token-1": 1, "token-2": 1})
    assert report.heartbeats == 3
    assert sends.successes == Counter()
    assert held_keys(services) == keys


def test_a_held_task_whose_heartbeat_times_out_is_quarantined_and_no_longer_held(aws, bucket, sends):
    arn = create_machine(aws, tags={"Maintenance": "true"})
    services = build(heartbeat=True)
    alive = hold(services, arn, "token-alive")
    dead = hold(services, arn, "token-dead")
    sends.heartbeat_errors["token-dead"] = TaskTimedOut("Task Timed Out")

    report = services.sweeper.sweep(Deadline(30))

    assert (report.heartbeats, report.expired) == (1, 1)
    assert held_keys(services) == [alive]
    quarantined = f"{CONTROL}quarantine/aws/{ACCOUNT}/{REGION}/Orders/{dead.rsplit('/', 1)[-1]}"
    record = json.loads(aws.s3.get_object(Bucket=BUCKET, Key=quarantined)["Body"].read())
    assert record["reason"] == "TaskTimedOut"
    assert json.loads(record["original"])["taskToken"] == "token-dead"
    assert sends.successes == Counter()  # a dead token is never "resumed"


def test_sends_no_heartbeats_unless_heartbeat_held_tasks_is_on(aws, bucket, sends):
    arn = create_machine(aws, tags={"Maintenance": "true"})
    services = build(heartbeat=False)
    hold(services, arn, "token-0")

    report = services.sweeper.sweep(Deadline(30))

    assert sends.heartbeats == Counter()
    assert report.heartbeats == 0


# (d) Claims left behind by resumers that died.


def test_clears_a_claim_older_than_its_lease_so_its_task_resumes_and_keeps_a_fresh_one(aws, bucket, sends):
    arn = create_machine(aws)
    services = build()
    orphaned = hold(services, arn, "token-orphaned")
    in_progress = hold(services, arn, "token-in-progress")
    stale_claim = services.store.claim(orphaned, "resumer-that-died")
    fresh_claim = services.store.claim(in_progress, "resumer-at-work")
    backdate(stale_claim, minutes=16)

    report = services.sweeper.sweep(Deadline(30))

    assert report.claims_cleared == 1
    assert not exists(aws, stale_claim)
    assert exists(aws, fresh_claim)
    # The orphan is resumed; the task another resumer holds is left to it.
    assert sends.successes == Counter({"token-orphaned": 1})
    assert held_keys(services) == [in_progress]


def test_a_claim_inside_its_lease_is_not_cleared(aws, bucket, sends):
    arn = create_machine(aws)
    services = build()
    key = hold(services, arn, "token-0")
    claim = services.store.claim(key, "resumer-at-work")
    backdate(claim, minutes=14)

    report = services.sweeper.sweep(Deadline(30))

    assert report.claims_cleared == 0
    assert exists(aws, claim)
    assert sends.successes == Counter()


# (e) Tokens saved by the original SfnPauser.


def seed_hold(aws, name, token):
    """A held task as the original SfnPauser wrote it: a UUID4 name, only taskToken and timestamp."""
    key = f"{PREFIX}{name}/{uuid.uuid4()}.json"
    body = {"taskToken": token, "timestamp": iso_timestamp(datetime.now(UTC))}
    aws.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(body).encode())
    return key


def test_resumes_token_folders_left_by_the_original_seed_in_its_own_account_and_region(workflow, aws):
    workflow.maintenance("true")
    executions = [workflow.start({"order": n}) for n in range(2)]
    # Rewrite what the handler held into the seed's layout, and forget the mirror:
    # a team switching over has only the seed's folders.
    for key in workflow.wait_held(2):
        token = json.loads(aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())["taskToken"]
        aws.s3.delete_object(Bucket=BUCKET, Key=key)
        seed_hold(aws, workflow.name, token)
    aws.s3.delete_object(Bucket=BUCKET, Key=mirror_key(workflow.name))
    workflow.maintenance(None)
    services = build()

    # Without knowing where it runs, the sweep cannot tell which machine a seed folder is.
    unplaced = services.sweeper.sweep(Deadline(30))
    assert (unplaced.machines, unplaced.resumed) == (0, 0)
    assert len(workflow.held_keys()) == 2

    report = services.sweeper.sweep(Deadline(30), home=HOME)

    assert (report.machines, report.resumed) == (1, 2)
    for execution in executions:
        workflow.wait_for(execution, "SUCCEEDED")
    assert workflow.held_keys() == []


def test_leaves_seed_tokens_held_while_their_machine_is_in_maintenance(aws, bucket, sends):
    create_machine(aws, tags={"Maintenance": "true"})
    keys = sorted(seed_hold(aws, "Orders", f"token-{n}") for n in range(2))
    services = build()

    report = services.sweeper.sweep(Deadline(30), home=HOME)

    assert report.machines == 1
    assert sends.successes == Counter()
    assert sorted(held_keys(services)) == keys


# (f) ListTagsForResource refills at 1/s: a bounded number of refreshes per run.


def test_refreshes_at_most_max_tag_reads_mirrors_a_run_least_recently_refreshed_first(aws, bucket, monkeypatch):
    monkeypatch.setattr(chalicelib.sweep, "MAX_TAG_READS_PER_SWEEP", 2)
    services = build()
    arns = [create_machine(aws, name=f"Machine{n}") for n in range(5)]
    for age, arn in zip([50, 40, 30, 20, 10], arns, strict=True):
        services.flag.record(parse_state_machine_arn(arn), MaintenanceState(on=False), source="tags")
        backdate(mirror_key(arn.rsplit(":", 1)[-1]), minutes=age)
    tag_reads = []
    services.clients.sfn(REGION).meta.events.register(
        "before-parameter-build.sfn.ListTagsForResource", lambda params, **_: tag_reads.append(params["resourceArn"])
    )

    first = services.sweeper.sweep(Deadline(30))
    second = services.sweeper.sweep(Deadline(30))

    assert (first.machines, first.refreshed, second.refreshed) == (5, 2, 2)
    # A large fleet is covered in turns: the second run reads the next oldest.
    assert tag_reads == arns[:4]


# (g) One machine's trouble is that machine's, and never stops the sweep for the others.


class TaskDoesNotExist(AWSError):
    TYPE = "TaskDoesNotExist"
    STATUS = 400


def past():
    return iso_timestamp(datetime.now(UTC) - timedelta(minutes=5))


def stray_folder(aws, services, monkeypatch, sends):
    aws.s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}old exports/readme.txt", Body=b"exported by hand")
    return {"stray_folders": ["old exports"]}


def outside_the_allow_list_with_until_passed(aws, services, monkeypatch, sends):
    arn = create_machine(aws, "Billing", tags={"Maintenance": "true", "MaintenanceUntil": past()})
    hold(services, arn, "token-billing")
    # This sfn-pauser does not act on it at all: not switched, not resumed.
    return {"skipped": [(arn, "outside AllowedStateMachines")], "tags": (arn, "true"), "held": "token-billing"}


def a_deleted_machine(aws, services, monkeypatch, sends):
    arn = create_machine(aws, "Gone")
    hold(services, arn, "token-gone")
    aws.sfn.delete_state_machine(stateMachineArn=arn)
    tags_of_deleted_machines_are_not_found(monkeypatch)
    sends.success_errors["token-gone"] = TaskDoesNotExist("Task does not exist")
    return {"deleted": [arn], "expired": 1}


def an_express_machine_with_until_passed(aws, services, monkeypatch, sends):
    arn = create_machine(aws, "Quick", tags={"Maintenance": "true", "MaintenanceUntil": past()}, kind="EXPRESS")
    hold(services, arn, "token-quick")
    return {"errors": [(arn, "NotStandardWorkflow", 400)], "tags": (arn, "true")}


def a_machine_the_role_may_not_read(aws, services, monkeypatch, sends):
    arn = create_machine(aws, "Locked", tags={"Maintenance": "true"})
    hold(services, arn, "token-locked")
    refuse(monkeypatch, "ListTagsForResource", "AccessDeniedException", when=for_machine(arn))
    return {"errors": [(arn, "AwsAccessDenied", 403)], "held": "token-locked"}


def a_throttled_machine(aws, services, monkeypatch, sends):
    arn = create_machine(aws, "Crowded", tags={"Maintenance": "true"})
    hold(services, arn, "token-crowded")
    refuse(monkeypatch, "ListTagsForResource", "ThrottlingException", when=for_machine(arn))
    return {"errors": [(arn, "AwsUnavailable", 503)], "held": "token-crowded"}


NEIGHBOURS = [
    stray_folder,
    outside_the_allow_list_with_until_passed,
    a_deleted_machine,
    an_express_machine_with_until_passed,
    a_machine_the_role_may_not_read,
    a_throttled_machine,
]


@pytest.mark.parametrize("neighbour", NEIGHBOURS, ids=[neighbour.__name__ for neighbour in NEIGHBOURS])
def test_one_bad_neighbour_is_reported_for_itself_and_the_sweep_still_resumes_the_others(
    aws, bucket, sends, monkeypatch, neighbour
):
    orders = create_machine(aws, tags={"Maintenance": "true"})
    services = build(allowed=(f"arn:aws:states:*:{ACCOUNT}:stateMachine:[!B]*",))
    services.flag.refresh(parse_state_machine_arn(orders))
    for n in range(2):
        hold(services, orders, f"token-{n}")
    aws.sfn.untag_resource(resourceArn=orders, tagKeys=["Maintenance"])  # lifted with the AWS CLI
    # The neighbour has no mirror yet, so the sweep reaches it before Orders.
    expected = neighbour(aws, services, monkeypatch, sends)

    report = services.sweeper.sweep(Deadline(30), home=HOME)

    assert sends.successes["token-0"] == sends.successes["token-1"] == 1
    assert held_keys(services) == []
    assert mirror_of(aws, "Orders")["maintenance"] is False
    errors = [(entry["stateMachineArn"], entry["error"]["Code"], entry["error"]["Status"]) for entry in report.errors]
    assert errors == expected.get("errors", [])
    assert [(entry["stateMachineArn"], entry["reason"]) for entry in report.skipped] == expected.get("skipped", [])
    assert report.stray_folders == expected.get("stray_folders", [])
    assert report.deleted == expected.get("deleted", [])
    assert report.expired == expected.get("expired", 0)
    if "tags" in expected:  # the sweep did not switch what it may not switch
        arn, value = expected["tags"]
        assert tags_of(aws, arn)["Maintenance"] == value
    if "held" in expected:  # what it could not read, it did not resume
        assert sends.successes[expected["held"]] == 0


def test_a_stray_folder_is_never_asked_about_as_a_machine(aws, bucket, sends, caplog):
    aws.s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}old exports/readme.txt", Body=b"exported by hand")
    services = build()
    tag_reads = []
    services.clients.sfn(REGION).meta.events.register(
        "before-parameter-build.sfn.*", lambda params, **_: tag_reads.append(params)
    )

    with caplog.at_level(logging.INFO, logger="test-sweep"):
        report = services.sweeper.sweep(Deadline(30), home=HOME)

    assert (report.machines, report.stray_folders, tag_reads) == (0, ["old exports"], [])
    decisions = [json.loads(record.getMessage()) for record in caplog.records]
    assert {"decision": "stray-folder", "folder": f"{PREFIX}old exports/"} in decisions
    assert exists(aws, f"{PREFIX}old exports/readme.txt")


# (h) Machines whose tags cannot be read do not keep the refresh slots from the others.


def test_deleted_machines_are_drained_and_forgotten_so_a_live_machine_lifted_by_cli_is_seen_within_the_bound(
    workflow, aws, monkeypatch
):
    tags_of_deleted_machines_are_not_found(monkeypatch)
    services = build()
    deleted = []
    for n in range(60):
        arn = create_machine(aws, name=f"Stack{n:02}", tags={"Maintenance": "true"})
        services.flag.refresh(parse_state_machine_arn(arn))
        backdate(mirror_key(f"Stack{n:02}"), minutes=60 - n)
        deleted.append(arn)
    # Three of them still held executions when their stacks went away.
    orphans = [hold(services, arn, f"token-of-{arn.rsplit(':', 1)[-1]}") for arn in deleted[:3]]
    for arn in deleted:
        aws.sfn.delete_state_machine(stateMachineArn=arn)
    workflow.maintenance("true")
    execution = workflow.start({"order": 1})
    workflow.wait_held(1)
    workflow.maintenance(None)  # aws stepfunctions untag-resource

    # 61 machines, 50 tag reads a run: every machine is read within two runs.
    first = services.sweeper.sweep(Deadline(30))
    second = services.sweeper.sweep(Deadline(30))

    assert mirror_of(aws, "Orders")["maintenance"] is False
    assert json.loads(workflow.wait_for(execution, "SUCCEEDED")["output"]) == {"order": 1}
    assert first.refreshed + second.refreshed + len(first.deleted) + len(second.deleted) == 61
    assert sorted(first.deleted + second.deleted) == deleted
    # A deleted machine's tokens are dead: AWS refuses them, and they are kept aside, not lost.
    for key, arn in zip(orphans, deleted, strict=False):
        assert not exists(aws, key)
        assert len(list(services.store.quarantined(parse_state_machine_arn(arn)))) == 1
    assert not any(exists(aws, mirror_key(arn.rsplit(":", 1)[-1])) for arn in deleted)
    third = services.sweeper.sweep(Deadline(30))
    assert (third.machines, third.deleted, third.errors) == (1, [], [])


def test_a_machine_whose_tags_cannot_be_read_still_gives_up_its_turn(aws, bucket, sends, monkeypatch):
    monkeypatch.setattr(chalicelib.sweep, "MAX_TAG_READS_PER_SWEEP", 2)
    services = build()
    denied = [create_machine(aws, name=f"Locked{n}", tags={"Maintenance": "true"}) for n in range(3)]
    for age, arn in zip([30, 20, 10], denied, strict=True):
        services.flag.refresh(parse_state_machine_arn(arn))
        backdate(mirror_key(arn.rsplit(":", 1)[-1]), minutes=age)
    orders = create_machine(aws, tags={"Maintenance": "true"})
    services.flag.refresh(parse_state_machine_arn(orders))
    hold(services, orders, "token-0")
    aws.sfn.untag_resource(resourceArn=orders, tagKeys=["Maintenance"])
    # An SCP denies the role these three machines' tags.
    refuse(monkeypatch, "ListTagsForResource", "AccessDeniedException", when=lambda params: "Locked" in str(params))

    first = services.sweeper.sweep(Deadline(30))
    second = services.sweeper.sweep(Deadline(30))

    assert mirror_of(aws, "Orders")["maintenance"] is False
    assert sends.successes == Counter({"token-0": 1})
    assert second.refreshed == 1 and second.resumed == 1
    assert [len(first.errors), len(second.errors)] == [2, 1]
    assert {entry["error"]["Status"] for entry in first.errors + second.errors} == {403}


# (i) A machine that stays in maintenance costs the same listings every minute, whatever
#     it holds; heartbeats stream the backlog and stop at the deadline (issue 9, item 6).

FOLDER = f"{PREFIX}Orders/"


def write_held(aws, arn, count):
    """``count`` tasks held for ``arn``, written straight to S3 as the checkpoint names them."""
    machine = parse_state_machine_arn(arn)
    first = int(datetime.now(UTC).timestamp() * 1000) - 3_600_000
    for n in range(count):
        key = f"{FOLDER}{new_token_id(first + n, machine_tag(machine))}.json"
        body = {"taskToken": f"token-{n}", "timestamp": iso_timestamp(datetime.now(UTC)), "stateMachineArn": arn}
        aws.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(body).encode())


def metric_records(capsys):
    """The EMF records written so far: each machine's, and the fleet's (no dimension)."""
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    machines = [record for record in records if "StateMachine" in record and "Backlog" in record]
    fleet = [record for record in records if record["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[]]]
    return machines, fleet


def backlog_metrics(capsys):
    machines, _ = metric_records(capsys)
    return [(line["Backlog"], line["OldestPausedAgeSeconds"] > 3000) for line in machines]


def test_the_sweeps_listings_of_a_machine_in_maintenance_do_not_grow_with_its_backlog(
    aws, bucket, sends, monkeypatch, capsys
):
    arn = create_machine(aws, tags={"Maintenance": "true"})
    services = build()
    pages = SmallPages(services.clients.s3(), monkeypatch, 5)  # 300 held list as 300,000 would
    write_held(aws, arn, 3)
    services.sweeper.sweep(Deadline(30))
    small = len(pages.of(FOLDER))
    write_held(aws, arn, 300)
    pages.calls.clear()

    services.sweeper.sweep(Deadline(30))

    assert len(pages.of(FOLDER)) == small == 2  # the folder's first page finds its machines; one counts
    # Backlog stops at one page (at least 5 here, 1,000 in S3); the oldest is still the first key.
    assert backlog_metrics(capsys) == [(3, True), (5, True)]


def test_each_machine_reports_what_it_holds_its_oldest_age_and_its_quarantine(aws, bucket, sends, capsys):
    arn = create_machine(aws, tags={"Maintenance": "true"})
    services = build()
    write_held(aws, arn, 3)
    services.store.quarantine(held_keys(services)[-1], "TaskTimedOut", parse_state_machine_arn(arn))

    services.sweeper.sweep(Deadline(30))

    [record], _ = metric_records(capsys)
    assert record["StateMachine"] == "Orders"
    assert (record["Backlog"], record["Quarantined"]) == (2, 1)
    assert 3000 < record["OldestPausedAgeSeconds"] < 3700  # the first of them was paused an hour ago


def test_the_fleet_record_has_the_largest_age_the_totals_and_the_machines_that_failed(
    aws, bucket, sends, monkeypatch, capsys
):
    orders = create_machine(aws, "Orders", tags={"Maintenance": "true"})
    billing = create_machine(aws, "Billing", tags={"Maintenance": "true"})
    denied = create_machine(aws, "Denied", tags={"Maintenance": "true"})
    services = build()
    write_held(aws, orders, 4)  # paused an hour ago
    hold(services, billing, "token-billing")
    hold(services, denied, "token-denied")
    services.store.quarantine(held_keys(services)[0], "TaskTimedOut", parse_state_machine_arn(orders))
    refuse(monkeypatch, "ListTagsForResource", "AccessDeniedException", when=for_machine(denied))

    report = services.sweeper.sweep(Deadline(30))

    machines, [fleet] = metric_records(capsys)
    assert [entry["stateMachineArn"] for entry in report.errors] == [denied]
    assert {record["StateMachine"] for record in machines} == {"Orders", "Billing"}
    assert (fleet["Backlog"], fleet["Quarantined"], fleet["SweepErrors"]) == (3 + 1, 1, 1)
    assert fleet["OldestPausedAgeSeconds"] == max(record["OldestPausedAgeSeconds"] for record in machines) > 3000
    assert "StateMachine" not in fleet


def test_the_fleet_record_is_written_with_zeros_when_nothing_is_known(aws, bucket, capsys):
    build().sweeper.sweep(Deadline(30))

    _, [fleet] = metric_records(capsys)
    assert {name: fleet[name] for name in ("Backlog", "OldestPausedAgeSeconds", "Quarantined", "SweepErrors")} == {
        "Backlog": 0,
        "OldestPausedAgeSeconds": 0,
        "Quarantined": 0,
        "SweepErrors": 0,
    }


def test_heartbeats_stream_the_backlog_and_stop_listing_it_at_the_deadline(aws, bucket, sends, monkeypatch):
    arn = create_machine(aws, tags={"Maintenance": "true"})
    services = build(heartbeat=True)
    pages = SmallPages(services.clients.s3(), monkeypatch, 5)
    write_held(aws, arn, 300)
    # The run's time is up once three heartbeats are out.
    deadline = Deadline(3, clock=lambda: sum(sends.heartbeats.values()))

    report = services.sweeper.sweep(deadline)

    # At most three beats plus those in flight were started, so at most three pages of
    # five were listed for them, besides the machine's discovery and its count.
    assert 3 <= report.heartbeats <= 3 + chalicelib.sweep.HEARTBEAT_WORKERS
    assert len(pages.of(FOLDER)) <= 2 + 3
