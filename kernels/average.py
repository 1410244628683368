"""Merging overlapping snippets into per-frame averages.

A video of ``N`` frames is covered by ``K`` snippets of ``L`` frames each;
snippet ``k`` holds frame ``index[k, j]`` as the map ``x[k, j]`` (``[C, H, W]``)
together with an affine ``(s_k, t_k)`` and a weight ``w_k``. Every frame ``f``
becomes the weighted mean of the affinely corrected maps that cover it::

    out[f] = sum_{k,j: index[k,j]==f} w_k * (s_k * x[k,j] + t_k)
             / sum_{k,j: index[k,j]==f} w_k

A snippet that holds the same frame twice counts twice. Accumulation is fp32
whatever the input dtype (fp64 inputs use fp64 on the reference path).

Frames whose total weight is zero (no covering entry, or only zero weights)
come out as NaN: there is no value to give them, and NaN makes a coverage gap
visible instead of silently black. Weights are expected to be >= 0.

Entry points:

* :func:`average_frames`: one call, whole result.
* :func:`accumulate_frames` + :func:`finalize_frames`: the streaming form; a
  caller keeps an fp32 ``acc [F, C, H, W]`` and ``count [F]`` window, adds
  chunks of snippets into it (indices relative to the window; out-of-range
  indices such as ``-1`` are skipped), and divides the frames it is done with.
* :func:`accumulate_frames_robust`: one reweighting pass of a robust (Cauchy)
  mean: every pixel of every entry is weighted by how far its corrected value
  lies from a given per-frame ``center``, relative to a per-frame scale
  ``delta``; sums and weights are kept per pixel.

The Triton kernel runs one program per (frame, block of pixels) and walks a CSR
list of the entries covering that frame, so each output pixel is summed by one
program in a fixed order: deterministic, no atomics.
"""

from __future__ import annotations

import torch

from ._dispatch import select_impl

__all__ = [
    "average_frames",
    "average_frames_ref",
    "accumulate_frames",
    "accumulate_frames_ref",
    "finalize_frames",
    "accumulate_frames_robust",
    "accumulate_frames_robust_ref",
]

# ---------------------------------------------------------------------------
# Validation and coefficients
# ---------------------------------------------------------------------------


def _check_inputs(x: torch.Tensor, index: torch.Tensor, scale, shift, weight) -> tuple[int, int]:
    if x.dim() != 5:
        raise ValueError(f"x must be [K, L, C, H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be floating point, got {x.dtype}")
    K, L = x.shape[:2]
    if index.shape != (K, L):
        raise ValueError(f"index must be [K, L] = {(K, L)}, got {tuple(index.shape)}")
    if index.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"index must be an integer tensor, got {index.dtype}")
    for name, v in (("scale", scale), ("shift", shift), ("weight", weight)):
        if v is not None and (not torch.is_tensor(v) or v.shape != (K,)):
            raise ValueError(f"{name} must be a [K] = [{K}] tensor or None")
    return K, L


