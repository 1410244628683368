"""Edited video: what a cut does to the method, and what cut detection costs.

1. Accuracy (synthetic ground truth, `rd_engine.testing.synthetic`): a clip of `--shots` procedural
   scenes (each its own scene and camera path) of `--shot-len` frames. Every snippet is the ground
   truth inverse depth of its frames under a random affine plus noise and outlier blobs, normalized
   to [-1, 1] (a model's output). A snippet that straddles a cut mixes unrelated scenes: each scene
   after the snippet's first gets an arbitrary relative scale (log-uniform in 0.3..3), as a model
   given frames of unrelated scenes would produce. The whole video is aligned and merged as one
   shot ("whole"), or each shot on its own ("per shot"); each shot is scored on its own (one affine
   fit in inverse depth, AbsRel and delta1: `rd_engine.eval.metrics.score_video`), mean over shots.
2. Cost: seconds per frame of cut detection (`rd_engine.io.shots.ShotDetector`) next to decoding
   (`rd_engine.io.video.iter_frames`), medians of 3, at 512, 768 and 1024 px: on generated multi-shot
   clips, and on the sample clips joined as `--make-clip` joins them (when `--samples` has them).
3. Across a cut (`--part overlap`): `pipeline.shots.predict_shots` over a generated multi-shot clip
   with every shot written as `--split-shots` writes it (`.npy`, `.npz`, a colorized and the
   side-by-side video), each shot finished (co-alignment, merge, writing) on a second thread while the
   model runs the next one, against one shot after the other: seconds end to end, alternating repeats,
   medians, with the depth of both runs compared. The tiny random model (its depth means nothing).

    python -m benchmarks.edited_video                  # both parts, the table of docs/edited-video.md
    python -m benchmarks.edited_video --part accuracy --shot-len 24 48 72
    python -m benchmarks.edited_video --part overlap --overlap-res 256 --repeats 3
    python -m benchmarks.edited_video --make-clip multi_shot.mp4 --samples /path/to/shared/samples
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rd_engine.coalign.merge import merge_aligned, merge_deltas
from rd_engine.coalign.problem import solver_view
from rd_engine.coalign.solve import solve
from rd_engine.eval.metrics import score_video
from rd_engine.snippets.plan import plan_snippets
from rd_engine.testing.synthetic import _add_blobs, global_min_of, make_scene_depth


def _snippets(inv: torch.Tensor, scene: np.ndarray, dilations: list[int], seed: int):
    """Mode-b synthetic snippets over `inv [N, H, W]`; straddling snippets mix scales across scenes."""
    n, h, w = inv.shape
    effective, plan = plan_snippets(n, 3, dilations, True)
    gen = torch.Generator().manual_seed(seed)
    m = float(inv[:, ::4, ::4].median())
    groups, straddle, total = [], 0, 0
    for g in plan:
        k_all, length = g.indices.shape
        depth = torch.empty(k_all, length, h, w)
        for k in range(k_all):
            idx = g.indices[k]
            x = inv[idx].clone()
            scenes = scene[idx.numpy()]
            total += 1
            if len(set(scenes.tolist())) > 1:
                straddle += 1
                for sc in sorted(set(scenes.tolist()))[1:]:
                    r = math.exp(math.log(0.3) + (math.log(3.0) - math.log(0.3)) * float(torch.rand((), generator=gen)))
                    x[torch.from_numpy(scenes == sc)] *= r
            a = math.exp(math.log(0.3) + (math.log(3.0) - math.log(0.3)) * float(torch.rand((), generator=gen)))
            b = m * (2.0 * float(torch.rand((), generator=gen)) - 1.0)
            y = x * a + b
            lo, hi = float(y.min()), float(y.max())
            spread = max(hi - lo, 1e-12)
            y += torch.randn(y.shape, generator=gen) * (0.02 * spread)
            _add_blobs(y, 3, lo - 0.2 * spread, hi + 0.2 * spread, gen, (0.03, 0.12))
            ylo, yhi = float(y.min()), float(y.max())
            depth[k] = (y - ylo) * (2.0 / max(yhi - ylo, 1e-12)) - 1.0
        groups.append(g.with_depth(depth))
    return groups, straddle, total


def _align_merge(groups, n: int, kind: str) -> torch.Tensor:
    gmin = global_min_of(groups)
    solve_groups = [g.with_depth(solver_view(g.depth, gmin)) for g in groups]
    params = solve(solve_groups, n, kind)
    delta = merge_deltas(solve_groups, params, n) if kind == "robust" else None
    return merge_aligned(groups, params, gmin, n, delta)


def accuracy(shot_lens: list[int], shots: int, width: int, height: int, dilations: list[int]) -> list[dict]:
    rows = []
    for shot_len in shot_lens:
        gts = [make_scene_depth(shot_len, width, height, seed=10 + k) for k in range(shots)]
        gt = torch.cat(gts)
        n = gt.shape[0]
        scene = np.repeat(np.arange(shots), shot_len)
        inv = 1.0 / gt
        whole, straddle, total = _snippets(inv, scene, dilations, seed=1)
        per_shot = [
            _snippets(inv[k * shot_len : (k + 1) * shot_len], scene[:shot_len], dilations, seed=2 + k)[0]
            for k in range(shots)
        ]
        for kind in ("fast", "robust"):
            merged = _align_merge(whole, n, kind)
            w_scores = [score_video(merged[k * shot_len : (k + 1) * shot_len], gts[k]) for k in range(shots)]
            p_scores = [score_video(_align_merge(per_shot[k], shot_len, kind), gts[k]) for k in range(shots)]
            rows.append(
                dict(
                    shot_len=shot_len,
                    solver=kind,
                    straddling=f"{straddle}/{total}",
                    whole_absrel=float(np.mean([s.absrel for s in w_scores])),
                    shot_absrel=float(np.mean([s.absrel for s in p_scores])),
                    whole_delta1=float(np.mean([s.delta1 for s in w_scores])),
                    shot_delta1=float(np.mean([s.delta1 for s in p_scores])),
                )
            )
            r = rows[-1]
            print(
                f"shot {shot_len:3d} x{shots} {kind:6s} straddling {r['straddling']:>8s} | AbsRel whole "
                f"{r['whole_absrel']:.3f} per shot {r['shot_absrel']:.3f} | delta1 whole {r['whole_delta1']:.3f} "
                f"per shot {r['shot_delta1']:.3f}",
                flush=True,
            )
    return rows


def _clip_cost(path: Path, repeats: int) -> tuple[float, float, int]:
    """Median seconds per frame of decoding `path` and of detecting its cuts, and the cuts found."""
    from rd_engine.io.shots import ShotDetector
    from rd_engine.io.video import iter_frames

    t_dec, t_det = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        decoded = [f.rgb for f in iter_frames(path, 0, 0)]
        t_dec.append((time.perf_counter() - t0) / len(decoded))
        det = ShotDetector()
        for rgb in decoded:
            det.push(rgb)
        det.finish()
        t_det.append(det.seconds / len(decoded))
    return float(np.median(t_dec)), float(np.median(t_det)), len(det.cuts)


def detection_cost(sizes: list[int], frames: int, samples: Path, repeats: int = 3) -> list[dict]:
    """Cut detection against decoding at each frame width: on generated multi-shot clips (3 cuts), and on
    the sample clips joined as `_joined_segments` cuts them (real content, 3 cuts) when they are present.
    """
    import cv2

    from rd_engine.testing.media import multishot_frames, write_frames_video

    have_samples = (samples / "elephant.mp4").exists() and (samples / "davis_rollercoaster.mp4").exists()
    real = _joined_segments(samples) if have_samples else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            w, h = size, (size * 9 // 16) // 2 * 2
            per = frames // 4
            clips = [("generated", multishot_frames([per, per, per, frames - 3 * per], w, h))]
            if real is not None:
                clips.append(
                    ("sample clips", [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for s in real for f in s])
                )
            for kind, frames_ in clips:
                path = Path(tmp) / f"{kind[:3]}{size}.mp4"
                write_frames_video(path, frames_, fps=24)
                t_dec, t_det, cuts = _clip_cost(path, repeats)
                rows.append(dict(clip=kind, size=f"{w}x{h}", decode_ms=t_dec * 1e3, detect_ms=t_det * 1e3, cuts=cuts))
                print(
                    f"{kind:12s} {w}x{h}: decode {t_dec * 1e3:.2f} ms/frame, detection {t_det * 1e3:.2f} ms/frame "
                    f"({t_det / t_dec:.0%} of decode), {cuts} cuts of 3 (median of {repeats})",
                    flush=True,
                )
    return rows


def overlap_cost(res: int, shots: int, shot_len: int, repeats: int) -> dict:
    from rd_engine.backends.torch_backend import TorchBackend
    from rd_engine.model.checkpoint import load_checkpoint
    from rd_engine.model.factory import tiny_checkpoint_cached
    from rd_engine.outputs.offline import OutputOptions, write_outputs
    from rd_engine.pipeline.offline import Pipeline
    from rd_engine.pipeline.shots import ShotOptions, predict_shots
    from rd_engine.progress import StageClock
    from rd_engine.settings import resolve
    from rd_engine.testing.media import multishot_cuts, multishot_frames, write_frames_video

    cpu = torch.device("cpu")
    pipe = Pipeline(TorchBackend(load_checkpoint(tiny_checkpoint_cached()), cpu, torch.float32), progress=False)
    s = resolve("fast", dict(res=res, dilations=[1, 10], seed=1), cpu)[0]
    lengths = [shot_len] * shots
    cut = ShotOptions("list", multishot_cuts(lengths))
    times: dict[bool, list[float]] = {True: [], False: []}
    depth: dict[bool, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "shots.mp4"
        write_frames_video(clip, multishot_frames(lengths, res, res * 9 // 16 // 8 * 8), fps=24)
        for r in range(repeats):
            for overlap in (r % 2 == 0, r % 2 != 0):  # alternating which goes first
                out = Path(tmp) / f"out-{overlap}-{r}"

                def on_shot(pred, i, out=out):
                    write_outputs(pred, out, f"shot{i:03d}", OutputOptions(), "tiny", "pytorch", StageClock(False))

                t0 = time.perf_counter()
                pred = predict_shots(pipe, clip, s, cut, on_shot=on_shot, overlap=overlap)
                times[overlap].append(time.perf_counter() - t0)
                depth[overlap] = np.concatenate([np.load(p) for p in sorted(out.glob("shot*_pred.npy"))])
                pred.close()
    row = dict(
        res=res,
        shots=shots,
        shot_len=shot_len,
        repeats=repeats,
        serial_s=float(np.median(times[False])),
        overlap_s=float(np.median(times[True])),
        same_depth=bool(np.array_equal(depth[True], depth[False])),
        torch_threads=torch.get_num_threads(),
    )
    print(
        f"{shots} shots x {shot_len} frames at {res} px, written per shot: one after the other "
        f"{row['serial_s']:.2f} s, overlapped {row['overlap_s']:.2f} s "
        f"({row['serial_s'] / row['overlap_s']:.2f}x; medians of {repeats}); depth equal: {row['same_depth']}",
        flush=True,
    )
    return row


def _joined_segments(samples: Path) -> list[list[np.ndarray]]:
    """The sample clips cut into the edited clip's four shots, at their own sizes:
    `rollercoaster[0:35] elephant[0:60] rollercoaster[35:70] elephant[60:180]`.
    """
    from rd_engine.io.video import iter_frames

    a = [f.rgb for f in iter_frames(samples / "davis_rollercoaster.mp4", 0, 0)]
    b = [f.rgb for f in iter_frames(samples / "elephant.mp4", 0, 0)]
    return [a[:35], b[:60], a[35:], b[60:]]


def make_joined_clip(out: Path, samples: Path) -> list[int]:
    """The sample clips cut into pieces and joined into one edited clip at 960x540, 24 fps
    (`rollercoaster[0:35] elephant[0:60] rollercoaster[35:70] elephant[60:180]`); returns its cuts.
    """
    import cv2

    from rd_engine.testing.media import write_frames_video

    segments = [[cv2.resize(f, (960, 540)) for f in s] for s in _joined_segments(samples)]
    write_frames_video(out, [f for s in segments for f in s], fps=24)
    return [int(c) for c in np.cumsum([len(s) for s in segments])[:-1]]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["all", "accuracy", "cost", "overlap"], default="all")
    p.add_argument("--shot-len", type=int, nargs="+", default=[24, 48, 72])
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--size", type=int, nargs=2, default=[96, 64], metavar=("W", "H"))
    p.add_argument("--dilations", type=int, nargs="+", default=[1, 25])
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 768, 1024])
    p.add_argument("--frames", type=int, default=96, help="frames per clip for the cost part")
    p.add_argument("--overlap-res", type=int, default=256, help="frame width of the overlap part")
    p.add_argument("--overlap-shots", type=int, nargs=2, default=[6, 24], metavar=("SHOTS", "FRAMES"))
    p.add_argument("--repeats", type=int, default=3, help="repeats of each variant in the overlap part")
    p.add_argument("--json", type=Path, default=None, help="write the overlap part's row here")
    p.add_argument("--make-clip", type=Path, default=None, metavar="OUT.mp4", help="write the joined sample clip")
    p.add_argument("--samples", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "samples")
    a = p.parse_args(argv)
    if a.make_clip is not None:
        print(f"{a.make_clip}: cuts at {make_joined_clip(a.make_clip, a.samples)}")
        return
    torch.manual_seed(0)
    if a.part in ("all", "accuracy"):
        accuracy(a.shot_len, a.shots, a.size[0], a.size[1], a.dilations)
    if a.part in ("all", "cost"):
        detection_cost(a.sizes, a.frames, a.samples)
    if a.part in ("all", "overlap"):
        row = overlap_cost(a.overlap_res, a.overlap_shots[0], a.overlap_shots[1], a.repeats)
        if a.json is not None:
            import json

            from benchmarks.cpu_quiet import machine

            a.json.write_text(json.dumps({"overlap": row, "machine": machine()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
