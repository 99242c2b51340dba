"""The cinetron.v1 gRPC API, in-process: a real grpc.aio server on a free loopback port,
real gRPC clients, and a real inference backend — the session's tritonserver when the
``triton_server`` fixture exists, otherwise the in-process torch transport."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import free_port

from bench.samplers import EXPERIMENTAL_GAP
from cinetron.api.backend import triton_probe, triton_transport
from cinetron.api.config import ServerConfig
from cinetron.api.main import ApiServer
from cinetron.api_client import SERVICE_NAME, pb, pb_grpc
from cinetron.core.transport import Transport
from cinetron.core.video import decode_mp4

LONG_STEPS = 200  # far longer than any cancel/deadline below: seconds on CPU


@pytest.fixture(scope="session")
def inference(request: pytest.FixtureRequest) -> tuple[Callable[[], Transport], object]:
    """One backend for the whole session: (transport factory, readiness probe)."""
    try:
        triton = request.getfixturevalue("triton_server")
    except pytest.FixtureLookupError:
        triton = None
    if triton is not None:
        transport = triton_transport(triton.grpc_url)
        return (lambda: transport), triton_probe(triton.grpc_url)
    from cinetron.transports.torch_local import TorchTransport

    local = TorchTransport(threads=1)
    return (lambda: local), None


class RunningApi:
    """An ApiServer on its own event loop thread, as a test sees it from outside."""

    def __init__(self, config: ServerConfig, transport: Callable[[], Transport], probe: object):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def make() -> ApiServer:
            return ApiServer(config, transport=transport, probe=probe)  # type: ignore[arg-type]

        self.server = self.call(make())
        self.port = self.call(self.server.start())
        self.address = f"127.0.0.1:{self.port}"
        self.config = config

    def call(self, coro, timeout: float = 60.0):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(
            self.address, options=[("grpc.max_receive_message_length", 64 << 20)]
        )

    def stub(self) -> pb_grpc.VideoServiceStub:
        return pb_grpc.VideoServiceStub(self.channel())

    def wait_ready(self, timeout: float = 120.0) -> None:
        health = health_pb2_grpc.HealthStub(self.channel())
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.1)
        raise AssertionError(f"API not SERVING after {timeout}s: {self.server.backend.reason}")

    def outcome(self, name: str) -> float:
        value = self.server.metrics.registry.get_sample_value(
            "cinetron_api_generations_total", {"outcome": name}
        )
        return value or 0.0

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until no generation runs or waits (the slot is free again)."""
        end = time.monotonic() + timeout
        while self.server.engine.running or self.server.engine.queued:
            assert time.monotonic() < end, "a generation slot was never freed"
            time.sleep(0.02)

    def stop(self) -> None:
        self.call(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def start_api(
    tmp_path: Path, inference: tuple[Callable[[], Transport], object]
) -> Iterator[Callable[..., RunningApi]]:
    started: list[RunningApi] = []

    def start(ready: bool = True, **overrides: Any) -> RunningApi:  # ServerConfig fields, _backend
        transport, probe = overrides.pop("_backend", inference)
        config = replace(
            ServerConfig(
                address="127.0.0.1:0",
                http_address="127.0.0.1:0",  # any free port: starts and stops with the server
                data_dir=tmp_path / "data",
                metrics_port=0,
            ),
            **overrides,
        )
        api = RunningApi(config, transport, probe)
        started.append(api)
        if ready:
            api.wait_ready()
        return api

    yield start
    for api in started:
        api.stop()


def first_progress(events: Iterator[pb.GenerateEvent]) -> pb.Progress:
    for event in events:
        if event.WhichOneof("event") == "progress":
            return event.progress
    raise AssertionError("the stream ended before any progress event")


# -- Generate -------------------------------------------------------------------------------


def test_generate_streams_queued_then_ordered_progress_then_a_decodable_mp4(start_api):
    api = start_api()
    stub = api.stub()
    model = stub.ListModels(pb.ListModelsRequest()).models[0]
    events = list(stub.Generate(pb.GenerateRequest(prompt="a red circle moving left", steps=4)))

    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["queued"] + ["progress"] * 4 + ["completed"]
    assert events[0].queued.request_id
    assert [e.progress.step for e in events[1:-1]] == [1, 2, 3, 4]
    assert all(e.progress.total == 4 for e in events[1:-1])
    elapsed = [e.progress.elapsed_seconds for e in events[1:-1]]
    assert elapsed == sorted(elapsed)
    done = events[-1].completed
    frames = decode_mp4(done.video)
    assert frames.shape == (model.frames, model.height, model.width, 3)
    assert (done.frames, done.width, done.height, done.fps) == (
        model.frames, model.width, model.height, model.fps,
    )  # fmt: skip
    assert done.model_version == model.version and done.video_size_bytes == len(done.video)
    assert {"queue_s", "encode_s", "denoise_s", "decode_s", "mp4_s", "total_s"} <= set(done.timings)


def test_same_seed_gives_the_same_video_and_an_unset_seed_is_reported(start_api, request):
    # Bit-identical frames need identical denoiser batches. The session's shared Triton
    # may still be batching other tests' leftover generations with ours (floating-point
    # sums then differ in the last bits), so this test gets a tritonserver of its own.
    backend = None
    try:
        repository = request.getfixturevalue("model_repository")
    except pytest.FixtureLookupError:
        repository = None
    if repository is not None:
        from cinetron.tools.tritonserver import TritonServer

        private = TritonServer(repository, ready_timeout=180)
        private.start()
        request.addfinalizer(private.stop)
        transport = triton_transport(private.grpc_url)
        backend = (lambda: transport), triton_probe(private.grpc_url)
    stub = (start_api(_backend=backend) if backend else start_api()).stub()
    chosen = list(stub.Generate(pb.GenerateRequest(prompt="a blue square", steps=2)))[-1].completed
    again = list(
        stub.Generate(pb.GenerateRequest(prompt="a blue square", steps=2, seed=chosen.seed))
    )
    assert (decode_mp4(again[-1].completed.video) == decode_mp4(chosen.video)).all()


def test_the_model_says_what_it_understands_and_warns_about_the_rest(start_api):
    stub = start_api().stub()
    (model,) = stub.ListModels(pb.ListModelsRequest()).models
    entries = {(e.attribute, e.value): list(e.phrases) for e in model.vocabulary}
    assert "crimson" in entries[("color", "red")] and ("shape", "triangle") in entries
    events = list(stub.Generate(pb.GenerateRequest(prompt="a red unicorn", steps=1)))
    (warning,) = events[-1].completed.warnings
    assert "'unicorn'" in warning
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Generate(pb.GenerateRequest(prompt="a cat playing the piano", steps=1)))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "knows none of the words" in (e.value.details() or "")


