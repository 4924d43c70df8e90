"""``sfn-pauser run``: a hold around a command.

Take the hold, run ``before_command`` (wait until task handlers see the hold,
then until nobody is inside a protected section it covers), run the command with this
process's stdin, stdout and stderr while a daemon thread renews the hold every
third of its TTL, then release the hold however the command ended: success,
failure, or SIGINT or SIGTERM (passed on to the command, which is waited for).
The exit status is the command's.

If this process dies without releasing (SIGKILL, a runner that vanishes), the
hold is no longer renewed and ends at its TTL.
"""

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from sfn_pauser_cli import drain, holds
from sfn_pauser_cli.api import Api, ApiError, Unreachable
from sfn_pauser_cli.commands import Failure, Output

# The command succeeded but its hold could not be released (it ends at its TTL).
EXIT_RELEASE_FAILED = 1
# The shell's codes for a command that cannot be executed, and one that is not found.
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
# After a failed renew, the next try comes after a third of the TTL or this, whichever is sooner.
RENEW_RETRY_SECONDS = 30.0
# How long the release may take, retries included, before the hold is left to its TTL.
RELEASE_SECONDS = 30.0
# How long a renew under way may take to finish once the command has ended, before the release.
RENEW_FINISH_SECONDS = 10.0
FORWARDED = (signal.SIGINT, signal.SIGTERM)


def run(
    api: Api,
    output: Output,
    body: dict[str, Any],
    ttl: int,
    command: list[str],
    how: list[str],
    drain_timeout: float | None,
) -> int:
    """Take a hold with ``body``, run ``command`` under it, release it; the exit status to end with.

    ``how`` is what ``sfn-pauser release HOLD_ID`` needs besides the ID (``--api URL`` ...),
    printed if the release fails. ``drain_timeout`` bounds the wait for the executions inside
    to leave (None: no such wait). A failure to take the hold raises, and the command is not run;
    so does a drain wait that fails (Failure, ApiError) or times out (TimedOut), after the release.
    """
    # From before the hold is asked for: a signal while POST /holds is under way must not leave a hold behind.
    with Forwarding() as signals:
        hold = holds.take(api, output, body)
        hold_id = hold["holdId"]
        renewer = Renewer(api, output, hold_id, ttl, renew_interval(ttl, hold), hold.get("expiresAt"))
        renewer.start()
        try:
            before_command(api, output, hold, signals.interrupted, drain_timeout)
            if signals.received is not None:
                output.progress(f"interrupted ({signals.name}) before the command started; it was not run")
                code = 128 + signals.received
            else:
                code = run_command(output, command, signals)
        finally:
            renewer.finish()
            released = release(api, output, hold_id, renewer.expires_at, how)
    if renewer.gone:
        output.progress(
            f"warning: {hold_id} ended while the command ran (see above): from then on, nothing held its "
            "state machines for it"
        )
    if not released and code == 0:
        return EXIT_RELEASE_FAILED
    return code


def before_command(
    api: Api,
    output: Output,
    hold: dict[str, Any],
    interrupted: Callable[[], bool],
    drain_timeout: float | None,
) -> None:
    """Between taking the hold and starting the command: wait until task handlers see
    the hold, then until nobody is inside a protected section it covers.

    A warm task handler reuses the holds it read for up to ``effectiveWithinSeconds``
    (MaintenanceCacheSeconds), so until then an execution may still pass the
    checkpoint. And an execution that passed it a moment earlier may still be
    calling the dependency until it reaches the section's leave step: GET
    /holds/{holdId} says ``drained: true`` once nobody is inside (drain.py), polled
    for up to ``drain_timeout`` seconds (None: not at all). A hold that is not
    active yet keeps nobody out, so neither wait would mean anything.

    It runs with the hold taken and renewed in the background, and with SIGINT
    and SIGTERM recorded instead of ending the process: the waits return as soon
    as ``interrupted()`` is true (the command is then not started, the hold is
    released, and run exits with 128 + the signal). A drain that does not come
    raises TimedOut (exit 3); an error answer, Failure or ApiError (exit 1).
    """
    hold_id = hold["holdId"]
    if not hold.get("active", True):
        starts = f" (it starts at {hold['startsAt']})" if hold.get("startsAt") else ""
        output.progress(
            f"{hold_id}: not active yet{starts}, so it keeps no execution out yet: not waiting for task "
            "handlers to see it, nor for the executions inside a protected section to leave"
        )
        return
    seconds = _seconds_of(hold.get("effectiveWithinSeconds"))
    if seconds > 0:
        output.progress(
            f"waiting {seconds:g}s before the command: a warm task handler may act on the holds it read up to "
            f"{seconds:g}s ago (MaintenanceCacheSeconds)"
        )
        ends = time.monotonic() + seconds
        while not interrupted() and time.monotonic() < ends:
            time.sleep(min(0.2, max(0.0, ends - time.monotonic())))
    if interrupted():
        return
    if drain_timeout is None:
        output.progress(
            f"{hold_id}: --no-wait-drained: not waiting for the executions already inside a protected section to leave"
        )
        return
    output.progress(
        f"waiting until nobody is inside a protected section {hold_id} covers: asking GET /holds/{hold_id} every "
        f"{drain.POLL_SECONDS:g}s for up to {drain_timeout:g}s (--drain-timeout)"
    )
    drain.wait(
        output,
        [drain.hold_subject(api, hold_id)],
        time.monotonic() + drain_timeout,
        interrupted,
        timed_out="the command was not run",
    )


