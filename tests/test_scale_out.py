"""Scale-out, bounded: ``serve-api`` replicas sharing a real PostgreSQL server and a real
S3-compatible emulator (moto's server mode), in front of one real tritonserver.

Any replica serves any job RPC; the same idempotency key on two replicas makes one job;
a SUCCEEDED job whose video is gone answers DATA_LOSS (both video stores); a cancelled
job's stored progress is the step its reason names (both job stores); schema migrations
are versioned and applied once; claims never hand a job to two replicas and fenced writes
lock out a replica that lost its job; the retention TTL deletes jobs with their videos.
The long fault scenarios (kill -9, SIGSTOP, PostgreSQL restart, S3 outage, 50 jobs) are
in tests/reliability/test_scale_out_faults.py.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from stores import Cluster, PostgresServer, S3Emulator
from support import ApiProcess

from cinetron.api.config import from_args
from cinetron.api_client import pb
from cinetron.core.video import decode_mp4
from cinetron.tools.tritonserver import TritonServer

S = pb.JobState
TERMINAL = (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED)
LONG = 200  # steps: seconds on this machine, far longer than any cancel below


def request(
    steps: int, seed: int = 1, prompt: str = "a blue square moving right"
) -> pb.GenerateRequest:
    return pb.GenerateRequest(prompt=prompt, steps=steps, seed=seed)


def submit(api: ApiProcess, steps: int, seed: int = 1, key: str = "") -> pb.Job:
    msg = pb.SubmitJobRequest(request=request(steps, seed), idempotency_key=key)
    return api.stub.SubmitJob(msg, timeout=30).job


def wait_job(api: ApiProcess, job_id: str, timeout: float = 90) -> pb.Job:
    end = time.monotonic() + timeout
    while True:
        job = api.stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job
        if job.state in TERMINAL:
            return job
        assert time.monotonic() < end, f"job {job_id} still {S.Name(job.state)} after {timeout}s"
        time.sleep(0.2)


def wait_progress(api: ApiProcess, job_id: str, timeout: float = 60) -> int:
    """Watch on ``api`` until a progress event; its step."""
    stream = api.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=timeout)
    try:
        for event in stream:
            if event.WhichOneof("event") == "progress":
                return int(event.progress.step)
    finally:
        stream.cancel()
    raise AssertionError("the watch ended before any progress")


def rpc_code(fn: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        result = fn()
        if hasattr(result, "__next__"):
            list(result)  # type: ignore[call-overload]
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details() or ""


@pytest.fixture(scope="module")
def cluster(
    triton_server: TritonServer,
    postgres_server: PostgresServer,
    s3_emulator: S3Emulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """Two replicas, one database, one bucket of the S3 emulator."""
    c = Cluster(
        tmp_path_factory.mktemp("cluster"),
        triton_server.grpc_url,
        postgres_server.new_database(),
        s3_emulator,
        s3_emulator.new_bucket(),
        lease_s=10.0,  # no takeover here: a replica starved of CPU for a while keeps its jobs
    )
    c.start(2, "--max-concurrency", "2")
    try:
        yield c
    finally:
        c.stop()


def test_any_replica_serves_every_job_rpc(cluster: Cluster) -> None:
    a, b = cluster.replicas[:2]
    job = submit(a, 6, seed=11)
    assert job.state in (S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING) and job.progress.total == 6

    # WatchJob on B streams what A runs, ending with the video.
    events = list(b.stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), timeout=90))
    assert events[-1].WhichOneof("event") == "completed", events[-1]
    steps = [e.progress.step for e in events if e.WhichOneof("event") == "progress"]
    assert steps and steps == sorted(steps) and steps[-1] <= 6
    video = events[-1].completed.video
    assert decode_mp4(video).shape[0] == events[-1].completed.frames

    # GetJob on B: the same bytes, through the video store and through a presigned URL.
    done = b.stub.GetJob(pb.GetJobRequest(job_id=job.job_id, include_video=True)).job
    assert done.state == S.JOB_STATE_SUCCEEDED and done.attempts == 1
    assert done.result.video == video and done.progress.step == 6
    assert done.video_url.startswith(cluster.s3.endpoint) and done.video_url_expire_time.seconds
    assert urllib.request.urlopen(done.video_url, timeout=10).read() == video
    assert cluster.s3.keys(cluster.bucket) == [f"videos/{job.job_id}/1.mp4"]

    # ListJobs on B lists A's job.
    listed = b.stub.ListJobs(pb.ListJobsRequest(page_size=50)).jobs
    assert job.job_id in [j.job_id for j in listed]

    # CancelJob on B stops A's generation within a step; the stored step is the reason's.
    long = submit(a, LONG, seed=12)
    wait_progress(b, long.job_id)
    code, details = rpc_code(lambda: b.stub.DeleteJob(pb.DeleteJobRequest(job_id=long.job_id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "CancelJob it first" in details
    b.stub.CancelJob(pb.CancelJobRequest(job_id=long.job_id))
    ended = list(b.stub.WatchJob(pb.WatchJobRequest(job_id=long.job_id), timeout=60))
    assert ended[-1].job_ended.state == S.JOB_STATE_CANCELLED, ended[-1]
    cancelled = a.stub.GetJob(pb.GetJobRequest(job_id=long.job_id)).job
    m = re.search(r"after step (\d+)", cancelled.error.reason)
    assert m and cancelled.progress.step == int(m.group(1)) and 0 < int(m.group(1)) < LONG
    a.wait_idle()

    # DeleteJob on B removes the row and the object, for every replica.
    b.stub.DeleteJob(pb.DeleteJobRequest(job_id=job.job_id))
    code, _ = rpc_code(lambda: a.stub.GetJob(pb.GetJobRequest(job_id=job.job_id)))
    assert code == grpc.StatusCode.NOT_FOUND
    assert cluster.s3.keys(cluster.bucket, f"videos/{job.job_id}") == []
    code, _ = rpc_code(lambda: b.stub.DeleteJob(pb.DeleteJobRequest(job_id="nope")))
    assert code == grpc.StatusCode.NOT_FOUND


def test_shared_queue_depth_is_the_same_on_every_replica(cluster: Cluster) -> None:
    a, b = cluster.replicas[:2]
    for p in (a, b):
        p.wait_idle()
    jobs = [submit(a, LONG, seed=20 + i) for i in range(6)]  # 2 slots on each replica
    try:
        deadline = time.monotonic() + 30
        while True:
            ma, mb = a.metrics(), b.metrics()
            queued = (ma["cinetron_api_jobs_queued"], mb["cinetron_api_jobs_queued"])
            running = (ma["cinetron_api_jobs_running"], mb["cinetron_api_jobs_running"])
            if queued == (2, 2) and running == (4, 4):
                break
            assert time.monotonic() < deadline, (queued, running)
            time.sleep(0.3)
        # Both replicas run jobs: B claimed from the shared queue what A could not run.
        assert a.load()[1] == 2 and b.load()[1] == 2
    finally:
        for j in jobs:
            b.stub.CancelJob(pb.CancelJobRequest(job_id=j.job_id))
        for j in jobs:
            assert wait_job(a, j.job_id).state == S.JOB_STATE_CANCELLED


def test_same_idempotency_key_at_once_on_two_replicas_makes_one_job(cluster: Cluster) -> None:
    a, b = cluster.replicas[:2]
    for n in range(5):
        key = f"order-{n}-{time.monotonic_ns()}"
        barrier = threading.Barrier(2)
        answers: list[pb.SubmitJobResponse] = []

        msg = pb.SubmitJobRequest(request=request(1, seed=n), idempotency_key=key)

        def call(
            api: ApiProcess,
            msg: pb.SubmitJobRequest,
            barrier: threading.Barrier,
            answers: list[pb.SubmitJobResponse],
        ) -> None:
            barrier.wait()
            answers.append(api.stub.SubmitJob(msg, timeout=30))

        threads = [threading.Thread(target=call, args=(p, msg, barrier, answers)) for p in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(answers) == 2
        assert answers[0].job.job_id == answers[1].job.job_id
        assert sorted(r.replayed for r in answers) == [False, True]
        listed = [j for j in a.stub.ListJobs(pb.ListJobsRequest(page_size=500)).jobs
                  if j.idempotency_key == key]  # fmt: skip
        assert len(listed) == 1
        assert wait_job(b, listed[0].job_id).state == S.JOB_STATE_SUCCEEDED


# -- hardening (#19): a gone video is DATA_LOSS; a cancelled job's progress is its last step --


@pytest.fixture
def local_api(triton_server: TritonServer, tmp_path: Path) -> Iterator[ApiProcess]:
    """One replica of the embedded default: SQLite and the local videos folder."""
    api = ApiProcess(tmp_path / "data", tmp_path / "serve-api.log",
                     ["--triton-url", triton_server.grpc_url])  # fmt: skip
    try:
        api.wait_serving()
        yield api
    finally:
        api.stop(signal.SIGKILL)


def assert_data_loss(api: ApiProcess, job_id: str, where: str) -> None:
    before = api.metrics().get("cinetron_api_job_videos_missing_total", 0.0)
    meta = api.stub.GetJob(pb.GetJobRequest(job_id=job_id)).job  # without the video: fine
    assert meta.state == S.JOB_STATE_SUCCEEDED
    for call in (
        lambda: api.stub.GetJob(pb.GetJobRequest(job_id=job_id, include_video=True)),
        lambda: api.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=30),
    ):
        code, details = rpc_code(call)
        assert code == grpc.StatusCode.DATA_LOSS, (code, details)
        assert "SUCCEEDED but its video is gone" in details and where in details, details
        assert "Submit the same request again" in details
    assert api.metrics()["cinetron_api_job_videos_missing_total"] == before + 2


def test_a_succeeded_job_whose_file_was_deleted_answers_data_loss(local_api: ApiProcess) -> None:
    job = submit(local_api, 1, seed=3)
    assert wait_job(local_api, job.job_id).state == S.JOB_STATE_SUCCEEDED
    path = local_api.data_dir / "videos" / f"{job.job_id}.mp4"
    path.unlink()
    assert_data_loss(local_api, job.job_id, str(path))


def test_a_succeeded_job_whose_object_was_deleted_answers_data_loss(cluster: Cluster) -> None:
    a, b = cluster.replicas[:2]
    job = submit(a, 1, seed=4)
    assert wait_job(a, job.job_id).state == S.JOB_STATE_SUCCEEDED
    key = f"videos/{job.job_id}/1.mp4"
    cluster.s3.client().delete_object(Bucket=cluster.bucket, Key=key)
    assert_data_loss(b, job.job_id, key)


def test_a_cancelled_jobs_progress_is_the_last_step_reached(local_api: ApiProcess) -> None:
    job = submit(local_api, LONG, seed=5)
    wait_progress(local_api, job.job_id)
    time.sleep(0.7)  # past the 0.5 s progress-write interval, so the row lags the loop
    local_api.stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id))
    ended = wait_job(local_api, job.job_id)
    assert ended.state == S.JOB_STATE_CANCELLED
    m = re.search(r"after step (\d+)", ended.error.reason)
    assert m, ended.error.reason
    assert ended.progress.step == int(m.group(1)) and 0 < ended.progress.step < LONG


def test_finished_jobs_expire_with_their_videos_after_the_ttl(
    triton_server: TritonServer, tmp_path: Path
) -> None:
    api = ApiProcess(tmp_path / "data", tmp_path / "serve-api.log",
                     ["--triton-url", triton_server.grpc_url, "--job-ttl", "2s"])  # fmt: skip
    try:
        api.wait_serving()
        job = submit(api, 1, seed=6)
        done = wait_job(api, job.job_id)
        assert done.state == S.JOB_STATE_SUCCEEDED and done.expire_time.seconds > 0
        assert done.expire_time.seconds - done.update_time.seconds == 2
        video = api.data_dir / "videos" / f"{job.job_id}.mp4"
        assert video.exists()
        deadline = time.monotonic() + 30
        while rpc_code(lambda: api.stub.GetJob(pb.GetJobRequest(job_id=job.job_id)))[0] == (
            grpc.StatusCode.OK
        ):
            assert time.monotonic() < deadline, "the job outlived its TTL by 28 s"
            time.sleep(0.5)
        assert not video.exists()
        assert api.metrics()["cinetron_api_jobs_expired_total"] == 1
    finally:
        api.stop(signal.SIGKILL)


def test_store_settings_from_mounted_files_as_on_kubernetes(
    triton_server: TritonServer,
    postgres_server: PostgresServer,
    s3_emulator: S3Emulator,
    tmp_path: Path,
) -> None:
    """deploy/ mounts one Secret as two files: the DSN, and an AWS config file holding the
    S3 endpoint, region and credentials (no secret in the environment)."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "database-url").write_text(postgres_server.new_database() + "\n")
    aws = s3_emulator.env()
    (secret / "aws-config").write_text(
        "[default]\n"
        f"endpoint_url = {aws['AWS_ENDPOINT_URL']}\n"
        f"region = {aws['AWS_DEFAULT_REGION']}\n"
        f"aws_access_key_id = {aws['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {aws['AWS_SECRET_ACCESS_KEY']}\n"
    )
    bucket = s3_emulator.new_bucket()
    env = {
        "CINETRON_DATABASE_URL_FILE": str(secret / "database-url"),
        "CINETRON_VIDEO_URL": f"s3://{bucket}/v",
        "AWS_CONFIG_FILE": str(secret / "aws-config"),
    }
    api = ApiProcess(tmp_path / "data", tmp_path / "serve-api.log",
                     ["--triton-url", triton_server.grpc_url], env)  # fmt: skip
    try:
        api.wait_serving()
        job = submit(api, 1, seed=8)
        assert wait_job(api, job.job_id).state == S.JOB_STATE_SUCCEEDED
        assert s3_emulator.keys(bucket) == [f"v/{job.job_id}/1.mp4"]
        assert not (api.data_dir / "jobs.sqlite3").exists()  # no job state on the pod
        assert "event=job_store_open store=postgresql://postgres@127.0.0.1:" in api.log_text()
    finally:
        api.stop(signal.SIGKILL)


