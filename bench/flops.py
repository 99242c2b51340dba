"""``python -m bench flops``: denoiser FLOPs per step, counted from the ONNX graph, and the
matmul peak of this machine.

FLOPs are counted for the compute-heavy ops only — ``MatMul``, ``Gemm`` and ``Conv`` —
as 2 × multiply-accumulates (bias adds, softmax, norms and other elementwise ops are
left out; in a transformer they are a few percent). Shapes come from running the graph
once at the asked batch size with every counted op's inputs exposed as outputs, so
dynamic reshapes inside the graph never leave a shape unknown.

The peak is an onnxruntime ``MatMul`` of two ``N × N`` float32 matrices on 1 thread and
on every core (the same runtime and threads the denoiser uses), best of several runs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.output import emit

COUNTED_OPS = ("MatMul", "Gemm", "Conv")
RESULTS = Path(__file__).resolve().parent / "results" / "flops.json"


def matmul_flops(a: Sequence[int], b: Sequence[int]) -> int:
    """``MatMul`` with numpy semantics (broadcast batch dims; 1-D operands promoted).

    ``a [..., M, K] @ b [..., K, N]`` costs ``2 · (batch) · M · N · K``.
    """
    a, b = list(a), list(b)
    if len(a) == 1:
        a = [1, *a]
    if len(b) == 1:
        b = [*b, 1]
    if a[-1] != b[-2]:
        raise ValueError(f"MatMul inner dimensions differ: {a} @ {b}")
    batch = np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return 2 * math.prod(batch) * a[-2] * b[-1] * a[-1]


def gemm_flops(a: Sequence[int], b: Sequence[int], trans_a: bool, trans_b: bool) -> int:
    """``Gemm``: ``op(A) [M, K] · op(B) [K, N]`` costs ``2 · M · N · K`` (bias not counted)."""
    m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
    k2, n = (b[1], b[0]) if trans_b else (b[0], b[1])
    if k != k2:
        raise ValueError(f"Gemm inner dimensions differ: A {list(a)} B {list(b)}")
    return 2 * m * n * k


def conv_flops(weight: Sequence[int], output: Sequence[int], group: int) -> int:
    """``Conv``: weight ``[C_out, C_in / group, *kernel]``, output ``[N, C_out, *spatial]``:
    every output element costs ``C_in / group · prod(kernel)`` multiply-accumulates."""
    return 2 * math.prod(output) * weight[1] * math.prod(weight[2:])


@dataclass(frozen=True)
class FlopCount:
    batch: int
    total: int
    by_op: dict[str, int]
    nodes: dict[str, int]  # how many nodes of each counted op type

    def as_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "total": self.total, "by_op": self.by_op, "nodes": self.nodes}


def _dummy_feeds(session: Any, batch: int) -> dict[str, np.ndarray]:
    """Inputs of the right shape and dtype; values do not change the FLOP count."""
    feeds = {}
    for i in session.get_inputs():
        shape = [batch if not isinstance(d, int) else d for d in i.shape]
        if "int" in i.type:
            feeds[i.name] = np.ones(shape, dtype=np.int64 if "int64" in i.type else np.int32)
        else:
            feeds[i.name] = np.full(shape, 0.5, dtype=np.float32)
    return feeds


def count_flops(model: str | Path | Any, batch: int = 1) -> FlopCount:
    """FLOPs of one forward pass at ``batch`` (dynamic dims take ``batch``).

    ``model``: a path or an ``onnx.ModelProto`` (graphs with external data: a path).
    """
    import onnx

    from cinetron.triton_backend.sessions import cpu_session

    proto = onnx.load(str(model)) if isinstance(model, str | Path) else model
    proto = onnx.shape_inference.infer_shapes(proto)  # element types of the intermediates
    graph = proto.graph
    constants = {t.name: list(t.dims) for t in graph.initializer}
    elem_types = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    elem_types.update({v.name: v.type.tensor_type.elem_type for v in graph.input})
    elem_types.update({v.name: v.type.tensor_type.elem_type for v in graph.output})
    counted = [n for n in graph.node if n.op_type in COUNTED_OPS]

    wanted: list[str] = []
    for node in counted:
        names = [*node.input[:2], node.output[0]]
        wanted += [n for n in names if n and n not in constants and n not in wanted]
    existing = {o.name for o in graph.output}
    for name in wanted:
        if name not in existing:
            if name not in elem_types:
                raise ValueError(f"cannot tell the element type of {name!r} to expose it")
            graph.output.append(onnx.helper.make_tensor_value_info(name, elem_types[name], None))

    # No fusion: the counted nodes must survive as they are in the file.
    session = cpu_session(proto.SerializeToString(), optimize=False)
    values = session.run(wanted, _dummy_feeds(session, batch))
    shapes = {name: list(v.shape) for name, v in zip(wanted, values, strict=True)}
    shapes.update(constants)

    by_op = dict.fromkeys(COUNTED_OPS, 0)
    nodes = dict.fromkeys(COUNTED_OPS, 0)
    for node in counted:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        a, b, out = shapes[node.input[0]], shapes[node.input[1]], shapes[node.output[0]]
        if node.op_type == "MatMul":
            flops = matmul_flops(a, b)
        elif node.op_type == "Gemm":
            flops = gemm_flops(a, b, bool(attrs.get("transA", 0)), bool(attrs.get("transB", 0)))
        else:
            flops = conv_flops(b, out, int(attrs.get("group", 1)))
        by_op[node.op_type] += flops
        nodes[node.op_type] += 1
    return FlopCount(batch, sum(by_op.values()), by_op, nodes)


def gemm_peak(threads: int, n: int = 1024, repeats: int = 7) -> float:
    """Best FLOP/s of an onnxruntime ``N × N`` float32 MatMul on ``threads`` threads."""
    import onnx
    from onnx import TensorProto, helper

    from cinetron.triton_backend.sessions import cpu_session

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "gemm_peak",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    session = cpu_session(model.SerializeToString(), threads)
    rng = np.random.default_rng(0)
    feeds = {k: rng.standard_normal((n, n), dtype=np.float32) for k in ("a", "b")}
    session.run(None, feeds)  # warm-up: thread pool, packing buffers
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feeds)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def machine_peak(n: int = 1024) -> dict[str, float]:
    """Matmul peak on one thread and on every core (FLOP/s)."""
    cores = os.cpu_count() or 1
    return {
        "gemm_n": float(n),
        "one_thread_flops": gemm_peak(1, n),
        "all_cores_flops": gemm_peak(cores, n),
        "cores": float(cores),
    }


def denoiser_report(repo: Path, cfg_batch: int = 2) -> dict[str, Any]:
    """FLOPs of one denoising step (CFG: one call at batch ``cfg_batch``) and per sample."""
    path = repo / "denoiser" / "1" / "model.onnx"
    step = count_flops(path, batch=cfg_batch)
    one = count_flops(path, batch=1)
    return {
        "model": str(path),
        "flops_per_step": step.total,  # one CFG step = one call at batch 2
        "flops_per_sample": one.total,
        "step": step.as_dict(),
        "counted_ops": list(COUNTED_OPS),
    }


def batch_scaling(
    path: Path, sizes: Sequence[int] = (2, 4, 8, 16), repeats: int = 15
) -> list[dict[str, float]]:
    """Best onnxruntime time (1 thread) of one denoiser call per batch size: if the time
    per sample does not fall as the batch grows, batching cannot buy CPU throughput."""
    from cinetron.triton_backend.sessions import cpu_session

    session = cpu_session(path)
    per_sample = count_flops(path, batch=1).total
    rows = []
    for batch in sizes:
        feeds = _dummy_feeds(session, batch)
        session.run(None, feeds)
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            session.run(None, feeds)
            best = min(best, time.perf_counter() - t0)
        rows.append({
            "batch": float(batch),
            "ms": 1e3 * best,
            "ms_per_sample": 1e3 * best / batch,
            "flops_per_s": per_sample * batch / best,
        })  # fmt: skip
    return rows


def fmt_flops(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f} "


def table(report: dict[str, Any]) -> str:
    d, p = report["denoiser"], report["peak"]
    return "\n".join(
        [
            f"denoiser FLOPs per step (CFG batch 2, {'/'.join(d['counted_ops'])}): "
            f"{fmt_flops(d['flops_per_step'])}FLOP ({fmt_flops(d['flops_per_sample'])}FLOP "
            f"per sample); nodes {d['step']['nodes']}",
            f"matmul peak (onnxruntime {int(p['gemm_n'])}² fp32): "
            f"{fmt_flops(p['one_thread_flops'])}FLOP/s on 1 thread, "
            f"{fmt_flops(p['all_cores_flops'])}FLOP/s on {int(p['cores'])} cores",
            "denoiser on 1 onnxruntime thread, by batch size (samples): "
            + ", ".join(
                f"{int(r['batch'])}: {r['ms_per_sample']:.2f} ms/sample "
                f"({fmt_flops(r['flops_per_s'])}FLOP/s)"
                for r in report.get("batch_scaling", [])
            ),
        ]
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench flops", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--repo", type=Path, default=Path("model_repository"), help="exported repo")
    p.add_argument("--gemm-n", type=int, default=1024, help="matrix size of the peak GEMM")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON results path")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    report = {
        "denoiser": denoiser_report(args.repo),
        "peak": machine_peak(args.gemm_n),
        "batch_scaling": batch_scaling(args.repo / "denoiser" / "1" / "model.onnx"),
    }
    return emit(args.out, report, table)


if __name__ == "__main__":
    sys.exit(main())
