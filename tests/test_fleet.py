"""The fleet: the machines sfn-pauser knows, and the one loop every fleet-wide job uses,
in which one machine's trouble is that machine's entry and never stops the others.

AWS is moto; the faults moto does not give (throttling past botocore's retries,
an SCP's AccessDenied) are injected at the client call with :func:`refuse`.
"""

import io
import json
import logging

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from moto.stepfunctions.exceptions import ResourceNotFound
from moto.stepfunctions.models import StepFunctionBackend

from chalicelib.arns import AccountRegion, parse_state_machine_arn
from chalicelib.config import Settings
from chalicelib.events import parse_checkpoint_event
from chalicelib.fleet import Fleet, MachineError, known_machines
from chalicelib.logs import DecisionLog
from chalicelib.metrics import Metrics
from chalicelib.services import Services
from tests.conftest import BUCKET, PREFIX
from tests.harness import ACCOUNT, REGION

PASS = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})
HOME = AccountRegion("aws", REGION, ACCOUNT)


def refuse(monkeypatch, operation, code, status=400, when=lambda params: True):
    """Make every client's ``operation`` fail with AWS error ``code`` (for the calls ``when``
    picks by their parameters), as AWS answers once botocore's own retries are spent."""
    original = BaseClient._make_api_call

    def call(self, name, params):
        if name == operation and when(params):
            raise ClientError(
                {
                    "Error": {"Code": code, "Message": f"injected {code}"},
                    "ResponseMetadata": {"HTTPStatusCode": status},
                },
                name,
            )
        return original(self, name, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", call)


def tags_of_deleted_machines_are_not_found(monkeypatch):
    """AWS answers ListTagsForResource for a deleted state machine with ResourceNotFound;
    moto answers with its leftover tags."""
    original = StepFunctionBackend.list_tags_for_resource

    def list_tags(self, arn):
        if ":stateMachine:" in arn and all(machine.arn != arn for machine in self.state_machines):
            raise ResourceNotFound(arn)
        return original(self, arn)

    monkeypatch.setattr(StepFunctionBackend, "list_tags_for_resource", list_tags)


def for_machine(arn):
    return lambda params: params.get("resourceArn") == arn or params.get("stateMachineArn") == arn


def create_machine(aws, name):
    return aws.sfn.create_state_machine(name=name, definition=PASS, roleArn=f"arn:aws:iam::{ACCOUNT}:role/states")[
        "stateMachineArn"
    ]


def build():
    return Services.build(Settings(bucket=BUCKET, prefix=PREFIX), logging.getLogger("test-fleet"))


class Recorded:
    """A Fleet whose log lines and metrics are kept, to read them back."""

    def __init__(self, caplog):
        self.caplog = caplog
        self.metrics = io.StringIO()
        self.fleet = Fleet(DecisionLog(logging.getLogger("test-fleet")), Metrics(self.metrics))

    def decisions(self):
        return [json.loads(record.getMessage()) for record in self.caplog.records if record.name == "test-fleet"]

    def emitted(self):
        return [json.loads(line) for line in self.metrics.getvalue().splitlines()]


def test_each_machine_gets_its_own_result_or_error_and_the_loop_goes_on_past_every_kind_of_trouble(
    aws, bucket, monkeypatch, caplog
):
    names = ["Deleted", "Throttled", "Denied", "Broken", "Fine"]
    arns = {name: create_machine(aws, name) for name in names}
    aws.sfn.delete_state_machine(stateMachineArn=arns["Deleted"])
    tags_of_deleted_machines_are_not_found(monkeypatch)
    refuse(monkeypatch, "ListTagsForResource", "ThrottlingException", when=for_machine(arns["Throttled"]))
    refuse(monkeypatch, "ListTagsForResource", "AccessDeniedException", when=for_machine(arns["Denied"]))
    flag = build().flag
    recorded = Recorded(caplog)

    def work(machine):
        if machine.name == "Broken":
            raise KeyError("a bug of ours")
        return flag.read(machine).on

    with caplog.at_level(logging.INFO, logger="test-fleet"):
        outcomes = dict(recorded.fleet.each("test", [parse_state_machine_arn(arns[name]) for name in names], work))

    by_name = {machine.name: outcome for machine, outcome in outcomes.items()}
    assert by_name["Fine"] is False
    errors = {name: by_name[name] for name in names[:-1]}
    assert all(isinstance(error, MachineError) for error in errors.values())
    assert {name: (error.code, error.status) for name, error in errors.items()} == {
        "Deleted": ("StateMachineNotFound", 404),
        "Throttled": ("AwsUnavailable", 503),
        "Denied": ("AwsAccessDenied", 403),
        "Broken": ("InternalError", 500),
    }
    assert errors["Throttled"].as_entry() == {
        "stateMachineArn": arns["Throttled"],
        "error": {"Code": "AwsUnavailable", "Message": errors["Throttled"].message, "Status": 503},
    }
    failed = [line for line in recorded.decisions() if line["decision"] == "machine-failed"]
    assert [(line["job"], line["stateMachine"], line["status"]) for line in failed] == [
        ("test", arns["Deleted"], 404),
        ("test", arns["Throttled"], 503),
        ("test", arns["Denied"], 403),
        ("test", arns["Broken"], 500),
    ]
    assert [(record["StateMachine"], record["MachineErrors"]) for record in recorded.emitted()] == [
        (name, 1) for name in names[:-1]
    ]


def test_the_loop_is_lazy_so_a_job_can_stop_between_machines(aws, bucket, caplog):
    done = []
    machines = [parse_state_machine_arn(f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:M{n}") for n in range(3)]

    for machine, _ in Recorded(caplog).fleet.each("test", machines, done.append):
        if machine.name == "M1":
            break

    assert [machine.name for machine in done] == ["M0", "M1"]


@pytest.mark.parametrize("name", ["old exports", "a#b", "x" * 81])
def test_a_folder_no_state_machine_could_have_is_a_stray_and_never_becomes_an_arn(aws, bucket, name):
    orders = create_machine(aws, "Orders")
    services = build()
    services.store.save(parse_checkpoint_event({"taskToken": "token-1", "stateMachineArn": orders}))
    aws.s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}{name}/readme.txt", Body=b"exported by hand")

    known = known_machines(services.flag, services.store, HOME)

    assert [str(machine) for machine in known.machines] == [orders]
    assert known.strays == [name]


def test_a_seed_folder_with_a_valid_name_is_placed_in_the_home_account_and_region(aws, bucket):
    aws.s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}orders+eu/readme.txt", Body=b"")
    services = build()

    known = known_machines(services.flag, services.store, HOME)

    assert [str(machine) for machine in known.machines] == [HOME.machine("orders+eu").unqualified]
    assert known.strays == []


def test_a_folder_whose_tokens_s3_will_not_show_does_not_stop_the_others_being_known(aws, bucket, monkeypatch):
    services = build()
    orders, secret = create_machine(aws, "Orders"), create_machine(aws, "Secret")
    for arn in (orders, secret):
        services.store.save(parse_checkpoint_event({"taskToken": f"token-of-{arn}", "stateMachineArn": arn}))
    # A KMS key policy (or a prefix-scoped deny) keeps one folder's objects from the role.
    refuse(monkeypatch, "GetObject", "AccessDenied", 403, when=lambda params: "/Secret/" in params["Key"])

    known = known_machines(services.flag, services.store, HOME)

    assert sorted(str(machine) for machine in known.machines) == [orders, secret]


def test_every_machine_holding_tokens_in_a_shared_folder_is_known_with_or_without_a_mirror(aws, bucket):
    # Orders in us-east-1 has a mirror; its namesakes in eu-west-1 and in another
    # account hold tokens in the same folder without one (as with MaintenanceCacheSeconds=0
    # before they were first seen, or tokens saved by an earlier version).
    services = build()
    east = parse_state_machine_arn(create_machine(aws, "Orders"))
    west = parse_state_machine_arn(str(east).replace(REGION, "eu-west-1"))
    other = parse_state_machine_arn(str(east).replace(ACCOUNT, "210987654321"))
    services.flag.refresh(east)
    for n, machine in enumerate([east, west, other, west]):
        services.store.save(parse_checkpoint_event({"taskToken": f"token-{n}", "stateMachineArn": str(machine)}))

    known = known_machines(services.flag, services.store, HOME)

    assert set(known.machines) == {east, west, other}
