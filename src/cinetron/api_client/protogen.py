"""Generate the Python gRPC stubs for ``proto/cinetron/v1/*.proto`` into ``_proto/`` here.

Run by ``setup.py`` at install time (``pip install .`` and ``pip install -e .``), so the
stubs are built from the contract and never committed. Standalone on purpose: it imports
nothing from ``cinetron`` because it runs before the package is installed.

``protoc`` writes ``cinetron/v1/video_pb2.py``; we flatten it into the
``cinetron.api_client._proto`` package and point the cross-file imports there. The
descriptor keeps its canonical name ``cinetron/v1/video.proto``, which is what server
reflection (and so ``grpcurl``) shows.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # src/cinetron/api_client/ → the repository
PROTO_ROOT = ROOT / "proto"
OUT_DIR = ROOT / "src" / "cinetron" / "api_client" / "_proto"
PACKAGE = "cinetron.api_client._proto"
_CROSS_IMPORT = re.compile(r"^from cinetron\.v1 import ", re.MULTILINE)


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    return sorted((proto_root / "cinetron").rglob("*.proto"))


def protoc(args: list[str]) -> None:
    """Run grpc_tools' bundled protoc; raises with protoc's own message on failure."""
    try:
        import grpc_tools
        from grpc_tools import protoc as _protoc
    except ImportError as e:  # pragma: no cover - the build requirements include it
        raise RuntimeError(
            "grpcio-tools is needed to build the gRPC stubs: pip install 'grpcio-tools>=1.66'"
        ) from e
    include = Path(grpc_tools.__file__).parent / "_proto"
    code = _protoc.main(["grpc_tools.protoc", f"-I{include}", *args])
    if code != 0:
        raise RuntimeError(f"protoc failed (exit {code}) on {' '.join(args)}")


def generate(proto_root: Path = PROTO_ROOT, out_dir: Path = OUT_DIR) -> list[Path]:
    """(Re)write the stubs; returns the files written. Idempotent."""
    protos = proto_files(proto_root)
    if not protos:
        raise RuntimeError(f"no .proto files under {proto_root / 'cinetron'}")
    with tempfile.TemporaryDirectory() as tmp:
        protoc(
            [
                f"-I{proto_root}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                *(str(p) for p in protos),
            ]
        )
        staged = Path(tmp) / "staged"
        staged.mkdir()
        (staged / "__init__.py").write_text(
            '"""Generated from proto/ at install time by cinetron/api_client/protogen.py. '
            'Do not edit."""\n'
        )
        for path in sorted((Path(tmp) / "cinetron").rglob("*.py*")):
            text = _CROSS_IMPORT.sub(f"from {PACKAGE} import ", path.read_text())
            (staged / path.name).write_text(text)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.copytree(staged, out_dir)
    return sorted(out_dir.iterdir())


def main(argv: list[str] | None = None) -> int:
    for path in generate():
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
