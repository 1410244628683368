"""Co-alignment solvers: objective equivalence, convergence, degenerate inputs."""

import pytest
import torch

from rd_engine.coalign.objective import objective_value
from rd_engine.coalign.problem import solver_view
from rd_engine.coalign.reference import align_reference, dense_objective_value
from rd_engine.coalign.solve import solve
from rd_engine.errors import UserError
from rd_engine.snippets.plan import plan_snippets


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
        raw.append(p.with_depth(d))
    mn = torch.stack([r.depth.min() for r in raw]).min()
    groups = [r.with_depth(solver_view(r.depth, mn)) for r in raw]
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


def _dense_objective(groups, scales, shifts, n):
    """The reference objective as one differentiable function of the parameters: the dense
    [L * entries, N, P] formula, targets and normalizers NOT detached (the reference detaches
    them in its loop, so its gradient is a different, fixed-target one).
    """
    entries = [(g, s, t) for g, s, t in zip(groups, scales, shifts) for _ in range(g.weight)]
    L, P = groups[0].depth.shape[1:]
    M, Mi, B = [], [], []
    for g, s, t in entries:
        a = g.depth * s[:, None, None] + t[:, None, None]
        for j in range(L):
            onehot = torch.zeros(n, g.depth.shape[0])
            onehot[g.indices[:, j], torch.arange(g.depth.shape[0])] = 1
            M.append(onehot @ a[:, j])
            Mi.append(onehot @ a[:, j].clamp_min(1e-3).reciprocal())
            B.append(onehot.sum(1, keepdim=True).expand(n, P))
    M, Mi, B = torch.stack(M), torch.stack(Mi), torch.stack(B)
    T, Ti = M.sum(0) / B.sum(0), Mi.sum(0) / B.sum(0)
    data = ((M - T).abs() * B / T.abs().mean(-1, keepdim=True)).mean()
    data = data + ((Mi - Ti).abs() * B / Ti.abs().mean(-1, keepdim=True)).mean()
    prior = sum(0.1 * (1 - s).clamp_min(0).square().mean() + 10 * t.square().mean() for _, s, t in entries)
    return data + prior


@pytest.mark.parametrize("dil", [(1, 4), (1, 10, 25)])
def test_block_gradient_equals_autograd(dil):
    """The fast solver's hand-written value and gradient (frame blocks) against autograd through the
    plain dense formula, with part of one snippet clipped by the 1e-3 floor of the reciprocal.
    """
    from rd_engine.coalign.objective import FlatProblem, FrameBlocks

    groups, n = _groups(n=16, dil=dil, seed=5)
    g = torch.Generator().manual_seed(1)
    scales = [(0.5 + torch.rand(gr.depth.shape[0], generator=g)).requires_grad_(True) for gr in groups]
    shifts = [0.1 * torch.randn(gr.depth.shape[0], generator=g) for gr in groups]
    shifts[0][0] = -0.05
    shifts = [t.requires_grad_(True) for t in shifts]
    ref = _dense_objective(groups, scales, shifts, n)
    ref.backward()
    s, t = torch.cat(scales).detach(), torch.cat(shifts).detach()
    params = [(sc.detach(), sh.detach()) for sc, sh in zip(scales, shifts)]
    assert float(ref.detach()) == pytest.approx(dense_objective_value(groups, params, n), rel=1e-5)

    blocks = FrameBlocks(FlatProblem.of(groups, n), block_elems=1000)  # several frames per block, several blocks
    value, (gs, gt), mom = blocks.evaluate(s, t, grad=True, moments=True)
    assert value == pytest.approx(float(ref.detach()), rel=1e-5)
    ref_gs, ref_gt = torch.cat([x.grad for x in scales]), torch.cat([x.grad for x in shifts])
    tol = 1e-5 * max(float(ref_gs.abs().max()), float(ref_gt.abs().max()))
    assert torch.allclose(gs, ref_gs, rtol=1e-4, atol=tol)
    assert torch.allclose(gt, ref_gt, rtol=1e-4, atol=tol)
    assert mom.shape == (s.shape[0], 5) and torch.isfinite(mom).all() and (mom[:, 0] > 0).all()


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


def test_solver_views_lie_back_to_back_and_the_solver_joins_them_without_a_copy():
    from rd_engine.coalign.problem import joined, solver_views

    g = torch.Generator().manual_seed(0)
    depths = [torch.rand(k, 3, 30, 40, generator=g).half() for k in (5, 3, 2)]
    gm = torch.stack([d.min() for d in depths]).min()
    views = solver_views(depths, gm)
    for v, d in zip(views, depths):
        assert torch.equal(v, solver_view(d, gm))  # the same values as one at a time
    one = joined(views)
    assert one.data_ptr() == views[0].data_ptr() and torch.equal(one, torch.cat(views))
    apart = [solver_view(d, gm) for d in depths]  # separate allocations: a copy, same values
    assert torch.equal(joined(apart), one)
