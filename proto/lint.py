"""Lint and compatibility check of the public protos: a small, offline buf lint + buf breaking.

    python proto/lint.py                 # compile with protoc, lint, check against the lock
    python proto/lint.py --update-lock   # after *adding* fields/RPCs: record them

Lint (buf STANDARD, the parts we use): package ``cinetron.vN`` matching the directory;
PascalCase messages, enums, services (suffix ``Service``) and RPCs; lower_snake_case
fields; UPPER_SNAKE enum values prefixed with the enum name, zero value ``*_UNSPECIFIED``;
RPC requests named ``<Rpc>Request``; unary responses ``<Rpc>Response``; a comment on
every service and RPC.

Compatibility: ``proto/cinetron.lock.json`` records every field's number, type and label
and every RPC's signature. A change to a recorded entry (renumbering, retyping, removal)
fails: v1 only grows. New entries are allowed and recorded with ``--update-lock``.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
LOCK = ROOT / "cinetron.lock.json"
_PASCAL = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
_UPPER = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def compile_protos(proto_root: Path = ROOT):  # type: ignore[no-untyped-def]
    """protoc → FileDescriptorSet (with source info, for comments). Raises on syntax errors."""
    import grpc_tools
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    files = sorted(str(p) for p in (proto_root / "cinetron").rglob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        code = protoc.main(
            ["protoc", f"-I{proto_root}", f"-I{include}", "--include_source_info",
             f"--descriptor_set_out={out}", *files]
        )  # fmt: skip
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code} (its message is above)")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _comments(fd) -> set[tuple[int, ...]]:  # type: ignore[no-untyped-def]
    return {
        tuple(loc.path)
        for loc in fd.source_code_info.location
        if loc.leading_comments.strip() or loc.trailing_comments.strip()
    }


def lint(fds) -> list[str]:  # type: ignore[no-untyped-def]
    problems: list[str] = []
    for fd in fds.file:
        where = fd.name
        version_dir = Path(fd.name).parent.as_posix().replace("/", ".")
        if fd.package != version_dir or not re.fullmatch(r"cinetron\.v\d+", fd.package):
            problems.append(
                f"{where}: package {fd.package!r} must be {version_dir!r} (cinetron.vN)"
            )
        commented = _comments(fd)

        def message(m, path: str, where: str = where) -> None:  # type: ignore[no-untyped-def]
            if not _PASCAL.match(m.name):
                problems.append(f"{where}: message {path} must be PascalCase")
            for f in m.field:
                if not _SNAKE.match(f.name):
                    problems.append(f"{where}: field {path}.{f.name} must be lower_snake_case")
            for nested in m.nested_type:
                if not nested.options.map_entry:
                    message(nested, f"{path}.{nested.name}")
            for e in m.enum_type:
                enum(e, f"{path}.{e.name}")

        def enum(e, path: str, where: str = where) -> None:  # type: ignore[no-untyped-def]
            if not _PASCAL.match(e.name):
                problems.append(f"{where}: enum {path} must be PascalCase")
            prefix = _upper_snake(e.name) + "_"
            for v in e.value:
                if not _UPPER.match(v.name) or not v.name.startswith(prefix):
                    problems.append(f"{where}: {v.name} must be UPPER_SNAKE, prefix {prefix}")
            first = e.value[0] if e.value else None
            if first and (first.number != 0 or not first.name.endswith("_UNSPECIFIED")):
                problems.append(f"{where}: enum {path} must start with {prefix}UNSPECIFIED = 0")

        for m in fd.message_type:
            message(m, m.name)
        for e in fd.enum_type:
            enum(e, e.name)
        for si, s in enumerate(fd.service):
            if not _PASCAL.match(s.name) or not s.name.endswith("Service"):
                problems.append(f"{where}: service {s.name} must be PascalCase ending in Service")
            if (6, si) not in commented:
                problems.append(f"{where}: service {s.name} needs a comment")
            for mi, rpc in enumerate(s.method):
                if not _PASCAL.match(rpc.name):
                    problems.append(f"{where}: rpc {rpc.name} must be PascalCase")
                if (6, si, 2, mi) not in commented:
                    problems.append(f"{where}: rpc {s.name}.{rpc.name} needs a comment")
                if rpc.input_type.rsplit(".", 1)[-1] != f"{rpc.name}Request":
                    problems.append(f"{where}: rpc {rpc.name} must take {rpc.name}Request")
                out = rpc.output_type.rsplit(".", 1)[-1]
                if not rpc.server_streaming and out != f"{rpc.name}Response":
                    problems.append(f"{where}: unary rpc {rpc.name} must return {rpc.name}Response")
    return problems


def surface(fds) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Everything a caller depends on, as stable keys → signatures."""
    out: dict[str, str] = {}
    for fd in fds.file:

        def message(m, path: str) -> None:  # type: ignore[no-untyped-def]
            for f in m.field:
                oneof = (
                    f"oneof {m.oneof_decl[f.oneof_index].name} "
                    if f.HasField("oneof_index")
                    else ""
                )
                kind = f.type_name or f"type{f.type}"
                out[f"{path}.{f.name}"] = f"{f.number} label{f.label} {oneof}{kind}".strip()
            for nested in m.nested_type:
                message(nested, f"{path}.{nested.name}")
            for e in m.enum_type:
                for v in e.value:
                    out[f"{path}.{e.name}.{v.name}"] = str(v.number)

        for m in fd.message_type:
            message(m, f"{fd.package}.{m.name}")
        for e in fd.enum_type:
            for v in e.value:
                out[f"{fd.package}.{e.name}.{v.name}"] = str(v.number)
        for s in fd.service:
            for rpc in s.method:
                stream = "stream " if rpc.server_streaming else ""
                out[f"{fd.package}.{s.name}/{rpc.name}"] = (
                    f"{rpc.input_type} -> {stream}{rpc.output_type}"
                )
    return out


def breaking(current: dict[str, str], locked: dict[str, str]) -> list[str]:
    problems = []
    for key, sig in locked.items():
        if key not in current:
            problems.append(f"{key} was removed (it was {sig}); keep it, or reserve its number "
                            "in a new major version")  # fmt: skip
        elif current[key] != sig:
            problems.append(f"{key} changed from {sig!r} to {current[key]!r}; v1 only grows")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    fds = compile_protos()
    problems = lint(fds)
    current = surface(fds)
    locked = json.loads(LOCK.read_text()) if LOCK.exists() else {}
    problems += breaking(current, locked)
    if "--update-lock" in args and not problems:
        LOCK.write_text(json.dumps(dict(sorted(current.items())), indent=1) + "\n")
        print(f"recorded {len(current)} entries in {LOCK.name}")
    elif set(current) - set(locked):
        new = ", ".join(sorted(set(current) - set(locked))[:5])
        problems.append(f"not in {LOCK.name} yet: {new}…; run `python proto/lint.py --update-lock`")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
