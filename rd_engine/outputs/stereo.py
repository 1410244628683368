"""Stereo 3D from the depth: a left and a right view by depth-image-based rendering, in the usual layouts.

Geometry. With ``near = (d - vmin) / (vmax - vmin)`` the nearness in [0, 1] of a pixel (``d`` the
relative inverse depth, ``vmin``/``vmax`` one range per shot or run, never per frame, so the views
do not breathe), its parallax in pixels, of the left view against the right one, is

    parallax = x_left - x_right = divergence / 100 * W * (near - convergence)

``divergence`` (% of the frame width ``W``) is the parallax between the nearest and the farthest
depth; ``convergence`` (in [0, 1]) is the nearness that stays on the screen plane (parallax 0):
nearer pixels come out of the screen (crossed parallax, positive), farther ones go behind it.
The left view moves each pixel by ``round(+parallax / 2)``, the right view by ``round(-parallax / 2)``
(`rd_engine.kernels.forward_warp`: z-buffered forward warping, holes filled from the background
side). ``swap_eyes`` exchanges the two views (for cross-eyed viewing or a display that expects
right first).

Depth edges. The model's depth is soft at object edges: pixels between the foreground and the
background get in-between depths and would be scattered into the uncovered gap, a smear of the
foreground's edge. Before warping, ``edge_px`` pixels on each side of a depth edge are snapped to the
nearer of the local foreground or background value (a horizontal toggle filter over ``2 * edge_px +
1`` pixels, where the local range exceeds ``edge_threshold``), so edges move as one piece.

Layouts: ``sbs`` (full side-by-side, 2W x H), ``half-sbs`` (each view squeezed to W/2), ``tb``
(top-bottom, W x 2H), ``half-tb`` (each view H/2), ``anaglyph`` (red-cyan, Dubois's least-squares
matrices applied to the 8-bit values / 255, clipped) and ``lr`` (left and right as two files).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rd_engine.errors import UserError
from rd_engine.io.files import atomic_output
from rd_engine.kernels.stereo import depth_keys, forward_warp

LAYOUTS = ("sbs", "half-sbs", "tb", "half-tb", "anaglyph", "lr")
CODECS = ("h264", "h265")

# Dubois, "A projection method to generate anaglyph stereo images" (2001): red-cyan, applied as
# out = clip(L @ left + R @ right) on RGB column vectors.
DUBOIS_LEFT = np.array([[0.456, 0.500, 0.176], [-0.040, -0.038, -0.016], [-0.015, -0.021, -0.005]], np.float32)
DUBOIS_RIGHT = np.array([[-0.043, -0.088, -0.002], [0.378, 0.734, -0.018], [-0.072, -0.113, 1.226]], np.float32)


@dataclass
class StereoOptions:
    """How the stereo views are made and written."""

    layouts: list[str] = dataclasses.field(default_factory=lambda: ["half-sbs"])
    divergence: float = 2.0  # % of the width: the parallax between the nearest and the farthest depth
    convergence: float = 0.5  # nearness (0 = farthest, 1 = nearest) that stays at zero parallax
    swap_eyes: bool = False
    edge_px: int = 2  # depth-edge snapping half-width (0 = off)
    edge_threshold: float = 0.05  # nearness range that counts as an edge
    codec: str = "h264"
    ten_bit: bool = False
    crf: int = 18

    def validate(self) -> StereoOptions:
        bad = [x for x in self.layouts if x not in LAYOUTS]
        if bad or not self.layouts:
            raise UserError(f"--stereo takes layouts from {', '.join(LAYOUTS)}, got {', '.join(bad) or 'none'}")
        if not 0 <= self.divergence <= 20:
            raise UserError(f"--divergence must be in [0, 20] % of the width, got {self.divergence}")
        if not 0 <= self.convergence <= 1:
            raise UserError(
                f"--convergence must be in [0, 1] (0 = farthest depth, 1 = nearest), got {self.convergence}"
            )
        if self.codec not in CODECS:
            raise UserError(f"--stereo-codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if self.edge_px < 0:
            raise UserError(f"--stereo-edge must be >= 0, got {self.edge_px}")
        return self


def nearness(depth: np.ndarray | torch.Tensor, vmin: float, vmax: float) -> torch.Tensor:
    """``(d - vmin) / (vmax - vmin)`` clipped to [0, 1], float32 (a range of 1 where vmax == vmin)."""
    d = torch.as_tensor(np.asarray(depth, np.float32) if isinstance(depth, np.ndarray) else depth).float()
    span = (vmax - vmin) or 1.0
    return ((d - vmin) / span).clamp(0.0, 1.0)


def snap_edges(near: torch.Tensor, edge_px: int, threshold: float) -> torch.Tensor:
    """Snap pixels near depth edges to the nearer of the local extremes (horizontal toggle filter)."""
    if edge_px <= 0:
        return near
    k = 2 * edge_px + 1
    x = near[None, None]
    hi = F.max_pool2d(x, (1, k), stride=1, padding=(0, edge_px))[0, 0]
    lo = -F.max_pool2d(-x, (1, k), stride=1, padding=(0, edge_px))[0, 0]
    edge = (hi - lo) > threshold
    snapped = torch.where(hi - near <= near - lo, hi, lo)
    return torch.where(edge, snapped, near)


def shifts(near: torch.Tensor, width: int, opts: StereoOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """The left and right views' whole-pixel shifts (int32) of each pixel."""
    parallax = (opts.divergence / 100.0 * width) * (near - opts.convergence)
    half = parallax * 0.5
    return torch.floor(half + 0.5).to(torch.int32), torch.floor(-half + 0.5).to(torch.int32)


