"""Online SGD, finite-data GD, the parameter-space flow and the exact sampler for every activation.

Each kernel step by step against the NumPy references of naive / naive_gram on explicit samples;
the exact eps_g and population gradients against Monte Carlo and finite differences; the exact
sampler equal in law to the direct kernel; the symmetries and the conserved quantities that
each activation has (or has not); and the API's handling of the names.
"""

import itertools
import math

import naive
import naive_gram
import numpy as np
import pytest
from conftest import random_networks
from scipy import special, stats

import fastquad as fq
from fastquad import config
from fastquad.activations import (
    ACTIVATIONS,
    activation_code,
    activation_degree,
    activation_derivative,
    activation_function,
)
from fastquad.errors import InputError
from fastquad.kernels import gram
from fastquad.rng import randbelow, run_states

#: Every matched pair, the other students against a quadratic teacher, and two mixed pairs.
PAIRS = [(a, a) for a in ACTIVATIONS] + [
    ("linear", "quadratic"),
    ("relu", "quadratic"),
    ("erf", "quadratic"),
    ("quadratic", "relu"),
    ("relu", "erf"),
]
ALL_PAIRS = list(itertools.product(ACTIVATIONS, ACTIVATIONS))


def _ids(pairs):
    return [f"{s}-{t}" for s, t in pairs]


def _every_step(n, d):
    return np.arange(n + 1) / d


def _eps(W, v, Wt, vt, s, t):
    """The exact eps_g of explicit weights (the closed form, checked against Monte Carlo
    below)."""
    Q, R, T = fq.order_parameters(W, Wt)
    return fq.generalization_error(Q, R, T, v, vt, activation=s, teacher_activation=t)


