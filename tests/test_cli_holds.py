"""The CLI's hold commands (hold, renew, release, holds, audit --hold, run) against test_cli's scripted API.

These tests state the server's contract in the scripted answers (test_cli.py
runs hold, release and run against the real API too): POST /holds (201, the hold), POST /holds/{id}/renew (the
hold, or 404 once it has ended), DELETE /holds/{id} (released, resumed,
stillHeld), GET /holds (holds, nextToken), GET /holds/{id}/audit (holdId,
events newest first, nextToken; 404 for an id with no history) and GET /holds/{id} (the hold, and
whether anyone is inside a protected section it covers: drained, inside,
insideExecutions; test_cli_drain.py waits on it). Each runs the CLI as a pipeline
would, in a subprocess. ``run``'s command is a small Python script that calls
the scripted API too (unsigned, GET /marker), so the recorded requests show
what happened before it, while it ran and after.
"""

import doctest
import importlib
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import ACCOUNT, ROOT, wait_until
from tests.test_cli import (
    AUTHORIZATION,
    Recorded,
    Reply,
    ScriptedApi,
    cli,
    cli_environment,
    serve_scripted,
    signature_of,
)

HOLD_ID = "hold-01JB7T3K2Q"
ORDERS = f"arn:aws:states:eu-central-1:{ACCOUNT}:stateMachine:Orders"
PAYMENTS = f"arn:aws:states:eu-central-1:{ACCOUNT}:stateMachine:PaymentsApi"
PATTERN = f"arn:aws:states:*:{ACCOUNT}:stateMachine:Pay*"
BY = f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/ci-42"


def a_hold(**fields: Any) -> dict[str, Any]:
    return {
        "holdId": HOLD_ID,
        "scope": {"stateMachineArns": [ORDERS, PATTERN], "guards": ["db", "payments-api"]},
        "reason": "deploy 42",
        "by": BY,
        "createdAt": "2026-01-01T10:00:00.000Z",
        "expiresAt": "2026-01-01T10:30:00.000Z",
        "active": True,
        "affected": [ORDERS, PAYMENTS],
        **fields,
    }


RELEASED = {
    "holdId": HOLD_ID,
    "released": True,
    "resumed": {ORDERS: 3},
    "stillHeld": [{"stateMachineArn": PAYMENTS, "heldBy": ["hold-other", "tag"]}],
}
NOT_FOUND = (404, {}, {"Code": "NotFoundError", "Message": f"holdId: no hold {HOLD_ID} (it has ended)"})
# GET /holds/{id}/audit: the history of a hold that has ended, newest first, and more to come.
HISTORY = {
    "holdId": HOLD_ID,
    "events": [
        {"at": "2026-01-01T10:20:00.000Z", "action": "released", "holdId": HOLD_ID, "actor": "release-bot"},
        {"at": "2026-01-01T10:10:00.000Z", "action": "renew", "holdId": HOLD_ID, "actor": BY,
         "expiresAt": "2026-01-01T10:40:00.000Z"},
        {"at": "2026-01-01T10:00:00.000Z", "action": "hold", "holdId": HOLD_ID, "actor": BY,
         "hold": {"holdId": HOLD_ID, "scope": {"stateMachineArns": [ORDERS], "guards": ["db"]}, "reason": "deploy 42",
                  "by": BY, "createdAt": "2026-01-01T10:00:00.000Z", "expiresAt": "2026-01-01T10:30:00.000Z"}},
    ],
    "nextToken": "b2xkZXI",
}  # fmt: skip
# GET /holds/{id} when nobody is inside a protected section the hold covers: run starts its command.
DRAINED = (200, {}, a_hold(drained=True, inside=0, insideExecutions=[]))


