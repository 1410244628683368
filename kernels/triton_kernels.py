"""Triton kernels and their launchers.

This module imports ``triton`` at top level, so the public modules import it
lazily, only once :func:`select_impl` chose the Triton path: a CPU-only install
never needs Triton, and tests can still export ``TRITON_INTERPRET=1`` before
the first ``import triton``.

The launchers here trust their callers (the public ops) to have validated
shapes and prepared the small per-entry / per-snippet tables.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ._dispatch import triton_interpreting

# Pixels (or moment terms) per program and loop step. 1024 keeps 5 fp32
# accumulators per lane in registers on the moments kernel and gives each
# program enough bytes in flight; the interpreter cost is per op, not per lane,
# so the same size is also a good choice there.
BLOCK = 1024
NUM_WARPS = 4

# Robust-weight kinds, shared with scale_shift.py (the constexpr KIND).
KIND_IDS = {"l2": 0, "l1": 1, "huber": 2, "cauchy": 3}


# ---------------------------------------------------------------------------
# Frame averaging
# ---------------------------------------------------------------------------


@triton.jit
def _frame_average_kernel(
    x_ptr,  # snippet data, any strides; entry base offsets come from entry_off_ptr
    entry_off_ptr,  # int64 [E]: element offset of x[k, j] for CSR entry e
    entry_a_ptr,  # fp32 [E]: w_k * s_k
    entry_b_ptr,  # fp32 [E]: w_k * t_k
    entry_w_ptr,  # fp32 [E]: w_k
    frame_start_ptr,  # int64 [F + 1]: CSR row pointers, entries of frame f are start[f]..start[f+1]
    out_ptr,  # [F, n_pix] contiguous: the average, or the fp32 accumulator
    count_ptr,  # fp32 [F]: accumulated weight (ACCUMULATE only)
    wpix_ptr,  # fp32 [F, n_pix]: accumulated per-pixel weight (ROBUST only)
    center_ptr,  # fp32 [F, n_pix]: current estimate (ROBUST only)
    inv_d2_ptr,  # fp32 [F]: 1 / delta^2 per frame (ROBUST only; 0 = plain mean)
    n_pix,
    W,
    HW,
    stride_c,
    stride_h,
    stride_w,
    ACCUMULATE: tl.constexpr,
    ROBUST: tl.constexpr,
    INNER_CONTIG: tl.constexpr,
    BLOCK: tl.constexpr,
):
    f = tl.program_id(0)
    pb = tl.program_id(1)
    offs = pb * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_pix
    if INNER_CONTIG:
        x_off = offs.to(tl.int64)
    else:
        # Non-contiguous [C, H, W] map: decompose the flat pixel id once per
        # program instead of copying the whole input to a contiguous buffer.
        c = offs // HW
        rem = offs - c * HW
        h = rem // W
        w = rem - h * W
        x_off = c.to(tl.int64) * stride_c + h.to(tl.int64) * stride_h + w.to(tl.int64) * stride_w

    start = tl.load(frame_start_ptr + f)
    end = tl.load(frame_start_ptr + f + 1)
    out_off = f.to(tl.int64) * n_pix + offs
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    wsum = tl.zeros((), dtype=tl.float32)
    if ROBUST:
        # (a, b) = (s, t) unfolded here: each pixel's weight depends on s x + t itself
        center = tl.load(center_ptr + out_off, mask=mask, other=0.0)
        inv_d2 = tl.load(inv_d2_ptr + f)
        wpix = tl.zeros([BLOCK], dtype=tl.float32)
    # Entries are visited in a fixed (CSR) order and each output pixel is
    # owned by exactly one program: the result is bitwise deterministic,
    # unlike an atomic scatter.
    for e in range(start, end):
        base = tl.load(entry_off_ptr + e)
        a = tl.load(entry_a_ptr + e)
        b = tl.load(entry_b_ptr + e)
        v = tl.load(x_ptr + base + x_off, mask=mask, other=0.0).to(tl.float32)
        if ROBUST:
            val = a * v + b
            r = val - center
            p = tl.load(entry_w_ptr + e) / (1.0 + r * r * inv_d2)
            acc += p * val
            wpix += p
        else:
            acc += a * v + b
            wsum += tl.load(entry_w_ptr + e)

    if ROBUST:
        if end > start:
            prev = tl.load(out_ptr + out_off, mask=mask, other=0.0)
            tl.store(out_ptr + out_off, prev + acc, mask=mask)
            prev_w = tl.load(wpix_ptr + out_off, mask=mask, other=0.0)
            tl.store(wpix_ptr + out_off, prev_w + wpix, mask=mask)
    elif ACCUMULATE:
        # Frames this call does not touch keep their buffers unread/unwritten.
        if end > start:
            prev = tl.load(out_ptr + out_off, mask=mask, other=0.0)
            tl.store(out_ptr + out_off, prev + acc, mask=mask)
            if pb == 0:
                tl.store(count_ptr + f, tl.load(count_ptr + f) + wsum)
    else:
        covered = wsum > 0
        # Divide by a safe denominator so uncovered frames give NaN by choice,
        # not through a 0/0 that the interpreter would warn about.
        res = tl.where(covered, acc / tl.where(covered, wsum, 1.0), float("nan"))
        tl.store(out_ptr + out_off, res.to(out_ptr.dtype.element_ty), mask=mask)


def launch_frame_average(
    x: torch.Tensor,
    entry_off: torch.Tensor,
    entry_a: torch.Tensor,
    entry_b: torch.Tensor,
    entry_w: torch.Tensor,
    frame_start: torch.Tensor,
    out: torch.Tensor,
    count: torch.Tensor | None,
    robust: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> None:
    """Run the CSR frame-average kernel; ``count is None`` selects the average mode.

    ``out`` is the ``[F, C, H, W]`` result (average mode) or the fp32
    accumulator (accumulate mode); it must be contiguous. ``robust = (wsum,
    center, inv_delta2)`` selects the Cauchy-reweighted accumulation (``out``
    is then the accumulator, the entry tables hold unfolded ``s, t, w``).
    """
    num_frames = out.shape[0]
    _, _, C, H, W = x.shape
    n_pix = C * H * W
    if num_frames == 0 or n_pix == 0:
        return
    sc, sh, sw = x.stride(2), x.stride(3), x.stride(4)
    inner_contig = (sw == 1 or W == 1) and (sh == W or H == 1) and (sc == H * W or C == 1)
    accumulate = count is not None
    wpix, center, inv_d2 = robust if robust is not None else (out, out, entry_w)  # unused pointers otherwise
    grid = (num_frames, triton.cdiv(n_pix, BLOCK))
    _frame_average_kernel[grid](
        x,
        entry_off,
        entry_a,
        entry_b,
        entry_w,
        frame_start,
        out,
        count if accumulate else entry_w,  # unused pointer in average mode
        wpix,
        center,
        inv_d2,
        n_pix,
        W,
        H * W,
        sc,
        sh,
        sw,
        ACCUMULATE=accumulate,
        ROBUST=robust is not None,
        INNER_CONTIG=inner_contig,
        BLOCK=BLOCK,
        num_warps=NUM_WARPS,
    )


# ---------------------------------------------------------------------------
# Weighted / robust moments
# ---------------------------------------------------------------------------


@triton.jit
def _moments_kernel(
    x_ptr,
    y_ptr,
    w_ptr,
    s_ptr,  # fp32 [K] scale (robust kinds only)
    t_ptr,  # fp32 [K] shift (robust kinds only)
    part_ptr,  # fp32 [K, num_chunks, 5] partial sums
    n,  # L * P terms per snippet
    P,
    chunk_len,  # multiple of BLOCK
    num_chunks,
    sxk,
    sxl,
    sxp,
    syk,
    syl,
    syp,
    swk,
    swl,
    swp,
    delta,
    eps,
    HAS_W: tl.constexpr,
    KIND: tl.constexpr,
    FLAT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    k = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    lo = chunk * chunk_len
    hi = tl.minimum(lo + chunk_len, n)

    x_base = x_ptr + k * sxk
    y_base = y_ptr + k * syk
    w_base = w_ptr + k * swk
    if KIND != 0:
        s = tl.load(s_ptr + k)
        t = tl.load(t_ptr + k)

    # Lane-wise fp32 accumulators, reduced once at the end: fewer rounding
    # steps than a running scalar sum, and a fixed order (deterministic).
    a0 = tl.zeros([BLOCK], dtype=tl.float32)
    a1 = tl.zeros([BLOCK], dtype=tl.float32)
    a2 = tl.zeros([BLOCK], dtype=tl.float32)
    a3 = tl.zeros([BLOCK], dtype=tl.float32)
    a4 = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(lo, hi, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        m = idx < hi
        idx64 = idx.to(tl.int64)
        if FLAT:
            # (L, P) collapses to one stride for every operand: no div/mod.
            xo = idx64 * sxp
            yo = idx64 * syp
            wo = idx64 * swp
        else:
            j = idx64 // P
            p = idx64 - j * P
            xo = j * sxl + p * sxp
            yo = j * syl + p * syp
            wo = j * swl + p * swp
        xv = tl.load(x_base + xo, mask=m, other=0.0).to(tl.float32)
        yv = tl.load(y_base + yo, mask=m, other=0.0).to(tl.float32)
        if HAS_W:
            wv = tl.load(w_base + wo, mask=m, other=0.0).to(tl.float32)
        else:
            wv = tl.where(m, 1.0, 0.0)
        if KIND != 0:
            r = s * xv + t - yv
            ar = tl.abs(r)
            if KIND == 1:  # L1: 1 / max(|r|, eps)
                rw = 1.0 / tl.maximum(ar, eps)
            elif KIND == 2:  # Huber: 1 inside delta, delta / |r| outside
                rw = tl.where(ar <= delta, 1.0, delta / tl.maximum(ar, delta))
            else:  # Cauchy: 1 / (1 + (r / delta)^2)
                q = r / delta
                rw = 1.0 / (1.0 + q * q)
            wv = wv * rw
        wx = wv * xv
        a0 += wv
        a1 += wx
        a2 += wv * yv
        a3 += wx * xv
        a4 += wx * yv

    out = part_ptr + (k * num_chunks + chunk) * 5
    tl.store(out + 0, tl.sum(a0, axis=0))
    tl.store(out + 1, tl.sum(a1, axis=0))
    tl.store(out + 2, tl.sum(a2, axis=0))
    tl.store(out + 3, tl.sum(a3, axis=0))
    tl.store(out + 4, tl.sum(a4, axis=0))


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _num_chunks(num_snippets: int, n: int, device: torch.device) -> int:
    """Split each snippet's terms into chunks so the grid fills the device.

    Few snippets with many pixels need several programs per snippet; many
    snippets need one each. Each chunk keeps a few BLOCKs of work so the
    second-stage reduction stays negligible.
    """
    max_chunks = max(1, triton.cdiv(n, 4 * BLOCK))
    if device.type == "cuda" and not triton_interpreting():
        target = 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    else:
        # Interpreter: programs run one after another, so more programs only
        # cost time; a few chunks still exercise the two-stage reduction.
        target = 4 * num_snippets
    return int(min(max_chunks, max(1, triton.cdiv(target, max(num_snippets, 1)))))


def launch_moments(
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor | None,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    kind: str,
    delta: float,
    eps: float,
) -> torch.Tensor:
    """Reduce the five (robustly) weighted moments of ``[K, L, P]`` operands.

    Returns:
        fp32 ``[K, 5]``: sums of w, w*x, w*y, w*x*x, w*x*y per snippet.
    """
    K, L, P = x.shape
    n = L * P
    device = x.device
    if K == 0 or n == 0:
        return torch.zeros(K, 5, dtype=torch.float32, device=device)
    num_chunks = _num_chunks(K, n, device)
    chunk_len = triton.cdiv(triton.cdiv(n, num_chunks), BLOCK) * BLOCK
    num_chunks = triton.cdiv(n, chunk_len)
    part = torch.empty(K, num_chunks, 5, dtype=torch.float32, device=device)

    kind_id = KIND_IDS[kind]
    if kind_id == 0:
        scale = shift = part  # never read: KIND == 0 is a constexpr branch
    has_w = w is not None
    wt = w if has_w else x  # never read when HAS_W is False
    ops = (x, y, wt)
    flat = all(t.stride(1) == P * t.stride(2) or L == 1 for t in ops)
    grid = (K, num_chunks)
    _moments_kernel[grid](
        x,
        y,
        wt,
        scale,
        shift,
        part,
        n,
        P,
        chunk_len,
        num_chunks,
        x.stride(0),
        x.stride(1),
        x.stride(2),
        y.stride(0),
        y.stride(1),
        y.stride(2),
        wt.stride(0),
        wt.stride(1),
        wt.stride(2),
        float(delta),
        float(eps),
        HAS_W=has_w,
        KIND=kind_id,
        FLAT=flat,
        BLOCK=BLOCK,
        num_warps=NUM_WARPS,
    )
    # Second stage: a fixed-shape torch reduction over the chunk axis is
    # deterministic, unlike atomics into [K, 5].
    return part.sum(dim=1)
