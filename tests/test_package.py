"""`chalice package`, offline: the SAM template merged with .chalice/resources.json, and Terraform.

Packaging runs on a copy of the project (so the dependency cache in .chalice/deployments
is never touched) with Chalice's pip step replaced by a no-op: the dependencies only
fill deployment.zip, and the templates are what is tested. cfn-lint checks the merged
SAM template with no rule ignored.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cfnlint.api import ManualArgs, lint_file

import app as chalice_app
from tests.harness import REGION, ROOT
from tests.test_metrics import dashboard_body

STAGE = "prod"
ENV = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"][STAGE]["environment_variables"]
FUNCTIONS = {"pauser": "Pauser", "resumer": "Resumer", "sweep": "Sweep", "api_handler": "APIHandler"}
HANDLERS = {"pauser": "app.pauser", "resumer": "app.resumer", "sweep": "app.sweep", "api_handler": "app.app"}
CHALICE_OFFLINE = (
    "import sys, chalice.cli, chalice.deploy.packager as packager;"
    "packager.DependencyBuilder.build_site_packages = lambda *args, **kwargs: None;"
    "sys.exit(chalice.cli.main())"
)


def generated(function):
    return json.loads((ROOT / ".chalice" / f"policy-{STAGE}-{function}.json").read_text())


def package(project: Path, *options: str) -> Path:
    out = project / ("out-" + "-".join(option.strip("-") for option in options[:2]))
    env = {**os.environ, "AWS_DEFAULT_REGION": REGION}
    subprocess.run(
        [sys.executable, "-c", CHALICE_OFFLINE, "package", "--stage", STAGE, *options, str(out)],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    copy = tmp_path_factory.mktemp("project")
    ignore = shutil.ignore_patterns("__pycache__", "deployments", "deployed")
    for name in ("app.py", "requirements.txt"):
        shutil.copy(ROOT / name, copy / name)
    for name in ("chalicelib", ".chalice"):
        shutil.copytree(ROOT / name, copy / name, ignore=ignore)
    return copy


@pytest.fixture(scope="module")
def sam_path(project):
    return package(project, "--merge-template", ".chalice/resources.json") / "sam.json"


@pytest.fixture(scope="module")
def sam(sam_path):
    return json.loads(sam_path.read_text())


@pytest.fixture(scope="module")
def terraform(project):
    return json.loads((package(project, "--pkg-format", "terraform") / "chalice.tf.json").read_text())


def resolve(value, template, stage=STAGE):
    """Fn::FindInMap against the template's mappings, for the given Stage parameter."""
    if isinstance(value, dict) and "Fn::FindInMap" in value:
        mapping, key, name = value["Fn::FindInMap"]
        assert key == {"Ref": "Stage"}
        return template["Mappings"][mapping][stage][name]
    return value


def routes():
    """Every (path, method) app.py serves."""
    return sorted((path, method.lower()) for path, entry in chalice_app.app.routes.items() for method in entry)


# The SAM template


def test_the_template_has_the_four_functions_under_their_contract_names(sam):
    resources = sam["Resources"]
    for function, logical in FUNCTIONS.items():
        properties = resources[logical]["Properties"]
        assert resources[logical]["Type"] == "AWS::Serverless::Function"
        assert properties["Handler"] == HANDLERS[function]
        assert properties["Environment"]["Variables"] == ENV
        suffix = "" if function == "api_handler" else f"-{function}"
        assert resolve(properties["FunctionName"], sam) == f"sfn-pauser-{STAGE}{suffix}"


def test_each_function_has_a_role_of_its_own_holding_exactly_its_generated_policy(sam):
    resources = sam["Resources"]
    roles = {}
    for function, logical in FUNCTIONS.items():
        role = resources[logical]["Properties"]["Role"]["Fn::GetAtt"][0]
        roles[function] = role
        assert resources[role]["Type"] == "AWS::IAM::Role"
        [inline] = resources[role]["Properties"]["Policies"]
        assert inline["PolicyDocument"] == generated(function)
    assert len(set(roles.values())) == len(FUNCTIONS)


def test_the_sweep_runs_every_minute(sam):
    events = sam["Resources"]["Sweep"]["Properties"]["Events"]

    assert [event["Properties"]["Schedule"] for event in events.values() if event["Type"] == "Schedule"] == [
        "rate(1 minute)"
    ]


