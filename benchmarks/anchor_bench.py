r"""Metric depth from simulated LiDAR on the synthetic ground truth (rd_engine/testing/synthetic.py).

For each seed: a procedural scene's metric depth (the ground truth), the snippets a model would give
(each the GT inverse depth under a random affine, per-snippet [-1, 1] normalization, noise and outlier
blobs: mode "b"), and a simulated LiDAR per frame: `--beams` scan lines of `--points` returns each,
with `--noise` relative range noise, and `--outliers` of them wrong (half from behind a depth edge, 1.3x
to 3x too far; half anywhere in 0.5 .. 30 m). Then, with no fit to the ground truth anywhere:

* offline: the robust solve and merge, then one anchor fit per video (`pipeline.metric.fit_video`);
* online at lag 0 and at `--lag`: the online aligner replaying the snippets in stream order, with the
  anchor fit updated as each frame finishes (`online.metric.OnlineMetric`);

metric AbsRel = mean |z - z_gt| / z_gt over the pixels with metric depth, against the bound of one
least-squares affine fitted to the ground truth itself (`eval.metrics.score_video`, the protocol of
`rd-engine eval`), the same for every mode's relative depth. The cost of anchoring is the fit's
time per frame (offline: the one fit over the whole video, divided by its frames; online: each finished
frame's refit and conversion), measured with `time.perf_counter` in the same run.

    python -m benchmarks.anchor_bench --out benchmarks/results/anchor_cpu.json

Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from rd_engine.coalign.merge import merge_aligned, merge_deltas, renormalize
from rd_engine.coalign.problem import solver_view
from rd_engine.coalign.solve import solve
from rd_engine.eval.metrics import score_video
from rd_engine.io.anchors import Anchors
from rd_engine.online.aligner import OnlineAligner
from rd_engine.online.metric import OnlineMetric
from rd_engine.pipeline.metric import fit_video
from rd_engine.testing.synthetic import global_min_of, make_scene_depth, make_snippets


def simulated_lidar(gt: np.ndarray, beams: int, points: int, noise: float, outliers: float, seed: int) -> Anchors:
    """Sparse metric samples of `gt [N, H, W]` as a scanning LiDAR projected into the camera gives them."""
    rng = np.random.default_rng(seed)
    n, h, w = gt.shape
    rows = []
    for f in range(n):
        v = np.repeat(np.linspace(h * 0.3, h - 1, beams).round().astype(int), points)
        u = np.tile(np.linspace(0, w - 1, points), beams) + rng.uniform(-0.5, 0.5, beams * points)
        u = np.clip(np.rint(u), 0, w - 1).astype(int)
        z = gt[f, v, u].astype(np.float64) * (1 + noise * rng.standard_normal(v.size))
        bad = rng.random(v.size) < outliers
        edge = bad & (rng.random(v.size) < 0.5)
        z[edge] *= rng.uniform(1.3, 3.0, int(edge.sum()))
        wild = bad & ~edge
        z[wild] = rng.uniform(0.5, 30.0, int(wild.sum()))
        rows.append((np.full(v.size, f), u.astype(float), v.astype(float), z))
    return Anchors(*(np.concatenate([r[i] for r in rows]) for i in range(4)))


def metric_absrel(depth_m: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """(AbsRel over the pixels with metric depth, the fraction of valid GT pixels that have it)."""
    valid = gt > 0
    have = valid & np.isfinite(depth_m)
    return float(np.mean(np.abs(depth_m[have] - gt[have]) / gt[have])), float(have.sum() / valid.sum())


def replay(groups, n, lag, anchors: Anchors):
    """The online aligner over the snippets in stream order, the anchor fit updated as frames finish."""
    window = 2 * max(g.dilation for g in groups) + 1
    order = sorted(
        (int(g.indices[k, -1]), g.dilation, k, gi) for gi, g in enumerate(groups) for k in range(g.indices.shape[0])
    )
    al, om = OnlineAligner(3, lag), OnlineMetric()
    rel, met, secs = {}, {}, 0.0
    for e in range(n):
        a = anchors.in_range(e, e + 1)
        om.note(e, a.x, a.y, a.depth)  # processed = input size here
        al.note_frame(e)
        pos = [o for o in order if o[0] == e]
        for _, d, k, gi in pos:
            g = groups[gi]
            al.add(d, tuple(int(v) for v in g.indices[k]), g.depth[k], float(g.weight))
        done = al.finish(e, window + lag) if e < n - 1 else al.finish(None, window + lag)
        for f in done:
            t0 = time.perf_counter()
            z, _ = om.finish(f.index, f.depth)
            secs += time.perf_counter() - t0
            rel[f.index] = f.depth
            met[f.index] = np.full(f.depth.shape, np.nan, np.float32) if z is None else z
    return (
        np.stack([rel[i] for i in range(n)]),
        np.stack([met[i] for i in range(n)]),
        secs / n,
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--height", type=int, default=108)
    p.add_argument("--dilations", type=int, nargs="+", default=[1, 10])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--beams", type=int, default=16)
    p.add_argument("--points", type=int, default=64, help="returns per scan line")
    p.add_argument("--noise", type=float, default=0.01)
    p.add_argument("--outliers", type=float, default=0.2)
    p.add_argument("--lag", type=int, default=4)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for seed in a.seeds:
        gt_t = make_scene_depth(a.frames, a.width, a.height, seed=seed)
        gt = gt_t.numpy()
        groups, _, _ = make_snippets(gt_t, a.dilations, mode="b", seed=seed, dtype=torch.float32)
        n, size = a.frames, (a.width, a.height)
        anchors = simulated_lidar(gt, a.beams, a.points, a.noise, a.outliers, seed)
        gm = global_min_of(groups)
        ag = [g.with_depth(solver_view(g.depth, gm)) for g in groups]
        params = solve(ag, n, "robust")
        rel = renormalize(merge_aligned(groups, params, gm, n, merge_deltas(ag, params, n))).numpy()
        t0 = time.perf_counter()
        mv = fit_video(rel, anchors, size, size)
        fit_s = (time.perf_counter() - t0) / n
        off = np.stack([mv.depth(f, rel[f]) for f in range(n)])
        modes = {"offline": (rel, off, fit_s)}
        for lag in (0, a.lag):
            modes[f"online lag {lag}"] = replay(groups, n, lag, anchors)
        for mode, (r, m, secs) in modes.items():
            absrel, cover = metric_absrel(m, gt)
            rows.append(
                {
                    "seed": seed,
                    "mode": mode,
                    "metric_absrel": absrel,
                    "coverage": cover,
                    "bound_absrel_gt_fit": score_video(r, gt).absrel,
                    "anchor_ms_per_frame": secs * 1000,
                }
            )
            print(
                f"seed {seed} {mode:>12}: metric AbsRel {absrel * 100:5.2f} % (bound, GT fit: "
                f"{rows[-1]['bound_absrel_gt_fit'] * 100:5.2f} %), coverage {cover * 100:5.1f} %, "
                f"anchoring {secs * 1000:6.2f} ms/frame",
                flush=True,
            )
    summary = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        rs = [r for r in rows if r["mode"] == mode]
        summary[mode] = {k: float(np.mean([r[k] for r in rs])) for k in rs[0] if k not in ("seed", "mode")}
    print("\n| mode | metric AbsRel (anchors, no GT fit) | bound (one affine fit to GT) | anchoring per frame |")
    print("| --- | --- | --- | --- |")
    for mode, s in summary.items():
        print(
            f"| {mode} | {s['metric_absrel'] * 100:.2f} % | {s['bound_absrel_gt_fit'] * 100:.2f} % "
            f"| {s['anchor_ms_per_frame']:.2f} ms |"
        )
    if a.out:
        with open(a.out, "w") as f:
            json.dump(
                {
                    "args": vars(a),
                    "machine": {"platform": platform.platform(), "processor": platform.processor()},
                    "rows": rows,
                    "summary": summary,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
