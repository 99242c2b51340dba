"""API server settings: environment variables, each overridable by a command-line flag.

The environment names are a contract with ``deploy/`` (Kubernetes manifests):
CINETRON_API_ADDRESS, CINETRON_TRITON_URL, CINETRON_DATA_DIR, CINETRON_AUTH_TOKENS_FILE,
CINETRON_TLS_CERT, CINETRON_TLS_KEY, CINETRON_METRICS_PORT, CINETRON_MAX_QUEUE,
CINETRON_MAX_CONCURRENCY, CINETRON_HTTP_ADDRESS, and for scale-out (docs/scale-out.md)
CINETRON_DATABASE_URL (or CINETRON_DATABASE_URL_FILE), CINETRON_VIDEO_URL,
CINETRON_JOB_LEASE_SECONDS, CINETRON_MAX_QUEUED_JOBS, CINETRON_JOB_TTL,
CINETRON_VIDEO_URL_TTL (S3 credentials: boto3's own AWS_* variables). CINETRON_AUTH_TOKENS
(comma-separated) is an optional extra.
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
    # Scale-out stores: empty = the embedded SQLite file and the local videos folder.
    database_url: str = ""  # postgresql://user:password@host:port/db
    video_url: str = ""  # s3://bucket/prefix (endpoint and credentials: AWS_* variables)
    job_lease_s: float = 30.0  # a replica that stops renewing loses its jobs after this
    job_poll_s: float = 1.0  # claim and watch polling, besides LISTEN/NOTIFY
    max_queued_jobs: int = 1000  # shared queue bound (PostgreSQL); SQLite uses max_queue
    job_ttl_s: float = 0.0  # finished jobs (and videos) are deleted after this; 0 = keep
    video_url_ttl_s: int = 3600  # lifetime of the presigned links GetJob hands out

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


_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(name: str, text: str, lo: float, hi: float) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``12h`` or ``7d``."""
    t = text.strip().lower()
    unit = _DURATION.get(t[-1:], 0)
    try:
        value = float(t[:-1] if unit else t) * (unit or 1)
    except ValueError:
        raise SystemExit(
            f"{name} must be seconds or a duration like 90s, 15m, 12h, 7d, got {text!r}"
        ) from None
    if not lo <= value <= hi:
        raise SystemExit(f"{name} must be between {lo:g} and {hi:g} seconds, got {value:g}")
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
    g(
        "--database-url",
        default=env.get("CINETRON_DATABASE_URL", ""),
        help="PostgreSQL for jobs shared by any number of replicas, postgresql://USER:PASSWORD"
        "@HOST:PORT/DB; unset: SQLite under --data-dir, one replica [CINETRON_DATABASE_URL]",
    )
    g(
        "--database-url-file",
        type=Path,
        default=env.get("CINETRON_DATABASE_URL_FILE") or None,
        help="read --database-url from this file (a mounted Secret) [CINETRON_DATABASE_URL_FILE]",
    )
    g(
        "--video-url",
        default=env.get("CINETRON_VIDEO_URL", ""),
        help="S3-compatible storage for job videos, s3://BUCKET/PREFIX (endpoint and "
        "credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
        "AWS_DEFAULT_REGION); unset: --data-dir/videos [CINETRON_VIDEO_URL]",
    )
    g(
        "--job-lease",
        default=env.get("CINETRON_JOB_LEASE_SECONDS", str(d.job_lease_s)),
        help="seconds a replica holds a job without renewing before another replica takes "
        "it over (PostgreSQL) [CINETRON_JOB_LEASE_SECONDS, %(default)s]",
    )
    g(
        "--max-queued-jobs",
        default=env.get("CINETRON_MAX_QUEUED_JOBS", str(d.max_queued_jobs)),
        help="jobs the shared queue holds before SubmitJob answers RESOURCE_EXHAUSTED "
        "(PostgreSQL) [CINETRON_MAX_QUEUED_JOBS, %(default)s]",
    )
    g(
        "--job-ttl",
        default=env.get("CINETRON_JOB_TTL", "0"),
        help="delete finished jobs and their videos this long after they ended (90s, 12h, "
        "7d); 0 keeps them until DeleteJob [CINETRON_JOB_TTL, %(default)s]",
    )
    g(
        "--video-url-ttl",
        default=env.get("CINETRON_VIDEO_URL_TTL", str(d.video_url_ttl_s)),
        help="lifetime of the presigned video links in GetJob (S3) [CINETRON_VIDEO_URL_TTL, "
        "%(default)s]",
    )
    g("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def from_args(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> ServerConfig:
    env = os.environ if env is None else env
    a = parser(env).parse_args(argv)
    if (a.tls_cert is None) != (a.tls_key is None):
        raise SystemExit("TLS needs both --tls-cert and --tls-key (CINETRON_TLS_CERT/_KEY)")
    tokens = tuple(t.strip() for t in env.get("CINETRON_AUTH_TOKENS", "").split(",") if t.strip())
    database_url = a.database_url.strip()
    if a.database_url_file is not None:
        try:
            database_url = a.database_url_file.read_text().strip()
        except OSError as e:
            raise SystemExit(
                f"--database-url-file {a.database_url_file}: cannot read it ({e.strerror}); "
                "mount the Secret that holds the DSN there, or unset CINETRON_DATABASE_URL_FILE"
            ) from None
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
        database_url=database_url,
        video_url=a.video_url.strip(),
        job_lease_s=_duration("--job-lease", str(a.job_lease), 1, 3600),
        max_queued_jobs=_int("--max-queued-jobs", str(a.max_queued_jobs), 1, 10_000_000),
        job_ttl_s=_duration("--job-ttl", str(a.job_ttl), 0, 10 * 365 * 86400),
        video_url_ttl_s=int(_duration("--video-url-ttl", str(a.video_url_ttl), 1, 7 * 86400)),
        shutdown_grace_s=a.shutdown_grace,
        log_level=a.log_level,
    )
