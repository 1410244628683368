r"""Stereo rendering speed (docs/films-vfx.md): seconds per frame of `rd_engine.outputs.stereo.render_pair`
(edge snapping, keys, both views' forward warps) and of a whole stereo frame written (render + half-SBS
layout + H.264 encode), at 1080p and 4K, on the PyTorch reference; the Triton kernel against the reference
where Triton runs (compiled on CUDA; on a CPU only interpreted, ``TRITON_INTERPRET=1``, at a small size:
the interpreter is a test vehicle, never a production path); and the stereo output's share of a run's
end-to-end time (the tiny random-weight model: a real checkpoint's model time is far larger, so its share
far smaller).

    python -m benchmarks.stereo_bench --out benchmarks/results/stereo_cpu.json
    python -m benchmarks.stereo_bench --quick

Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SIZES = {"1080p": (1080, 1920), "4K": (2160, 3840)}


def _frame(h: int, w: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    depth = (0.3 + 0.2 * np.sin(xx / w * 6.0) * np.cos(yy / h * 4.0)).astype(np.float32)
    depth[h // 4 : h // 2, w // 3 : w // 2] = 1.0  # a near box: disocclusions to fill
    return rgb, depth


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_sizes(sizes: list[str], repeats: int, impl: str, device: str) -> dict:
    from rd_engine.outputs.stereo import StereoOptions, compose, nearness, render_pair

    opts = StereoOptions()
    out = {}
    for name in sizes:
        h, w = SIZES[name] if name in SIZES else tuple(int(v) for v in name.split("x"))[::-1]
        rgb, depth = _frame(h, w)
        rgb_t = torch.from_numpy(rgb).to(device)
        near = nearness(torch.from_numpy(depth).to(device), 0.0, 1.0)

        def render(rgb_t=rgb_t, near=near):
            left, right = render_pair(rgb_t, near, opts, impl)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return left, right

        s_render = _time(render, repeats)
        left, right = render()
        s_compose = _time(lambda left=left, right=right: compose(left, right, "half-sbs"), repeats)
        out[name] = {"width": w, "height": h, "render_s": s_render, "half_sbs_compose_s": s_compose}
    return out


def bench_encode(sizes: list[str], frames: int) -> dict:
    from rd_engine.io.video_writer import VideoWriter
    from rd_engine.outputs.stereo import StereoOptions, write_stereo

    out = {}
    for name in sizes:
        h, w = SIZES[name]
        rgb, depth = _frame(h, w)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            write_stereo(iter([rgb] * frames), np.stack([depth] * frames), tmp, "b", 24.0, StereoOptions())
            s = (time.perf_counter() - t0) / frames
            t0 = time.perf_counter()
            with VideoWriter(Path(tmp) / "plain.mp4", 24.0) as vw:
                for _ in range(frames):
                    vw.write(rgb)
            plain = (time.perf_counter() - t0) / frames
        out[name] = {"stereo_written_s_per_frame": s, "plain_h264_encode_s_per_frame": plain}
    return out


def bench_kernel_interpreted(size: str, repeats: int) -> dict:
    """Reference and interpreted kernel side by side, in a child with TRITON_INTERPRET=1."""
    code = (
        "import json, sys; from benchmarks.stereo_bench import bench_sizes; "
        f"ref = bench_sizes([{size!r}], {repeats}, 'torch', 'cpu'); "
        f"tri = bench_sizes([{size!r}], {repeats}, 'triton', 'cpu'); "
        "print(json.dumps({'reference': ref, 'triton_interpreted': tri}))"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def bench_run_share(tmp: Path, frames: int, width: int, height: int) -> dict:
    """One run (tiny model, through the API): its model time, its other outputs, and its stereo output,
    each timed on its own in this process; the stereo output's share of the total.
    """
    from rd_engine import Engine, OutputOptions, StereoOptions
    from rd_engine.model.factory import tiny_checkpoint_cached
    from rd_engine.testing.media import write_test_video

    clip = tmp / "clip.mp4"
    write_test_video(clip, n_frames=frames, width=width, height=height, fps=24)
    engine = Engine(tiny_checkpoint_cached())
    engine.run(clip, res=64, frame_count=6, align="fast", seed=0).close()  # warm-up
    t0 = time.perf_counter()
    pred = engine.run(clip, res=512, align="fast", seed=0)
    model = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.save(pred, tmp / "a", OutputOptions(cmaps=["Spectral_r"]))
    outputs = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.save(pred, tmp / "b", OutputOptions(npy=False, npz=False, cmaps=[], sbs=False, stereo=StereoOptions()))
    stereo = time.perf_counter() - t0
    pred.close()
    return {
        "frames": frames,
        "input": f"{width}x{height}",
        "model_s": model,
        "other_outputs_s": outputs,
        "stereo_half_sbs_s": stereo,
        "stereo_share": stereo / (model + outputs + stereo),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["1080p", "4K"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--encode-frames", type=int, default=6)
    ap.add_argument("--interpreted-size", default="128x72", help="WxH of the interpreted-kernel comparison")
    ap.add_argument("--run-frames", type=int, default=24)
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat (a smoke run)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats, args.encode_frames, args.interpreted_size, args.run_frames = [], 1, 2, "64x36", 8
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d"),
        "reference_cpu": bench_sizes(args.sizes, args.repeats, "torch", "cpu"),
        "written_cpu": bench_encode(args.sizes, args.encode_frames),
        "kernel_vs_reference_cpu": bench_kernel_interpreted(args.interpreted_size, 1),
    }
    if torch.cuda.is_available():
        result["kernel_cuda"] = bench_sizes(args.sizes, args.repeats, "triton", "cuda")
        result["reference_cuda"] = bench_sizes(args.sizes, args.repeats, "torch", "cuda")
    with tempfile.TemporaryDirectory() as tmp:
        result["run_share"] = bench_run_share(
            Path(tmp), args.run_frames, 1280 if not args.quick else 96, 720 if not args.quick else 64
        )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
