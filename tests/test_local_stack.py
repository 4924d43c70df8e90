"""scripts/local_stack.py (`python3 dev.py local`): the demo end to end, the printed commands pasted
as a user would, the sweep on its schedule (a tag changed with the AWS CLI takes effect within the
documented bound), and a clean stop on SIGINT or SIGTERM to the PID the user started."""

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
BIN = Path(sys.executable).parent
# A command line's own start-up (bash, the AWS CLI's Python) and the checkpoint's invocation,
# on top of the documented bound, on a busy 2-core machine.
SLACK_SECONDS = 6.0
MACHINE_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:Orders"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and /proc")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_environment() -> dict[str, str]:
    """This environment without AWS settings, as in a newcomer's shell (the stack sets its own)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}


def start(*args: str, via: tuple[str, ...] = (SCRIPT,)) -> subprocess.Popen:
    env = clean_environment()
    return subprocess.Popen(
        [sys.executable, *via, *args],
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
        """The first line, already seen or yet to come, that matches ``pattern``."""
        for line in self.seen:
            if match := re.search(pattern, line):
                return match
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
    # Under moto a task token is a UUID4, and the only UUIDs the demo may print are keys of
    # held tasks (UUIDv8): a token anywhere in the output, the demo's or the services' logs, fails here.
    printed = {uuid.UUID(found) for found in UUID.findall(output)}
    assert key_id in printed and {found.version for found in printed} == {8}, output
    assert "taskToken" not in output
    assert '"_aws"' not in output, "metrics (EMF lines) are left out of the demo's narration"
    assert re.search(r"token\s+sha256:[0-9a-f]{12}", output)
    # The holds and the drain, after the first held-and-resumed execution.
    assert "Pipeline B releases the last hold: the execution resumes" in output
    assert re.search(r"drained after \d+\.\d s: the execution left the section", output), output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_dev_py_pid_stops_everything_cleanly(signum):
    """What Ctrl-C, an IDE's stop button, a process manager or `kill` sends, to the PID the user started."""
    api_port, moto_port = free_port(), free_port()
    process = start("local", "--port", str(api_port), "--moto-port", str(moto_port), via=("dev.py",))
    lines = Lines(process)
    try:
        chalice_pid = int(lines.wait_for(r"chalice local \(pid (\d+)\)", timeout=60)[1])
        lines.wait_for("Ctrl-C stops everything", timeout=60)
        assert "chalice" in Path(f"/proc/{chalice_pid}/cmdline").read_text()
        assert f"moto endpoint   http://127.0.0.1:{moto_port}" in lines.text

        query = urllib.parse.urlencode({"stateMachineArn": MACHINE_ARN})
        url = f"http://127.0.0.1:{api_port}/maintenance?{query}"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            status = json.loads(response.read())
        assert status["maintenance"] is False
        assert status["paused"] == 0

        process.send_signal(signum)
        assert process.wait(timeout=20) == 0, lines.rest(5)
    finally:
        stop(process)

    output = lines.rest(5)
    assert "Traceback" not in output
    assert f"local: {signal.Signals(signum).name} received; stopped" in output
    # Its own last line is there in full: nothing cut it short.
    assert output.rstrip().endswith("local: chalice local and moto are stopped"), output
    assert not alive(chalice_pid), output
    assert refuses(api_port)
    assert refuses(moto_port)


