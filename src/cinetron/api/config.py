"""API server settings: environment variables, each overridable by a command-line flag.

The environment names are a contract with ``deploy/`` (Kubernetes manifests):
CINETRON_API_ADDRESS, CINETRON_TRITON_URL, CINETRON_DATA_DIR, CINETRON_AUTH_TOKENS_FILE,
CINETRON_TLS_CERT, CINETRON_TLS_KEY, CINETRON_METRICS_PORT, CINETRON_MAX_QUEUE,
CINETRON_MAX_CONCURRENCY, CINETRON_HTTP_ADDRESS. CINETRON_AUTH_TOKENS (comma-separated) is
an optional extra.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_RECEIVE_BYTES = 1 << 20  # requests are a prompt and a few numbers
DEFAULT_MAX_SEND_BYTES = 64 << 20  # a completed event carries the whole MP4


@dataclass(frozen=True)
class ServerConfig:
    address: str = "127.0.0.1:50051"
    # The HTTP side (OpenAI-compatible /v1/videos and the web preview page); "" = off.
    http_address: str = "127.0.0.1:8080"
    triton_url: str = "127.0.0.1:8001"
    local: str | None = None  # "torch" | "onnx": run the networks in-process, no Triton
    model_repository: Path = Path("model_repository")  # for --local onnx
    data_dir: Path = Path(".cinetron-data")
    auth_tokens_file: Path | None = None
    auth_tokens: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    metrics_port: int = 9464  # 0 turns the metrics endpoint off
    max_queue: int = 16
    max_concurrency: int = 4
    max_receive_bytes: int = DEFAULT_MAX_RECEIVE_BYTES
    max_send_bytes: int = DEFAULT_MAX_SEND_BYTES
    resume_jobs: bool = True  # on restart: re-run unfinished jobs, else mark them FAILED
    max_job_attempts: int = 3
    readiness_interval_s: float = 2.0
    shutdown_grace_s: float = 30.0
    log_level: str = "info"

    @property
    def auth_enabled(self) -> bool:
        return self.auth_tokens_file is not None or bool(self.auth_tokens)

    @property
    def host(self) -> str:
        host = self.address.rsplit(":", 1)[0]
        return host.strip("[]") or "0.0.0.0"

    @property
    def http_host_port(self) -> tuple[str, int] | None:
        """``(host, port)`` the HTTP side binds, or ``None`` when it is off."""
        if not self.http_address:
            return None
        host, _, port = self.http_address.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)


def _int(name: str, text: str, lo: int, hi: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SystemExit(f"{name} must be an integer between {lo} and {hi}, got {text!r}") from None
    if not lo <= value <= hi:
        raise SystemExit(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _http_address(text: str) -> str:
    """``host:port`` (port 0 = any free port), or "" for off (given as ``0`` or empty)."""
    text = text.strip()
    if text in ("", "0"):
        return ""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SystemExit(
            f"--http-address must be HOST:PORT (e.g. 127.0.0.1:8080), or 0 / empty to turn "
            f"the HTTP API off, got {text!r}"
        )
    return text


def parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if env is None else env
    d = ServerConfig()
    p = argparse.ArgumentParser(
        prog="cinetron serve-api",
        description="Serve the public gRPC API (cinetron.v1) in front of Triton.",
    )
    g = p.add_argument
    g(
        "--address",
        default=env.get("CINETRON_API_ADDRESS", d.address),
        help="host:port to listen on [CINETRON_API_ADDRESS, %(default)s]",
    )
    g(
        "--http-address",
        default=env.get("CINETRON_HTTP_ADDRESS", d.http_address),
        help="host:port of the HTTP API (/v1/videos) and the web preview page; 0 or empty "
        "turns it off [CINETRON_HTTP_ADDRESS, %(default)s]",
    )
    g(
        "--triton-url",
        default=env.get("CINETRON_TRITON_URL", d.triton_url),
        help="Triton gRPC host:port [CINETRON_TRITON_URL, %(default)s]",
    )
    g(
        "--local",
        choices=["torch", "onnx"],
        default=None,
        help="run the networks in-process instead of calling Triton (development)",
    )
    g(
        "--model-repository",
        type=Path,
        default=d.model_repository,
        help="model repository for --local onnx [%(default)s]",
    )
    g(
        "--data-dir",
        type=Path,
        default=Path(env.get("CINETRON_DATA_DIR", str(d.data_dir))),
        help="jobs database and outputs [CINETRON_DATA_DIR, %(default)s]",
    )
    g(
        "--auth-tokens-file",
        type=Path,
        default=env.get("CINETRON_AUTH_TOKENS_FILE") or None,
        help="bearer tokens, one per line; auth is off when unset [CINETRON_AUTH_TOKENS_FILE]",
    )
    g(
        "--tls-cert",
        type=Path,
        default=env.get("CINETRON_TLS_CERT") or None,
        help="PEM server certificate; with --tls-key turns TLS on [CINETRON_TLS_CERT]",
    )
    g(
        "--tls-key",
        type=Path,
        default=env.get("CINETRON_TLS_KEY") or None,
        help="PEM private key [CINETRON_TLS_KEY]",
    )
    g(
        "--metrics-port",
        default=env.get("CINETRON_METRICS_PORT", str(d.metrics_port)),
        help="Prometheus /metrics port, 0 = off [CINETRON_METRICS_PORT, %(default)s]",
    )
    g(
        "--max-queue",
        default=env.get("CINETRON_MAX_QUEUE", str(d.max_queue)),
        help="requests that may wait for a slot [CINETRON_MAX_QUEUE, %(default)s]",
    )
    g(
        "--max-concurrency",
        default=env.get("CINETRON_MAX_CONCURRENCY", str(d.max_concurrency)),
        help="generations in flight [CINETRON_MAX_CONCURRENCY, %(default)s]",
    )
    g(
        "--shutdown-grace",
        type=float,
        default=d.shutdown_grace_s,
        help="seconds running calls get to finish on SIGTERM [%(default)s]",
    )
    g(
        "--no-resume-jobs",
        action="store_true",
        help="on start, mark unfinished jobs FAILED instead of running them again",
    )
    g("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def from_args(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> ServerConfig:
    env = os.environ if env is None else env
    a = parser(env).parse_args(argv)
    if (a.tls_cert is None) != (a.tls_key is None):
        raise SystemExit("TLS needs both --tls-cert and --tls-key (CINETRON_TLS_CERT/_KEY)")
    tokens = tuple(t.strip() for t in env.get("CINETRON_AUTH_TOKENS", "").split(",") if t.strip())
    return ServerConfig(
        address=a.address,
        http_address=_http_address(a.http_address),
        triton_url=a.triton_url,
        local=a.local,
        model_repository=a.model_repository,
        data_dir=a.data_dir,
        auth_tokens_file=a.auth_tokens_file,
        auth_tokens=tokens,
        tls_cert=a.tls_cert,
        tls_key=a.tls_key,
        metrics_port=_int("--metrics-port", str(a.metrics_port), 0, 65535),
        max_queue=_int("--max-queue", str(a.max_queue), 0, 100_000),
        max_concurrency=_int("--max-concurrency", str(a.max_concurrency), 1, 1024),
        resume_jobs=not a.no_resume_jobs,
        shutdown_grace_s=a.shutdown_grace,
        log_level=a.log_level,
    )
