"""Property-based fuzzing of GenerateRequest and SubmitJobRequest against a real serve-api
process: whatever the fields hold, the answer is OK or a documented client-side status
(INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ALREADY_EXISTS) — never INTERNAL or UNKNOWN —
and the process stays up. Accepted work is cancelled at once, so examples stay cheap.
"""

from __future__ import annotations

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rel_support import SERVING, ApiProcess, rpc_outcome

from cinetron.api_client import pb
from cinetron.core.schedulers import SCHEDULERS

EXAMPLES = 60
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # the queue is full (or the message is too big)
    grpc.StatusCode.ALREADY_EXISTS,  # an idempotency key drawn twice with another request
    grpc.StatusCode.CANCELLED,  # we cancel accepted streams ourselves
}
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure reproduces
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

text = st.one_of(
    st.sampled_from(["a red circle", "blue square moving up", "\u202eRTL", "🎥 a cat"]),
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), min_size=1990, max_size=2010),
    st.sampled_from(["", " ", "\x00", "\u202e", "euler", "shapes"]),
)
# Each numeric strategy draws inside the valid range half the time, so whole requests
# are valid often enough to exercise admission too, not only validation.
int32 = st.one_of(st.integers(1, 200), st.integers(-(2**31), 2**31 - 1), st.integers(-2, 202))
int64 = st.one_of(st.integers(0, 2**63 - 1), st.integers(-(2**63), 2**63 - 1))
double = st.one_of(
    st.floats(0.1, 20), st.floats(allow_nan=True, allow_infinity=True), st.floats(-1, 31)
)
schedulers = st.one_of(st.sampled_from(sorted(SCHEDULERS)), text)


@st.composite
def generate_requests(draw: st.DrawFn) -> pb.GenerateRequest:
    msg = pb.GenerateRequest(prompt=draw(text), model=draw(st.sampled_from(["", "", "x"])))
    optional = [("negative_prompt", text), ("seed", int64), ("steps", int32),
                ("guidance", double), ("scheduler", schedulers), ("shift", double)]  # fmt: skip
    for name, strategy in optional:
        if draw(st.booleans()):
            setattr(msg, name, draw(strategy))
    return msg


def _check(api: ApiProcess, code: grpc.StatusCode, details: str, counts: dict[str, int]) -> None:
    counts[code.name] = counts.get(code.name, 0) + 1
    assert code in ALLOWED, f"{code.name}: {details}"
    assert api.proc.poll() is None, api.log_tail()


def test_fuzzed_generate_requests_never_crash_the_server(api: ApiProcess, ledger) -> None:
    entry = ledger("fuzz", name="Generate", count=EXAMPLES)
    counts: dict[str, int] = {}

    @FUZZ
    @given(generate_requests())
    def one(msg: pb.GenerateRequest) -> None:
        call = api.stub.Generate(msg, timeout=30)
        code, details, _ = rpc_outcome(lambda: next(call))  # Queued, or the refusal
        if code == grpc.StatusCode.OK:
            call.cancel()
        _check(api, code, details, counts)

    one()
    entry["codes"] = counts
    api.wait_idle()
    assert api.health() == SERVING


def test_fuzzed_job_submissions_never_crash_the_server(api: ApiProcess, ledger) -> None:
    entry = ledger("fuzz", name="SubmitJob", count=EXAMPLES)
    counts: dict[str, int] = {}
    keys = st.one_of(st.just(""), st.text(max_size=140), st.sampled_from(["k1", "k2", "k" * 128]))

    @FUZZ
    @given(generate_requests(), keys)
    def one(msg: pb.GenerateRequest, key: str) -> None:
        code, details, reply = rpc_outcome(
            lambda: api.stub.SubmitJob(pb.SubmitJobRequest(request=msg, idempotency_key=key))
        )
        if code == grpc.StatusCode.OK:
            api.stub.CancelJob(pb.CancelJobRequest(job_id=reply.job.job_id))
        _check(api, code, details, counts)

    one()
    entry["codes"] = counts
    api.wait_idle(timeout=60)
    assert api.health() == SERVING