def test_get_info_says_how_each_sampler_is_best_run(start_api):
    info = start_api().stub().GetInfo(pb.GetInfoRequest())
    samplers = {s.name: s for s in info.samplers}
    assert set(samplers) == set(info.schedulers)
    if info.models[0].name == "shapes":
        # Flagged by the rule bench/samplers.py measures them with, each with its reason.
        default = samplers[info.models[0].default_scheduler].held_out_accuracy
        for s in samplers.values():
            assert s.experimental == (s.held_out_accuracy < default - EXPERIMENTAL_GAP)
        assert "solid" in samplers["euler_ancestral"].note
        assert samplers["euler"].recommended_steps == info.models[0].default_steps
        assert 0.0 < samplers["euler"].held_out_accuracy <= 1.0


def test_request_id_from_metadata_is_echoed(start_api):
    stub = start_api().stub()
    call = stub.Generate(
        pb.GenerateRequest(prompt="a cyan triangle", steps=1), metadata=[("x-request-id", "abc-42")]
    )
    events = list(call)
    assert dict(call.initial_metadata())["x-request-id"] == "abc-42"
    assert events[0].queued.request_id == "abc-42"


@pytest.mark.parametrize(
    ("fields", "field", "expected"),
    [
        ({"prompt": ""}, "prompt", "must not be empty"),
        ({"prompt": "x" * 2001}, "prompt", "at most 2000 characters"),
        ({"steps": 0}, "steps", "between 1 and 200, got 0"),
        ({"steps": 201}, "steps", "between 1 and 200, got 201"),
        ({"guidance": 31.0}, "guidance", "between 0 and 30"),
        ({"guidance": float("nan")}, "guidance", "between 0 and 30"),
        ({"shift": 0.0}, "shift", "between 0.1 and 20"),
        ({"seed": -1}, "seed", "between 0 and 9223372036854775807, got -1"),
        ({"scheduler": "ddim"}, "scheduler", "expected one of euler"),
        ({"model": "wan"}, "model", "this server serves"),
    ],
)
def test_invalid_fields_give_invalid_argument_naming_the_field(start_api, fields, field, expected):
    stub = start_api().stub()
    request = pb.GenerateRequest(prompt="a red circle")
    for name, value in fields.items():
        setattr(request, name, value)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(request))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(f"{field}:")
    assert expected in info.value.details()
    with pytest.raises(grpc.RpcError) as job_info:
        stub.SubmitJob(pb.SubmitJobRequest(request=request))
    assert job_info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_queue_full_gives_resource_exhausted_with_a_retry_hint(start_api):
    api = start_api(max_concurrency=1, max_queue=1)
    stub = api.stub()
    running = stub.Generate(pb.GenerateRequest(prompt="a red circle", steps=LONG_STEPS))
    first_progress(running)
    waiting = stub.Generate(pb.GenerateRequest(prompt="a red circle", steps=1))
    assert next(waiting).queued.position == 0  # admitted: the queue had room for one

    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(pb.GenerateRequest(prompt="a red circle", steps=1)))
    err = info.value
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry_ms = int(dict(err.trailing_metadata())["retry-after-ms"])
    assert retry_ms > 0 and f"retry after {retry_ms} ms" in err.details()
    assert api.server.metrics.registry.get_sample_value("cinetron_api_rejected_total") == 1
    running.cancel()
    assert [e.WhichOneof("event") for e in waiting][-1] == "completed"


