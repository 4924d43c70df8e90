"""scripts/local_stack.py (`python3 dev.py local`): the demo end to end, and a clean Ctrl-C."""

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.harness import ROOT

SCRIPT = "scripts/local_stack.py"
MACHINE_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:Orders"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and /proc")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(*args: str) -> subprocess.Popen:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    return subprocess.Popen(
        [sys.executable, SCRIPT, *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen) -> None:
    """Whatever happened, leave nothing running: SIGTERM lets the script stop its own children."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def refuses(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not reaped it yet.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


class Lines:
    """A subprocess's output, read in a thread so the test can wait on it with a deadline."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(process.stdout,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no line matching {pattern!r} within {timeout}s; output:\n{self.text}")

    def rest(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
        return self.text

    @property
    def text(self) -> str:
        return "".join(self.seen)


def test_the_demo_holds_an_execution_resumes_it_and_never_prints_its_token():
    process = start("--demo", "--port", str(free_port()))
    try:
        output, _ = process.communicate(timeout=120)
    finally:
        stop(process)

    assert process.returncode == 0, output
    assert "execution RUNNING" in output
    assert "execution SUCCEEDED" in output
    assert "output == input" in output
    assert "tokens/Orders/: 0 held tokens" in output
    saved = re.search(r"saved\s+s3://sfn-pauser-dev-tokens/(tokens/Orders/(\S+)\.json)", output)
    assert saved, output
    key_id = uuid.UUID(saved[2])
    # Under moto a task token is a UUID4, and the only UUID the demo may print is the key's
    # own (a UUIDv8): a token anywhere in the output, the demo's or the services' logs, fails here.
    assert {uuid.UUID(found) for found in UUID.findall(output)} == {key_id}, output
    assert key_id.version == 8
    assert "taskToken" not in output
    assert re.search(r"token\s+sha256:[0-9a-f]{12}", output)


def test_the_stack_serves_the_api_until_sigint_then_leaves_nothing_running():
    api_port, moto_port = free_port(), free_port()
    process = start("--port", str(api_port), "--moto-port", str(moto_port))
    lines = Lines(process)
    try:
        chalice_pid = int(lines.wait_for(r"chalice local \(pid (\d+)\)", timeout=60)[1])
        lines.wait_for("Ctrl-C stops everything", timeout=60)
        assert "chalice" in Path(f"/proc/{chalice_pid}/cmdline").read_text()
        assert f"moto endpoint   http://127.0.0.1:{moto_port}" in lines.text
        assert "stepfunctions start-execution" in lines.text

        query = urllib.parse.urlencode({"stateMachineArn": MACHINE_ARN})
        url = f"http://127.0.0.1:{api_port}/maintenance?{query}"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            status = json.loads(response.read())
        assert status["maintenance"] is False
        assert status["paused"] == 0

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, lines.rest(5)
    finally:
        stop(process)

    output = lines.rest(5)
    assert "SIGINT received" in output
    assert not alive(chalice_pid), output
    assert refuses(api_port)
    assert refuses(moto_port)


def test_help_documents_the_options():
    result = subprocess.run([sys.executable, SCRIPT, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30)

    assert result.returncode == 0
    for option in ("--port", "--moto-port", "--demo"):
        assert option in result.stdout
