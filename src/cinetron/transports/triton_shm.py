"""Triton over gRPC with system shared memory for the denoiser's tensors.

Per step the client writes the latents into a shared-memory region and Triton writes
the velocity into another: no tensor bytes cross the gRPC socket. The text
embeddings and mask go into a third region and are rewritten only when they change
(they are the same for every step of a generation and are the biggest input).
Regions are created and registered once, grown when a bigger batch arrives,
unregistered and destroyed on ``close()``. Client and server must share ``/dev/shm``
(same host or pod).

Not thread-safe: the regions hold one call's tensors at a time, so open one transport
per concurrent generation (the plain gRPC transport can be shared by threads).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from cinetron.contract.manifest import ModelManifest
from cinetron.contract.names import Models
from cinetron.contract.names import Tensors as T
from cinetron.core.errors import Unavailable
from cinetron.transports.triton_grpc import (
    DEFAULT_URL,
    TritonGrpcTransport,
    _input,
    translate_error,
)


@dataclass
class _Region:
    """One registered system shared-memory region; ``ensure`` grows it if needed."""

    name: str
    client: grpcclient.InferenceServerClient
    byte_size: int = 0
    handle: Any = None
    generation: int = 0

    def ensure(self, nbytes: int) -> None:
        if nbytes <= self.byte_size:
            return
        self.release()
        self.generation += 1
        key = f"/{self.name}_{self.generation}"
        self.handle = shm.create_shared_memory_region(self.name, key, nbytes)
        self.client.register_system_shared_memory(self.name, key, nbytes)
        self.byte_size = nbytes

    def release(self) -> None:
        if self.handle is None:
            return
        with contextlib.suppress(InferenceServerException):  # a dead server forgot it already
            self.client.unregister_system_shared_memory(self.name)
        shm.destroy_shared_memory_region(self.handle)
        self.handle, self.byte_size = None, 0


class TritonShmTransport(TritonGrpcTransport):
    def __init__(
        self,
        url: str = DEFAULT_URL,
        manifest: ModelManifest | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        denoiser_model: str = Models.DENOISER,
    ) -> None:
        super().__init__(url, manifest, timeout_s, connect_timeout_s, denoiser_model)
        prefix = f"cinetron_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._latents = _Region(f"{prefix}_latents", self.client)
        self._velocity = _Region(f"{prefix}_velocity", self.client)
        self._text = _Region(f"{prefix}_text", self.client)
        self._text_written: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]] | None = None
        try:  # fail now, with a clear message, if the server cannot map our /dev/shm
            self._ensure(1)
        except InferenceServerException as e:
            self.close()
            raise Unavailable(
                f"Triton at {self.url} cannot use system shared memory ({e.message()}); it "
                "must run on the same host as the client — drop --shm to use plain gRPC"
            ) from None

    def _ensure(self, batch: int) -> None:
        m = self.manifest
        latent = 4 * int(np.prod(m.latent_shape))
        self._latents.ensure(batch * latent)
        self._velocity.ensure(batch * latent)
        self._text.ensure(batch * m.text_length * (4 * m.text_dim + 8))

    def _write_text(self, embeds: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]) -> None:
        last = self._text_written
        if last is not None and np.array_equal(last[0], embeds) and np.array_equal(last[1], mask):
            return
        shm.set_shared_memory_region(
            self._text.handle,
            [np.ascontiguousarray(embeds, np.float32), np.ascontiguousarray(mask, np.int64)],
        )
        self._text_written = (embeds.copy(), mask.copy())

    def denoise(
        self,
        latents: npt.NDArray[np.float32],
        timestep: npt.NDArray[np.float32],
        text_embeds: npt.NDArray[np.float32],
        text_mask: npt.NDArray[np.int64],
        request_id: str = "",
    ) -> npt.NDArray[np.float32]:
        batch = latents.shape[0]
        try:
            if batch * latents[0].nbytes > self._latents.byte_size:
                self._ensure(batch)
                self._text_written = None
        except InferenceServerException as e:
            raise translate_error(e, self.url, "shared-memory registration") from None
        latents = np.ascontiguousarray(latents, np.float32)
        shm.set_shared_memory_region(self._latents.handle, [latents])
        self._write_text(text_embeds, text_mask)

        x = grpcclient.InferInput(T.LATENTS, list(latents.shape), "FP32")
        x.set_shared_memory(self._latents.name, latents.nbytes)
        embeds = grpcclient.InferInput(T.TEXT_EMBEDS, list(text_embeds.shape), "FP32")
        embeds.set_shared_memory(self._text.name, text_embeds.nbytes)
        mask = grpcclient.InferInput(T.TEXT_MASK, list(text_mask.shape), "INT64")
        mask.set_shared_memory(self._text.name, text_mask.nbytes, offset=text_embeds.nbytes)
        velocity = grpcclient.InferRequestedOutput(T.VELOCITY)
        velocity.set_shared_memory(self._velocity.name, latents.nbytes)

        t = _input(T.TIMESTEP, timestep.reshape(-1, 1).astype(np.float32), "FP32")
        self._infer(self.denoiser_model, [x, t, embeds, mask], [velocity], request_id)
        # a copy: the region is overwritten by the next step
        return np.array(shm.get_contents_as_numpy(self._velocity.handle, np.float32, latents.shape))

    def close(self) -> None:
        for region in (self._latents, self._velocity, self._text):
            region.release()
        super().close()
