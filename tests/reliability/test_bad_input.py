"""Bad-input corpus against a real ``cinetron serve-api`` process and a real tritonserver.

Every case names the status code it expects and a fragment of the message; cases at a
bound that is still valid expect OK and a finished video. Requests go as typed
messages, as raw protobuf bytes (wrong wire types, truncation, invalid UTF-8), and as a
hand-made HTTP/2 stream cut short. The last test checks the server is still healthy
after the whole corpus. CLI cases are in test_cli_bad_input.py.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf.message import Message
from rel_support import SERVING, ApiProcess, good_request_succeeds, rpc_outcome
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from cinetron.api_client import SERVICE_NAME, pb
from cinetron.contract.manifest import ModelManifest

C: TypeAlias = grpc.StatusCode  # an alias, so annotations may use it
MAX_SEED = 2**63 - 1
OK_STEPS = 1  # cases that are valid run one step: the corpus stays fast
RTL = "\u202ea red circle moving left\u202c \u05e2\u05d9\u05d2\u05d5\u05dc \u0623\u062d\u0645\u0631"


@dataclass(frozen=True)
class Case:
    """One request and what the API must answer. ``rpc`` names the method; ``request`` is a
    message, or ``bytes`` sent as they are (a raw protobuf body)."""

    name: str
    rpc: str
    request: Any
    code: grpc.StatusCode
    fragment: str = ""
    metadata: tuple[tuple[str, str], ...] = field(default=())


def gen(name: str, code: C, fragment: str = "", **fields: Any) -> Case:
    fields.setdefault("prompt", "a red circle")
    if code == C.OK:
        fields.setdefault("steps", OK_STEPS)
    return Case(name, "Generate", pb.GenerateRequest(**fields), code, fragment)


def raw(name: str, data: bytes, code: C, fragment: str, rpc: str = "Generate") -> Case:
    return Case(name, rpc, data, code, fragment)


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 values are 10-byte two's complement varints
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def ld(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def vi(number: int, value: int) -> bytes:
    """A varint field (wire type 0)."""
    return varint(number << 3) + varint(value)


PROMPT = ld(1, b"a red circle")
ONE_STEP = vi(4, 1)
NOT_PROTOBUF = "not a valid protobuf message"

GENERATE_CASES = [
    # prompt
    gen("prompt_empty", C.INVALID_ARGUMENT, "prompt: must not be empty", prompt=""),
    gen("prompt_whitespace", C.INVALID_ARGUMENT, "only whitespace", prompt=" \t\n\r "),
    gen("prompt_2001_chars", C.INVALID_ARGUMENT, "at most 2000 characters, got 2001",
        prompt="x" * 2001),
    gen("prompt_2001_multibyte_chars", C.INVALID_ARGUMENT, "got 2001", prompt="é" * 2001),
    gen("prompt_nul", C.INVALID_ARGUMENT, "prompt: must not contain NUL", prompt="a\x00b"),
    gen("prompt_2mb_over_max_message", C.RESOURCE_EXHAUSTED, "larger than max",
        prompt="x" * (2 << 20)),
    gen("prompt_2000_chars_ok", C.OK, prompt="red circle " * 181 + "x" * 9),
    gen("prompt_rtl_ok", C.OK, prompt=RTL),
    gen("prompt_control_chars_ok", C.OK, prompt="\x01\x07\x1b[31ma red circle\x7f"),
    # the shapes model declares its vocabulary: nothing it knows, nothing it can follow
    gen("prompt_emoji_only", C.INVALID_ARGUMENT, "knows none of the words", prompt="🎥🔴⬅️ " * 50),
    gen("prompt_zero_width_only", C.INVALID_ARGUMENT, "knows none of the words",
        prompt="\u200b\u200d\ufeff"),
    gen("prompt_chinese", C.INVALID_ARGUMENT, "it draws what these words describe",
        prompt="红色圆形向左移动"),
    gen("prompt_out_of_world", C.INVALID_ARGUMENT, "color: red, green",
        prompt="a cat playing the piano"),
    # negative prompt
    gen("negative_nul", C.INVALID_ARGUMENT, "negative_prompt: must not contain NUL",
        negative_prompt="\x00"),
    gen("negative_2001_chars", C.INVALID_ARGUMENT, "negative_prompt: must be at most 2000",
        negative_prompt="y" * 2001),
    gen("negative_empty_ok", C.OK, negative_prompt=""),
    # steps
    gen("steps_0", C.INVALID_ARGUMENT, "steps: must be between 1 and 200, got 0", steps=0),
    gen("steps_201", C.INVALID_ARGUMENT, "got 201", steps=201),
    gen("steps_negative", C.INVALID_ARGUMENT, "got -1", steps=-1),
    gen("steps_int32_max", C.INVALID_ARGUMENT, "got 2147483647", steps=2**31 - 1),
    gen("steps_int32_min", C.INVALID_ARGUMENT, "got -2147483648", steps=-(2**31)),
    gen("steps_1_ok", C.OK, steps=1),
    # guidance
    gen("guidance_below_0", C.INVALID_ARGUMENT, "guidance: must be between 0 and 30",
        guidance=-1e-9),
    gen("guidance_above_30", C.INVALID_ARGUMENT, "got 30.0001", guidance=30.0001),
    gen("guidance_nan", C.INVALID_ARGUMENT, "got nan", guidance=float("nan")),
    gen("guidance_inf", C.INVALID_ARGUMENT, "got inf", guidance=float("inf")),
    gen("guidance_minus_inf", C.INVALID_ARGUMENT, "got -inf", guidance=float("-inf")),
    gen("guidance_1e308", C.INVALID_ARGUMENT, "guidance", guidance=1e308),
    gen("guidance_0_ok", C.OK, guidance=0.0),
    gen("guidance_30_ok", C.OK, guidance=30.0),
    # shift
    gen("shift_0", C.INVALID_ARGUMENT, "shift: must be between 0.1 and 20, got 0", shift=0.0),
    gen("shift_0_0999", C.INVALID_ARGUMENT, "shift: must be between 0.1 and 20", shift=0.0999),
    gen("shift_20_0001", C.INVALID_ARGUMENT, "got 20.0001", shift=20.0001),
    gen("shift_negative", C.INVALID_ARGUMENT, "got -1", shift=-1.0),
    gen("shift_nan", C.INVALID_ARGUMENT, "got nan", shift=float("nan")),
    gen("shift_inf", C.INVALID_ARGUMENT, "got inf", shift=float("inf")),
    gen("shift_0_1_ok", C.OK, shift=0.1),
    gen("shift_20_ok", C.OK, shift=20.0),
    # seed
    gen("seed_negative", C.INVALID_ARGUMENT, f"seed: must be between 0 and {MAX_SEED}, got -1",
        seed=-1),
    gen("seed_int64_min", C.INVALID_ARGUMENT, f"got {-(2**63)}", seed=-(2**63)),
    gen("seed_0_ok", C.OK, seed=0),
    gen("seed_int64_max_ok", C.OK, seed=MAX_SEED),
    # scheduler and model
    gen("scheduler_empty", C.INVALID_ARGUMENT, "scheduler: unknown scheduler ''", scheduler=""),
    gen("scheduler_wrong_case", C.INVALID_ARGUMENT, "expected one of euler", scheduler="EULER"),
    gen("scheduler_nul", C.INVALID_ARGUMENT, "unknown scheduler", scheduler="euler\x00"),
    gen("model_unknown", C.INVALID_ARGUMENT, "model: unknown model 'wan'", model="wan"),
    gen("model_huge_name", C.INVALID_ARGUMENT, "this server serves", model="m" * 5000),
    # enums are open in proto3: unknown numbers parse, and must be refused, not defaulted
    gen("shot_transition_99", C.INVALID_ARGUMENT,
        "shots[1].transition: unknown ShotTransition 99",
        shots=[pb.Shot(prompt="a", duration_seconds=1), pb.Shot(prompt="b", duration_seconds=1,
                                                                transition=99)]),  # type: ignore[arg-type]
    gen("shot_transition_negative", C.INVALID_ARGUMENT,
        "shots[0].transition: unknown ShotTransition -5",
        shots=[pb.Shot(prompt="a", duration_seconds=1, transition=-5)]),  # type: ignore[arg-type]
]  # fmt: skip

RAW_CASES = [
    raw("raw_garbage", b"\xff\xff\xff\xff", C.INVALID_ARGUMENT, NOT_PROTOBUF),
    raw("raw_prompt_invalid_utf8", ld(1, b"\xff\xfered"), C.INVALID_ARGUMENT, NOT_PROTOBUF),
    raw("raw_truncated_field", ld(1, b"a red circle")[:6], C.INVALID_ARGUMENT, NOT_PROTOBUF),
    raw("raw_varint_overflow", b"\x20" + b"\xff" * 11, C.INVALID_ARGUMENT, NOT_PROTOBUF),
    raw("raw_empty_body", b"", C.INVALID_ARGUMENT, "prompt: must not be empty"),
    # A wrong wire type for a known field is kept as an unknown field: the field is unset.
    raw("raw_prompt_as_varint", vi(1, 5), C.INVALID_ARGUMENT, "prompt: must not be empty"),
    raw("raw_guidance_as_varint_uses_default", PROMPT + ONE_STEP + vi(5, 7), C.OK, ""),
    raw("raw_unknown_field_ignored", PROMPT + ONE_STEP + vi(1000, 1), C.OK, ""),
    # int32 fields take the low 32 bits of a 64-bit varint: 2**40 arrives as 0.
    raw("raw_steps_64bit_varint", PROMPT + vi(4, 2**40), C.INVALID_ARGUMENT, "steps:"),
    raw("raw_seed_negative_varint", PROMPT + vi(3, -5), C.INVALID_ARGUMENT, "got -5"),
    raw("raw_submit_garbage", b"\x0a\x05\xff", C.INVALID_ARGUMENT, NOT_PROTOBUF, "SubmitJob"),
    raw("raw_getjob_invalid_utf8", ld(1, b"\xc3\x28"), C.INVALID_ARGUMENT, NOT_PROTOBUF,
        "GetJob"),
    raw("raw_listjobs_unknown_state", vi(3, 99), C.INVALID_ARGUMENT,
        "state: unknown JobState 99", "ListJobs"),
]  # fmt: skip

JOB_CASES = [
    Case("getjob_empty_id", "GetJob", pb.GetJobRequest(job_id=""), C.NOT_FOUND, "no job ''"),
    Case("getjob_path_traversal", "GetJob", pb.GetJobRequest(job_id="../../etc/passwd"),
         C.NOT_FOUND, "no job '../../etc/passwd'"),
    Case("getjob_sql_injection", "GetJob", pb.GetJobRequest(job_id="x' OR '1'='1"),
         C.NOT_FOUND, "no job"),
    Case("getjob_10k_id", "GetJob", pb.GetJobRequest(job_id="j" * 10_000), C.NOT_FOUND,
         "no job"),
    Case("getjob_rtl_id", "GetJob", pb.GetJobRequest(job_id=RTL), C.NOT_FOUND, "no job"),
    Case("canceljob_unknown", "CancelJob", pb.CancelJobRequest(job_id="nope"), C.NOT_FOUND,
         "no job 'nope'"),
    Case("watchjob_unknown", "WatchJob", pb.WatchJobRequest(job_id="\x01\x02"), C.NOT_FOUND,
         "no job"),
    Case("deletejob_unknown", "DeleteJob", pb.DeleteJobRequest(job_id="nope"), C.NOT_FOUND,
         "no job 'nope'"),
    Case("deletejob_10k_id", "DeleteJob", pb.DeleteJobRequest(job_id="j" * 10_000),
         C.NOT_FOUND, "no job"),
    Case("submit_key_129_chars", "SubmitJob",
         pb.SubmitJobRequest(request=pb.GenerateRequest(prompt="a"), idempotency_key="k" * 129),
         C.INVALID_ARGUMENT, "idempotency_key: must be at most 128"),
    Case("submit_key_with_space", "SubmitJob",
         pb.SubmitJobRequest(request=pb.GenerateRequest(prompt="a"), idempotency_key="a b"),
         C.INVALID_ARGUMENT, "printable ASCII characters without spaces"),
    Case("submit_key_non_ascii", "SubmitJob",
         pb.SubmitJobRequest(request=pb.GenerateRequest(prompt="a"), idempotency_key="clé"),
         C.INVALID_ARGUMENT, "idempotency_key"),
    Case("submit_no_request", "SubmitJob", pb.SubmitJobRequest(), C.INVALID_ARGUMENT,
         "prompt: must not be empty"),
    Case("submit_steps_0", "SubmitJob",
         pb.SubmitJobRequest(request=pb.GenerateRequest(prompt="a", steps=0)),
         C.INVALID_ARGUMENT, "steps: must be between 1 and 200"),
    Case("submit_guidance_nan", "SubmitJob",
         pb.SubmitJobRequest(request=pb.GenerateRequest(prompt="a", guidance=float("nan"))),
         C.INVALID_ARGUMENT, "guidance"),
    Case("listjobs_page_size_negative", "ListJobs", pb.ListJobsRequest(page_size=-1),
         C.INVALID_ARGUMENT, "page_size: must be between 1 and 500"),
    Case("listjobs_page_size_501", "ListJobs", pb.ListJobsRequest(page_size=501),
         C.INVALID_ARGUMENT, "got 501"),
    Case("listjobs_page_size_500_ok", "ListJobs", pb.ListJobsRequest(page_size=500), C.OK),
    Case("listjobs_token_not_base64", "ListJobs", pb.ListJobsRequest(page_token="!!!"),
         C.INVALID_ARGUMENT, "page_token: not a token"),
    Case("listjobs_token_huge_int", "ListJobs",
         pb.ListJobsRequest(page_token="OTk5OTk5OTk5OTk5OTk5OTk5OTk5OQ=="),  # 10**26 - 1
         C.INVALID_ARGUMENT, "page_token"),
    Case("listjobs_token_negative", "ListJobs", pb.ListJobsRequest(page_token="LTE="),
         C.INVALID_ARGUMENT, "page_token"),
    # not JobState values, on purpose (protobuf keeps unknown enum numbers)
    Case("listjobs_unknown_state", "ListJobs", pb.ListJobsRequest(state=42),  # type: ignore[arg-type]
         C.INVALID_ARGUMENT, "state: unknown JobState 42"),
    Case("listjobs_negative_state", "ListJobs", pb.ListJobsRequest(state=-1),  # type: ignore[arg-type]
         C.INVALID_ARGUMENT, "state: unknown JobState -1"),
    Case("huge_request_id_is_replaced", "GetInfo", pb.GetInfoRequest(), C.OK,
         metadata=(("x-request-id", "r" * 5000),)),
    Case("request_id_with_space_replaced", "GetInfo", pb.GetInfoRequest(), C.OK,
         metadata=(("x-request-id", "a b"),)),
    Case("unknown_method", "NoSuchMethod", b"", C.UNIMPLEMENTED, "Method not found"),
]  # fmt: skip

API_CASES = GENERATE_CASES + RAW_CASES + JOB_CASES
STREAMING = {"Generate", "WatchJob"}
RESPONSES: dict[str, type[Message]] = {
    "Generate": pb.GenerateEvent,
    "WatchJob": pb.GenerateEvent,
    "SubmitJob": pb.SubmitJobResponse,
    "GetJob": pb.GetJobResponse,
    "CancelJob": pb.CancelJobResponse,
    "DeleteJob": pb.DeleteJobResponse,
    "ListJobs": pb.ListJobsResponse,
    "GetInfo": pb.GetInfoResponse,
    "NoSuchMethod": pb.GetInfoResponse,
}


def call(channel: grpc.Channel, case: Case, timeout: float = 60.0) -> tuple[C, str, Any]:
    """Send ``case.request`` to ``case.rpc`` exactly as given (bytes stay bytes)."""
    path = f"/{SERVICE_NAME}/{case.rpc}"
    serialize: Callable[[Any], bytes] = (
        (lambda b: b) if isinstance(case.request, bytes) else (lambda m: m.SerializeToString())
    )
    kind = channel.unary_stream if case.rpc in STREAMING else channel.unary_unary
    method = kind(path, request_serializer=serialize,
                  response_deserializer=RESPONSES[case.rpc].FromString)  # fmt: skip
    return rpc_outcome(lambda: method(case.request, timeout=timeout, metadata=case.metadata))


# Garbage to the other services the server hosts: the same INVALID_ARGUMENT as cinetron.v1.
OTHER_SERVICES = [
    ("/grpc.health.v1.Health/Check", "unary_unary"),
    ("/grpc.health.v1.Health/Watch", "unary_stream"),
    ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "stream_stream"),
]


@pytest.mark.parametrize(("path", "kind"), OTHER_SERVICES, ids=[p for p, _ in OTHER_SERVICES])
def test_garbage_bytes_to_any_service_are_invalid_argument(
    api: ApiProcess, ledger, path: str, kind: str
) -> None:
    ledger("corpus", surface="api", name=f"garbage_to_{path}", expected="INVALID_ARGUMENT")
    method = getattr(api.channel, kind)(path, request_serializer=lambda b: b,
                                         response_deserializer=lambda b: b)  # fmt: skip
    garbage = b"\xff\xff\xff\xff"
    if kind == "stream_stream":
        code, details, _ = rpc_outcome(lambda: method(iter([garbage]), timeout=30))
    else:
        code, details, _ = rpc_outcome(lambda: method(garbage, timeout=30))
    assert code == C.INVALID_ARGUMENT, (code, details)
    assert "not a valid protobuf message" in details


@pytest.mark.parametrize("case", API_CASES, ids=[c.name for c in API_CASES])
def test_api_bad_input_gets_its_status_and_message(api: ApiProcess, ledger, case: Case) -> None:
    ledger("corpus", surface="api", name=case.name, expected=case.code.name)
    code, details, result = call(api.channel, case)
    assert code == case.code, f"{case.name}: {code.name} {details!r}"
    assert case.fragment in details, f"{case.name}: {details!r}"
    assert code not in (C.INTERNAL, C.UNKNOWN)
    assert len(details) <= 1000  # echoed fields are cut: the message travels in a header
    if code == C.OK and case.rpc == "Generate":
        assert result[-1].WhichOneof("event") == "completed", result[-1]
        assert result[-1].completed.video_size_bytes > 0


def test_duplicate_idempotency_key_replays_same_request_and_refuses_another(
    api: ApiProcess, ledger
) -> None:
    entry = ledger("corpus", surface="api", name="duplicate_idempotency_key", count=3)
    request = pb.GenerateRequest(prompt="a green square", steps=OK_STEPS, seed=11)
    key = f"dup-{time.monotonic_ns()}"
    first = api.stub.SubmitJob(pb.SubmitJobRequest(request=request, idempotency_key=key))
    again = api.stub.SubmitJob(pb.SubmitJobRequest(request=request, idempotency_key=key))
    assert not first.replayed and again.replayed and again.job.job_id == first.job.job_id
    other = pb.GenerateRequest(prompt="a green square", steps=OK_STEPS, seed=12)
    code, details, _ = rpc_outcome(
        lambda: api.stub.SubmitJob(pb.SubmitJobRequest(request=other, idempotency_key=key))
    )
    assert code == C.ALREADY_EXISTS and first.job.job_id in details
    events = list(api.stub.WatchJob(pb.WatchJobRequest(job_id=first.job.job_id), timeout=60))
    assert events[-1].WhichOneof("event") == "completed"
    entry["accepted"], entry["lost"] = 1, 0


def test_stream_abandoned_after_first_event_frees_the_slot(api: ApiProcess, ledger) -> None:
    entry = ledger("corpus", surface="api", name="truncated_stream_client_cancels", count=2)
    before = api.outcome("cancelled")
    call_ = api.stub.Generate(pb.GenerateRequest(prompt="a blue circle", steps=200), timeout=60)
    assert next(call_).WhichOneof("event") == "queued"
    call_.cancel()
    code, _, _ = rpc_outcome(lambda: list(call_))
    assert code == C.CANCELLED
    job = api.stub.SubmitJob(
        pb.SubmitJobRequest(request=pb.GenerateRequest(prompt="a blue circle", steps=2))
    ).job
    watch = api.stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), timeout=60)
    next(watch)
    watch.cancel()  # a watcher leaving does not stop the job
    api.wait_idle()
    assert api.outcome("cancelled") == before + 1
    assert api.stub.GetJob(pb.GetJobRequest(job_id=job.job_id)).job.state == pb.JOB_STATE_SUCCEEDED
    entry["accepted"], entry["lost"] = 2, 0


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def _literal(name: str, value: str) -> bytes:
    """HPACK literal header field without indexing, plain strings (lengths < 127)."""
    return b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


def test_http2_stream_cut_mid_message_admits_no_work(api: ApiProcess, ledger) -> None:
    """A gRPC body announcing 1000 bytes but carrying 12, then END_STREAM. grpc core never
    hands the half message to the service (it leaves the stream open until the client
    goes); what matters is that nothing is admitted, no event is sent and the server
    keeps serving once the connection is dropped."""
    ledger("corpus", surface="api", name="truncated_http2_message")
    headers = b"".join(
        _literal(k, v)
        for k, v in [
            (":method", "POST"), (":scheme", "http"),
            (":path", f"/{SERVICE_NAME}/Generate"), (":authority", api.address),
            ("content-type", "application/grpc"), ("te", "trailers"),
        ]
    )  # fmt: skip
    body = b"\x00" + struct.pack(">I", 1000) + b"\x0a\x0aa red circ"
    rpcs_before = api.log_text().count("event=rpc rpc=Generate")
    data_frames = 0
    with socket.create_connection(("127.0.0.1", api.port), timeout=0.5) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b""))
        s.sendall(_frame(1, 0x4, 1, headers) + _frame(0, 0x1, 1, body))  # END_HEADERS; END_STREAM
        buf, deadline = b"", time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break  # the server closed the connection: also fine
            buf += chunk
            while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                length, kind, flags = int.from_bytes(buf[:3], "big"), buf[3], buf[4]
                stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                if kind == 4 and not flags & 1:
                    s.sendall(_frame(4, 0x1, 0, b""))  # ack the server's SETTINGS
                data_frames += int(kind == 0 and stream == 1)
                buf = buf[9 + length :]
        assert api.load() == (0, 0)  # nothing admitted while the stream hangs open
    assert data_frames == 0, "the server answered a message it never fully received"
    assert api.proc.poll() is None and api.health() == SERVING
    assert api.log_text().count("event=rpc rpc=Generate") == rpcs_before
    assert good_request_succeeds(api.stub)


# -- Triton inputs ---------------------------------------------------------------------------


def _good(m: ModelManifest, batch: int = 2) -> dict[str, npt.NDArray[Any]]:
    L = m.text_length
    return {
        "latents": np.zeros((batch, *m.latent_shape), np.float32),
        "timestep": np.full((batch, 1), 500.0, np.float32),
        "text_embeds": np.zeros((batch, L, m.text_dim), np.float32),
        "text_mask": np.ones((batch, L), np.int64),
    }


def _triton_cases(m: ModelManifest) -> dict[str, tuple[str, dict[str, npt.NDArray[Any]], str]]:
    g = _good(m)
    c, t, h, w = m.latent_shape
    missing = {k: v for k, v in g.items() if k != "text_mask"}
    return {
        "latents_fp64": ("denoiser", {**g, "latents": g["latents"].astype(np.float64)},
                         "data-type is 'FP64', but model 'denoiser' expects 'FP32'"),
        "latents_fp16": ("denoiser", {**g, "latents": g["latents"].astype(np.float16)},
                         "expects 'FP32'"),
        "text_mask_fp32": ("denoiser", {**g, "text_mask": g["text_mask"].astype(np.float32)},
                           "'text_mask' data-type is 'FP32'"),
        "latents_rank_4": ("denoiser", {**g, "latents": g["latents"][:, 0]},
                           "unexpected shape for input 'latents'"),
        "latents_height_plus_1": ("denoiser",
                                  {**g, "latents": np.zeros((2, c, t, h + 1, w), np.float32)},
                                  "unexpected shape for input 'latents'"),
        "timestep_two_values": ("denoiser", {**g, "timestep": np.zeros((2, 2), np.float32)},
                                "unexpected shape for input 'timestep'"),
        "text_embeds_dim_minus_1": ("denoiser", {**g, "text_embeds": g["text_embeds"][..., 1:]},
                                    "unexpected shape for input 'text_embeds'"),
        "batch_over_max": ("denoiser", _good(m, m.max_denoiser_batch + 1),
                           f"batch-size must be <= {m.max_denoiser_batch}"),
        "batch_mismatch": ("denoiser", {**g, "timestep": np.zeros((3, 1), np.float32)},
                           "batch size does not match"),
        "batch_zero": ("denoiser", _good(m, 0), "'denoiser'"),
        "missing_input": ("denoiser", missing, "missing required input(s) ['text_mask']"),
        "unexpected_input": ("denoiser", {**g, "bogus": np.zeros((2, 1), np.float32)},
                             "expected 4 inputs but got 5"),
        "prompt_fp32": ("encode_prompt", {"PROMPT": np.zeros((1, 1), np.float32)},
                        "'PROMPT' data-type is 'FP32', but model 'encode_prompt' expects 'BYTES'"),
        "prompt_two_per_row": ("encode_prompt", {"PROMPT": np.array([[b"a", b"b"]], object)},
                               "unexpected shape for input 'PROMPT'"),
        "decode_wrong_channels": ("decode_video",
                                  {"latents": np.zeros((1, c - 1, t, h, w), np.float32)},
                                  "unexpected shape for input 'latents' for model 'decode_video'"),
    }  # fmt: skip


TRITON_CASES = [
    "latents_fp64", "latents_fp16", "text_mask_fp32", "latents_rank_4", "latents_height_plus_1",
    "timestep_two_values", "text_embeds_dim_minus_1", "batch_over_max", "batch_mismatch",
    "batch_zero", "missing_input", "unexpected_input", "prompt_fp32", "prompt_two_per_row",
    "decode_wrong_channels",
]  # fmt: skip


def _infer(client: grpcclient.InferenceServerClient, model: str, inputs: dict) -> Any:
    tensors = []
    for name, array in inputs.items():
        dtype = "BYTES" if array.dtype == object else np_to_triton_dtype(array.dtype)
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return client.infer(model, tensors, client_timeout=60)


@pytest.fixture(scope="module")
def triton_client(triton_server) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(triton_server.grpc_url)


@pytest.mark.parametrize("name", TRITON_CASES)
def test_triton_bad_input_is_invalid_argument(
    triton_client, model_repository: Path, ledger, name: str
) -> None:
    ledger("corpus", surface="triton", name=name, expected="INVALID_ARGUMENT")
    manifest = ModelManifest.load(model_repository)
    model, inputs, fragment = _triton_cases(manifest)[name]
    with pytest.raises(InferenceServerException) as info:
        _infer(triton_client, model, inputs)
    assert "INVALID_ARGUMENT" in str(info.value.status()), info.value
    assert fragment in info.value.message(), info.value.message()


def test_triton_unknown_model_and_version_are_not_found(triton_client, ledger) -> None:
    ledger("corpus", surface="triton", name="unknown_model_and_version", count=2)
    for model, version in [("no_such_model", ""), ("denoiser", "7")]:
        with pytest.raises(InferenceServerException) as info:
            triton_client.infer(model, [], model_version=version, client_timeout=30)
        assert "NOT_FOUND" in str(info.value.status()) and "is not found" in info.value.message()


# -- after the corpus ------------------------------------------------------------------------


def test_after_the_whole_corpus_the_api_and_triton_are_healthy(
    api: ApiProcess, triton_client, model_repository: Path, ledger
) -> None:
    ledger("corpus", surface="api", name="healthy_after_corpus")
    assert api.proc.poll() is None, api.log_tail()
    assert api.health() == SERVING
    assert good_request_succeeds(api.stub)
    errors = [ln for ln in api.log_text().splitlines() if "level=error" in ln]
    assert not errors, "\n".join(errors[:5])  # no INTERNAL, no traceback, for any case
    assert "code=INTERNAL" not in api.log_text() and "code=UNKNOWN" not in api.log_text()
    velocity = _infer(triton_client, "denoiser", _good(ModelManifest.load(model_repository)))
    assert velocity.as_numpy("velocity").shape[0] == 2


def test_inputs_that_decode_far_larger_than_their_bytes_are_refused_from_the_header(
    api: ApiProcess, ledger
) -> None:
    """A small MP4 of 240 frames at 640x360 or PNG of 6000x6000 once cost the API hundreds
    of MB and stalled its event loop before INVALID_ARGUMENT: sizes and frame counts are
    checked from the container's header now, before any pixel is decoded."""
    from rel_support import rss_bytes

    from cinetron.core.video import encode_mp4, encode_png

    ledger("corpus", surface="api", name="decompression_bombs", expected="INVALID_ARGUMENT")
    wide = encode_mp4(np.zeros((240, 360, 640, 3), np.uint8), 8)
    long = encode_mp4(np.zeros((1000, 64, 64, 3), np.uint8), 8)
    huge = encode_png(np.zeros((6000, 6000, 3), np.uint8))
    assert len(wide) < 32 << 10 and len(long) < 64 << 10 and len(huge) < 1 << 20
    cases = [
        (pb.GenerateRequest(prompt="a", input_video=wide), "input_video: is 640x360"),
        (pb.GenerateRequest(prompt="a", input_video=long), "input_video: has 1000 frames"),
        (pb.GenerateRequest(prompt="a", image=huge), "image: is 6000x6000"),
    ]
    generate = api.stub.Generate
    rpc_outcome(lambda: generate(pb.GenerateRequest(prompt="a red circle", steps=1), timeout=60))
    before = rss_bytes(api.pid)
    for request, fragment in cases:
        code, details, _ = rpc_outcome(lambda r=request: generate(r, timeout=60))  # type: ignore[misc]
        assert code == C.INVALID_ARGUMENT and fragment in details, (code, details)
        code, details, _ = rpc_outcome(
            lambda r=request: api.stub.SubmitJob(pb.SubmitJobRequest(request=r), timeout=60)  # type: ignore[misc]
        )
        assert code == C.INVALID_ARGUMENT and fragment in details, (code, details)
    grown = (rss_bytes(api.pid) - before) / 2**20
    print(f"API RSS grew {grown:.1f} MiB over the three inputs")
    assert grown < 40, f"decoding was not bounded: RSS grew {grown:.0f} MiB"
    assert api.health() == SERVING
