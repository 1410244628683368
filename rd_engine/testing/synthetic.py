"""Synthetic ground truth for the co-alignment stage (docs/method.md, "Snippets" and "Co-alignment").

Two pieces:

* :func:`make_scene_depth`: metric depth of a procedural scene (ground plane,
  back wall, side wall, axis-aligned boxes, spheres), ray cast analytically per
  pixel for a pinhole camera that translates and yaws smoothly over the video.
* :func:`make_snippets`: the snippet set the pipeline would build for that
  video (``rd_engine.snippets.plan.plan_snippets``), each snippet being the GT
  inverse depth of its frames under a random affine, plus noise and outlier
  blobs; optionally normalized to ``[-1, 1]`` per snippet like a model's
  output. Returns the per-snippet affines that undo all of that (the
  "true-affine optimum").

Scoring a video against the GT (one global least-squares affine fit in inverse
depth, AbsRel and delta1) is `rd_engine.eval.metrics.score_video`: the one
implementation of the metrics, shared with `rd-engine eval`.

Convention reminder: the pipeline's solvers work on ``depth - global_min``
(``rd_engine.coalign.problem.solver_view``) and ``rd_engine.coalign.merge.merge_aligned``
subtracts ``global_min`` before applying ``(s, t)``. ``make_snippets`` returns
params for the stored (unshifted) snippets; convert them with
:func:`true_params_after_min_shift` before merging or evaluating the objective.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from rd_engine.pipeline.offline import cpu_threads
from rd_engine.snippets.plan import SnippetGroup, plan_snippets

__all__ = [
    "make_scene_depth",
    "make_snippets",
    "true_params_after_min_shift",
    "global_min_of",
]

# ---------------------------------------------------------------------------
# Scene
# ---------------------------------------------------------------------------

CAM_HEIGHT = 1.5  # metres above the ground plane (y = 0)
FOCAL_REL = 0.9  # focal length in units of the image width (~58 deg horizontal FOV)
PITCH = -0.06  # radians, slightly looking down
WALL_Z = 22.0  # back wall plane z = WALL_Z
SIDE_WALL_X = -7.5  # side wall plane x = SIDE_WALL_X
TRAVEL = 7.0  # metres travelled forward over the whole video: the nearest boxes come within ~1.5 m


@dataclass(frozen=True)
class _Scene:
    boxes: list[tuple[tuple[float, float, float], tuple[float, float, float]]]  # (lo xyz, hi xyz)
    spheres: list[tuple[tuple[float, float, float], float]]  # (centre xyz, radius)
    phases: tuple[float, float, float]  # trajectory phases
    amps: tuple[float, float]  # lateral sway (m), yaw amplitude (rad)


def _make_scene(seed: int, n_boxes: int = 4, n_spheres: int = 3) -> _Scene:
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(n_boxes):
        cx, cz = rng.uniform(-5.0, 5.0), rng.uniform(8.5, 19.0)
        hx, hz = rng.uniform(0.4, 1.2), rng.uniform(0.4, 1.2)
        y0 = 0.0 if rng.uniform() < 0.75 else rng.uniform(0.5, 1.5)  # most stand on the ground
        h = rng.uniform(0.6, 3.0)
        boxes.append(((cx - hx, y0, cz - hz), (cx + hx, y0 + h, cz + hz)))
    spheres = []
    for _ in range(n_spheres):
        r = rng.uniform(0.4, 1.2)
        cx, cz = rng.uniform(-4.5, 4.5), rng.uniform(7.5, 18.0)
        cy = r if rng.uniform() < 0.6 else rng.uniform(r, 3.0)
        spheres.append(((cx, cy, cz), r))
    phases = tuple(float(v) for v in rng.uniform(0.0, 2.0 * math.pi, 3))
    amps = (float(rng.uniform(0.5, 1.0)), float(rng.uniform(0.10, 0.20)))
    return _Scene(boxes, spheres, phases, amps)


def _camera_path(n_frames: int, scene: _Scene, travel: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame camera origin [N, 3] and camera-to-world rotation [N, 3, 3] (float64)."""
    u = torch.linspace(0.0, 1.0, n_frames, dtype=torch.float64) if n_frames > 1 else torch.zeros(1, dtype=torch.float64)
    p0, p1, p2 = scene.phases
    sway, yaw_amp = scene.amps
    x = sway * torch.sin(2 * math.pi * 0.75 * u + p0)
    y = CAM_HEIGHT + 0.04 * torch.sin(2 * math.pi * 3.0 * u + p1)
    z = travel * u
    yaw = yaw_amp * torch.sin(2 * math.pi * 0.5 * u + p2)
    origin = torch.stack([x, y, z], -1)
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = math.cos(PITCH), math.sin(PITCH)
    zero, one = torch.zeros_like(yaw), torch.ones_like(yaw)
    r_yaw = torch.stack(
        [torch.stack([cy, zero, sy], -1), torch.stack([zero, one, zero], -1), torch.stack([-sy, zero, cy], -1)], -2
    )
    r_pitch = torch.tensor([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]], dtype=torch.float64)
    return origin, r_yaw @ r_pitch


