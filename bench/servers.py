"""The servers a benchmark runs against: Triton on a (tuned copy of a) model repository
and the public API server as its own process, both on free loopback ports.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cinetron.tools.tritonserver import TritonServer
from tests.support import ApiProcess  # the one API-process harness


@dataclass(frozen=True)
class DenoiserKnobs:
    """Serving knobs of the ``denoiser`` model; ``None`` keeps what the repository has.

    ``batching=False`` removes the dynamic batcher: every call runs alone.
    """

    instances: int | None = None
    threads: int | None = None  # onnxruntime intra-op threads per instance
    spinning: bool | None = None  # onnxruntime threads busy-wait between parallel sections
    delay_us: int | None = None  # dynamic batcher max_queue_delay_microseconds
    preferred: tuple[int, ...] | None = None  # preferred batch sizes (samples)
    batching: bool = True

    def label(self) -> str:
        parts = []
        if not self.batching:
            parts.append("no dynamic batching")
        if self.instances is not None:
            parts.append(f"instances={self.instances}")
        if self.threads is not None:
            parts.append(f"threads={self.threads}")
        if self.spinning is not None:
            parts.append(f"spinning={'on' if self.spinning else 'off'}")
        if self.delay_us is not None:
            parts.append(f"delay={self.delay_us}us")
        if self.preferred is not None:
            parts.append("preferred=" + ",".join(map(str, self.preferred)))
        return " ".join(parts) or "as exported"


def denoiser_settings(repo: Path) -> dict[str, object]:
    """The serving knobs a repository's denoiser ``config.pbtxt`` actually holds."""
    from cinetron.export.configs import read_config

    config = read_config(repo / "denoiser" / "config.pbtxt")
    batching = config.HasField("dynamic_batching")
    return {
        "instances": sum(g.count for g in config.instance_group) or 1,
        "intra_op_threads": int(config.parameters["intra_op_threads"].string_value or 1),
        "allow_spinning": (config.parameters["allow_spinning"].string_value or "1") == "1",
        "dynamic_batching": batching,
        "max_queue_delay_us": config.dynamic_batching.max_queue_delay_microseconds
        if batching
        else None,
        "preferred_batch_sizes": list(config.dynamic_batching.preferred_batch_size),
        "max_batch_size": config.max_batch_size,
    }


def _link_onnx(src: str, dst: str) -> None:
    # ONNX files are the big part and never change between variants: link them.
    if src.endswith(".onnx"):
        os.symlink(os.path.abspath(src), dst)
    else:
        shutil.copy2(src, dst)


def repository_variant(repo: Path, out: Path, knobs: DenoiserKnobs) -> Path:
    """A copy of ``repo`` at ``out`` whose denoiser ``config.pbtxt`` carries ``knobs``.

    The config is edited as a ``ModelConfig`` protobuf (the export's own reader and
    writer), so the variant is exactly what ``cinetron export`` would write with those
    options; the ONNX files are symlinked, not copied.
    """
    from cinetron.export.configs import read_config, write_config

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(
        repo, out, copy_function=_link_onnx, ignore=shutil.ignore_patterns("__pycache__")
    )
    # Like `cinetron export --threads / --no-spinning`: every onnxruntime model.
    asked = {"intra_op_threads": knobs.threads, "allow_spinning": knobs.spinning}
    runtime = {key: str(int(value)) for key, value in asked.items() if value is not None}
    for path in sorted(out.glob("*/config.pbtxt")):
        other = read_config(path)
        keys = [key for key in runtime if key in other.parameters]
        for key in keys:
            other.parameters[key].string_value = runtime[key]
        if keys:
            write_config(path.parent, other)
    model_dir = out / "denoiser"
    config = read_config(model_dir / "config.pbtxt")
    if knobs.instances is not None:
        config.instance_group[0].count = knobs.instances
    if not knobs.batching:
        config.ClearField("dynamic_batching")
    else:
        if knobs.delay_us is not None:
            config.dynamic_batching.max_queue_delay_microseconds = knobs.delay_us
        if knobs.preferred is not None:
            del config.dynamic_batching.preferred_batch_size[:]
            config.dynamic_batching.preferred_batch_size.extend(knobs.preferred)
    write_config(model_dir, config)
    return out


