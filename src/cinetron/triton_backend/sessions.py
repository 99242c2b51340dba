"""The one place that builds onnxruntime sessions: the served cpu-flavour models, the
in-process ONNX transport and the exporter's parity checks all run the same settings."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def cpu_session(path: str | Path, threads: int = 1, spinning: bool = True) -> ort.InferenceSession:
    """A CPU session: ``threads`` intra-op threads, one inter-op thread, and threads that
    busy-wait between parallel sections when ``spinning`` (onnxruntime's default; off for
    instances × threads > cores, where idle spinning steals the other models' cores)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