class HoldsApi:
    """Scripted answers for the holds routes; ``renewals`` and ``states`` (GET /holds/{id}) are replies
    in turn (the last repeats). ``answered`` is every request with the body it was answered."""

    def __init__(self, scripted: ScriptedApi) -> None:
        self.scripted = scripted
        self.take: Reply = (201, {}, a_hold())
        self.renewals: list[Reply] = [(200, {}, a_hold(expiresAt="2026-01-01T10:31:00.000Z"))]
        self.release: Reply = (200, {}, RELEASED)
        self.states: list[Reply] = [DRAINED]
        self.history: Reply = (200, {}, HISTORY)
        self.answered: list[tuple[str, str, Any]] = []
        scripted.respond = self.answer

    def answer(self, request: Recorded) -> Reply:
        reply = self.respond(request)
        self.answered.append((request.method, request.path, reply[2]))
        return reply

    def respond(self, request: Recorded) -> Reply:
        if request.path == "/marker":
            return 200, {}, {}
        if request.path == "/renewals":
            return 200, {}, {"count": len(self.renews())}
        if (request.method, request.path) == ("POST", "/holds"):
            return self.take
        if (request.method, request.path) == ("POST", f"/holds/{HOLD_ID}/renew"):
            return self.renewals[min(len(self.renews()), len(self.renewals)) - 1]
        if (request.method, request.path) == ("DELETE", f"/holds/{HOLD_ID}"):
            return self.release
        if (request.method, request.path) == ("GET", f"/holds/{HOLD_ID}/audit"):
            return self.history
        if (request.method, request.path) == ("GET", f"/holds/{HOLD_ID}"):
            return self.states[min(len(self.scripted.of("GET", f"/holds/{HOLD_ID}")), len(self.states)) - 1]
        return 599, {}, {"Code": "Unscripted", "Message": f"{request.method} {request.path}"}

    def renews(self) -> list[Recorded]:
        return self.scripted.of("POST", f"/holds/{HOLD_ID}/renew")

    def sequence(self) -> list[tuple[str, str]]:
        return [(request.method, request.path) for request in self.scripted.requests]


@pytest.fixture
def scripted() -> Iterator[ScriptedApi]:
    with serve_scripted() as api:
        yield api


@pytest.fixture
def api(scripted: ScriptedApi) -> HoldsApi:
    return HoldsApi(scripted)


# ---------------------------------------------------------------- hold


def test_hold_sends_its_scope_and_prints_only_the_id_on_stdout(api):
    run = cli(
        "hold", "--api", api.scripted.url, "--state-machine", ORDERS, "--state-machine", PATTERN,
        "--guards", "db,payments-api", "--guard", "db", "--ttl", "30m", "--reason", "deploy 42",
    )  # fmt: skip

    assert run.code == 0, run.stderr
    assert run.stdout == f"{HOLD_ID}\n"
    [request] = api.scripted.requests
    assert (request.method, request.path) == ("POST", "/holds")
    assert request.json() == {
        "stateMachineArns": [ORDERS, PATTERN],
        "guards": ["db", "payments-api"],
        "reason": "deploy 42",
        "ttlSeconds": 1800,
    }
    assert AUTHORIZATION.fullmatch(request.header("Authorization") or "")
    assert f"{HOLD_ID}: holds guards db, payments-api; Orders, {PATTERN} (reason: deploy 42)" in run.stderr
    assert f"{HOLD_ID}: active now; expires at 2026-01-01T10:30:00.000Z" in run.stderr
    assert f"{HOLD_ID}: covers 2 state machines now: Orders, PaymentsApi" in run.stderr


def test_hold_json_prints_the_whole_body(api):
    run = cli("hold", "--json", "--api", api.scripted.url, "--guards", "db")

    assert run.code == 0, run.stderr
    assert run.json() == a_hold()
    assert api.scripted.requests[0].json() == {"guards": ["db"]}


