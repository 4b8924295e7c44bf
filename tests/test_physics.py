"""Physics checks that tie the methods together: ODE vs flow, SGD vs ODE, the facts of
docs/theory.md."""

import naive
import numpy as np
import pytest
from conftest import random_networks

import fastquad as fq


def _order_state(W, Wt):
    return fq.order_parameters(W, Wt)


@pytest.mark.parametrize("train_v", [True, False])
def test_ode_eta1_part_is_the_projection_of_the_parameter_flow(rng, train_v):
    """dQ/dt = (W dW^T + dW W^T)/d, dR/dt = dW W*^T/d under the flow: machine precision, any d."""
    for K, M, d in [(1, 1, 3), (3, 2, 7), (4, 5, 40)]:
        W, v, Wt, vt = random_networks(rng, K, M, d)
        lr = 0.37
        dW, dv = naive.flow_rhs(W, v, Wt, vt, lr, train_v)
        Q, R, T = fq.order_parameters(W, Wt)
        dQ, dR, dvo = fq.ode_rhs(Q, R, v, T, vt, lr, sgd_noise=False, train_second_layer=train_v)
        scale = np.abs(dQ).max()
        np.testing.assert_allclose(dQ, (W @ dW.T + dW @ W.T) / d, rtol=0, atol=1e-13 * scale)
        np.testing.assert_allclose(dR, dW @ Wt.T / d, rtol=0, atol=1e-13 * scale)
        np.testing.assert_allclose(dvo, dv, rtol=0, atol=1e-13 * scale)


def test_flow_and_ode_trajectories_agree(rng):
    """Integrated in parameter space and in order-parameter space: the same curve."""
    W, v, Wt, vt = random_networks(rng, 2, 3, 25)
    W *= 0.6
    v = np.abs(v)
    times = np.linspace(0, 8, 17)
    flow = fq.integrate_flow(W, v, Wt, vt, 0.1, 8.0, dt=0.005, times=times)
    Q0, R0, T = fq.order_parameters(W, Wt)
    ode = fq.integrate_ode(
        Q0, R0, v, T, vt, 0.1, 8.0, times=times, sgd_noise=False, rtol=1e-11, atol=1e-13
    )
    np.testing.assert_allclose(ode.Q, flow.Q, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ode.R, flow.R, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ode.eps_g, flow.eps_g, rtol=1e-8)


def _sgd_vs_ode_setup(d, label_noise, n_seeds):
    K, M, lr, t_max = 2, 2, 0.1, 10.0
    Wt, vt = fq.make_teacher(d, M, v=[1.0, 0.5], seed=1)
    G, _ = fq.make_student(d, K, scale=1.0, seed=2)
    # a start correlated with the teacher: no saddle on the way, where finite-d escape times
    # would dominate, so the comparison tests the drift and noise terms themselves
    W0 = 0.7 * Wt + 0.7 * G
    v0 = np.array([0.6, 0.3])
    times = np.linspace(0, t_max, 11)
    sgd = fq.simulate_sgd(
        W0, v0, Wt, vt, lr, t_max, seeds=np.arange(n_seeds), times=times, label_noise=label_noise
    )
    Q0, R0, T = fq.order_parameters(W0, Wt)

    def ode(**kw):
        return fq.integrate_ode(
            Q0, R0, v0, T, vt, lr, t_max, times=times, label_noise=label_noise, **kw
        ).eps_g[0]

    return sgd, ode


@pytest.mark.parametrize("label_noise", [0.0, 0.5])
def test_sgd_matches_the_ode_with_its_noise_term(label_noise):
    """eta = 0.1, d = 1000, 32 seeds: the seed-mean of online SGD follows the full ODE.

    Tolerance: 4 standard errors plus 1.5% (finite-d corrections are O(1/d)). The same check
    fails for the ODE with the eta^2 term halved (batch_size=2) or dropped, so it tests the
    eta^2 term, not just the drift.
    """
    sgd, ode = _sgd_vs_ode_setup(1000, label_noise, 32)
    assert np.all(sgd.status == fq.STATUS_DONE)
    mean, n_out = sgd.mean_eps_g()
    assert n_out == 0
    se = sgd.eps_g.std(axis=0, ddof=1) / np.sqrt(sgd.n_runs)

    def agrees(curve):
        return np.abs(mean - curve) <= 4 * se + 0.015 * curve

    assert agrees(ode()).all(), (mean, ode())
    assert (~agrees(ode(batch_size=2))).sum() >= 7
    assert (~agrees(ode(sgd_noise=False))).sum() >= 8


def test_sgd_noise_only_increases_the_conserved_quantity():
    """dC_j/dt = 4 eta^2 v_j^2 E[e^2 h_j^2] >= 0 under SGD; its mean drift matches the ODE."""
    sgd, _ = _sgd_vs_ode_setup(1000, 0.5, 32)
    C = sgd.conserved  # (runs, times, K)
    growth = C[:, -1] - C[:, 0]
    assert (growth.mean(axis=0) > 10 * growth.std(axis=0, ddof=1) / np.sqrt(sgd.n_runs)).all()
    ode = fq.integrate_ode(
        sgd.Q[0, 0],
        sgd.R[0, 0],
        sgd.v[0, 0],
        sgd.T[0],
        sgd.v_teacher[0],
        0.1,
        10.0,
        times=sgd.t,
        label_noise=0.5,
    )
    Code = ode.conserved[0]
    assert np.all(np.diff(Code, axis=0) >= -1e-12)
    np.testing.assert_allclose(C.mean(axis=0)[-1] - C[0, 0], Code[-1] - Code[0], rtol=0.1)


