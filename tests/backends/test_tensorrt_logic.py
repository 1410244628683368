"""The TensorRT backend's logic that runs without TensorRT: aligned addresses for the bindings."""

import torch

from rd_engine.backends.tensorrt_backend import TRT_ALIGNMENT, aligned


def test_misaligned_views_are_copied_and_aligned_ones_are_not():
    base = torch.arange(4096, dtype=torch.float16)
    start = next(i for i in range(1, 256) if (base.data_ptr() + 2 * i) % TRT_ALIGNMENT)
    view = base[start : start + 1000]  # e.g. latents[a:b] or one chunk of a split batch
    assert view.data_ptr() % TRT_ALIGNMENT != 0
    copy = aligned(view)
    assert copy.data_ptr() != view.data_ptr() and torch.equal(copy, view) and copy.is_contiguous()
    strided = base.view(64, 64)[:, ::2]  # not contiguous: copied whatever its address
    assert aligned(strided).is_contiguous() and torch.equal(aligned(strided), strided)
    offset = (-base.data_ptr() % TRT_ALIGNMENT) // 2
    ok = base[offset : offset + 512]
    assert ok.data_ptr() % TRT_ALIGNMENT == 0 and aligned(ok) is ok
