"""Metrics as CloudWatch Embedded Metric Format lines: the shape CloudWatch Logs turns into metrics."""

import ast
import io
import json
import re

import pytest

from chalicelib.metrics import NAMESPACE, UNITS, Metrics
from tests.harness import ROOT

# Where the app emits metrics; the names are read from the calls themselves.
SOURCES = [ROOT / "app.py", *sorted((ROOT / "chalicelib").glob("*.py"))]
EMITTERS = {"emit": "machine", "emit_fleet": "fleet"}


def emitted_by_the_code():
    """{"machine": names, "fleet": names}: the keyword names of every ``.emit(...)`` and
    ``.emit_fleet(...)`` call in app.py and chalicelib/, as the code is written."""
    found = {kind: set() for kind in EMITTERS.values()}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in EMITTERS:
                names = {keyword.arg for keyword in node.keywords}
                assert None not in names, f"{path.name}:{node.lineno}: name each metric, no **values"
                found[EMITTERS[node.func.attr]] |= names
    return found


# The units CloudWatch accepts (PutMetricData's StandardUnit); EMF rejects others.
CLOUDWATCH_UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
    "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second",
    "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
    "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
}  # fmt: skip


def emitted(**values):
    stream = io.StringIO()
    Metrics(stream, clock=lambda: 1_701_432_896.789).emit("Orders", **values)
    return stream.getvalue()


def test_one_emit_writes_exactly_one_json_line():
    text = emitted(Resumed=3, Backlog=10)

    assert text.endswith("\n")
    assert text.count("\n") == 1
    json.loads(text)


