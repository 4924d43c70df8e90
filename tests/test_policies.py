"""The IAM policies are generated from the code (scripts/generate_policies.py), never stale,
and scoped to the stage's own bucket, prefix, state machines, resumer and log group."""

import importlib.util
import json
import sys
import textwrap

import pytest

from chalicelib.config import normalise_prefix
from tests.harness import ROOT

_spec = importlib.util.spec_from_file_location("generate_policies", ROOT / "scripts" / "generate_policies.py")
generator = sys.modules.setdefault("generate_policies", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(generator)

CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text())
STAGES = list(CONFIG["stages"])
FUNCTIONS = ["api_handler", "pauser", "resumer", "sweep"]


@pytest.fixture(scope="module")
def regenerated():
    return generator.generate(ROOT)


def policy(stage, function):
    return json.loads((ROOT / ".chalice" / f"policy-{stage}-{function}.json").read_text())


def actions(stage, function):
    return {action for statement in policy(stage, function)["Statement"] for action in statement["Action"]}


def statements_with(stage, function, action):
    return [statement for statement in policy(stage, function)["Statement"] if action in statement["Action"]]


def test_the_committed_files_are_what_the_code_generates_now(regenerated):
    stale = [str(path) for path in generator.stale(regenerated, ROOT)]

    assert stale == [], f"stale: {stale}; run `python3 dev.py policies` and commit the result"


def test_the_generator_finds_every_function_app_py_deploys(regenerated):
    assert sorted(regenerated.reaches) == FUNCTIONS


def test_chalice_uses_the_generated_files_and_never_autogenerates(regenerated):
    assert CONFIG["autogen_policy"] is False
    for stage in STAGES:
        for function in FUNCTIONS:
            settings = CONFIG["stages"][stage]["lambda_functions"][function]
            assert settings["iam_policy_file"] == f"policy-{stage}-{function}.json"
            assert (ROOT / ".chalice" / settings["iam_policy_file"]).exists()


def test_the_task_handler_cannot_tag_and_the_api_can():
    for stage in STAGES:
        assert not {"states:TagResource", "states:UntagResource"} & actions(stage, "pauser")
        assert {"states:TagResource", "states:UntagResource"} <= actions(stage, "api_handler")


def test_the_sweep_can_lift_a_window_and_put_the_tags_back_to_a_switch_that_overtook_it():
    """It untags (an expired ``until``) and sends heartbeats. It may also tag: when a
    pipeline's switch on overtakes its lift, it writes the tags that switch took effect
    with (tests/test_iam.py runs that race); it never switches maintenance on itself
    (tests/test_sweep.py). The pauser and the resumer never write tags."""
    for stage in STAGES:
        granted = actions(stage, "sweep")
        assert {"states:UntagResource", "states:SendTaskHeartbeat", "states:ListTagsForResource"} <= granted
        assert "states:TagResource" in granted
        for function in ("pauser", "resumer"):
            assert not {"states:TagResource", "states:UntagResource"} & actions(stage, function)


def test_only_the_sweep_sends_heartbeats_and_only_the_api_and_sweep_describe_machines():
    for stage in STAGES:
        assert [f for f in FUNCTIONS if "states:SendTaskHeartbeat" in actions(stage, f)] == ["sweep"]
        assert [f for f in FUNCTIONS if "states:DescribeStateMachine" in actions(stage, f)] == ["api_handler", "sweep"]


