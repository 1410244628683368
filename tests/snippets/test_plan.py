"""Snippet indices and dilation capping against hand-written tables (docs/method.md, "Snippets")."""

import pytest
import torch

from rd_engine.errors import UserError
from rd_engine.snippets.plan import cap_dilation, plan_snippets, refine_gap, snippet_indices


def test_indices_dilation_1():
    assert snippet_indices(5, 3, 1).tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4]]


def test_indices_dilation_3():
    assert snippet_indices(8, 3, 3).tolist() == [[0, 3, 6], [1, 4, 7]]


def test_indices_count_and_last_frame():
    idx = snippet_indices(100, 3, 25)
    assert idx.shape == (50, 3)
    assert idx[0].tolist() == [0, 25, 50] and idx[-1].tolist() == [49, 74, 99]


@pytest.mark.parametrize(
    "n,d,expect",
    [
        (30, 25, 9),
        (30, 10, 9),
        (30, 1, 1),
        (100, 25, 25),
        (78, 25, 25),
        (77, 25, 24),
        (6, 25, 1),
        (6, 1, 1),
        (5, 25, 1),
        (3, 1, 1),  # below 6 frames the reference would give 0; we keep 1
    ],
)
def test_capping_table(n, d, expect):
    assert cap_dilation(n, 3, d) == expect


def test_capping_makes_duplicates_counted_once_with_weight():
    eff, groups = plan_snippets(30, 3, [1, 10, 25], cap=True)
    assert eff == [1, 9, 9]
    assert [(g.dilation, g.weight) for g in groups] == [(1, 1), (9, 2)]
    assert groups[1].indices.shape == (30 - 18, 3)


def test_no_cap_too_long_dilation_is_a_clear_error():
    with pytest.raises(UserError, match="needs at least 51 frames"):
        plan_snippets(30, 3, [1, 25], cap=False)


def test_dilations_without_one_rejected():
    with pytest.raises(UserError, match="include 1"):
        plan_snippets(30, 3, [2, 25], cap=True)


@pytest.mark.parametrize("n,expect", [(1, [[0, 0, 0]]), (2, [[0, 1, 1]])])
def test_short_videos_replicate_last_frame(n, expect):
    assert snippet_indices(n, 3, 1).tolist() == expect


def test_every_frame_covered_by_dilation_one():
    for n in (3, 4, 17, 250):
        _, groups = plan_snippets(n, 3, [1, 25], cap=True)
        covered = torch.zeros(n, dtype=torch.bool)
        covered[groups[0].indices.flatten()] = True
        assert covered.all()


def test_refine_gaps_coarse_to_fine():
    # 10 refinement steps from start dilation 6 (gap 5): int((1 - i/10) * 5) in float64, as the
    # reference computes it: at i = 8, (1 - 0.8) * 5 = 0.9999999999999998, so the gap is already 0
    assert [refine_gap(i, 10, 6) for i in range(10)] == [5, 4, 4, 3, 3, 2, 2, 1, 0, 0]
