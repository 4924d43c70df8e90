"""dev.py: its usage, for people and for scripts (the exit codes)."""

import subprocess
import sys

import pytest

from tests.harness import ROOT

COMMANDS = ("test", "lint", "local", "bench", "policies")


def dev(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "dev.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("flag", ["--help", "-h", "help"])
def test_help_is_the_usage_on_stdout_and_exits_0(flag):
    result = dev(flag)

    assert result.returncode == 0, result.stderr
    assert "usage: python3 dev.py COMMAND" in result.stdout
    for command in COMMANDS:
        assert f"python3 dev.py {command}" in result.stdout
    assert result.stderr == ""


def test_an_unknown_command_is_named_and_exits_2_with_the_usage():
    result = dev("tets")

    assert result.returncode == 2
    assert result.stderr.startswith("dev: unknown command 'tets'\n")
    assert "usage: python3 dev.py COMMAND" in result.stderr
    assert result.stdout == ""


def test_no_command_exits_2_with_the_usage():
    result = dev()

    assert result.returncode == 2
    assert "dev: no command given" in result.stderr
    assert "python3 dev.py lint" in result.stderr