FLOOR_MODEL = "denoiser_floor"
FLOOR_MODEL_PY = Path(__file__).with_name("floor_model.py")


def add_floor_model(repo: Path) -> None:
    """Add ``denoiser_floor`` (``bench/floor_model.py``) to ``repo``: the denoiser's config
    under another name, one instance, no onnxruntime. See that file for what it measures."""
    from cinetron.export.configs import mc, read_config, write_config
    from cinetron.export.repository import copy_backend

    config = read_config(repo / "denoiser" / "config.pbtxt")
    config.name = FLOOR_MODEL
    # Whatever runs the denoiser (onnxruntime, TensorRT on a gpu repository), the floor
    # is a Python model on the CPU: it has no tensors to compute.
    for field in ("platform", "default_model_filename", "optimization"):
        config.ClearField(field)
    config.backend = "python"
    del config.instance_group[:]
    config.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    model_dir = repo / FLOOR_MODEL
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copy2(FLOOR_MODEL_PY, model_dir / "1" / "model.py")
    copy_backend(model_dir / "1")
    write_config(model_dir, config)


@contextmanager
def triton(
    repo: Path, knobs: DenoiserKnobs | None = None, floor: bool = False
) -> Iterator[TritonServer]:
    """Triton on ``repo`` (or on a variant with ``knobs``, and ``denoiser_floor`` when
    ``floor``), stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="cinetron-bench-") as tmp:
        served = repo
        if knobs is not None or floor:
            served = repository_variant(repo, Path(tmp) / "repo", knobs or DenoiserKnobs())
        if floor:
            add_floor_model(served)
        with TritonServer(served, ready_timeout=180) as server:
            yield server


@contextmanager
def api_server(
    triton_url: str, max_concurrency: int, max_queue: int = 64, metrics: bool = False
) -> Iterator[ApiProcess]:
    """The API server (gRPC and HTTP) in front of ``triton_url``, SERVING, stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="cinetron-api-") as tmp:
        args = ("--triton-url", triton_url, "--max-concurrency", str(max_concurrency),
                "--max-queue", str(max_queue))  # fmt: skip
        api = ApiProcess(Path(tmp) / "data", Path(tmp) / "serve-api.log", args, metrics=metrics,
                         log_level="warning")  # fmt: skip
        try:
            api.wait_serving()
            yield api
        finally:
            api.stop()


class SharedStores:
    """A PostgreSQL server and the S3 emulator (tests/stores.py) for scale-out runs."""

    def __init__(self, tmp: Path) -> None:
        from tests.stores import PostgresServer, S3Emulator

        self.tmp = tmp
        self.postgres = PostgresServer()
        self.s3 = S3Emulator(tmp / "moto.log")

    def postgres_pids(self) -> list[int]:
        pidfile = self.postgres.data / "postmaster.pid"
        return [int(pidfile.read_text().split()[0])] if pidfile.exists() else []

    @contextmanager
    def replicas(
        self, triton_url: str, n: int, max_concurrency: int, max_queue: int
    ) -> Iterator[list[ApiProcess]]:
        dsn, bucket = self.postgres.new_database(), self.s3.new_bucket()
        args = ("--triton-url", triton_url, "--max-concurrency", str(max_concurrency),
                "--max-queue", str(max_queue), "--database-url", dsn,
                "--video-url", f"s3://{bucket}/videos")  # fmt: skip
        apis = [
            ApiProcess(
                self.tmp / f"data{i}",
                self.tmp / f"serve-api{i}.log",
                args,
                env=self.s3.env(),
                metrics=False,
                log_level="warning",
            )
            for i in range(n)
        ]
        try:
            for api in apis:
                api.wait_serving()
            yield apis
        finally:
            for api in apis:
                api.stop()

    def close(self) -> None:
        self.s3.close()
        self.postgres.close()


@contextmanager
def shared_stores() -> Iterator[SharedStores]:
    with tempfile.TemporaryDirectory(prefix="cinetron-stores-") as tmp:
        stores = SharedStores(Path(tmp))
        try:
            yield stores
        finally:
            stores.close()
