"""Is the VAE good enough? The judge must read the right attributes back from its
reconstructions (the bar: ≥ 97%), or the DiT can never beat that ceiling.

``python -m cinetron.tools.vae_check [--clips N]`` prints the accuracy table.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from cinetron.core.transport import to_uint8_frames
from cinetron.models import world
from cinetron.models.loading import DEFAULT_WEIGHTS, load_vae
from cinetron.models.train import to_unit
from cinetron.models.vae import VideoAutoencoder
from cinetron.tools.judge import judge

ATTRIBUTES = ("background", "color", "shape", "motion")


@torch.no_grad()
def reconstruction_accuracy(
    vae: VideoAutoencoder, clips: int = 200, seed: int = 7
) -> dict[str, float]:
    """Per-attribute and all-four accuracy of the judge on reconstructions of random clips
    from every combination (held-out ones included: the VAE must not depend on them)."""
    rng = np.random.default_rng(seed)
    combos = world.all_combinations()
    hits = dict.fromkeys(ATTRIBUTES, 0)
    all_four = 0
    for _ in range(clips):
        attrs = combos[int(rng.integers(len(combos)))]
        clip = world.render(world.sample_scene(rng, *attrs))
        recon = to_uint8_frames(vae.decode(vae.encode(to_unit(clip[None]))).numpy())[0]
        got = judge(recon).attributes
        for name, e, g in zip(ATTRIBUTES, attrs, got, strict=True):
            hits[name] += e == g
        all_four += got == attrs
    return {**{k: v / clips for k, v in hits.items()}, "all": all_four / clips}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--clips", type=int, default=200)
    args = p.parse_args(argv)
    acc = reconstruction_accuracy(load_vae(DEFAULT_WEIGHTS), args.clips)
    print(" | ".join(f"{k} {100 * v:.1f}%" for k, v in acc.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
