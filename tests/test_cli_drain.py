"""Waiting until nobody is inside a protected section: ``on --wait-drained`` and ``run``'s drain wait.

The server's side is not there yet, so these tests state its contract in the
scripted answers of test_cli's scripted API:
- GET /maintenance?stateMachineArn= adds ``inside``, ``insideCapped``,
  ``oldestInsideAt``, ``insideExecutions`` (up to 20, oldest first:
  executionArn, entry, since) and ``drained`` (maintenance is on and nobody is
  inside);
- GET /holds/{holdId} adds ``drained`` (the hold is active and nobody is inside
  a section it covers), ``inside`` and ``insideExecutions`` (each with its
  stateMachineArn).
Each test runs the CLI in a subprocess, as a pipeline would, and checks the
requests the scripted API recorded and what they were answered.
"""

import doctest
import importlib
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import ACCOUNT, ROOT
from tests.test_cli import Recorded, Reply, ScriptedApi, cli, serve_scripted
from tests.test_cli_holds import (
    DRAINED,
    HOLD_ID,
    ORDERS,
    PAYMENTS,
    HoldsApi,
    a_hold,
    command,
    run_options,
    start_run,
)

RUN_7 = f"arn:aws:states:eu-central-1:{ACCOUNT}:execution:Orders:run-7"
RUN_8 = f"arn:aws:states:eu-central-1:{ACCOUNT}:execution:PaymentsApi:run-8"
SINCE_7 = "2026-01-01T09:59:58.000Z"
SINCE_8 = "2026-01-01T09:59:59.500Z"
UNAVAILABLE = (503, {}, {"message": "Service Unavailable"})


def inside(execution: str, since: str, entry: str | None = "ChargeCard", machine: str | None = None) -> dict[str, Any]:
    listed = {"executionArn": execution, "entry": entry, "since": since}
    return {**({"stateMachineArn": machine} if machine else {}), **listed}


