"""The public proto: it compiles, follows the lint rules, never breaks v1, and the
installed stubs were generated from the proto on disk."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem + "_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lint() -> ModuleType:
    return _load(ROOT / "proto/lint.py")


def test_proto_compiles_passes_lint_and_matches_the_lock(lint):
    assert lint.main([]) == 0


def test_lock_catches_a_renumbered_or_removed_field(lint):
    current = lint.surface(lint.compile_protos())
    locked = json.loads(lint.LOCK.read_text())
    assert lint.breaking(current, locked) == []
    moved = {**locked, "cinetron.v1.GenerateRequest.prompt": "2 label1 type9"}
    assert "changed" in lint.breaking(current, moved)[0]
    gone = {**locked, "cinetron.v1.GenerateRequest.colour": "99 label1 type9"}
    assert "was removed" in lint.breaking(current, gone)[0]


def test_lint_rejects_bad_names(lint, tmp_path):
    bad = tmp_path / "cinetron" / "v1"
    bad.mkdir(parents=True)
    (bad / "bad.proto").write_text(
        'syntax = "proto3";\npackage cinetron.v1;\n'
        "enum Colour { RED = 0; }\n"
        "message thing { string BadField = 1; }\n"
        "service Things { rpc get(thing) returns (thing); }\n"
    )
    problems = "\n".join(lint.lint(lint.compile_protos(tmp_path)))
    for expected in (
        "message thing must be PascalCase",
        "BadField must be lower_snake_case",
        "COLOUR_UNSPECIFIED",
        "service Things must be PascalCase ending in Service",
        "rpc get must be PascalCase",
        "must take getRequest",
        "needs a comment",
    ):
        assert expected in problems


def _without_json_names(fd: descriptor_pb2.FileDescriptorProto) -> None:
    """protoc adds json_name to descriptor sets but not to the embedded descriptor."""

    def strip(message: descriptor_pb2.DescriptorProto) -> None:
        for field in message.field:
            field.ClearField("json_name")
        for nested in message.nested_type:
            strip(nested)

    for message in fd.message_type:
        strip(message)


def test_installed_stubs_were_built_from_the_proto_on_disk(lint):
    from cinetron.api_client import pb

    on_disk = next(f for f in lint.compile_protos().file if f.name == "cinetron/v1/video.proto")
    on_disk.ClearField("source_code_info")
    installed = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    _without_json_names(on_disk)
    _without_json_names(installed)
    assert installed == on_disk, "stale stubs: run `pip install -e .` after editing proto/"


def test_protogen_writes_an_importable_flat_package(tmp_path):
    protogen = _load(ROOT / "src/cinetron/api_client/protogen.py")
    written = {p.name for p in protogen.generate(out_dir=tmp_path / "_proto")}
    assert {"__init__.py", "video_pb2.py", "video_pb2_grpc.py", "video_pb2.pyi"} <= written
    grpc_stub = (tmp_path / "_proto" / "video_pb2_grpc.py").read_text()
    assert "from cinetron.api_client._proto import video_pb2" in grpc_stub
    assert "from cinetron.v1" not in grpc_stub