def test_cancel_mid_generation_stops_the_loop_and_frees_the_slot(start_api):
    api = start_api(max_concurrency=1, max_queue=0)
    stub = api.stub()
    call = stub.Generate(pb.GenerateRequest(prompt="a green circle", steps=LONG_STEPS))
    assert first_progress(call).total == LONG_STEPS
    call.cancel()

    api.wait_idle()
    assert api.outcome("cancelled") == 1 and api.outcome("completed") == 0
    # The only slot is free: a new request is admitted instead of RESOURCE_EXHAUSTED.
    events = list(stub.Generate(pb.GenerateRequest(prompt="a green circle", steps=1)))
    assert events[-1].WhichOneof("event") == "completed"


def test_deadline_shorter_than_the_generation_gives_deadline_exceeded(start_api):
    api = start_api(max_concurrency=1)
    stub = api.stub()
    with pytest.raises(grpc.RpcError) as info:
        list(
            stub.Generate(pb.GenerateRequest(prompt="a red circle", steps=LONG_STEPS), timeout=0.5)
        )
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    api.wait_idle()
    assert api.outcome("deadline_exceeded") + api.outcome("cancelled") == 1
    assert api.outcome("completed") == 0


def test_backend_down_gives_unavailable_and_health_not_serving(start_api):
    dead = f"127.0.0.1:{free_port()}"  # nothing listens here
    api = start_api(ready=False, _backend=(lambda: triton_transport(dead), triton_probe(dead)))
    health = health_pb2_grpc.HealthStub(api.channel())
    time.sleep(0.3)
    for service in ("", SERVICE_NAME):
        status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    stub = api.stub()
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(pb.GenerateRequest(prompt="a red circle")))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert dead in info.value.details()
    info_reply = stub.GetInfo(pb.GetInfoRequest())
    assert not info_reply.ready and info_reply.limits.max_steps == 200


def test_info_and_models_describe_limits_and_schedulers(start_api):
    stub = start_api(max_queue=7, max_concurrency=3).stub()
    info = stub.GetInfo(pb.GetInfoRequest())
    assert info.ready and info.api_version == "cinetron.v1"
    assert (info.limits.min_steps, info.limits.max_steps) == (1, 200)
    assert (info.limits.max_queue, info.limits.max_concurrency) == (7, 3)
    assert info.limits.max_prompt_chars == 2000 and info.limits.max_text_tokens > 0
    assert "euler" in info.schedulers
    model = stub.ListModels(pb.ListModelsRequest()).models[0]
    assert model.name and model.version and model.default_scheduler in info.schedulers


def test_reflection_lists_the_service(start_api):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    db = ProtoReflectionDescriptorDatabase(start_api().channel())
    assert SERVICE_NAME in db.get_services()
    assert db.FindFileContainingSymbol(SERVICE_NAME).name == "cinetron/v1/video.proto"


def test_metrics_endpoint_serves_request_counts(start_api):
    port = free_port()
    api = start_api(metrics_port=port)
    list(api.stub().Generate(pb.GenerateRequest(prompt="a red circle", steps=2)))
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'cinetron_api_requests_total{code="OK",rpc="Generate"} 1.0' in text
    assert "cinetron_api_videos_generated_total 1.0" in text
    assert "cinetron_api_step_seconds_count 2.0" in text
    assert "cinetron_api_time_to_first_progress_seconds_count 1.0" in text
    assert "cinetron_api_queue_depth 0.0" in text


# -- jobs -----------------------------------------------------------------------------------


def test_job_runs_to_a_stored_video_and_watch_streams_its_events(start_api):
    stub = start_api().stub()
    job = stub.SubmitJob(
        pb.SubmitJobRequest(request=pb.GenerateRequest(prompt="a red circle", steps=3))
    ).job
    assert job.state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING) and job.progress.total == 3
    events = list(stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), timeout=60))
    assert events[-1].WhichOneof("event") == "completed"
    steps = [e.progress.step for e in events if e.WhichOneof("event") == "progress"]
    assert steps == sorted(steps)

    done = stub.GetJob(pb.GetJobRequest(job_id=job.job_id, include_video=True)).job
    assert done.state == pb.JOB_STATE_SUCCEEDED and done.attempts == 1
    assert decode_mp4(done.result.video).shape[0] == done.result.frames
    assert done.result.video == events[-1].completed.video
    assert stub.GetJob(pb.GetJobRequest(job_id=job.job_id)).job.result.video == b""
    # A finished job's watch yields its final event at once.
    final = list(stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id)))
    assert len(final) == 1 and final[0].completed.video


