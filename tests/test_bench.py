"""The benchmark's in-memory AWS answers as AWS does, and the quick bench runs the engine end to end.

No timing is asserted here: speed targets live in bench/ and are printed there.
"""

import logging
import multiprocessing

import pytest
from botocore.exceptions import ClientError

from bench import engine, resume
from bench.memory_aws import MemoryAws, TokenBucket
from bench.shared import SharedObjects, SharedTokenBucket, SharingS3
from chalicelib.arns import parse_state_machine_arn
from chalicelib.config import Settings
from chalicelib.events import CheckpointEvent
from chalicelib.limiter import AimdLimiter
from chalicelib.services import Services

BUCKET = "bench-bucket"


@pytest.fixture
def memory() -> MemoryAws:
    aws = MemoryAws(latency=0)
    aws.s3.create_bucket(BUCKET)
    return aws


def error_of(call, **kwargs) -> tuple[str, int]:
    with pytest.raises(ClientError) as raised:
        call(**kwargs)
    response = raised.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_if_none_match_put_answers_412_once_the_key_exists(memory):
    s3 = memory.session().client("s3")
    first = s3.put_object(Bucket=BUCKET, Key="a/claim", Body=b"mine", IfNoneMatch="*")

    assert error_of(s3.put_object, Bucket=BUCKET, Key="a/claim", Body=b"theirs", IfNoneMatch="*") == (
        "PreconditionFailed",
        412,
    )
    got = s3.get_object(Bucket=BUCKET, Key="a/claim")
    assert (got["Body"].read(), got["ETag"]) == (b"mine", first["ETag"])


def test_if_match_put_and_delete_answer_412_for_a_changed_object_and_404_for_a_missing_one(memory):
    s3 = memory.session().client("s3")
    etag = s3.put_object(Bucket=BUCKET, Key="lease", Body=b"v1")["ETag"]
    s3.put_object(Bucket=BUCKET, Key="lease", Body=b"v2", IfMatch=etag)

    assert error_of(s3.put_object, Bucket=BUCKET, Key="lease", Body=b"v3", IfMatch=etag) == ("PreconditionFailed", 412)
    assert error_of(s3.delete_object, Bucket=BUCKET, Key="lease", IfMatch=etag) == ("PreconditionFailed", 412)
    assert error_of(s3.delete_object, Bucket=BUCKET, Key="nothing", IfMatch=etag) == ("NoSuchKey", 404)
    assert error_of(s3.get_object, Bucket=BUCKET, Key="nothing") == ("NoSuchKey", 404)
    current = s3.get_object(Bucket=BUCKET, Key="lease")["ETag"]
    s3.delete_object(Bucket=BUCKET, Key="lease", IfMatch=current)
    assert not memory.s3.exists(BUCKET, "lease")


def test_listing_pages_in_key_order_with_delimiter_start_after_and_continuation(memory):
    s3 = memory.session().client("s3")
    for key in ("t/M/1.json", "t/M/2.json", "t/M/3 +x.json", "t/N/1.json", "t/_c/claims/1", "u/1"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"{}")

    folders = s3.list_objects_v2(Bucket=BUCKET, Prefix="t/", Delimiter="/")
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix="t/M/", Delimiter="/", PaginationConfig={"PageSize": 2}
    )
    after = s3.list_objects_v2(Bucket=BUCKET, Prefix="t/", StartAfter="t/M/3 +x.json", MaxKeys=1)

    assert [common["Prefix"] for common in folders["CommonPrefixes"]] == ["t/M/", "t/N/", "t/_c/"]
    assert "Contents" not in folders
    assert [[item["Key"] for item in page["Contents"]] for page in pages] == [
        ["t/M/1.json", "t/M/2.json"],
        ["t/M/3 +x.json"],
    ]
    assert [item["Key"] for item in after["Contents"]] == ["t/N/1.json"]
    assert after["IsTruncated"] is True


def test_delete_objects_removes_a_batch_quietly(memory):
    s3 = memory.session().client("s3")
    for key in ("a", "b"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")

    response = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "a"}, {"Key": "gone"}], "Quiet": True})

    assert "Errors" not in response
    assert memory.s3.keys(BUCKET) == ["b"]