def render_pair(
    rgb: np.ndarray | torch.Tensor, near: torch.Tensor, opts: StereoOptions, impl: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The left and right views [H, W, 3] uint8 of one frame, from its nearness [H, W] at the frame's size."""
    rgb = torch.as_tensor(rgb)
    if near.shape != rgb.shape[:2]:
        raise ValueError(f"nearness {tuple(near.shape)} is not the frame's size {tuple(rgb.shape[:2])}")
    near = snap_edges(near.to(rgb.device), opts.edge_px, opts.edge_threshold)
    qn = depth_keys(near)
    dl, dr = shifts(near, rgb.shape[1], opts)
    left = forward_warp(rgb, qn, dl, impl)
    right = forward_warp(rgb, qn, dr, impl)
    if opts.swap_eyes:
        left, right = right, left
    return left, right


def _squeeze(view: torch.Tensor, h: int, w: int) -> torch.Tensor:
    x = view.permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)


def anaglyph(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Red-cyan Dubois anaglyph of two uint8 views: ``clip(L @ left + R @ right)`` on values / 255."""
    # explicit sums in a fixed order rather than a matmul, so that the result does not depend on which
    # BLAS kernel a matmul picks for the tensor's layout
    lf, rf = left.float() / 255.0, right.float() / 255.0
    channels = []
    for c in range(3):
        acc = torch.zeros(left.shape[:2], dtype=torch.float32, device=left.device)
        for k in range(3):
            acc = acc + float(DUBOIS_LEFT[c, k]) * lf[..., k]
            acc = acc + float(DUBOIS_RIGHT[c, k]) * rf[..., k]
        channels.append(acc)
    x = torch.stack(channels, dim=-1)
    return (x.clamp(0.0, 1.0) * 255.0 + 0.5).floor().to(torch.uint8)


def compose(left: torch.Tensor, right: torch.Tensor, layout: str) -> list[np.ndarray]:
    """The frames of one layout (two for ``lr``, else one), uint8 [H', W', 3]."""
    h, w = left.shape[:2]
    if layout == "sbs":
        out = [torch.cat([left, right], dim=1)]
    elif layout == "half-sbs":
        hw = max(1, w // 2)
        out = [torch.cat([_squeeze(left, h, hw), _squeeze(right, h, hw)], dim=1)]
    elif layout == "tb":
        out = [torch.cat([left, right], dim=0)]
    elif layout == "half-tb":
        hh = max(1, h // 2)
        out = [torch.cat([_squeeze(left, hh, w), _squeeze(right, hh, w)], dim=0)]
    elif layout == "anaglyph":
        out = [anaglyph(left, right)]
    elif layout == "lr":
        out = [left, right]
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return [np.ascontiguousarray(o.cpu().numpy()) for o in out]


def output_names(stem: str, layouts: Sequence[str]) -> list[str]:
    """The files `write_stereo` writes: ``{stem}_stereo_{layout}.mp4``, two for ``lr``, and the sidecar."""
    names = []
    for layout in layouts:
        if layout == "lr":
            names += [f"{stem}_stereo_left.mp4", f"{stem}_stereo_right.mp4"]
        else:
            names.append(f"{stem}_stereo_{layout}.mp4")
    return names + [f"{stem}_stereo.json"]


def shot_ranges(n: int, shots: Sequence[tuple[int, int]] | None) -> list[tuple[int, int]]:
    """The frame ranges that each get one depth range: the given shots (which must tile [0, n)), else one."""
    if not shots:
        return [(0, n)]
    shots = sorted((int(a), int(b)) for a, b in shots)
    pos = 0
    for a, b in shots:
        if a != pos or b <= a:
            raise UserError(f"shot ranges must tile frames 0..{n} without gaps or overlaps, got {a}:{b} after {pos}")
        pos = b
    if pos != n:
        raise UserError(f"shot ranges end at frame {pos}, the depth has {n} frames")
    return shots


def write_stereo(
    frames,
    depth,
    out_dir: str | os.PathLike,
    stem: str,
    fps: float,
    opts: StereoOptions,
    shots: Sequence[tuple[int, int]] | None = None,
    audio_from=None,
    audio_start: float = 0.0,
    about: dict | None = None,
    tick=None,
    impl: str = "auto",
    device: str | torch.device = "cpu",
    timestamps: Sequence[float] | None = None,
) -> list[Path]:
    """Render and write every requested stereo layout of a clip (each file atomic).

    Args:
        frames: The clip's RGB frames, uint8 [H, W, 3], in order (an iterator: never held whole).
        depth: [N, h, w] relative inverse depth (resized to the frames' size on the way).
        out_dir: Output folder.
        stem: File name prefix.
        fps: Frame rate of the videos.
        opts: Layouts, geometry and codec.
        shots: Frame ranges ``(start, stop)`` of the shots (each gets its own depth range); None: one range.
        audio_from: A video whose audio streams the videos carry (None: silent).
        audio_start: Source time (s) of the first frame (when the run started later in the video).
        about: What the sidecar records besides the stereo settings.
        tick: Progress callback (one per frame).
        impl: Kernel choice (`rd_engine.kernels.forward_warp`).
        device: Where the warp runs.
        timestamps: The frames' source times (variable frame rate kept); None: a fixed rate.

    Returns:
        The paths written.
    """
    from rd_engine.io.video_writer import VideoWriter

    opts.validate()
    out_dir = Path(out_dir)
    n = int(depth.shape[0])
    ranges = shot_ranges(n, shots)
    bounds = []
    for a, b in ranges:
        chunk = [np.asarray(depth[i : min(b, i + 64)]) for i in range(a, b, 64)]
        bounds.append((min(float(c.min()) for c in chunk), max(float(c.max()) for c in chunk)))
    names = output_names(stem, opts.layouts)
    writers = [
        VideoWriter(
            out_dir / name,
            fps,
            crf=opts.crf,
            codec=opts.codec,
            ten_bit=opts.ten_bit,
            audio_from=audio_from,
            audio_start=audio_start,
        )
        for name in names[:-1]
    ]
    dev = torch.device(device)
    with contextlib.ExitStack() as stack:
        for w in writers:
            stack.enter_context(w)
        count = 0
        shot = 0
        for i, rgb in enumerate(frames):
            if i >= n:
                break
            while i >= ranges[shot][1]:
                shot += 1
            vmin, vmax = bounds[shot]
            rgb_t = torch.from_numpy(np.ascontiguousarray(rgb)).to(dev)
            h, w = rgb_t.shape[:2]
            d = torch.from_numpy(np.asarray(depth[i], np.float32)).to(dev)
            if d.shape != (h, w):
                d = F.interpolate(d[None, None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[
                    0, 0
                ]
            left, right = render_pair(rgb_t, nearness(d, vmin, vmax), opts, impl)
            k = 0
            for layout in opts.layouts:
                for frame in compose(left, right, layout):
                    writers[k].write(frame, None if timestamps is None else timestamps[i])
                    k += 1
            count += 1
            if tick is not None:
                tick(1)
        if count != n:
            raise UserError(f"{stem}: the input gave {count} frames, the depth has {n}")
    sidecar = {
        "what": "stereo views rendered from the depth (depth-image-based rendering)",
        "parallax": "x_left - x_right = divergence / 100 * width * (near - convergence), near = (d - vmin) / "
        "(vmax - vmin) in [0, 1], one vmin and vmax per shot",
        "stereo": dataclasses.asdict(opts),
        "shots": [{"frames": [a, b], "vmin": lo, "vmax": hi} for (a, b), (lo, hi) in zip(ranges, bounds)],
        "fps": float(fps),
        "num_frames": count,
        "files": names[:-1],
        **(about or {}),
    }
    with atomic_output(out_dir / names[-1]) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
    return [out_dir / name for name in names]
