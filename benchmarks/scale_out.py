r"""Scale-out on Ray (rd_engine/batch): what the driver receives, what it computes, and 1 vs 2 workers.

Three measurements, written to one JSON file:

* ``gather``: bytes each worker sends the driver per frame of a split video. Per snippet the
  driver gets the aligner's solver copy (``coalign.problem.solver_copy``: 2-pixel border cropped,
  every 10th pixel in each direction), in the run's dtype; a frame starts one snippet per distinct
  dilation, and each frame adds its timestamp (8 bytes). Computed for the real model's frame sizes
  from the solver copy of an empty snippet, and measured on a real split run of the tiny model
  (``VideoJob.driver_bytes``).
* ``driver_align``: the driver's co-alignment (``pipeline.offline.coalign``, the code a split run
  uses: copies into one buffer, minus the global minimum, the solver, and the robust merge's
  per-frame scales) versus video length, on the model-free synthetic harness
  (``rd_engine/testing/synthetic.py``). The synthetic frames are generated at the solver copy's
  size (77x43 for 768x432 frames), since the driver only ever sees copies; fp16 copies as on a GPU.
* ``wall``: one video through ``run_cluster`` with 1 worker (whole) and 2 workers (split into two
  frame ranges) on a local Ray cluster, tiny model, CPU, one PyTorch thread per worker; seconds
  from the call to its return (cluster start and model loading included) and the run's own seconds
  for the video.

    python -m benchmarks.scale_out --out benchmarks/results/scale_out_cpu.json
    python -m benchmarks.scale_out --quick --out /tmp/scale_out.json

Run from the repository root (``benchmarks`` is not an installed package); needs the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from rd_engine.coalign.problem import solver_copy
from rd_engine.pipeline.offline import coalign
from rd_engine.settings import resolve
from rd_engine.snippets.plan import plan_snippets
from rd_engine.testing.synthetic import make_scene_depth, make_snippets

CPU = torch.device("cpu")


def gather_bytes(width: int, height: int, dilations: list[int], snippet_len: int = 3, itemsize: int = 2) -> dict:
    """Bytes per frame a worker sends the driver for a long video (every frame starts a snippet per dilation)."""
    copy = solver_copy(torch.zeros(snippet_len, height, width))
    pixels = int(copy.shape[-1])
    per_snippet = snippet_len * pixels * itemsize
    per_frame = len(set(dilations)) * per_snippet + 8
    return {
        "frame": [width, height],
        "dilations": dilations,
        "solver_pixels": pixels,
        "copy_bytes_per_snippet": per_snippet,
        "bytes_per_frame": per_frame,
        "depth_bytes_per_frame_fp32": width * height * 4,
    }


def driver_align(lengths: list[int], dilations: list[int], align: str, width: int, height: int) -> list[dict]:
    s = resolve("fast", {"dilations": dilations, "align": align, "dtype": "fp16"}, CPU)[0]
    rows = []
    for n in [60, *lengths]:  # the first, small one warms up lazy imports and kernels (not reported)
        gt = make_scene_depth(n, width, height, seed=1)
        groups, _, _ = make_snippets(gt, dilations, mode="b", seed=2, dtype=torch.float16)
        _, plan = plan_snippets(n, 3, dilations, True)
        copies = {(g.dilation, k): g.depth[k].reshape(3, -1) for g in groups for k in range(g.size)}
        gmin = torch.stack([g.depth.min().float() for g in groups]).min()
        nbytes = sum(c.numel() * c.element_size() for c in copies.values())
        del groups, gt
        t0 = time.perf_counter()
        coalign(plan, copies, gmin, s, CPU, None, n)
        secs = time.perf_counter() - t0
        if n == 60:
            continue
        rows.append({"frames": n, "align": align, "seconds": round(secs, 3), "copies_bytes": nbytes})
        print(
            f"driver co-alignment ({align}): {n} frames, {nbytes / 2**20:.1f} MiB of copies: {secs:.2f} s", flush=True
        )
    return rows


def wall(frames: int, res: int, checkpoint: str) -> dict:
    import ray

    from rd_engine.batch import run_cluster
    from rd_engine.outputs.offline import OutputOptions
    from rd_engine.testing.media import write_test_video

    out: dict = {"frames": frames, "res": res, "dilations": [1, 25]}
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "long.mp4"
        write_test_video(video, n_frames=frames, width=128, height=72, fps=30)
        settings = {"res": res, "dilations": [1, 25], "seed": 0, "dtype": "fp32"}
        for workers, split in ((1, "never"), (2, "always")):
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
            try:
                t0 = time.perf_counter()
                res_run = run_cluster(
                    [video],
                    Path(tmp) / f"out{workers}",
                    checkpoint=checkpoint,
                    overrides=settings,
                    options=OutputOptions(cmaps=[]),
                    workers=workers,
                    split=split,
                    progress=False,
                    resume=False,
                    threads=1,  # one PyTorch thread per worker: 2 workers fill the 2 cores, 1 worker half
                )
                total = time.perf_counter() - t0
            finally:
                ray.shutdown()
            job = res_run.jobs[0]
            assert job.status == "done", job.error
            out[f"workers_{workers}"] = {
                "seconds_total": round(total, 2),
                "seconds_video": round(job.seconds, 2),
                "ranges": [list(r) for r in job.ranges],
                "driver_bytes": job.driver_bytes,
            }
            print(f"{workers} worker(s): video {job.seconds:.1f} s, call {total:.1f} s", flush=True)
        a = Path(tmp) / "out1" / "long_pred.npy"
        b = Path(tmp) / "out2" / "long_pred.npy"
        out["outputs_identical"] = a.read_bytes() == b.read_bytes()
        w2 = out["workers_2"]
        w2["driver_bytes_per_frame"] = round(w2["driver_bytes"] / frames, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale_out", description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[1000, 3000, 10000])
    p.add_argument("--wall-frames", type=int, default=600)
    p.add_argument("--wall-res", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.quick:
        args.lengths, args.wall_frames = [200, 400], 100
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    result: dict = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "gather": [
            gather_bytes(768, 432, [1, 25]),
            gather_bytes(1024, 576, [1, 10, 25]),
        ],
    }
    # the copies' size for 768x432 frames: the driver never sees more
    copy = solver_copy(torch.zeros(1, 432, 768))
    h, w = -(-(432 - 4) // 10), -(-(768 - 4) // 10)
    assert copy.shape[-1] == h * w
    result["driver_align"] = driver_align(args.lengths, [1, 25], "fast", w, h)
    from rd_engine.model.factory import make_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_tiny_checkpoint(Path(tmp) / "tiny", seed=0)
        result["wall"] = wall(args.wall_frames, args.wall_res, str(ckpt))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
