"""The C++ online aligner against the Python one at the sizes users run (model-free golden tests).

Snippets are recorded here (random depth with per-snippet scale, shift and noise), the Python code
runs them, and the C++ code replays the same calls from the recording (`native/tests/aligner_golden.cpp`):
- the whole `OnlineAligner` as a session drives it (the snippets ending at each frame, then `finish`)
  at 768x432 with lag 0, 4 and 12: full-size frames are a low-resolution recording blown up by a
  pixel-exact repeat plus a fixed pattern;
- the window solver `solve_robust` on recorded solver copies of a 1024x576 stream's lag-12 window.

Which branches each case reaches (the thresholds are the Python code's; the test asserts them by
watching the solver's input):
- per-entry merge (`kernels/average.py`, `_PER_ENTRY_MIN_ELEMS = 1 << 14` pixels a frame): every
  768x432 case (331,776 pixels); the 96x60 parity test never does.
- window solve (lag > 0): lag 4 and 12; lag 0 never solves a window.
- coarse-to-fine solve (`coalign/robust.py`: step = solver pixels // (1 << 17) > 1) and strided sampling
  of the residuals (`numel // (1 << 18)` > 1): the 1024x576 window of 30 snippets (3 x 5,916 solver
  pixels each, 532,440 in all: coarse step 4, residual stride 2). A 768x432 lag-12 window of the
  `fast` preset (dilations 1, 25) reaches them too, but only after 50 frames of a real stream.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import torch

import rd_engine.online.aligner as online_aligner
from rd_engine.online.aligner import OnlineAligner

# C++ and Python run the same float32 operations in the same order; the bound is 1e-4.
TOLERANCE = 1e-4
L, FACTOR, SUB = 3, 16, 4
DILATIONS = (1, 2)
# name, width, height, lag, frames, branches it must reach
CASES = [
    ("768x432-lag0", 768, 432, 0, 4, {"per_entry"}),
    ("768x432-lag4", 768, 432, 4, 7, {"per_entry", "window"}),
    ("768x432-lag12", 768, 432, 12, 13, {"per_entry", "window"}),
]


def full_size(low: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The recorded [L, h, w] at [L, height, width]: the same ATen calls as aligner_golden.cpp."""
    x = low.repeat_interleave(FACTOR, -1).repeat_interleave(FACTOR, -2)[..., :height, :width]
    yy = torch.arange(height).view(-1, 1)
    xx = torch.arange(width).view(1, -1)
    pattern = torch.remainder(xx * 7 + yy * 13, 17).float() / 17 * 0.01
    return (x + pattern).contiguous()


