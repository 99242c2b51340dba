"""``/v1/videos`` (OpenAI's Videos API) and ``/v1/models`` over the gRPC side's job manager.

A video is a job: ``POST /v1/videos`` is ``SubmitJob``, ``GET /v1/videos/{id}`` is
``GetJob``, and the id is the job id, so a video made here is the same job over gRPC and
the other way round. Cinetron's additions: ``POST /v1/videos/{id}/cancel`` (``CancelJob``)
and ``GET /v1/videos/{id}/events`` (``WatchJob`` as server-sent events: one video object
per denoising step, for the preview page).

Handlers run on the event loop thread, like the gRPC handlers, because the job manager
and the engine live there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from cinetron.api.backend import Backend
from cinetron.api.engine import Engine
from cinetron.api.errors import ApiError
from cinetron.api.http.errors import HttpError
from cinetron.api.http.schema import (
    STATUS,
    TERMINAL,
    CreateVideo,
    model_object,
    progress_of,
    video_object,
)
from cinetron.api.jobs import JobManager
from cinetron.api_client import pb
from cinetron.core.video import decode_mp4, encode_png

DEFAULT_PAGE, MAX_PAGE = 20, 100
POLL_MIN_MS, POLL_MAX_MS = 100, 2000
HEARTBEAT_S = 15.0  # an SSE comment this often keeps proxies from closing a quiet stream
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_FORM = ("multipart/form-data", "application/x-www-form-urlencoded")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status, headers=headers)


class VideosApi:
    """The HTTP handlers. ``closing`` is set when the server stops: event streams end."""

    def __init__(
        self,
        jobs: JobManager,
        engine: Engine,
        backend: Backend,
        max_body_bytes: int,
        closing: asyncio.Event,
    ) -> None:
        self.jobs = jobs
        self.engine = engine
        self.backend = backend
        self.max_body_bytes = max_body_bytes
        self.closing = closing
        self.created = int(time.time())

    # -- helpers -------------------------------------------------------------------------

    async def _job(self, video_id: str, include_video: bool = False) -> pb.Job:
        # The job store is a database (and the video a file or an object): never on the loop.
        try:
            return await asyncio.to_thread(self.jobs.get, video_id, include_video)
        except ApiError as e:
            if e.code.name == "NOT_FOUND":
                raise self._not_found(video_id) from None
            raise

    @staticmethod
    def _not_found(video_id: str) -> HttpError:
        return HttpError(
            404,
            f"no video {video_id!r}; GET /v1/videos lists the videos this server has",
            "video_not_found",
            "video_id",
        )

    def _object(self, job: pb.Job) -> dict[str, Any]:
        return video_object(job, self.backend.manifest_or_none())

    def _poll_after_ms(self) -> int:
        """When a poll is likely to see a change: the engine's estimate of when a slot
        frees (its running average generation time over the queue), clamped."""
        return min(max(self.engine.retry_after_ms(), POLL_MIN_MS), POLL_MAX_MS)

    def _video(self, job: pb.Job) -> Response:
        headers = {}
        if job.state not in TERMINAL:
            headers["openai-poll-after-ms"] = str(self._poll_after_ms())
        return _json(self._object(job), headers=headers)

    async def _create_fields(self, request: Request) -> CreateVideo:
        kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind == "application/json":
            return CreateVideo.from_json(await request.body())
        if kind in _FORM:
            try:
                form = await request.form(
                    max_files=1, max_fields=32, max_part_size=self.max_body_bytes
                )
            except HttpError:
                raise
            except Exception as e:  # Starlette's MultiPartException / HTTPException(400)
                detail = getattr(e, "detail", None) or getattr(e, "message", None) or str(e)
                raise HttpError(
                    400, f"the multipart body cannot be read: {detail}", "invalid_multipart"
                ) from None
            try:
                return await CreateVideo.from_form(form)
            finally:
                await form.close()
        raise HttpError(
            415,
            f"Content-Type must be application/json or multipart/form-data, got {kind or 'none'!r}",
            "unsupported_content_type",
        )

    # -- OpenAI's Videos API -------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        fields = await self._create_fields(request)
        key = request.headers.get("idempotency-key", "")
        job, replayed = await asyncio.to_thread(
            self.jobs.submit, fields.message(), key, request.state.request_id
        )
        response = self._video(job)
        if replayed:
            response.headers["idempotent-replayed"] = "true"
        return response

    async def retrieve(self, request: Request) -> Response:
        return self._video(await self._job(request.path_params["video_id"]))

    async def list(self, request: Request) -> Response:
        q = request.query_params
        for name in q:
            if name not in ("after", "limit", "order"):
                raise HttpError(
                    400,
                    f"{name}: unknown query parameter; GET /v1/videos takes after, limit, order",
                    "unknown_parameter",
                    name,
                )
        limit_text = q.get("limit", str(DEFAULT_PAGE))
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
            raise HttpError(
                400,
                f"limit: must be an integer between 1 and {MAX_PAGE}, got {limit_text!r}",
                "invalid_value",
                "limit",
            )
        order = q.get("order", "desc")
        if order not in ("asc", "desc"):
            raise HttpError(
                400, f"order: must be asc or desc, got {order!r}", "invalid_value", "order"
            )
        after = q.get("after", "")
        try:
            jobs, more = await asyncio.to_thread(
                self.jobs.list_after, after, int(limit_text), order == "asc"
            )
        except ApiError as e:
            if e.code.name != "NOT_FOUND":
                raise
            raise HttpError(
                400,
                f"after: no video {after!r}; pass the last_id of the previous page",
                "invalid_value",
                "after",
            ) from None
        data = [self._object(j) for j in jobs]
        return _json(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": more,
            }
        )

    async def delete(self, request: Request) -> Response:
        video_id = request.path_params["video_id"]
        job = await self._job(video_id)  # 404 in this API's words
        if job.state not in TERMINAL:  # 409 in this API's words (gRPC names its own RPCs)
            raise HttpError(
                409,
                f"video {video_id} is {STATUS[job.state]}; cancel it first "
                f"(POST /v1/videos/{video_id}/cancel), then delete it",
                "video_not_finished",
                "video_id",
            )
        await asyncio.to_thread(self.jobs.delete, video_id)
        return _json({"id": video_id, "object": "video.deleted", "deleted": True})

    async def content(self, request: Request) -> Response:
        video_id = request.path_params["video_id"]
        variant = request.query_params.get("variant", "video")
        if variant not in ("video", "thumbnail", "spritesheet"):
            raise HttpError(
                400,
                f"variant: must be video, thumbnail or spritesheet, got {variant!r}",
                "invalid_value",
                "variant",
            )
        job = await self._job(video_id, include_video=True)
        if job.state != pb.JOB_STATE_SUCCEEDED:
            obj = self._object(job)
            reason = f": {obj['error']['message']}" if obj["error"] else ""
            raise HttpError(
                409,
                f"video {video_id} is {obj['status']} ({obj['progress']}%){reason}; its content "
                "exists once GET /v1/videos/{id} says completed",
                "video_not_ready",
                "video_id",
            )
        mp4 = job.result.video
        if variant != "video":
            png = await asyncio.to_thread(_still, mp4, variant == "spritesheet")
            return Response(png, media_type="image/png")
        return _ranged(request, mp4, f"{video_id}.mp4")

    # -- Cinetron's additions ------------------------------------------------------------

    async def cancel(self, request: Request) -> Response:
        video_id = request.path_params["video_id"]
        await self._job(video_id)
        return self._video(await asyncio.to_thread(self.jobs.cancel, video_id))

    async def events(self, request: Request) -> Response:
        """Server-sent events: ``event: video`` with the video object, now and after every
        change (queue position, each denoising step, the end); the stream ends with the
        object in its final state, or when the server stops."""
        video_id = request.path_params["video_id"]
        job = await self._job(video_id)
        return StreamingResponse(
            self._event_stream(video_id, job),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _event_stream(self, video_id: str, job: pb.Job) -> AsyncIterator[str]:
        yield _sse(self._object(job))
        if job.state in TERMINAL:
            return
        queue: asyncio.Queue[pb.GenerateEvent | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for event in self.jobs.watch(video_id):
                    queue.put_nowait(event)
            finally:
                queue.put_nowait(None)

        loop = asyncio.get_running_loop()
        task = loop.create_task(pump())
        closing = loop.create_task(self.closing.wait())
        getter: asyncio.Future[pb.GenerateEvent | None] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, closing}, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    if closing in done:
                        return
                    yield ": keep-alive\n\n"
                    continue
                event = getter.result()
                if event is None:  # the watch ended: the stored state is the last word
                    yield _sse(self._object(await self._job(video_id)))
                    return
                kind = event.WhichOneof("event")
                obj = self._object(await self._job(video_id))
                if kind == "queued":
                    obj["status"], obj["queue_position"] = "queued", event.queued.position
                elif kind == "progress":
                    p = event.progress
                    running = pb.Job(state=pb.JOB_STATE_RUNNING, progress=p)
                    obj.update(
                        status="in_progress",
                        step=p.step,
                        total_steps=p.total,
                        progress=progress_of(running),
                    )
                else:  # completed or job_ended: the pump's None follows
                    continue
                yield _sse(obj)
        finally:  # also when the caller hangs up: nothing of this stream is left behind
            if getter is not None:
                getter.cancel()
            closing.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def models(self, request: Request) -> Response:
        manifest = self.backend.manifest()  # Unavailable (503) until the backend is ready
        model = model_object(manifest, self.backend.can_encode_video, self.created)
        return _json({"object": "list", "data": [model]})


def _sse(obj: dict[str, Any]) -> str:
    return f"event: video\ndata: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _ranged(request: Request, data: bytes, filename: str) -> Response:
    """The MP4, or one byte range of it (``Range: bytes=a-b``, as video elements ask)."""
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'inline; filename="{filename}"',
        "Cache-Control": "private, max-age=3600",  # a finished video never changes
    }
    asked = request.headers.get("range")
    if not asked:
        return Response(data, media_type="video/mp4", headers=headers)
    m = _RANGE.match(asked.strip())
    size = len(data)
    start, end = -1, -1
    if m and (m.group(1) or m.group(2)):
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        else:  # the last N bytes
            start, end = max(0, size - int(m.group(2))), size - 1
    if not 0 <= start <= end < size:
        headers["Content-Range"] = f"bytes */{size}"
        return Response(b"", 416, headers=headers, media_type="video/mp4")
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return Response(data[start : end + 1], 206, headers=headers, media_type="video/mp4")


def _still(mp4: bytes, sheet: bool) -> bytes:
    """The middle frame as a PNG, or every frame in a grid (at most 8 per row)."""
    frames = decode_mp4(mp4)
    if not sheet:
        return encode_png(frames[len(frames) // 2])
    n, h, w, c = frames.shape
    cols = min(8, n)
    rows = -(-n // cols)
    grid = np.zeros((rows * h, cols * w, c), np.uint8)
    for i, frame in enumerate(frames):
        r, k = divmod(i, cols)
        grid[r * h : (r + 1) * h, k * w : (k + 1) * w] = frame
    return encode_png(grid)
