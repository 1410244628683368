"""Online versus offline co-alignment on the synthetic ground-truth harness.

    python -m benchmarks.online_bench --frames 90 --width 192 --height 108

Snippets come from `rd_engine.testing.synthetic` (both modes); offline solves the whole
video (`fast`; `robust` merged by the method's mean and by its own robust mean, as
`--align robust` does), online replays the snippets in the order a stream
produces them through `rd_engine.online.session.OnlineAligner` at lag 0 and at a full lag.
AbsRel after one global affine fit, as in `align_bench`.
"""

from __future__ import annotations

import argparse

import torch

from rd_engine.coalign.merge import merge_aligned, merge_deltas, renormalize
from rd_engine.coalign.problem import solver_view
from rd_engine.coalign.solve import solve
from rd_engine.eval.metrics import score_video
from rd_engine.online.aligner import OnlineAligner
from rd_engine.testing.synthetic import global_min_of, make_scene_depth, make_snippets


def replay(groups, n: int, lag: int) -> torch.Tensor:
    """Online depth `[N, H, W]` from decoded snippets fed in end-frame order."""
    window = 2 * max(g.dilation for g in groups) + 1
    order = sorted(
        (int(g.indices[k, -1]), g.dilation, k, gi) for gi, g in enumerate(groups) for k in range(g.indices.shape[0])
    )
    al = OnlineAligner(groups[0].indices.shape[1], lag)
    out, pos = {}, 0
    for e in range(n):
        while pos < len(order) and order[pos][0] == e:
            _, d, k, gi = order[pos]
            g = groups[gi]
            al.add(d, tuple(int(v) for v in g.indices[k]), g.depth[k], float(g.weight))
            pos += 1
        out.update({f.index: f.depth for f in al.finish(e, window + lag)})
    out.update({f.index: f.depth for f in al.finish(None, window + lag)})
    return torch.stack([torch.from_numpy(out[i]) for i in range(n)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--height", type=int, default=108)
    ap.add_argument("--dilations", type=int, nargs="+", default=[1, 10, 25])
    a = ap.parse_args()
    gt = make_scene_depth(a.frames, a.width, a.height, seed=0)
    print("| mode | offline fast | offline robust, mean merge | offline robust | online lag 0 | online full lag |")
    print("|---|---|---|---|---|---|")
    for mode in ("a", "b"):
        groups, _, eff = make_snippets(gt, a.dilations, mode=mode, seed=1, dtype=torch.float32)
        gm = global_min_of(groups)
        ag = [g.with_depth(solver_view(g.depth, gm)) for g in groups]
        row = []
        for kind, robust_mean in (("fast", False), ("robust", False), ("robust", True)):
            params = solve(ag, a.frames, kind)
            delta = merge_deltas(ag, params, a.frames) if robust_mean else None
            merged = merge_aligned(groups, params, gm, a.frames, delta)
            row.append(score_video(renormalize(merged), gt).absrel)
        for lag in (0, 2 * max(eff) + 1):
            row.append(score_video(replay(groups, a.frames, lag), gt).absrel)
        print(f"| {mode} | " + " | ".join(f"{v:.4f}" for v in row) + " |", flush=True)


if __name__ == "__main__":
    main()
