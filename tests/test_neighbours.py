"""Every path that touches a held token acts only on its own machine's, and finds every machine.

The neighbourhood (tests/neighbours.py) shares the ``Orders`` folder between three
machines of that name (us-east-1, eu-west-1, another account), and puts a
deleted machine, an Express machine, a machine outside the allow-list and a
stray folder next to it. The AWS model answers a token sent to the wrong region
or account with ``InvalidToken``, as AWS does.
"""

import json
from typing import Any

import pytest

import app as chalice_app
from tests.aws_model import AwsModel
from tests.harness import ACCOUNT, REGION
from tests.neighbours import ALLOWED, Neighbourhood, sfn_in

pytestmark = pytest.mark.stage_env(AllowedStateMachines=ALLOWED)


def post(client: Any, path: str, body: dict[str, Any]) -> Any:
    return client.http.post(path, headers={"Content-Type": "application/json"}, body=json.dumps(body))


class SweepContext:
    """The Lambda context the sweep reads, as AWS gives it: its own ARN says its account
    and region (chalice's test client leaves it empty)."""

    invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:sfn-pauser-dev-sweep"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def sweep(client: Any) -> Any:
    event = client.events.generate_cw_event("aws.events", "Scheduled Event", {}, [], region=REGION)
    return chalice_app.sweep(event, SweepContext())


def untouched(here: Neighbourhood) -> None:
    assert here.touched().isdisjoint(here.neighbour_tokens()), "a neighbour's token was sent"
    assert here.neighbour_tokens() <= here.held(), "a neighbour's token left its folder"


def test_resuming_one_machine_sends_only_its_own_tokens(neighbourhood: Neighbourhood, client):
    response = post(client, "/resume", {"stateMachineArn": neighbourhood.home})

    assert response.status_code == 200, response.body
    assert response.json_body["resumed"] == 3
    assert set(neighbourhood.model.successes) == set(neighbourhood.tokens[neighbourhood.home])
    untouched(neighbourhood)


def test_lifting_one_machine_resumes_only_its_own_tokens(neighbourhood: Neighbourhood, client):
    post(client, "/maintenance", {"stateMachineArn": neighbourhood.home, "enabled": True})

    response = post(client, "/maintenance", {"stateMachineArn": neighbourhood.home, "enabled": False})

    assert response.status_code == 200, response.body
    assert (response.json_body["resumed"], response.json_body["expired"]) == (3, 0)
    untouched(neighbourhood)


def test_aborting_one_machine_fails_only_its_own_tasks(neighbourhood: Neighbourhood, client):
    response = post(client, "/abort", {"stateMachineArn": neighbourhood.home, "all": True})

    assert response.status_code == 200, response.body
    assert response.json_body["aborted"] == 3
    assert set(neighbourhood.model.failures) == set(neighbourhood.tokens[neighbourhood.home])
    untouched(neighbourhood)


def test_a_dead_token_is_quarantined_under_its_own_machine_only(neighbourhood: Neighbourhood, client):
    dead = neighbourhood.tokens[neighbourhood.home][0]
    neighbourhood.model.kill(dead, "TaskDoesNotExist")

    response = post(client, "/resume", {"stateMachineArn": neighbourhood.home})

    assert (response.json_body["resumed"], response.json_body["expired"]) == (2, 1), response.body
    status = client.http.get(f"/maintenance?stateMachineArn={neighbourhood.home}").json_body
    assert (status["paused"], status["quarantined"]) == (0, 1)
    untouched(neighbourhood)


@pytest.mark.stage_env(AllowedStateMachines=ALLOWED, HeartbeatHeldTasks="true")
def test_heartbeats_go_to_each_token_s_own_region_and_keep_every_namesake_held(neighbourhood: Neighbourhood, client):
    sfn_in(ACCOUNT, REGION).tag_resource(resourceArn=neighbourhood.home, tags=[{"key": "Maintenance", "value": "true"}])

    sweep(client)

    model = neighbourhood.model
    assert dict(model.misdirected) == {}, "a heartbeat went to a region or account that did not issue its token"
    ours = neighbourhood.tokens[neighbourhood.home] + neighbourhood.tokens[neighbourhood.other_region]
    assert set(ours) <= set(model.heartbeats), "a namesake in maintenance got no heartbeat"
    assert set(ours) <= neighbourhood.held(), "a live token was quarantined"
    assert neighbourhood.neighbour_tokens() <= neighbourhood.held()


