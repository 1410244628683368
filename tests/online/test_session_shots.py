"""Cuts in a live stream (docs CUT_CONTRACT): `cut()` and detected cuts start a new affine frame."""

import numpy as np
import pytest
import torch

from rd_engine.testing.media import multishot_cuts, multishot_frames

LENGTHS = [9, 2, 7, 1, 8]  # 2- and 1-frame shots take the padded-snippet branch
KW = dict(res=0, dilations=[1, 3], seed=5)


@pytest.fixture(scope="module")
def engine(tiny_ckpt):
    from rd_engine import Engine

    return Engine(tiny_ckpt, device="cpu")


def _fresh(engine, frames, lag):
    s = engine.open_stream(lag=lag, shots="off", **KW)
    return [d for i, f in enumerate(frames) for d in s.push(f, i / 10)] + s.flush()


@pytest.mark.parametrize("lag", [0, 2])
def test_each_shot_equals_a_fresh_session_on_its_frames(engine, lag):
    frames = list(multishot_frames(LENGTHS, 64, 48))
    cuts = set(multishot_cuts(LENGTHS))
    s = engine.open_stream(lag=lag, shots="off", **KW)
    out = s.cut()  # before any frame: a no-op
    for i, f in enumerate(frames):
        if i in cuts:
            out += s.cut()
            out += s.cut()  # twice in a row: no empty shot
        out += s.push(f, i / 10)
    out += s.flush()
    assert [f.index for f in out] == list(range(len(frames)))  # indices count across cuts
    starts = [0, *sorted(cuts)]
    assert [f.index for f in out if f.starts_shot] == starts
    assert s.shot_starts == starts
    for a, b in zip(starts, [*starts[1:], len(frames)]):
        alone = _fresh(engine, frames[a:b], lag)
        assert [f.index + a for f in alone] == [f.index for f in out[a:b]]
        for x, y in zip(alone, out[a:b]):
            np.testing.assert_allclose(y.depth, x.depth, rtol=0, atol=1e-6)
            assert x.timestamp == pytest.approx(y.timestamp - a / 10)


def test_cut_finishes_the_shot_at_once(engine):
    frames = list(multishot_frames([6, 5], 64, 48))
    s = engine.open_stream(lag=3, shots="off", **KW)
    pushed = [d for f in frames[:6] for d in s.push(f)]
    assert len(pushed) < 6  # the lag holds the last frames back...
    done = s.cut()
    assert sorted(f.index for f in pushed + done) == list(range(6))  # ...until the cut finishes them
    rest = [d for f in frames[6:] for d in s.push(f)] + s.flush()
    assert [f.index for f in rest] == list(range(6, 11)) and [f.starts_shot for f in rest] == [True] + [False] * 4


def test_detection_is_on_by_default_and_adds_no_lag(engine):
    lengths = [10, 12, 9]
    frames = list(multishot_frames(lengths, 64, 48))
    auto = engine.open_stream(lag=0, **KW)  # the API's default: shots="auto"
    manual = engine.open_stream(lag=0, shots="off", **KW)
    cuts = set(multishot_cuts(lengths))
    a_out, m_out = [], []
    for i, f in enumerate(frames):
        a = auto.push(f)
        m = (manual.cut() if i in cuts else []) + manual.push(f)
        # every push returns what it returns with the cuts given: the detector holds nothing back
        assert [x.index for x in a] == [x.index for x in m]
        a_out += a
        m_out += m
    a_out += auto.flush()
    m_out += manual.flush()
    assert auto.shot_starts == [0, *sorted(cuts)] and auto.detector is not None
    assert [x.index for x in a_out] == [x.index for x in m_out] == list(range(len(frames)))
    for x, y in zip(a_out, m_out):
        assert x.starts_shot == y.starts_shot
        assert torch.equal(torch.from_numpy(x.depth), torch.from_numpy(y.depth))


def test_cut_after_flush_is_an_error(engine):
    from rd_engine.errors import UserError

    s = engine.open_stream(shots="off", **KW)
    s.flush()
    with pytest.raises(UserError, match="flushed"):
        s.cut()
