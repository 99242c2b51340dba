"""Where the networks run. ``open_transport`` imports only the one asked for, so the thin
client never imports torch or onnxruntime unless ``--local`` asks for them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from cinetron.core.transport import PromptEmbeddings, Transport, to_uint8_frames

TransportKind = Literal["triton", "triton-shm", "onnx", "torch"]
TRANSPORTS: tuple[TransportKind, ...] = ("triton", "triton-shm", "onnx", "torch")


def open_transport(
    kind: TransportKind,
    url: str = "127.0.0.1:8001",
    repo: str | Path = "model_repository",
    threads: int = 1,
    spinning: bool = True,
) -> Transport:
    """``triton``/``triton-shm``: the server at ``url``; ``onnx``: the exported ``repo``
    in-process (``threads``, ``spinning``: its onnxruntime sessions); ``torch``: the
    reference weights in-process (needs ``cinetron[export]``)."""
    if kind == "triton":
        from cinetron.transports.triton_grpc import TritonGrpcTransport

        return TritonGrpcTransport(url)
    if kind == "triton-shm":
        from cinetron.transports.triton_shm import TritonShmTransport

        return TritonShmTransport(url)
    if kind == "onnx":
        from cinetron.transports.onnx_local import OnnxLocalTransport

        return OnnxLocalTransport(repo, threads=threads, spinning=spinning)
    if kind == "torch":
        from cinetron.transports.torch_local import TorchTransport

        return TorchTransport(threads=threads)
    raise ValueError(f"unknown transport {kind!r}; expected one of {', '.join(TRANSPORTS)}")


__all__ = ["TRANSPORTS", "PromptEmbeddings", "Transport", "open_transport", "to_uint8_frames"]