def a_status(machine: str = ORDERS, *executions: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """GET /maintenance for one machine with maintenance on: drained unless someone is inside."""
    return {
        "stateMachineArn": machine, "maintenance": True, "since": "2026-01-01T10:00:00.000Z", "by": "ci",
        "reason": None, "until": None, "paused": 0, "pausedCapped": False, "oldestPausedAt": None,
        "inside": len(executions), "insideCapped": False,
        "oldestInsideAt": executions[0]["since"] if executions else None,
        "insideExecutions": list(executions), "drained": not executions,
        **fields,
    }  # fmt: skip


class MaintenanceApi:
    """POST /maintenance switches on; GET /maintenance answers each machine's ``polls`` in turn (the last repeats)."""

    def __init__(self, scripted: ScriptedApi) -> None:
        self.scripted = scripted
        self.polls: dict[str, list[Reply]] = {ORDERS: [(200, {}, a_status())]}
        self.answered: list[tuple[str, Any]] = []
        scripted.respond = self.respond

    def respond(self, request: Recorded) -> Reply:
        if request.method == "POST":
            body = request.json()
            results = [{"stateMachineArn": arn, "maintenance": True, "changed": True, "effectiveWithinSeconds": 0}
                       for arn in body.get("stateMachineArns") or [body["stateMachineArn"]]]  # fmt: skip
            return 200, {}, results[0] if "stateMachineArn" in body else {"results": results}
        arn = request.query["stateMachineArn"]
        asked = len(self.polled(arn))
        reply = self.polls[arn][min(asked, len(self.polls[arn])) - 1]
        self.answered.append((arn, reply[2]))
        return reply

    def polled(self, machine: str = ORDERS) -> list[Recorded]:
        return [request for request in self.scripted.of("GET", "/maintenance") if request.query == {
            "stateMachineArn": machine}]  # fmt: skip


@pytest.fixture
def scripted() -> Iterator[ScriptedApi]:
    with serve_scripted() as api:
        yield api


@pytest.fixture
def maintenance(scripted: ScriptedApi) -> MaintenanceApi:
    return MaintenanceApi(scripted)


@pytest.fixture
def holds(scripted: ScriptedApi) -> HoldsApi:
    return HoldsApi(scripted)


def on(api: MaintenanceApi, *extra: str, machines: tuple[str, ...] = (ORDERS,)) -> list[str]:
    return ["on", "--api", api.scripted.url, *(part for arn in machines for part in ("--state-machine", arn)), *extra]


# ---------------------------------------------------------------- on --wait-drained


def test_on_wait_drained_polls_until_the_api_says_drained(maintenance):
    maintenance.polls[ORDERS] = [(200, {}, a_status(ORDERS, inside(RUN_7, SINCE_7))), (200, {}, a_status())]

    run = cli(*on(maintenance, "--wait-drained", "--reason", "deploy 42"))

    assert run.code == 0, run.stderr
    assert [request.method for request in maintenance.scripted.requests] == ["POST", "GET", "GET"]
    assert [answer["drained"] for _, answer in maintenance.answered] == [False, True]
    assert "waiting until nobody is inside the protected section of Orders: asking GET /maintenance every 2s" in (
        run.stderr
    )
    assert f"sfn-pauser: Orders: 1 inside, the oldest since {SINCE_7} (waited " in run.stderr
    assert "sfn-pauser: Orders: drained: nobody inside the protected section (after " in run.stderr
    assert run.stdout.splitlines() == [
        "Orders: maintenance on since 2026-01-01T10:00:00.000Z by ci",
        "Orders: 0 held",
        "Orders: drained",
    ]


def test_on_wait_drained_json_prints_the_drained_answer(maintenance):
    maintenance.polls[ORDERS] = [(200, {}, a_status(ORDERS, inside(RUN_7, SINCE_7))), (200, {}, a_status())]

    run = cli(*on(maintenance, "--wait-drained", "--json"))

    assert run.code == 0, run.stderr
    assert run.json() == a_status()
    assert len(maintenance.polled()) == 2  # the drained answer is the final status: no third GET


def test_on_wait_drained_times_out_with_exit_3_and_lists_who_is_still_inside(maintenance):
    never = a_status(ORDERS, inside(RUN_7, SINCE_7), inside(RUN_7 + "b", SINCE_8, entry=None), inside=25,
                     insideCapped=True)  # fmt: skip
    maintenance.polls[ORDERS] = [(200, {}, never)]

    run = cli(*on(maintenance, "--wait-drained", "--timeout", "3s"))

    assert run.code == 3, run.stderr
    assert run.stdout == ""
    assert maintenance.polled()
    assert all(answer["drained"] is False for _, answer in maintenance.answered)
    assert f"sfn-pauser: Orders: at least 25 inside, the oldest since {SINCE_7} (waited " in run.stderr
    assert f"sfn-pauser: Orders: at least 25 still inside, the oldest since {SINCE_7}\n" in run.stderr
    assert f"sfn-pauser:   {RUN_7} (inside since {SINCE_7}, entry ChargeCard)\n" in run.stderr
    assert f"sfn-pauser:   {RUN_7}b (inside since {SINCE_8})\n" in run.stderr
    assert "sfn-pauser:   ... and at least 23 more, not listed\n" in run.stderr
    assert "sfn-pauser: timed out: Orders: not drained after " in run.stderr
    assert "maintenance stays on" in run.stderr


def test_on_wait_drained_tries_a_503_again_until_an_answer_comes(maintenance):
    # The client tries a read three times (0.5 s and 1.5 s apart): five 503s get past that, to the drain
    # wait's own retry.
    maintenance.polls[ORDERS] = [UNAVAILABLE] * 5 + [(200, {}, a_status())]

    run = cli(*on(maintenance, "--wait-drained", "--timeout", "60"))

    assert run.code == 0, run.stderr
    assert len(maintenance.polled()) == 6
    assert "Orders: GET /maintenance failed (HTTP503: Service Unavailable (HTTP 503)); trying again in 2s" in (
        run.stderr
    )
    assert "Orders: drained" in run.stdout


def test_on_wait_drained_that_never_gets_an_answer_times_out_saying_so(maintenance):
    maintenance.polls[ORDERS] = [UNAVAILABLE]

    run = cli(*on(maintenance, "--wait-drained", "--timeout", "3s"))

    assert run.code == 3, run.stderr
    assert "Orders: no answer from GET /maintenance while waiting (HTTP503: Service Unavailable (HTTP 503))" in (
        run.stderr
    )


def test_on_wait_drained_stops_at_a_4xx(maintenance):
    denied = (403, {"x-amzn-ErrorType": "AccessDeniedException"}, {"Message": "not authorized"})
    maintenance.polls[ORDERS] = [denied, (200, {}, a_status())]

    run = cli(*on(maintenance, "--wait-drained"))

    assert run.code == 1
    assert len(maintenance.polled()) == 1
    assert "AccessDeniedException: not authorized (HTTP 403)" in run.stderr


def test_on_wait_drained_against_an_older_api_without_drained_is_exit_1(maintenance):
    older = {key: value for key, value in a_status().items() if not key.startswith(("inside", "oldestInside"))}
    maintenance.polls[ORDERS] = [(200, {}, {key: value for key, value in older.items() if key != "drained"})]

    run = cli(*on(maintenance, "--wait-drained"))

    assert run.code == 1
    assert len(maintenance.polled()) == 1
    assert "GET /maintenance answered without 'drained': the API is older than this client" in run.stderr
    assert "use --wait instead of --wait-drained, or upgrade the API" in run.stderr


def test_on_wait_drained_stops_when_maintenance_is_switched_off(maintenance):
    off = a_status(ORDERS, inside(RUN_7, SINCE_7), maintenance=False, by="someone", drained=False)
    maintenance.polls[ORDERS] = [(200, {}, off)]

    run = cli(*on(maintenance, "--wait-drained"))

    assert run.code == 1
    assert "Orders: maintenance is off again by someone, so nothing keeps executions out" in run.stderr


def test_on_wait_drained_waits_for_every_machine_and_asks_again_only_for_those_not_drained(maintenance):
    maintenance.polls = {
        ORDERS: [(200, {}, a_status())],
        PAYMENTS: [(200, {}, a_status(PAYMENTS, inside(RUN_8, SINCE_8))), (200, {}, a_status(PAYMENTS))],
    }

    run = cli(*on(maintenance, "--wait-drained", machines=(ORDERS, PAYMENTS)))

    assert run.code == 0, run.stderr
    assert (len(maintenance.polled(ORDERS)), len(maintenance.polled(PAYMENTS))) == (1, 2)
    assert f"PaymentsApi: 1 inside, the oldest since {SINCE_8}" in run.stderr
    assert {"Orders: drained", "PaymentsApi: drained"} <= set(run.stdout.splitlines())


# ---------------------------------------------------------------- run's drain wait


def not_drained(*executions: dict[str, Any]) -> Reply:
    return 200, {}, a_hold(drained=False, inside=len(executions), insideExecutions=list(executions))


INSIDE_ORDERS = inside(RUN_7, SINCE_7, machine=ORDERS)
INSIDE_PAYMENTS = inside(RUN_8, SINCE_8, entry="CallPsp", machine=PAYMENTS)


def test_run_starts_the_command_only_once_the_hold_is_drained(holds):
    holds.states = [not_drained(INSIDE_ORDERS, INSIDE_PAYMENTS), DRAINED]

    run = cli(*run_options(holds), "--", *command(holds, "exit=0"))

    assert run.code == 0, run.stderr
    assert holds.sequence() == [
        ("POST", "/holds"),
        ("GET", f"/holds/{HOLD_ID}"),
        ("GET", f"/holds/{HOLD_ID}"),
        ("GET", "/marker"),
        ("DELETE", f"/holds/{HOLD_ID}"),
    ]
    before = holds.answered[: [path for _, path, _ in holds.answered].index("/marker")]
    assert [body["drained"] for method, path, body in before if path == f"/holds/{HOLD_ID}"] == [False, True]
    assert f"{HOLD_ID}: 2 inside the protected sections it covers (waited " in run.stderr
    assert f"Orders: 1 inside, the oldest since {SINCE_7}\n" in run.stderr
    assert f"PaymentsApi: 1 inside, the oldest since {SINCE_8}\n" in run.stderr
    assert f"{HOLD_ID}: drained: nobody inside the protected sections it covers" in run.stderr
    assert run.stdout == "the command ran\n"


def test_run_does_not_run_the_command_when_the_drain_times_out_and_releases_the_hold(holds):
    holds.states = [not_drained(INSIDE_ORDERS, INSIDE_PAYMENTS)]

    run = cli(*run_options(holds, "--drain-timeout", "3s"), "--", *command(holds, "exit=0"))

    assert run.code == 3, run.stderr
    assert ("GET", "/marker") not in holds.sequence()
    assert holds.sequence()[-1] == ("DELETE", f"/holds/{HOLD_ID}")
    assert run.stdout == ""
    assert f"{HOLD_ID}: 2 still inside the protected sections it covers\n" in run.stderr
    assert f"sfn-pauser:   {RUN_7} (inside since {SINCE_7}, entry ChargeCard)\n" in run.stderr
    assert f"sfn-pauser:   {RUN_8} (inside since {SINCE_8}, entry CallPsp)\n" in run.stderr
    assert f"{HOLD_ID}: released\n" in run.stderr
    assert f"timed out: {HOLD_ID}: not drained after " in run.stderr
    assert "the command was not run" in run.stderr


def test_run_no_wait_drained_runs_the_command_without_asking(holds):
    holds.states = [not_drained(INSIDE_ORDERS)]

    run = cli(*run_options(holds, "--no-wait-drained"), "--", *command(holds, "exit=0"))

    assert run.code == 0, run.stderr
    assert holds.sequence() == [("POST", "/holds"), ("GET", "/marker"), ("DELETE", f"/holds/{HOLD_ID}")]
    assert f"{HOLD_ID}: --no-wait-drained: not waiting" in run.stderr


def test_a_signal_during_the_drain_wait_releases_the_hold_and_runs_nothing(holds):
    holds.states = [not_drained(INSIDE_ORDERS)]
    process = start_run(holds, "exit=0", until=("GET", f"/holds/{HOLD_ID}"))

    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert ("GET", "/marker") not in holds.sequence()
    assert holds.sequence()[-1] == ("DELETE", f"/holds/{HOLD_ID}")
    assert "interrupted (SIGINT) before the command started; it was not run" in stderr
    assert stdout == ""


def test_run_against_an_older_api_without_drained_runs_nothing_and_says_what_to_do(holds):
    holds.states = [(200, {}, a_hold())]

    run = cli(*run_options(holds), "--", *command(holds, "exit=0"))

    assert run.code == 1
    assert holds.sequence() == [("POST", "/holds"), ("GET", f"/holds/{HOLD_ID}"), ("DELETE", f"/holds/{HOLD_ID}")]
    assert "GET /holds/{holdId} answered without 'drained'" in run.stderr
    assert "pass --no-wait-drained to run the command without waiting" in run.stderr


def test_run_with_a_hold_not_active_yet_does_not_wait_for_the_drain(holds):
    holds.take = (201, {}, a_hold(active=False, startsAt="2026-01-01T11:00:00.000Z", effectiveWithinSeconds=60))
    holds.states = [not_drained(INSIDE_ORDERS)]

    run = cli(*run_options(holds), "--", *command(holds, "exit=0"))

    assert run.code == 0, run.stderr
    assert holds.sequence() == [("POST", "/holds"), ("GET", "/marker"), ("DELETE", f"/holds/{HOLD_ID}")]
    assert f"{HOLD_ID}: not active yet (it starts at 2026-01-01T11:00:00.000Z), so it keeps no execution out" in (
        run.stderr
    )


# ---------------------------------------------------------------- usage


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["on", "--state-machine", ORDERS, "--timeout", "5"], "add --wait or --wait-drained"),
        (["on", "--state-machine", ORDERS, "--wait-drained", "--dry-run"], "nothing to --wait for"),
        (["on", "--state-machine", ORDERS, "--wait-drained", "--timeout", "soon"], "or a duration (90s, 15m)"),
        (["off", "--state-machine", ORDERS, "--wait-drained"], "unrecognized arguments: --wait-drained"),
        (["off", "--state-machine", ORDERS, "--timeout", "5"], "add --wait\n"),
        (["run", "--guard", "db", "--drain-timeout", "0s", "--", "true"], "argument --drain-timeout: expected"),
        (["run", "--guard", "db", "--no-wait-drained", "--drain-timeout", "5m", "--", "true"],
         "--no-wait-drained does not wait"),
        (["hold", "--guard", "db", "--no-wait-drained"], "unrecognized arguments: --no-wait-drained"),
    ],
)  # fmt: skip
def test_drain_usage_errors_exit_2_without_a_request(scripted, arguments, message):
    at = arguments.index("--") if "--" in arguments else len(arguments)
    run = cli(*arguments[:at], "--api", scripted.url, *arguments[at:])

    assert run.code == 2, run.stderr
    assert message in run.stderr
    assert scripted.requests == []


def test_on_timeout_takes_a_duration(maintenance):
    run = cli(*on(maintenance, "--wait", "--timeout", "15m"))

    assert run.code == 0, run.stderr


def test_the_examples_in_the_docstrings_hold():
    module = importlib.import_module("sfn_pauser_cli.drain")
    assert module.__file__.startswith(str(ROOT / "cli"))
    failed, attempted = doctest.testmod(module)

    assert attempted and not failed
