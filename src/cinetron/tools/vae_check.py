"""Is the VAE good enough? The judge must read the right attributes back from its
reconstructions (the bar: ≥ 97%), or the DiT can never beat that ceiling.

Every combination of the world is rendered twice (placed as in v1, and anywhere on the
torus), the held-out ones included: the VAE must not depend on them. The table ends with
the (background, colour, shape) groups it gets wrong most, where a fine-tune should look.

``python -m cinetron.tools.vae_check [--weights DIR]`` prints it.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from cinetron.core.transport import to_uint8_frames
from cinetron.models import captions, world
from cinetron.models.loading import DEFAULT_WEIGHTS, load_vae
from cinetron.models.train import to_unit
from cinetron.tools.judge import judge

ATTRIBUTES = ("background", "color", "shape", "motion")
Combination = tuple[str, str, str, str]
RoundTrip = Callable[[torch.Tensor], torch.Tensor]  # [B, 3, F, H, W] in [-1, 1], both ways


@dataclass
class Reconstruction:
    clips: int = 0
    hits: Counter[str] = field(default_factory=Counter)
    all_four: int = 0
    held_out: int = 0
    held_out_right: int = 0
    wrong: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def share(self, key: str) -> float:
        return (self.all_four if key == "all" else self.hits[key]) / max(1, self.clips)

    def row(self) -> str:
        shares = " | ".join(f"{k} {100 * self.share(k):.1f}%" for k in (*ATTRIBUTES, "all"))
        held = self.held_out_right / max(1, self.held_out)
        return f"{shares} | held-out combinations {100 * held:.1f}% ({self.clips} clips)"


def render_all(
    combinations: Sequence[Combination], seed: int = 11
) -> tuple[npt.NDArray[np.uint8], list[Combination]]:
    """Each combination placed as in v1 and anywhere on the torus: ``[2N, F, H, W, 3]``."""
    rng = np.random.default_rng(seed)
    clips, attrs = [], []
    for a in combinations:
        for anywhere in (False, True):
            clips.append(world.render(world.sample_scene(rng, *a, anywhere=anywhere)))
            attrs.append(a)
    return np.stack(clips), attrs


@torch.no_grad()
def reconstruction_accuracy(
    round_trip: RoundTrip,
    combinations: Sequence[Combination] | None = None,
    batch: int = 32,
) -> Reconstruction:
    clips, attrs = render_all(combinations or world.all_combinations())
    out = Reconstruction()
    for i in range(0, len(clips), batch):
        recon = to_uint8_frames(round_trip(to_unit(clips[i : i + batch])).numpy())
        for a, frames in zip(attrs[i : i + batch], recon, strict=True):
            got = judge(frames).attributes
            out.clips += 1
            out.hits.update(n for n, e, g in zip(ATTRIBUTES, a, got, strict=True) if e == g)
            out.all_four += got == a
            if captions.is_held_out(a):
                out.held_out += 1
                out.held_out_right += got == a
            if got != a:
                out.wrong[a[:3]] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    vae = load_vae(args.weights)
    result = reconstruction_accuracy(lambda x: vae.decode(vae.encode(x)))
    print(result.row())
    for (background, colour, shape), n in result.wrong.most_common(8):
        print(f"  wrong: {colour} {shape} on {background}: {n} of {2 * len(world.MOTIONS)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
