#!/usr/bin/env python3
"""Set-up and day-to-day commands. Needs only Python 3.11+; it builds .venv itself.

usage: python3 dev.py COMMAND [ARGS ...]

    python3 dev.py test            lint (ruff) and the test suite; CI runs exactly this
    python3 dev.py lint            lint only (ruff check .)
    python3 dev.py local           run the service on an embedded AWS (moto) + chalice local, until Ctrl-C
    python3 dev.py local --demo    the same, walking one execution through pause and resume
    python3 dev.py bench [...]     run the resume benchmark (bench/resume.py)
    python3 dev.py policies        regenerate the IAM policies from the code (scripts/generate_policies.py)
    python3 dev.py COMMAND --help  a command's own options (local, bench)

Every command first makes sure .venv holds the pinned requirements (requirements-dev.txt,
with the AWS CLI `aws`) and the `sfn-pauser` command: about 90 s the first time, then
nothing until requirements*.txt or pyproject.toml change.
"""

import hashlib
import os
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
# What the venv is built from: a change to any of them reinstalls. pyproject.toml
# declares the CLI package (cli/sfn_pauser_cli) and its `sfn-pauser` command.
INSTALLED_FROM = [ROOT / "requirements.txt", ROOT / "requirements-dev.txt", ROOT / "pyproject.toml"]
COMMANDS = ("test", "lint", "local", "bench", "policies")
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def say(text: str) -> None:
    print(f"dev: {text}", flush=True)


def ensure_venv() -> None:
    """Create .venv, install the pinned requirements and the project itself, again only when they change."""
    stamp = VENV / ".requirements.sha256"
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in INSTALLED_FROM)).hexdigest()
    if PYTHON.exists() and stamp.exists() and stamp.read_text() == digest:
        return
    started = time.monotonic()
    if PYTHON.exists():
        say("the requirements changed: updating .venv (usually well under a minute)")
    else:
        say(f"first run: creating {VENV.relative_to(ROOT)} and installing the pinned requirements,")
        say("the AWS CLI and the sfn-pauser command; this usually takes about 90 s")
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    pip_install("-r", str(ROOT / "requirements-dev.txt"))
    say("installing the sfn-pauser command (pip install -e .)")
    pip_install("-e", str(ROOT))
    stamp.write_text(digest)
    say(f".venv is ready ({time.monotonic() - started:.0f} s)")


def pip_install(*args: str) -> None:
    """pip install, its progress shown as one line per package; pip's whole output only if it fails."""
    command = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert process.stdout is not None
    output: list[str] = []
    collected = 0
    for line in process.stdout:
        output.append(line)
        if line.startswith(("Collecting ", "Processing ")):
            collected += 1
            say(f"  [{collected}] {Path(line.split()[1]).name}")
        elif line.startswith("Installing collected packages") and collected:
            say(f"  installing {collected} packages (the longest step, no output until it ends)")
    if process.wait() != 0:
        sys.stderr.write("".join(output))
        raise SystemExit(f"dev: pip install {' '.join(args)} failed (exit {process.returncode}); its output is above")


def hand_over(*args: str) -> int:
    """Run the venv's Python on ``args`` in place of this process, where the OS allows.

    With exec the command keeps the PID the user started: SIGINT and SIGTERM (a
    terminal's Ctrl-C, an IDE's stop button, ``kill``) reach it directly, and the
    shell waits for its last lines. Elsewhere (Windows), run it and wait.
    """
    if os.name != "posix":
        return run(*args)
    os.chdir(ROOT)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(PYTHON, [str(PYTHON), *args])


def run(*args: str) -> int:
    """Run the venv's Python on ``args`` and wait for it, passing SIGINT and SIGTERM on once.

    The child has its own process group, so a terminal's Ctrl-C reaches it only
    through this process, never twice (a second SIGINT makes pytest abandon its
    clean-up); a signal sent to this PID alone reaches it too, and nothing is orphaned.
    """
    command = [str(PYTHON), *args]
    if os.name != "posix":
        process = subprocess.Popen(command, cwd=ROOT)
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:
                pass  # Windows sends Ctrl-C to the child too: wait for it to end
    process = subprocess.Popen(command, cwd=ROOT, process_group=0)

    def forward(signum: int, frame: FrameType | None) -> None:
        process.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def usage(error: str | None = None) -> int:
    if error is None:
        print(__doc__.strip())
        return 0
    print(f"dev: {error}\n\n{__doc__.strip()}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str]) -> int:
    if not argv:
        return usage("no command given")
    if argv[0] in ("-h", "--help", "help"):
        return usage()
    if argv[0] not in COMMANDS:
        return usage(f"unknown command {argv[0]!r}")
    command, rest = argv[0], argv[1:]
    try:
        ensure_venv()
        if command == "test":
            lint = run("-m", "ruff", "check", ".")
            tests = run("-m", "pytest", *rest)
            return tests or lint
    except KeyboardInterrupt:
        print("\ndev: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if command == "lint":
        return hand_over("-m", "ruff", "check", ".", *rest)
    if command == "local":
        return hand_over("scripts/local_stack.py", *rest)
    if command == "policies":
        return hand_over("scripts/generate_policies.py", *rest)
    return hand_over("bench/resume.py", *rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
