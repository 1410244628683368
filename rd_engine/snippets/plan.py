"""Which frames each snippet covers, dilation capping, and the one type for the snippets of a dilation.

See docs/method.md, "Snippets".
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from rd_engine.errors import UserError


def cap_dilation(num_frames: int, snippet_len: int, dilation: int) -> int:
    """Cap a dilation for a short video, as the reference does.

    The reference compares the largest allowed *gap* (`int(N / L) - 1`) with a
    *dilation* and replaces the dilation by that gap; we keep that behaviour for
    parity. Below 6 frames (L = 3) it would produce dilation 0, which the
    reference then rejects; we never go below 1 instead.
    """
    max_gap = int(num_frames / snippet_len) - 1
    if max_gap < dilation:
        dilation = max(1, max_gap)
    return dilation


def window_span(snippet_len: int, dilation: int) -> int:
    """Frames spanned by one snippet, first to last inclusive."""
    return (snippet_len - 1) * dilation + 1


def snippet_indices(num_frames: int, snippet_len: int, dilation: int) -> torch.Tensor:
    """Frame indices `[K, L]` of all stride-1 snippets of one dilation.

    Snippet `k` covers `k, k + d, ..., k + (L - 1) d` for `k = 0 .. N - span`.
    A video shorter than one snippet gets one snippet whose missing frames
    repeat the last frame (so 1- and 2-frame videos still get depth).
    """
    if dilation < 1 or snippet_len < 1:
        raise UserError(f"dilation and snippet length must be >= 1 (got {dilation}, {snippet_len})")
    span = window_span(snippet_len, dilation)
    if num_frames < span:
        if dilation == 1:
            idx = [min(j, num_frames - 1) for j in range(snippet_len)]
            return torch.tensor([idx], dtype=torch.long)
        raise UserError(
            f"dilation {dilation} needs at least {span} frames per snippet but the video has "
            f"{num_frames}; turn dilation capping on or use smaller dilations"
        )
    starts = torch.arange(0, num_frames - span + 1)
    return starts[:, None] + dilation * torch.arange(snippet_len)[None, :]


@dataclass(frozen=True)
class SnippetGroup:
    """The snippets of one distinct dilation: the one type every stage uses for them.

    `depth` is what the stage at hand holds per snippet frame: nothing (the plan), the full-resolution
    depth `[K, L, H, W]` (decoded snippets, the merge) or the aligner's solver copy `[K, L, P]`
    (`rd_engine.coalign.problem.solver_copy`).
    """

    dilation: int
    weight: int  # how many times the settings list this dilation (capping can make two equal)
    indices: torch.Tensor  # [K, L] long: frame of each snippet frame, snippets ordered by first frame
    depth: torch.Tensor | None = None

    @property
    def size(self) -> int:
        """Number of snippets K."""
        return int(self.indices.shape[0])

    def with_depth(self, depth: torch.Tensor) -> SnippetGroup:
        """The same snippets holding `depth` (`[K, L, ...]`)."""
        return replace(self, depth=depth)


def check_dilations(dilations: list[int]) -> None:
    """The one rule on requested dilations: positive integers, 1 among them (raises UserError)."""
    if len(dilations) == 0 or any(int(d) < 1 for d in dilations):
        raise UserError(f"dilations must be positive integers, got {list(dilations)}")
    if 1 not in dilations:
        raise UserError(f"dilations must include 1 (got {list(dilations)})")


def plan_snippets(
    num_frames: int, snippet_len: int, dilations: list[int], cap: bool
) -> tuple[list[int], list[SnippetGroup]]:
    """The effective dilations and the distinct snippet groups of a video.

    Capping can make dilations equal (30 frames: [1, 10, 25] -> [1, 9, 9]). The
    reference then computes the repeated snippets twice and counts them twice;
    we compute them once and carry the count as a weight.

    Returns:
        (effective dilations in settings order, groups in first-seen order)
    """
    check_dilations(dilations)
    effective = [cap_dilation(num_frames, snippet_len, d) if cap else d for d in dilations]
    groups: list[SnippetGroup] = []
    for d in dict.fromkeys(effective):
        groups.append(SnippetGroup(d, effective.count(d), snippet_indices(num_frames, snippet_len, d)))
    return effective, groups


def refine_gap(i_step: int, total_steps: int, start_dilation: int) -> int:
    """Gap (dilation - 1) of refinement step `i` (docs/method.md, "Refinement"): coarse to fine."""
    g0 = start_dilation - 1
    return int((1 - i_step / total_steps) * (g0 - 0) + 0)