def test_paginated_listing_and_batched_deletes_are_authorised_as_their_actions():
    for stage in STAGES:
        for function in FUNCTIONS:
            assert {"s3:ListBucket", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"} <= actions(stage, function)
            assert not any(
                action.startswith("s3:")
                and action not in ("s3:ListBucket", "s3:DeleteObject", "s3:GetObject", "s3:PutObject")
                for action in actions(stage, function)
            )


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_statement_is_scoped_to_what_the_stage_owns(stage, function):
    env = CONFIG["stages"][stage]["environment_variables"]
    bucket, prefix = env["Bucket"], normalise_prefix(env["Prefix"])
    name = f"sfn-pauser-{stage}" if function == "api_handler" else f"sfn-pauser-{stage}-{function}"
    for statement in policy(stage, function)["Statement"]:
        assert statement["Effect"] == "Allow"
        granted = set(statement["Action"])
        if granted <= {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}:
            group = f"arn:aws:logs:*:*:log-group:/aws/lambda/{name}"
            assert statement["Resource"] == [group, f"{group}:*"]
        elif granted == {"s3:ListBucket"}:
            assert statement["Resource"] == [f"arn:aws:s3:::{bucket}"]
            assert statement["Condition"] == {"StringLikeIfExists": {"s3:prefix": [f"{prefix}*"]}}
        elif all(action.startswith("s3:") for action in granted):
            assert statement["Resource"] == [f"arn:aws:s3:::{bucket}/{prefix}*"]
        elif granted <= {"states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"}:
            assert statement["Resource"] == ["*"]  # a task token has no ARN
        elif granted == {"states:DescribeExecution"}:
            machines = generator.state_machine_resources(env)
            assert statement["Resource"] == [m.replace(":stateMachine:", ":execution:") + ":*" for m in machines]
        elif all(action.startswith("states:") for action in granted):
            assert statement["Resource"] == generator.state_machine_resources(env)
        else:
            assert granted == {"lambda:InvokeFunction"}
            assert statement["Resource"] == [f"arn:aws:lambda:*:*:function:{env['ResumerFunctionName']}"]


def test_the_allow_list_narrows_the_state_machine_statement_to_its_arn_patterns():
    orders = "arn:aws:states:*:123456789012:stateMachine:orders-*"
    billing = "arn:aws:states:eu-west-1:123456789012:stateMachine:Billing"

    def resources(allowed):
        return generator.state_machine_resources({"Bucket": "b", "AllowedStateMachines": allowed})

    assert resources("*") == ["arn:aws:states:*:*:stateMachine:*"]
    assert resources("") == ["arn:aws:states:*:*:stateMachine:*"]
    assert resources(f" {billing} ,{orders}") == sorted([orders, billing])
    assert resources(f"{orders},*") == ["arn:aws:states:*:*:stateMachine:*"]
    with pytest.raises(generator.GenerationError, match="AllowedStateMachines"):
        resources("orders-*")


def test_the_merge_template_names_each_stages_bucket_and_functions(regenerated):
    template = json.loads((ROOT / ".chalice" / "resources.json").read_text())
    for stage in STAGES:
        env = CONFIG["stages"][stage]["environment_variables"]
        mapping = template["Mappings"]["Stages"][stage]
        assert mapping["Bucket"] == env["Bucket"]
        assert mapping["ResumerFunctionName"] == env["ResumerFunctionName"]
        assert mapping["QuarantinePrefix"] == f"{normalise_prefix(env['Prefix'])}_sfn-pauser/quarantine/"
        assert mapping["AuditPrefix"] == f"{normalise_prefix(env['Prefix'])}_sfn-pauser/audit/"
    assert template["Parameters"]["Stage"]["AllowedValues"] == STAGES


# The analysis itself, on a small app written for it.

APP = """
from chalice import Chalice
from chalicelib.clients import Clients
from chalicelib.control import Control
from chalicelib.store import Store

app = Chalice(app_name="demo")
clients = Clients()
store = Store(clients.s3())
control = Control(clients)


@app.lambda_function(name="lister")
def lister(event, context):
    return list(store.names())


@app.schedule("rate(1 minute)", name="lifter")
def lifter(event):
    control.switch("arn", False)


@app.route("/", methods=["POST"])
def index():
    control.switch("arn", app.current_request.json_body["enabled"])
    store.clear([])
"""
CHALICELIB = {
    "clients.py": """
        import boto3

        class Clients:
            def __init__(self, session=None):
                self._session = session or boto3.session.Session()

            def s3(self):
                return self._client("s3")

            def sfn(self):
                return self._client("stepfunctions")

            def _client(self, service):
                return self._session.client(service)
    """,
    "store.py": """
        from typing import Any

        class Store:
            def __init__(self, s3: Any) -> None:
                self._s3 = s3

            def names(self):
                for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket="b", Prefix="p/"):
                    yield from page.get("Contents", [])

            def clear(self, keys):
                self._s3.delete_objects(Bucket="b", Delete={"Objects": keys})
    """,
    "control.py": """
        from chalicelib.clients import Clients

        class Control:
            def __init__(self, clients: Clients) -> None:
                self._clients = clients

            def switch(self, arn: str, enabled: bool) -> None:
                if enabled:
                    self._clients.sfn().tag_resource(resourceArn=arn, tags=[])
                else:
                    self._clients.sfn().untag_resource(resourceArn=arn, tagKeys=[])
    """,
}
DEMO_CONFIG = {
    "version": "2.0",
    "app_name": "demo",
    "stages": {"prod": {"environment_variables": {"Bucket": "demo-bucket", "Prefix": "p"}}},
}


def demo_project(tmp_path, **replaced):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "chalicelib").mkdir()
    (tmp_path / "chalicelib" / "__init__.py").write_text("")
    for name, source in {**CHALICELIB, **replaced}.items():
        (tmp_path / "chalicelib" / name).write_text(textwrap.dedent(source))
    (tmp_path / ".chalice").mkdir()
    (tmp_path / ".chalice" / "config.json").write_text(json.dumps(DEMO_CONFIG))
    return tmp_path


