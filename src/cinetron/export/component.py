"""One export path for every network of every family: ``Component`` → ONNX → parity.

A family (``families/shapes.py``, ``families/wan.py``) turns its weights into
``Component``s named and shaped by the contract; this module exports each with the dynamo
exporter, checks onnxruntime against torch on several shapes and fails the export when
they disagree, and pins the served shapes. One tolerance policy for all: a graph whose
error passes ``tolerance × max(1, max |output|)`` is never written into a repository.

Measured choices (EXPORT_NOTES.md): dynamo only (the TorchScript exporter gives silently
wrong dynamic axes on transformers); example inputs with batch ≥ 2 (dynamo freezes an
axis that is 1 in the example), so every export is also checked at batch 1 and 3;
external data past 2 GB.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnx
import torch
from torch import nn

from cinetron.triton_backend.sessions import cpu_session

OPSET = 20
EXAMPLE_BATCH = 2  # ≥ 2: dynamo would freeze a batch axis that is 1 in the example
# Past this many bytes of weights, write them beside the graph (`model.onnx.data`):
# protobuf cannot hold a message over 2 GB.
EXTERNAL_DATA_BYTES = 1_500_000_000
# Max |onnx − torch| relative to max(1, max |torch output|): fp32 graphs differ from torch
# by float rounding (≤ 1e-5 on every model here); fp16 ones by about 1e-3–1e-2.
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}

Precision = Literal["fp32", "fp16"]
Feeds = dict[str, npt.NDArray[np.generic]]
Log = Callable[[str], None]

_NOISY_LOGGERS = (
    "torch.onnx._internal.exporter._registration",
    "onnxscript.optimizer._constant_folding",
)


class ExportError(RuntimeError):
    """The export failed or its ONNX graph disagrees with torch."""


def batch_only(input_names: Sequence[str]) -> dict[str, dict[int, Any]]:
    """Dynamic shapes with only the batch axis free (the served models' one dynamic axis)."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    return {name: {0: batch} for name in input_names}


@dataclass
class Component:
    """One network to export under the contract's model name and tensor names.

    ``checks`` are inputs at other batch sizes (and, where the axes are symbolic at
    export, other spatial sizes) than the example, so a wrongly frozen axis shows up as a
    shape error or a parity failure here, not in production. ``reference`` is the fp32
    module to compare against when ``module`` runs in fp16.
    """

    name: str
    module: nn.Module
    input_names: tuple[str, ...]
    output_name: str
    example: Feeds  # batch EXAMPLE_BATCH
    checks: list[Feeds]
    dynamic_shapes: dict[str, dict[int, Any]] | None = None  # default: batch only
    precision: Precision = "fp32"
    reference: nn.Module | None = None
    optimize: bool = True
    # Per-sample shapes the served graph is pinned to (graph input/output name → dims
    # without the batch); ``served_check`` runs on the pinned graph when it is cheap.
    served_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    served_check: Feeds | None = None

    @property
    def tolerance(self) -> float:
        return TOLERANCE[self.precision]

    def weight_bytes(self) -> int:
        tensors = [*self.module.parameters(), *self.module.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class Parity:
    """Largest |onnxruntime − torch| over every checked case, and the output's scale."""

    model: str
    max_abs: float
    output_scale: float
    cases: int
    export_s: float
    external_data: bool

    def line(self) -> str:
        return (
            f"parity model={self.model} max_abs={self.max_abs:.2e} "
            f"output_max_abs={self.output_scale:.2f} cases={self.cases} "
            f"export_s={self.export_s:.1f} external_data={str(self.external_data).lower()}"
        )


def torch_run(module: nn.Module, names: Sequence[str], feeds: Feeds) -> npt.NDArray[np.float32]:
    with torch.inference_mode():
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names]
        return np.asarray(module(*args).float().numpy())


def export_component(component: Component, path: Path) -> tuple[float, bool]:
    """Write ``path`` (and ``path.data`` when large); returns (seconds, external data?)."""
    start = time.perf_counter()
    args = tuple(torch.from_numpy(component.example[n]) for n in component.input_names)
    external = component.weight_bytes() > EXTERNAL_DATA_BYTES
    dynamic = component.dynamic_shapes or batch_only(component.input_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + ".data")):
        stale.unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Keep `cinetron export` readable: the exporter warns about torchvision ops we never
        # use, and onnxscript's constant folder about shapes it leaves to runtime.
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(
                component.module,
                args,
                dynamo=True,
                opset_version=OPSET,
                input_names=list(component.input_names),
                output_names=[component.output_name],
                dynamic_shapes=dynamic,
                optimize=component.optimize,
                verbose=False,
            )
        except Exception as e:
            raise ExportError(f"{component.name}: torch.onnx.export failed: {e}") from e
    if program is None:
        raise ExportError(f"{component.name}: torch.onnx.export returned no program")
    program.save(str(path), external_data=external)
    # The full check runs shape inference over every node: affordable only for small graphs.
    onnx.checker.check_model(str(path), full_check=not external)
    return time.perf_counter() - start, external