def test_an_empty_send_bucket_answers_throttling_which_botocore_retries_and_the_limiter_sees():
    aws = MemoryAws(latency=0, send_rate=0, send_burst=2)
    aws.sfn.wait(["t1", "t2", "t3"])
    sfn = aws.session().client("stepfunctions")
    limiter = AimdLimiter()
    limiter.attach(sfn)
    sfn.send_task_success(taskToken="t1", output="{}")
    sfn.send_task_heartbeat(taskToken="t2")  # the three SendTask* calls share one bucket

    with pytest.raises(ClientError) as raised:
        sfn.send_task_success(taskToken="t3", output="{}")

    response = raised.value.response
    assert (response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]) == ("ThrottlingException", 400)
    assert response["ResponseMetadata"]["RetryAttempts"] == 2  # botocore's standard mode: 3 attempts
    assert limiter.throttles == 3
    assert len(aws.sfn.log.throttles) == 3
    assert aws.sfn.answered == {"t1": "success"}


def test_the_bucket_refills_at_a_rate_changed_mid_run_and_keeps_what_it_holds():
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.first_empty_at == 0.0

    now[0] = 0.1  # 10/s: one token back
    assert [bucket.take(), bucket.take()] == [True, False]
    bucket.set(rate=100)
    now[0] = 0.125  # 100/s from the change: two and a half more
    assert [bucket.take(), bucket.take(), bucket.take()] == [True, True, False]
    now[0] = 1.0  # full again (3), then other callers take all but one
    bucket.set(rate=100, hold=1)
    assert [bucket.take(), bucket.take()] == [True, False]


def test_the_shared_bucket_keeps_the_token_buckets_arithmetic():
    now = [0.0]
    bucket = SharedTokenBucket(multiprocessing.get_context("spawn"))
    bucket._clock = lambda: now[0]
    bucket.reset(rate=10, burst=3)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.first_empty_at == 0.0

    now[0] = 0.1
    assert [bucket.take(), bucket.take()] == [True, False]
    bucket.set(rate=100)
    now[0] = 0.125
    assert [bucket.take(), bucket.take(), bucket.take()] == [True, True, False]
    now[0] = 1.0
    bucket.set(rate=100, hold=1)
    assert [bucket.take(), bucket.take()] == [True, False]


def _take_three(bucket: SharedTokenBucket) -> None:
    for _ in range(3):
        assert bucket.take()


def test_the_shared_bucket_is_one_for_every_process():
    context = multiprocessing.get_context("spawn")
    bucket = SharedTokenBucket(context, rate=0, burst=5)
    child = context.Process(target=_take_three, args=(bucket,))
    child.start()
    child.join(30)

    assert child.exitcode == 0
    assert [bucket.take(), bucket.take(), bucket.take()] == [True, True, False]


def test_processes_share_the_leases_and_keep_their_own_copy_of_everything_else():
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        shared = SharedObjects(manager, context)
        one, other = (MemoryAws(latency=0) for _ in range(2))
        for aws in (one, other):
            aws.s3 = SharingS3(shared, ("t/_c/leases/",))
            aws.s3.create_bucket(BUCKET)
        s3, s3_other = one.session().client("s3"), other.session().client("s3")
        s3.put_object(Bucket=BUCKET, Key="t/_c/leases/M.json", Body=b"mine", IfNoneMatch="*")
        s3.put_object(Bucket=BUCKET, Key="t/M/1.json", Body=b"held")

        assert error_of(
            s3_other.put_object, Bucket=BUCKET, Key="t/_c/leases/M.json", Body=b"theirs", IfNoneMatch="*"
        ) == ("PreconditionFailed", 412)
        assert s3_other.get_object(Bucket=BUCKET, Key="t/_c/leases/M.json")["Body"].read() == b"mine"
        assert error_of(s3_other.get_object, Bucket=BUCKET, Key="t/M/1.json") == ("NoSuchKey", 404)
        assert one.s3.written == {"t/_c/leases/M.json"} and not other.s3.written


