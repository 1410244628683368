"""Peak RSS of the online mode versus stream length (issue: flat within 10% from 500 to 5000 frames).

Each length runs in its own process so each peak is its own:

    python -m benchmarks.stream_memory --frames 500 5000 --res 64 --out benchmarks/results/stream_memory_cpu.json

Frames are generated on the fly (no video file), pushed through one session of the tiny
random-weight model, and the finished depth is dropped as a consumer would publish it.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time


def child(frames: int, res: int, lag: int, dilations: list[int]) -> dict:
    import torch

    from rd_engine import Engine
    from rd_engine.testing.media import synthetic_frame

    torch.set_num_threads(1)
    engine = Engine.demo(device="cpu")
    session = engine.open_stream(res=res, lag=lag, dilations=dilations, seed=0)
    rss_marks = {}
    t0 = time.perf_counter()
    done = 0
    for i in range(frames):
        rgb = synthetic_frame(i % 240, 240, res, res * 3 // 4)
        done += len(session.push(rgb, i / 30))
        if (i + 1) in (100, frames // 2, frames):
            rss_marks[i + 1] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    done += len(session.flush())
    lat = session.latency.percentiles()
    return {
        "frames": frames,
        "finished": done,
        "seconds": time.perf_counter() - t0,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_rss_at": rss_marks,
        "latency": lat,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[500, 5000])
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--lag", type=int, default=0)
    ap.add_argument("--dilations", type=int, nargs="+", default=[1, 25])
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        print(json.dumps(child(a.child, a.res, a.lag, a.dilations)))
        return
    rows = []
    for n in a.frames:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.stream_memory",
                "--child",
                str(n),
                "--res",
                str(a.res),
                "--lag",
                str(a.lag),
                "--dilations",
                *map(str, a.dilations),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(
            f"{n:6d} frames: peak RSS {rows[-1]['peak_rss_bytes'] / 2**20:.1f} MiB ({rows[-1]['seconds']:.0f} s)",
            flush=True,
        )
    ratio = rows[-1]["peak_rss_bytes"] / rows[0]["peak_rss_bytes"]
    print(f"peak RSS ratio {a.frames[-1]} / {a.frames[0]} frames: {ratio:.3f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(
                {
                    "machine": platform.platform(),
                    "processor": platform.processor(),
                    "res": a.res,
                    "lag": a.lag,
                    "dilations": a.dilations,
                    "runs": rows,
                    "ratio": ratio,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
