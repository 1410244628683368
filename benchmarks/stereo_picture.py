"""The stereo picture of docs/films-vfx.md, from synthetic ground-truth depth (no model).

A frame of the procedural scene of `rd_engine.testing.synthetic.make_scene_depth` (inverse metric depth
as the "relative inverse depth" a run would give), a texture that shows where pixels went, and the
stereo views of `rd_engine.outputs.stereo` at the default controls: top, full side-by-side (left | right);
bottom, the red-cyan Dubois anaglyph and the depth (Spectral_r, near = red).

    python -m benchmarks.stereo_picture docs/images/stereo_example.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rd_engine.outputs.render import colorize
from rd_engine.outputs.stereo import StereoOptions, compose, nearness, render_pair
from rd_engine.testing.synthetic import make_scene_depth


def picture(width: int = 384, height: int = 216, opts: StereoOptions | None = None) -> np.ndarray:
    opts = opts or StereoOptions(divergence=3.0, convergence=0.3)
    z = make_scene_depth(24, width, height, seed=3)[12].numpy()
    inv = 1.0 / np.maximum(z, 1e-3)
    near = inv / inv.max()
    yy, xx = np.mgrid[0:height, 0:width]
    checker = ((xx // 12 + yy // 12) % 2).astype(np.float32)
    rgb = np.stack(
        [
            60 + 170 * near,
            90 + 80 * checker + 40 * np.sin(xx / 9.0),
            200 - 150 * near + 30 * checker,
        ],
        -1,
    )
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    lo, hi = float(inv.min()), float(inv.max())
    left, right = render_pair(rgb, nearness(torch.from_numpy(inv.astype(np.float32)), lo, hi), opts, "torch")
    top = compose(left, right, "sbs")[0]
    ana = compose(left, right, "anaglyph")[0]
    depth = colorize(inv, lo, hi, "Spectral_r")
    bottom = np.concatenate([ana, depth], axis=1)
    gap = np.full((4, top.shape[1], 3), 255, np.uint8)
    return np.concatenate([top, gap, bottom], axis=0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "docs/images/stereo_example.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture()).save(out, optimize=True)
    print(f"{out}: {out.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