def test_a_lease_taken_after_another_process_gave_it_back_sees_what_that_process_deleted():
    # Each process has its own copy of the backlog. Without this, a shard drained in one
    # process and taken up later in another (a continuation's small-backlog pass takes
    # every free lease) was resent there from a copy real S3 would no longer show.
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        shared = SharedObjects(manager, context)
        one, other = (MemoryAws(latency=0) for _ in range(2))
        for aws in (one, other):
            aws.s3 = SharingS3(shared, ("t/_c/leases/",))
            aws.s3.create_bucket(BUCKET)
            for name in ("1", "2", "3"):
                aws.s3.put(BUCKET, f"t/M/{name}.json", b"held")
        s3, s3_other = one.session().client("s3"), other.session().client("s3")
        lease = s3.put_object(Bucket=BUCKET, Key="t/_c/leases/M#0.json", Body=b"one", IfNoneMatch="*")
        s3.delete_object(Bucket=BUCKET, Key="t/M/1.json")
        s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "t/M/2.json"}], "Quiet": True})

        # Not given back yet: the other copy is as it was.
        assert other.s3.keys(BUCKET, "t/M/") == ["t/M/1.json", "t/M/2.json", "t/M/3.json"]
        s3.delete_object(Bucket=BUCKET, Key="t/_c/leases/M#0.json", IfMatch=lease["ETag"])
        # A claimer's look at the lease (a tail after a drain) already sees them gone...
        assert error_of(s3_other.get_object, Bucket=BUCKET, Key="t/_c/leases/M#0.json") == ("NoSuchKey", 404)
        assert other.s3.keys(BUCKET, "t/M/") == ["t/M/3.json"]
        # ...and so does a drain that takes the lease up.
        s3_other.put_object(Bucket=BUCKET, Key="t/_c/leases/M#0.json", Body=b"other", IfNoneMatch="*")
        s3_other.delete_object(Bucket=BUCKET, Key="t/M/3.json")
        s3_other.delete_object(Bucket=BUCKET, Key="t/_c/leases/M#0.json")
        # `one` has not looked at a lease since: its copy is as it was, until it takes the lease.
        assert s3.head_object(Bucket=BUCKET, Key="t/M/3.json")
        s3.put_object(Bucket=BUCKET, Key="t/_c/leases/M#0.json", Body=b"one again", IfNoneMatch="*")
        assert one.s3.keys(BUCKET, "t/M/") == []


def test_an_answered_token_is_refused_as_aws_does_and_counted_as_a_duplicate(memory):
    memory.sfn.wait(["t1"])
    sfn = memory.session().client("stepfunctions")
    sfn.send_task_success(taskToken="t1", output="{}")

    assert error_of(sfn.send_task_success, taskToken="t1", output="{}") == ("TaskTimedOut", 400)
    assert error_of(sfn.send_task_success, taskToken="never-issued", output="{}") == ("InvalidToken", 400)
    assert memory.sfn.log.duplicates == 1


def test_clients_the_product_builds_itself_are_served_by_the_backend(memory):
    machine = parse_state_machine_arn(memory.sfn.create_state_machine("Orders"))

    with memory.serving_new_sessions():
        services = Services.build(Settings(bucket=BUCKET, prefix="tokens/"), logging.getLogger("test.bench"))
    key = services.store.save(CheckpointEvent(task_token="tok", state_machine=machine, input={"n": 1}))

    assert memory.sessions >= 1
    assert memory.s3.exists(BUCKET, key)
    assert memory.calls["PutObject"] == 2  # the token index, then the held task


def test_quick_bench_resumes_every_token_once_and_reports_each_target(capsys):
    targets = engine.Targets()

    results = engine.run(engine.QUICK, targets, serial_n=5)

    assert [result.scenario for result in results] == list(engine.QUICK)
    for result in results:
        assert (result.duplicates, result.lost, result.failures) == (0, 0, [])
        assert result.resumed > 0
        # A backlog of a full listing page fans out: each shard in a process of its own.
        assert (result.processes_used > 1) == (result.scenario.size >= 1000)
    assert any(result.scenario.size >= 1000 for result in results)
    out = capsys.readouterr().out
    assert "serial seed-style baseline" in out
    checked = " ".join(target for _, target, _ in targets.rows)
    assert "engine-quick: 0 lost" in checked
    assert "engine-quick-changing: follows the 25/s phase within 5 s" in checked


def test_the_bench_exits_non_zero_exactly_when_a_target_fails(capsys):
    code = resume.main(["--quick", "--only", "engine-quick"])

    out = capsys.readouterr().out
    verdicts = [line.split()[0] for line in out.split("targets:")[1].splitlines() if line.strip()]
    assert set(verdicts) <= {"PASS", "FAIL"} and verdicts
    assert code == (1 if "FAIL" in verdicts else 0)


def test_the_stolen_share_is_the_hypervisor_s_part_of_the_machine_s_cpu_time() -> None:
    # /proc/stat's first eight fields: user, nice, system, idle, iowait, irq, softirq, steal.
    before = [100, 0, 50, 800, 0, 0, 0, 50]
    after = [400, 0, 150, 1000, 0, 0, 0, 350]
    assert engine._stolen_share(before, after) == 300 / 900
    assert engine._stolen_share(before, before) is None  # no time passed: nothing to say
    assert engine._stolen_share(None, after) is None  # not Linux: the report leaves the line out
    assert engine._cpu_times() is None or len(engine._cpu_times() or []) == 8
