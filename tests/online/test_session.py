"""Online sessions on a real (tiny) model: several sessions on one engine, bad frames."""

import numpy as np
import pytest


def test_sessions_on_one_engine_match_one_at_a_time(tiny_ckpt, clip, tmp_path):
    from rd_engine import Engine
    from rd_engine.io.video import iter_frames
    from rd_engine.testing.media import write_test_video

    other = tmp_path / "other.mp4"
    write_test_video(other, n_frames=10, width=96, height=64, seed=4)
    engine = Engine(tiny_ckpt, device="cpu")
    kw = dict(res=48, dilations=[1, 3], seed=5)

    def frames(p):
        return [(f.rgb, f.timestamp) for f in iter_frames(p)]

    a_frames, b_frames = frames(clip), frames(other)

    def alone(fr):
        s = engine.open_stream(lag=2, **kw)
        out = [d for rgb, ts in fr for d in s.push(rgb, ts)] + s.flush()
        return out

    solo_a, solo_b = alone(a_frames), alone(b_frames)
    sa, sb = engine.open_stream(lag=2, **kw), engine.open_stream(lag=2, **kw)
    inter_a, inter_b = [], []
    for i in range(max(len(a_frames), len(b_frames))):
        if i < len(a_frames):
            inter_a += sa.push(*a_frames[i])
        if i < len(b_frames):
            inter_b += sb.push(*b_frames[i])
    inter_a += sa.flush()
    inter_b += sb.flush()
    for solo, inter in ((solo_a, inter_a), (solo_b, inter_b)):
        assert [f.index for f in solo] == [f.index for f in inter]
        for x, y in zip(solo, inter):
            assert np.array_equal(x.depth, y.depth) and x.timestamp == y.timestamp
    assert sa.latency.percentiles()["p50"] > 0


def test_push_rejects_bad_frames(tiny_ckpt):
    from rd_engine import Engine
    from rd_engine.errors import UserError

    s = Engine(tiny_ckpt, device="cpu").open_stream(res=32)
    with pytest.raises(UserError, match="uint8"):
        s.push(np.zeros((10, 10), np.float32))
    s.push(np.zeros((24, 32, 3), np.uint8))
    with pytest.raises(UserError, match="size changed"):
        s.push(np.zeros((20, 32, 3), np.uint8))
