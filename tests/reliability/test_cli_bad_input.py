"""``cinetron generate`` with bad arguments against a real tritonserver: each case exits
with its code (2 bad input, 3 unavailable) and a one-line message on stderr — never a
traceback — and leaves no video behind. The cases in ``AS_PROCESS`` run as real
``python -m cinetron generate`` processes; the others call the same ``main(argv)``
in-process (an escaping exception would fail the test), which keeps the corpus fast.
(tests/test_e2e_triton.py already covers steps 0, guidance nan, seed -1, an empty prompt
and an unreachable server; these are the other cases.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cinetron.tools.tritonserver import TritonServer

# (case, argv after the program name with {url} and {out} filled in, exit code, fragment)
CASES: list[tuple[str, list[str], int, str]] = [
    ("no_prompt", ["--url", "{url}"], 2, "the following arguments are required: prompt"),
    ("unknown_flag", ["a red circle", "--colour", "red"], 2, "unrecognized arguments: --colour"),
    ("steps_not_a_number", ["a red circle", "--steps", "ten"], 2,
     "argument --steps: invalid int value: 'ten'"),
    ("scheduler_unknown", ["a red circle", "--scheduler", "ddim"], 2,
     "argument --scheduler: invalid choice: 'ddim'"),
    ("steps_201", ["a red circle", "--steps", "201"], 2, "steps: must be between 1 and 200"),
    ("guidance_inf", ["a red circle", "--guidance", "inf"], 2,
     "guidance: must be between 0 and 30, got inf"),
    ("shift_0", ["a red circle", "--shift", "0"], 2, "shift: must be between 0.1 and 20"),
    ("shift_minus_inf", ["a red circle", "--shift=-inf"], 2, "got -inf"),
    ("seed_over_int64", ["a red circle", "--seed", str(2**63)], 2, "seed: must be between 0"),
    ("prompt_2001_chars", ["x" * 2001], 2, "prompt: must be at most 2000 characters"),
    ("negative_2001_chars", ["a red circle", "--negative-prompt", "n" * 2001], 2,
     "negative_prompt: must be at most 2000"),
    ("shm_with_local", ["a red circle", "--local", "onnx", "--shm"], 2,
     "--shm: applies to Triton only"),
    ("out_under_a_file", ["a red circle", "--steps", "1", "--out", "{file}/v.mp4"], 2,
     "cannot write the output"),
    ("url_malformed", ["a red circle", "--url", "::not a host::"], 3, "unavailable"),
    # bytes that are not UTF-8, as a shell in another encoding passes them
    ("prompt_not_utf8", [b"a red circle \xff\xfe moving left".decode("utf-8", "surrogateescape")],
     2, "prompt: must be valid UTF-8 text"),
    ("image_missing", ["a red circle", "--image", "{file}.missing.png"], 2,
     "--image: cannot read"),
    ("video_not_mp4", ["a red circle", "--video", "{file}"], 2, "--video: is not a readable MP4"),
    ("duration_61", ["a red circle", "--duration", "61"], 2,
     "duration: must be between 0.75 and 60 seconds"),
]  # fmt: skip


AS_PROCESS = {"no_prompt", "steps_201", "out_under_a_file", "url_malformed", "prompt_not_utf8"}


def run_cli(
    argv: list[str], as_process: bool, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """(exit code, stderr) of ``cinetron generate argv``."""
    if as_process:
        done = subprocess.run(
            [sys.executable, "-m", "cinetron", "generate", *argv],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert "Traceback" not in done.stdout
        return done.returncode, done.stderr
    from cinetron.tools.generate import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: usage + error, exit 2
        code = int(e.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cli_bad_argument_exits_with_its_code_and_one_message(
    triton_server: TritonServer,
    tmp_path: Path,
    ledger,
    capsys: pytest.CaptureFixture[str],
    case: tuple[str, list[str], int, str],
) -> None:
    name, argv, code, fragment = case
    ledger("corpus", surface="cli", name=name, expected=f"exit {code}")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the output folder should be")
    out = tmp_path / "out" / "v.mp4"
    argv = [a.format(url=triton_server.grpc_url, file=blocker) for a in argv]
    if "--url" not in argv:
        argv += ["--url", triton_server.grpc_url]
    if "--out" not in argv:
        argv += ["--out", str(out)]
    returncode, stderr = run_cli([*argv, "--quiet"], name in AS_PROCESS, capsys)
    assert returncode == code, stderr
    assert fragment in stderr, stderr
    assert "Traceback" not in stderr
    # argparse prints its (wrapped) usage before the error; ours is a single line.
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("usage:")]
    message = [ln for ln in lines if not ln.startswith(" ")]
    assert len(message) == 1, stderr
    videos = [p for p in tmp_path.rglob("*") if p.suffix in (".mp4", ".part") or ".part" in p.name]
    assert not videos, videos  # no partial or complete MP4 left behind


EVAL_CASES: list[tuple[str, list[str], int, str]] = [
    ("eval_scheduler_unknown", ["--scheduler", "bogus"], 2, "argument --scheduler: invalid choice"),
    ("eval_steps_0", ["--steps", "0", "--url", "{url}"], 2, "steps: must be between 1 and 200"),
    ("eval_seeds_0", ["--seeds", "0", "--url", "{url}"], 2, "--seeds: must be at least 1"),
    ("eval_prompts_missing", ["--prompts", "{file}.missing.jsonl", "--url", "{url}"], 2,
     "--prompts: cannot read"),
    ("eval_prompts_not_jsonl", ["--prompts", "{file}", "--url", "{url}"], 2,
     "--prompts: "),
    ("eval_triton_unreachable", ["--limit", "1", "--url", "127.0.0.1:1"], 3, "unavailable"),
]  # fmt: skip


@pytest.mark.parametrize("case", EVAL_CASES, ids=[c[0] for c in EVAL_CASES])
def test_eval_bad_argument_exits_with_its_code_and_one_message(
    triton_server: TritonServer,
    tmp_path: Path,
    ledger,
    capsys: pytest.CaptureFixture[str],
    case: tuple[str, list[str], int, str],
) -> None:
    from cinetron.tools.evaluate import main

    name, argv, code, fragment = case
    ledger("corpus", surface="cli", name=name, expected=f"exit {code}")
    blocker = tmp_path / "not-jsonl"
    blocker.write_text("this is not JSON\n")
    argv = [a.format(url=triton_server.grpc_url, file=blocker) for a in argv]
    capsys.readouterr()
    try:
        returncode = main(argv)
    except SystemExit as e:  # argparse: usage + error, exit 2
        returncode = int(e.code or 0)
    stderr = capsys.readouterr().err
    assert returncode == code, stderr
    assert fragment in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("usage:")]
    assert len([ln for ln in lines if not ln.startswith(" ")]) == 1, stderr
