"""Depth-image-based stereo: the forward warp of one view, a Triton kernel with a PyTorch reference.

One view is made from the frame by moving each pixel ``x`` of a row to ``x + dx`` (``dx`` its rounded
shift, from its depth: `rd_engine.outputs.stereo`). Where several pixels land on one, the nearest
wins (a z-buffer over a 15-bit depth key ``qn``; at equal keys the larger source column). Pixels that
nothing lands on (disocclusions, and the frame's border where the view moved away) are filled from
the background side: each such pixel takes the source of the nearest landed pixel to its left or to
its right, whichever is farther (the smaller key; the left at a tie). The uncovered area was behind
the foreground, so it belongs to the background; copying the foreground side would drag its edge
into the gap (a halo), and inpainting costs far more and flickers from frame to frame. A row where
nothing lands keeps the frame's own pixels. Every output pixel is therefore filled.

Everything is integer arithmetic on given keys and shifts, so the kernel and the reference agree
exactly, bit for bit.
"""

from __future__ import annotations

import torch

from ._dispatch import select_impl

QN_MAX = 32767  # depth keys 0..32767 (15 bits; with a 16-bit source column they fit an int32)
MAX_WIDTH = 65535


def depth_keys(near: torch.Tensor) -> torch.Tensor:
    """The z-buffer keys of nearness in [0, 1] (1 = nearest): ``floor(clip(near, 0, 1) * 32767 + 0.5)``, int32."""
    return torch.floor(near.float().clamp(0.0, 1.0) * QN_MAX + 0.5).to(torch.int32)


def _check(rgb: torch.Tensor, qn: torch.Tensor, dx: torch.Tensor) -> None:
    if rgb.ndim != 3:
        raise ValueError(f"rgb must be [H, W, C], got {tuple(rgb.shape)}")
    if qn.shape != rgb.shape[:2] or dx.shape != rgb.shape[:2]:
        raise ValueError(f"keys {tuple(qn.shape)} and shifts {tuple(dx.shape)} must be [H, W] = {tuple(rgb.shape[:2])}")
    if qn.dtype != torch.int32 or dx.dtype != torch.int32:
        raise ValueError("keys and shifts must be int32")
    if rgb.shape[1] > MAX_WIDTH:
        raise ValueError(f"frames wider than {MAX_WIDTH} pixels are not supported")


def forward_warp_ref(rgb: torch.Tensor, qn: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """The reference: `forward_warp` in plain PyTorch (scatter_reduce for the z-buffer, cummax for the fill)."""
    _check(rgb, qn, dx)
    H, W, C = rgb.shape
    dev = rgb.device
    x32 = torch.arange(W, device=dev, dtype=torch.int32)
    t = x32 + dx
    ok = (t >= 0) & (t < W)
    # pixels that leave the frame go to one extra slot (no boolean indexing: it costs a nonzero pass)
    rows = torch.arange(H, device=dev, dtype=torch.int64)[:, None] * W
    flat = torch.where(ok, rows + t, H * W)
    key = qn * 65536 + x32
    zbuf = torch.full((H * W + 1,), -1, dtype=torch.int32, device=dev)
    zbuf.scatter_reduce_(0, flat.view(-1), key.view(-1), reduce="amax")
    zbuf = zbuf[:-1].view(H, W)
    valid = zbuf >= 0
    x = x32.to(torch.int64).expand(H, W)
    lpos = torch.cummax(torch.where(valid, x, -1), dim=1).values
    rcm = torch.cummax(torch.where(valid, W - 1 - x, -1).flip(1), dim=1).values.flip(1)
    lk = torch.gather(zbuf, 1, lpos.clamp(min=0)).masked_fill_(lpos < 0, -1)
    rk = torch.gather(zbuf, 1, (W - 1 - rcm).clamp(max=W - 1)).masked_fill_(rcm < 0, -1)
    # a hole takes the farther side (the smaller depth key), the left at a tie; one side if only one
    take_left = (rk < 0) | ((lk >= 0) & ((lk >> 16) <= (rk >> 16)))
    sel = torch.where(valid, zbuf, torch.where(take_left, lk, rk))
    src = torch.where(sel >= 0, (sel & 65535).to(torch.int64), x)
    return torch.gather(rgb, 1, src[..., None].expand(H, W, C))


def forward_warp(rgb: torch.Tensor, qn: torch.Tensor, dx: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """One view: ``rgb`` [H, W, C] (any dtype) warped by the int32 shifts ``dx`` [H, W], z-buffered by the
    int32 depth keys ``qn`` [H, W] (`depth_keys`), holes filled from the background side (module notes).

    Args:
        rgb: The frame.
        qn: Depth keys, 0..32767, larger = nearer.
        dx: Each pixel's horizontal shift in whole pixels.
        impl: ``auto`` (Triton on CUDA), ``triton`` or ``torch`` (`rd_engine.kernels.select_impl`).

    Returns:
        [H, W, C], the dtype of ``rgb``, every pixel filled.
    """
    _check(rgb, qn, dx)
    if select_impl(impl, [qn, dx]) == "triton":
        from .triton_stereo import forward_warp_triton

        return forward_warp_triton(rgb, qn, dx)
    return forward_warp_ref(rgb, qn, dx)
