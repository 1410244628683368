"""Co-alignment solvers: objective equivalence, convergence, degenerate inputs."""

import pytest
import torch

from rd_engine.align import AlignGroup, align_reference, dense_objective_value, objective_value, solver_view
from rd_engine.errors import UserError
from rd_engine.snippets import plan_snippets
from rd_engine.solvers import solve


def _groups(n=20, dil=(1, 4), h=24, w=32, seed=0, normalize=True, return_gt=False):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    gt = torch.stack([0.3 + yy + 0.2 * torch.sin(5 * xx + 0.2 * f) for f in range(n)])
    _, plan = plan_snippets(n, 3, list(dil), True)
    raw = []
    for p in plan:
        K = p.indices.shape[0]
        a = torch.exp(0.4 * torch.randn(K, generator=g))
        b = 0.2 * torch.randn(K, generator=g)
        d = gt[p.indices] * a[:, None, None, None] + b[:, None, None, None]
        d = d + 0.01 * torch.randn(d.shape, generator=g)
        if normalize:
            lo = d.amin(dim=(1, 2, 3), keepdim=True)
            d = (d - lo) / (d.amax(dim=(1, 2, 3), keepdim=True) - lo) * 2 - 1
        raw.append((d, p.indices, p.weight))
    mn = torch.stack([d.min() for d, _, _ in raw]).min()
    groups = [AlignGroup(solver_view(d, mn), i, w) for d, i, w in raw]
    if return_gt:
        return groups, n, gt
    return groups, n


def test_sparse_objective_equals_dense():
    groups, n = _groups()
    params = [(1 + 0.1 * torch.randn(g.depth.shape[0]), 0.05 * torch.randn(g.depth.shape[0])) for g in groups]
    assert objective_value(groups, params, n) == pytest.approx(dense_objective_value(groups, params, n), rel=1e-5)


def test_sparse_objective_equals_dense_with_duplicate_dilations():
    groups, n = _groups(n=12, dil=(1, 10, 25))  # capped to [1, 3, 3]
    assert [g.weight for g in groups] == [1, 2]
    params = [(1 + 0.1 * torch.randn(g.depth.shape[0]), 0.05 * torch.randn(g.depth.shape[0])) for g in groups]
    assert objective_value(groups, params, n) == pytest.approx(dense_objective_value(groups, params, n), rel=1e-5)


@pytest.mark.parametrize("normalize", [True, False])
def test_fast_reaches_reference_objective(normalize):
    groups, n = _groups(normalize=normalize)
    ref = align_reference(groups, n, iters=2000)
    fast = solve(groups, n, "fast")
    assert objective_value(groups, fast, n) <= objective_value(groups, ref, n)


def test_fast_is_deterministic():
    groups, n = _groups(seed=3)
    a, b = solve(groups, n, "fast"), solve(groups, n, "fast")
    for (s1, t1), (s2, t2) in zip(a, b):
        assert torch.equal(s1, s2) and torch.equal(t1, t2)


@pytest.mark.parametrize("normalize", [True, False])
def test_robust_recovers_affines_up_to_one_global_affine(normalize):
    groups, n, gt = _groups(normalize=normalize, seed=5, return_gt=True)
    params = solve(groups, n, "robust")
    # every aligned snippet is the same global affine of the ground truth, up to the 1% noise
    a = torch.cat([(g.depth * s[:, None, None] + t[:, None, None]).reshape(-1) for g, (s, t) in zip(groups, params)])
    y = torch.cat([gt[g.indices][..., 2:-2, 2:-2][..., ::10, ::10].reshape(-1) for g in groups])
    A = torch.stack([a, torch.ones_like(a)], 1).double()
    coef = torch.linalg.lstsq(A, y.double()[:, None]).solution
    resid = (A @ coef)[:, 0] - y.double()
    assert float(resid.std() / y.std()) < 0.05


@pytest.mark.parametrize("kind", ["fast", "robust"])
@pytest.mark.parametrize("case", ["constant", "zeros", "single_dilation", "barely_above_window", "duplicates"])
def test_degenerate_inputs(kind, case):
    if case == "single_dilation":
        groups, n = _groups(dil=(1,))
    elif case == "barely_above_window":
        groups, n = _groups(n=4, dil=(1, 25))
    elif case == "duplicates":
        groups, n = _groups(n=12, dil=(1, 10, 25))
    else:
        groups, n = _groups()
        g = groups[0]
        g.depth[3] = 0.0 if case == "zeros" else 0.7
    params = solve(groups, n, kind)
    for s, t in params:
        assert torch.isfinite(s).all() and torch.isfinite(t).all()


@pytest.mark.parametrize("kind", ["fast", "robust"])
def test_nan_is_a_clear_error(kind):
    groups, n = _groups()
    groups[1].depth[0, 0, 0] = float("nan")
    with pytest.raises(UserError, match="co-alignment"):
        solve(groups, n, kind)