def pin_shapes(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Fix every non-batch axis of the named graph inputs/outputs to the served size.

    An export may keep latent/spatial axes symbolic so parity can be checked on small,
    cheap inputs; the served graph then gets the exact shapes of the Triton config
    (runtimes and TensorRT plan for one shape; only the batch stays dynamic).
    """
    model = onnx.load(str(path), load_external_data=False)  # weights stay where they are
    for value in [*model.graph.input, *model.graph.output]:
        if value.name not in shapes:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shapes[value.name]) + 1:
            raise ExportError(
                f"{path}: {value.name!r} has rank {len(dims)}, expected batch + "
                f"{shapes[value.name]}; the wrapper and the repository spec disagree"
            )
        for axis, size in enumerate(shapes[value.name], start=1):
            dims[axis].ClearField("dim_param")
            dims[axis].dim_value = size
    onnx.save(model, str(path))


def max_error(component: Component, path: Path, cases: Sequence[Feeds]) -> tuple[float, float]:
    """(largest |onnxruntime − torch|, largest |torch|) over ``cases``."""
    session = cpu_session(path)
    reference = component.reference or component.module
    worst = scale = 0.0
    for i, feeds in enumerate(cases):
        got = session.run([component.output_name], feeds)[0]
        want = torch_run(reference, component.input_names, feeds)
        if got.shape != want.shape:
            shapes = {n: feeds[n].shape for n in component.input_names}
            raise ExportError(
                f"{component.name}: ONNX output shape {got.shape} != torch {want.shape} for "
                f"inputs {shapes} (case {i}); an axis was frozen at export"
            )
        worst = max(worst, float(np.abs(got.astype(np.float32) - want).max()))
        scale = max(scale, float(np.abs(want).max()))
    return worst, scale


def export_and_check(component: Component, path: Path) -> Parity:
    """Export ``component`` to ``path``, check it, pin its served shapes and check again;
    raises ``ExportError`` (and removes the graph) past the tolerance."""
    seconds, external = export_component(component, path)
    cases = [component.example, *component.checks]
    worst, scale = max_error(component, path, cases)
    if component.served_shapes:
        pin_shapes(path, component.served_shapes)
        if component.served_check is not None:
            served, served_scale = max_error(component, path, [component.served_check])
            worst, scale = max(worst, served), max(scale, served_scale)
            cases.append(component.served_check)
    limit = component.tolerance * max(1.0, scale)
    if not worst <= limit:  # `not <=` also catches NaN
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".data").unlink(missing_ok=True)
        raise ExportError(
            f"{component.name}: onnxruntime differs from torch by {worst:.3e} (limit {limit:.1e}, "
            f"{component.precision}); the exported graph is wrong, do not serve it"
        )
    return Parity(component.name, worst, scale, len(cases), seconds, external)


def export_components(components: Sequence[Component], out: Path, log: Log = print) -> list[Parity]:
    """Export each component to ``out/<name>/1/model.onnx`` and check it."""
    results = []
    for component in components:
        log(
            f"event=export_start model={component.name} precision={component.precision} "
            f"weights_mb={component.weight_bytes() / 1e6:.0f}"
        )
        result = export_and_check(component, out / component.name / "1" / "model.onnx")
        log(result.line())
        results.append(result)
    return results