def make_scene_depth(
    n_frames: int,
    width: int,
    height: int,
    seed: int = 0,
    chunk_pixels: int = 1 << 19,
    threads: int | None = 1,
    travel: float = TRAVEL,
) -> torch.Tensor:
    """Metric z-depth `[N, H, W]` float32 of a procedural scene seen by a moving pinhole camera.

    Ray casting is analytic and vectorized over blocks of ``chunk_pixels``
    rays (pixels of one frame, or several small frames), on ``threads`` torch
    threads (1 by default: elementwise work that gains little from threads and
    collapses when the cores are shared; None keeps torch's setting). The scene and trajectory
    depend on ``seed`` and ``travel`` only; the camera covers the same path whatever
    ``n_frames`` is, moving ``travel`` metres forward (7 by default: objects come
    near and leave the view, so each snippet's depth range, and with it a
    model's per-snippet [-1, 1] normalization, changes along the video, as in
    a walking or driving clip). Depth is the camera-frame z (not the ray
    length), at most ~25 m.
    """
    if n_frames < 1 or width < 1 or height < 1:
        raise ValueError("n_frames, width and height must be >= 1")
    scene = _make_scene(seed)
    origin, rot = _camera_path(n_frames, scene, travel)
    f = FOCAL_REL * width
    xs = (torch.arange(width, dtype=torch.float32) + 0.5 - width / 2) / f
    ys = -(torch.arange(height, dtype=torch.float32) + 0.5 - height / 2) / f
    # camera-frame ray directions with z = 1, so the ray parameter is the z-depth
    d_cam = torch.stack(
        [xs[None, :].expand(height, width), ys[:, None].expand(height, width), torch.ones(height, width)], -1
    ).reshape(-1, 3)
    P = height * width
    out = torch.empty(n_frames, P, dtype=torch.float32)
    fb = max(1, chunk_pixels // P)  # frames per step (small frames)
    pb = min(P, chunk_pixels)  # pixels per step (large frames): keeps temporaries cache-sized
    with cpu_threads(threads):
        for a in range(0, n_frames, fb):
            b = min(n_frames, a + fb)
            R = rot[a:b].float()  # [B, 3, 3]
            o = origin[a:b].float()[:, None, :]  # [B, 1, 3]
            for p0 in range(0, P, pb):
                out[a:b, p0 : p0 + pb] = _cast(scene, R, o, d_cam[p0 : p0 + pb])
    return out.reshape(n_frames, height, width)


def _cast(scene: _Scene, R: torch.Tensor, o: torch.Tensor, d_cam: torch.Tensor) -> torch.Tensor:
    """z-depth `[B, P]` of rays `d_cam [P, 3]` (z = 1) from origins `o [B, 1, 3]` rotated by `R [B, 3, 3]`."""
    inf = float("inf")
    d = torch.einsum("bij,pj->bpi", R, d_cam)  # [B, P, 3]
    dx, dy, dz = d.unbind(-1)
    ox, oy, oz = o.unbind(-1)  # [B, 1]
    # planes: ground y = 0 (from above), back wall z = WALL_Z, side wall x = SIDE_WALL_X
    depth = torch.where(dy < 0, (0.0 - oy) / dy, inf)
    depth = torch.minimum(depth, torch.where(dz > 0, (WALL_Z - oz) / dz, inf))
    depth = torch.minimum(depth, torch.where(dx < 0, (SIDE_WALL_X - ox) / dx, inf))
    # boxes (slab method); nudge zero components so that 0 * inf never happens
    tiny = 1e-12
    inv = [1.0 / torch.where(c.abs() < tiny, torch.full_like(c, tiny), c) for c in (dx, dy, dz)]
    orig = (ox, oy, oz)
    for lo, hi in scene.boxes:
        tmin = tmax = None
        for ax in range(3):
            t1 = (lo[ax] - orig[ax]) * inv[ax]
            t2 = (hi[ax] - orig[ax]) * inv[ax]
            near, far = torch.minimum(t1, t2), torch.maximum(t1, t2)
            tmin = near if tmin is None else torch.maximum(tmin, near)
            tmax = far if tmax is None else torch.minimum(tmax, far)
        hit = (tmax >= tmin) & (tmin > 0)
        depth = torch.where(hit, torch.minimum(depth, tmin), depth)
    # spheres
    aa = dx * dx + dy * dy + dz * dz
    for (cx, cy, cz), r in scene.spheres:
        ocx, ocy, ocz = ox - cx, oy - cy, oz - cz  # [B, 1]
        bb = dx * ocx + dy * ocy + dz * ocz  # half of the usual b
        cc = ocx * ocx + ocy * ocy + ocz * ocz - r * r
        disc = bb * bb - aa * cc
        t = (-bb - disc.clamp_min(0).sqrt()) / aa
        hit = (disc >= 0) & (t > 0)
        depth = torch.where(hit, torch.minimum(depth, t), depth)
    return depth


# ---------------------------------------------------------------------------
# Snippets
# ---------------------------------------------------------------------------


def _add_blobs(
    y: torch.Tensor, n_blobs: int, lo: float, hi: float, gen: torch.Generator, radius: tuple[float, float]
) -> None:
    """Replace `n_blobs` random discs of the snippet `y [L, H, W]` by uniform garbage in [lo, hi], in place."""
    L, H, W = y.shape
    short = min(H, W)
    for _ in range(n_blobs):
        j = int(torch.randint(0, L, (1,), generator=gen))
        r = float(radius[0] + (radius[1] - radius[0]) * torch.rand((), generator=gen)) * short
        r = max(r, 1.0)
        cy = float(torch.rand((), generator=gen)) * H
        cx = float(torch.rand((), generator=gen)) * W
        y0, y1 = max(0, int(cy - r)), min(H, int(cy + r) + 1)
        x0, x1 = max(0, int(cx - r)), min(W, int(cx + r) + 1)
        if y1 <= y0 or x1 <= x0:
            continue
        yy = torch.arange(y0, y1, dtype=torch.float32)[:, None] + 0.5 - cy
        xx = torch.arange(x0, x1, dtype=torch.float32)[None, :] + 0.5 - cx
        mask = yy * yy + xx * xx <= r * r
        garbage = lo + (hi - lo) * torch.rand(y1 - y0, x1 - x0, generator=gen)
        patch = y[j, y0:y1, x0:x1]
        patch[mask] = garbage[mask]


def make_snippets(
    gt_depth: torch.Tensor,
    dilations: list[int],
    snippet_len: int = 3,
    cap: bool = True,
    mode: str = "a",
    seed: int = 0,
    noise: float = 0.02,
    outlier_blobs: int = 3,
    dtype: torch.dtype = torch.float16,
    scale_range: tuple[float, float] = (0.3, 3.0),
    shift_range: float = 1.0,
    blob_radius: tuple[float, float] = (0.03, 0.12),
    threads: int | None = 1,
) -> tuple[list[SnippetGroup], list[tuple[torch.Tensor, torch.Tensor]], list[int]]:
    """Synthetic snippet predictions with known per-snippet affines.

    For every snippet of ``plan_snippets(N, snippet_len, dilations, cap)``:
    ``y = a_k * (1 / gt) + b_k`` with ``a_k`` log-uniform in ``scale_range``
    and ``b_k`` uniform in ``[-shift_range, shift_range] * m`` (``m`` = median
    GT inverse depth of the video); plus Gaussian noise of std
    ``noise * (max(y) - min(y))`` and ``outlier_blobs`` discs (radius
    ``blob_radius`` x the shorter side, in a random frame of the snippet)
    replaced by uniform garbage in the snippet's range widened by 20 %.
    Mode ``"b"`` then maps each snippet to ``[-1, 1]`` by its own min / max.
    Deterministic given ``seed`` (one torch generator; runs on ``threads``
    torch threads, see :func:`make_scene_depth`).

    Returns:
        ``(groups, true_params, effective_dilations)``: groups as the pipeline
        builds them (``SnippetGroup``, depth in ``dtype``); ``true_params[g] =
        (scale [K], shift [K])`` (float32) with ``scale * stored + shift`` = GT
        inverse depth for the noise-free part (on the stored values, NOT
        min-shifted: see :func:`true_params_after_min_shift`).
    """
    if mode not in ("a", "b"):
        raise ValueError(f"mode must be 'a' or 'b' (got {mode!r})")
    if gt_depth.dim() != 3:
        raise ValueError("gt_depth must be [N, H, W]")
    N, H, W = gt_depth.shape
    effective, plan = plan_snippets(N, snippet_len, list(dilations), cap)
    with cpu_threads(threads):
        return _make_snippets(
            1.0 / gt_depth.float(),
            plan,
            effective,
            mode,
            seed,
            noise,
            outlier_blobs,
            dtype,
            scale_range,
            shift_range,
            blob_radius,
        )


def _make_snippets(
    inv, plan, effective, mode, seed, noise, outlier_blobs, dtype, scale_range, shift_range, blob_radius
):

    N, H, W = inv.shape
    sub = inv[:, :: max(1, H // 64), :: max(1, W // 64)]
    m = float(sub.median())
    gen = torch.Generator().manual_seed(int(seed))
    log_lo, log_hi = math.log(scale_range[0]), math.log(scale_range[1])
    groups, true_params = [], []
    for g in plan:
        K, L = g.indices.shape
        depth = torch.empty(K, L, H, W, dtype=dtype)
        s_true = torch.empty(K, dtype=torch.float64)
        t_true = torch.empty(K, dtype=torch.float64)
        for k in range(K):
            a = math.exp(log_lo + (log_hi - log_lo) * float(torch.rand((), generator=gen)))
            b = shift_range * m * (2.0 * float(torch.rand((), generator=gen)) - 1.0)
            x = inv[g.indices[k]]  # [L, H, W] float32
            y = x * a + b
            lo, hi = float(y.min()), float(y.max())
            spread = max(hi - lo, 1e-12)
            if noise > 0:
                y += torch.randn(y.shape, generator=gen) * (noise * spread)
            if outlier_blobs > 0:
                _add_blobs(y, outlier_blobs, lo - 0.2 * spread, hi + 0.2 * spread, gen, blob_radius)
            if mode == "b":
                ylo, yhi = float(y.min()), float(y.max())
                c = 2.0 / max(yhi - ylo, 1e-12)
                e = -ylo * c - 1.0
                y = y * c + e
            else:
                c, e = 1.0, 0.0
            depth[k] = y.to(dtype)
            # stored = alpha * x + beta  ->  x = stored / alpha - beta / alpha
            alpha, beta = c * a, c * b + e
            s_true[k] = 1.0 / alpha
            t_true[k] = -beta / alpha
        groups.append(g.with_depth(depth))
        true_params.append((s_true.float(), t_true.float()))
    return groups, true_params, effective


def global_min_of(groups: list[SnippetGroup]) -> torch.Tensor:
    """The global minimum over all snippets, exactly as the pipeline computes it."""
    return torch.stack([g.depth.min() for g in groups]).min()


def true_params_after_min_shift(
    true_params: list[tuple[torch.Tensor, torch.Tensor]], global_min
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Params for the solver / merge convention (snippets minus ``global_min``).

    ``s * (z - gm) + t' = s * z + t``  =>  ``t' = t + s * gm``. Returns float32.
    """
    gm = float(global_min)
    return [(s.float().clone(), (t.double() + s.double() * gm).float()) for s, t in true_params]
