"""``cinetron <command> [args]``: each command lives in its own module with its own ``main``."""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("cinetron.tools.generate", "generate a video from a prompt (Triton or --local)"),
    "eval": ("cinetron.tools.evaluate", "score generated videos with the procedural judge"),
    "train": ("cinetron.models.train", "train the built-in shapes model (VAE, then DiT)"),
    "export": ("cinetron.export.cli", "export ONNX models and write the Triton model repository"),
    "serve-triton": (
        "cinetron.tools.tritonserver",
        "run the bundled tritonserver on the repository",
    ),
    "serve-api": ("cinetron.api.main", "run the public gRPC API (cinetron.v1)"),
}


def usage() -> str:
    lines = ["usage: cinetron <command> [options]", "", "commands:"]
    lines += [f"  {name:<13} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += [
        "",
        "`cinetron <command> --help` for the options of one command. Benchmarks live in the",
        "source checkout: `python -m bench <suite>` (see docs/performance.md).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"cinetron: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    result = module.main(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
