"""``sfn-pauser``: the command line, its checks and its exit codes."""

import argparse
import os
import re
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sfn_pauser_cli import __version__, commands
from sfn_pauser_cli.api import Api, ApiError, ConfigurationError, Unreachable
from sfn_pauser_cli.commands import Failure, Output, TimedOut

EXIT_OK = 0
EXIT_FAILED = 1  # the API answered with an error, could not be reached, or the outcome is wrong
EXIT_USAGE = 2  # bad arguments, or nothing to send with (no API URL, region or credentials)
EXIT_TIMED_OUT = 3  # --wait did not see what it waits for within --timeout
EXIT_INTERRUPTED = 130

API_VARIABLE = "SFN_PAUSER_API"
DEFAULT_TIMEOUT_SECONDS = 900.0
# The API's own limits, checked here too so that a typo costs no round trip.
MAX_PAGE = 1000

_STATE_MACHINE_ARN = re.compile(r"arn:[a-z-]+:states:[a-z0-9-]+:\d{12}:stateMachine:[^:\s]+(?::[^:\s]+)?")
_EXECUTION_ARN = re.compile(r"arn:[a-z-]+:states:[a-z0-9-]+:\d{12}:execution:[^:\s]+(?::[^:\s]+){1,2}")
_DURATION = re.compile(r"(\d+)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

DESCRIPTION = """\
Switch sfn-pauser maintenance on and off, see it, and resume or abort what it
holds, through sfn-pauser's REST API. Every request is signed with SigV4
(execute-api) using botocore's standard credentials.

  sfn-pauser on  --state-machine ARN --reason "deploy $SHA" --until 2h --wait
  sfn-pauser off --state-machine ARN --wait --timeout 900
"""

EPILOG = f"""\
The API URL is --api, or ${API_VARIABLE}: the stage URL, e.g.
https://ID.execute-api.REGION.amazonaws.com/api.

exit codes:
  {EXIT_OK}  done
  {EXIT_FAILED}  the API refused (its Code and Message are printed) or could not be reached,
     or some state machines of a bulk switch failed, or the outcome changed under --wait
  {EXIT_USAGE}  bad arguments, or no API URL, region or AWS credentials (nothing was sent)
  {EXIT_TIMED_OUT}  --wait ran out of --timeout
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    output = Output(args.json)
    try:
        api = Api.from_environment(args.api, args.region)
        _run(api, output, args)
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
    return EXIT_OK


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
        help="print the API's answer as it is (with --wait, the final status)",
    )

    parser = argparse.ArgumentParser(
        prog="sfn-pauser",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def subcommand(name: str, summary: str, machine_help: str = "the state machine") -> argparse.ArgumentParser:
        parser = subcommands.add_parser(
            name, parents=[common], help=summary, description=summary, epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        parser.add_argument(
            "--state-machine",
            metavar="ARN",
            action="append",
            required=name != "status",
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
    _wait_options(on, "return only once every warm task handler sees maintenance on")
    on.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")

    off = subcommand("off", "Switch maintenance off and resume what is held.", several)
    off.add_argument("--reason", help="why, recorded in the audit trail")
    off.add_argument("--no-resume", action="store_true", help="leave what is held for a later `resume`")
    _wait_options(off, "return only once nothing is held (progress on stderr)")
    off.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")

    subcommand(
        "status",
        "Show maintenance and what is held: for one state machine, or without --state-machine a table of "
        "every one in maintenance or holding executions.",
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

    audit = subcommand("audit", "Show who switched, resumed or aborted what, newest first.")
    audit.add_argument("--limit", type=_whole(1, MAX_PAGE), help=f"events per page (1 to {MAX_PAGE})")
    audit.add_argument("--next-token", help="the page after the one that printed this token")
    return parser


def _wait_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--wait", action="store_true", help=what)
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_seconds,
        help=f"how long --wait waits, from the switch's answer; then exit {EXIT_TIMED_OUT} "
        f"(default {DEFAULT_TIMEOUT_SECONDS:g})",
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
    args.state_machines = list(dict.fromkeys(args.state_machines or []))
    if args.command not in ("on", "off") and len(args.state_machines) > 1:
        parser.error(f"{args.command} takes one --state-machine")
    if getattr(args, "timeout", None) is not None and not args.wait:
        parser.error("--timeout says how long --wait waits; add --wait")
    if getattr(args, "wait", False) and args.dry_run:
        parser.error("--dry-run changes nothing, so there is nothing to --wait for")
    if getattr(args, "no_resume", False) and args.wait:
        parser.error("--no-resume leaves what is held, so --wait would wait for it in vain")
    if args.command == "abort" and bool(args.execution) == bool(args.all):
        parser.error("abort needs --execution ARN (one or more) or --all")


def _run(api: Api, output: Output, args: argparse.Namespace) -> None:
    if not args.state_machines:
        commands.overview(api, output)
        return
    machine = args.state_machines[0]
    if args.command in ("on", "off"):
        options: dict[str, Any] = {"enabled": args.command == "on"}
        if args.reason:
            options["reason"] = args.reason
        if args.command == "on" and args.until:
            options["until"] = args.until
        if args.command == "off" and args.no_resume:
            options["resume"] = False
        if args.dry_run:
            options["dryRun"] = True
        timeout = DEFAULT_TIMEOUT_SECONDS if args.timeout is None else args.timeout
        commands.switch(api, output, args.state_machines, options, timeout if args.wait else None)
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
        query = {"limit": str(args.limit)} if args.limit is not None else {}
        if args.next_token:
            query["nextToken"] = args.next_token
        commands.audit(api, output, machine, query)


# ---------------------------------------------------------------- argument types


def _matching(pattern: re.Pattern[str], expected: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not pattern.fullmatch(text.strip()):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return text.strip()

    return parse


_execution_arn = _matching(_EXECUTION_ARN, "an execution ARN, arn:aws:states:REGION:ACCOUNT:execution:MACHINE:NAME")


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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def _until(text: str, now: datetime | None = None) -> str:
    """An instant in UTC (``...Z``) from ISO 8601 or a duration from now.

    >>> _until("2h", datetime(2026, 1, 1, tzinfo=UTC))
    '2026-01-01T02:00:00Z'
    >>> _until("2026-01-01T12:00:00+02:00", datetime(2026, 1, 1, tzinfo=UTC))
    '2026-01-01T10:00:00Z'
    """
    now = now or datetime.now(UTC)
    duration = _DURATION.fullmatch(text.strip().lower())
    if duration:
        moment = now + timedelta(seconds=int(duration[1]) * _UNIT_SECONDS[duration[2]])
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
