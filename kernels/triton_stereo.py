"""Triton kernels of the stereo forward warp (`rd_engine.kernels.stereo`): the z-buffered splat and the
background-side hole fill with the colour gather. Imported only once the Triton path was chosen.

Both kernels are integer-only (the depth keys and the rounded shifts are computed by the caller), so
they agree with the PyTorch reference exactly, compiled or interpreted.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

SPLAT_BLOCK = 1024
FILL_ROWS = 16  # rows per program of the fill: its columns run one after another (two sweeps per row)


@triton.jit
def _splat_kernel(qn_ptr, dx_ptr, zbuf_ptr, n_pix, W, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_pix
    y = offs // W
    x = offs - y * W
    qn = tl.load(qn_ptr + offs, mask=mask, other=0)
    dx = tl.load(dx_ptr + offs, mask=mask, other=0)
    t = x + dx
    ok = mask & (t >= 0) & (t < W)
    key = qn * 65536 + x  # nearer wins; at one depth the larger source column
    tl.atomic_max(zbuf_ptr + y * W + t, key, mask=ok)


@triton.jit
def _fill_kernel(zbuf_ptr, left_ptr, rgb_ptr, out_ptr, H, W, C, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    rmask = rows < H
    base = rows * W
    last = tl.full([ROWS], -1, tl.int32)
    for x in range(0, W):
        k = tl.load(zbuf_ptr + base + x, mask=rmask, other=-1)
        last = tl.where(k >= 0, k, last)
        tl.store(left_ptr + base + x, last, mask=rmask)
    last_r = tl.full([ROWS], -1, tl.int32)
    for i in range(0, W):
        x = W - 1 - i
        k = tl.load(zbuf_ptr + base + x, mask=rmask, other=-1)
        last_r = tl.where(k >= 0, k, last_r)
        lk = tl.load(left_ptr + base + x, mask=rmask, other=-1)
        both = (lk >= 0) & (last_r >= 0)
        # a hole takes the farther (smaller key's depth) of its two sides: the background
        pick = tl.where(both, tl.where((lk >> 16) <= (last_r >> 16), lk, last_r), tl.where(lk >= 0, lk, last_r))
        sel = tl.where(k >= 0, k, pick)
        src = tl.where(sel >= 0, sel & 65535, x)
        for c in range(0, C):
            v = tl.load(rgb_ptr + (base + src) * C + c, mask=rmask)
            tl.store(out_ptr + (base + x) * C + c, v, mask=rmask)


def forward_warp_triton(rgb: torch.Tensor, qn: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    H, W, C = rgb.shape
    rgb = rgb.contiguous()
    zbuf = torch.full((H, W), -1, dtype=torch.int32, device=rgb.device)
    n = H * W
    _splat_kernel[(triton.cdiv(n, SPLAT_BLOCK),)](qn.contiguous(), dx.contiguous(), zbuf, n, W, BLOCK=SPLAT_BLOCK)
    left = torch.empty((H, W), dtype=torch.int32, device=rgb.device)
    out = torch.empty_like(rgb)
    _fill_kernel[(triton.cdiv(H, FILL_ROWS),)](zbuf, left, rgb, out, H, W, C, ROWS=FILL_ROWS)
    return out