# -- the stores themselves -------------------------------------------------------------------


def test_an_sqlite_data_dir_from_before_versioned_migrations_keeps_its_jobs(tmp_path: Path):
    from cinetron.api.jobs.sqlite import SqliteJobStore
    from cinetron.api.jobs.store import migrations

    data = tmp_path / "data"
    (data / "videos").mkdir(parents=True)
    old = sqlite3.connect(data / "jobs.sqlite3")
    old.executescript(migrations("sqlite")[0][2])  # the schema the first release created
    old.execute(
        "INSERT INTO jobs (job_id, request, seed, state, created_at, updated_at, video_path,"
        " result) VALUES ('old1', x'', 7, 3, 1, 1, '/elsewhere/old1.mp4', x'')"
    )
    old.commit()
    old.close()
    (data / "videos" / "old1.mp4").write_bytes(b"mp4")

    store = SqliteJobStore(data)
    assert store.schema_version == len(migrations("sqlite")) == 2
    row = store.row("old1")
    assert row is not None and row.video_key == "old1.mp4" and row.fence == 0
    store.close()
    assert SqliteJobStore(data).schema_version == 2  # opening again changes nothing


def test_postgres_claims_are_exclusive_and_fenced(postgres_server: PostgresServer) -> None:
    from cinetron.api.jobs.postgres import PostgresJobStore
    from cinetron.api.jobs.store import migrations

    dsn = postgres_server.new_database()
    store, again = PostgresJobStore(dsn), PostgresJobStore(dsn)  # the second migrates nothing
    assert store.schema_version == again.schema_version == len(migrations("postgres"))
    versions = postgres_server.sql("SELECT version FROM schema_migrations", dsn.rsplit("/", 1)[1])
    assert versions == [(1,)]
    ids = {store.insert(b"r", i, None, 4, None).job_id for i in range(30)}
    claimed: dict[str, list[str]] = {f"replica{i}": [] for i in range(3)}

    def claim_all(owner: str) -> None:
        s = PostgresJobStore(dsn)
        while (row := s.claim_next(owner, 30)) is not None:
            claimed[owner].append(row.job_id)
        s.close()

    threads = [threading.Thread(target=claim_all, args=(o,)) for o in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    every = [j for js in claimed.values() for j in js]
    assert sorted(every) == sorted(ids)  # each job claimed exactly once
    assert store.claim_next("replica9", 30) is None  # all leases are live

    job_id = claimed["replica0"][0]
    first = store.row(job_id)
    assert first is not None and first.fence == 1
    assert store.started(job_id, "replica0", 1)
    postgres_server.sql(
        f"UPDATE jobs SET lease_until = now() - interval '1 s' WHERE job_id = '{job_id}'",
        dsn.rsplit("/", 1)[1],
    )  # replica0 stalled past its lease
    taken = store.claim_next("replica1", 30)
    assert taken is not None and taken.job_id == job_id and taken.fence == 2
    assert taken.previous_owner == "replica0" and taken.attempts == 1
    # The stalled owner's writes change nothing; the new owner's do.
    assert not store.progress(job_id, "replica0", 1, 3, 4, 1.0)
    assert not store.succeed(job_id, "replica0", 1, b"", "k1", 4)
    assert "replica0" not in {o for o in store.renew("replica0", 30)}
    assert store.renew("replica1", 30)[job_id] == (2, False)
    assert store.succeed(job_id, "replica1", 2, b"", "k2", 4)
    done = store.row(job_id)
    assert done is not None and done.state == S.JOB_STATE_SUCCEEDED and done.video_key == "k2"
    store.close()
    again.close()


def test_scale_out_settings_come_from_the_environment_and_flags() -> None:
    env = {
        "CINETRON_DATABASE_URL": "postgresql://cinetron:pw@db:5432/cinetron",
        "CINETRON_VIDEO_URL": "s3://videos/cinetron",
        "CINETRON_JOB_LEASE_SECONDS": "20",
        "CINETRON_MAX_QUEUED_JOBS": "500",
        "CINETRON_JOB_TTL": "7d",
        "CINETRON_VIDEO_URL_TTL": "15m",
    }
    missing = {"CINETRON_DATABASE_URL_FILE": "/nonexistent/database-url"}
    with pytest.raises(SystemExit) as info:
        from_args([], missing)
    assert "--database-url-file /nonexistent/database-url: cannot read it" in str(info.value)
    c = from_args([], env)
    assert c.database_url.startswith("postgresql://") and c.video_url == "s3://videos/cinetron"
    assert (c.job_lease_s, c.max_queued_jobs, c.job_ttl_s, c.video_url_ttl_s) == (
        20,
        500,
        7 * 86400,
        900,
    )
    assert from_args(["--job-ttl", "90s"], env).job_ttl_s == 90
    default = from_args([], {})
    assert (default.database_url, default.video_url, default.job_ttl_s) == ("", "", 0)
    for bad, message in [
        ({"CINETRON_JOB_TTL": "soon"}, "--job-ttl must be seconds or a duration"),
        ({"CINETRON_JOB_LEASE_SECONDS": "0"}, "--job-lease must be between 1 and 3600"),
    ]:
        with pytest.raises(SystemExit) as info:
            from_args([], bad)
        assert message in str(info.value)
