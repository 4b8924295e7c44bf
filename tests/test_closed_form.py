"""Closed forms: against dense NumPy formulas (exact) and against Monte Carlo (physics)."""

import naive
import numpy as np
import pytest
from conftest import random_networks

import fastquad as fq


def test_order_parameters_match_dense(rng):
    W, v, Wt, vt = random_networks(rng, K=4, M=3, d=17)
    for got, want in zip(fq.order_parameters(W, Wt), naive.order_parameters(W, Wt)):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("K,M,d", [(1, 1, 5), (3, 2, 20), (5, 7, 11)])
def test_generalization_error_matches_dense_trace_formula(rng, K, M, d):
    W, v, Wt, vt = random_networks(rng, K, M, d)
    Q, R, T = fq.order_parameters(W, Wt)
    assert fq.generalization_error(Q, R, T, v, vt) == pytest.approx(
        naive.generalization_error(W, v, Wt, vt), rel=1e-12
    )


def test_generalization_error_matches_monte_carlo(rng):
    """eps_g = E[(f - f*)^2] / 2 over x ~ N(0, I): 2 10^6 samples, within 4 standard errors."""
    K, M, d = 3, 2, 8
    W, v, Wt, vt = random_networks(rng, K, M, d)
    Q, R, T = fq.order_parameters(W, Wt)
    exact = fq.generalization_error(Q, R, T, v, vt)
    vals = []
    for _ in range(4):
        X = rng.standard_normal((500_000, d))
        f = ((X @ W.T / np.sqrt(d)) ** 2) @ v
        fs = ((X @ Wt.T / np.sqrt(d)) ** 2) @ vt
        vals.append(0.5 * (f - fs) ** 2)
    vals = np.concatenate(vals)
    se = vals.std() / np.sqrt(vals.size)
    assert abs(vals.mean() - exact) < 4 * se
    # the test has power: a 5% error in the formula would be many standard errors away
    assert 0.05 * exact > 10 * se


def test_zero_error_at_the_teacher(rng):
    Wt = rng.standard_normal((3, 10))
    vt = np.array([1.0, 0.5, -0.7])
    Q, R, T = fq.order_parameters(Wt, Wt)
    assert fq.generalization_error(Q, R, T, vt, vt) == pytest.approx(0.0, abs=1e-12)


def test_population_gradients_match_dense(rng):
    W, v, Wt, vt = random_networks(rng, K=3, M=4, d=13)
    gW, gv = fq.population_gradients(W, v, Wt, vt)
    nW, nv = naive.population_gradients(W, v, Wt, vt)
    np.testing.assert_allclose(gW, nW, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(gv, nv, rtol=1e-11, atol=1e-13)


def test_population_gradients_are_gradients_of_eps_g(rng):
    """Central finite differences of the exact eps_g."""
    W, v, Wt, vt = random_networks(rng, K=2, M=2, d=6)
    gW, gv = fq.population_gradients(W, v, Wt, vt)

    def eps(W, v):
        return fq.generalization_error(*fq.order_parameters(W, Wt), v, vt)

    h = 1e-6
    for j, k in [(0, 0), (1, 3), (0, 5)]:
        Wp, Wm = W.copy(), W.copy()
        Wp[j, k] += h
        Wm[j, k] -= h
        assert gW[j, k] == pytest.approx((eps(Wp, v) - eps(Wm, v)) / (2 * h), rel=1e-6, abs=1e-8)
    for j in range(2):
        vp, vm = v.copy(), v.copy()
        vp[j] += h
        vm[j] -= h
        assert gv[j] == pytest.approx((eps(W, vp) - eps(W, vm)) / (2 * h), rel=1e-6, abs=1e-8)


def test_population_gradients_match_monte_carlo_of_per_sample_gradients(rng):
    """E over x of the per-sample gradient (noise-free labels) is the population gradient."""
    K, M, d = 2, 2, 5
    W, v, Wt, vt = random_networks(rng, K, M, d)
    gW, gv = fq.population_gradients(W, v, Wt, vt)
    n = 1_000_000
    X = rng.standard_normal((n, d))
    h = X @ W.T / np.sqrt(d)
    e = (h**2) @ v - ((X @ Wt.T / np.sqrt(d)) ** 2) @ vt
    samples_v = e[:, None] * h**2
    mc_v = samples_v.mean(0)
    se_v = samples_v.std(0) / np.sqrt(n)
    assert np.all(np.abs(mc_v - gv) < 5 * se_v)
    coef = e[:, None] * v[None, :] * 2 * h / np.sqrt(d)  # (n, K)
    mc_W = coef.T @ X / n
    se_W = np.sqrt(((coef**2).T @ X**2) / n - mc_W**2) / np.sqrt(n)
    assert np.all(np.abs(mc_W - gW) < 5 * se_W)


def test_closed_form_validation_names_parameters(rng):
    W, v, Wt, vt = random_networks(rng)
    Q, R, T = fq.order_parameters(W, Wt)
    with pytest.raises(ValueError, match="W_teacher"):
        fq.order_parameters(W, Wt[:, :-1])
    with pytest.raises(ValueError, match="W must"):
        fq.order_parameters(W[0], Wt)
    with pytest.raises(ValueError, match="Q must have shape"):
        fq.generalization_error(Q[:2], R, T, v, vt)
    with pytest.raises(ValueError, match="v_teacher"):
        fq.generalization_error(Q, R, T, v, [np.nan, 1.0])
    with pytest.raises(ValueError, match="v must have shape"):
        fq.population_gradients(W, v[:-1], Wt, vt)
