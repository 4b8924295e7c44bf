"""The order-parameter ODE of linear, ReLU and erf networks (and mixed pairs): the generic
right-hand side against the quadratic one, Monte Carlo, and the published erf equations."""

import math

import numpy as np
import pytest

import fastquad as fq
from fastquad.activations import ACTIVATIONS, activation_derivative, activation_function
from fastquad.errors import InputError
from fastquad.kernels import ode as kode
from fastquad.kernels import ode_act

PAIRS = [(s, t) for s in ACTIVATIONS for t in ACTIVATIONS]


def random_problem(rng, K, M, d=None):
    """Order parameters of random weights (a Gram matrix of K + M vectors) and second layers."""
    d = d or K + M + 3
    A = rng.standard_normal((K + M, d)) * rng.uniform(0.3, 1.5, size=(K + M, 1))
    Om = A @ A.T / d
    return (
        Om[:K, :K].copy(),
        Om[:K, K:].copy(),
        Om[K:, K:].copy(),
        rng.standard_normal(K),
        rng.standard_normal(M),
    )


@pytest.mark.parametrize("seed", range(6))
def test_generic_rhs_equals_the_quadratic_one(seed):
    """The generic right-hand side (Stein's lemma, two-point functions) run on the quadratic
    pair reproduces the quadratic closed form (Isserlis): drift, noise and label noise."""
    rng = np.random.default_rng(seed)
    K, M = rng.integers(1, 4, size=2)
    Q, R, T, v, vt = random_problem(rng, K, M)
    lr, s2, inv_b = rng.uniform(0.05, 1.0), rng.uniform(0, 1), 1.0 / rng.integers(1, 5)
    n = K * K + K * M + K
    out = np.empty((1, n))
    eps = ode_act.rhs_act(
        Q, R, v, T, vt, 0, 0, lr, s2, inv_b, True, True, out, np.int64(0), ode_act.scratch(K, M)
    )
    dQ, dR, dv = np.empty((K, K)), np.empty((K, M)), np.empty(K)
    eps_q = kode.ode_rhs_into(Q, R, v, T, vt, 0, 0, lr, s2, inv_b, True, True, dQ, dR, dv)
    ref = np.concatenate([dQ.ravel(), dR.ravel(), dv])
    assert abs(eps - eps_q) <= 1e-12 * abs(eps_q)
    np.testing.assert_allclose(out[0], ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def monte_carlo_rhs(Q, R, T, v, vt, s, t, lr, sigma2, n_samples, rng):
    """The ODE's right-hand side as expectations over Gaussian local fields: means and standard
    errors of each entry of [dQ, dR, dv] (the definition, sampled)."""
    K, M = v.size, vt.size
    Om = np.block([[Q, R], [R.T, T]])
    w, U = np.linalg.eigh(Om)
    L = U * np.sqrt(np.clip(w, 0, None))
    h = rng.standard_normal((n_samples, K + M)) @ L.T
    hs, ht = h[:, :K], h[:, K:]
    e = activation_function(s, hs) @ v - activation_function(t, ht) @ vt
    gp = activation_derivative(s, hs)
    terms = []
    for i in range(K):
        for k in range(K):
            x = -lr * (v[i] * e * gp[:, i] * hs[:, k] + v[k] * e * gp[:, k] * hs[:, i])
            x = x + lr * lr * v[i] * v[k] * (e * e + sigma2) * gp[:, i] * gp[:, k]
            terms.append(x)
    for i in range(K):
        for m in range(M):
            terms.append(-lr * v[i] * e * gp[:, i] * ht[:, m])
    for i in range(K):
        terms.append(-lr * e * activation_function(s, hs[:, i]))
    X = np.stack(terms, axis=1)
    return X.mean(axis=0), X.std(axis=0) / math.sqrt(n_samples), 0.5 * np.mean(e * e)


@pytest.mark.parametrize("s,t", PAIRS)
def test_rhs_against_monte_carlo(s, t):
    """Every entry of the right-hand side (drift, SGD noise with label noise, dv) and eps_g
    within 5 standard errors of a Monte Carlo of its defining expectation."""
    rng = np.random.default_rng(7 + ACTIVATIONS.index(s) * 4 + ACTIVATIONS.index(t))
    K, M = 2, 3
    Q, R, T, v, vt = random_problem(rng, K, M)
    lr, sigma = 0.4, 0.5
    dQ, dR, dv = fq.ode_rhs(
        Q, R, v, T, vt, lr, label_noise=sigma, activation=s, teacher_activation=t
    )
    got = np.concatenate([dQ.ravel(), dR.ravel(), dv])
    mean, se, _ = monte_carlo_rhs(Q, R, T, v, vt, s, t, lr, sigma**2, 1_000_000, rng)
    z = np.abs(got - mean) / np.maximum(se, 1e-12)
    assert z.max() < 5.0, (s, t, z.round(1))
    eps = fq.generalization_error(Q, R, T, v, vt, activation=s, teacher_activation=t)
    _, _, eps_mc = monte_carlo_rhs(Q, R, T, v, vt, s, t, lr, 0.0, 400_000, rng)
    assert abs(eps - eps_mc) < 0.02 * max(eps, 1e-3)


@pytest.mark.parametrize("bad", ["tanh", "", None, 3])
def test_bad_activation_names_the_parameter(bad):
    I = np.eye(1)
    with pytest.raises(InputError, match="^activation must be one of"):
        fq.integrate_ode(I, I, [1.0], I, [1.0], 0.1, 1.0, activation=bad)
    if bad is not None:
        with pytest.raises(InputError, match="^teacher_activation must be one of"):
            fq.ode_rhs(I, I, [1.0], I, [1.0], 0.1, teacher_activation=bad)


# --- Saad & Solla (1995), Goldt et al. (2019): the soft committee machine with g = erf(x/sqrt 2),
# written here from the published integrals, independently of fastquad's derivation


def _i3(C, a, b, c):
    """E[g'(x_a) x_b g(x_c)] (Saad & Solla 1995, eq. for I3)."""
    lam3 = (1 + C[a, a]) * (1 + C[c, c]) - C[a, c] ** 2
    return (
        2
        / math.pi
        / math.sqrt(lam3)
        * (C[b, c] * (1 + C[a, a]) - C[a, b] * C[a, c])
        / (1 + C[a, a])
    )


def _i4(C, a, b, c, d):
    """E[g'(x_a) g'(x_b) g(x_c) g(x_d)] (Saad & Solla 1995, eq. for I4)."""
    lam4 = (1 + C[a, a]) * (1 + C[b, b]) - C[a, b] ** 2
    lam0 = (
        lam4 * C[c, d]
        - C[b, c] * C[b, d] * (1 + C[a, a])
        - C[a, c] * C[a, d] * (1 + C[b, b])
        + C[a, b] * C[a, c] * C[b, d]
        + C[a, b] * C[a, d] * C[b, c]
    )
    lam1 = (
        lam4 * (1 + C[c, c])
        - C[b, c] ** 2 * (1 + C[a, a])
        - C[a, c] ** 2 * (1 + C[b, b])
        + 2 * C[a, b] * C[a, c] * C[b, c]
    )
    lam2 = (
        lam4 * (1 + C[d, d])
        - C[b, d] ** 2 * (1 + C[a, a])
        - C[a, d] ** 2 * (1 + C[b, b])
        + 2 * C[a, b] * C[a, d] * C[b, d]
    )
    return 4 / math.pi**2 / math.sqrt(lam4) * math.asin(lam0 / math.sqrt(lam1 * lam2))


def saad_solla_rhs(Q, R, T, lr):
    """dQ/dalpha, dR/dalpha of the soft committee machine (all second-layer weights 1), online
    SGD with J <- J + (lr / N) delta xi: Saad & Solla (1995), eqs. (7)-(8)."""
    K, M = R.shape
    C = np.block([[Q, R], [R.T, T]])
    S = range(K)
    Tn = range(K, K + M)
    dR = np.empty((K, M))
    dQ = np.empty((K, K))
    for i in S:
        for n in range(M):
            b = K + n
            dR[i, n] = lr * (sum(_i3(C, i, b, m) for m in Tn) - sum(_i3(C, i, b, j) for j in S))
    for i in S:
        for k in S:
            drift = sum(_i3(C, i, k, m) for m in Tn) - sum(_i3(C, i, k, j) for j in S)
            drift += sum(_i3(C, k, i, m) for m in Tn) - sum(_i3(C, k, i, j) for j in S)
            noise = (
                sum(_i4(C, i, k, n, m) for n in Tn for m in Tn)
                - 2 * sum(_i4(C, i, k, j, n) for j in S for n in Tn)
                + sum(_i4(C, i, k, j, l) for j in S for l in S)
            )
            dQ[i, k] = lr * drift + lr * lr * noise
    return dQ, dR


@pytest.mark.parametrize("seed", range(8))
def test_erf_equations_reproduce_saad_solla(seed):
    """K = M = 2, second layers frozen at 1: fastquad's erf ODE is Saad & Solla's, term by term,
    at random states (time alpha = step / N = t, their eta = lr)."""
    rng = np.random.default_rng(100 + seed)
    Q, R, T, _, _ = random_problem(rng, 2, 2)
    lr = rng.uniform(0.1, 2.0)
    ones = np.ones(2)
    dQ, dR, dv = fq.ode_rhs(Q, R, ones, T, ones, lr, train_second_layer=False, activation="erf")
    ref_Q, ref_R = saad_solla_rhs(Q, R, T, lr)
    np.testing.assert_allclose(dQ, ref_Q, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(dR, ref_R, rtol=1e-11, atol=1e-13)
    assert not dv.any()


def test_erf_plateau_of_the_soft_committee_machine():
    """The published phenomenology, K = M = 2, T = I, small random start: the trajectory sits
    on the symmetric plateau (students equally overlapped with both teachers) before the
    specialisation drop, and learns the teacher in the end."""
    Q0 = np.array([[0.2, 0.0], [0.0, 0.2]])
    R0 = np.array([[1e-3, 2e-3], [1.5e-3, 0.5e-3]]) * 0.1
    ones = np.ones(2)
    times = np.array([0.0, 100.0, 2000.0])
    res = fq.integrate_ode(
        Q0,
        R0,
        ones,
        np.eye(2),
        ones,
        0.5,
        2000.0,
        times=times,
        train_second_layer=False,
        activation="erf",
    )
    R_plateau = res.R[0, 1]
    # unspecialised: each student equally overlapped with both teachers
    assert np.ptp(R_plateau) < 0.02 * np.abs(R_plateau).max()
    assert res.eps_g[0, 1] > 1e-3
    assert res.eps_g[0, -1] < 1e-3 * res.eps_g[0, 1]


# --- online SGD converges to the ODE with its noise term (the physics check of every ODE)

SGD_PAIRS = [(a, a) for a in ACTIVATIONS] + [
    ("relu", "linear"),
    ("quadratic", "relu"),
    ("linear", "erf"),
    ("erf", "relu"),
    ("relu", "quadratic"),
    ("relu", "erf"),
]


@pytest.mark.parametrize("s,t", SGD_PAIRS)
def test_online_sgd_follows_its_ode_at_large_d(s, t):
    """d = 10^4 (the exact sampler makes it cheap), lr = 0.3, a warm start: the mean of 64 SGD
    runs agrees with the ODE with its SGD-noise term at every recorded time (within 4.5
    standard errors over 10 times, and 2 %), and, for matched teachers, clearly not with the
    flow without that term (the eta^2 term is what the ODE adds to the flow)."""
    d, lr, n = 10_000, 0.3, 64
    Wt, vt = fq.make_teacher(d, 2, v=[1.0, 0.5], seed=1)
    W0, v0 = fq.make_student(d, 2, scale=0.7, v=0.5, seed=2)
    W0 = W0 + 0.7 * Wt
    times = np.linspace(0.0, 5.0, 11)
    kw = dict(activation=s, teacher_activation=t)
    sgd = fq.simulate_sgd(
        W0, v0, Wt, vt, lr, 5.0, times=times, seeds=np.arange(n), sampler="exact", **kw
    )
    assert not sgd.diverged.any()
    Q, R, T = fq.order_parameters(W0, Wt)
    ode = fq.integrate_ode(Q, R, v0, T, vt, lr, 5.0, times=times, **kw).eps_g[0]
    mean = sgd.eps_g.mean(axis=0)[1:]
    se = sgd.eps_g.std(axis=0, ddof=1)[1:] / math.sqrt(n)
    assert np.max(np.abs(mean - ode[1:]) / se) < 4.5
    assert np.max(np.abs(mean - ode[1:]) / ode[1:]) < 0.02
    if s == t:
        flow = fq.integrate_ode(Q, R, v0, T, vt, lr, 5.0, times=times, sgd_noise=False, **kw)
        assert np.max(np.abs(mean - flow.eps_g[0, 1:]) / se) > 10.0