# ---------------------------------------------------------------- K = M = 1
# (docs/theory.md, 'Symmetries and conserved quantities', 'Fixed points, plateaus and stages')


def _jacobian(fun, x, h=1e-7):
    f0 = fun(x)
    J = np.empty((f0.size, x.size))
    for i in range(x.size):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        J[:, i] = (fun(xp) - fun(xm)) / (2 * h)
    return J


def _rhs_k1(lr, vt, T):
    def fun(x):
        Q, R, v = x
        dQ, dR, dv = fq.ode_rhs([[Q]], [[R]], [v], [[T]], [vt], lr, sgd_noise=False)
        return np.array([dQ[0, 0], dR[0, 0], dv[0]])

    return fun


@pytest.mark.parametrize("v", [-0.7, 0.4, 1.3])
def test_w_zero_is_a_line_of_fixed_points_with_the_predicted_spectrum(v):
    lr, vt, T = 0.3, 1.2, 0.9
    fun = _rhs_k1(lr, vt, T)
    x = np.array([0.0, 0.0, v])
    np.testing.assert_allclose(fun(x), 0.0, atol=1e-15)
    eig = np.sort(np.linalg.eigvals(_jacobian(fun, x)).real)
    want = np.sort(lr * np.array([4 * v * vt * T, 6 * v * vt * T, 0.0]))
    np.testing.assert_allclose(eig, want, atol=1e-6)
    # stable (no positive eigenvalue) exactly when v has the wrong sign
    assert (eig.max() <= 1e-6) == (v * vt < 0)


def test_r_zero_saddle_and_its_plateau_level():
    lr, vt, T, v = 0.2, 1.0, 1.0, 0.8
    Q = vt * T / (3 * v)
    fun = _rhs_k1(lr, vt, T)
    x = np.array([Q, 0.0, v])
    np.testing.assert_allclose(fun(x), 0.0, atol=1e-14)
    eps = fq.generalization_error([[Q]], [[0.0]], [[T]], [v], [vt])
    assert eps == pytest.approx(4.0 / 3.0 * vt**2 * T**2, rel=1e-12)
    eig = np.linalg.eigvals(_jacobian(fun, x)).real
    assert (eig > 1e-8).sum() == 1 and (eig < -1e-8).sum() >= 1  # a saddle


@pytest.mark.parametrize("C_sign,learns", [(-1, False), (+1, True)])
def test_conserved_quantity_decides_a_wrong_sign_start(C_sign, learns):
    """v starts with the wrong sign. C = Q - 2 v^2 < 0: v can never cross zero, learning fails;
    C > 0: it crosses and learns. Checked in parameter space (flow, d = 50)."""
    d = 50
    Wt, vt = fq.make_teacher(d, 1, v=1.0, seed=3)
    G, _ = fq.make_student(d, 1, scale=1.0, seed=4)
    v0 = np.array([-0.5])
    Q_target = 2 * v0[0] ** 2 + C_sign * 0.3
    W0 = 0.2 * Wt + G
    W0 *= np.sqrt(Q_target / (W0 @ W0.T / d))[0, 0]
    res = fq.integrate_flow(W0, v0, Wt, vt, 0.2, 300.0, dt=0.01)
    C = res.conserved[0, :, 0]
    assert np.sign(C[0]) == C_sign and np.abs(C - C[0]).max() < 1e-8
    if learns:
        assert res.v[0, -1, 0] > 0 and res.eps_g[0, -1] < 1e-6
    else:
        assert (res.v[0, :, 0] < 0).all() and res.eps_g[0, -1] > 0.5


def test_full_batch_gd_on_many_samples_approaches_the_flow():
    d, K, M = 30, 2, 2
    Wt, vt = fq.make_teacher(d, M, v=[1.0, 0.6], seed=1)
    W0, v0 = fq.make_student(d, K, scale=0.8, seed=2)
    times = np.linspace(0, 3, 7)
    flow = fq.integrate_flow(W0, v0, Wt, vt, 0.1, 3.0, times=times)
    big = fq.simulate_gd(W0, v0, Wt, vt, 0.1, 3.0, n_samples=20000, times=times, seeds=1)
    small = fq.simulate_gd(W0, v0, Wt, vt, 0.1, 3.0, n_samples=40, times=times, seeds=1)
    err_big = np.abs(big.eps_g[0] - flow.eps_g[0]).max()
    err_small = np.abs(small.eps_g[0] - flow.eps_g[0]).max()
    assert err_big < 0.05 * flow.eps_g[0, 0]
    assert err_big < 0.3 * err_small
    # overfitting on few samples: training loss below the test error
    assert small.train_error[0, -1] < small.eps_g[0, -1]
