"""The budgeted snippet store (device, host, spill file) and the pipeline on tiny budgets."""

import pytest
import torch

from rd_engine.pipeline.stores import SnippetStore


def _store(tmp_path, dev_items, host_items):
    item = 3 * 8 * 10 * 2  # fp16 [3, 8, 10]
    return SnippetStore(
        (3, 8, 10), torch.float16, torch.device("cpu"), dev_items * item, host_items * item, spill_dir=tmp_path
    )


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
    assert st.spill_bytes >= 5 * 3 * 8 * 10 * 2
    assert list(tmp_path.iterdir()) == []  # the spill file has no name: nothing can outlive the process
    st.close()
    assert st.spill_bytes == 0


def test_spill_file_removed_on_exception(tmp_path):
    with pytest.raises(RuntimeError):
        with _store(tmp_path, 0, 0) as st:
            st.put((1, 0), torch.zeros(3, 8, 10))
            assert st.spill_bytes > 0
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_pipeline_with_tiny_budgets_spills_and_matches(tmp_path, tiny_models, clip):
    from rd_engine.backends.torch_backend import TorchBackend
    from rd_engine.pipeline.offline import Budgets, Pipeline
    from rd_engine.settings import resolve

    s = resolve("fast", dict(res=64, dilations=[1, 3], seed=2, align="reference", align_iters=20), torch.device("cpu"))[
        0
    ]
    be = TorchBackend(tiny_models, "cpu", torch.float32)
    roomy = Pipeline(be, progress=False).predict(clip, s)
    tight = Pipeline(be, progress=False, budgets=Budgets(host_snippets=0, host_output=0, spill_dir=str(tmp_path)))
    p = tight.predict(clip, s)
    assert p.store_tiers["disk"] == sum(1 for _ in range(20)) and p.store_tiers["host"] == 0
    assert torch.equal(torch.from_numpy(roomy.depth), torch.from_numpy(p.depth[:]))
    p.close()
    assert list(tmp_path.iterdir()) == []  # spill file and memory-mapped output are gone
