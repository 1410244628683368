"""The C++ online aligner against the Python one at the sizes users run (model-free golden test).

Snippets are recorded here (low-resolution random depth, blown up to full size by a pixel-exact
repeat plus a fixed pattern, with per-snippet scale, shift and noise), the Python `OnlineAligner`
runs them as a session would (the snippets ending at each frame, then `finish`), and the C++
`rd::OnlineAligner` replays the same calls from the recording (`native/tests/aligner_golden.cpp`).

Which branches each case reaches (the thresholds are the Python code's):
- per-entry merge (`kernels/average.py`, `_PER_ENTRY_MIN_ELEMS = 1 << 14` pixels a frame): every case
  here (768x432 = 331,776 and 1024x576 pixels); the 96x60 parity test never does.
- coarse-to-fine window solve (`coalign/robust.py`, step = solver pixels // (1 << 17) > 1): lag 4 and
  12 at 768x432 and 1024x576 (lag 0 never solves a window).
- strided sampling of the residuals (`numel // (1 << 18)` > 1, so numel >= 1 << 19): lag 12 at 1024x576.
The test asserts each case reaches the branches listed for it, by watching the window solver's input.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import rd_engine.online.aligner as online_aligner
from rd_engine.online.aligner import OnlineAligner

# C++ and Python run the same float32 operations in the same order; the bound is 1e-4.
TOLERANCE = 1e-4
L, FACTOR, SUB, N_FRAMES = 3, 16, 4, 16
DILATIONS = (1, 2, 3)
# name, width, height, lag, branches it must reach
CASES = [
    ("768x432-lag0", 768, 432, 0, {"per_entry"}),
    ("768x432-lag4", 768, 432, 4, {"per_entry", "coarse_to_fine"}),
    ("768x432-lag12", 768, 432, 12, {"per_entry", "coarse_to_fine"}),
    ("1024x576-lag12", 1024, 576, 12, {"per_entry", "coarse_to_fine", "strided"}),
]


def full_size(low: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The recorded [L, h, w] at [L, height, width]: the same ATen calls as aligner_golden.cpp."""
    x = low.repeat_interleave(FACTOR, -1).repeat_interleave(FACTOR, -2)[..., :height, :width]
    yy = torch.arange(height).view(-1, 1)
    xx = torch.arange(width).view(1, -1)
    pattern = torch.remainder(xx * 7 + yy * 13, 17).float() / 17 * 0.01
    return (x + pattern).contiguous()


def record(folder: Path, name: str, width: int, height: int, lag: int, seed: int, monkeypatch) -> dict:
    gen = torch.Generator().manual_seed(seed)
    h, w = -(-height // FACTOR), -(-width // FACTOR)
    scene = torch.rand(N_FRAMES, h, w, generator=gen) * 4 + 1  # one inverse-depth field per frame
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

    for i in range(N_FRAMES):
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
    assert len(expected) == N_FRAMES
    np.concatenate([x.reshape(-1) for x in lows]).astype(np.float32).tofile(folder / f"{name}.snippets.f32")
    np.concatenate(expected).astype(np.float32).tofile(folder / f"{name}.expected.f32")
    reached = {"per_entry"} if width * height >= 1 << 14 else set()
    if any(n // (1 << 17) > 1 for n in solver_numels):
        reached.add("coarse_to_fine")
    if any(n // (1 << 18) > 1 for n in solver_numels):
        reached.add("strided")
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
        "frames": N_FRAMES,
        "snippets": f"{name}.snippets.f32",
        "expected": f"{name}.expected.f32",
        "ops": ops,
        "reached": sorted(reached),
    }


def test_aligner_golden_at_user_sizes(native_build, tmp_path, monkeypatch):
    cases = []
    for k, (name, width, height, lag, branches) in enumerate(CASES):
        case = record(tmp_path, name, width, height, lag, 100 + k, monkeypatch)
        assert branches <= set(case["reached"]), (name, case["reached"])
        cases.append(case)
    (tmp_path / "golden.json").write_text(json.dumps({"tolerance": TOLERANCE, "cases": cases}))
    r = subprocess.run([str(native_build / "rd_aligner_golden"), str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("max abs diff") == len(CASES) and "aligner golden: ok" in r.stdout


# -- the C++ session against the Python session at 768x432, with the tiny model -------------------------
# 768x432 reaches the per-entry merge at every lag and the coarse-to-fine window solve at lag 4 and 12
# (dilations 1, 2, 3 over 16 frames: up to 30 snippets of 3 x 3,311 solver pixels in a window, step 2);
# strided sampling needs 1024x576 at lag 12 and is covered by the golden test above.
SESSION_RES, SESSION_DILATIONS, SESSION_SEED, SESSION_FRAMES = 768, ("1", "2", "3"), 11, 16


@pytest.fixture(scope="module")
def aoti_engine_768(tiny_ckpt, tmp_path_factory):
    """fp32 AOTInductor CPU packages of the tiny checkpoint serving 32..1024 px (built once per module)."""
    from rd_engine.cli.build import cmd_build
    from tests.conftest import BUILD_ARGS, _parser

    out = tmp_path_factory.mktemp("engines") / "tiny-aoti-768"
    args = [a if a != "onnxruntime" else "aoti" for a in BUILD_ARGS] + ["--device", "cpu"]
    args[args.index("--res") + 1] = str(SESSION_RES)
    args[args.index("--max-res") + 1] = "1024"
    assert cmd_build(_parser().parse_args(["build", "-c", str(tiny_ckpt), "-o", str(out), "-q", *args])) == 0
    return out


@pytest.fixture(scope="module")
def clip768(tmp_path_factory):
    from rd_engine.io.video import iter_frames
    from rd_engine.testing.media import write_test_video

    path = tmp_path_factory.mktemp("clip768") / "clip768.mp4"
    write_test_video(path, n_frames=SESSION_FRAMES, width=768, height=432, fps=30, seed=5)
    frames = [f.rgb for f in iter_frames(path)]
    assert len(frames) == SESSION_FRAMES
    return path, b"".join(np.ascontiguousarray(f).tobytes() for f in frames)


@pytest.mark.parametrize("lag", [0, 4, 12])
def test_session_parity_768x432(native_build, aoti_engine_768, clip768, tmp_path, lag):
    from rd_engine.cli.main import main as rd_main

    clip, raw = clip768
    out = tmp_path / "py"
    args = ["run", str(clip), "--engine", str(aoti_engine_768), "--backend", "aoti", "--stream", "--lag", str(lag)]
    args += ["--res", str(SESSION_RES), "--dilations", *SESSION_DILATIONS, "--seed", str(SESSION_SEED)]
    args += ["--dtype", "fp32", "-o", str(out), "--no-sbs", "--cmap", "-q"]
    assert rd_main(args) == 0
    expected = np.load(out / f"{clip.stem}.npz")["depth"]
    assert expected.shape == (SESSION_FRAMES, 432, 768)
    cmd = [str(native_build / "rd_stream"), "--engine", str(aoti_engine_768), "--size", "768x432", "--lag", str(lag)]
    cmd += ["--res", str(SESSION_RES), "--dilations", *SESSION_DILATIONS, "--seed", str(SESSION_SEED)]
    r = subprocess.run(cmd, input=raw, capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    got = np.frombuffer(r.stdout, np.float32).reshape(expected.shape)
    assert np.abs(got - expected).max() < TOLERANCE
