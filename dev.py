#!/usr/bin/env python3
"""Set-up and day-to-day commands. Needs only Python 3.11+; it builds .venv itself.

    python3 dev.py test            install, lint, run the test suite
    python3 dev.py local           run the service on an embedded AWS (moto) + chalice local
    python3 dev.py local --demo    the same, walking one execution through pause and resume
    python3 dev.py bench [...]     run the resume benchmark (bench/resume.py)
    python3 dev.py policies        regenerate the IAM policies from the code (scripts/generate_policies.py)
"""

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
# What the venv is built from: a change to any of them reinstalls. pyproject.toml
# declares the CLI package (cli/sfn_pauser_cli) and its `sfn-pauser` command.
INSTALLED_FROM = [ROOT / "requirements.txt", ROOT / "requirements-dev.txt", ROOT / "pyproject.toml"]


def ensure_venv() -> None:
    """Create .venv, install the pinned requirements and the project itself, again only when they change."""
    stamp = VENV / ".requirements.sha256"
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in INSTALLED_FROM)).hexdigest()
    if PYTHON.exists() and stamp.exists() and stamp.read_text() == digest:
        return
    if not PYTHON.exists():
        print(f"dev: creating {VENV.relative_to(ROOT)}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    print("dev: installing requirements-dev.txt and the sfn-pauser command (pip install -e .)", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-r", str(ROOT / "requirements-dev.txt")], check=True)
    subprocess.run([*pip, "-e", str(ROOT)], check=True)
    stamp.write_text(digest)


def run(*args: str) -> int:
    return subprocess.run([str(PYTHON), *args], cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("test", "local", "bench", "lint", "policies"):
        print(__doc__, file=sys.stderr)
        return 2
    ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "test":
        lint = run("-m", "ruff", "check", ".")
        tests = run("-m", "pytest", *rest)
        return tests or lint
    if command == "lint":
        return run("-m", "ruff", "check", ".", *rest)
    if command == "local":
        return run("scripts/local_stack.py", *rest)
    if command == "policies":
        return run("scripts/generate_policies.py", *rest)
    return run("bench/resume.py", *rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
