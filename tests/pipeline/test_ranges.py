"""Frame ranges of a video run on their own give the whole run's scales, shifts and depth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rd_engine.pipeline.offline import Pipeline, coalign
from rd_engine.pipeline.ranges import FrameRange, range_alignment, snippet_batches, split_ranges
from rd_engine.settings import resolve
from rd_engine.testing.media import write_test_video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    p = tmp_path_factory.mktemp("ranges") / "v.mp4"
    write_test_video(p, n_frames=72, width=64, height=48, fps=10, gop=16)  # keyframes to seek to
    return p


@pytest.mark.parametrize("align", ["fast", "robust"])
def test_ranges_give_the_whole_runs_numbers(video, torch_backend, align):
    s = resolve("fast", dict(res=32, dilations=[1, 3], seed=4, dtype="fp32", align=align), torch.device("cpu"))[0]
    whole = Pipeline(torch_backend, progress=False).predict(video, s)
    n = whole.num_frames
    ranges = split_ranges(n, 3, s)
    assert ranges == [(0, 32), (32, 64), (64, 72)]
    parts = [FrameRange(torch_backend, video, s, n, whole.seed, a, b) for a, b in ranges]
    done = [p.infer() for p in parts]
    copies = {}
    for d in done:
        assert not copies.keys() & d["copies"].keys()  # each snippet's copy comes from one range
        copies.update(d["copies"])
    _, plan, effective = snippet_batches(n, s)
    assert len(copies) == sum(g.size for g in plan) and effective == whole.dilations
    gmin = torch.tensor(min(d["gmin"] for d in done), dtype=torch.float32)
    params, delta = coalign(plan, copies, gmin, s, torch.device("cpu"), None, n)
    for (sc, sh), (sc0, sh0) in zip(params, whole.params):
        assert torch.equal(sc, sc0) and torch.equal(sh, sh0)
    spans = [p.merge(params, float(gmin), delta) for p in parts]
    lo, hi = min(x[0] for x in spans), max(x[1] for x in spans)
    depth = np.concatenate([p.finish(lo, hi) for p in parts])
    assert np.array_equal(depth, whole.depth)
    assert [t for d in done for t in d["timestamps"]] == whole.timestamps
    assert sum(d["decoded"] for d in done) < 2 * n  # each range decodes its own frames and a small overlap
    assert [p.sought for p in parts] == [False, True, True]  # ... from a keyframe near it, not from frame 0


def test_range_bounds_are_aligned_and_cover_the_video():
    s = resolve("fast", dict(vae_batch=3), torch.device("cpu"))[0]
    unit = range_alignment(s)
    assert unit == 96
    for n, parts in ((1, 4), (95, 2), (1000, 3), (10_000, 7)):
        r = split_ranges(n, parts, s)
        assert r[0][0] == 0 and r[-1][1] == n and all(b == c for (_, b), (c, _) in zip(r, r[1:]))
        assert all(a % unit == 0 for a, _ in r) and len(r) <= parts
