"""``python -m bench screenshot``: the web preview page's picture in ``docs/web-preview.png``.

Starts tritonserver on ``--repo`` and ``cinetron serve-api`` in front of it (free loopback
ports), makes a few videos through the page in Debian's headless Chromium (Playwright, the
same flags as tests/test_web_preview.py), and screenshots the page with the last video
playing and the history below it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "web-preview.png"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PLAYING = """() => { const v = document.getElementById('video');
    return !v.hidden && v.readyState >= 2 && v.currentTime > 0.6 && !v.paused; }"""
PROMPTS = (
    ("a yellow triangle moving right on a gray background", "3"),
    ("a blue square growing on a white background", "11"),
    ("a red circle moving to the left on a black background", "7"),
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench screenshot", description=__doc__)
    p.add_argument("--repo", type=Path, default=Path("model_repository"), help="exported repo")
    p.add_argument("--out", type=Path, default=OUT, help="PNG path")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from bench.servers import api_server, triton

    with (
        triton(args.repo) as server,
        api_server(server.grpc_url, max_concurrency=2) as api,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 860})
        page.goto(f"{api.http_url}/")
        page.wait_for_selector("#scheduler option", state="attached")
        for prompt, seed in PROMPTS:
            page.fill("#prompt", prompt)
            page.fill("#seed", seed)
            page.click("#generate")
            page.wait_for_function(PLAYING, timeout=60_000)
        page.wait_for_selector("#history-list li[data-status='completed'] >> nth=2")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
