"""Security checks on real processes: bearer auth on every RPC (over TLS with a generated
certificate), the health/reflection policy, no token in the logs, only loopback sockets
for tritonserver and serve-api in the default config, and a dependency audit.

Policy (src/cinetron/api/auth.py): with auth on, every cinetron.v1 RPC *and* gRPC reflection need
``authorization: Bearer <token>``; only grpc.health.v1 is exempt, because Kubernetes
probes carry no credentials and health reveals nothing but SERVING/NOT_SERVING.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import secrets
import socket
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from rel_support import SERVING, ApiProcess

from bench.reliability_report import run_pip_audit
from cinetron.api_client import SERVICE_NAME, pb
from cinetron.tools.tritonserver import TritonServer

C: TypeAlias = grpc.StatusCode  # an alias, so annotations may use it
ROOT = Path(__file__).resolve().parents[2]
METHODS = pb.DESCRIPTOR.services_by_name["VideoService"].methods
EMPTY_REQUESTS = {
    "Generate": pb.GenerateRequest(prompt="a red circle", steps=1),
    "SubmitJob": pb.SubmitJobRequest(request=pb.GenerateRequest(prompt="a red circle", steps=1)),
    "GetJob": pb.GetJobRequest(job_id="nope"),
    "WatchJob": pb.WatchJobRequest(job_id="nope"),
    "CancelJob": pb.CancelJobRequest(job_id="nope"),
    "ListJobs": pb.ListJobsRequest(),
    "DeleteJob": pb.DeleteJobRequest(job_id="nope"),
    "ListModels": pb.ListModelsRequest(),
    "GetInfo": pb.GetInfoRequest(),
}


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """The certificate helper of tests/test_api.py (one place to maintain it)."""
    spec = importlib.util.spec_from_file_location("cinetron_tests_api", ROOT / "tests/test_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._self_signed(tmp_path)  # type: ignore[no-any-return]


def call_every_rpc(channel: grpc.Channel, metadata: list[tuple[str, str]]) -> dict[str, C]:
    """Each VideoService method and reflection, once: method → status code."""
    codes = {}
    for method in METHODS:
        path = f"/{SERVICE_NAME}/{method.name}"
        response = pb.GenerateEvent if method.server_streaming else None
        kind = channel.unary_stream if method.server_streaming else channel.unary_unary
        fn = kind(path, request_serializer=lambda m: m.SerializeToString(),
                  response_deserializer=(response or _Any).FromString)  # fmt: skip
        try:
            result = fn(EMPTY_REQUESTS[method.name], metadata=metadata, timeout=60)
            if method.server_streaming:
                list(result)
            codes[method.name] = C.OK
        except grpc.RpcError as e:
            codes[method.name] = e.code()
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    try:
        list(stub.ServerReflectionInfo(iter([ask]), metadata=metadata, timeout=30))
        codes["ServerReflectionInfo"] = C.OK
    except grpc.RpcError as e:
        codes["ServerReflectionInfo"] = e.code()
    return codes


class _Any:
    @staticmethod
    def FromString(data: bytes) -> bytes:  # protobuf's name
        return data


@pytest.fixture
def secured(
    triton_server: TritonServer, spawn_api, tmp_path: Path
) -> tuple[ApiProcess, grpc.Channel, str]:
    token = "tok-" + secrets.token_urlsafe(24)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# API tokens\n{token}\n")
    cert, key = self_signed(tmp_path)
    env = {"CINETRON_AUTH_TOKENS_FILE": str(tokens), "CINETRON_TLS_CERT": str(cert),
           "CINETRON_TLS_KEY": str(key), "CINETRON_TRITON_URL": triton_server.grpc_url}  # fmt: skip
    api = spawn_api(env=env, wait=False)
    creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    channel = grpc.secure_channel(api.address, creds)
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(600):
        try:
            ask = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
            if health.Check(ask, timeout=2).status == SERVING:  # no token needed
                break
        except grpc.RpcError:
            pass
        assert api.proc.poll() is None, api.log_tail()
        __import__("time").sleep(0.2)
    return api, channel, token


def test_auth_guards_every_rpc_and_reflection_over_tls(secured, ledger) -> None:
    api, channel, token = secured
    entry = ledger("security", name="auth on every RPC + reflection, over TLS", count=3)
    for metadata in ([], [("authorization", "Bearer wrong-" + token)], [("authorization", token)]):
        codes = call_every_rpc(channel, metadata)
        assert set(codes) == {m.name for m in METHODS} | {"ServerReflectionInfo"}
        assert all(c == C.UNAUTHENTICATED for c in codes.values()), codes
    good = call_every_rpc(channel, [("authorization", f"Bearer {token}")])
    expected = {name: C.OK for name in good} | {
        "GetJob": C.NOT_FOUND, "WatchJob": C.NOT_FOUND, "CancelJob": C.NOT_FOUND,
        "DeleteJob": C.NOT_FOUND,
    }  # fmt: skip
    assert good == expected
    entry["rpcs"] = len(good)
    # TLS: the port speaks only TLS; plaintext gets nowhere.
    plain = grpc.insecure_channel(api.address)
    with pytest.raises(grpc.RpcError) as info:
        health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert info.value.code() == C.UNAVAILABLE


def test_a_tokens_file_that_stops_decoding_keeps_the_last_good_set(
    secured, ledger, tmp_path: Path
) -> None:
    api, channel, token = secured
    ledger("security", name="tokens file not UTF-8: last good set kept")
    tokens = tmp_path / "tokens"
    tokens.write_bytes(b"# rotated\n\xff" + b"tok-new\n")  # one byte that is not UTF-8
    good = call_every_rpc(channel, [("authorization", f"Bearer {token}")])
    assert good["GetInfo"] == C.OK and C.UNKNOWN not in good.values(), good
    bad = call_every_rpc(channel, [("authorization", "Bearer tok-new")])
    assert set(bad.values()) == {C.UNAUTHENTICATED}, bad
    log = api.log_text()
    assert "event=auth_tokens_reload_failed" in log and "level=warning" in log
    assert log.count("event=auth_tokens_reload_failed") == 1  # once, not per call
    tokens.write_text(f"{token}\ntok-new\n")  # fixed: the new set takes over
    __import__("os").utime(tokens, (1e9, 2e9))  # a new mtime even within one tick
    assert call_every_rpc(channel, [("authorization", "Bearer tok-new")])["GetInfo"] == C.OK


def test_no_token_in_the_logs(secured, ledger) -> None:
    api, channel, token = secured
    ledger("security", name="no secrets in logs")
    call_every_rpc(channel, [("authorization", f"Bearer {token}")])
    call_every_rpc(channel, [("authorization", f"Bearer {token}x")])  # a near miss, refused
    text = api.log_text()
    assert "event=unauthenticated" in text and "event=rpc " in text  # the log is not empty
    assert token not in text and token[4:] not in text
    assert "authorization" not in text.lower()


def _listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets ``pid`` listens on, from /proc/net/tcp{,6}."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A = LISTEN
                continue
            hex_addr, hex_port = cols[1].split(":")
            raw = bytes.fromhex(hex_addr)
            # /proc prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((socket.inet_ntop(family, raw), int(hex_port, 16)))
    return found


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is loopback too
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def _external_address() -> str | None:
    """This machine's address on its default route, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_triton_and_the_api_listen_on_loopback_only(
    triton_server: TritonServer, api: ApiProcess, ledger
) -> None:
    entry = ledger("security", name="Triton and API bound to loopback only", count=2)
    for pid, what in ((triton_server.pid, "tritonserver"), (api.pid, "serve-api")):
        sockets = _listening(pid)
        assert sockets, f"{what} listens on nothing?"
        outside = [s for s in sockets if not _is_loopback(s[0])]
        assert not outside, f"{what} listens beyond loopback: {outside}"
        entry[what] = sorted(p for _, p in sockets)
    external = _external_address()
    if external is not None:  # the same ports through the machine's own address: refused
        port = int(triton_server.grpc_url.rsplit(":", 1)[1])
        with pytest.raises(OSError), socket.create_connection((external, port), timeout=2):
            pass
        entry["refused_on"] = external


def test_dependency_audit_has_no_fixable_advisory_in_our_pins(ledger, note) -> None:
    """pip-audit over the installed environment. Advisories in packages we pin directly
    that have a fixed release fail; the rest (transitive, or no fix yet) are printed."""
    entry = ledger("security", name="pip-audit")
    audit: dict[str, Any] = run_pip_audit()
    entry["audit"] = {k: v for k, v in audit.items() if k != "lines"}
    for line in audit["lines"]:
        note(line)
    assert not audit["fixable_in_our_pins"], audit["fixable_in_our_pins"]
