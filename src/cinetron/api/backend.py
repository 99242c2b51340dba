"""The transport behind the API and its readiness, which drives grpc.health.v1.

With Triton the transport is built once Triton answers, and Triton (server and the
three models the pipeline calls) is polled every few seconds after that; health goes
NOT_SERVING as soon as a poll fails and back to SERVING when one succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from cinetron.api.logs import log
from cinetron.contract.manifest import ModelManifest
from cinetron.contract.names import PIPELINE_MODELS
from cinetron.core.errors import Unavailable
from cinetron.core.transport import Transport


def triton_transport(url: str) -> Transport:
    from cinetron.transports import open_transport

    return open_transport("triton", url=url)


def triton_probe(url: str) -> Callable[[], None]:
    """A check that raises ``Unavailable`` unless Triton and the pipeline's models are ready."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url)

    def probe() -> None:
        try:
            if not client.is_server_ready(client_timeout=2.0):
                raise Unavailable(f"Triton at {url} is not ready")
            for model in PIPELINE_MODELS:
                if not client.is_model_ready(model, client_timeout=2.0):
                    raise Unavailable(f"Triton at {url}: model {model!r} is not ready")
        except InferenceServerException as e:
            raise Unavailable(f"Triton at {url} does not answer: {e.message()}") from None

    return probe


def local_transport(kind: str, model_repository: Path) -> Transport:
    """``torch`` (reference weights) or ``onnx`` (the exported repository), in-process."""
    from cinetron.transports import open_transport

    return open_transport("torch" if kind == "torch" else "onnx", repo=model_repository)


class Backend:
    def __init__(
        self,
        factory: Callable[[], Transport],
        probe: Callable[[], None] | None,
        interval_s: float,
        on_change: Callable[[bool], Awaitable[None]],
    ) -> None:
        self._factory = factory
        self._probe = probe
        self.interval_s = interval_s
        self._on_change = on_change
        self._transport: Transport | None = None
        self.ready = False
        self.reason = "starting"
        self._checked = False

    def transport(self) -> Transport:
        """The transport, or ``Unavailable`` with the reason while it is not ready."""
        if not self.ready or self._transport is None:
            raise Unavailable(f"inference backend not ready: {self.reason}")
        return self._transport

    def manifest(self) -> ModelManifest:
        return self.transport().manifest

    def manifest_or_none(self) -> ModelManifest | None:
        return self._transport.manifest if self._transport is not None else None

    @property
    def can_encode_video(self) -> bool:
        """Whether image/video input is served. Decided when the transport was built, so a
        slow or restarting Triton does not flip it."""
        return self._transport is not None and self._transport.can_encode_video

    async def check(self) -> bool:
        """One readiness check; builds the transport on the first success."""
        try:
            if self._probe is not None:
                await asyncio.to_thread(self._probe)
            if self._transport is None:
                self._transport = await asyncio.to_thread(self._factory)
            ready, reason = True, "ready"
        except Exception as e:  # any failure means "not ready"; the reason is logged
            ready, reason = False, str(e) or type(e).__name__
        changed = ready != self.ready
        first = not self._checked  # say at start where things stand, even "not ready"
        self.ready, self.reason, self._checked = ready, reason, True
        if changed or first:
            if ready:
                log("backend_ready", reason=reason)
            else:
                log("backend_not_ready", logging.WARNING, reason=reason,
                    retry_every_s=self.interval_s)  # fmt: skip
        if changed:
            await self._on_change(ready)
        return ready

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.interval_s)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
