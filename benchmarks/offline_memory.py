r"""Host memory of the OFFLINE pipeline versus video length, without a model.

    python -m benchmarks.offline_memory --frames 2000 3000 --res 768 \
        --host-snippets-gib 1 --out benchmarks/results/offline_memory_cpu_long.json

The offline run keeps per-frame latents and per-snippet solver statistics in
host memory, full-resolution snippet depth in a budgeted store (device, then
host, then a spill file) and the output in memory or a memory-mapped file.
None of that depends on the model, so this runs the real `Pipeline.predict`
(decode, scheduler, stores, spill, co-alignment, merge) on a model-free
backend whose "UNet" passes the image latent through: seconds per frame
instead of minutes on a CPU, and the same bytes.

Each length runs in its own process on a generated clip (`dilations 1 10 25`,
`--align fast`, fp16 snippets as on a GPU). Reported per length: peak
anonymous resident memory (sampled every 50 ms; file-backed pages of the spill
file and the memory-mapped output are page cache the kernel can drop, not
process memory), the peak resident set for reference, the bytes spilled to
disk and the seconds taken. A least-squares line through the peaks gives the
growth per frame and the projection to 10,000 frames.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

GiB = 1 << 30


class NullBackend:
    """The Backend protocol (backends/base.py) without a network: 8x8 average pooling as the VAE
    encoder, the image latent as the denoised depth latent, nearest upsampling as the decoder.
    """

    name = "null"

    def __init__(self, dtype):
        import torch

        from rd_engine.model.checkpoint import reference_config
        from rd_engine.model.ddim import DDIM

        self.device = torch.device("cpu")
        self.dtype = dtype
        self.ddim = DDIM(reference_config("scheduler_config.json"))

    def encode(self, frames):
        import torch
        import torch.nn.functional as F

        x = F.avg_pool2d(frames.float(), 8)
        return torch.cat([x, x.mean(1, keepdim=True)], 1).to(self.dtype)

    def denoise(self, rgb, depth, step):
        return rgb.clone()

    def decode(self, latents):
        import torch.nn.functional as F

        return F.interpolate(latents.float().mean(1, keepdim=True), scale_factor=8, mode="nearest").to(self.dtype)


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def child(frames: int, res: int, host_snippets: int, workdir: Path) -> dict:
    import torch

    from rd_engine.pipeline.offline import Budgets, Pipeline
    from rd_engine.settings import resolve
    from rd_engine.testing.media import write_test_video

    torch.set_num_threads(1)
    video = workdir / f"clip_{frames}.mp4"
    t = time.perf_counter()
    write_test_video(video, n_frames=frames, width=res, height=res * 9 // 16, fps=30)
    write_seconds = time.perf_counter() - t
    spill = workdir / f"spill_{frames}"
    spill.mkdir()
    settings, _ = resolve("fast", dict(dilations=[1, 10, 25], res=res, dtype="fp16", seed=0))
    pipe = Pipeline(
        NullBackend(torch.float16), progress=False, budgets=Budgets(host_snippets=host_snippets, spill_dir=str(spill))
    )
    peak = {"anon": _status("RssAnon"), "spilled": 0}
    stop = threading.Event()

    def sample():
        while not stop.wait(0.05):
            peak["anon"] = max(peak["anon"], _status("RssAnon"))
            try:
                peak["spilled"] = max(peak["spilled"], sum(p.stat().st_size for p in spill.iterdir()))
            except OSError:
                pass

    sampler = threading.Thread(target=sample, daemon=True)
    anon0 = _status("RssAnon")
    sampler.start()
    t = time.perf_counter()
    pred = pipe.predict(str(video), settings)
    seconds = time.perf_counter() - t
    stop.set()
    sampler.join()
    shape = tuple(pred.depth.shape)
    pred.close()
    return dict(
        frames=frames,
        shape=shape,
        seconds=seconds,
        write_video_seconds=write_seconds,
        anon_before_bytes=anon0,
        peak_anon_bytes=peak["anon"],
        peak_rss_bytes=_status("VmHWM"),
        peak_spill_bytes=peak["spilled"],
        spill_left=sorted(p.name for p in spill.iterdir()),
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--frames", type=int, nargs="+", default=[300, 600, 1200])
    ap.add_argument("--res", type=int, default=768)
    ap.add_argument(
        "--host-snippets-gib",
        type=float,
        default=1.0,
        help="host budget for snippet depth before it spills (small, so the runs reach the steady state)",
    )
    ap.add_argument("--project", type=int, default=10_000, help="project the peak to this many frames")
    ap.add_argument("--out", default="benchmarks/results/offline_memory_cpu.json")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        frames, res, workdir = int(a.child[0]), int(a.child[1]), Path(a.child[2])
        r = child(frames, res, int(a.host_snippets_gib * GiB), workdir)
        (workdir / f"result_{frames}.json").write_text(json.dumps(r))
        return 0
    runs = []
    for n in a.frames:
        with tempfile.TemporaryDirectory(prefix="rd-offline-mem-") as tmp:
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.offline_memory",
                "--child",
                str(n),
                str(a.res),
                tmp,
                "--host-snippets-gib",
                str(a.host_snippets_gib),
            ]
            subprocess.run(cmd, check=True)
            r = json.loads((Path(tmp) / f"result_{n}.json").read_text())
        runs.append(r)
        print(
            f"{n} frames: peak anonymous {r['peak_anon_bytes'] / GiB:.2f} GiB, "
            f"peak RSS {r['peak_rss_bytes'] / GiB:.2f} GiB, spilled {r['peak_spill_bytes'] / GiB:.1f} GiB, "
            f"{r['seconds']:.0f} s, spill files left {len(r['spill_left'])}",
            flush=True,
        )
    xs = [r["frames"] for r in runs]
    ys = [r["peak_anon_bytes"] for r in runs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var > 0 else 0.0
    projected = my + slope * (a.project - mx)
    spill_per_frame = max(r["peak_spill_bytes"] for r in runs) / max(xs)
    report = dict(
        machine=platform.platform(),
        res=a.res,
        host_snippets_bytes=int(a.host_snippets_gib * GiB),
        runs=runs,
        anon_bytes_per_frame=slope,
        projected_frames=a.project,
        projected_peak_anon_bytes=projected,
        spill_bytes_per_frame=spill_per_frame,
    )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2))
    print(
        f"growth {slope / 1024:.1f} KiB per frame -> {a.project} frames: {projected / GiB:.2f} GiB anonymous "
        f"peak; snippet spill ~{spill_per_frame * a.project / GiB:.0f} GiB of disk"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
