"""Rolling scheduler (snippet set, emission timing) and the budgeted snippet store."""

import itertools

import pytest
import torch

from rd_engine.errors import UserError
from rd_engine.pipeline.stores import SnippetStore
from rd_engine.snippets.scheduler import RollingScheduler
from rd_engine.snippets.plan import plan_snippets

CASES = [(n, dil, cap) for n in (1, 2, 3, 5, 6, 14, 30, 51, 77, 78, 100, 160)
         for dil in ([1], [1, 25], [1, 10, 25], [1, 3, 3]) for cap in (True, False)]


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


def _store(tmp_path, dev_items, host_items):
    item = 3 * 8 * 10 * 2  # fp16 [3, 8, 10]
    return SnippetStore((3, 8, 10), torch.float16, torch.device("cpu"), dev_items * item, host_items * item,
                        spill_dir=tmp_path)


def test_store_tiers_and_budget_accounting(tmp_path):
    st = _store(tmp_path, 2, 3)
    data = {}
    for k in range(10):
        data[(1, k)] = torch.randn(3, 8, 10).half()
        st.put((1, k), data[(1, k)])
        assert st.device_bytes <= st.device_budget and st.host_bytes <= st.host_budget
    assert st.tiers() == {"device": 2, "host": 3, "disk": 5}
    assert st.peak_device_bytes <= st.device_budget
    for key, v in data.items():
        assert torch.equal(st.get(key), v)  # spill round trip is exact
    path = st.spill_path
    assert path.exists()
    st.close()
    assert not path.exists()


def test_spill_file_removed_on_exception(tmp_path):
    with pytest.raises(RuntimeError):
        with _store(tmp_path, 0, 0) as st:
            st.put((1, 0), torch.zeros(3, 8, 10))
            assert st.spill_path.exists()
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_pipeline_with_tiny_budgets_spills_and_matches(tmp_path, tiny_models, clip):
    from rd_engine.backends.torch_backend import TorchBackend
    from rd_engine.pipeline.offline import Budgets, Pipeline
    from rd_engine.settings import resolve

    s = resolve("fast", dict(res=64, dilations=[1, 3], seed=2, align="reference", align_iters=20),
                torch.device("cpu"))[0]
    be = TorchBackend(tiny_models, "cpu", torch.float32)
    roomy = Pipeline(be, progress=False).predict(clip, s)
    tight = Pipeline(be, progress=False, budgets=Budgets(host_snippets=0, host_output=0, spill_dir=str(tmp_path)))
    p = tight.predict(clip, s)
    assert p.store_tiers["disk"] == sum(1 for _ in range(20)) and p.store_tiers["host"] == 0
    assert torch.equal(torch.from_numpy(roomy.depth), torch.from_numpy(p.depth[:]))
    p.close()
    assert list(tmp_path.iterdir()) == []  # spill file and memory-mapped output are gone