def _seconds_of(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else 0.0


def run_command(output: Output, command: list[str], signals: "Forwarding") -> int:
    """The command's exit status, or 128 + N when signal N ended it (as a shell reports it)."""
    try:
        child = subprocess.Popen(command)
    except FileNotFoundError:
        output.progress(f"error: {command[0]}: command not found")
        return EXIT_NOT_FOUND
    except OSError as error:
        output.progress(f"error: cannot run {command[0]}: {error.strerror or error}")
        return EXIT_CANNOT_EXECUTE
    signals.started(child)
    status = child.wait()
    if status < 0:
        output.progress(f"{command[0]} was ended by {_signal_name(-status)}")
        return 128 - status
    if status:
        output.progress(f"{command[0]} exited with {status}")
    return status


def renew_interval(ttl: int, hold: dict[str, Any]) -> float:
    """A third of the TTL, or of the hold's own lifetime when the API gave it a shorter one.

    >>> renew_interval(30, {})
    10.0
    >>> renew_interval(3600, {"createdAt": "2026-01-01T00:00:00Z", "expiresAt": "2026-01-01T00:15:00.000Z"})
    300.0
    """
    lifetime = float(ttl)
    try:
        granted = (_instant(hold["expiresAt"]) - _instant(hold["createdAt"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        granted = lifetime
    if 0 < granted < lifetime:
        lifetime = granted
    return lifetime / 3


def release(api: Api, output: Output, hold_id: str, expires_at: Any, how: list[str]) -> bool:
    """DELETE the hold; whether it is over (released now, or it had already ended)."""
    try:
        released = holds.release_request(api, hold_id, deadline=time.monotonic() + RELEASE_SECONDS)
    except ApiError as error:
        if error.status == 404:
            output.progress(f"{hold_id}: had already ended (expired or released)")
            return True
        problem = f"{error.code}: {error.message} (HTTP {error.status})"
    except (Unreachable, Failure) as error:
        problem = str(error)
    else:
        for line in holds.release_lines(hold_id, released):
            output.progress(line)
        return True
    output.progress(
        f"error: could not release {hold_id} ({problem}). It goes on holding until it expires at "
        f"{expires_at or '?'}, or until released by hand: {shlex.join(['sfn-pauser', 'release', hold_id, *how])}"
    )
    return False


class Renewer(threading.Thread):
    """Renews the hold every ``interval`` seconds until ``finish()``; a failed renew is
    tried again sooner, and a hold the API no longer has (404) is reported loudly once."""

    def __init__(self, api: Api, output: Output, hold_id: str, ttl: int, interval: float, expires_at: Any) -> None:
        super().__init__(name=f"renew {hold_id}", daemon=True)
        self.api = api
        self.output = output
        self.hold_id = hold_id
        self.ttl = ttl
        self.interval = interval
        self.expires_at = expires_at
        self.gone = False
        self._finishing = threading.Event()
        self._muted = threading.Event()

    def run(self) -> None:
        delay = self.interval
        failures = 0
        while not self._finishing.wait(delay):
            try:
                renewed = holds.renew_request(self.api, self.hold_id, {"ttlSeconds": self.ttl})
            except ApiError as error:
                if error.status == 404:
                    self._lost(error)
                    return
                problem = f"{error.code}: {error.message} (HTTP {error.status})"
            except (Unreachable, Failure) as error:
                problem = str(error)
            except Exception as error:  # the thread must go on renewing, whatever went wrong
                problem = f"{type(error).__name__}: {error}"
            else:
                self.expires_at = renewed.get("expiresAt") or self.expires_at
                if failures and not self._muted.is_set():
                    self.output.progress(f"{self.hold_id}: renewed after {failures} failed tries; expires at "
                                         f"{self.expires_at or '?'}")  # fmt: skip
                failures, delay = 0, self.interval
                continue
            failures += 1
            delay = min(self.interval, RENEW_RETRY_SECONDS)
            if not self._muted.is_set():
                self.output.progress(
                    f"warning: renewing {self.hold_id} failed ({problem}); trying again in {delay:g}s. "
                    f"Unless a renew gets through, it expires at {self.expires_at or '?'}"
                )

    def finish(self) -> None:
        """Stop renewing, letting a renew under way end (and report) before the release."""
        self._finishing.set()
        if self.is_alive():
            self.join(RENEW_FINISH_SECONDS)
        self._muted.set()  # a renew still under way now may see the release's 404: not news

    def _lost(self, error: ApiError) -> None:
        if self._muted.is_set():
            return
        self.gone = True
        banner = "!" * 72
        self.output.progress(banner)
        self.output.progress(
            f"HOLD {self.hold_id} IS GONE: renewing it answered {error.code}: {error.message} (HTTP 404). "
            "Someone released it, or it expired before a renew got through."
        )
        self.output.progress(
            "THE COMMAND GOES ON, BUT NOTHING HOLDS ITS STATE MACHINES FOR IT NOW: executions reaching the "
            "checkpoint are not held (unless another hold or the Maintenance tag covers them)."
        )
        self.output.progress(banner)


class Forwarding:
    """SIGINT and SIGTERM while run holds the hold: recorded and passed on to the
    command, never fatal here, so that the hold is released however the command ends.

    In a terminal, Ctrl-C reaches every process of the foreground group, the
    command included, so SIGINT is not passed on a second time there (a deploy
    tool may take a second Ctrl-C as "stop now, whatever it leaves behind").
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._pending = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "Forwarding":
        if threading.current_thread() is threading.main_thread():
            for signum in FORWARDED:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exception: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def name(self) -> str:
        return _signal_name(self.received) if self.received is not None else "-"

    def interrupted(self) -> bool:
        return self.received is not None

    def started(self, child: "subprocess.Popen[bytes]") -> None:
        self._child = child
        if self._pending and self.received is not None:
            self._forward(child, self.received)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        child = self._child
        if child is None:
            self._pending = True
            _say(f"got {_signal_name(signum)}: the hold is released and the command is not started")
        elif child.returncode is not None:
            _say(f"got {_signal_name(signum)} while releasing the hold; releasing it first")
        else:
            self._forward(child, signum)

    def _forward(self, child: "subprocess.Popen[bytes]", signum: int) -> None:
        name = _signal_name(signum)
        if signum == signal.SIGINT and _terminal_sent_it_too():
            _say(f"got {name} (the terminal's, so the command has it too): waiting for the command to end, "
                 "then releasing the hold")  # fmt: skip
            return
        _say(f"got {name}: passing it to the command, waiting for it to end, then releasing the hold")
        try:
            child.send_signal(signum)
        except (OSError, ValueError) as error:
            _say(f"could not pass {name} to the command: {error}")


def _terminal_sent_it_too() -> bool:
    """Whether this process is in the foreground of a controlling terminal (which sends Ctrl-C to all of it)."""
    if not hasattr(os, "getpgrp"):
        return False
    try:
        terminal = os.open("/dev/tty", os.O_RDONLY | getattr(os, "O_NOCTTY", 0))
    except OSError:
        return False
    try:
        return os.tcgetpgrp(terminal) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(terminal)


def _say(text: str) -> None:
    """A line on stderr from a signal handler: a raw write, which cannot meet a print under way."""
    with contextlib.suppress(OSError, ValueError):
        os.write(sys.stderr.fileno(), f"sfn-pauser: {text}\n".encode())


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _instant(text: Any) -> datetime:
    moment = datetime.fromisoformat(str(text))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