def record(folder: Path, name: str, width: int, height: int, lag: int, n_frames: int, seed: int, monkeypatch) -> dict:
    gen = torch.Generator().manual_seed(seed)
    h, w = -(-height // FACTOR), -(-width // FACTOR)
    scene = torch.rand(n_frames, h, w, generator=gen) * 4 + 1  # one inverse-depth field per frame
    window = (L - 1) * max(DILATIONS) + 1
    solver_numels: list[int] = []
    real_solve = online_aligner.solve_robust

    def watched(groups, *args, **kwargs):
        solver_numels.append(sum(g.depth.numel() for g in groups))
        return real_solve(groups, *args, **kwargs)

    monkeypatch.setattr(online_aligner, "solve_robust", watched)
    al = OnlineAligner(L, lag)
    ops: list[dict] = []
    lows: list[np.ndarray] = []
    expected: list[np.ndarray] = []

    def finish(upto):
        done = al.finish(upto, window + lag)
        ops.append({"op": "finish", "upto": upto, "finished": len(done)})
        for f in done:
            assert f.index == len(expected)
            sub = f.depth[::SUB, ::SUB].astype(np.float32).reshape(-1)
            expected.append(np.concatenate([sub, np.array([f.depth.mean(dtype=np.float64)], np.float32)]))

    for i in range(n_frames):
        al.note_frame(i, i / 30.0, None)
        ops.append({"op": "note", "index": i})
        for d in DILATIONS:
            if i - (L - 1) * d < 0:
                continue
            frames = tuple(range(i - (L - 1) * d, i + 1, d))
            s = float(torch.rand(1, generator=gen)) * 2 + 0.5
            t = float(torch.rand(1, generator=gen)) - 0.5
            low = (scene[list(frames)] * s + t + 0.05 * torch.randn(L, h, w, generator=gen)).float()
            lows.append(low.numpy())
            al.add(d, frames, full_size(low, height, width), 1.0)
            ops.append({"op": "add", "dilation": d, "frames": list(frames), "weight": 1.0})
        finish(i)
    finish(None)
    monkeypatch.undo()
    assert len(expected) == n_frames
    np.concatenate([x.reshape(-1) for x in lows]).astype(np.float32).tofile(folder / f"{name}.snippets.f32")
    np.concatenate(expected).astype(np.float32).tofile(folder / f"{name}.expected.f32")
    reached = {"per_entry"} if width * height >= 1 << 14 else set()
    if solver_numels:
        reached.add("window")
    return {
        "name": name,
        "width": width,
        "height": height,
        "low_width": w,
        "low_height": h,
        "factor": FACTOR,
        "sub": SUB,
        "snippet_len": L,
        "lag": lag,
        "max_window": window + lag,
        "frames": n_frames,
        "snippets": f"{name}.snippets.f32",
        "expected": f"{name}.expected.f32",
        "ops": ops,
        "reached": sorted(reached),
    }


def record_window(folder: Path, width: int, height: int, seed: int) -> dict:
    """`solve_robust` on the solver copies of a lag-12 window at `width` x `height` (dilations 1 and 2)."""
    from rd_engine.coalign.robust import solve_robust
    from rd_engine.snippets.plan import SnippetGroup

    gen = torch.Generator().manual_seed(seed)
    P = len(range(2, height - 2, 10)) * len(range(2, width - 2, 10))  # solver_copy's pixels of a frame
    n = 19  # frames 0..18 of the window: 15 snippets of dilation 1 (0..16) and of dilation 2 (0..18)
    scene = torch.rand(n, P, generator=gen) * 4 + 1
    groups, init, depths = [], [], []
    for d in (1, 2):
        starts = range(15)
        idx = torch.tensor([[s + j * d for j in range(L)] for s in starts])
        s = torch.rand(len(starts), generator=gen) * 2 + 0.5
        t = torch.rand(len(starts), generator=gen) - 0.5
        x = scene[idx] * s.view(-1, 1, 1) + t.view(-1, 1, 1) + 0.05 * torch.randn(*idx.shape, P, generator=gen)
        x = x.float().contiguous()
        groups.append(SnippetGroup(d, 1, idx, x))
        init.append((1 / s + 0.1 * torch.randn(len(starts), generator=gen), torch.zeros(len(starts))))
        depths.append(x)
    assert sorted({f for g in groups for f in g.indices.reshape(-1).tolist()}) == list(range(n))
    total = sum(g.depth.numel() for g in groups)
    reached = {"coarse_to_fine"} if total // (1 << 17) > 1 else set()
    if total // (1 << 18) > 1:
        reached.add("strided")
    solved = solve_robust(groups, n, iters=20, fine_iters=2, init=[(a.float(), b.float()) for a, b in init])
    np.concatenate([x.numpy().reshape(-1) for x in depths]).astype(np.float32).tofile(folder / "window.depth.f32")
    flat = [torch.cat([a for a, _ in init]), torch.cat([b for _, b in init])]
    np.concatenate([v.float().numpy() for v in flat]).tofile(folder / "window.init.f32")
    out = [torch.cat([a for a, _ in solved]), torch.cat([b for _, b in solved])]
    np.concatenate([v.float().numpy() for v in out]).tofile(folder / "window.expected.f32")
    return {
        "name": f"{width}x{height}-window",
        "frames": n,
        "pixels": P,
        "snippet_len": L,
        "groups": [{"dilation": g.dilation, "weight": 1, "indices": g.indices.tolist()} for g in groups],
        "depth": "window.depth.f32",
        "init": "window.init.f32",
        "expected": "window.expected.f32",
        "reached": sorted(reached),
    }


def test_aligner_golden_at_user_sizes(native_build, tmp_path, monkeypatch):
    cases = []
    for k, (name, width, height, lag, n_frames, branches) in enumerate(CASES):
        case = record(tmp_path, name, width, height, lag, n_frames, 100 + k, monkeypatch)
        assert branches <= set(case["reached"]), (name, case["reached"])
        cases.append(case)
    window = record_window(tmp_path, 1024, 576, 7)
    assert {"coarse_to_fine", "strided"} <= set(window["reached"]), window["reached"]
    spec = {"tolerance": TOLERANCE, "cases": cases, "windows": [window]}
    (tmp_path / "golden.json").write_text(json.dumps(spec))
    r = subprocess.run([str(native_build / "rd_aligner_golden"), str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("max abs diff") == len(CASES) + 1 and "aligner golden: ok" in r.stdout
