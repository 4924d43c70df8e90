"""Many resumers on one backlog: every proceeding invocation, the API, the sweep and
continuations may resume the same machine at once. Each token must be sent once."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from chalicelib.arns import parse_state_machine_arn
from chalicelib.deadline import Deadline
from chalicelib.events import CheckpointEvent
from chalicelib.services import Services
from tests import harness
from tests.conftest import BUCKET, PREFIX
from tests.harness import REGION
from tests.sends import counting_sends

MACHINE = parse_state_machine_arn(f"arn:aws:states:{REGION}:123456789012:stateMachine:Busy")


def container() -> Services:
    return harness.container(BUCKET, PREFIX)


def hold(services: Services, count: int) -> list[str]:
    tokens = [f"token-{n:04d}" for n in range(count)]
    for n, token in enumerate(tokens):
        services.store.save(CheckpointEvent(task_token=token, state_machine=MACHINE, input={"n": n}))
    return tokens


@pytest.mark.parametrize("resumers", [4, 8])
def test_concurrent_resumers_send_each_token_exactly_once(plain_aws, resumers):
    tokens = hold(container(), 60)
    containers = [container() for _ in range(resumers)]

    with counting_sends() as sends, ThreadPoolExecutor(resumers) as pool:
        # exclusive=False: all of them really race for every token, as the API,
        # the re-check path and a continuation can.
        reports = list(
            pool.map(lambda services: services.resumer.resume(MACHINE, Deadline(30), exclusive=False), containers)
        )

    assert sorted(sends.successes) == sorted(tokens)
    assert sends.duplicates() == 0
    assert sum(report.resumed for report in reports) == len(tokens)
    assert list(containers[0].store.held(MACHINE.name)) == []


def test_exclusive_resumers_leave_a_backlog_to_the_one_holding_the_lease(plain_aws):
    tokens = hold(container(), 60)
    containers = [container() for _ in range(6)]

    with counting_sends() as sends, ThreadPoolExecutor(6) as pool:
        reports = list(
            pool.map(lambda services: services.resumer.resume(MACHINE, Deadline(30), exclusive=True), containers)
        )

    busy = [report for report in reports if report.busy]
    assert busy, "some resumers should have found the lease taken"
    assert all(report.resumed == 0 for report in busy)
    assert sum(report.resumed for report in reports) == len(tokens)
    assert sends.duplicates() == 0


def test_resumes_oldest_first(plain_aws):
    services = container()
    tokens = hold(services, 30)

    with counting_sends() as sends:
        # One thread, so the order of sends is the order of work.
        services.resumer._concurrency = 1
        services.resumer.resume(MACHINE, Deadline(30))

    assert list(sends.successes) == tokens


def test_a_resume_sends_each_saved_input_back_as_the_task_output(plain_aws):
    services = container()
    tokens = hold(services, 5)

    with counting_sends() as sends:
        services.resumer.resume(MACHINE, Deadline(30))

    assert [sends.outputs[token] for token in tokens] == [f'{{"n":{n}}}' for n in range(5)]
