"""What every Python-backend model shares: its config, and one runtime call per batch.

Triton hands ``execute`` every request the dynamic batcher collected. The point of
batching is ONE runtime call for all of them, so ``run_batched`` concatenates the
requests' inputs along the batch axis, calls the model once and splits the outputs
back per request. A request with malformed inputs gets its own error response; the
others in the batch still run.

Tensor names come from the model's config (``input_names``, ``io_dims``), which the
exporter wrote from ``cinetron.contract``: nothing here spells one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
BatchFn = Callable[[dict[str, Array]], dict[str, Array]]


def _pb() -> Any:
    # Only importable inside the stub process; imported late so this module stays
    # importable (and its helpers testable) outside Triton.
    import triton_python_backend_utils as pb_utils

    return pb_utils


class RequestError(ValueError):
    """A request the model cannot run; the message goes back to that caller only."""


def model_config(args: dict[str, str]) -> dict[str, Any]:
    return json.loads(args["model_config"])


def version_dir(args: dict[str, str]) -> Path:
    return Path(args["model_repository"]) / args["model_version"]


def parameter(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return default if value in (None, "") else str(value)


def input_names(config: dict[str, Any]) -> list[str]:
    return [t["name"] for t in config["input"]]


def io_dims(config: dict[str, Any], section: str) -> dict[str, tuple[int, ...]]:
    """Per-sample dims of each ``input``/``output`` in the model config."""
    return {t["name"]: tuple(int(d) for d in t["dims"]) for t in config[section]}


def _batch_size(name_to_array: dict[str, Array]) -> int:
    sizes = {name: a.shape[0] if a.ndim else -1 for name, a in name_to_array.items()}
    if len(set(sizes.values())) != 1 or -1 in sizes.values():
        detail = ", ".join(f"{n}={s}" for n, s in sizes.items())
        raise RequestError(
            f"every input must have the same leading batch dimension; got {detail}. "
            "Send one row per sample in each input."
        )
    n = next(iter(sizes.values()))
    if n == 0:
        raise RequestError("the request holds 0 samples; send at least one row per input")
    return n


def _error(pb: Any, message: str, invalid: bool) -> Any:
    # Error codes exist in Triton ≥ 23.x python backends; the caller then sees
    # INVALID_ARGUMENT for a bad request instead of INTERNAL.
    code = getattr(pb.TritonError, "INVALID_ARG" if invalid else "INTERNAL", None)
    return pb.TritonError(message) if code is None else pb.TritonError(message, code)


def run_batched(
    requests: Sequence[Any],
    input_names: Sequence[str],
    output_dims: dict[str, tuple[int, ...]],
    fn: BatchFn,
    prepare: Callable[[dict[str, Array]], dict[str, Array]] | None = None,
) -> list[Any]:
    """One ``fn`` call for all valid requests; one response (or error) per request, in order.

    ``prepare`` validates/converts one request's inputs (raise ``RequestError`` to
    reject it). ``fn`` gets the concatenated inputs ``[ΣB, ...]`` and returns outputs
    with the same leading dim; each output is reshaped to ``[B, *output_dims[name]]``.
    """
    pb = _pb()
    responses: list[Any] = [None] * len(requests)
    valid: list[tuple[int, int, dict[str, Array]]] = []
    for i, request in enumerate(requests):
        try:
            arrays = {}
            for name in input_names:
                tensor = pb.get_input_tensor_by_name(request, name)
                if tensor is None:
                    raise RequestError(f"missing input {name!r}; expected {list(input_names)}")
                arrays[name] = tensor.as_numpy()
            n = _batch_size(arrays)
            if prepare is not None:
                arrays = prepare(arrays)
            valid.append((i, n, arrays))
        except RequestError as e:
            responses[i] = pb.InferenceResponse(error=_error(pb, str(e), invalid=True))

    if valid:
        feeds = {name: np.concatenate([a[name] for _, _, a in valid]) for name in input_names}
        try:
            outputs = fn(feeds)
        except Exception as e:  # the runtime rejected the batch: tell every caller why
            error = _error(pb, f"{type(e).__name__}: {e}", invalid=False)
            for i, _, _ in valid:
                responses[i] = pb.InferenceResponse(error=error)
            return responses
        start = 0
        for i, n, _ in valid:
            tensors = [
                pb.Tensor(
                    name,
                    np.ascontiguousarray(outputs[name][start : start + n]).reshape(n, *dims),
                )
                for name, dims in output_dims.items()
            ]
            responses[i] = pb.InferenceResponse(output_tensors=tensors)
            start += n
    return responses
