"""Real stores for the scale-out tests: a PostgreSQL server, an S3-compatible emulator and a
TCP proxy that can cut the way to either.

- ``PostgresServer``: ``initdb`` + ``pg_ctl`` of the PostgreSQL on this machine (PATH or
  /usr/lib/postgresql/*/bin), a temporary cluster on a free loopback port, run as the
  ``postgres`` user when we are root (initdb refuses root). Restartable in place.
- ``S3Emulator``: moto's server mode (``moto_server``, from the ``dev`` extra), a real HTTP
  endpoint that speaks the S3 protocol. It is an emulator of S3, not S3: the tests say so.
- ``TcpProxy``: forwards a loopback port to another; ``down()`` refuses and cuts
  connections (an endpoint that went away), ``up()`` restores it.

A test that needs one of these and cannot start it fails with what to install; nothing
here skips.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cinetron.tools.tritonserver import free_port

INSTALL_POSTGRES = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH nor under "
    "/usr/lib/postgresql/*/bin. The scale-out tests need a real PostgreSQL >= 13: install "
    "it (Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql@15`) "
    "or put its bin folder on PATH"
)
INSTALL_MOTO = (
    "moto_server (the S3 emulator) is not installed in this environment: run `make install` "
    "(the dev extra brings moto[server])"
)


def postgres_bin() -> Path:
    """The folder holding initdb and pg_ctl, or the test fails saying what to install."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "pg_ctl").exists() and (Path(folder) / "initdb").exists():
            return Path(folder)
    pytest.fail(INSTALL_POSTGRES)


class PostgresServer:
    """A throw-away PostgreSQL cluster on 127.0.0.1:``port`` (trust auth, loopback only)."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.port = free_port()
        # Not under pytest's tmp dir: that is root's 0700 folder, which the postgres user
        # cannot enter.
        self.dir = Path(tempfile.mkdtemp(prefix="cinetron-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail(
                    "running as root, and initdb refuses root, but there is no `postgres` "
                    "user to run it as: create one (`useradd -r postgres`) or run as non-root"
                )
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")  # fmt: skip
        self.start()

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if check and done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise AssertionError(f"{tool} failed: {done.stdout}{done.stderr}\n{tail}")
        return done

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
            "-c max_connections=200 -c shared_buffers=32MB"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log),
                  "-w", "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop",
                  check=False)  # fmt: skip

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.dsn(database), autocommit=True) as conn:
            cur = conn.execute(statement.encode())
            return cur.fetchall() if cur.description else []

    def new_database(self) -> str:
        """A fresh empty database's DSN (each test gets its own jobs table)."""
        name = f"cinetron_{uuid.uuid4().hex[:12]}"
        self.sql(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class S3Emulator:
    """moto's S3 server on 127.0.0.1:``port``; ``env`` is what boto3 needs to reach it."""

    def __init__(self, log: Path) -> None:
        server = Path(sys.executable).parent / "moto_server"
        if not server.exists():
            pytest.fail(INSTALL_MOTO)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(server), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.endpoint, timeout=2).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text()[-2000:]
                    raise AssertionError(f"moto_server did not start: {tail}") from None
                time.sleep(0.2)

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": endpoint or self.endpoint,
            "AWS_ACCESS_KEY_ID": "cinetron-test",
            "AWS_SECRET_ACCESS_KEY": "cinetron-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self) -> Any:
        import boto3

        env = self.env()
        return boto3.session.Session().client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )

    def new_bucket(self) -> str:
        name = f"cinetron-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        listed = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for o in listed.get("Contents", []))

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class TcpProxy:
    """127.0.0.1:``port`` → ``target_port``, byte for byte, until ``down()``."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.up()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and reset the open ones."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                    conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)


# --- fixtures (exposed by tests/conftest.py) -------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def s3_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Emulator]:
    emulator = S3Emulator(tmp_path_factory.mktemp("s3") / "moto.log")
    try:
        yield emulator
    finally:
        emulator.close()


class Cluster:
    """``serve-api`` replicas sharing one PostgreSQL database and one S3 bucket (of the
    emulator, or of a proxy in front of it), in front of one tritonserver."""

    def __init__(
        self,
        tmp: Path,
        triton_url: str,
        dsn: str,
        s3: S3Emulator,
        bucket: str,
        endpoint: str | None = None,
        lease_s: float = 3.0,
    ) -> None:
        self.tmp, self.triton_url, self.dsn, self.s3 = tmp, triton_url, dsn, s3
        self.bucket = bucket
        self.video_url = f"s3://{bucket}/videos"
        self.env = s3.env(endpoint)
        self.lease_s = lease_s
        self.replicas: list[Any] = []
        tmp.mkdir(parents=True, exist_ok=True)

    def start(self, n: int, *extra: str, wait: bool = True) -> list[Any]:
        from support import ApiProcess

        started = []
        for _ in range(n):
            i = len(self.replicas)
            args = ["--triton-url", self.triton_url, "--database-url", self.dsn, "--video-url",
                    self.video_url, "--job-lease", str(self.lease_s), *extra]  # fmt: skip
            p = ApiProcess(self.tmp / f"replica{i}", self.tmp / f"replica{i}.log", args, self.env)
            self.replicas.append(p)
            started.append(p)
        if wait:
            for p in started:
                p.wait_serving()
        return started

    def logs(self) -> str:
        return "\n".join(p.log_text() for p in self.replicas)

    def stop(self) -> None:
        import signal

        for p in self.replicas:
            if p.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGCONT)  # a test may have left it stopped
            p.stop(signal.SIGKILL)
