"""``sfn-pauser``: the command line, its checks and its exit codes."""

import argparse
import os
import re
import sys
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any

from sfn_pauser_cli import __version__, commands, drain, holds, runner
from sfn_pauser_cli.api import Api, ApiError, ConfigurationError, Unreachable
from sfn_pauser_cli.commands import Failure, Output, TimedOut

EXIT_OK = 0
EXIT_FAILED = 1  # the API answered with an error, could not be reached, or the outcome is wrong
EXIT_USAGE = 2  # bad arguments, or nothing to send with (no API URL, region or credentials)
EXIT_TIMED_OUT = 3  # --wait or --wait-drained did not see what it waits for within --timeout; run: --drain-timeout
EXIT_INTERRUPTED = 130

API_VARIABLE = "SFN_PAUSER_API"
DEFAULT_TIMEOUT_SECONDS = 900.0
# How long run waits for the executions inside its hold's protected sections to leave, without --drain-timeout.
DEFAULT_DRAIN_TIMEOUT_SECONDS = 900
# The API's own limits, checked here too so that a typo costs no round trip.
MAX_PAGE = 1000
MAX_GUARDS = 10
# run's TTL without --ttl: a runner that dies holds no longer than this (renewed every third of it).
DEFAULT_RUN_TTL_SECONDS = 600
HOLD_COMMANDS = ("hold", "run", "renew", "release", "holds")

