"""The teacher's frame (fastquad.frame) against explicit d x d matrices, and the direct SGD
kernel's draws in that frame against the same inputs given explicitly in the original frame."""

import naive
import numpy as np
import pytest
from conftest import random_networks

import fastquad as fq
from fastquad.frame import from_frame, teacher_frame, to_frame
from fastquad.kernels.sgd import POOL_NUMBERS
from fastquad.rng import normal_fill, run_states


@pytest.mark.parametrize("M,d", [(1, 7), (3, 12), (5, 40)])
def test_frame_is_an_orthogonal_map_that_puts_the_teacher_in_the_first_M_columns(rng, M, d):
    n = 3
    Wt = rng.standard_normal((n, M, d))
    U, Wt_rot = teacher_frame(Wt)
    for r in range(n):
        # O^T as an explicit matrix: the rows of I O^T
        Ot = to_frame(np.eye(d)[None], U[r : r + 1])[0]
        np.testing.assert_allclose(Ot.T @ Ot, np.eye(d), atol=1e-13)
        np.testing.assert_allclose(Wt[r] @ Ot, Wt_rot[r], atol=1e-13)
        assert np.all(Wt_rot[r][:, M:] == 0.0)
        assert np.all(np.triu(Wt_rot[r][:, :M], 1) == 0.0)
        np.testing.assert_allclose(Wt_rot[r] @ Wt_rot[r].T, Wt[r] @ Wt[r].T, rtol=1e-13, atol=1e-12)
    W = rng.standard_normal((n, 4, d))
    np.testing.assert_allclose(from_frame(to_frame(W, U), U), W, atol=1e-13)
    # a shared frame (one row of U) acts like the per-run frame, bit for bit
    np.testing.assert_array_equal(to_frame(W, U[:1]), to_frame(W, np.repeat(U[:1], n, 0)))
    # and a run's frame is the same alone or in a batch
    U1, B1 = teacher_frame(Wt[1:2])
    np.testing.assert_array_equal(U1[0], U[1])
    np.testing.assert_array_equal(B1[0], Wt_rot[1])


def test_frame_of_a_rank_deficient_teacher(rng):
    Wt = rng.standard_normal((1, 3, 10))
    Wt[0, 2] = Wt[0, 0] - 2.0 * Wt[0, 1]  # rank 2
    U, Wt_rot = teacher_frame(Wt)
    assert np.all(np.isfinite(U)) and np.all(Wt_rot[0][:, 3:] == 0.0)
    np.testing.assert_allclose(Wt_rot[0] @ Wt_rot[0].T, Wt[0] @ Wt[0].T, atol=1e-12)


@pytest.mark.parametrize("sigma,train_v", [(0.0, True), (0.4, False)])
def test_direct_sgd_draws_in_the_teacher_frame(rng, sigma, train_v):
    """A run on its own random stream equals the same run fed, in the original frame, the
    inputs its stream drew in the teacher's frame (x = O^T x'), step by step. The steps span
    three draws of the kernel's sample pool (several steps' samples drawn at once), the last
    one partial."""
    K, M, d, lr, seed = 3, 2, 24, 0.05, 9
    per_draw = POOL_NUMBERS // (d + 1)
    assert per_draw >= 2
    steps = 2 * per_draw + per_draw // 2
    W, v, Wt, vt = random_networks(rng, K, M, d)
    times = np.arange(steps + 1) / d
    drawn = fq.simulate_sgd(
        W,
        v,
        Wt,
        vt,
        lr,
        steps / d,
        seeds=seed,
        times=times,
        label_noise=sigma,
        train_second_layer=train_v,
    )
    state = run_states(seed, [0])[0].copy()
    buf = np.empty((steps, d + 1))
    for s in range(steps):
        normal_fill(state, buf[s])
    U, _ = teacher_frame(Wt[None])
    X = from_frame(buf[None, :, :d], U)[0]  # row x'^T O = (O^T x')^T
    xi = buf[:, d:]
    Ws, vs = naive.sgd(W, v, Wt, vt, X[:, None], xi, lr, sigma, train_v)
    np.testing.assert_allclose(drawn.W[0], Ws[-1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(drawn.v[0], vs, rtol=1e-10, atol=1e-12)
    ref_eps = [naive.generalization_error(a, b, Wt, vt) for a, b in zip(Ws, vs)]
    np.testing.assert_allclose(drawn.eps_g[0], ref_eps, rtol=1e-9)
    ref_R = [naive.order_parameters(a, Wt)[1] for a in Ws]
    np.testing.assert_allclose(drawn.R[0], ref_R, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("K", [1, 2, 3, 7])  # the fused pass's row blocks: 4, 2 and 1 rows
def test_pending_update_makes_results_independent_of_measurements(rng, K):
    """The single-sample kernel applies each rank-1 update together with the next step's dot
    products; measuring (records, divergence checks) in between must not change a bit. The
    dense run applies every update on its own (a plain loop), so this also checks the fused
    update against it."""
    M, d = 3, 30
    W, v, Wt, vt = random_networks(rng, K, M, d, runs=2)
    W *= 0.4
    kw = dict(seeds=4, label_noise=0.2)
    lr = 0.05 / K  # a rate every K learns at without diverging
    sparse = fq.simulate_sgd(W, v, Wt, vt, lr, 3.0, times=[0.0, 1.5, 3.0], **kw)
    dense = fq.simulate_sgd(W, v, Wt, vt, lr, 3.0, times=np.arange(91) / d, check_every=1, **kw)
    assert (sparse.status == fq.STATUS_DONE).all() and (dense.status == fq.STATUS_DONE).all()
    assert not np.allclose(sparse.W, W)  # the weights moved
    np.testing.assert_array_equal(sparse.W, dense.W)
    np.testing.assert_array_equal(sparse.v_final, dense.v_final)
    np.testing.assert_array_equal(sparse.eps_g[:, -1], dense.eps_g[:, -1])
    np.testing.assert_array_equal(sparse.eps_g[:, 1], dense.eps_g[:, 45])
