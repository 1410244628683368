"""The stereo forward warp: the Triton kernel against its PyTorch reference, and the reference's rules.

Both are integer arithmetic on the same keys and shifts (`rd_engine.kernels.stereo`), so the
tolerance is zero: the outputs must be equal bit for bit. Sizes include odd ones, one narrower than
the fill kernel's row block (16) and rows where the shift moves everything out of the frame.
The ``device`` fixture comes from conftest.py (``cpu``: Triton interpreter, ``cuda``: compiled).
"""

import pytest
import torch

from rd_engine.kernels.stereo import depth_keys, forward_warp, forward_warp_ref

SIZES = [(1, 1), (7, 13), (17, 31), (33, 20)]


def _inputs(h, w, seed, dtype=torch.uint8, max_shift=6):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        rgb = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
    else:
        rgb = torch.rand((h, w, 3), generator=g, dtype=dtype)
    near = torch.rand((h, w), generator=g)
    near[:, : w // 3] = 0.25  # a plane of equal depth: the ties' rule is taken too
    dx = torch.randint(-max_shift, max_shift + 1, (h, w), generator=g, dtype=torch.int32)
    return rgb, depth_keys(near), dx


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_kernel_equals_reference(device, h, w, dtype):
    for seed in range(3):
        rgb, qn, dx = _inputs(h, w, seed, dtype)
        ref = forward_warp_ref(rgb, qn, dx)
        out = forward_warp(rgb.to(device), qn.to(device), dx.to(device), impl="triton").cpu()
        assert out.dtype == rgb.dtype
        assert torch.equal(out, ref)


def test_kernel_equals_reference_with_rows_shifted_out(device):
    rgb, qn, dx = _inputs(9, 11, 5)
    dx[2] = 50  # everything of row 2 leaves the frame: it keeps its own pixels
    ref = forward_warp_ref(rgb, qn, dx)
    assert torch.equal(ref[2], rgb[2])
    assert torch.equal(forward_warp(rgb.to(device), qn.to(device), dx.to(device), impl="triton").cpu(), ref)


def test_reference_nearest_wins_and_holes_take_the_background():
    # one row: background (near 0) everywhere, a foreground pixel block (near 1) at 4..5 moved right by 2
    w = 10
    rgb = torch.arange(w, dtype=torch.uint8).view(1, w, 1)
    near = torch.zeros(1, w)
    near[0, 4:6] = 1.0
    dx = torch.zeros(1, w, dtype=torch.int32)
    dx[0, 4:6] = 2
    out = forward_warp_ref(rgb, depth_keys(near), dx)[0, :, 0].tolist()
    # 6 and 7 are covered by the foreground 4, 5; the uncovered 4, 5 take the background's 3 (left side,
    # farther than the foreground on their right)
    assert out == [0, 1, 2, 3, 3, 3, 4, 5, 8, 9]