_STATE_MACHINE_ARN = re.compile(r"arn:[a-z-]+:states:[a-z0-9-]+:\d{12}:stateMachine:[^:\s]+(?::[^:\s]+)?")
_EXECUTION_ARN = re.compile(r"arn:[a-z-]+:states:[a-z0-9-]+:\d{12}:execution:[^:\s]+(?::[^:\s]+){1,2}")
# A state machine ARN pattern: * and ? match any characters and any one character.
_STATE_MACHINE_PATTERN = re.compile(r"arn:[a-z*?-]+:states:[a-z0-9*?-]+:[0-9*?]+:stateMachine:[^:\s]+(?::[^:\s]+)?")
_GUARD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,63}")
# An EventBridge cron expression: six fields.
_CRON = re.compile(r"cron\(\s*\S+(?:\s+\S+){5}\s*\)")
_DURATION = re.compile(r"(?:\d+\s*[smhd]\s*)+")
_DURATION_PART = re.compile(r"(\d+)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

DESCRIPTION = """\
Switch sfn-pauser maintenance on and off, see it, and resume or abort what it
holds, through sfn-pauser's REST API. Every request is signed with SigV4
(execute-api) using botocore's standard credentials.

  sfn-pauser on  --state-machine ARN --reason "deploy $SHA" --until 2h --wait-drained
  sfn-pauser off --state-machine ARN --wait --timeout 900

Holds add up where the maintenance flag does not: each pipeline takes its own,
and releasing one never lifts another's.

  sfn-pauser run --guards db --ttl 30m --reason "deploy $SHA" -- ./deploy.sh
  HOLD=$(sfn-pauser hold --guards db --ttl 30m); ...; sfn-pauser release "$HOLD"
"""

EPILOG = f"""\
The API URL is --api, or ${API_VARIABLE}: the stage URL, e.g.
https://ID.execute-api.REGION.amazonaws.com/api.

exit codes:
  {EXIT_OK}  done
  {EXIT_FAILED}  the API refused (its Code and Message are printed) or could not be reached,
     or some state machines of a bulk switch failed, or the outcome changed under --wait,
     or --wait-drained met an API too old to say whether anyone is inside (no "drained")
  {EXIT_USAGE}  bad arguments, or no API URL, region or AWS credentials (nothing was sent)
  {EXIT_TIMED_OUT}  --wait or --wait-drained ran out of --timeout (--wait-drained: who is still inside is listed)
"""

RUN_EPILOG = f"""\
exit codes:
  the command's own status, or 128+N when signal N ended it (130 SIGINT, 143 SIGTERM);
  {runner.EXIT_NOT_FOUND} command not found, {runner.EXIT_CANNOT_EXECUTE} not executable (the hold is released)
  {EXIT_FAILED}  taking the hold failed (the API refused or could not be reached), or the drain wait
     could not go on (an error answer other than 429, 502, 503 or 504; an API too old to say
     whether anyone is inside; the hold ended): the command was not run;
     or the command succeeded (0) but the hold could not be released: it ends at its TTL, and the
     command to release it by hand is printed
  {EXIT_USAGE}  bad arguments, or no API URL, region or AWS credentials (nothing was sent, nothing run)
  {EXIT_TIMED_OUT}  executions were still inside a protected section the hold covers at --drain-timeout:
     the command was not run, the hold is released, and who is still inside is listed

Before the command, run waits until task handlers see the hold (effectiveWithinSeconds),
then until nobody is inside a protected section the hold covers (GET /holds/HOLD_ID every
{drain.POLL_SECONDS:g}s; --no-wait-drained skips this).

SIGINT and SIGTERM are passed on to the command (in a terminal, Ctrl-C reaches it directly);
run waits for it to end, releases the hold, and exits with its status. A signal before the
command starts (during either wait) releases the hold, runs nothing, and exits 128+N. If run
itself dies (SIGKILL), the hold is no longer renewed and ends at its TTL.
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    arguments = sys.argv[1:] if argv is None else list(argv)
    # Everything after the first -- is run's command, options included.
    command_line = None
    if "--" in arguments:
        at = arguments.index("--")
        arguments, command_line = arguments[:at], arguments[at + 1 :]
    args = parser.parse_args(arguments)
    args.command_line = command_line
    _check(parser, args)
    output = Output(args.json)
    try:
        api = Api.from_environment(args.api, args.region)
        return _run(api, output, args)
    except ConfigurationError as error:
        output.progress(f"error: {error}")
        return EXIT_USAGE
    except ApiError as error:
        if args.json and error.body is not None:
            output.result(error.body, [])
        output.progress(f"{error.code}: {error.message} (HTTP {error.status})")
        return EXIT_FAILED
    except (Unreachable, Failure) as error:
        output.progress(f"error: {error}")
        return EXIT_FAILED
    except TimedOut as error:
        output.progress(f"timed out: {error}")
        return EXIT_TIMED_OUT
    except KeyboardInterrupt:
        output.progress("interrupted")
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api",
        metavar="URL",
        default=os.environ.get(API_VARIABLE) or None,
        help=f"the API's stage URL (default: ${API_VARIABLE})",
    )
    common.add_argument(
        "--region",
        help="the region to sign for (default: the one in an execute-api hostname, else AWS_REGION, "
        "AWS_DEFAULT_REGION or the profile's)",
    )
    common.add_argument(
        "--json",
        action="store_true",
        help="print the API's answer as it is (with --wait or --wait-drained, the final status)",
    )

    parser = argparse.ArgumentParser(
        prog="sfn-pauser",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def plain(name: str, summary: str, **options: Any) -> argparse.ArgumentParser:
        return subcommands.add_parser(
            name, parents=[common], help=summary, description=summary,
            formatter_class=argparse.RawDescriptionHelpFormatter, **{"epilog": EPILOG, **options},
        )  # fmt: skip

    def subcommand(name: str, summary: str, machine_help: str = "the state machine") -> argparse.ArgumentParser:
        parser = plain(name, summary)
        parser.add_argument(
            "--state-machine",
            metavar="ARN",
            action="append",
            required=name not in ("status", "audit"),
            dest="state_machines",
            type=_matching(_STATE_MACHINE_ARN, "a state machine ARN, arn:aws:states:REGION:ACCOUNT:stateMachine:NAME"),
            help=machine_help,
        )
        return parser

    several = "the state machine (more than once for several)"
    on = subcommand("on", "Switch maintenance on: executions reaching the checkpoint are held.", several)
    on.add_argument("--reason", help="why, recorded in the tags and the audit trail")
    on.add_argument(
        "--until",
        type=_until,
        help="lift maintenance by itself at this time: ISO 8601 (2026-12-01T18:00:00Z) or a duration from "
        "now (90m, 2h, 1d); a safety net for a pipeline that dies",
    )
    _wait_options(on, "return only once every warm task handler sees maintenance on", " or --wait-drained")
    on.add_argument(
        "--wait-drained",
        action="store_true",
        help=f"as --wait, then wait until nobody is inside each state machine's protected section (GET "
        f"/maintenance every {drain.POLL_SECONDS:g}s, progress on stderr); at --timeout, exit {EXIT_TIMED_OUT} "
        "listing who is still inside",
    )
    on.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")

    off = subcommand("off", "Switch maintenance off and resume what is held.", several)
    off.add_argument("--reason", help="why, recorded in the audit trail")
    off.add_argument("--no-resume", action="store_true", help="leave what is held for a later `resume`")
    off.add_argument(
        "--force",
        action="store_true",
        help="also end every active hold that covers the machine (audited; other pipelines lose theirs)",
    )
    _wait_options(off, "return only once nothing is held (progress on stderr)", "")
    off.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")

    subcommand(
        "status",
        "Show maintenance and what is held: for one state machine, or without --state-machine a table of "
        "every one in maintenance (the tag or a hold) or holding executions.",
        "the state machine (leave it out for the table of all)",
    )

    resume = subcommand("resume", "Resume held executions (409 while maintenance is on, unless --force).")
    resume.add_argument("--execution", metavar="ARN", action="append", type=_execution_arn, help="only this one")
    resume.add_argument("--limit", type=_whole(1, None), help="resume at most this many, oldest first")
    resume.add_argument("--force", action="store_true", help="resume even while maintenance is on")

    abort = subcommand("abort", "Fail held executions (SendTaskFailure) instead of resuming them.")
    abort.add_argument("--execution", metavar="ARN", action="append", type=_execution_arn, help="this one")
    abort.add_argument("--all", action="store_true", help="every held execution of the state machine")
    abort.add_argument("--error", help="the Task's error name (default: the API's, SfnPauser.Aborted)")
    abort.add_argument("--cause", help="the Task's failure cause")

    audit = subcommand(
        "audit",
        "Show who switched, resumed or aborted what, newest first: a state machine's trail, or with --hold a "
        "hold's (who took, renewed, released or ended it; it answers after the hold has ended).",
        "the state machine (or --hold)",
    )
    audit.add_argument("--hold", metavar="HOLD_ID", type=_hold_id, help="the hold, as `sfn-pauser hold` printed it")
    audit.add_argument("--limit", type=_whole(1, MAX_PAGE), help=f"events per page (1 to {MAX_PAGE})")
    audit.add_argument("--next-token", help="the page after the one that printed this token")

    hold = plain(
        "hold",
        "Take a hold: executions of every state machine it covers are held at the checkpoint until it is "
        "released or expires. Its ID alone goes to stdout (HOLD=$(sfn-pauser hold ...)), what it covers to stderr.",
    )
    _hold_options(hold, scheduling=True)

    run = plain(
        "run",
        "Take a hold, run COMMAND under it (renewing it every third of --ttl), and release it when COMMAND "
        "ends, however it ends. Exits with COMMAND's status.",
        usage="sfn-pauser run [options] -- COMMAND [ARGS ...]",
        epilog=RUN_EPILOG,
    )
    _hold_options(run, scheduling=False)
    run.add_argument(
        "--drain-timeout",
        metavar="DURATION",
        type=_duration,
        help="how long to wait, before the command, for the executions inside a protected section the hold covers "
        f"to leave: 90s, 15m, 1h or seconds (default {DEFAULT_DRAIN_TIMEOUT_SECONDS // 60}m); then the command is "
        f"not run, the hold is released, and run exits {EXIT_TIMED_OUT}",
    )
    run.add_argument(
        "--no-wait-drained",
        action="store_true",
        help="start the command without waiting for the executions already inside a protected section to leave",
    )

    renew = plain("renew", "Renew a hold: it expires --ttl (or the API's default) from now. 404 once it has ended.")
    renew.add_argument("hold_id", metavar="HOLD_ID", type=_hold_id, help="the hold, as `sfn-pauser hold` printed it")
    renew.add_argument("--ttl", metavar="DURATION", type=_duration, help="the new lifetime from now (30m, 2h, ...)")

    release = plain(
        "release",
        "Release a hold: what it alone held is resumed. Prints what was resumed and what is still held, and by "
        "what. Releasing a hold that has ended changes nothing (released: false).",
    )
    release.add_argument("hold_id", metavar="HOLD_ID", type=_hold_id, help="the hold, as `sfn-pauser hold` printed it")

    listed = plain("holds", "List the holds, following every page: ID, scope, who, expiry and next opening, reason.")
    listed.add_argument(
        "--state-machine",
        metavar="ARN",
        action="append",
        dest="state_machines",
        type=_matching(_STATE_MACHINE_ARN, "a state machine ARN, arn:aws:states:REGION:ACCOUNT:stateMachine:NAME"),
        help="only the holds of this state machine",
    )
    listed.add_argument("--guard", metavar="NAME", type=_guard_name, help="only the holds of this guard")
    return parser


def _hold_options(parser: argparse.ArgumentParser, *, scheduling: bool) -> None:
    """The scope, TTL and reason of `hold` and `run`; the start, expiry and recurrence of `hold` only."""
    parser.add_argument(
        "--state-machine",
        metavar="ARN",
        action="append",
        dest="state_machines",
        type=_machine_pattern,
        help="a state machine ARN, or a pattern with * and ? (quote it: 'arn:aws:states:*:123456789012:"
        "stateMachine:Payments*'); more than once for several",
    )
    parser.add_argument(
        "--guards",
        metavar="NAMES",
        action="append",
        type=_guard_names,
        help=f"guards, comma-separated (at most {MAX_GUARDS} in all): the hold covers the state machines they guard",
    )
    parser.add_argument("--guard", metavar="NAME", action="append", type=_guard_name, help="a guard, as --guards")
    default = "the API's" if scheduling else f"{DEFAULT_RUN_TTL_SECONDS // 60}m, renewed every third of it"
    parser.add_argument(
        "--ttl",
        metavar="DURATION",
        type=_duration,
        help=f"how long the hold lasts unless renewed: 90s, 30m, 2h, 1d, 1h30m or seconds (default: {default})",
    )
    parser.add_argument("--reason", help="why, recorded on the hold")
    hidden = argparse.SUPPRESS  # run holds from now until the command ends: refused with a reason in _check
    parser.add_argument(
        "--starts-at",
        metavar="TIME",
        type=_until,
        help="the hold starts then: ISO 8601 (2026-12-01T02:00:00Z) or a duration from now (2h)"
        if scheduling else hidden,
    )  # fmt: skip
    parser.add_argument(
        "--expires-at",
        metavar="TIME",
        type=_until,
        help="the hold ends then (ISO 8601 or a duration from now)" if scheduling else hidden,
    )
    parser.add_argument(
        "--schedule",
        metavar="CRON",
        type=_schedule,
        help="recur: the hold is active from each time of this EventBridge cron expression, e.g. "
        "'cron(0 2 ? * SUN *)' (UTC), for --duration" if scheduling else hidden,
    )  # fmt: skip
    parser.add_argument(
        "--duration",
        metavar="DURATION",
        type=_duration,
        help="with --schedule: how long each time lasts (2h)" if scheduling else hidden,
    )


def _wait_options(parser: argparse.ArgumentParser, what: str, drained: str) -> None:
    parser.add_argument("--wait", action="store_true", help=what)
    parser.add_argument(
        "--timeout",
        metavar="DURATION",
        type=_seconds,
        help=f"how long --wait{drained} waits, from the "
        f"switch's answer: seconds, or a duration (90s, 15m); then exit {EXIT_TIMED_OUT} "
        f"(default {DEFAULT_TIMEOUT_SECONDS / 60:g}m)",
    )


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse cannot say on its own; each problem exits 2 with the usage."""
    if not args.api:
        parser.error(f"no API URL: pass --api URL or set {API_VARIABLE}")
    url = urllib.parse.urlsplit(args.api)
    if url.scheme not in ("https", "http") or not url.hostname or url.query or url.fragment:
        parser.error(
            f"--api {args.api!r}: expected the stage URL, e.g. https://ID.execute-api.REGION.amazonaws.com/api"
        )
    args.state_machines = list(dict.fromkeys(getattr(args, "state_machines", None) or []))
    if args.command not in ("on", "off", "hold", "run") and len(args.state_machines) > 1:
        parser.error(f"{args.command} takes one --state-machine")
    if args.command == "run":
        _check_run(parser, args)
    elif args.command_line is not None:
        parser.error(f"{args.command} takes no command after -- (that is for `sfn-pauser run`)")
    if args.command in ("hold", "run"):
        args.guards = list(dict.fromkeys(chain(*(args.guards or []), args.guard or [])))
        if not args.state_machines and not args.guards:
            parser.error(f"{args.command} needs a scope: --state-machine ARN (or an ARN pattern) and/or --guards NAMES")
        if len(args.guards) > MAX_GUARDS:
            parser.error(f"--guards: at most {MAX_GUARDS} guards, got {len(args.guards)}")
        if (args.schedule is None) != (args.duration is None):
            parser.error("--schedule and --duration go together: a recurring hold needs both")
    waits = getattr(args, "wait", False) or getattr(args, "wait_drained", False)
    if getattr(args, "timeout", None) is not None and not waits:
        either = " or --wait-drained" if args.command == "on" else ""
        parser.error(f"--timeout says how long --wait{either} waits; add --wait{either}")
    if waits and args.dry_run:
        parser.error("--dry-run changes nothing, so there is nothing to --wait for")
    if getattr(args, "no_resume", False) and args.wait:
        parser.error("--no-resume leaves what is held, so --wait would wait for it in vain")
    if args.command == "abort" and bool(args.execution) == bool(args.all):
        parser.error("abort needs --execution ARN (one or more) or --all")
    if args.command == "audit" and bool(args.state_machines) == bool(args.hold):
        parser.error("audit takes --state-machine ARN or --hold HOLD_ID (one of the two)")


def _check_run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.command_line is None:
        parser.error("run needs -- and the command after it, e.g. sfn-pauser run --guards db -- ./deploy.sh")
    if not args.command_line:
        parser.error("run needs a command after --")
    if args.json:
        parser.error("run leaves stdout to the command, so --json has nothing to print")
    for option, value in (
        ("--starts-at", args.starts_at),
        ("--expires-at", args.expires_at),
        ("--schedule", args.schedule),
        ("--duration", args.duration),
    ):
        if value is not None:
            parser.error(f"run holds from now until the command ends, so {option} is for `sfn-pauser hold`")
    if args.no_wait_drained and args.drain_timeout is not None:
        parser.error("--drain-timeout says how long run waits for the executions inside to leave; "
                     "--no-wait-drained does not wait")  # fmt: skip


def _run(api: Api, output: Output, args: argparse.Namespace) -> int:
    if args.command in HOLD_COMMANDS or (args.command == "audit" and args.hold):
        return _run_holds(api, output, args)
    if not args.state_machines:
        commands.overview(api, output)
        return EXIT_OK
    machine = args.state_machines[0]
    if args.command in ("on", "off"):
        options: dict[str, Any] = {"enabled": args.command == "on"}
        if args.reason:
            options["reason"] = args.reason
        if args.command == "on" and args.until:
            options["until"] = args.until
        if args.command == "off" and args.no_resume:
            options["resume"] = False
        if args.command == "off" and args.force:
            options["force"] = True
        if args.dry_run:
            options["dryRun"] = True
        timeout = DEFAULT_TIMEOUT_SECONDS if args.timeout is None else args.timeout
        waits = args.wait or getattr(args, "wait_drained", False)
        commands.switch(
            api, output, args.state_machines, options, timeout if waits else None,
            drained=getattr(args, "wait_drained", False),
        )  # fmt: skip
    elif args.command == "status":
        commands.status(api, output, machine)
    elif args.command == "resume":
        options = {"force": True} if args.force else {}
        if args.execution:
            options["executionArns"] = list(dict.fromkeys(args.execution))
        if args.limit is not None:
            options["limit"] = args.limit
        commands.resume(api, output, machine, options)
    elif args.command == "abort":
        options = {"executionArns": list(dict.fromkeys(args.execution))} if args.execution else {"all": True}
        options.update({key: value for key, value in (("error", args.error), ("cause", args.cause)) if value})
        commands.abort(api, output, machine, options)
    else:
        commands.audit(api, output, machine, _page_query(args))
    return EXIT_OK


def _page_query(args: argparse.Namespace) -> dict[str, str]:
    """audit's ``--limit`` and ``--next-token``, as the query string."""
    query = {"limit": str(args.limit)} if args.limit is not None else {}
    if args.next_token:
        query["nextToken"] = args.next_token
    return query


def _run_holds(api: Api, output: Output, args: argparse.Namespace) -> int:
    if args.command == "hold":
        holds.hold(api, output, _hold_body(args))
    elif args.command == "run":
        ttl = DEFAULT_RUN_TTL_SECONDS if args.ttl is None else args.ttl
        how = ["--api", api.base_url, *(["--region", args.region] if args.region else [])]
        drain = None if args.no_wait_drained else (args.drain_timeout or DEFAULT_DRAIN_TIMEOUT_SECONDS)
        return runner.run(api, output, {**_hold_body(args), "ttlSeconds": ttl}, ttl, args.command_line, how, drain)
    elif args.command == "renew":
        holds.renew(api, output, args.hold_id, args.ttl)
    elif args.command == "release":
        holds.release(api, output, args.hold_id)
    elif args.command == "audit":
        holds.audit(api, output, args.hold, _page_query(args))
    else:
        query = {"stateMachineArn": args.state_machines[0]} if args.state_machines else {}
        if args.guard:
            query["guard"] = args.guard
        holds.listing(api, output, query)
    return EXIT_OK


def _hold_body(args: argparse.Namespace) -> dict[str, Any]:
    """POST /holds's body from the options of `hold` or `run`."""
    body: dict[str, Any] = {}
    if args.state_machines:
        body["stateMachineArns"] = args.state_machines
    if args.guards:
        body["guards"] = args.guards
    if args.reason:
        body["reason"] = args.reason
    if args.ttl is not None:
        body["ttlSeconds"] = args.ttl
    if args.starts_at:
        body["startsAt"] = args.starts_at
    if args.expires_at:
        body["expiresAt"] = args.expires_at
    if args.schedule:
        body["recurrence"] = {"schedule": args.schedule, "durationSeconds": args.duration}
    return body


# ---------------------------------------------------------------- argument types


def _matching(pattern: re.Pattern[str], expected: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not pattern.fullmatch(text.strip()):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return text.strip()

    return parse


_execution_arn = _matching(_EXECUTION_ARN, "an execution ARN, arn:aws:states:REGION:ACCOUNT:execution:MACHINE:NAME")


def _machine_pattern(text: str) -> str:
    """A state machine ARN, or a pattern of one with * and ?.

    >>> _machine_pattern("arn:aws:states:*:123456789012:stateMachine:Pay*")
    'arn:aws:states:*:123456789012:stateMachine:Pay*'
    """
    stripped = text.strip()
    pattern = _STATE_MACHINE_PATTERN if any(mark in stripped for mark in "*?") else _STATE_MACHINE_ARN
    if not pattern.fullmatch(stripped):
        raise argparse.ArgumentTypeError(
            "expected a state machine ARN, arn:aws:states:REGION:ACCOUNT:stateMachine:NAME, or a pattern of one "
            f"with * and ? (arn:aws:states:*:123456789012:stateMachine:Payments*), got {text!r}"
        )
    return stripped


def _guard_name(text: str) -> str:
    name = text.strip()
    if not _GUARD.fullmatch(name):
        raise argparse.ArgumentTypeError(
            "expected a guard name: 1 to 64 letters, digits and . _ - : @ / +, starting with a letter or digit; "
            f"got {text!r}"
        )
    return name


def _guard_names(text: str) -> list[str]:
    """
    >>> _guard_names("db, payments-api,")
    ['db', 'payments-api']
    """
    return [_guard_name(part) for part in text.split(",") if part.strip()]


def _hold_id(text: str) -> str:
    hold_id = text.strip()
    if hold_id in ("", ".", "..") or len(hold_id) > 256 or not hold_id.isprintable() or " " in hold_id:
        raise argparse.ArgumentTypeError(f"expected a hold ID as `sfn-pauser hold` printed it (hold-...), got {text!r}")
    return hold_id


def _schedule(text: str) -> str:
    if not _CRON.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(
            "expected an EventBridge cron expression of six fields, cron(MINUTES HOURS DAY-OF-MONTH MONTH "
            f"DAY-OF-WEEK YEAR), e.g. 'cron(0 2 ? * SUN *)'; got {text!r}"
        )
    return text.strip()


def _whole(minimum: int, maximum: int | None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
            raise argparse.ArgumentTypeError(f"expected a whole number {bound}, got {text!r}")
        return value

    return parse


def _duration(text: str) -> int:
    """Whole seconds from a duration: 90s, 30m, 2h, 1d, 1h30m, or a plain number of seconds.

    >>> [_duration(text) for text in ("90s", "30m", "2h", "1d", "1h30m", "45")]
    [90, 1800, 7200, 86400, 5400, 45]
    """
    stripped = text.strip().lower()
    seconds = int(stripped) if stripped.isascii() and stripped.isdigit() else _duration_seconds(stripped)
    if not seconds:
        raise argparse.ArgumentTypeError(
            f"expected a duration above 0: 90s, 30m, 2h, 1d, 1h30m or a number of seconds; got {text!r}"
        )
    return seconds


def _duration_seconds(text: str) -> int | None:
    """The seconds of ``90m``, ``1h30m`` ...; None for anything else."""
    text = text.strip().lower()
    if not _DURATION.fullmatch(text):
        return None
    return sum(int(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text))


def _seconds(text: str) -> float:
    """Seconds, from a number of them or a duration.

    >>> [_seconds(text) for text in ("900", "1.5", "3s", "15m", "1h30m")]
    [900.0, 1.5, 3.0, 900.0, 5400.0]
    """
    try:
        value = float(text)
    except ValueError:
        value = float(_duration_seconds(text) or 0)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0 or a duration (90s, 15m), got {text!r}")
    return value


def _until(text: str, now: datetime | None = None) -> str:
    """An instant in UTC (``...Z``) from ISO 8601 or a duration from now.

    >>> _until("2h", datetime(2026, 1, 1, tzinfo=UTC))
    '2026-01-01T02:00:00Z'
    >>> _until("2026-01-01T12:00:00+02:00", datetime(2026, 1, 1, tzinfo=UTC))
    '2026-01-01T10:00:00Z'
    """
    now = now or datetime.now(UTC)
    duration = _duration_seconds(text)
    if duration is not None:
        moment = now + timedelta(seconds=duration)
    else:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an ISO 8601 time (2026-12-01T18:00:00Z) or a duration (90m, 2h, 1d), got {text!r}"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    if moment <= now:
        raise argparse.ArgumentTypeError(f"{text!r} is not in the future")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
