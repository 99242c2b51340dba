"""The HTTP API with raw requests the openai SDK never sends: malformed JSON, bodies over the
limit (with and without Content-Length), wrong content types, broken multipart, bad query
parameters, byte ranges, server-sent events, request ids, the page's assets and health.

Against a real ``cinetron serve-api`` process (auth on) in front of the session's Triton;
the client is the standard library's ``http.client``, so every byte on the wire is ours.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from support import ApiProcess

from cinetron.core.video import encode_png
from cinetron.models import world
from cinetron.tools.tritonserver import TritonServer

pytestmark = pytest.mark.triton

TOKEN = "raw-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 1 << 20  # the server's request size limit (the same as a gRPC message)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error(self) -> dict[str, Any]:
        """OpenAI's error object; fails unless the body has exactly that shape."""
        body = self.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        return body["error"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def api(
    triton_server: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    tmp = tmp_path_factory.mktemp("http-raw")
    (tmp / "tokens").write_text(TOKEN + "\n")
    process = ApiProcess(
        tmp / "data",
        tmp / "serve-api.log",
        ["--triton-url", triton_server.grpc_url, "--auth-tokens-file", str(tmp / "tokens")],
    )
    try:
        process.wait_serving()
        yield process
    finally:
        process.stop()


def call(
    api: ApiProcess,
    method: str,
    path: str,
    body: bytes | Iterator[bytes] | None = None,
    headers: dict[str, str] | None = None,
    auth: bool = True,
    timeout: float = 60.0,
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", api.http_port, timeout=timeout)
    try:
        all_headers = {**(AUTH if auth else {}), **(headers or {})}
        chunked = body is not None and not isinstance(body, bytes)
        conn.request(method, path, body=body, headers=all_headers, encode_chunked=chunked)
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


def post_json(api: ApiProcess, payload: object, **kw: Any) -> Reply:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return call(api, "POST", "/v1/videos", raw, {"Content-Type": "application/json"}, **kw)


def wait_status(api: ApiProcess, video_id: str, timeout: float = 120.0) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        video = call(api, "GET", f"/v1/videos/{video_id}").json()
        if video["status"] in ("completed", "failed"):
            return video  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"{video_id} not done after {timeout}s")


# -- request bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b'{"prompt": "a red circle",', "invalid_json", "the body is not valid JSON"),
        (b"", "invalid_json", "the body is not valid JSON"),
        (b'["a red circle"]', "invalid_json", "must be a JSON object with a prompt, got an array"),
        (b'{"prompt": "x", "guidance": NaN}', "invalid_json", "NaN is not a JSON number"),
        (b'{"prompt": 5}', "invalid_value", "prompt: must be a string, got a number"),
        (b'{"prompt": "x", "steps": 2.5}', "invalid_value", "steps: must be an integer, got 2.5"),
        (b'{"prompt": "x", "steps": true}', "invalid_value", "steps: must be an integer"),
        (b'{"prompt": "x", "seconds": [4]}', "invalid_value", "seconds: must be a number"),
        (b'{"prompt": "x", "quality": "hd"}', "unknown_parameter", "quality: unknown field"),
        (
            b'{"prompt": "x", "steps": 4, "num_inference_steps": 8}',
            "invalid_value",
            "steps: given more than once (as num_inference_steps)",
        ),
        (b'{"prompt": "x", "size": "0x0"}', "invalid_value", "width and height must be positive"),
        (
            b'{"prompt": "x", "steps": 99999999999999}',
            "invalid_value",
            "steps: must be between 1 and 200, got 99999999999999",
        ),
        (
            b'{"prompt": "x", "input_reference": {"image_url": "https://example.com/a.png"}}',
            "invalid_value",
            "this server does not fetch URLs",
        ),
        (
            b'{"prompt": "x", "input_reference": {"file_id": "file-1"}}',
            "invalid_value",
            "file_id is not supported",
        ),
    ],
)
def test_malformed_json_is_400_in_openais_shape(
    api: ApiProcess, body: bytes, code: str, words: str
):
    reply = post_json(api, body)
    err = reply.error()
    assert reply.status == 400 and err["code"] == code, err
    assert words in err["message"], err["message"]
    assert err["type"] == "invalid_request_error"