def test_every_route_of_the_rest_api_requires_sigv4(sam):
    swagger = sam["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]

    assert_iam_auth_on_every_route(swagger)


def assert_iam_auth_on_every_route(swagger):
    served = sorted((path, method) for path, methods in swagger["paths"].items() for method in methods)
    assert served == routes()
    unsigned = [
        (path, method)
        for path, methods in swagger["paths"].items()
        for method, operation in methods.items()
        if operation.get("security") != [{"sigv4": []}]
    ]
    assert unsigned == [], "add authorizer=IAMAuthorizer() to these routes in app.py"
    assert swagger["securityDefinitions"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"


def test_the_token_bucket_is_the_one_the_functions_are_configured_with(sam):
    bucket = sam["Resources"]["TokenBucket"]

    assert bucket["Type"] == "AWS::S3::Bucket"
    assert resolve(bucket["Properties"]["BucketName"], sam) == ENV["Bucket"]
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"  # held tokens outlive a stack


def test_the_bucket_is_encrypted_with_s3_keys_unless_a_kms_key_is_given(sam):
    [rule] = sam["Resources"]["TokenBucket"]["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    condition, with_kms, without_kms = rule["ServerSideEncryptionByDefault"]["Fn::If"]

    assert condition == "UseKms"
    assert without_kms == {"SSEAlgorithm": "AES256"}
    assert with_kms == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Ref": "TokenBucketKmsKeyArn"}}
    assert sam["Parameters"]["TokenBucketKmsKeyArn"]["Default"] == ""
    assert sam["Conditions"]["UseKms"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "TokenBucketKmsKeyArn"}, ""]}]}