def test_a_scheduled_recurring_hold_sends_its_start_expiry_and_recurrence(api):
    api.take = (201, {}, a_hold(active=False, affected=[], startsAt="2098-12-31T22:00:00Z",
                                recurrence={"schedule": "cron(0 2 ? * SUN *)", "durationSeconds": 7200},
                                nextOpening="2099-01-04T02:00:00Z"))  # fmt: skip

    run = cli(
        "hold", "--api", api.scripted.url, "--guard", "db", "--starts-at", "2099-01-01T00:00:00+02:00",
        "--expires-at", "2099-06-01T00:00:00Z", "--schedule", "cron(0 2 ? * SUN *)", "--duration", "2h",
    )  # fmt: skip

    assert run.code == 0, run.stderr
    assert api.scripted.requests[0].json() == {
        "guards": ["db"],
        "startsAt": "2098-12-31T22:00:00Z",
        "expiresAt": "2099-06-01T00:00:00Z",
        "recurrence": {"schedule": "cron(0 2 ? * SUN *)", "durationSeconds": 7200},
    }
    assert (
        f"{HOLD_ID}: not active yet: starts at 2098-12-31T22:00:00Z; expires at 2026-01-01T10:30:00.000Z; "
        "recurs on cron(0 2 ? * SUN *) for 2h00m; next opening 2099-01-04T02:00:00Z"
    ) in run.stderr
    assert "covers no state machine" not in run.stderr


def test_an_active_hold_that_covers_nothing_is_warned_about(api):
    api.take = (201, {}, a_hold(affected=[]))

    run = cli("hold", "--api", api.scripted.url, "--guard", "dbb")

    assert run.code == 0, run.stderr
    assert f"{HOLD_ID}: warning: it covers no state machine now" in run.stderr


@pytest.mark.parametrize(
    ("status", "code"), [(409, "Conflict"), (403, "StateMachineNotAllowed"), (400, "InvalidParameter")]
)
def test_a_refused_hold_is_exit_1_with_the_code_and_message(api, status, code):
    api.take = (status, {}, {"Code": code, "Message": "guards: refused"})

    run = cli("hold", "--api", api.scripted.url, "--guard", "db")

    assert run.code == 1
    assert run.stdout == ""
    assert f"sfn-pauser: {code}: guards: refused (HTTP {status})" in run.stderr


def test_a_hold_answer_without_an_id_is_exit_1(api):
    api.take = (201, {}, {"scope": {}})

    run = cli("hold", "--api", api.scripted.url, "--guard", "db")

    assert run.code == 1
    assert "POST /holds answered without a holdId" in run.stderr


# ---------------------------------------------------------------- renew, release, holds


def test_renew_sends_the_ttl_and_prints_the_new_expiry(api):
    with_ttl = cli("renew", HOLD_ID, "--ttl", "1h30m", "--api", api.scripted.url)
    without = cli("renew", HOLD_ID, "--api", api.scripted.url, "--json")

    assert with_ttl.code == without.code == 0, with_ttl.stderr + without.stderr
    assert with_ttl.stdout == f"{HOLD_ID}: renewed, expires at 2026-01-01T10:31:00.000Z\n"
    assert without.json() == a_hold(expiresAt="2026-01-01T10:31:00.000Z")
    assert [request.json() for request in api.renews()] == [{"ttlSeconds": 5400}, {}]


def test_renewing_a_hold_that_has_ended_is_exit_1_and_says_so(api):
    api.renewals = [NOT_FOUND]

    run = cli("renew", HOLD_ID, "--api", api.scripted.url)

    assert run.code == 1
    assert f"NotFoundError: holdId: no hold {HOLD_ID} (it has ended) (HTTP 404)" in run.stderr
    assert "cannot be renewed; take a new one with `sfn-pauser hold`" in run.stderr
    assert len(api.renews()) == 1  # a 404 is not tried again


def test_release_says_what_was_resumed_and_what_still_holds_the_rest(api):
    run = cli("release", HOLD_ID, "--api", api.scripted.url)

    assert run.code == 0, run.stderr
    assert api.sequence() == [("DELETE", f"/holds/{HOLD_ID}")]
    assert api.scripted.requests[0].body == b""
    assert run.stdout.splitlines() == [
        f"{HOLD_ID}: released",
        "Orders: resumed 3",
        "PaymentsApi: still held by hold-other and the Maintenance tag (sfn-pauser on)",
    ]


