"""One entry point for every co-alignment solver: `solve(groups, n, kind)`."""

from __future__ import annotations

import torch

from rd_engine.coalign.fast import solve_fast
from rd_engine.coalign.problem import Params
from rd_engine.coalign.reference import align_reference
from rd_engine.coalign.robust import solve_robust
from rd_engine.errors import UserError
from rd_engine.snippets.plan import SnippetGroup

SOLVERS = ("reference", "fast", "robust")


def solve(groups: list[SnippetGroup], n: int, kind: str, iters: int = 2000, progress=None) -> Params:
    """Per-snippet (scale, shift) of every group, by the named solver.

    Args:
        groups: The snippets of each distinct dilation, holding their solver copies `[K, L, P]`.
        n: Frames in the video.
        kind: "reference" (Adam, `iters` iterations), "fast" or "robust".
        iters: Iterations of the reference solver.
        progress: Called with the number of iterations done, as they are done.

    Returns:
        Per group, `(scale [K], shift [K])`.
    """
    if kind not in SOLVERS:
        raise UserError(f"unknown co-alignment solver {kind!r} (choose from {', '.join(SOLVERS)})")
    if sum(g.size for g in groups) == 1:
        return [(torch.ones(1), torch.zeros(1))]  # a single snippet (1-3 frames) needs no alignment
    for g in groups:
        if not torch.isfinite(g.depth).all():
            raise UserError(
                "co-alignment: snippet depth contains NaN or Inf (model or precision problem; try the fp32 dtype)"
            )
    if kind == "reference":
        return align_reference(groups, n, iters=iters, progress=progress)
    if kind == "fast":
        return solve_fast(groups, n, progress=progress)
    return solve_robust(groups, n, progress=progress)