def test_json_takes_the_knobs_with_sglang_aliases_and_a_data_url_image(api: ApiProcess):
    image = world.render(
        world.sample_scene(np.random.default_rng(1), "black", "red", "circle", "left")
    )[0]
    data_url = "data:image/png;base64," + base64.b64encode(encode_png(image)).decode()
    reply = post_json(
        api,
        {
            "prompt": "a red circle",
            "seconds": 1,
            "num_inference_steps": 3,
            "guidance_scale": 2.5,
            "seed": 9,
            "negative_prompt": "blurry",
            "scheduler": "heun",
            "input_reference": {"image_url": data_url},
        },
    )
    assert reply.status == 200, reply.body
    video = reply.json()
    assert (video["steps"], video["guidance"], video["seed"]) == (3, 2.5, 9)
    assert (video["scheduler"], video["negative_prompt"], video["seconds"]) == (
        "heun",
        "blurry",
        "1",
    )
    assert video["has_input_reference"] and reply.headers["openai-poll-after-ms"].isdigit()
    assert wait_status(api, video["id"])["status"] == "completed"


def test_a_body_over_the_limit_is_413_not_a_reset_connection(api: ApiProcess):
    big = b'{"prompt": "' + b"x" * (2 * LIMIT) + b'"}'
    reply = post_json(api, big)
    err = reply.error()
    assert reply.status == 413 and err["code"] == "request_too_large"
    assert f"larger than {LIMIT} bytes" in err["message"]


def test_a_chunked_body_over_the_limit_is_413_too(api: ApiProcess):
    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(40):
            yield b"y" * (64 << 10)
        yield b'"}'

    reply = call(api, "POST", "/v1/videos", chunks(), {"Content-Type": "application/json"})
    assert reply.status == 413 and reply.error()["code"] == "request_too_large"


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
def test_a_wrong_content_type_is_415(api: ApiProcess, content_type: str | None):
    headers = {"Content-Type": content_type} if content_type else {}
    reply = call(api, "POST", "/v1/videos", b'{"prompt": "x"}', headers)
    err = reply.error()
    assert reply.status == 415 and err["code"] == "unsupported_content_type"
    assert "application/json or multipart/form-data" in err["message"]


def test_broken_multipart_is_400(api: ApiProcess):
    body = b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na red circle'  # no end
    reply = call(api, "POST", "/v1/videos", body, {"Content-Type": "multipart/form-data"})
    assert reply.status == 400 and reply.error()["code"] == "invalid_multipart"


def test_multipart_fields_are_text_and_empty_means_unset(api: ApiProcess):
    parts = [("prompt", "a blue square"), ("steps", "2"), ("seed", ""), ("guidance", "")]
    body = b"".join(
        f'--B\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in parts
    )
    reply = call(
        api,
        "POST",
        "/v1/videos",
        body + b"--B--\r\n",
        {"Content-Type": "multipart/form-data; boundary=B"},
    )
    assert reply.status == 200, reply.body
    video = reply.json()
    assert video["steps"] == 2 and video["guidance"] == 4.0  # unset: the model's default
    assert isinstance(video["seed"], int)  # chosen by the server, shown at once


# -- routes, methods, query parameters ----------------------------------------------------------


def test_unknown_paths_and_methods_answer_in_openais_shape(api: ApiProcess):
    missing = call(api, "GET", "/v1/nothing")
    assert missing.status == 404 and missing.error()["code"] == "not_found"
    video = call(api, "GET", "/v1/videos/no-such-id")
    assert video.status == 404 and video.error()["param"] == "video_id"
    assert "no video 'no-such-id'" in video.error()["message"]
    wrong = call(api, "PUT", "/v1/videos")
    assert wrong.status == 405 and wrong.error()["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"] and "GET" in wrong.headers["allow"]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("order=sideways", "order"),
        ("after=no-such-video", "after"),
        ("page=2", "page"),
    ],
)
def test_bad_list_parameters_are_400_naming_them(api: ApiProcess, query: str, param: str):
    reply = call(api, "GET", f"/v1/videos?{query}")
    assert reply.status == 400 and reply.error()["param"] == param, reply.body


