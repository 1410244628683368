"""End-to-end method on the tiny checkpoint: batching, determinism, presets, sizes."""

import numpy as np
import pytest
import torch

from rd_engine.backends.torch_backend import TorchBackend
from rd_engine.pipeline.offline import Pipeline
from rd_engine.settings import resolve
from rd_engine.testing.media import write_test_video

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def pipe(tiny_models):
    return Pipeline(TorchBackend(tiny_models, CPU, torch.float32), progress=False)


def _settings(**kw):
    base = dict(res=64, dilations=[1, 3], seed=7, align="reference", align_iters=30)
    base.update(kw)
    return resolve(kw.pop("preset", "fast"), base, CPU)[0]


def test_batched_snippets_equal_one_at_a_time(pipe, clip):
    one = pipe.predict(clip, _settings(snippet_batch=1, vae_batch=1), keep_snippets=True)
    many = pipe.predict(clip, _settings(snippet_batch=7, vae_batch=5), keep_snippets=True)
    for a, b in zip(one.snippets, many.snippets):
        assert a.dilation == b.dilation
        # same math, different batch shapes: float reassociation only
        torch.testing.assert_close(a.depth, b.depth, rtol=0, atol=1e-5)


def test_seeded_runs_are_deterministic(pipe, clip):
    a = pipe.predict(clip, _settings(refine_step=1))
    b = pipe.predict(clip, _settings(refine_step=1))
    assert np.array_equal(a.depth, b.depth)
    c = pipe.predict(clip, _settings(refine_step=1, seed=8))
    assert not np.array_equal(a.depth, c.depth)


def test_shapes_and_normalization(pipe, clip):
    p = pipe.predict(clip, _settings(), keep_snippets=True, keep_coaligned=True)
    assert p.depth.shape == (14, 42, 64)  # 96x64 -> longer edge 64 -> 64x42 (not a multiple of 8)
    assert p.coaligned.min() == -1 and p.coaligned.max() == 1
    assert p.dilations == [1, 3]
    assert [g.depth.shape for g in p.snippets] == [(12, 3, 42, 64), (8, 3, 42, 64)]
    assert len(p.timestamps) == 14


def test_depth_is_pixel_aligned_at_odd_sizes(pipe, tmp_path):
    """A 67x45 video at its own size gives 67x45 depth (the reference would give 64x40)."""
    path = tmp_path / "odd.mkv"
    write_test_video(path, n_frames=6, width=67, height=45, pix_fmt="yuv444p")
    p = pipe.predict(path, _settings(res=0, dilations=[1]))
    assert p.depth.shape == (6, 45, 67)


def test_padding_does_not_change_multiple_of_8_input(pipe, tmp_path):
    """At a multiple of 8 nothing is padded: the same frames cropped from a padded size agree there."""
    path = tmp_path / "m8.mp4"
    write_test_video(path, n_frames=6, width=64, height=48)
    p = pipe.predict(path, _settings(res=0, dilations=[1]))
    assert p.depth.shape == (6, 48, 64)


@pytest.mark.parametrize("n", [1, 2])
def test_one_and_two_frame_videos(pipe, tmp_path, n):
    path = tmp_path / f"short{n}.mp4"
    write_test_video(path, n_frames=n, width=64, height=48)
    p = pipe.predict(path, _settings(res=0, refine_step=1))
    assert p.depth.shape == (n, 48, 64)
    assert np.isfinite(p.depth).all()


def test_duplicate_dilations_after_capping_are_computed_once(pipe, clip):
    p = pipe.predict(clip, _settings(dilations=[1, 10, 25]))
    assert p.dilations == [1, 3, 3]  # 14 frames: max gap int(14/3) - 1 = 3
    assert p.groups == [(1, 1), (3, 2)]


def test_robust_alignment_merges_by_the_robust_mean(pipe, clip):
    """--align robust: the pipeline's chunked, store-backed merge is merge.merge_aligned with the
    per-frame Cauchy scales of merge.merge_deltas, on the same snippets and parameters.
    """
    from rd_engine.coalign.merge import merge_aligned, merge_deltas, renormalize
    from rd_engine.coalign.problem import solver_view

    p = pipe.predict(clip, _settings(align="robust", dilations=[1, 2, 3]), keep_snippets=True, keep_coaligned=True)
    n = p.depth.shape[0]
    gm = torch.stack([g.depth.min() for g in p.snippets]).min()
    views = [g.with_depth(solver_view(g.depth, gm)) for g in p.snippets]
    delta = merge_deltas(views, p.params, n)
    assert torch.isfinite(delta).sum() >= n - 2  # all but the thinly covered ends are merged robustly
    robust = renormalize(merge_aligned(p.snippets, p.params, gm, n, delta)).numpy()
    mean = renormalize(merge_aligned(p.snippets, p.params, gm, n)).numpy()
    np.testing.assert_allclose(p.coaligned, robust, rtol=0, atol=1e-5)
    assert np.abs(p.coaligned - mean).max() > 1e-4  # and that is not the plain mean