def test_calls_are_followed_through_injected_clients_paginators_and_literal_branches(tmp_path):
    generated = generator.generate(demo_project(tmp_path))

    assert generated.actions == {
        "api_handler": ["s3:DeleteObject", "states:TagResource", "states:UntagResource"],
        "lifter": ["states:UntagResource"],  # switch(..., False): the tagging branch is never taken
        "lister": ["s3:ListBucket"],  # get_paginator("list_objects_v2").paginate()
    }
    written = json.loads(generated.files[generator.Path(".chalice/policy-prod-lister.json")])
    assert written["Statement"][1] == {
        "Sid": "ListOwnPrefix",
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": ["arn:aws:s3:::demo-bucket"],
        "Condition": {"StringLikeIfExists": {"s3:prefix": ["p/*"]}},
    }


def test_a_call_named_like_an_aws_operation_on_an_untyped_receiver_stops_the_generator(tmp_path):
    sneaky = (
        CHALICELIB["store.py"]
        + """
            def forget(self, s3_client, key):
                s3_client.delete_object(Bucket="b", Key=key)
    """
    )
    project = demo_project(tmp_path, **{"store.py": sneaky})
    (project / "app.py").write_text(
        APP + "\n\n@app.lambda_function(name='forgetter')\ndef forgetter(e, c):\n    store.forget(e['client'], 'k')\n"
    )

    with pytest.raises(generator.GenerationError, match=r"store.py:\d+: .delete_object"):
        generator.generate(project)


def test_an_aws_call_no_handler_reaches_stops_the_generator(tmp_path):
    unreached = (
        CHALICELIB["store.py"]
        + """
            def orphan(self):
                self._s3.put_object(Bucket="b", Key="k", Body=b"")
    """
    )
    project = demo_project(tmp_path, **{"store.py": unreached})
    (project / "app.py").write_text(APP + "\n\ndef helper(s3):\n    s3.get_object(Bucket='b', Key='k')\n")

    with pytest.raises(generator.GenerationError, match=r"app.py:\d+: .get_object\(...\) is reached from no handler"):
        generator.generate(project)


def test_check_mode_reports_a_stale_file_and_writes_nothing(tmp_path, capsys, monkeypatch):
    project = demo_project(tmp_path)
    monkeypatch.setattr(generator, "ROOT", project)
    assert generator.main([]) == 0
    target = project / ".chalice" / "policy-prod-lister.json"
    target.write_text("{}\n")

    assert generator.main(["--check"]) == 1
    assert target.read_text() == "{}\n"
    assert "policy-prod-lister.json" in capsys.readouterr().err
    assert generator.main([]) == 0
    assert generator.main(["--check"]) == 0


def test_the_deploy_doc_shows_every_prod_policy_in_full():
    text = (ROOT / "docs" / "deploy.md").read_text()
    shown = text.split(generator.DOCS_BEGIN, 1)[1].split(generator.DOCS_END, 1)[0]

    for function in FUNCTIONS:
        assert (ROOT / ".chalice" / f"policy-prod-{function}.json").read_text() in shown