def test_content_of_an_unfinished_video_is_409_and_ranges_are_served(api: ApiProcess):
    busy = post_json(api, {"prompt": "a white circle", "steps": 200}).json()
    early = call(api, "GET", f"/v1/videos/{busy['id']}/content")
    assert early.status == 409 and early.error()["code"] == "video_not_ready"
    assert "exists once" in early.error()["message"]
    call(api, "POST", f"/v1/videos/{busy['id']}/cancel")
    cancelled = wait_status(api, busy["id"])
    assert cancelled["status"] == "failed" and cancelled["error"]["code"] == "cancelled"
    gone = call(api, "GET", f"/v1/videos/{busy['id']}/content")
    assert gone.status == 409 and "cancelled" in gone.error()["message"]

    done = wait_status(api, post_json(api, {"prompt": "a white circle", "steps": 1}).json()["id"])
    path = f"/v1/videos/{done['id']}/content"
    whole = call(api, "GET", path)
    assert whole.status == 200 and whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes" and whole.body[4:8] == b"ftyp"
    part = call(api, "GET", path, headers={"Range": "bytes=10-99"})
    assert part.status == 206 and part.body == whole.body[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(whole.body)}"
    tail = call(api, "GET", path, headers={"Range": "bytes=-16"})
    assert tail.status == 206 and tail.body == whole.body[-16:]
    beyond = call(api, "GET", path, headers={"Range": f"bytes={len(whole.body)}-"})
    assert beyond.status == 416 and beyond.headers["content-range"] == f"bytes */{len(whole.body)}"
    odd = call(api, "GET", path + "?variant=poster")
    assert odd.status == 400 and odd.error()["param"] == "variant"


# -- server-sent events -------------------------------------------------------------------------


def events(api: ApiProcess, video_id: str) -> list[dict[str, Any]]:
    reply = call(api, "GET", f"/v1/videos/{video_id}/events")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in reply.body.decode().split("\n\n") if b.strip()]
    out = []
    for block in blocks:
        lines = block.split("\n")
        if lines[0].startswith(":"):
            continue  # keep-alive comment
        assert lines[0] == "event: video" and lines[1].startswith("data: "), block
        out.append(json.loads(lines[1][len("data: ") :]))
    return out


def test_events_stream_every_step_in_order_then_the_finished_video(api: ApiProcess):
    video = post_json(api, {"prompt": "a green triangle moving up", "steps": 12}).json()
    seen = events(api, video["id"])
    assert seen[-1]["status"] == "completed" and seen[-1]["progress"] == 100
    steps = [e["step"] for e in seen if e["status"] == "in_progress"]
    assert steps == sorted(steps) and steps[-1] == 12 and len(set(steps)) >= 6, steps
    assert all(e["id"] == video["id"] and e["total_steps"] == 12 for e in seen)
    # a finished video: its one final event, and the stream ends
    assert [e["status"] for e in events(api, video["id"])] == ["completed"]


# -- request ids, auth, the page ----------------------------------------------------------------


def test_request_ids_are_echoed_kept_when_valid_and_made_when_not(api: ApiProcess):
    kept = call(api, "GET", "/v1/videos", headers={"x-request-id": "trace-7"})
    assert kept.headers["x-request-id"] == "trace-7"
    made = call(api, "GET", "/v1/videos", headers={"x-request-id": "has spaces in it"})
    assert re.fullmatch(r"[0-9a-f]{16}", made.headers["x-request-id"])
    denied = call(api, "GET", "/v1/videos", auth=False, headers={"x-request-id": "trace-8"})
    assert denied.status == 401 and denied.headers["x-request-id"] == "trace-8"
    line = "event=http method=GET route=/v1/videos status=401 request_id=trace-8"
    end = time.monotonic() + 10  # the access line is written once the response is sent
    while line not in api.log_text():
        assert time.monotonic() < end, api.log_tail()
        time.sleep(0.05)


def test_the_api_needs_the_token_but_the_page_and_health_do_not(api: ApiProcess):
    for path in ("/v1/videos", "/v1/models", "/v1/videos/x/events"):
        reply = call(api, "GET", path, auth=False)
        assert reply.status == 401 and reply.error()["type"] == "authentication_error", path
    wrong = call(api, "GET", "/v1/videos", headers={"Authorization": "Basic " + TOKEN})
    assert wrong.status == 401
    for path in ("/", "/static/app.js", "/static/style.css", "/healthz", "/readyz"):
        assert call(api, "GET", path, auth=False).status == 200, path


def test_the_page_and_its_assets_come_from_this_server_only(api: ApiProcess):
    page = call(api, "GET", "/", auth=False)
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    html = page.body.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert set(assets) == {"/static/app.js", "/static/style.css", "data:,"}, assets
    for asset in ("/static/app.js", "/static/style.css"):
        text = call(api, "GET", asset, auth=False).body.decode()
        assert not re.search(r"https?://", text), f"{asset} references another host"
    assert not re.search(r"https?://", html)


def test_http_requests_are_counted_by_route_and_status(api: ApiProcess):
    call(api, "GET", "/v1/videos/missing")
    metrics = api.metrics()
    key = 'cinetron_api_http_requests_total{route="/v1/videos/:id",status="404"}'
    assert metrics.get(key, 0) >= 1, [k for k in metrics if "http" in k]
