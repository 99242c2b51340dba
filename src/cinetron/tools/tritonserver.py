"""Run the ``tritonserver`` binary bundled in ``nvidia-pytriton`` on a model repository.

``TritonServer`` is a context manager used by tests, benchmarks and ``make demo``;
``main`` is ``cinetron serve-triton``. The recipe (measured, see TRITON_CPU.md):

1. lay the server tree out once from the installed wheel into ``.triton/``: ``bin``,
   ``backends``, ``caches`` and the Python-backend stub matching this interpreter;
2. ``LD_LIBRARY_PATH`` = this interpreter's libpython dir + ``nvidia_pytriton.libs``
   (the server's own shared libraries); ``PATH`` = this venv's ``bin`` first, because the
   stub's embedded Python finds its site-packages through the first ``python3`` on PATH;
3. start the binary itself (no shell in between), so ``.pid`` is tritonserver and
   SIGTERM stops it and its stub processes. Every endpoint binds to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO

HOST = "127.0.0.1"
STUB_NUMPY = "numpy==1.26.4"  # the last numpy 1.x; see stub_env()
TAIL_LINES = 60
DEFAULT_TREE = Path(
    os.environ.get("CINETRON_TRITON_TREE", Path(__file__).resolve().parents[3] / ".triton")
)

# Logged on every start on a machine without a GPU; the models load and work anyway.
HARMLESS = (
    "CudaDriverHelper has not been initialized",
    "CUDA driver version is insufficient",
    "unable to get CUDA device count",
    "Unable to allocate pinned system memory",
    "failed to get number of CUDA devices",
)


STUB_BINARY = b"triton_python_backend_stub"
SHM_DIR = Path("/dev/shm")
SHM_REGION_PREFIX = "triton_python_backend_shm_region_"  # the Python backend's region names


def _stubs_of(server_pid: int) -> list[tuple[int, int, str]]:
    """(pid, current parent pid, shared-memory region) of every Python-backend stub that
    tritonserver ``server_pid`` started. A stub's argv is ``stub model.py <region> <size>
    <growth> <server pid> ...``; Linux ``/proc`` only (elsewhere: none found)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if len(argv) > 5 and argv[0].endswith(STUB_BINARY) and argv[5] == str(server_pid).encode():
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            found.append((int(proc.name), ppid, argv[2].decode(errors="replace")))
    return found


def reap_orphaned_stubs(server_pid: int, timeout: float = 5.0) -> int:
    """Kill the stubs that outlived tritonserver ``server_pid`` and unlink their
    shared-memory regions; returns how many there were.

    A server killed with SIGKILL (the OOM killer, a crash test) cannot stop its stubs,
    and a stub that was in the middle of a request then waits on its IPC forever,
    holding its onnxruntime session (~100 MB) and a 4 MB region in /dev/shm.
    """
    orphans = [(pid, region) for pid, ppid, region in _stubs_of(server_pid) if ppid != server_pid]
    for pid, _ in orphans:
        with contextlib.suppress(ProcessLookupError):  # it may have exited meanwhile
            os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() for pid, _ in orphans) and time.monotonic() < end:
        time.sleep(0.05)
    for _, region in orphans:
        if region.startswith(SHM_REGION_PREFIX):
            (SHM_DIR / region).unlink(missing_ok=True)
    return len(orphans)


class TritonStartError(RuntimeError):
    """tritonserver exited or did not become ready; the message ends with its log tail."""


def _pytriton_dir() -> Path:
    # Located, not imported: pytriton's Python API needs deps we install without (--no-deps).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonStartError(
            "the tritonserver binary comes from the nvidia-pytriton wheel; "
            "run `make install` (it installs nvidia-pytriton==0.7.0 --no-deps)"
        )
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "tritonserver"


def _libs_dir() -> Path:
    return _pytriton_dir().parent.parent / "nvidia_pytriton.libs"