def test_with_a_kms_key_every_role_may_use_it_through_s3(sam):
    grant = sam["Resources"]["TokenBucketKeyUse"]
    roles = {sam["Resources"][logical]["Properties"]["Role"]["Fn::GetAtt"][0] for logical in FUNCTIONS.values()}

    assert grant["Type"] == "AWS::IAM::Policy" and grant["Condition"] == "UseKms"
    assert {role["Ref"] for role in grant["Properties"]["Roles"]} == roles
    [statement] = grant["Properties"]["PolicyDocument"]["Statement"]
    assert sorted(statement["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert statement["Resource"] == {"Ref": "TokenBucketKmsKeyArn"}


def test_the_bucket_blocks_all_public_access_and_refuses_plain_http(sam):
    properties = sam["Resources"]["TokenBucket"]["Properties"]
    policy = sam["Resources"]["TokenBucketPolicy"]["Properties"]

    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert policy["Bucket"] == {"Ref": "TokenBucket"}
    [deny] = policy["PolicyDocument"]["Statement"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "s3:*")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Resource"] == [{"Fn::GetAtt": ["TokenBucket", "Arn"]}, {"Fn::Sub": "${TokenBucket.Arn}/*"}]


def test_quarantine_and_audit_expire_and_incomplete_uploads_are_aborted(sam):
    lifecycle = sam["Resources"]["TokenBucket"]["Properties"]["LifecycleConfiguration"]
    rules = {rule["Id"]: rule for rule in lifecycle["Rules"]}
    prefix = ENV["Prefix"]

    assert resolve(rules["ExpireQuarantine"]["Prefix"], sam) == f"{prefix}_sfn-pauser/quarantine/"
    assert rules["ExpireQuarantine"]["ExpirationInDays"] == {"Ref": "QuarantineRetentionDays"}
    assert resolve(rules["ExpireAudit"]["Prefix"], sam) == f"{prefix}_sfn-pauser/audit/"
    assert rules["ExpireAudit"]["ExpirationInDays"] == {"Ref": "AuditRetentionDays"}
    assert rules["AbortIncompleteMultipartUploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert all(rule["Status"] == "Enabled" for rule in rules.values())
    assert "Prefix" not in rules["AbortIncompleteMultipartUploads"]  # the whole bucket


# Operations: the dashboard, the alarms, the access log, the resumer's on-failure queue


ALARMS = {
    "HeldTooLongAlarm": ("SfnPauser", "OldestPausedAgeSeconds"),
    "QuarantinedTokensAlarm": ("SfnPauser", "Quarantined"),
    "SweepFailingAlarm": ("AWS/Lambda", "Errors"),
    "SweepNotRunningAlarm": ("AWS/Lambda", "Invocations"),
    "LostContinuationAlarm": ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
}


def test_the_operations_parameters_default_to_alarms_on_no_topic_and_no_access_log(sam):
    parameters = sam["Parameters"]

    assert (parameters["EnableAlarms"]["Default"], parameters["EnableAlarms"]["AllowedValues"]) == (
        "true",
        ["true", "false"],
    )
    assert parameters["AlarmTopicArn"]["Default"] == ""
    # The example checkpoint's TimeoutSeconds less an hour to act in.
    timeout = json.loads((ROOT / "examples" / "checkpoint.asl.json").read_text())
    [checkpoint] = [state for state in timeout["States"].values() if "TimeoutSeconds" in state]
    assert parameters["HeldAgeAlarmSeconds"]["Default"] == checkpoint["TimeoutSeconds"] - 3600
    assert parameters["ApiAccessLogs"]["Default"] == "false"
    assert sam["Conditions"]["AlarmsEnabled"] == {"Fn::Equals": [{"Ref": "EnableAlarms"}, "true"]}
    assert sam["Conditions"]["AlarmsNotify"] == {
        "Fn::And": [{"Condition": "AlarmsEnabled"}, {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}]
    }
    assert sam["Conditions"]["AccessLogsEnabled"] == {"Fn::Equals": [{"Ref": "ApiAccessLogs"}, "true"]}


@pytest.mark.parametrize(("logical", "metric"), ALARMS.items())
def test_each_alarm_exists_only_when_enabled_and_notifies_the_topic_only_when_given(sam, logical, metric):
    alarm = sam["Resources"][logical]
    properties = alarm["Properties"]
    notify = {"Fn::If": ["AlarmsNotify", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}

    assert (alarm["Type"], alarm["Condition"]) == ("AWS::CloudWatch::Alarm", "AlarmsEnabled")
    assert (properties["Namespace"], properties["MetricName"]) == metric
    assert properties["AlarmActions"] == properties["OKActions"] == notify
    assert "docs/operations.md#" in properties["AlarmDescription"]


def test_the_held_age_alarm_watches_the_fleets_oldest_against_the_threshold_parameter(sam):
    properties = sam["Resources"]["HeldTooLongAlarm"]["Properties"]

    assert "Dimensions" not in properties  # the fleet's figure: the largest age of any machine
    assert (properties["Statistic"], properties["Threshold"]) == ("Maximum", {"Ref": "HeldAgeAlarmSeconds"})
    assert properties["ComparisonOperator"] == "GreaterThanThreshold"


def test_any_quarantined_token_raises_the_quarantine_alarm(sam):
    properties = sam["Resources"]["QuarantinedTokensAlarm"]["Properties"]

    assert "Dimensions" not in properties
    assert (properties["Statistic"], properties["Threshold"], properties["ComparisonOperator"]) == (
        "Maximum",
        0,
        "GreaterThanThreshold",
    )


def test_the_sweep_alarms_watch_the_sweep_function_and_its_silence_is_breaching(sam):
    failing = sam["Resources"]["SweepFailingAlarm"]["Properties"]
    silent = sam["Resources"]["SweepNotRunningAlarm"]["Properties"]
    sweep = [{"Name": "FunctionName", "Value": {"Ref": "Sweep"}}]

    assert sam["Resources"]["Sweep"]["Type"] == "AWS::Serverless::Function"  # Ref gives its function name
    assert failing["Dimensions"] == silent["Dimensions"] == sweep
    assert (failing["ComparisonOperator"], failing["Threshold"], failing["TreatMissingData"]) == (
        "GreaterThanOrEqualToThreshold",
        1,
        "notBreaching",
    )
    # Lambda publishes no Invocations for a minute without one: missing is the point.
    assert (silent["ComparisonOperator"], silent["Threshold"], silent["TreatMissingData"]) == (
        "LessThanThreshold",
        1,
        "breaching",
    )
    assert silent["Period"] * silent["DatapointsToAlarm"] == 300


def test_the_resumers_failed_async_invocations_go_to_a_queue_its_role_alone_may_send_to(sam):
    resources = sam["Resources"]
    config = resources["ResumerAsyncInvokeConfig"]
    grant = resources["ResumerFailuresSend"]
    queue = {"Fn::GetAtt": ["ResumerFailures", "Arn"]}

    assert config["Type"] == "AWS::Lambda::EventInvokeConfig"
    assert config["Properties"]["FunctionName"] == {"Ref": "Resumer"}
    assert config["Properties"]["Qualifier"] == "$LATEST"
    assert config["Properties"]["MaximumRetryAttempts"] == 2
    assert config["Properties"]["DestinationConfig"] == {"OnFailure": {"Destination": queue}}
    # Lambda checks the role may send when the destination is set, so the grant comes first.
    assert config["DependsOn"] == ["ResumerFailuresSend"]
    assert resources["ResumerFailures"]["Type"] == "AWS::SQS::Queue"
    assert resources["ResumerFailures"]["Properties"]["SqsManagedSseEnabled"] is True
    assert grant["Type"] == "AWS::IAM::Policy"
    assert grant["Properties"]["Roles"] == [{"Ref": resources["Resumer"]["Properties"]["Role"]["Fn::GetAtt"][0]}]
    [statement] = grant["Properties"]["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Action"], statement["Resource"]) == ("Allow", ["sqs:SendMessage"], queue)


def test_the_apis_access_log_is_an_option_that_records_who_was_refused_and_why(sam):
    setting = sam["Resources"]["RestAPI"]["Properties"]["AccessLogSetting"]
    log_group = sam["Resources"]["ApiAccessLogGroup"]

    condition, enabled, disabled = setting["Fn::If"]
    assert (condition, disabled) == ("AccessLogsEnabled", {"Ref": "AWS::NoValue"})
    assert enabled["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    line = json.loads(enabled["Format"])  # one JSON object per request
    assert {line[field] for field in ("status", "userArn", "errorType", "error", "requestId")} == {
        "$context.status",
        "$context.identity.userArn",
        "$context.error.responseType",
        "$context.error.message",
        "$context.requestId",
    }
    assert (log_group["Type"], log_group["Condition"]) == ("AWS::Logs::LogGroup", "AccessLogsEnabled")
    assert log_group["Properties"]["RetentionInDays"] == {"Ref": "ApiAccessLogRetentionDays"}


@pytest.mark.parametrize("alarms", [True, False])
def test_the_dashboard_graphs_the_stages_functions_and_queue_and_lists_the_alarms_when_there_are(sam, alarms):
    dashboard = sam["Resources"]["Dashboard"]
    body = dashboard_body(sam, alarms=alarms)
    metrics = [metric for widget in body["widgets"] for metric in widget["properties"].get("metrics", [])]
    listed = [alarm for widget in body["widgets"] for alarm in widget["properties"].get("alarms", [])]

    assert dashboard["Properties"]["DashboardName"] == {"Fn::Sub": "sfn-pauser-${Stage}"}
    functions = {metric[3] for metric in metrics if metric[0] == "AWS/Lambda"}
    assert functions == set(FUNCTIONS.values())  # ${Pauser} etc.: each function's deployed name
    assert [metric[3] for metric in metrics if metric[0] == "AWS/SQS"] == ["ResumerFailures.QueueName"]
    assert listed == ([f"{logical}.Arn" for logical in ALARMS] if alarms else [])
    [threshold] = [
        annotation["value"]
        for widget in body["widgets"]
        for annotation in widget["properties"].get("annotations", {}).get("horizontal", [])
    ]
    assert threshold == sam["Parameters"]["HeldAgeAlarmSeconds"]["Default"]


def test_the_outputs_lead_to_the_dashboard_and_the_queue(sam):
    outputs = sam["Outputs"]

    assert "#dashboards:name=${Dashboard}" in outputs["DashboardUrl"]["Value"]["Fn::Sub"]
    assert outputs["ResumerFailuresQueueUrl"]["Value"] == {"Ref": "ResumerFailures"}
    assert outputs["ApiAccessLogGroupName"]["Condition"] == "AccessLogsEnabled"


def test_cfn_lint_finds_nothing_in_the_merged_template(sam_path):
    matches = lint_file(sam_path, ManualArgs(regions=[REGION]))

    assert [str(match) for match in matches] == []


# Terraform


def test_terraform_has_the_functions_their_own_roles_with_the_generated_policies_and_the_schedule(terraform):
    resources = terraform["resource"]
    for function in FUNCTIONS:
        lambda_function = resources["aws_lambda_function"][function]
        suffix = "" if function == "api_handler" else f"-{function}"
        assert lambda_function["function_name"] == f"sfn-pauser-{STAGE}{suffix}"
        assert lambda_function["handler"] == HANDLERS[function]
        assert lambda_function["role"] == f"${{aws_iam_role.{function}_role.arn}}"
        assert json.loads(resources["aws_iam_role_policy"][f"{function}_role"]["policy"]) == generated(function)
    [schedule] = resources["aws_cloudwatch_event_rule"].values()
    assert schedule["schedule_expression"] == "rate(1 minute)"
    [target] = resources["aws_cloudwatch_event_target"].values()
    assert target["arn"] == "${aws_lambda_function.sweep.arn}"


def test_terraform_requires_sigv4_on_every_route(terraform):
    assert_iam_auth_on_every_route(json.loads(terraform["locals"]["chalice_api_swagger"]))


def test_terraform_pins_the_old_terraform_and_providers_docs_deploy_md_names(terraform):
    """docs/deploy.md tells Terraform users which versions the output needs; this keeps it true."""
    pins = terraform["terraform"]
    documented = (ROOT / "docs" / "deploy.md").read_text()

    assert pins["required_version"] == ">= 0.12.26, < 1.4.0"
    assert pins["required_providers"]["aws"]["version"] == ">= 3.61.0, < 5"
    assert pins["required_providers"]["null"]["version"] == ">= 2, < 4"
    for constraint in ("`>= 0.12.26, < 1.4.0`", "`>= 3.61.0, < 5`", "`>= 2, < 4`"):
        assert constraint in documented