def test_the_line_is_an_emf_record_in_the_sfn_pauser_namespace_by_state_machine():
    record = json.loads(emitted(Resumed=3, Throttled=1))

    [directive] = record["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE == "SfnPauser"
    assert directive["Dimensions"] == [["StateMachine"]]
    # Every dimension a directive names must be a string member of the record.
    assert record["StateMachine"] == "Orders"
    assert [metric["Name"] for metric in directive["Metrics"]] == ["Resumed", "Throttled"]
    assert (record["Resumed"], record["Throttled"]) == (3, 1)


def test_the_timestamp_is_the_injected_clock_in_whole_milliseconds():
    record = json.loads(emitted(Paused=1))

    assert record["_aws"]["Timestamp"] == 1_701_432_896_789
    assert isinstance(record["_aws"]["Timestamp"], int)


@pytest.mark.parametrize("name", sorted(UNITS))
def test_every_metric_the_app_emits_carries_a_cloudwatch_unit(name):
    record = json.loads(emitted(**{name: 2}))

    [metric] = record["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    assert metric["Unit"] in CLOUDWATCH_UNITS
    assert record[name] == 2


def test_ages_are_in_seconds_and_counts_are_counts():
    record = json.loads(emitted(OldestPausedAgeSeconds=12.5, Backlog=4))

    units = {metric["Name"]: metric["Unit"] for metric in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units == {"OldestPausedAgeSeconds": "Seconds", "Backlog": "Count"}
    assert record["OldestPausedAgeSeconds"] == 12.5


def test_zero_values_are_still_sent_so_dashboards_show_an_empty_backlog():
    record = json.loads(emitted(Backlog=0, OldestPausedAgeSeconds=0))

    assert (record["Backlog"], record["OldestPausedAgeSeconds"]) == (0, 0)


def test_no_values_write_no_line():
    assert emitted() == ""


def test_by_default_the_line_goes_to_stdout_which_lambda_ships_to_cloudwatch_logs(capsys):
    Metrics(clock=lambda: 1.0).emit("Orders", Paused=1)

    line = capsys.readouterr().out
    assert json.loads(line)["Paused"] == 1


def test_a_fleet_record_has_no_dimension_and_no_state_machine():
    stream = io.StringIO()
    Metrics(stream, clock=lambda: 1.0).emit_fleet(OldestPausedAgeSeconds=90.5, SweepErrors=0)

    record = json.loads(stream.getvalue())
    [directive] = record["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [[]]  # one dimension set, empty: the metric has no dimension
    assert directive["Namespace"] == NAMESPACE
    assert "StateMachine" not in record
    assert (record["OldestPausedAgeSeconds"], record["SweepErrors"]) == (90.5, 0)


def test_the_code_emits_exactly_the_metrics_that_have_units():
    found = emitted_by_the_code()

    assert found["machine"] and found["fleet"]
    assert found["machine"] | found["fleet"] == set(UNITS)


# The dashboard and alarms of .chalice/resources.json against the code.

TEMPLATE = json.loads((ROOT / ".chalice" / "resources.json").read_text())
# {SfnPauser,StateMachine}: exactly the metrics with that one dimension, i.e. each machine's.
MACHINE_SEARCH = re.compile(r"\{SfnPauser,StateMachine\} MetricName=\"([^\"]+)\"")


def dashboard_body(template, alarms=True):
    """The DashboardBody as the deployed stack would hold it: the Fn::Join and Fn::If
    resolved, each ``${…}`` replaced by its name (and the threshold by its default)."""

    def resolve(value):
        if isinstance(value, str):
            return value
        if "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            return separator.join(resolve(part) for part in parts)
        if "Fn::If" in value:
            condition, yes, no = value["Fn::If"]
            assert condition == "AlarmsEnabled"
            return resolve(yes if alarms else no)
        if "Fn::Sub" in value:
            threshold = str(template["Parameters"]["HeldAgeAlarmSeconds"]["Default"])
            text = value["Fn::Sub"].replace("${HeldAgeAlarmSeconds}", threshold)
            return re.sub(r"\$\{([^}]+)\}", r"\1", text)
        raise AssertionError(f"unexpected in the dashboard body: {value}")

    return json.loads(resolve(template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]))


def sfn_pauser_metrics_shown(template):
    """{(name, "machine" | "fleet")} the dashboard graphs and the alarms watch in the SfnPauser namespace."""
    shown = set()
    for widget in dashboard_body(template)["widgets"]:
        for metric in widget["properties"].get("metrics", []):
            if "expression" in metric[0]:
                shown |= {(name, "machine") for name in MACHINE_SEARCH.findall(metric[0]["expression"])}
                assert "SfnPauser" not in MACHINE_SEARCH.sub("", metric[0]["expression"]), metric
            elif metric[0] == "SfnPauser":
                dimensions = [part for part in metric[2:] if not isinstance(part, dict)]
                shown.add((metric[1], "fleet" if not dimensions else f"dimensions {dimensions}"))
    for resource in template["Resources"].values():
        properties = resource.get("Properties", {})
        if resource.get("Type") == "AWS::CloudWatch::Alarm" and properties.get("Namespace") == NAMESPACE:
            shown.add((properties["MetricName"], "fleet" if not properties.get("Dimensions") else "dimensions"))
    return shown


def test_the_dashboard_and_the_alarms_show_only_metrics_the_code_emits_with_their_dimensions():
    emitted = {(name, kind) for kind, names in emitted_by_the_code().items() for name in names}

    assert sfn_pauser_metrics_shown(TEMPLATE) - emitted == set()


def test_every_metric_the_code_emits_is_on_the_dashboard_or_alarmed():
    emitted = {(name, kind) for kind, names in emitted_by_the_code().items() for name in names}

    assert emitted - sfn_pauser_metrics_shown(TEMPLATE) == set()


def test_a_renamed_metric_would_be_caught():
    renamed = json.loads(json.dumps(TEMPLATE).replace("OldestPausedAgeSeconds", "OldestHeldAgeSeconds"))
    emitted = {(name, kind) for kind, names in emitted_by_the_code().items() for name in names}

    assert sfn_pauser_metrics_shown(renamed) - emitted == {
        ("OldestHeldAgeSeconds", "machine"),
        ("OldestHeldAgeSeconds", "fleet"),
    }