def test_releasing_a_hold_that_has_ended_is_not_an_error(api):
    api.release = (200, {}, {"holdId": HOLD_ID, "released": False, "resumed": {}, "stillHeld": []})

    run = cli("release", HOLD_ID, "--api", api.scripted.url)

    assert run.code == 0, run.stderr
    assert run.stdout == f"{HOLD_ID}: had already ended (expired or released); nothing to release\n"


def test_release_json_prints_the_body(api):
    run = cli("release", HOLD_ID, "--json", "--api", api.scripted.url)

    assert run.code == 0, run.stderr
    assert run.json() == RELEASED


def test_a_hold_id_is_one_quoted_path_segment_and_signed_as_sent(scripted):
    scripted.respond = lambda request: (200, {}, {"holdId": "x", "released": True})
    odd = "hold-a/b%c?d"

    run = cli("release", odd, "--api", scripted.url, env=cli_environment(AWS_REGION="eu-central-1"))

    assert run.code == 0, run.stderr
    [request] = scripted.requests
    assert request.raw_path == "/api/holds/hold-a%2Fb%25c%3Fd"
    assert request.query == {}
    signed = AUTHORIZATION.fullmatch(request.header("Authorization"))
    assert signature_of(request, "eu-central-1") == signed["signature"]


def test_audit_hold_shows_who_took_renewed_and_released_it_newest_first(api):
    run = cli("audit", "--hold", HOLD_ID, "--limit", "3", "--next-token", "bmV3ZXI", "--api", api.scripted.url)

    assert run.code == 0, run.stderr
    [request] = api.scripted.requests
    assert (request.method, request.path, request.query) == (
        "GET", f"/holds/{HOLD_ID}/audit", {"limit": "3", "nextToken": "bmV3ZXI"},
    )  # fmt: skip
    assert run.stdout.splitlines() == [
        "2026-01-01T10:20:00.000Z  released  by release-bot",
        f'2026-01-01T10:10:00.000Z  renew  by {BY}  expiresAt="2026-01-01T10:40:00.000Z"',
        f'2026-01-01T10:00:00.000Z  hold  by {BY}  scope="guards db; Orders" reason="deploy 42" '
        'expiresAt="2026-01-01T10:30:00.000Z"',
        "(older events: --next-token b2xkZXI)",
    ]


def test_audit_hold_json_prints_the_answer_as_it_is(api):
    run = cli("audit", "--hold", HOLD_ID, "--json", "--api", api.scripted.url)

    assert run.code == 0, run.stderr
    assert api.scripted.requests[0].query == {}
    assert run.json() == HISTORY


def test_audit_of_a_hold_with_no_history_is_exit_1_with_the_code_and_message(api):
    api.history = (404, {}, {"Code": "HoldNotFound", "Message": f"holdId: {HOLD_ID} has no recorded history"})

    run = cli("audit", "--hold", HOLD_ID, "--api", api.scripted.url)

    assert run.code == 1
    assert run.stdout == ""
    assert f"HoldNotFound: holdId: {HOLD_ID} has no recorded history (HTTP 404)" in run.stderr


def hold_rows(stdout: str) -> dict[str, list[str]]:
    lines = stdout.splitlines()
    assert re.match(r"HOLD\s+ACTIVE\s+SCOPE\s+BY\s+EXPIRES\s+NEXT OPENING\s+REASON$", lines[0]), stdout
    return {cells[0]: cells for cells in (re.split(r"\s{2,}", line) for line in lines[1:])}


HOLD_PAGES = {
    None: ([a_hold()], "page-2"),
    "page-2": (
        [a_hold(holdId="hold-nightly", scope={"guards": ["db"]}, reason=None, by="someone", active=False,
                affected=[], nextOpening="2026-01-04T02:00:00Z")],
        None,
    ),
}  # fmt: skip


def answer_holds(scripted: ScriptedApi) -> None:
    def respond(request: Recorded) -> Reply:
        found, token = HOLD_PAGES[request.query.get("nextToken")]
        return 200, {}, {"holds": found, **({"nextToken": token} if token else {})}

    scripted.respond = respond