def test_help_documents_the_options():
    result = subprocess.run([sys.executable, SCRIPT, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30)

    assert result.returncode == 0
    for option in ("--port", "--moto-port", "--demo"):
        assert option in result.stdout


# ---------------------------------------------------------------- the printed commands, pasted


class Shell:
    """One bash session that is fed one command at a time, as a user pastes them, so that
    variables (``EXECUTION=$(...)``) carry over; each command's exit status and output come back."""

    def __init__(self, tmp_path: Path) -> None:
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=tmp_path,
            env={**clean_environment(), "HOME": str(tmp_path)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines = Lines(self.process)

    def run(self, command: str, timeout: float = 60) -> tuple[int, str]:
        marker = uuid.uuid4().hex
        start = len(self.lines.seen)
        assert self.process.stdin is not None
        self.process.stdin.write(f"{command}\necho; echo {marker}=$?\n")
        self.process.stdin.flush()
        code = int(self.lines.wait_for(rf"^{marker}=(\d+)$", timeout)[1])
        return code, "".join(self.lines.seen[start:-1])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def printed_commands(banner: str) -> list[str]:
    """The banner's commands in order, exports first: its indented lines from the export block on."""
    block = banner[banner.index("In another shell") : banner.index("As deployed")]
    return [line.strip() for line in block.splitlines() if line.startswith("  ")]


def decision(lines: Lines, name: str, execution: str, timeout: float) -> str:
    """The pauser's (or a resumer's) logged decision about one execution: `paused`, `proceeding`, ..."""
    found = lines.wait_for(
        rf'"decision": "({name})", "stateMachine": "[^"]+", "execution": "{re.escape(execution)}"', timeout
    )
    return found[1]


@pytest.fixture
def stack_and_shell(tmp_path):
    process = start("--port", str(free_port()), "--sweep-seconds", "1")
    lines = Lines(process)
    shell = Shell(tmp_path)
    try:
        lines.wait_for("Ctrl-C stops everything", timeout=60)
        commands = printed_commands(lines.text)
        for export in [command for command in commands if command.startswith("export ")]:
            assert shell.run(export)[0] == 0, export
        yield lines, shell, [command for command in commands if not command.startswith("export ")]
    finally:
        shell.close()
        stop(process)


def test_the_printed_commands_work_as_pasted_and_a_start_pasted_twice_starts_two(stack_and_shell):
    lines, shell, commands = stack_and_shell
    assert (BIN / "aws").exists(), "the dev environment installs the AWS CLI (requirements-dev.txt)"
    [start_line] = [command for command in commands if "start-execution" in command]
    assert "--endpoint-url" not in " ".join(commands), "AWS_ENDPOINT_URL, exported once, is the endpoint"

    answers: dict[str, str] = {}
    executions: list[str] = []
    for command in commands:
        if command.startswith("aws s3 ls"):
            for execution in executions:
                assert decision(lines, "paused", execution, timeout=20) == "paused"
        code, output = shell.run(command)
        assert code == 0, f"{command}\n{output}\n{lines.text}"
        answers[command] = output
        if command == start_line:
            executions.append(shell.run('echo "$EXECUTION"')[1].strip())
            code, output = shell.run(command)  # pasted again: a new name, a new execution
            assert code == 0, output
            executions.append(shell.run('echo "$EXECUTION"')[1].strip())

    def answer(prefix: str) -> str:
        return next(output for command, output in answers.items() if command.startswith(prefix))

    assert len(set(executions)) == 2 and all(":execution:Orders:order-" in arn for arn in executions), executions
    on, off, resume = (json.loads(answers[command]) for command in commands if command.startswith("curl -s -X POST"))
    assert on["maintenance"] is True and on["reason"] == "db migration"
    assert off["maintenance"] is False and off["resumed"] == 2
    assert resume["resumed"] == 0
    assert json.loads(answer('curl -s "$API/maintenance?'))["maintenance"] is True
    assert answer("aws stepfunctions describe-execution").strip() == '"RUNNING"'
    assert answer("aws s3 ls").count(".json") == 2
    assert "Orders: maintenance on" in answer("sfn-pauser status")
    assert "nothing held" in answer("sfn-pauser off")
    for execution in executions:
        assert decision(lines, "resumed", execution, timeout=20) == "resumed"


# ---------------------------------------------------------------- the sweep, on its schedule


def test_the_sweep_runs_on_the_apps_schedule_by_default():
    """Unless a test shortens it, the local sweep's period is app.py's own Rate: they cannot drift."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import local_stack
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    import app as chalice_app

    [schedule] = [source for source in chalice_app.app.event_sources if source.name == "sweep"]
    rate = schedule.schedule_expression

    assert (
        local_stack.schedule_seconds(chalice_app.app, "sweep") == rate.value * {"MINUTES": 60, "HOURS": 3600}[rate.unit]
    )
    assert local_stack.parse_args([]).sweep_seconds is None


def test_a_tag_changed_with_the_aws_cli_holds_and_lifts_within_the_documented_bound(stack_and_shell):
    """`chalice local` runs no schedule; the local stack runs the sweep, which mirrors the tags, as deployed.

    The bound is the sweep's period plus MaintenanceCacheSeconds (the banner prints it): the
    sweep mirrors the tag, then a warm pauser may go on using the flag it cached that long.
    """
    lines, shell, commands = stack_and_shell
    bound = float(lines.wait_for(r"\+ \d+ = (\d+) s\)", timeout=1)[1])
    [start_line] = [command for command in commands if "start-execution" in command]
    [tag] = [command for command in commands if "tag-resource" in command and "untag" not in command]
    [untag] = [command for command in commands if "untag-resource" in command]

    def start_execution() -> tuple[float, str]:
        started = time.monotonic()
        code, output = shell.run(start_line)
        assert code == 0, output
        return started, shell.run('echo "$EXECUTION"')[1].strip()

    # A warm pauser that has seen maintenance off, and a mirror that says so.
    _, first = start_execution()
    assert decision(lines, "paused|proceeding", first, timeout=20) == "proceeding"

    code, output = shell.run(tag)
    assert code == 0, output
    tagged_at = time.monotonic()
    while True:
        started, execution = start_execution()
        if decision(lines, "paused|proceeding", execution, timeout=20) == "paused":
            break
        assert started - tagged_at < bound + SLACK_SECONDS, f"still passing {started - tagged_at:.0f}s after the tag"
    held = execution
    code, status = shell.run('curl -s "$API/maintenance?stateMachineArn=$ARN"')
    assert json.loads(status)["maintenance"] is True, status

    code, output = shell.run(untag)
    assert code == 0, output
    untagged_at = time.monotonic()
    assert decision(lines, "resumed", held, timeout=bound + SLACK_SECONDS) == "resumed"
    assert time.monotonic() - untagged_at < bound + SLACK_SECONDS
    while True:
        started, execution = start_execution()
        if decision(lines, "paused|proceeding", execution, timeout=20) == "proceeding":
            break
        assert started - untagged_at < bound + SLACK_SECONDS, (
            f"still holding {started - untagged_at:.0f}s after the untag"
        )
    code, status = shell.run('curl -s "$API/maintenance?stateMachineArn=$ARN"')
    assert json.loads(status)["maintenance"] is False, status

    # Nothing is left waiting: what was held in between was resumed by the sweep.
    def running() -> str:
        code, output = shell.run(
            'aws stepfunctions list-executions --state-machine-arn "$ARN" --status-filter RUNNING '
            "--query 'length(executions)'"
        )
        assert code == 0, output
        return output.strip()

    deadline = time.monotonic() + bound + SLACK_SECONDS
    while (count := running()) != "0":
        assert time.monotonic() < deadline, f"{count} executions still RUNNING after the untag"

    # The functions' metrics are there, labelled like their logs, never a bare EMF line.
    assert "  lambda metric | {" in lines.text
    assert not any(line.startswith("{") for line in lines.seen), lines.text


# ---------------------------------------------------------------- the README, against the local stack


def readme_commands(section: str, until: str) -> list[str]:
    """The shell commands of the README's ```bash blocks between two headings, continuations joined;
    comments, and `pip install` (for outside the dev environment), left out."""
    readme = (ROOT / "README.md").read_text()
    text = readme[readme.index(section) : readme.index(until)]
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s{2,}#.*$", "", line).strip()  # a comment, not "deploy #42"
            if command and not command.startswith(("#", "pip install")):
                commands.append(command)
    return commands


def request(method: str, url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers or {}, method=method), timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_readmes_commands_and_answers_hold_against_the_local_stack(stack_and_shell):
    _, shell, _ = stack_and_shell
    commands = readme_commands("## Switching maintenance", "## REST API")
    assert any(command.startswith("aws stepfunctions tag-resource") for command in commands)
    assert any(command.startswith("curl -X POST") for command in commands)
    assert any(command.startswith("sfn-pauser on") for command in commands)

    for command in commands:
        code, output = shell.run(command)
        assert code == 0, f"{command}\n{output}"
        if command.startswith("curl"):  # without -s, curl's progress meter comes first
            answer = json.loads(re.findall(r"\{.*\}", output)[-1])
            assert "Code" not in answer, f"{command}\n{output}"

    # The answers the README's REST API section documents.
    api = shell.run('echo "$API"')[1].strip()
    status, body = request("POST", f"{api}/maintenance", json.dumps({"stateMachineArn": MACHINE_ARN}).encode())
    assert (status, body["Code"]) == (415, "UnsupportedMediaType")
    status, body = request("GET", f"{api}/maintenanse")
    assert (status, body) == (403, {"message": "Missing Authentication Token"})
    status, body = request("DELETE", f"{api}/maintenance")
    assert (status, body["Code"]) == (405, "MethodNotAllowedError")

    query = urllib.parse.urlencode({"stateMachineArn": MACHINE_ARN})
    _, audit = request("GET", f"{api}/audit?{query}")
    switched_on = [event for event in audit["events"] if event["action"] == "maintenance-on"]
    assert switched_on and all(event["actor"] == "unknown" for event in audit["events"])
    assert "deploy #42" in {event.get("reason") for event in switched_on}, "the audit keeps the reason as sent"
    json_body = {"Content-Type": "application/json"}
    on = json.dumps({"stateMachineArn": MACHINE_ARN, "enabled": True, "reason": "deploy #42, db migration"})
    status, body = request("POST", f"{api}/maintenance", on.encode(), json_body)
    assert status == 200
    assert (body["reason"], body["by"]) == ("deploy 42 db migration", "unknown")