def test_submit_with_an_idempotency_key_replays_and_rejects_a_different_request(start_api):
    stub = start_api().stub()
    request = pb.GenerateRequest(prompt="a yellow square", steps=1)
    first = stub.SubmitJob(pb.SubmitJobRequest(request=request, idempotency_key="order-17"))
    again = stub.SubmitJob(pb.SubmitJobRequest(request=request, idempotency_key="order-17"))
    assert not first.replayed and again.replayed and again.job.job_id == first.job.job_id
    other = pb.GenerateRequest(prompt="a yellow square", steps=2)
    with pytest.raises(grpc.RpcError) as info:
        stub.SubmitJob(pb.SubmitJobRequest(request=other, idempotency_key="order-17"))
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first.job.job_id in info.value.details()


def test_cancel_running_job_stops_it_and_unknown_jobs_are_not_found(start_api):
    api = start_api(max_concurrency=1)
    stub = api.stub()
    request = pb.GenerateRequest(prompt="a red circle", steps=LONG_STEPS)
    job = stub.SubmitJob(pb.SubmitJobRequest(request=request)).job
    first_progress(stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id)))
    stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id))
    events = list(stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), timeout=60))
    assert events[-1].job_ended.state == pb.JOB_STATE_CANCELLED
    ended = stub.GetJob(pb.GetJobRequest(job_id=job.job_id)).job
    assert ended.state == pb.JOB_STATE_CANCELLED and ended.error.code == "CANCELLED"
    assert 0 < ended.progress.step < LONG_STEPS
    api.wait_idle()
    for rpc, msg in [
        (stub.GetJob, pb.GetJobRequest(job_id="nope")),
        (stub.CancelJob, pb.CancelJobRequest(job_id="nope")),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            rpc(msg)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and "'nope'" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        list(stub.WatchJob(pb.WatchJobRequest(job_id="nope")))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_list_jobs_pages_newest_first(start_api):
    stub = start_api().stub()
    ids = [
        stub.SubmitJob(
            pb.SubmitJobRequest(request=pb.GenerateRequest(prompt=f"circle {i}", steps=1))
        ).job.job_id
        for i in range(3)
    ]
    page1 = stub.ListJobs(pb.ListJobsRequest(page_size=2))
    page2 = stub.ListJobs(pb.ListJobsRequest(page_size=2, page_token=page1.next_page_token))
    assert [j.job_id for j in page1.jobs] + [j.job_id for j in page2.jobs] == ids[::-1]
    assert page1.next_page_token and not page2.next_page_token
    with pytest.raises(grpc.RpcError) as info:
        stub.ListJobs(pb.ListJobsRequest(page_size=501))
    assert (
        info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "page_size" in info.value.details()
    )


# -- security -------------------------------------------------------------------------------


def test_auth_on_rejects_missing_and_wrong_tokens_and_exempts_health(start_api, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# service tokens\ns3cret-one\n\ns3cret-two\n")
    api = start_api(ready=False, auth_tokens_file=tokens)
    stub = api.stub()
    for metadata in ([], [("authorization", "Bearer wrong")], [("authorization", "s3cret-one")]):
        with pytest.raises(grpc.RpcError) as info:
            stub.GetInfo(pb.GetInfoRequest(), metadata=metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Generate(pb.GenerateRequest(prompt="a red circle"), metadata=metadata))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    refused = api.server.metrics.registry.get_sample_value(
        "cinetron_api_requests_total", {"rpc": "Generate", "code": "UNAUTHENTICATED"}
    )
    assert refused == 3
    api.wait_ready()  # health needs no token: Kubernetes probes carry none
    ok = [("authorization", "Bearer s3cret-two")]
    assert stub.GetInfo(pb.GetInfoRequest(), metadata=ok).ready
    events = list(stub.Generate(pb.GenerateRequest(prompt="a red circle", steps=1), metadata=ok))
    assert events[-1].WhichOneof("event") == "completed"


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_round_trip_with_a_self_signed_certificate(start_api, tmp_path):
    cert, key = _self_signed(tmp_path)
    api = start_api(ready=False, tls_cert=cert, tls_key=key)
    creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    secure = pb_grpc.VideoServiceStub(grpc.secure_channel(api.address, creds))
    assert secure.GetInfo(pb.GetInfoRequest(), timeout=10).api_version == "cinetron.v1"
    with pytest.raises(grpc.RpcError) as info:
        api.stub().GetInfo(pb.GetInfoRequest(), timeout=5)  # plaintext to a TLS port
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
