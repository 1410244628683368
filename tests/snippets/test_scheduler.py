"""Rolling scheduler: the snippet set and when each snippet is emitted."""

import pytest

from rd_engine.errors import UserError
from rd_engine.snippets.plan import plan_snippets
from rd_engine.snippets.scheduler import RollingScheduler

CASES = [
    (n, dil, cap)
    for n in (1, 2, 3, 5, 6, 14, 30, 51, 77, 78, 100, 160)
    for dil in ([1], [1, 25], [1, 10, 25], [1, 3, 3])
    for cap in (True, False)
]


def _drive(n, dil, cap, chunk=3):
    sch = RollingScheduler(dil, 3, cap)
    emitted = []
    seen = 0
    while seen < n:
        c = min(chunk, n - seen)
        seen += c
        for sn in sch.push(c):
            assert sn.end < seen  # never before its last frame exists
            emitted.append((sn, seen))
    emitted += [(sn, None) for sn in sch.finish()]
    return sch, emitted


@pytest.mark.parametrize("n,dil,cap", CASES)
def test_offline_snippet_set_equals_spec(n, dil, cap):
    try:
        eff, groups = plan_snippets(n, 3, dil, cap)
    except UserError:
        with pytest.raises(UserError):
            _drive(n, dil, cap)
        return
    sch, emitted = _drive(n, dil, cap)
    assert sch.effective == eff
    got = sorted((sn.dilation, sn.frames) for sn, _ in emitted)
    want = sorted((g.dilation, tuple(int(v) for v in row)) for g in groups for row in g.indices)
    assert got == want
    assert sch.weights == {g.dilation: g.weight for g in groups}


def test_emits_as_soon_as_last_frame_exists_once_no_cap_can_apply():
    """Back-pressure: snippets flow while decoding, not only at the end of the video."""
    sch, emitted = _drive(200, [1, 25], True, chunk=1)
    free = 3 * 26  # beyond 78 frames no cap can apply
    for sn, seen in emitted:
        if seen is not None and sn.end + 1 >= free:
            assert seen == max(sn.end + 1, free)
    assert sum(seen is None for _, seen in emitted) == 0


def test_short_video_holds_dilated_snippets_until_the_length_is_known():
    sch, emitted = _drive(30, [1, 10, 25], True, chunk=1)
    assert all(seen is None for sn, seen in emitted)  # could still be capped until the end
    assert sch.effective == [1, 9, 9]
