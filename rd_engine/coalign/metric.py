"""Metric depth from sparse anchors: one robust affine in inverse depth (docs/robotics.md, "Anchors").

RollingDepth's output `d` is relative inverse depth (affine-invariant, near = large). Sparse metric
samples `z_i` at pixels (projected LiDAR, the valid pixels of a stereo or time-of-flight camera, the
landmarks of visual-inertial odometry) fix the affine: `1 / z = a * d + b`, so metric depth is
`z = 1 / (a * d + b)` (NaN where `a * d + b <= 0`).

The fit minimizes the *relative* depth residual `r_i = z_i * (a * d_i + b) - 1` (= `z_i / z_hat_i - 1`),
which is linear in `(a, b)` and independent of the scene's scale, with a Tukey biweight (IRLS): a
least-median-of-squares start over pairs of samples, then reweighted least squares with the scale
`MAD_TO_SIGMA * median |r|`. Tukey's weight is exactly 0 past `TUKEY_C` robust sigmas, so outliers
(depth edges where a LiDAR return hits the background behind a foreground pixel, miscalibration)
have no pull at all; up to half the samples may be outliers. Anchors that are an exact affine of `d`
in inverse depth are reproduced to rounding.

Pure numpy (float64): a fit over 10^5 samples takes milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rd_engine.coalign.problem import MAD_TO_SIGMA

TUKEY_C = 4.685  # Tukey biweight's 95 %-efficiency constant (Gaussian residuals), in robust sigmas
MIN_SAMPLES = 3  # fewer anchors give no fit (two points always fit exactly, outliers included)
LMEDS_PAIRS = 256  # candidate pairs of the least-median start
LMEDS_SAMPLES = 4096  # samples the start's medians are taken over (a deterministic subsample)
WINDOW_MIN_SAMPLES = 50  # samples a windowed (slowly varying) fit needs; fewer: the frame keeps the range's fit
SIGMA_FLOOR = 1e-9  # robust scale floor (exact anchors have zero residuals)


@dataclass(frozen=True)
class MetricFit:
    """`1 / z = scale * d + shift`: relative inverse depth `d` to metric depth `z` (metres)."""

    scale: float
    shift: float
    samples: int  # anchors the fit saw
    inliers: int  # ... with a nonzero Tukey weight
    sigma: float  # robust scale of the inliers' relative depth residual (0.01 = 1 %)

    def inverse_depth(self, d: np.ndarray) -> np.ndarray:
        """Metric inverse depth `scale * d + shift` (1 / metres), float64."""
        return self.scale * np.asarray(d, np.float64) + self.shift

    def depth(self, d: np.ndarray) -> np.ndarray:
        """Metric depth in metres, float32, NaN where the fitted inverse depth is not positive."""
        return to_metric(d, self.scale, self.shift)


def to_metric(d: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """`1 / (scale * d + shift)` as float32 metres, NaN where `scale * d + shift <= 0` or not finite."""
    inv = scale * np.asarray(d, np.float64) + shift
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(inv > 0, 1.0 / inv, np.nan)
    return z.astype(np.float32)


def _wls(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> tuple[float, float] | None:
    """Weighted least squares of `u a + v b = 1` (u = z d, v = z): `(a, b)` or None if singular."""
    # elementwise sums, not BLAS dot products: a threaded BLAS on a shared CPU took 60 ms per call here
    wu, wv = w * u, w * v
    suu, suv, svv = float(np.sum(wu * u)), float(np.sum(wu * v)), float(np.sum(wv * v))
    su, sv = float(np.sum(wu)), float(np.sum(wv))
    det = suu * svv - suv * suv
    if not (det > 1e-14 * max(suu * svv, 1e-300)):
        return None
    return (svv * su - suv * sv) / det, (suu * sv - suv * su) / det


def _lmeds_start(d: np.ndarray, z: np.ndarray, extra: list[tuple[float, float]]) -> tuple[float, float] | None:
    """The candidate `(a, b)` of least median |relative residual|: exact fits through pairs of samples
    (from a fixed-seed subsample), the plain least squares fit and `extra` ones.
    """
    rng = np.random.default_rng(0)
    m = d.size
    sub = rng.choice(m, LMEDS_SAMPLES, replace=False) if m > LMEDS_SAMPLES else np.arange(m)
    ds, zs = d[sub], z[sub]
    cands = list(extra)
    ls = _wls(zs * ds, zs, np.ones_like(zs))
    if ls is not None:
        cands.append(ls)
    i = rng.integers(0, ds.size, LMEDS_PAIRS)
    j = rng.integers(0, ds.size, LMEDS_PAIRS)
    dd = ds[i] - ds[j]
    ok = np.abs(dd) > 1e-12 * max(float(np.abs(ds).max()), 1e-300)
    a = (1.0 / zs[i][ok] - 1.0 / zs[j][ok]) / dd[ok]
    b = 1.0 / zs[i][ok] - a * ds[i][ok]
    cands.extend(zip(a.tolist(), b.tolist()))
    if not cands:
        return None
    A = np.asarray([c[0] for c in cands])
    B = np.asarray([c[1] for c in cands])
    med = np.median(np.abs(zs[None] * (A[:, None] * ds[None] + B[:, None]) - 1.0), axis=1)
    k = int(np.argmin(med))
    return float(A[k]), float(B[k])


def fit_metric(
    d: np.ndarray,
    z: np.ndarray,
    weights: np.ndarray | None = None,
    init: MetricFit | None = None,
    iters: int = 50,
) -> MetricFit | None:
    """The robust affine `1 / z = a d + b` (see module doc) from anchors `z` (metres) and the relative
    inverse depth `d` at their pixels.

    Args:
        d: Relative inverse depth at the anchors, `[M]`.
        z: Metric depth of the anchors (metres, > 0), `[M]`.
        weights: Optional prior weights `[M]` (>= 0), multiplied with the robust ones (the windowed fit's
            temporal weights).
        init: A previous fit to start from instead of the least-median start (a stream's last fit, the
            range's fit for a window): robust already, and the start costs more than the IRLS.
        iters: Most IRLS iterations.

    Returns:
        The fit, or None with fewer than `MIN_SAMPLES` anchors or when they cannot fix two parameters
        (all at one relative depth).
    """
    d = np.asarray(d, np.float64).reshape(-1)
    z = np.asarray(z, np.float64).reshape(-1)
    prior = np.ones_like(z) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    keep = prior > 0
    if not keep.all():
        d, z, prior = d[keep], z[keep], prior[keep]
    if d.size < MIN_SAMPLES or float(np.ptp(d)) <= 1e-12 * max(float(np.abs(d).max()), 1e-300):
        return None
    start = _lmeds_start(d, z, []) if init is None else (init.scale, init.shift)
    if start is None:
        return None
    a, b = start
    u, v = z * d, z
    w = prior
    sigma = SIGMA_FLOOR
    for _ in range(iters):
        r = u * a + v * b - 1.0
        sigma = max(MAD_TO_SIGMA * float(np.median(np.abs(r[prior > 0]))), SIGMA_FLOOR)
        q = r / (TUKEY_C * sigma)
        w = prior * np.where(np.abs(q) < 1.0, (1.0 - q * q) ** 2, 0.0)
        new = _wls(u, v, w)
        if new is None:
            break
        done = abs(new[0] - a) <= 1e-10 * abs(a) + 1e-300 and abs(new[1] - b) <= 1e-10 * (abs(b) + abs(a))
        a, b = new
        if done:
            break
    r = u * a + v * b - 1.0
    inl = np.abs(r) < TUKEY_C * sigma
    s_in = MAD_TO_SIGMA * float(np.median(np.abs(r[inl]))) if inl.any() else math.nan
    return MetricFit(float(a), float(b), int(d.size), int(inl.sum()), s_in)


def sample_nearest(depth: np.ndarray, xp: np.ndarray, yp: np.ndarray) -> np.ndarray:
    """Values of `depth [H, W]` at the pixels containing points `(xp, yp)` (processed-frame pixel
    coordinates, centres at integers): nearest pixel, so no value is a blend across a depth edge.
    """
    h, w = depth.shape
    xi = np.clip(np.rint(xp).astype(np.int64), 0, w - 1)
    yi = np.clip(np.rint(yp).astype(np.int64), 0, h - 1)
    return np.asarray(depth)[yi, xi]


def to_processed(x: np.ndarray, y: np.ndarray, input_size, processed_size) -> tuple[np.ndarray, np.ndarray]:
    """Input-frame pixel coordinates (centres at integers) -> processed-frame ones (the frame resized as
    a whole, `io.video.preprocess`): `x_p = (x + 0.5) * W_p / W_in - 0.5`, the same for y.
    """
    (wi, hi), (wp, hp) = input_size, processed_size
    return (np.asarray(x, np.float64) + 0.5) * (wp / wi) - 0.5, (np.asarray(y, np.float64) + 0.5) * (hp / hi) - 0.5


def fit_windowed(
    frames: np.ndarray, d: np.ndarray, z: np.ndarray, base: MetricFit, targets: np.ndarray, window: float
) -> list[MetricFit]:
    """The optional slowly varying correction: per target frame, the robust fit of the anchors with
    Gaussian temporal weights `exp(-((f_i - f) / window)^2 / 2)` (samples within 3 windows), started
    from `base` (the range's one fit). A frame whose neighbourhood holds fewer than
    `WINDOW_MIN_SAMPLES` effective samples keeps `base`.
    """
    order = np.argsort(frames, kind="stable")
    frames, d, z = frames[order], d[order], z[order]
    out = []
    for f in targets.tolist():
        a0, a1 = np.searchsorted(frames, [f - 3 * window, f + 3 * window + 1e-9])
        tw = np.exp(-0.5 * ((frames[a0:a1] - f) / window) ** 2)
        fit = None
        if a1 - a0 >= MIN_SAMPLES and float(tw.sum()) >= WINDOW_MIN_SAMPLES:
            fit = fit_metric(d[a0:a1], z[a0:a1], weights=tw, init=base)
        out.append(base if fit is None else fit)
    return out
