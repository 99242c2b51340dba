"""The web preview page end to end in a real headless Chromium (Debian's ``chromium`` driven by
Playwright), served by a real ``cinetron serve-api`` in front of the session's tritonserver.

A user types a prompt, sees per-step progress advance, the ``<video>`` element plays, and the
frames Chromium decodes are judged against the prompt and compared with the MP4 the API
serves; the history comes from the job store and survives a restart; replay, cancel,
download, image upload, the token prompt and errors in words are exercised the same way.
"""

from __future__ import annotations

import base64
import re
import shutil
import signal
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import ApiProcess

from cinetron.core.video import decode_mp4, encode_png
from cinetron.models import world
from cinetron.models.captions import canonical_caption
from cinetron.tools.judge import judge
from cinetron.tools.tritonserver import TritonServer

pytestmark = pytest.mark.triton

CHROMIUM = "/usr/bin/chromium"
# Off the closed network: no background requests, no component updates, no QUIC.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
RED_CIRCLE = "a red circle moving to the left on a black background"
PLAYING = """() => { const v = document.getElementById('video');
    return !v.hidden && v.readyState >= 2 && v.currentTime > 0 && !v.paused; }"""
# Every frame of the playing <video>, as Chromium decodes it: seek, draw on a canvas, read.
FRAMES_JS = """async ({fps, count}) => {
  const v = document.getElementById('video');
  v.pause();
  const canvas = document.createElement('canvas');
  canvas.width = v.videoWidth; canvas.height = v.videoHeight;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  const out = [];
  for (let i = 0; i < count; i++) {
    // 'seeked' can fire before the new frame is what drawImage reads (seen on a loaded
    // machine: one frame of the previous time); the video-frame callback fires once it
    // is presented. Wait for both (the timer only guards a browser that never calls it).
    await new Promise((done) => {
      let waiting = v.requestVideoFrameCallback ? 2 : 1;
      const one = () => { if (--waiting === 0) done(); };
      v.addEventListener('seeked', one, {once: true});
      if (v.requestVideoFrameCallback) v.requestVideoFrameCallback(one);
      setTimeout(done, 2000);
      v.currentTime = (i + 0.5) / fps;
    });
    ctx.drawImage(v, 0, 0);
    const rgba = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let text = '';
    for (let k = 0; k < rgba.length; k++) text += String.fromCharCode(rgba[k]);
    out.push(btoa(text));
  }
  return out;
}"""
# Every text #step-text shows, in order (a MutationObserver misses none, however fast).
WATCH_STEPS = """() => { window.stepTexts = [];
  new MutationObserver((records) => { for (const r of records) for (const n of r.addedNodes)
    window.stepTexts.push(n.textContent); }).observe(document.getElementById('step-text'),
    {childList: true}); }"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which("chromium") is None or not Path(CHROMIUM).exists():
        pytest.fail(
            f"Debian's chromium is not installed ({CHROMIUM} missing): `apt-get install -y "
            "chromium` (make test and .ci/run install it when run as root). Playwright's own "
            "browser download is blocked here, so the test drives the system browser."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # launch() gives every run a fresh, temporary user-data-dir.
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 900}, accept_downloads=True)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    yield tab
    context.close()
    assert not errors, f"the page raised: {errors}"


@pytest.fixture
def spawn(tmp_path: Path, triton_server: TritonServer) -> Iterator[Callable[..., ApiProcess]]:
    started: list[ApiProcess] = []

    def start(*args: str, http_port: int | None = None) -> ApiProcess:
        p = ApiProcess(
            tmp_path / "data",
            tmp_path / "serve-api.log",
            ["--triton-url", triton_server.grpc_url, *args],
            http_port=http_port,
        )
        started.append(p)
        p.wait_serving()
        return p

    yield start
    for p in started:
        p.stop(signal.SIGKILL)


def open_page(page: Any, api: ApiProcess) -> None:
    page.goto(f"{api.http_url}/")
    page.wait_for_selector("#scheduler option", state="attached")


def generate(page: Any, prompt: str, **fields: str) -> None:
    page.fill("#prompt", prompt)
    for name, value in fields.items():
        if name == "scheduler":
            page.select_option("#scheduler", value)
        else:
            page.fill(f"#{name}", value)
    page.click("#generate")


def browser_frames(page: Any, count: int, fps: int) -> np.ndarray:
    shots = page.evaluate(FRAMES_JS, {"fps": fps, "count": count})
    size = int(np.sqrt(len(base64.b64decode(shots[0])) // 4))
    return np.stack(
        [
            np.frombuffer(base64.b64decode(s), np.uint8).reshape(size, size, 4)[..., :3]
            for s in shots
        ]
    )


def served_mp4(api: ApiProcess, video_id: str, token: str | None = None) -> bytes:
    request = urllib.request.Request(f"{api.http_url}/v1/videos/{video_id}/content")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as reply:
        return bytes(reply.read())


def test_prompt_to_a_playing_video_with_live_progress_and_the_prompts_colours(
    page: Any, spawn: Callable[..., ApiProcess], tmp_path: Path
):
    api = spawn()
    open_page(page, api)
    page.evaluate(WATCH_STEPS)
    generate(page, RED_CIRCLE, steps="40")
    page.wait_for_function(PLAYING, timeout=60_000)

    shown = [
        int(m.group(1))
        for text in page.evaluate("window.stepTexts")
        if (m := re.match(r"step (\d+) of 40", text))
    ]
    assert shown == sorted(shown) and shown[-1] == 40, shown
    assert len({s for s in shown if 0 < s < 40}) >= 5, shown  # it advanced step by step
    assert page.inner_text("#status") == "done"
    seed_text = re.match(r"seed (\d+)", page.inner_text("#seed-used"))
    assert seed_text is not None, page.inner_text("#seed-used")  # the chosen seed, shown

    video_id = page.evaluate("document.getElementById('video').dataset.id")
    mp4 = served_mp4(api, video_id)
    expected = decode_mp4(mp4)
    frames = browser_frames(page, len(expected), fps=8)
    verdict = judge(frames)
    assert (verdict.background, verdict.color) == ("black", "red"), verdict
    diff = np.abs(frames.astype(np.int16) - expected.astype(np.int16))
    assert diff.mean() < 2.0 and diff.max() <= 16, (diff.mean(), diff.max())  # the same file

    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / "downloaded.mp4"
    download.value.save_as(saved)
    assert saved.read_bytes() == mp4
    entry = page.locator(f"#history-list li[data-id='{video_id}']")
    assert f"seed {seed_text.group(1)}" in entry.inner_text()
    assert "completed" in entry.inner_text()


def test_history_survives_a_restart_replays_settings_and_cancels(
    page: Any, spawn: Callable[..., ApiProcess]
):
    first = spawn()
    open_page(page, first)
    generate(page, "a blue square growing on a white background", seed="1234", steps="5",
             guidance="3.5", scheduler="heun", seconds="1")  # fmt: skip
    page.wait_for_function(PLAYING, timeout=60_000)
    video_id = page.evaluate("document.getElementById('video').dataset.id")
    first.stop()

    second = spawn(http_port=first.http_port)  # the same URL, a new process, the same store
    page.reload()
    entry = page.locator(f"#history-list li[data-id='{video_id}']")
    entry.wait_for()
    assert "a blue square growing on a white background" in entry.inner_text()
    page.click("#clear")
    entry.locator("button.replay").click()
    assert page.input_value("#prompt") == "a blue square growing on a white background"
    assert page.input_value("#seed") == "1234" and page.input_value("#steps") == "5"
    assert page.input_value("#guidance") == "3.5" and page.input_value("#scheduler") == "heun"
    assert page.input_value("#seconds") == "1"
    entry.locator("button.play").click()
    page.wait_for_function(PLAYING, timeout=30_000)

    # A long one (40 s of video: 40 windows of 200 steps), cancelled mid-way.
    generate(page, RED_CIRCLE, steps="200", seconds="40", seed="")
    page.wait_for_function(
        "() => /step [1-9]\\d* of/.test(document.getElementById('step-text').textContent)",
        timeout=60_000,
    )
    page.click("#cancel-current")
    page.wait_for_function(
        "() => document.getElementById('status').textContent.startsWith('cancelled')",
        timeout=30_000,
    )
    assert "cancelled by CancelJob after step" in page.inner_text("#status")
    page.wait_for_load_state("networkidle")  # the cancel's own (older) reply arrives too
    assert page.inner_text("#status").startswith("cancelled"), "a stale reply won"
    second.wait_idle()  # the slot is free again


def test_errors_are_shown_in_words(page: Any, spawn: Callable[..., ApiProcess]):
    api = spawn()
    open_page(page, api)
    generate(page, "   ")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error") == (
        "prompt: must not be empty or only whitespace; describe the video"
    )
    generate(page, RED_CIRCLE, steps="0")
    page.wait_for_function("() => document.getElementById('error').textContent.startsWith('steps')")
    assert page.inner_text("#error") == "steps: must be between 1 and 200, got 0"
    generate(page, RED_CIRCLE, steps="4", seconds="120")
    page.wait_for_function(
        "() => document.getElementById('error').textContent.startsWith('seconds')"
    )
    assert "seconds: must be between 0.75 and 60 seconds" in page.inner_text("#error")


def test_an_uploaded_image_is_the_first_frame_and_the_page_asks_for_a_token(
    page: Any, spawn: Callable[..., ApiProcess], tmp_path: Path
):
    (tmp_path / "tokens").write_text("page-token\n")
    api = spawn("--auth-tokens-file", str(tmp_path / "tokens"))
    page.goto(f"{api.http_url}/")
    page.wait_for_selector("#auth:not([hidden])")  # 401 from /v1/models: the page asks
    page.fill("#token", "page-token")
    page.click("#save-token")
    page.wait_for_selector("#scheduler option", state="attached")

    attrs = ("gray", "orange", "square", "left")
    image = world.render(world.sample_scene(np.random.default_rng(5), *attrs))[0]
    (tmp_path / "first.png").write_bytes(encode_png(image))
    page.set_input_files("#image", str(tmp_path / "first.png"))
    generate(page, canonical_caption(attrs), seed="0")
    page.wait_for_function(PLAYING, timeout=60_000)
    first = browser_frames(page, 1, fps=8)[0]
    mse = float(np.mean((first.astype(np.float64) - image.astype(np.float64)) ** 2))
    assert 10 * np.log10(255.0**2 / mse) >= 20.0  # the upload, not the prompt, made frame 0
    video_id = page.evaluate("document.getElementById('video').dataset.id")
    assert served_mp4(api, video_id, token="page-token")[4:8] == b"ftyp"
    assert "page-token" not in api.log_text()  # tokens never reach the log