def test_holds_is_a_table_of_every_page(scripted):
    answer_holds(scripted)

    run = cli("holds", "--api", scripted.url, "--state-machine", ORDERS, "--guard", "db")

    assert run.code == 0, run.stderr
    assert [(request.method, request.path, request.query) for request in scripted.requests] == [
        ("GET", "/holds", {"stateMachineArn": ORDERS, "guard": "db"}),
        ("GET", "/holds", {"stateMachineArn": ORDERS, "guard": "db", "nextToken": "page-2"}),
    ]
    rows = hold_rows(run.stdout)
    assert list(rows) == [HOLD_ID, "hold-nightly"]
    assert rows[HOLD_ID] == [
        HOLD_ID, "yes", f"guards db, payments-api; Orders, {PATTERN}", "assumed-role/deployer/ci-42",
        "2026-01-01T10:30:00.000Z", "-", "deploy 42",
    ]  # fmt: skip
    assert rows["hold-nightly"] == [
        "hold-nightly", "no", "guards db", "someone", "2026-01-01T10:30:00.000Z", "2026-01-04T02:00:00Z",
    ]  # fmt: skip


def test_holds_json_is_every_pages_holds_as_one(scripted):
    answer_holds(scripted)

    run = cli("holds", "--json", "--api", scripted.url)

    assert run.code == 0, run.stderr
    assert scripted.requests[0].query == {}
    assert run.json() == {"holds": [hold for found, _ in HOLD_PAGES.values() for hold in found], "nextToken": None}


def test_holds_says_when_there_are_none_and_stops_on_a_repeated_page(scripted):
    scripted.respond = lambda request: (200, {}, {"holds": []})
    none = cli("holds", "--api", scripted.url)
    scripted.respond = lambda request: (200, {}, {"holds": [], "nextToken": "again"})
    looping = cli("holds", "--api", scripted.url)

    assert none.code == 0, none.stderr
    assert none.stdout == "no holds\n"
    assert looping.code == 1
    assert "GET /holds answered the nextToken 'again' twice" in looping.stderr


