"""The one place that builds onnxruntime sessions: the served cpu-flavour models, the
in-process ONNX transport and the exporter's parity checks all run the same settings."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def cpu_session(
    model: str | Path | bytes, threads: int = 1, spinning: bool = True, optimize: bool = True
) -> ort.InferenceSession:
    """A CPU session on a model file (or serialized bytes): ``threads`` intra-op threads, one
    inter-op thread, and threads that busy-wait between parallel sections when ``spinning``
    (onnxruntime's default; off for instances × threads > cores, where idle spinning steals
    the other models' cores). ``optimize=False`` keeps every node as it is in the file
    (the FLOP counter needs the nodes it counted)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