def _snippet_coefficients(
    K: int, device: torch.device, dtype: torch.dtype, scale, shift, weight, fold: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-snippet (w*s, w*t, w): folding the affine into the weight saves a
    multiply per pixel and per entry. ``fold=False``: (s, t, w).
    """
    w = weight.to(device=device, dtype=dtype) if weight is not None else torch.ones(K, device=device, dtype=dtype)
    s = scale.to(device=device, dtype=dtype) if scale is not None else torch.ones(K, device=device, dtype=dtype)
    t = shift.to(device=device, dtype=dtype) if shift is not None else torch.zeros(K, device=device, dtype=dtype)
    return (w * s, w * t, w) if fold else (s, t, w)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp32 accumulation for half/bfloat/fp32; fp64 stays fp64 (reference only).
    return torch.promote_types(dtype, torch.float32)


# ---------------------------------------------------------------------------
# PyTorch reference
# ---------------------------------------------------------------------------


def accumulate_frames_ref(
    acc: torch.Tensor,
    count: torch.Tensor,
    x: torch.Tensor,
    index: torch.Tensor,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> None:
    """Reference of :func:`accumulate_frames` in plain PyTorch (in place).

    Args:
        acc: ``[F, C, H, W]`` floating accumulator (fp32, or fp64), updated in place.
        count: ``[F]`` accumulated weight per frame, same dtype as ``acc``, updated in place.
        x: ``[K, L, C, H, W]`` snippet maps, any float dtype and strides.
        index: ``[K, L]`` integer frame index into ``acc``; entries outside ``[0, F)`` are skipped.
        scale: ``[K]`` per-snippet scale ``s_k`` or ``None`` (1).
        shift: ``[K]`` per-snippet shift ``t_k`` or ``None`` (0).
        weight: ``[K]`` per-snippet weight ``w_k`` or ``None`` (1).
    """
    K, L = _check_inputs(x, index, scale, shift, weight)
    F = acc.shape[0]
    if tuple(acc.shape[1:]) != tuple(x.shape[2:]) or count.shape != (F,):
        raise ValueError("acc must be [F, C, H, W] matching x and count must be [F]")
    if K * L == 0:
        return
    a, b, w = _snippet_coefficients(K, torch.device("cpu"), acc.dtype, scale, shift, weight)
    if x[0, 0].numel() >= _PER_ENTRY_MIN_ELEMS:
        _accumulate_per_entry(acc, count, x, index, a, b, w)
    else:
        _accumulate_batched(acc, count, x, index, a, b, w)


# Frames at least this large (elements) are added one entry at a time; smaller ones (solver
# pixel samples, tiny latents) in batches, where per-entry Python overhead would dominate.
_PER_ENTRY_MIN_ELEMS = 1 << 14
# Upper bound on the converted temporary one batch materialises (elements).
_BATCH_ELEMS = 1 << 22


def _entries(index: torch.Tensor, F: int):
    """`(k, j, f)` of every entry whose frame `f = index[k, j]` lies in `[0, F)`, in (k, j) order."""
    for k, frames in enumerate(index.tolist()):
        for j, f in enumerate(frames):
            if 0 <= f < F:
                yield k, j, f


def _entry_batches(x: torch.Tensor, index: torch.Tensor, acc: torch.Tensor, batch_elems: int):
    """Batches of in-range entries for index_add_: `(k, f, rows)` on acc's device, `rows` the entries'
    maps as `[batch, pixels]` in acc's dtype (at most `batch_elems` elements each).
    """
    F = acc.shape[0]
    K, L = index.shape
    pix = max(1, x[0, 0].numel())
    flat_idx = index.reshape(-1).to(torch.int64).cpu()
    entry_k = torch.arange(K).repeat_interleave(L)
    keep = ((flat_idx >= 0) & (flat_idx < F)).nonzero().squeeze(1)
    flat_x = x.reshape(K * L, pix)
    step = max(1, batch_elems // pix)
    for e0 in range(0, keep.numel(), step):
        sel = keep[e0 : e0 + step]
        rows = flat_x[sel.to(x.device)].to(device=acc.device, dtype=acc.dtype)
        yield entry_k[sel].to(acc.device), flat_idx[sel].to(acc.device), rows


def _accumulate_per_entry(acc, count, x, index, a, b, w) -> None:
    """acc[f] += (w s) x + w t, one entry at a time: each snippet frame is read once and converted
    on the fly while acc[f] stays in cache (batched gathers of large frames materialise several
    converted copies and are ~10x slower on a CPU).
    """
    a, b, w = a.tolist(), b.tolist(), w.tolist()
    added = [0.0] * acc.shape[0]
    for k, j, f in _entries(index, acc.shape[0]):
        dst = acc[f]
        dst.add_(x[k, j].to(acc.device), alpha=a[k])
        if b[k] != 0.0:
            dst.add_(b[k])
        added[f] += w[k]
    count.add_(torch.tensor(added, dtype=count.dtype, device=count.device))


def _accumulate_batched(acc, count, x, index, a, b, w) -> None:
    """The same sums through index_add_ over batches of entries (small frames)."""
    a, b, w = a.to(acc.device), b.to(acc.device), w.to(count.device)
    for k, f, rows in _entry_batches(x, index, acc, _BATCH_ELEMS):
        acc.view(acc.shape[0], -1).index_add_(0, f, rows * a[k][:, None] + b[k][:, None])
        count.index_add_(0, f, w[k])


def _check_robust(acc, wsum, x, index, center, delta, scale, shift, weight) -> None:
    _check_inputs(x, index, scale, shift, weight)
    F = acc.shape[0]
    for name, t in (("wsum", wsum), ("center", center)):
        if t.shape != acc.shape:
            raise ValueError(f"{name} must have acc's shape {tuple(acc.shape)}, got {tuple(t.shape)}")
    if tuple(acc.shape[1:]) != tuple(x.shape[2:]):
        raise ValueError("acc must be [F, C, H, W] matching x")
    if delta.shape != (F,):
        raise ValueError(f"delta must be [F] = [{F}], got {tuple(delta.shape)}")
    if bool((delta <= 0).any()) or bool(torch.isnan(delta).any()):
        raise ValueError("delta must be > 0 (inf: plain weighted mean)")


def accumulate_frames_robust_ref(
    acc: torch.Tensor,
    wsum: torch.Tensor,
    x: torch.Tensor,
    index: torch.Tensor,
    center: torch.Tensor,
    delta: torch.Tensor,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> None:
    """Reference of :func:`accumulate_frames_robust` in plain PyTorch (in place).

    For every entry ``(k, j)`` with ``f = index[k, j]`` in ``[0, F)`` and every pixel::

        v = s_k x[k, j] + t_k;  q = (v - center[f]) / delta[f];  p = w_k / (1 + q^2)
        acc[f] += p v;  wsum[f] += p
    """
    _check_robust(acc, wsum, x, index, center, delta, scale, shift, weight)
    K, L = index.shape
    F = acc.shape[0]
    if K * L == 0:
        return
    dt = acc.dtype
    s, t, w = _snippet_coefficients(K, acc.device, dt, scale, shift, weight, fold=False)
    inv = delta.to(acc.device, dt).reciprocal()  # inf -> 0: plain mean
    if x[0, 0].numel() >= _PER_ENTRY_MIN_ELEMS:
        inv_d2 = inv.square().clamp_max(torch.finfo(dt).max)  # finite: an exact agreement (r = 0) keeps weight w
        _robust_per_entry(acc, wsum, x, index, center, s.tolist(), t.tolist(), w.tolist(), inv_d2.tolist())
        return
    for k, f, rows in _entry_batches(x, index, acc, _BATCH_ELEMS // 4):  # ~4 temporaries of that size
        v = rows * s[k][:, None] + t[k][:, None]
        q = (v - center.view(F, -1)[f]) * inv[f][:, None]
        p = w[k][:, None] / (1.0 + q * q)
        acc.view(F, -1).index_add_(0, f, p * v)
        wsum.view(F, -1).index_add_(0, f, p)


def _robust_per_entry(acc, wsum, x, index, center, s, t, w, inv_d2) -> None:
    """One entry at a time with two reused frame buffers (large frames: everything stays in cache)."""
    v = torch.empty(acc.shape[1:], dtype=acc.dtype, device=acc.device)
    r = torch.empty_like(v)
    one = torch.ones_like(v)
    for k, j, f in _entries(index, acc.shape[0]):
        v.copy_(x[k, j]).mul_(s[k]).add_(t[k])
        torch.sub(v, center[f], out=r)
        torch.addcmul(one, r, r, value=inv_d2[f], out=r).reciprocal_()  # 1 / (1 + (r / delta)^2)
        wsum[f].add_(r, alpha=w[k])
        acc[f].addcmul_(r, v, value=w[k])


def finalize_frames(acc: torch.Tensor, count: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Turn accumulated sums into averages: ``acc / count``, NaN where ``count == 0``.

    Args:
        acc: ``[F, C, H, W]`` accumulated weighted sums.
        count: ``[F]`` accumulated weights.
        out_dtype: dtype of the result (default: ``acc.dtype``).

    Returns:
        ``[F, C, H, W]`` tensor of averages.
    """
    covered = (count > 0).view(-1, *([1] * (acc.dim() - 1)))
    denom = torch.where(covered, count.view_as(covered), torch.ones_like(count).view_as(covered))
    out = torch.where(covered, acc / denom, torch.full_like(acc, float("nan")))
    return out.to(out_dtype or acc.dtype)


def average_frames_ref(
    x: torch.Tensor,
    index: torch.Tensor,
    num_frames: int,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Reference of :func:`average_frames` in plain PyTorch.

    Args:
        x: ``[K, L, C, H, W]`` snippet maps.
        index: ``[K, L]`` frame index of every entry; entries outside ``[0, num_frames)`` are skipped.
        num_frames: number of output frames ``F``.
        scale: ``[K]`` or ``None``.
        shift: ``[K]`` or ``None``.
        weight: ``[K]`` or ``None``.
        out_dtype: result dtype (default ``x.dtype``).

    Returns:
        ``[F, C, H, W]`` per-frame weighted average, NaN for uncovered frames.
    """
    _check_inputs(x, index, scale, shift, weight)
    dt = _acc_dtype(x.dtype)
    acc = torch.zeros((num_frames,) + tuple(x.shape[2:]), dtype=dt, device=x.device)
    count = torch.zeros(num_frames, dtype=dt, device=x.device)
    accumulate_frames_ref(acc, count, x, index, scale, shift, weight)
    return finalize_frames(acc, count, out_dtype or x.dtype)


# ---------------------------------------------------------------------------
# Triton path
# ---------------------------------------------------------------------------


def _csr_tables(x: torch.Tensor, index: torch.Tensor, num_frames: int, scale, shift, weight, fold: bool = True):
    """Entries grouped by frame (CSR), built on the device without host syncs.

    Returns (entry_off, entry_a, entry_b, entry_w, frame_start), with (a, b) = (w s, w t), or
    (s, t) when ``fold`` is False. Within a
    frame, entries keep their (k, j) order (stable sort), which fixes the
    summation order.
    """
    K, L = index.shape
    device = x.device
    flat = index.to(device=device, dtype=torch.int64).reshape(-1)
    valid = (flat >= 0) & (flat < num_frames)
    # Skipped entries get the sentinel frame F and sort behind every real row.
    key = torch.where(valid, flat, torch.full_like(flat, num_frames))
    order = torch.sort(key, stable=True).indices
    counts = torch.bincount(key, minlength=num_frames + 1)[: num_frames + 1]
    frame_start = torch.zeros(num_frames + 2, dtype=torch.int64, device=device)
    torch.cumsum(counts, 0, out=frame_start[1:])
    k = order // L
    j = order - k * L
    entry_off = k * x.stride(0) + j * x.stride(1)
    a, b, w = _snippet_coefficients(K, device, torch.float32, scale, shift, weight, fold)
    tables = [entry_off, a[k], b[k], w[k]]
    if flat.numel() == 0:
        # Some backends reject null pointers even when never dereferenced.
        tables = [torch.zeros(1, dtype=t.dtype, device=device) for t in tables]
    return (*tables, frame_start.contiguous())


def _average_triton(x, index, acc_or_out, count, scale, shift, weight) -> None:
    from .triton_kernels import launch_frame_average  # lazy: triton only when chosen

    tables = _csr_tables(x, index, acc_or_out.shape[0], scale, shift, weight)
    launch_frame_average(x, *tables, acc_or_out, count)


# ---------------------------------------------------------------------------
# Public ops
# ---------------------------------------------------------------------------


def average_frames(
    x: torch.Tensor,
    index: torch.Tensor,
    num_frames: int,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Weighted per-frame average of overlapping snippets (see module docstring).

    Args:
        x: ``[K, L, C, H, W]`` snippet maps (fp16/bf16/fp32 on the Triton path;
            any strides, no copy is made).
        index: ``[K, L]`` integer frame index of every entry; entries outside
            ``[0, num_frames)`` (e.g. ``-1``) are skipped.
        num_frames: number of output frames ``F``.
        scale: ``[K]`` per-snippet scale, or ``None`` for 1.
        shift: ``[K]`` per-snippet shift, or ``None`` for 0.
        weight: ``[K]`` per-snippet weight (>= 0), or ``None`` for 1.
        out_dtype: dtype of the result; default ``x.dtype``.
        impl: ``"auto"`` (Triton on CUDA, PyTorch otherwise), ``"triton"`` or
            ``"torch"``; see :mod:`._dispatch`.

    Returns:
        Contiguous ``[F, C, H, W]`` tensor; frames with zero total weight are NaN.
        Accumulation is fp32 (fp64 for fp64 inputs on the reference path).
    """
    _check_inputs(x, index, scale, shift, weight)
    if num_frames < 0:
        raise ValueError("num_frames must be >= 0")
    # Only the big operand decides: the [K] coefficients are moved/cast anyway.
    if select_impl(impl, (x,)) == "torch":
        return average_frames_ref(x, index, num_frames, scale, shift, weight, out_dtype)
    out = torch.empty((num_frames,) + tuple(x.shape[2:]), dtype=out_dtype or x.dtype, device=x.device)
    _average_triton(x, index, out, None, scale, shift, weight)
    return out


def accumulate_frames(
    acc: torch.Tensor,
    count: torch.Tensor,
    x: torch.Tensor,
    index: torch.Tensor,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    impl: str = "auto",
) -> None:
    """Add a chunk of snippets into caller-owned sums, in place (streaming merge).

    ``acc[f] += sum w_k (s_k x[k,j] + t_k)`` and ``count[f] += sum w_k`` over
    the entries with ``index[k, j] == f``. Call :func:`finalize_frames` on the
    frames that no later chunk touches.

    Args:
        acc: contiguous fp32 ``[F, C, H, W]`` accumulator (the current window).
        count: contiguous fp32 ``[F]`` weight accumulator.
        x: ``[K, L, C, H, W]`` snippet maps, any strides.
        index: ``[K, L]`` integer index into ``acc`` (window-relative); entries
            outside ``[0, F)``, e.g. ``-1``, are skipped.
        scale: ``[K]`` or ``None`` (1).
        shift: ``[K]`` or ``None`` (0).
        weight: ``[K]`` (>= 0) or ``None`` (1).
        impl: ``"auto"``, ``"triton"`` or ``"torch"``.
    """
    _check_inputs(x, index, scale, shift, weight)
    F = acc.shape[0]
    if tuple(acc.shape[1:]) != tuple(x.shape[2:]) or count.shape != (F,):
        raise ValueError("acc must be [F, C, H, W] matching x and count must be [F]")
    if acc.dtype != torch.float32 or count.dtype != torch.float32:
        raise TypeError("acc and count must be float32")
    if not (acc.is_contiguous() and count.is_contiguous()):
        # Updated in place: a silent contiguous copy would drop the update.
        raise ValueError("acc and count must be contiguous")
    if acc.device != x.device or count.device != x.device:
        raise ValueError("acc, count and x must be on the same device")
    if select_impl(impl, (acc, count, x)) == "torch":
        accumulate_frames_ref(acc, count, x, index, scale, shift, weight)
        return
    _average_triton(x, index, acc, count, scale, shift, weight)


def accumulate_frames_robust(
    acc: torch.Tensor,
    wsum: torch.Tensor,
    x: torch.Tensor,
    index: torch.Tensor,
    center: torch.Tensor,
    delta: torch.Tensor,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    impl: str = "auto",
) -> None:
    """One Cauchy-reweighted pass of the per-frame mean, added into caller-owned sums (in place).

    Each pixel of each entry counts with ``w_k / (1 + ((s_k x + t_k - center[f]) / delta[f])^2)``
    (see :func:`accumulate_frames_robust_ref`); ``acc / wsum`` is then the reweighted mean.
    Iterating with ``center`` set to the last result is IRLS for a Cauchy M-estimate of each
    pixel's value: an entry far from the others (a model failure in one snippet) stops pulling
    the mean, while agreeing entries count as in the plain mean.

    Args:
        acc: contiguous fp32 ``[F, C, H, W]`` sum of weighted values.
        wsum: contiguous fp32 ``[F, C, H, W]`` sum of weights (per pixel).
        x: ``[K, L, C, H, W]`` snippet maps, any strides and float dtype.
        index: ``[K, L]`` frame index into ``acc``; entries outside ``[0, F)`` are skipped.
        center: contiguous fp32 ``[F, C, H, W]``, the current estimate.
        delta: fp32 ``[F]`` Cauchy scale per frame, > 0; ``inf`` gives the plain weighted mean.
        scale: ``[K]`` per-entry scale, or ``None`` (1).
        shift: ``[K]`` per-entry shift, or ``None`` (0).
        weight: ``[K]`` per-entry weight, or ``None`` (1).
        impl: ``"auto"``, ``"triton"`` or ``"torch"``.
    """
    _check_robust(acc, wsum, x, index, center, delta, scale, shift, weight)
    for name, t in (("acc", acc), ("wsum", wsum), ("center", center)):
        if t.dtype != torch.float32 or not t.is_contiguous() or t.device != x.device:
            raise ValueError(f"{name} must be a contiguous float32 tensor on x's device")
    if select_impl(impl, (acc, x)) == "torch":
        accumulate_frames_robust_ref(acc, wsum, x, index, center, delta, scale, shift, weight)
        return
    from .triton_kernels import launch_frame_average  # lazy: triton only when chosen

    # unfolded coefficients: the kernel needs s x + t itself to weigh it
    off, s_e, t_e, w_e, start = _csr_tables(x, index, acc.shape[0], scale, shift, weight, fold=False)
    inv_d2 = delta.to(device=x.device, dtype=torch.float32).reciprocal().square()
    inv_d2 = inv_d2.clamp_max(torch.finfo(torch.float32).max).contiguous()  # 0 * inf would give NaN weights
    launch_frame_average(x, off, s_e, t_e, w_e, start, acc, None, robust=(wsum, center, inv_d2))