# ---------------------------------------------------------------- usage


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["hold"], "hold needs a scope: --state-machine ARN (or an ARN pattern) and/or --guards NAMES"),
        (["hold", "--guards", ","], "hold needs a scope"),
        (["run", "--", "true"], "run needs a scope"),
        (["hold", "--guard", "db", "--ttl", "30x"], "argument --ttl: expected a duration above 0"),
        (["hold", "--guard", "db", "--ttl", "0s"], "argument --ttl: expected a duration above 0"),
        (["run", "--guard", "db", "--ttl", "soon", "--", "true"], "argument --ttl: expected a duration"),
        (["renew", HOLD_ID, "--ttl", "-5"], "argument --ttl: expected a duration"),
        (["hold", "--guards", "db,db deploy"], "argument --guards: expected a guard name: 1 to 64 letters"),
        (["hold", "--guard=-db"], "argument --guard: expected a guard name"),
        (["hold", "--guard", "_db"], "argument --guard: expected a guard name"),
        (["hold", "--guard", "a" * 65], "argument --guard: expected a guard name"),
        (["hold", "--guards", ",".join(f"g{n}" for n in range(11))], "--guards: at most 10 guards, got 11"),
        (["hold", "--state-machine", "Orders"], "argument --state-machine: expected a state machine ARN"),
        (["hold", "--state-machine", "arn:aws:states:*:1:function:*"], "or a pattern of one with * and ?"),
        (["hold", "--guard", "db", "--schedule", "cron(0 2 ? * SUN *)"], "--schedule and --duration go together"),
        (["hold", "--guard", "db", "--duration", "2h"], "--schedule and --duration go together"),
        (["hold", "--guard", "db", "--schedule", "cron(0 2 * *)", "--duration", "2h"], "six fields"),
        (["hold", "--guard", "db", "--starts-at", "2020-01-01T00:00:00Z"], "not in the future"),
        (["hold", "--guard", "db", "--", "true"], "hold takes no command after --"),
        (["run", "--guard", "db"], "run needs -- and the command after it"),
        (["run", "--guard", "db", "--"], "run needs a command after --"),
        (["run", "--guard", "db", "--json", "--", "true"], "run leaves stdout to the command"),
        (["run", "--guard", "db", "--starts-at", "1h", "--", "true"], "--starts-at is for `sfn-pauser hold`"),
        (["run", "--guard", "db", "--schedule", "cron(0 2 ? * SUN *)", "--duration", "1h", "--", "true"],
         "--schedule is for `sfn-pauser hold`"),
        (["renew"], "the following arguments are required: HOLD_ID"),
        (["release", ".."], "expected a hold ID"),
        (["release", "hold 1"], "expected a hold ID"),
        (["holds", "--guard", "db deploy"], "argument --guard: expected a guard name"),
        (["holds", "--state-machine", PATTERN], "expected a state machine ARN"),
        (["holds", "--state-machine", ORDERS, "--state-machine", PAYMENTS], "holds takes one --state-machine"),
        (["audit"], "audit takes --state-machine ARN or --hold HOLD_ID (one of the two)"),
        (["audit", "--hold", HOLD_ID, "--state-machine", ORDERS], "audit takes --state-machine ARN or --hold HOLD_ID"),
        (["audit", "--hold", ".."], "argument --hold: expected a hold ID"),
        (["audit", "--hold", HOLD_ID, "--limit", "0"], "argument --limit"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_without_a_request(scripted, arguments, message):
    """A scripted API is there to answer, so "nothing was sent" is checked, not assumed."""
    # The options go after the subcommand and before any --, where run's command starts.
    at = arguments.index("--") if "--" in arguments else len(arguments)
    run = cli(*arguments[:at], "--api", scripted.url, *arguments[at:])

    assert run.code == 2, run.stderr
    assert message in run.stderr
    assert "usage: sfn-pauser" in run.stderr
    assert scripted.requests == []


# ---------------------------------------------------------------- run


# run's command: calls GET /marker on the scripted API (so the requests show when it ran), then does ACTION.
COMMAND = r"""
import json, signal, sys, time, urllib.request
signal.signal(signal.SIGINT, signal.SIG_DFL)  # ended by Ctrl-C as a plain program is, without a traceback
url, action = sys.argv[1], sys.argv[2]
urllib.request.urlopen(url + "/marker", timeout=10).close()
print("the command ran", flush=True)
if action == "sleep":
    time.sleep(60)
    sys.exit(0)
if action == "trap-term":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
    time.sleep(60)
if action.startswith("renewals="):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url + "/renewals", timeout=10) as answer:
            if json.loads(answer.read())["count"] >= int(action.split("=")[1]):
                sys.exit(0)
        time.sleep(0.05)
    sys.exit(9)
sys.exit(int(action.removeprefix("exit=")))
"""


def command(api: HoldsApi, action: str) -> list[str]:
    return [sys.executable, "-c", COMMAND, api.scripted.url, action]


def run_options(api: HoldsApi, *extra: str) -> list[str]:
    return ["run", "--api", api.scripted.url, "--guards", "db", "--reason", "deploy 42", *extra]


# Taken, drained (GET /holds/{id}: nobody inside), the command ran (GET /marker), released.
TAKEN_RAN_RELEASED = [
    ("POST", "/holds"),
    ("GET", f"/holds/{HOLD_ID}"),
    ("GET", "/marker"),
    ("DELETE", f"/holds/{HOLD_ID}"),
]


def test_run_takes_a_hold_runs_the_command_and_releases_it(api):
    run = cli(*run_options(api, "--ttl", "20m"), "--", *command(api, "exit=0"))

    assert run.code == 0, run.stderr
    assert api.sequence() == TAKEN_RAN_RELEASED
    assert api.scripted.requests[0].json() == {"guards": ["db"], "reason": "deploy 42", "ttlSeconds": 1200}
    assert run.stdout == "the command ran\n"  # stdout is the command's alone
    assert f"{HOLD_ID}: holds guards db, payments-api" in run.stderr
    assert f"{HOLD_ID}: released\n" in run.stderr
    assert "PaymentsApi: still held by hold-other and the Maintenance tag" in run.stderr


def test_run_without_ttl_asks_for_ten_minutes(api):
    run = cli(*run_options(api), "--", *command(api, "exit=0"))

    assert run.code == 0, run.stderr
    assert api.scripted.requests[0].json()["ttlSeconds"] == 600


def test_run_exits_with_the_commands_status_after_releasing(api):
    run = cli(*run_options(api), "--", *command(api, "exit=3"))

    assert run.code == 3
    assert api.sequence() == TAKEN_RAN_RELEASED
    assert "exited with 3" in run.stderr


def test_run_passes_the_commands_own_options_after_the_double_dash(api):
    script = "import sys; print(sys.argv[1:])"

    run = cli(*run_options(api), "--", sys.executable, "-c", script, "--ttl", "--", "--json")

    assert run.code == 0, run.stderr
    assert run.stdout == "['--ttl', '--', '--json']\n"
    assert api.scripted.requests[0].json()["ttlSeconds"] == 600


@pytest.mark.parametrize(("status", "code"), [(409, "Conflict"), (403, "AccessDeniedException")])
def test_run_does_not_run_the_command_when_the_hold_is_refused(api, status, code):
    api.take = (status, {}, {"Code": code, "Message": "no"})

    run = cli(*run_options(api), "--", *command(api, "exit=0"))

    assert run.code == 1
    assert api.sequence() == [("POST", "/holds")]
    assert run.stdout == ""
    assert f"{code}: no (HTTP {status})" in run.stderr


def test_run_releases_when_the_command_is_not_found(api):
    run = cli(*run_options(api), "--", "./no-such-deploy-script.sh")

    assert run.code == 127
    assert "./no-such-deploy-script.sh: command not found" in run.stderr
    assert api.sequence() == [("POST", "/holds"), ("GET", f"/holds/{HOLD_ID}"), ("DELETE", f"/holds/{HOLD_ID}")]


def test_run_renews_the_hold_while_the_command_runs(api):
    run = cli(*run_options(api, "--ttl", "3s"), "--", *command(api, "renewals=1"))

    assert run.code == 0, run.stderr
    renew = api.renews()[0]
    assert renew.json() == {"ttlSeconds": 3}
    assert renew.header("Authorization")
    sequence = api.sequence()
    assert sequence[0] == ("POST", "/holds") and sequence[-1] == ("DELETE", f"/holds/{HOLD_ID}")


def test_run_warns_about_a_failed_renew_and_tries_again(api):
    api.renewals = [(500, {}, {"Code": "InternalError", "Message": "boom"}), (200, {}, a_hold())]

    run = cli(*run_options(api, "--ttl", "3s"), "--", *command(api, "renewals=2"))

    assert run.code == 0, run.stderr
    assert len(api.renews()) >= 2
    assert f"warning: renewing {HOLD_ID} failed (InternalError: boom (HTTP 500)); trying again in 1s" in run.stderr
    assert f"{HOLD_ID}: renewed after 1 failed tries" in run.stderr
    assert api.sequence()[-1] == ("DELETE", f"/holds/{HOLD_ID}")


def test_run_says_loudly_when_the_hold_is_gone_and_lets_the_command_finish(api):
    api.renewals = [NOT_FOUND]
    api.release = NOT_FOUND

    run = cli(*run_options(api, "--ttl", "3s"), "--", *command(api, "renewals=1"))

    assert run.code == 0, run.stderr
    assert f"HOLD {HOLD_ID} IS GONE: renewing it answered NotFoundError" in run.stderr
    assert "THE COMMAND GOES ON, BUT NOTHING HOLDS ITS STATE MACHINES FOR IT NOW" in run.stderr
    assert f"warning: {HOLD_ID} ended while the command ran" in run.stderr
    assert len(api.renews()) == 1  # a hold that is gone is not renewed again
    assert api.sequence()[-1] == ("DELETE", f"/holds/{HOLD_ID}")
    assert f"{HOLD_ID}: had already ended" in run.stderr


@pytest.mark.parametrize(("command_status", "expected"), [(0, 1), (3, 3)])
def test_a_failed_release_says_how_to_release_by_hand(api, command_status, expected):
    api.release = (500, {}, {"Code": "InternalError", "Message": "boom"})

    run = cli(*run_options(api), "--region", "eu-central-1", "--", *command(api, f"exit={command_status}"))

    assert run.code == expected, run.stderr
    assert (
        f"error: could not release {HOLD_ID} (InternalError: boom (HTTP 500)). It goes on holding until it "
        f"expires at 2026-01-01T10:30:00.000Z, or until released by hand: "
        f"sfn-pauser release {HOLD_ID} --api {api.scripted.url} --region eu-central-1"
    ) in run.stderr


def start_run(
    api: HoldsApi, action: str, until: tuple[str, str] = ("GET", "/marker"), extra: tuple[str, ...] = ()
) -> subprocess.Popen:
    """run (with ``extra`` options) in the background, once the scripted API has seen ``until`` (by
    default: once its command runs). A session of its own, so it has no controlling terminal whatever
    runs the tests: a signal to it must be passed on by it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sfn_pauser_cli", *run_options(api, *extra), "--", *command(api, action)],
        env=cli_environment(),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until(lambda: api.scripted.of(*until) or process.poll() is not None, timeout=30,
                   what=f"run to send {until}")  # fmt: skip
    except AssertionError:
        process.kill()
        raise
    return process


@pytest.mark.parametrize(("signum", "expected"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_is_passed_to_the_command_and_the_hold_released(api, signum, expected):
    process = start_run(api, "sleep")

    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == expected, stderr
    assert "Traceback" not in stderr
    assert api.sequence() == TAKEN_RAN_RELEASED
    assert f"got {signum.name}: passing it to the command, waiting for it to end, then releasing the hold" in stderr
    assert f"was ended by {signum.name}" in stderr
    assert f"{HOLD_ID}: released" in stderr
    assert stdout == "the command ran\n"


def test_a_signal_while_the_hold_is_asked_for_releases_it_and_runs_nothing(api):
    answer = threading.Event()

    def take(request: Recorded) -> Reply:
        if (request.method, request.path) == ("POST", "/holds"):
            assert answer.wait(30)
        return api.answer(request)

    api.scripted.respond = take
    process = start_run(api, "exit=0", until=("POST", "/holds"))

    process.send_signal(signal.SIGTERM)
    answer.set()
    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 143, stderr
    assert api.sequence() == [("POST", "/holds"), ("DELETE", f"/holds/{HOLD_ID}")]
    assert "interrupted (SIGTERM) before the command started; it was not run" in stderr
    assert stdout == ""


def test_run_waits_for_task_handlers_to_see_the_hold_and_a_signal_then_runs_nothing(api):
    # Warm task handlers may act on holds they read up to effectiveWithinSeconds ago: the
    # command starts only after that; a signal during the wait releases and runs nothing.
    api.take = (201, {}, a_hold(effectiveWithinSeconds=60))
    process = start_run(api, "exit=0", until=("POST", "/holds"))
    seen = ""
    while "waiting 60s before the command" not in seen:  # its progress line, before the signal
        line = process.stderr.readline()
        assert line, f"run ended without waiting: {seen}"
        seen += line

    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 130, seen + stderr
    assert "a warm task handler may act on the holds it read up to 60s ago" in seen
    assert ("GET", "/marker") not in api.sequence()
    assert api.sequence()[-1] == ("DELETE", f"/holds/{HOLD_ID}")


def test_a_command_that_handles_the_signal_sets_the_exit_status(api):
    process = start_run(api, "trap-term")

    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 7, stderr
    assert api.sequence() == TAKEN_RAN_RELEASED


@pytest.mark.parametrize("name", ["sfn_pauser_cli.holds", "sfn_pauser_cli.runner"])
def test_the_examples_in_the_docstrings_hold(name):
    # Imported here, after tests.test_cli has put this checkout's cli/ first on the path.
    module = importlib.import_module(name)
    assert module.__file__.startswith(str(ROOT / "cli"))
    failed, attempted = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)

    assert attempted and not failed
