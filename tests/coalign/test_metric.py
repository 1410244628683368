"""The robust anchor fit (coalign.metric) against known affines, outliers and noise."""

import numpy as np
import pytest

from rd_engine.coalign.metric import fit_metric, fit_windowed, sample_nearest, to_metric, to_processed


def _scene(m=3000, seed=0):
    rng = np.random.default_rng(seed)
    d = rng.uniform(-1, 1, m)  # relative inverse depth of the anchors' pixels
    a, b = 0.21, 0.27  # 1/z = a d + b: depth from 1.7 m to 16.7 m
    return rng, d, 1.0 / (a * d + b), (a, b)


def test_exact_affine_anchors_are_reproduced():
    _, d, z, (a, b) = _scene()
    fit = fit_metric(d, z)
    assert fit.scale == pytest.approx(a, rel=1e-9) and fit.shift == pytest.approx(b, rel=1e-9)
    grid = np.linspace(-1, 1, 1001)
    rel = np.abs(fit.depth(grid) / (1.0 / (a * grid + b)) - 1)
    assert rel.max() < 1e-4  # the bound; float32 output rounding is ~6e-8
    assert fit.inliers == d.size


@pytest.mark.parametrize("kind", ["background", "garbage"])
def test_thirty_percent_outliers_and_noise_stay_near_the_noise_free_fit(kind):
    rng, d, z, (a, b) = _scene()
    noisy = z * (1 + 0.01 * rng.standard_normal(z.size))  # 1 % range noise, as a good LiDAR at 10 m
    out = rng.random(z.size) < 0.30
    if kind == "background":  # returns from behind a depth edge: 1.5x to 4x farther
        noisy[out] = z[out] * rng.uniform(1.5, 4.0, out.sum())
    else:  # miscalibration and multipath: anything within the sensor's range
        noisy[out] = rng.uniform(0.3, 40.0, out.sum())
    fit = fit_metric(d, noisy)
    grid = np.linspace(-1, 1, 201)
    rel = np.abs(fit.depth(grid) / (1.0 / (a * grid + b)) - 1)
    # bound: 0.5 % over the whole depth range (the noise-free fit is exact; 2100 inliers with 1 % noise
    # fix the affine to ~0.05 %); a least-squares fit is off by tens of percent here
    assert rel.max() < 5e-3
    ls = np.linalg.lstsq(np.stack([d, np.ones_like(d)], 1), 1 / noisy, rcond=None)[0]
    assert np.abs(to_metric(grid, *ls) / (1.0 / (a * grid + b)) - 1).max() > 0.05
    assert 0.6 * z.size < fit.inliers < 0.75 * z.size


def test_too_few_or_degenerate_anchors_give_no_fit():
    assert fit_metric(np.array([0.1, 0.2]), np.array([3.0, 4.0])) is None
    assert fit_metric(np.full(10, 0.3), np.linspace(2, 3, 10)) is None


def test_metric_depth_is_nan_where_the_inverse_depth_is_not_positive():
    z = to_metric(np.array([-2.0, 0.0, 1.0]), 1.0, 0.5)
    assert np.isnan(z[0]) and z[1] == 2.0 and z[2] == pytest.approx(1 / 1.5)


def test_windowed_fit_follows_a_slow_drift_the_single_fit_cannot():
    rng = np.random.default_rng(1)
    n, per = 200, 100
    frames = np.repeat(np.arange(n), per)
    d = rng.uniform(-1, 1, frames.size)
    a = 0.2 * (1 + 0.2 * frames / n)  # the scale drifts by 20 % over the video
    z = 1 / (a * d + 0.3)
    base = fit_metric(d, z)
    fits = fit_windowed(frames, d, z, base, np.arange(n), window=5.0)
    grid = np.linspace(-1, 1, 21)
    for f in (0, 50, 100, 150, 199):
        truth = 1 / (0.2 * (1 + 0.2 * f / n) * grid + 0.3)
        # within 1.5 % (the ends see a one-sided window, which lags the drift) where one fit is off by 25 %
        assert np.abs(fits[f].depth(grid) / truth - 1).max() < 1.5e-2
        if f in (0, 199):
            assert np.abs(base.depth(grid) / truth - 1).max() > 0.2


def test_pixel_mapping_and_nearest_sampling():
    xp, yp = to_processed(np.array([0.0, 199.0]), np.array([0.0, 99.0]), (200, 100), (100, 50))
    assert np.allclose(xp, [-0.25, 99.25]) and np.allclose(yp, [-0.25, 49.25])
    img = np.arange(12.0).reshape(3, 4)
    assert sample_nearest(img, np.array([0.2, 2.6, -0.4]), np.array([0.0, 1.4, 2.3])).tolist() == [0, 7, 8]