def server_tree(tree: Path = DEFAULT_TREE) -> Path:
    """Lay out ``bin/``, ``backends/`` (with the stub) and ``caches/`` once; return ``tree``.

    Built in a temporary sibling and renamed into place, so concurrent first starts
    (parallel test sessions) never see a half-copied tree.
    """
    source = _pytriton_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    marker = tree / f".laid-out-from-{source.stat().st_mtime_ns}-py{version}"
    if marker.exists():
        return tree
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonStartError(
            f"nvidia-pytriton has no Python-backend stub for Python {version} ({stub}); "
            "use Python 3.8-3.13"
        )
    staging = tree.with_name(f"{tree.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    for part in ("bin", "backends", "caches"):
        shutil.copytree(source / part, staging / part, copy_function=shutil.copy2)
    shutil.copy2(stub, staging / "backends" / "python" / stub.name)  # copy2 keeps the x bits
    (staging / marker.name).touch()
    old = tree.with_name(f"{tree.name}.old-{os.getpid()}")
    if tree.exists():
        tree.rename(old)
    try:
        staging.rename(tree)
    except OSError:  # another process won the race; its tree is as good as ours
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return tree


def _numpy_major() -> int:
    from importlib.metadata import version

    return int(version("numpy").split(".")[0])


def _venv(env: Path, pip_args: list[str], what: str) -> Path:
    """A venv at ``env`` (made aside, renamed into place, so a concurrent first start never
    sees half of it) with ``pip install <pip_args>``; returns its site-packages."""
    staging = env.with_name(f"{env.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    python = staging / "bin" / "python"
    try:
        subprocess.run([base, "-m", "venv", "--without-pip", str(staging)], check=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", *pip_args],
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise TritonStartError(
            f"could not prepare {what} in {env} ({e}); it needs `pip install "
            f"{' '.join(pip_args)}` from PyPI once. Retry with network access"
        ) from e
    return Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
    ).relative_to(staging)


def _publish(staging: Path, env: Path) -> Path:
    (staging / ".ready").touch()
    try:
        staging.rename(env)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return env / "bin"


def stub_env(tree: Path = DEFAULT_TREE) -> Path:
    """The Python environment the backend stubs run in; returns its ``bin`` directory.

    The stub in nvidia-pytriton 0.7.0 is built against the numpy 1.x C ABI: with
    numpy 2 every tensor it hands to Python arrives corrupted (zeros, or the first
    byte repeated) and BYTES inputs crash the stub. So when this venv has numpy 2,
    the stubs get a small venv of their own that holds only numpy 1.26 and then adds
    this venv's site-packages (onnxruntime, tokenizers) after it.
    """
    here = Path(sys.executable).parent
    if _numpy_major() < 2:
        return here
    env = tree / "stub-env"
    if (env / ".ready").exists():
        return env / "bin"
    purelib = _venv(env, ["--no-deps", STUB_NUMPY], "the Python-backend stub environment")
    staging = env.with_name(f"{env.name}.tmp-{os.getpid()}")
    site_packages = sysconfig.get_paths()["purelib"]
    # Appended after the stub env's own site-packages, so its numpy 1.x wins.
    (staging / purelib / "zz_cinetron_venv.pth").write_text(
        f"import site; site.addsitedir({site_packages!r})\n"
    )
    return _publish(staging, env)


def image_env(requirements: Path, tree: Path = DEFAULT_TREE) -> Path:
    """A stub environment with nothing but ``requirements`` installed (the serving image's
    ``deploy/docker/triton-requirements.txt``); returns its ``bin`` directory. Serving the
    repository from it proves the models need nothing else of the project."""
    env = tree / "image-env"
    stamp = env / ".ready"
    if stamp.exists() and stamp.read_text() == requirements.read_text():
        return env / "bin"
    shutil.rmtree(env, ignore_errors=True)
    _venv(env, ["-r", str(requirements)], "the serving image's Python environment")
    staging = env.with_name(f"{env.name}.tmp-{os.getpid()}")
    bin_dir = _publish(staging, env)
    stamp.write_text(requirements.read_text())
    return bin_dir


def server_env(python_bin: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    libpython = sysconfig.get_config_var("LIBDIR") or ""
    libs = [p for p in (libpython, str(_libs_dir()), env.get("LD_LIBRARY_PATH", "")) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    env["PATH"] = os.pathsep.join([str(python_bin), env.get("PATH", "")])
    # One onnxruntime/numpy thread per stub unless the model config says otherwise.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def port_is_free(port: int) -> bool:
    """Whether ``port`` can be bound on the loopback address now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: only a
        try:  # listener makes it busy, not a closed connection in TIME_WAIT
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


GLOG_ERROR = re.compile(r"^E\d{4} ")


def is_harmless(line: str) -> bool:
    return any(h in line for h in HARMLESS)


class TritonServer:
    """A running tritonserver on loopback ports. Ports left at 0 are picked free.

    >>> with TritonServer("model_repository") as server:   # doctest: +SKIP
    ...     client = InferenceServerClient(server.grpc_url)
    """

    def __init__(
        self,
        repository: str | Path,
        http_port: int = 0,
        grpc_port: int = 0,
        metrics_port: int = 0,
        ready_timeout: float = 120.0,
        log_file: str | Path | None = None,
        echo: IO[str] | None = None,
        tree: Path = DEFAULT_TREE,
        extra_args: tuple[str, ...] = (),
        python_env: Path | None = None,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.ready_timeout = ready_timeout
        self.log_file = Path(log_file) if log_file else None
        self.echo = echo
        self.tree = tree
        self.extra_args = extra_args
        self.python_env = python_env  # the stubs' Python bin dir (default: stub_env)
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[str] | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._reader: threading.Thread | None = None

    # -- addresses ---------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.ports['grpc']}"

    @property
    def http_url(self) -> str:
        return f"{HOST}:{self.ports['http']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.ports['metrics']}/metrics"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the server is not started; call start() first")
        return self._process.pid

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        return "\n".join(list(self._tail)[-lines:])

    def _failure_report(self) -> str:
        """The server's error lines first (they drown in stub noise otherwise), then the tail."""
        errors = [ln for ln in self._tail if GLOG_ERROR.match(ln) and not is_harmless(ln)]
        head = "Errors:\n" + "\n".join(errors) + "\n" if errors else ""
        return f"{head}Log tail:\n{self.log_tail()}"

    # -- lifecycle ---------------------------------------------------------------------
    def command(self) -> list[str]:
        tree = self.tree
        return [
            str(tree / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={tree / 'backends'}",
            f"--cache-directory={tree / 'caches'}",
            "--model-control-mode=none",
            f"--http-address={HOST}",
            f"--grpc-address={HOST}",
            f"--metrics-address={HOST}",
            f"--http-port={self.ports['http']}",
            f"--grpc-port={self.ports['grpc']}",
            f"--metrics-port={self.ports['metrics']}",
            "--backend-config=python,shm-default-byte-size=4194304",
            "--backend-config=python,shm-growth-byte-size=1048576",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=true",
            "--pinned-memory-pool-byte-size=0",
            "--exit-timeout-secs=10",
            *self.extra_args,
        ]

    def start(self) -> TritonServer:
        """Start and wait until every model is READY; raise ``TritonStartError`` otherwise."""
        if not (self.repository / "cinetron.json").exists():
            raise TritonStartError(
                f"{self.repository} is not a complete model repository (no cinetron.json); "
                "run `cinetron export` (or `make export`) first"
            )
        busy = [f"{k} port {v}" for k, v in self.ports.items() if v and not port_is_free(v)]
        if busy:  # say so now, not after loading every model into a server that cannot bind
            raise TritonStartError(
                f"{', '.join(busy)} already in use on {HOST} (another tritonserver, or "
                "`make serve` running?); stop it or pick other ports (--http-port, --grpc-port, "
                "--metrics-port; `make serve TRITON_GRPC_PORT=…`; 0 picks free ones)"
            )
        server_tree(self.tree)
        self._python_bin = self.python_env or stub_env(self.tree)
        picked = [k for k, v in self.ports.items() if not v]
        for attempt in range(3):
            for key in picked:
                self.ports[key] = free_port()
            try:
                self._launch()
                return self
            except TritonStartError:
                # A free port can be taken between picking and binding; retry only then.
                if not picked or attempt == 2 or "already in use" not in self.log_tail():
                    raise
        return self

    def _launch(self) -> None:
        self._tail.clear()
        started = time.monotonic()
        self._process = subprocess.Popen(
            self.command(),
            env=server_env(self._python_bin),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        )
        # A caller that forgets stop() (or dies on an exception) must not leak a server.
        atexit.register(self.stop, 10.0)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            if self._reader is not None:
                self._reader.join(timeout=5)
            raise
        self.startup_seconds = time.monotonic() - started

    def _read_log(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        sink = self.log_file.open("a") if self.log_file else None
        noted = False
        try:
            for line in process.stdout:
                line = line.rstrip("\n")
                self._tail.append(line)
                if sink:
                    sink.write(line + "\n")
                    sink.flush()
                if self.echo is not None:
                    if not is_harmless(line):
                        print(line, file=self.echo, flush=True)
                    elif not noted:
                        noted = True
                        print(
                            "(CUDA warnings from tritonserver are expected on a machine "
                            "without a GPU; the CPU models are unaffected)",
                            file=self.echo,
                            flush=True,
                        )
        finally:
            if sink:
                sink.close()

    def _wait_ready(self, started: float) -> None:
        url = f"http://{self.http_url}/v2/health/ready"
        while True:
            code = self._process.poll() if self._process else None
            if code is not None:
                if self._reader is not None:
                    self._reader.join(timeout=5)  # drain the last lines of the log
                raise TritonStartError(
                    f"tritonserver exited with code {code} before it was ready "
                    f"(see the errors below). Repository: {self.repository}.\n"
                    f"{self._failure_report()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() - started > self.ready_timeout:
                raise TritonStartError(
                    f"tritonserver was not ready after {self.ready_timeout:.0f} s; "
                    f"raise --ready-timeout if the machine is busy.\n{self._failure_report()}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait ``timeout`` s, then SIGKILL; then reap stubs that outlived the
        server (``reap_orphaned_stubs``). Returns the exit code; safe to repeat."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reap_orphaned_stubs(process.pid)
        return process.returncode

    def request_stop(self) -> None:
        """Send SIGTERM without waiting (e.g. from a signal handler)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def wait(self) -> int:
        """Block until the server exits; return its exit code (after the log is drained)."""
        if self._process is None:
            raise RuntimeError("the server is not started; call start() first")
        code = self._process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        reap_orphaned_stubs(self._process.pid)
        return code

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cinetron serve-triton",
        description="Run the bundled tritonserver on 127.0.0.1 until SIGTERM/Ctrl-C.",
    )
    p.add_argument(
        "--repository",
        type=Path,
        default=Path("model_repository"),
        help="model repository written by `cinetron export` (default: %(default)s)",
    )
    p.add_argument("--http-port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--grpc-port", type=int, default=8001, help="0 picks a free port")
    p.add_argument("--metrics-port", type=int, default=8002, help="0 picks a free port")
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for all models to be READY (default: %(default)s)",
    )
    p.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help="also write the full server log (CUDA warnings included) here",
    )
    p.add_argument("--quiet", action="store_true", help="do not echo the server log")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    server = TritonServer(
        args.repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        ready_timeout=args.ready_timeout,
        log_file=args.log_file,
        echo=None if args.quiet else sys.stdout,
    )

    stopping: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        # The server shuts its stub processes down itself; we only relay the request.
        stopping.append(signum)
        server.request_stop()

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            server.start()
        except TritonStartError as e:
            if stopping:
                return 0  # asked to stop while starting: not a failure
            print(f"cinetron serve-triton: {e}", file=sys.stderr)
            return 1
        print(
            f"event=triton_ready pid={server.pid} startup_s={server.startup_seconds:.1f} "
            f"grpc={server.grpc_url} http={server.http_url} metrics={server.metrics_url}",
            flush=True,
        )
        code = server.wait()
        # SIGTERM is an orderly stop: report success for it.
        return 0 if code in (0, -signal.SIGTERM) else code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