# ---------------------------------------------------------------------------------------------
# Every kernel against its reference, step by step.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("B,train_v,sigma", [(1, True, 0.3), (1, False, 0.0), (3, True, 0.5)])
@pytest.mark.parametrize("s,t", PAIRS, ids=_ids(PAIRS))
def test_direct_sgd_matches_reference_step_by_step(rng, s, t, B, train_v, sigma):
    K, M, d, steps, lr = 3, 2, 16, 25, 0.07
    W, v, Wt, vt = random_networks(rng, K, M, d, runs=2)
    X = rng.standard_normal((2, steps, B, d))
    xi = rng.standard_normal((2, steps, B))
    res = fq.simulate_sgd(
        W,
        v,
        Wt,
        vt,
        lr,
        steps / d,
        times=_every_step(steps, d),
        batch_size=B,
        label_noise=sigma,
        train_second_layer=train_v,
        samples=(X, xi),
        activation=s,
        teacher_activation=t,
    )
    assert np.all(res.status == fq.STATUS_DONE)
    assert (res.attrs["activation"], res.attrs["teacher_activation"]) == (s, t)
    for r in range(2):
        Ws, vs = naive.sgd(W[r], v[r], Wt, vt, X[r], xi[r], lr, sigma, train_v, s, t)
        np.testing.assert_allclose(res.W[r], Ws[-1], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(res.v[r], vs, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(res.Q[r], [naive.order_parameters(a, Wt)[0] for a in Ws], 1e-11)
        np.testing.assert_allclose(
            res.eps_g[r], [_eps(a, b, Wt, vt, s, t) for a, b in zip(Ws, vs)], rtol=1e-11
        )
        if not train_v:
            np.testing.assert_array_equal(res.v[r], np.broadcast_to(v[r], res.v[r].shape))


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("s,t", [("linear", "linear"), ("relu", "relu"), ("erf", "quadratic")])
def test_float32_sgd_follows_the_reference(rng, s, t, B):
    """float32 weights and arithmetic (erf and its derivative rounded back to float32)."""
    K, M, d, steps, lr = 3, 2, 16, 20, 0.05
    W, v, Wt, vt = random_networks(rng, K, M, d)
    X = rng.standard_normal((steps, B, d)).astype(np.float32)
    xi = rng.standard_normal((steps, B)).astype(np.float32)
    res = fq.simulate_sgd(
        W,
        v,
        Wt,
        vt,
        lr,
        steps / d,
        batch_size=B,
        label_noise=0.2,
        samples=(X, xi),
        dtype="float32",
        activation=s,
        teacher_activation=t,
    )
    assert res.W.dtype == np.float32
    f32 = [a.astype(np.float32).astype(float) for a in (W, v, Wt, vt)]
    Ws, vs = naive.sgd(*f32, X.astype(float), xi.astype(float), lr, 0.2, True, s, t)
    np.testing.assert_allclose(res.W[0], Ws[-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res.v_final[0], vs[-1], rtol=1e-4, atol=1e-5)


def _shuffled_batches(seed, n, B, steps):
    """The mini-batches of multi-pass SGD: a Fisher-Yates shuffle per epoch from the run's
    stream, the last partial batch of an epoch dropped."""
    state = run_states(seed, np.array([0]))[0].copy()
    perm = np.arange(n)
    batches, pos = [], n
    for _ in range(steps):
        if pos + B > n:
            for i in range(n - 1, 0, -1):
                j = randbelow(state, i + 1)
                perm[i], perm[j] = perm[j], perm[i]
            pos = 0
        batches.append(perm[pos : pos + B].copy())
        pos += B
    return batches


@pytest.mark.parametrize("batch", [None, 5])
@pytest.mark.parametrize("s,t", PAIRS, ids=_ids(PAIRS))
def test_gd_matches_reference(rng, s, t, batch):
    K, M, d, n, steps, lr, sigma, seed = 2, 3, 12, 23, 20, 0.1, 0.2, 7
    W, v, Wt, vt = random_networks(rng, K, M, d)
    X = rng.standard_normal((n, d))
    xi = rng.standard_normal(n)
    res = fq.simulate_gd(
        W,
        v,
        Wt,
        vt,
        lr,
        steps / d,
        n_samples=n,
        batch_size=batch,
        seeds=seed,
        times=_every_step(steps, d),
        label_noise=sigma,
        data=(X, xi),
        activation=s,
        teacher_activation=t,
    )
    if batch is None:
        Xs, xis = np.broadcast_to(X, (steps, n, d)), np.broadcast_to(xi, (steps, n))
    else:
        idx = _shuffled_batches(seed, n, batch, steps)
        Xs, xis = np.array([X[b] for b in idx]), np.array([xi[b] for b in idx])
    Ws, vs = naive.sgd(W, v, Wt, vt, Xs, xis, lr, sigma, True, s, t)
    np.testing.assert_allclose(res.W[0], Ws[-1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.v[0], vs, rtol=1e-12, atol=1e-13)
    train = [naive.train_error(a, b, Wt, vt, X, sigma * xi, s, t) for a, b in zip(Ws, vs)]
    np.testing.assert_allclose(res.train_error[0], train, rtol=1e-11)
    eps = [_eps(a, b, Wt, vt, s, t) for a, b in zip(Ws, vs)]
    np.testing.assert_allclose(res.eps_g[0], eps, rtol=1e-11)
    assert res.attrs["activation"] == s and res.attrs["teacher_activation"] == t


@pytest.mark.parametrize("train_v", [True, False])
@pytest.mark.parametrize("s,t", PAIRS, ids=_ids(PAIRS))
def test_flow_matches_numpy_rk4(rng, s, t, train_v):
    """RK4 in NumPy on the public population gradients (themselves checked against finite
    differences and Monte Carlo below)."""
    K, M, d, lr, dt, n = 3, 2, 9, 0.2, 0.05, 20
    W, v, Wt, vt = random_networks(rng, K, M, d)
    res = fq.integrate_flow(
        W,
        v,
        Wt,
        vt,
        lr,
        n * dt,
        dt=dt,
        times=np.arange(n + 1) * dt,
        train_second_layer=train_v,
        activation=s,
        teacher_activation=t,
    )

    def f(y):
        gW, gv = fq.population_gradients(
            y[: K * d].reshape(K, d), y[K * d :], Wt, vt, activation=s, teacher_activation=t
        )
        return np.concatenate([-lr * d * gW.ravel(), -lr * gv if train_v else 0.0 * gv])

    y = np.concatenate([W.ravel(), v])
    ys = [y]
    for _ in range(n):
        ys.append(naive.rk4(f, ys[-1], dt))
    # A ReLU unit's self-term E[delta(h_j) relu(h_j)] (kernels.activation.pair_l at c = A = B)
    # evaluates to sqrt(max(A - A * A / A, 0)) / (2 pi sqrt(A)): up to 2e-9 instead of 0, so
    # that the kernel (Q from gram_into) and the reference (Q from NumPy) agree to ~1e-9 only.
    tol = 1e-8 if s == "relu" else 1e-11
    np.testing.assert_allclose(res.W[0], ys[-1][: K * d].reshape(K, d), rtol=tol, atol=tol)
    np.testing.assert_allclose(res.v_final[0], ys[-1][K * d :], rtol=tol, atol=tol)
    eps = [_eps(y[: K * d].reshape(K, d), y[K * d :], Wt, vt, s, t) for y in ys]
    np.testing.assert_allclose(res.eps_g[0], eps, rtol=tol)


def _factors(rng, n, K, M, d):
    Fs, vs, vts = [], [], []
    for _ in range(n):
        W, v, Wt, vt = random_networks(rng, K, M, d)
        Fs.append(gram.initial_factor(W, Wt))
        vs.append(v)
        vts.append(vt)
    return np.array(Fs), np.array(vs), np.array(vts)


@pytest.mark.parametrize("B,train_v,sigma", [(1, True, 0.3), (3, True, 0.5), (2, False, 0.0)])
@pytest.mark.parametrize("s,t", PAIRS, ids=_ids(PAIRS))
def test_sampler_steps_match_the_reference(rng, s, t, B, train_v, sigma):
    """Steps of 5 runs in lockstep (the sampler's own step code) against naive_gram."""
    K, M, d, S, n, lr = 3, 2, 20, 6, 5, 0.2
    r = K + M
    F0, v0, vt = _factors(rng, n, K, M, d)
    Z = rng.standard_normal((n, S, B, r))
    XI = rng.standard_normal((n, S, B))
    L = np.array([[naive_gram.bartlett(rng, B, d - r) for _ in range(S)] for _ in range(n)])
    F, v = F0.copy(), v0.copy()
    codes = activation_code(s), activation_code(t)
    n_done = gram.gram_steps(
        F, v, vt, K, d, np.full(n, lr), np.full(n, sigma), train_v, Z, XI, L, *codes
    )
    assert np.all(n_done == S)
    for i in range(n):
        Fr, vr = F0[i], v0[i]
        for k in range(S):
            Fr, vr = naive_gram.step_factor(
                Fr, vr, vt[i], K, d, lr, sigma, train_v, Z[i, k], XI[i, k], L[i, k], s, t
            )
        np.testing.assert_allclose(F[i], Fr, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(v[i], vr, rtol=1e-13, atol=1e-15)
        assert np.array_equal(F[i, :M], F0[i, :M])  # the teacher rows are never written


@pytest.mark.parametrize("s,t", PAIRS, ids=_ids(PAIRS))
def test_sampler_step_is_a_direct_step_on_explicit_inputs(rng, s, t):
    """A direct SGD step on explicit weights and inputs, then the Gram matrix, equals F'F'^T
    of the sampler's step from z = V^T x and the orthogonal parts (to round-off)."""
    K, M, d, B, lr, sigma = 2, 3, 12, 3, 0.3, 0.4
    W, v, Wt, vt = random_networks(rng, K, M, d)
    F, V = naive_gram.factor_and_basis(W, Wt)
    X = rng.standard_normal((B, d))
    xi = rng.standard_normal(B)
    z, L = naive_gram.split_inputs(X, V)
    Ws, vs = naive.sgd(W, v, Wt, vt, X[None], xi[None], lr, sigma, True, s, t)
    A1 = naive_gram.stacked(Ws[-1], Wt)
    Fk, vk = F[None].copy(), v[None].copy()
    gram.gram_steps(
        Fk,
        vk,
        vt[None],
        K,
        d,
        np.array([lr]),
        np.array([sigma]),
        True,
        z[None, None],
        xi[None, None],
        L[None, None],
        activation_code(s),
        activation_code(t),
    )
    scale = np.abs(A1 @ A1.T).max()
    np.testing.assert_allclose(Fk[0] @ Fk[0].T, A1 @ A1.T, rtol=0, atol=1e-13 * scale)
    np.testing.assert_allclose(vk[0], vs[-1], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("s,t", [("relu", "relu"), ("erf", "erf"), ("linear", "quadratic")])
def test_sampler_records_the_exact_eps_g_of_its_factor(rng, s, t):
    K, M, d = 2, 2, 30
    W, v, Wt, vt = random_networks(rng, K, M, d, runs=3)
    res = fq.simulate_sgd(
        W, v, Wt, vt, 0.05, 2.0, seeds=4, sampler="exact", activation=s, teacher_activation=t
    )
    assert np.all(res.status == fq.STATUS_DONE)
    for r in range(3):
        eps0 = _eps(W[r], v[r], Wt, vt, s, t)
        np.testing.assert_allclose(res.eps_g[r, 0], eps0, rtol=1e-12)
        T = Wt @ Wt.T / d
        want = fq.generalization_error(
            res.Q[r, -1], res.R[r, -1], T, res.v[r, -1], vt, activation=s, teacher_activation=t
        )
        np.testing.assert_allclose(res.eps_g[r, -1], want, rtol=1e-12)


@pytest.mark.parametrize("s", ["relu", "erf"])
def test_sampler_run_is_identical_alone_and_in_a_lockstep_group(rng, s):
    """16 vector lanes against a group of one (scalar code): the same bits, also through the
    activation's branches and erf's library calls."""
    K, M, d, n = 2, 2, 40, 20
    W = rng.standard_normal((n, K, d)) * 0.5
    v = rng.uniform(0.3, 1.0, (n, K))
    Wt, vt = fq.make_teacher(d, M, seed=2)
    kw = dict(times=fq.log_times(3.0, 12, 0.05), label_noise=0.1, sampler="exact", activation=s)
    full = fq.simulate_sgd(W, v, Wt, vt, 0.1, 3.0, seeds=3, num_threads=1, **kw)
    alone = fq.simulate_sgd(W[13], v[13], Wt, vt, 0.1, 3.0, seeds=3, run_ids=[13], **kw)
    for name in ("eps_g", "Q", "R", "v"):
        np.testing.assert_array_equal(getattr(alone, name)[0], getattr(full, name)[13])


# ---------------------------------------------------------------------------------------------
# Exact eps_g and population gradients: Monte Carlo and finite differences.
# ---------------------------------------------------------------------------------------------


def _g(name, h):
    """g(h) as activation_function, with SciPy's vectorised erf for the 10^6-sample means."""
    if name == "erf":
        return special.erf(h / math.sqrt(2.0))
    return activation_function(name, h)


def _problem(seed, K=2, M=3, d=6):
    """A random problem with O(1) order parameters, mixed signs of v and v*."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((K, d)) * rng.uniform(0.5, 1.5, (K, 1))
    Wt = rng.standard_normal((M, d))
    v = rng.standard_normal(K)
    vt = rng.choice([-1.0, 1.0], M) * rng.uniform(0.5, 1.5, M)
    return W, v, Wt, vt


@pytest.fixture(scope="module")
def monte_carlo():
    """10^6 Gaussian inputs and the fields of two random problems, and each activation's g(h)
    and g'(h) of them (computed once, shared by the 16 pairs)."""
    n = 1_000_000
    out = []
    for seed in (1, 2):
        W, v, Wt, vt = _problem(seed)
        d = W.shape[1]
        X = np.random.default_rng(100 + seed).standard_normal((n, d))
        h, hs = X @ W.T / np.sqrt(d), X @ Wt.T / np.sqrt(d)
        g = {a: _g(a, h) for a in ACTIVATIONS}
        gp = {a: activation_derivative(a, h) for a in ACTIVATIONS}
        f_teacher = {a: _g(a, hs) @ vt for a in ACTIVATIONS}
        out.append((W, v, Wt, vt, X, X * X, g, gp, f_teacher))
    return out


def _within(mc, se, exact, n_se=5.0):
    err = np.abs(np.asarray(mc) - np.asarray(exact))
    bound = n_se * np.asarray(se) + 1e-12 * np.abs(exact)
    assert np.all(err <= bound), f"worst {np.max(err / (np.asarray(se) + 1e-300)):.1f} SE"


@pytest.mark.parametrize("s,t", ALL_PAIRS, ids=_ids(ALL_PAIRS))
def test_eps_g_is_the_monte_carlo_mean_of_the_loss(monte_carlo, s, t):
    for W, v, Wt, vt, _, _, g, _, f_teacher in monte_carlo:
        loss = 0.5 * (g[s] @ v - f_teacher[t]) ** 2
        _within(loss.mean(), loss.std() / np.sqrt(loss.size), _eps(W, v, Wt, vt, s, t))


@pytest.mark.parametrize("s,t", ALL_PAIRS, ids=_ids(ALL_PAIRS))
def test_population_gradients_are_the_mean_per_sample_gradient(monte_carlo, s, t):
    """E[e v_j g'(h_j) x / sqrt d] and E[e g(h_j)], within 5 standard errors per component."""
    for W, v, Wt, vt, X, X2, g, gp, f_teacher in monte_carlo:
        n, d = X.shape
        gW, gv = fq.population_gradients(W, v, Wt, vt, activation=s, teacher_activation=t)
        e = g[s] @ v - f_teacher[t]
        for j in range(W.shape[0]):
            # the sample w_b x_b of dl/dw_j: its mean and variance per component from the first
            # two moments, without forming the (n, d) samples
            w = e * v[j] * gp[s][:, j] / np.sqrt(d)
            mean = w @ X / n
            var = (w * w) @ X2 / n - mean**2
            _within(mean, np.sqrt(var / n), gW[j])
            b = e * g[s][:, j]
            _within(b.mean(), b.std() / np.sqrt(n), gv[j])


@pytest.mark.parametrize("s,t", ALL_PAIRS, ids=_ids(ALL_PAIRS))
def test_population_gradients_are_the_derivatives_of_eps_g(s, t):
    """Central finite differences of eps_g computed from the weights (the autograd check)."""
    for seed in (3, 4):
        W, v, Wt, vt = _problem(seed)
        gW, gv = fq.population_gradients(W, v, Wt, vt, activation=s, teacher_activation=t)
        step = 1e-5
        fdW = np.empty_like(W)
        for idx in np.ndindex(W.shape):
            dW = np.zeros_like(W)
            dW[idx] = step
            fdW[idx] = (_eps(W + dW, v, Wt, vt, s, t) - _eps(W - dW, v, Wt, vt, s, t)) / (2 * step)
        fdv = np.empty_like(v)
        for j in range(v.size):
            dv = np.zeros_like(v)
            dv[j] = step
            fdv[j] = (_eps(W, v + dv, Wt, vt, s, t) - _eps(W, v - dv, Wt, vt, s, t)) / (2 * step)
        scale = max(np.abs(gW).max(), np.abs(gv).max())
        np.testing.assert_allclose(gW, fdW, rtol=1e-6, atol=1e-8 * scale)
        np.testing.assert_allclose(gv, fdv, rtol=1e-6, atol=1e-8 * scale)


# ---------------------------------------------------------------------------------------------
# The exact sampler has the law of the direct kernel.
# ---------------------------------------------------------------------------------------------

# (d, K, M, batch, label noise, lr, runs, times): d = 8 (far from the ODE), mini-batches with
# label noise, and d = 100
LAW_CASES = {
    "d8": (8, 2, 2, 1, 0.0, 0.1, 2000, [0.5, 2.0, 6.0]),
    "d8-batch3-noise": (8, 2, 2, 3, 0.5, 0.15, 2000, [0.5, 2.0, 6.0]),
    "d100": (100, 2, 2, 1, 0.1, 0.2, 500, [1.0, 4.0, 10.0]),
}


def _same_law(a, b, what):
    """Two-sample KS and the difference of means (within 4 standard errors).

    Values are rounded to 12 decimals first: a ReLU unit inactive on every sample so far keeps
    its Q_jj and R_j exactly, an atom of the law that the two kernels place up to round-off
    apart (the sampler still rotates that unit's row of the factor), which KS would see.
    """
    a, b = np.round(a[np.isfinite(a)], 12), np.round(b[np.isfinite(b)], 12)
    p = stats.ks_2samp(a, b).pvalue
    z = abs(a.mean() - b.mean()) / np.sqrt(a.var() / a.size + b.var() / b.size + 1e-300)
    assert p > 1e-3, f"{what}: KS p = {p:.2e}"
    assert z < 4.0, f"{what}: means {a.mean():.6g} vs {b.mean():.6g}, {z:.1f} standard errors"


@pytest.mark.parametrize("case", list(LAW_CASES))
@pytest.mark.parametrize("s", ["relu", "erf", "linear"])
def test_sampler_and_direct_sgd_have_the_same_law(s, case):
    d, K, M, B, sigma, lr, n, times = LAW_CASES[case]
    Wt, vt = fq.make_teacher(d, M, kind="gaussian", v=np.linspace(1.0, 0.6, M), seed=3)
    W0, v0 = fq.make_student(d, K, scale=0.6, v=0.5, seed=4)
    times = np.array([0.0] + times)
    W = np.broadcast_to(W0, (n, K, d)).copy()
    V = np.broadcast_to(v0, (n, K)).copy()
    kw = dict(times=times, batch_size=B, label_noise=sigma, activation=s)
    exact = fq.simulate_sgd(W, V, Wt, vt, lr, times[-1], seeds=101, sampler="exact", **kw)
    direct = fq.simulate_sgd(W, V, Wt, vt, lr, times[-1], seeds=202, **kw)
    assert np.all(exact.status == fq.STATUS_DONE) and np.all(direct.status == fq.STATUS_DONE)
    np.testing.assert_allclose(exact.eps_g[:, 0], direct.eps_g[:, 0], rtol=1e-12)
    # the runs moved: the law is compared where it has spread
    assert np.std(direct.eps_g[:, -1]) > 1e-3 * np.mean(direct.eps_g[:, -1])
    for i in range(1, len(times)):
        tag = f"{s} {case} t={exact.t[i]:g}"
        _same_law(exact.eps_g[:, i], direct.eps_g[:, i], f"{tag} eps_g")
        _same_law(exact.Q[:, i, 0, 0], direct.Q[:, i, 0, 0], f"{tag} Q00")
        _same_law(exact.Q[:, i, 0, 1], direct.Q[:, i, 0, 1], f"{tag} Q01")
        _same_law(exact.R[:, i, 0, 0], direct.R[:, i, 0, 0], f"{tag} R00")
        _same_law(exact.R[:, i, K - 1, M - 1], direct.R[:, i, K - 1, M - 1], f"{tag} R_KM")
        _same_law(exact.v[:, i, 0], direct.v[:, i, 0], f"{tag} v0")


def test_the_law_test_sees_the_activation():
    """The same comparison rejects a ReLU sampler against an erf direct kernel (d = 8)."""
    d, K, M, B, sigma, lr, n, times = LAW_CASES["d8"]
    Wt, vt = fq.make_teacher(d, M, kind="gaussian", v=[1.0, 0.6], seed=3)
    W0, v0 = fq.make_student(d, K, scale=0.6, v=0.5, seed=4)
    W = np.broadcast_to(W0, (n, K, d)).copy()
    V = np.broadcast_to(v0, (n, K)).copy()
    times = np.array([0.0, 2.0, 6.0])
    kw = dict(times=times, teacher_activation="relu")
    a = fq.simulate_sgd(W, V, Wt, vt, lr, 6.0, seeds=1, sampler="exact", activation="relu", **kw)
    b = fq.simulate_sgd(W, V, Wt, vt, lr, 6.0, seeds=2, activation="erf", **kw)
    with pytest.raises(AssertionError, match="KS p|standard errors"):
        for i in (1, 2):
            _same_law(a.Q[:, i, 0, 0], b.Q[:, i, 0, 0], "Q00")
            _same_law(a.v[:, i, 0], b.v[:, i, 0], "v0")


# ---------------------------------------------------------------------------------------------
# Symmetries over random problems.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", ACTIVATIONS)
def test_permuting_student_units_permutes_the_dynamics(rng, s):
    """Rows of W0 with v0 permuted: Q, R, v permuted and eps_g unchanged, for SGD on the same
    explicit samples and for the flow."""
    K, M, d, steps = 4, 2, 12, 30
    for _ in range(3):
        W, v, Wt, vt = random_networks(rng, K, M, d)
        p = rng.permutation(K)
        X = rng.standard_normal((steps, 1, d))
        xi = rng.standard_normal((steps, 1))
        kw = dict(samples=(X, xi), label_noise=0.2, activation=s, teacher_activation="relu")
        runs = [
            (
                fq.simulate_sgd(W, v, Wt, vt, 0.05, steps / d, **kw),
                fq.simulate_sgd(W[p], v[p], Wt, vt, 0.05, steps / d, **kw),
            ),
            (
                fq.integrate_flow(W, v, Wt, vt, 0.1, 2.0, activation=s),
                fq.integrate_flow(W[p], v[p], Wt, vt, 0.1, 2.0, activation=s),
            ),
        ]
        for a, b in runs:
            np.testing.assert_allclose(b.eps_g, a.eps_g, rtol=1e-10)
            np.testing.assert_allclose(b.Q, a.Q[:, :, p][:, :, :, p], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(b.R, a.R[:, :, p], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(b.v, a.v[:, :, p], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("s", ACTIVATIONS)
def test_flipping_a_unit_is_a_symmetry_of_the_quadratic_network_only(rng, s):
    """w_j -> -w_j: for the even quadratic g the dynamics are unchanged (Q, R change sign in
    row and column j); for the others eps_g at t = 0 changes already."""
    K, M, d, steps = 3, 2, 12, 30
    sign = np.array([1.0, -1.0, 1.0])
    for _ in range(3):
        W, v, Wt, vt = random_networks(rng, K, M, d)
        X = rng.standard_normal((steps, 1, d))
        xi = rng.standard_normal((steps, 1))
        kw = dict(samples=(X, xi), label_noise=0.2, activation=s)
        a = fq.simulate_sgd(W, v, Wt, vt, 0.05, steps / d, **kw)
        b = fq.simulate_sgd(sign[:, None] * W, v, Wt, vt, 0.05, steps / d, **kw)
        if s == "quadratic":
            np.testing.assert_allclose(b.eps_g, a.eps_g, rtol=1e-10)
            np.testing.assert_allclose(b.v, a.v, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(b.Q, a.Q * np.outer(sign, sign), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(b.R, a.R * sign[:, None], rtol=1e-10, atol=1e-12)
        else:
            assert abs(b.eps_g[0, 0] - a.eps_g[0, 0]) > 1e-3 * a.eps_g[0, 0]


@pytest.mark.parametrize("s", ACTIVATIONS)
def test_rescaling_a_unit_leaves_eps_g_for_homogeneous_activations(rng, s):
    """w_j -> c w_j, v_j -> c^-a v_j (degree a) leaves eps_g at t = 0 unchanged, recorded by
    every kernel; erf has no such symmetry."""
    K, M, d = 3, 2, 12
    a = activation_degree(s)
    for _ in range(3):
        W, v, Wt, vt = random_networks(rng, K, M, d)
        c = rng.uniform(0.3, 3.0, K)
        W2, v2 = c[:, None] * W, v * c ** -(a or 1)
        kw = dict(times=[0.0, 0.5], activation=s, teacher_activation="linear")
        got = [
            fq.simulate_sgd(W2, v2, Wt, vt, 0.01, 0.5, **kw).eps_g[0, 0],
            fq.simulate_sgd(W2, v2, Wt, vt, 0.01, 0.5, sampler="exact", **kw).eps_g[0, 0],
            fq.simulate_gd(W2, v2, Wt, vt, 0.01, 0.5, n_samples=4, **kw).eps_g[0, 0],
            fq.integrate_flow(W2, v2, Wt, vt, 0.01, 0.5, **kw).eps_g[0, 0],
        ]
        eps = _eps(W, v, Wt, vt, s, "linear")
        if a is None:
            assert all(abs(x - eps) > 1e-3 * eps for x in got)
        else:
            np.testing.assert_allclose(got, eps, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Conservation laws of the flow.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", ["relu", "linear", "quadratic", "erf"])
def test_flow_conserves_q_minus_a_v_squared_for_homogeneous_activations(rng, s):
    """C_j = Q_jj - a v_j^2 (a = degree) is conserved by the flow with a trained second layer
    (to RK4 accuracy); erf, not homogeneous, conserves no such quantity."""
    W, v, Wt, vt = random_networks(rng, 3, 3, 30)
    res = fq.integrate_flow(W, v, Wt, vt, 0.2, 20.0, dt=0.01, activation=s)
    assert np.all(res.status == fq.STATUS_DONE)
    Qjj = np.einsum("rtjj->rtj", res.Q)[0]
    a = activation_degree(s)
    C = Qjj - (a or 1) * res.v[0] ** 2
    drift = np.abs(C - C[0]).max() / np.abs(C[0]).max()
    # the dynamics moved: Q and v changed by O(1)
    assert np.abs(res.v[0, -1] - res.v[0, 0]).max() > 0.05
    assert res.eps_g[0, -1] < 0.5 * res.eps_g[0, 0]
    if a is None:
        assert drift > 1e-3
    else:
        assert drift < 1e-8


# ---------------------------------------------------------------------------------------------
# The API: names, attributes, bad input, the registry's runs.
# ---------------------------------------------------------------------------------------------


def _call(method, **kw):
    Wt, vt = fq.make_teacher(10, 1, seed=1)
    W0, v0 = fq.make_student(10, 1, seed=2)
    if method == "sgd":
        return fq.simulate_sgd(W0, v0, Wt, vt, 0.1, 0.5, **kw)
    if method == "gd":
        return fq.simulate_gd(W0, v0, Wt, vt, 0.1, 0.5, n_samples=5, **kw)
    return fq.integrate_flow(W0, v0, Wt, vt, 0.1, 0.5, **kw)


@pytest.mark.parametrize("method", ["sgd", "gd", "flow"])
def test_the_names_are_recorded_and_checked_before_anything_runs(method):
    res = _call(method)
    assert (res.attrs["activation"], res.attrs["teacher_activation"]) == ("quadratic",) * 2
    res = _call(method, activation="erf", teacher_activation="same")
    assert (res.attrs["activation"], res.attrs["teacher_activation"]) == ("erf", "erf")
    res = _call(method, activation="relu", teacher_activation="linear")
    assert (res.attrs["activation"], res.attrs["teacher_activation"]) == ("relu", "linear")
    with pytest.raises(InputError, match="^activation must be one of quadratic, linear, relu"):
        _call(method, activation="tanh")
    with pytest.raises(InputError, match="^teacher_activation must be one of .*got 'x'"):
        _call(method, teacher_activation="x")
    # collected with the other problems of the call, before any kernel runs
    with pytest.raises(InputError, match="2 problems:(.|\n)*activation(.|\n)*max_error"):
        _call(method, activation=2, max_error=-1.0)


@pytest.mark.parametrize("method", ["sgd", "gd", "flow"])
def test_the_registry_runs_pass_the_activations(method):
    values = dict(method=method, d=12, K=2, M=2, t_max=0.5, n_runs=2, n_times=3)
    values.update(activation="relu", teacher_activation="erf", n_samples=6 if method == "gd" else 0)
    res = config.run(config.make_config(values))
    assert (res.attrs["activation"], res.attrs["teacher_activation"]) == ("relu", "erf")
    Q, R, T = res.Q[:, 0], res.R[:, 0], res.T
    for r in range(2):
        want = fq.generalization_error(
            Q[r],
            R[r],
            T[r],
            res.v[r, 0],
            res.v_teacher[r],
            activation="relu",
            teacher_activation="erf",
        )
        np.testing.assert_allclose(res.eps_g[r, 0], want, rtol=1e-12)
    same = config.run(config.make_config(dict(values, teacher_activation="same")))
    assert same.attrs["teacher_activation"] == "relu"
