"""The README's picture: what the co-alignment makes of per-snippet depth, on synthetic ground truth.

    python -m benchmarks.readme_figure --out docs/images/overview.png

The demo model has random weights, so its depth means nothing; this picture is made from the
project's synthetic ground truth instead (`rd_engine.testing.synthetic`): a procedural scene seen
by a camera walking into it. Each 3-frame snippet gets the true inverse depth under a random
affine, with noise and outlier blobs, normalized to [-1, 1] per snippet as a model's output is
(mode "b"). Rows: one snippet covering each frame, in its own scale (what the model gives); the
`robust` co-alignment and merge, renormalized (what `rd-engine run --align robust` writes); the
true inverse depth. Colours as `rd-engine run --cmap Spectral_r` writes them.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from rd_engine.coalign.merge import merge_aligned, merge_deltas, renormalize  # noqa: E402
from rd_engine.coalign.problem import solver_view  # noqa: E402
from rd_engine.coalign.solve import solve  # noqa: E402
from rd_engine.eval.metrics import score_video  # noqa: E402
from rd_engine.outputs.render import colorize  # noqa: E402
from rd_engine.testing.synthetic import global_min_of, make_scene_depth, make_snippets  # noqa: E402


def small(path: str) -> None:
    """Re-save the PNG with a 256-colour palette (a third of the size; the colour maps survive it)."""
    from PIL import Image

    Image.open(path).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=144)
    ap.add_argument("--show", type=int, nargs="+", default=[0, 20, 40, 59], help="frames to show")
    ap.add_argument("--out", default="docs/images/overview.png")
    a = ap.parse_args()
    gt = make_scene_depth(a.frames, a.width, a.height, seed=0)
    groups, _, _ = make_snippets(gt, [1, 10, 25], mode="b", seed=1, dtype=torch.float32)
    gm = global_min_of(groups)
    ag = [g.with_depth(solver_view(g.depth, gm)) for g in groups]
    params = solve(ag, a.frames, "robust")
    merged = renormalize(merge_aligned(groups, params, gm, a.frames, merge_deltas(ag, params, a.frames)))
    score = score_video(merged, gt)
    inv = 1.0 / gt
    inv = (inv - inv.min()) / (inv.max() - inv.min()) * 2 - 1

    g1 = groups[0]  # dilation 1: the snippet that starts at the frame (or the last one)

    def snippet_frame(f: int) -> np.ndarray:
        k = min(f, g1.indices.shape[0] - 1)
        pos = int((g1.indices[k] == f).nonzero()[0][0]) if (g1.indices[k] == f).any() else 0
        return g1.depth[k, pos].numpy()

    rows = [
        ("one snippet,\nits own scale", [snippet_frame(f) for f in a.show]),
        (f"rd-engine output\n(AbsRel {score.absrel:.3f})", [merged[f].numpy() for f in a.show]),
        ("ground truth\n(inverse depth)", [inv[f].numpy() for f in a.show]),
    ]
    fig, axes = plt.subplots(len(rows), len(a.show), figsize=(2.2 * len(a.show) + 1.4, 1.45 * len(rows) + 0.5))
    for r, (label, frames) in enumerate(rows):
        for c, img in enumerate(frames):
            ax = axes[r, c]
            ax.imshow(colorize(img, -1.0, 1.0, "Spectral_r"))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {a.show[c]}", fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(
        "Synthetic scene (the demo model is random): per-snippet depth in, consistent video depth out", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    small(a.out)
    print(f"wrote {a.out} (AbsRel {score.absrel:.4f}, delta1 {score.delta1:.4f})")


if __name__ == "__main__":
    main()