@pytest.mark.parametrize(
    "cache_seconds",
    [
        pytest.param(
            seconds, marks=pytest.mark.stage_env(AllowedStateMachines=ALLOWED, MaintenanceCacheSeconds=seconds)
        )
        for seconds in ("10", "0")
    ],
)
def test_a_sweep_finds_every_machine_holding_tokens_in_a_shared_folder(
    neighbourhood: Neighbourhood, client, cache_seconds
):
    # Both namesakes in this account are lifted with the AWS CLI.
    sfn_in(ACCOUNT, "eu-west-1").untag_resource(resourceArn=neighbourhood.other_region, tagKeys=["Maintenance"])

    sweep(client)

    lifted = neighbourhood.tokens[neighbourhood.home] + neighbourhood.tokens[neighbourhood.other_region]
    assert set(lifted) <= set(neighbourhood.model.successes), "every machine holding tokens in the folder is found"


def test_one_bad_neighbour_never_stops_the_sweep_for_the_others(neighbourhood: Neighbourhood, client):
    report = sweep(client)

    assert set(neighbourhood.tokens[neighbourhood.home]) <= set(neighbourhood.model.successes), report
    skipped = {entry["stateMachineArn"]: entry["reason"] for entry in report["skipped"]}
    assert skipped.get(neighbourhood.outsider) == "outside AllowedStateMachines", report
    assert neighbourhood.other_account in skipped, "another account's namesake is left alone, and said so"


def test_the_sweep_leaves_a_machine_outside_the_allow_list_alone(neighbourhood: Neighbourhood, client):
    sweep(client)

    outsider = set(neighbourhood.tokens[neighbourhood.outsider])
    assert outsider <= neighbourhood.held() and outsider.isdisjoint(neighbourhood.touched())


@pytest.mark.parametrize(
    "heartbeats",
    [
        pytest.param(value, marks=pytest.mark.stage_env(AllowedStateMachines=ALLOWED, HeartbeatHeldTasks=value))
        for value in ("false", "true")
    ],
)
def test_a_namesake_in_another_account_is_never_sent_to_or_quarantined(
    neighbourhood: Neighbourhood, client, heartbeats
):
    sweep(client)

    theirs = set(neighbourhood.tokens[neighbourhood.other_account])
    assert theirs <= neighbourhood.held() and theirs.isdisjoint(neighbourhood.touched())


def test_counts_and_listings_show_only_the_machine_asked_about(neighbourhood: Neighbourhood, client):
    home, other = neighbourhood.home, neighbourhood.other_region
    for arn, count in ((home, 3), (other, 2)):
        status = client.http.get(f"/maintenance?stateMachineArn={arn}")
        assert status.status_code == 200, status.body
        assert status.json_body["paused"] == count, (arn, status.json_body)
        listing = client.http.get(f"/maintenance/paused?stateMachineArn={arn}")
        assert listing.status_code == 200, listing.body
        executions = {item["executionArn"] for item in listing.json_body["paused"]}
        assert executions == {f"{arn}:run-{n}" for n in range(count)}


def test_the_overview_lists_each_namesake_with_its_own_count_despite_bad_neighbours(
    neighbourhood: Neighbourhood, client
):
    response = client.http.get("/maintenance")

    assert response.status_code == 200, response.body
    paused = {item["stateMachineArn"]: item["paused"] for item in response.json_body["stateMachines"]}
    assert paused.get(neighbourhood.home) == 3, paused
    assert paused.get(neighbourhood.other_region) == 2, paused


def test_the_model_refuses_a_token_at_an_endpoint_that_did_not_issue_it(plain_aws, aws_model: AwsModel):
    aws_model.issue("eu-token", "eu-west-1")

    with pytest.raises(Exception, match="InvalidToken"):
        sfn_in(ACCOUNT, REGION).send_task_heartbeat(taskToken="eu-token")
    with pytest.raises(Exception, match="InvalidToken"):
        sfn_in("222222222222", "eu-west-1").send_task_success(taskToken="eu-token", output="{}")
    sfn_in(ACCOUNT, "eu-west-1").send_task_heartbeat(taskToken="eu-token")

    assert aws_model.misdirected["eu-token"] == 2 and aws_model.heartbeats["eu-token"] == 1
