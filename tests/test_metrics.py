"""Metrics as CloudWatch Embedded Metric Format lines: the shape CloudWatch Logs turns into metrics."""

import ast
import io
import json

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
