"""The exact dimension-free sampler of online SGD (fastquad.kernels.gram).

Step by step against the NumPy references of naive_gram, exact against a direct update of
explicit weights, and equal in law to the direct kernel (``fastquad.simulate_sgd``) over many
seeds, with the contracts of the batched kernels (reproducibility, divergence, records).
"""

from types import SimpleNamespace

import naive
import naive_gram
import numpy as np
import pytest
from scipy import stats

import fastquad as fq
from fastquad.activations import activation_code
from fastquad.kernels import gram
from fastquad.rng import run_states
from fastquad.threads import call_kernel
from fastquad.times import steps_for_times


def run_gram(
    W0,
    v0,
    Wt,
    vt,
    lr,
    t_max,
    *,
    seed=0,
    run_ids=None,
    times=None,
    batch_size=1,
    label_noise=0.0,
    train_second_layer=True,
    max_error=1e6,
    check_every=None,
    num_threads=None,
    activation="quadratic",
    teacher_activation=None,
):
    """The sampler on the arrays ``simulate_sgd`` would prepare, with the final factor.

    W0 (n, K, d) or (K, d), v0 (n, K) or (K,), Wt (M, d), vt (M,); lr and label_noise scalars
    or (n,). Run r uses the stream (seed, run_ids[r]) (default run_ids = 0..n-1).
    """
    W0 = np.asarray(W0, dtype=float)
    if W0.ndim == 2:
        W0 = W0[None]
    n, K, d = W0.shape
    M = Wt.shape[0]
    v = np.array(np.broadcast_to(v0, (n, K)), dtype=float, order="C")
    # writeable C-ordered copies: a read-only or F-ordered array is another type to Numba (a
    # second compilation of the kernel)
    vt_n = np.array(np.broadcast_to(vt, (n, M)), dtype=float, order="C")
    F = gram.initial_factor(W0, np.broadcast_to(Wt, (n, M, d)))
    times = fq.log_times(t_max, 30, max(1.0 / d, t_max * 1e-3)) if times is None else times
    steps, t = steps_for_times(times, d)
    ids = np.arange(n) if run_ids is None else np.asarray(run_ids)
    states = run_states(seed, ids)
    nr = len(steps)
    eps, Q, R = np.empty((n, nr)), np.empty((n, nr, K, K)), np.empty((n, nr, K, M))
    vo, status, stop = np.empty((n, nr, K)), np.empty(n, np.int8), np.empty(n, np.int64)
    call_kernel(
        gram.gram_sgd_batch,
        F,
        v,
        vt_n,
        K,
        d,
        np.broadcast_to(np.asarray(lr, float), (n,)).copy(),
        np.broadcast_to(np.asarray(label_noise, float), (n,)).copy(),
        train_second_layer,
        batch_size,
        steps,
        d if check_every is None else check_every,
        max_error,
        states,
        eps,
        Q,
        R,
        vo,
        status,
        stop,
        # the codes passed, as simulate_sgd passes them: the same compiled specialisation
        activation_code(activation),
        activation_code(teacher_activation or activation),
        num_threads=num_threads,
    )
    return SimpleNamespace(
        t=t, eps_g=eps, Q=Q, R=R, v=vo, status=status, stop_step=stop, F=F, v_final=v, steps=steps
    )


def _networks(rng, K, M, d):
    W = rng.standard_normal((K, d))
    v = rng.standard_normal(K)
    Wt = rng.standard_normal((M, d))
    vt = rng.uniform(0.5, 1.5, M)
    return W, v, Wt, vt


# ---------------------------------------------------------------------------------------------
# The factor.
# ---------------------------------------------------------------------------------------------


def test_initial_factor_is_a_triangular_factor_of_the_gram_matrix(rng):
    K, M, d, n = 3, 2, 40, 4
    W = rng.standard_normal((n, K, d))
    Wt = rng.standard_normal((n, M, d))
    F = gram.initial_factor(W, Wt)
    assert F.shape == (n, K + M, K + M) and F.flags.c_contiguous
    for i in range(n):
        A = naive_gram.stacked(W[i], Wt[i])
        np.testing.assert_allclose(F[i] @ F[i].T, A @ A.T, rtol=1e-13, atol=1e-13)
        assert np.all(np.triu(F[i], 1) == 0.0) and np.all(np.diag(F[i]) >= 0.0)
        # teacher first: the teacher block is the Cholesky factor of T
        T = Wt[i] @ Wt[i].T / d
        np.testing.assert_allclose(F[i, :M, :M], np.linalg.cholesky(T), rtol=1e-12)
        np.testing.assert_allclose(F[i], gram.initial_factor(W[i], Wt[i]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="d >= K \\+ M"):
        gram.initial_factor(W[0, :, :4], Wt[0, :, :4])


def test_order_parameters_from_the_factor(rng):
    K, M, d = 3, 2, 30
    W, _, Wt, _ = _networks(rng, K, M, d)
    F = gram.initial_factor(W, Wt)
    Q, R, T = np.empty((K, K)), np.empty((K, M)), np.empty((M, M))
    gram.factor_order_params(F, M, Q, R, T)
    Qn, Rn, Tn = naive.order_parameters(W, Wt)
    np.testing.assert_allclose(Q, Qn, rtol=1e-13)
    np.testing.assert_allclose(R, Rn, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(T, Tn, rtol=1e-13)
    assert np.array_equal(Q, Q.T)


# ---------------------------------------------------------------------------------------------
# One step: against the dense reference and against a direct update of explicit weights.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("B,train_v,sigma", [(1, True, 0.0), (1, False, 0.3), (3, True, 0.5)])
def test_steps_match_the_reference(rng, B, train_v, sigma):
    """A few steps of 5 runs in lockstep (the kernel's step code) against naive_gram, step by
    step from explicit z, xi and Bartlett factors."""
    K, M, d, S, n, lr = 3, 2, 20, 6, 5, 0.2
    r = K + M
    nL = min(B, d - r)
    Fs, vs, vts = [], [], []
    for _ in range(n):
        W, v, Wt, vt = _networks(rng, K, M, d)
        Fs.append(gram.initial_factor(W, Wt))
        vs.append(v)
        vts.append(vt)
    F0, v0, vt = np.array(Fs), np.array(vs), np.array(vts)
    Z = rng.standard_normal((n, S, B, r))
    XI = rng.standard_normal((n, S, B))
    L = np.array([[naive_gram.bartlett(rng, B, d - r) for _ in range(S)] for _ in range(n)])
    assert L.shape == (n, S, B, nL)
    lrs = np.full(n, lr)
    sig = np.full(n, sigma)
    for steps in range(1, S + 1):
        F, v = F0.copy(), v0.copy()
        n_done = gram.gram_steps(
            F, v, vt, K, d, lrs, sig, train_v, Z[:, :steps], XI[:, :steps], L[:, :steps]
        )
        assert np.all(n_done == steps)
        for i in range(n):
            Fr, vr = F0[i], v0[i]
            for s in range(steps):
                Fr, vr = naive_gram.step_factor(
                    Fr, vr, vt[i], K, d, lr, sigma, train_v, Z[i, s], XI[i, s], L[i, s]
                )
            np.testing.assert_allclose(F[i], Fr, rtol=1e-11, atol=1e-13)
            np.testing.assert_allclose(v[i], vr, rtol=1e-13, atol=1e-15)
            assert np.all(np.triu(F[i], 1) == 0.0) and np.all(np.diag(F[i]) >= 0.0)
            # teacher rows first: the teacher block is never written
            assert np.array_equal(F[i, :M, :M], F0[i, :M, :M])
            assert np.array_equal(F[i, :M, M:], F0[i, :M, M:])
            if not train_v:
                assert np.array_equal(v[i], v0[i])
    # a run is the same bits alone as in lockstep with others
    F1, v1 = F0[3:4].copy(), v0[3:4].copy()
    gram.gram_steps(F1, v1, vt[3:4], K, d, lrs[:1], sig[:1], train_v, Z[3:4], XI[3:4], L[3:4])
    assert np.array_equal(F1[0], F[3]) and np.array_equal(v1[0], v[3])


@pytest.mark.parametrize(
    "K,M,d,B", [(2, 2, 9, 1), (3, 2, 12, 3), (2, 3, 6, 3), (2, 2, 5, 3), (2, 2, 4, 1), (1, 1, 2, 2)]
)
def test_step_is_exact_for_explicit_inputs(rng, K, M, d, B):
    """Direct SGD on explicit weights and inputs, then the Gram matrix, equals F'F'^T from
    z = V^T x and the orthogonal parts (to round-off). d - r < B and d = r included: the
    Wishart matrix of the orthogonal parts is then singular (or empty)."""
    lr, sigma = 0.3, 0.4
    for train_v in (True, False):
        W, v, Wt, vt = _networks(rng, K, M, d)
        F, V = naive_gram.factor_and_basis(W, Wt)
        np.testing.assert_allclose(F, gram.initial_factor(W, Wt), rtol=1e-12, atol=1e-14)
        X = rng.standard_normal((B, d))
        xi = rng.standard_normal(B)
        z, L = naive_gram.split_inputs(X, V)
        Ws, vs = naive.sgd(W, v, Wt, vt, X[None], xi[None], lr, sigma, train_v)
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
            train_v,
            z[None, None],
            xi[None, None],
            L[None, None],
        )
        scale = np.abs(A1 @ A1.T).max()
        np.testing.assert_allclose(Fk[0] @ Fk[0].T, A1 @ A1.T, rtol=0, atol=1e-13 * scale)
        np.testing.assert_allclose(vk[0], vs[-1], rtol=1e-13, atol=1e-15)
        # the NumPy reference says the same
        g_ref, v_ref, _ = naive_gram.step_gram(F, v, vt, K, d, lr, sigma, train_v, z, xi, L)
        np.testing.assert_allclose(g_ref, A1 @ A1.T, rtol=0, atol=1e-13 * scale)


def test_non_finite_error_stops_a_lane_only(rng):
    K, M, d, n = 2, 2, 10, 3
    r = K + M
    F, v = [], []
    for _ in range(n):
        W, vv, Wt, vt = _networks(rng, K, M, d)
        F.append(gram.initial_factor(W, Wt))
        v.append(vv)
    F, v = np.array(F), np.array(v)
    vt = np.ones((n, M))
    Z = rng.standard_normal((n, 5, 1, r))
    Z[1, 2, 0, 0] = np.inf  # run 1 sees an infinite teacher pre-activation at step 3
    n_done = gram.gram_steps(
        F,
        v,
        vt,
        K,
        d,
        np.full(n, 0.1),
        np.zeros(n),
        True,
        Z,
        np.zeros((n, 5, 1)),
        np.ones((n, 5, 1, 1)),
    )
    assert list(n_done) == [5, 3, 5]
    assert not np.isfinite(F[1]).all() and np.isfinite(F[[0, 2]]).all()


# ---------------------------------------------------------------------------------------------
# Chi-square and Gamma variates.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 50, 100_000])
def test_chi2_sampler_has_the_chi2_law(k):
    n = 40_000
    out = np.empty(n)
    gram.chi2_fill(run_states(11, np.array([k]))[0], k, out)
    assert np.all(out >= 0.0) and np.isfinite(out).all()
    se = np.sqrt(2.0 * k / n)
    assert abs(out.mean() - k) < 4.0 * se
    # variance 2k; the standard error of the sample variance is about sqrt((8k + 48k) k / n)
    assert abs(out.var() - 2.0 * k) < 4.0 * np.sqrt((2 * (2 * k) ** 2 + 48 * k) / n)
    assert stats.kstest(out, stats.chi2(k).cdf).pvalue > 1e-3


@pytest.mark.parametrize("shape", [0.5, 1.0, 7.5])
def test_gamma_draw_has_the_gamma_law(shape):
    state = run_states(5, np.array([0]))[0]
    x = np.array([gram.gamma_draw(state, shape) for _ in range(20_000)])
    assert stats.kstest(x, stats.gamma(shape).cdf).pvalue > 1e-3


# ---------------------------------------------------------------------------------------------
# Equal in law to the direct kernel.
# ---------------------------------------------------------------------------------------------

# (d, K, M, batch, label noise, train v, lr, runs, times): d = 8 (far from the ODE), d - r < B
# (a singular Wishart matrix), d = r (no orthogonal part at all), d = 100, mini-batches, label
# noise and a frozen second layer.
LAW_CASES = {
    "d8": (8, 2, 2, 1, 0.0, True, 0.04, 2000, [0.5, 2.0, 6.0]),
    "d8-batch3-noise": (8, 2, 2, 3, 0.5, True, 0.06, 2000, [0.5, 2.0, 6.0]),
    "d8-frozen-v": (8, 2, 2, 1, 0.3, False, 0.04, 2000, [0.5, 2.0, 6.0]),
    "d5-batch3": (5, 2, 2, 3, 0.0, True, 0.05, 2000, [0.6, 2.0, 6.0]),
    "d4-equals-r": (4, 2, 2, 1, 0.1, True, 0.02, 2000, [0.5, 2.0, 6.0]),
    "d100-K3M1-batch3": (100, 3, 1, 3, 0.2, True, 0.08, 500, [1.0, 4.0, 10.0]),
    "d100": (100, 2, 2, 1, 0.0, True, 0.08, 500, [1.0, 4.0, 10.0]),
}


def _same_law(a, b, what):
    """Two-sample KS and the difference of means (within 4 standard errors), over the runs that
    have not diverged (NaN records)."""
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    p = stats.ks_2samp(a, b).pvalue
    z = abs(a.mean() - b.mean()) / np.sqrt(a.var() / a.size + b.var() / b.size + 1e-300)
    assert p > 1e-3, f"{what}: KS p = {p:.2e}"
    assert z < 4.0, f"{what}: means {a.mean():.6g} vs {b.mean():.6g}, {z:.1f} standard errors"


@pytest.mark.parametrize("case", list(LAW_CASES))
def test_sampler_and_direct_sgd_have_the_same_law(case):
    d, K, M, B, sigma, train_v, lr, n, times = LAW_CASES[case]
    Wt, vt = fq.make_teacher(d, M, kind="gaussian", v=np.linspace(1.0, 0.6, M), seed=3)
    W0, v0 = fq.make_student(d, K, scale=0.6, v=0.5, seed=4)
    times = np.array([0.0] + times)
    kw = dict(times=times, batch_size=B, label_noise=sigma, train_second_layer=train_v)
    W = np.broadcast_to(W0, (n, K, d)).copy()
    V = np.broadcast_to(v0, (n, K)).copy()
    ours = run_gram(W, V, Wt, vt, lr, times[-1], seed=101, **kw)
    direct = fq.simulate_sgd(W, V, Wt, vt, lr, times[-1], seeds=202, **kw)
    np.testing.assert_array_equal(ours.t, direct.t)
    # divergence is rare here (heavy-tailed gradients at small d) and equally so in both
    n_ours = np.sum(ours.status != fq.STATUS_DONE)
    n_direct = np.sum(direct.status != fq.STATUS_DONE)
    assert n_ours + n_direct <= 0.01 * n
    assert abs(n_ours - n_direct) <= 4.0 * np.sqrt(n_ours + n_direct + 1.0)
    np.testing.assert_allclose(ours.eps_g[:, 0], direct.eps_g[:, 0], rtol=1e-12)
    np.testing.assert_allclose(ours.Q[:, 0], direct.Q[:, 0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours.R[:, 0], direct.R[:, 0], rtol=1e-12, atol=1e-14)
    for i in range(1, len(times)):
        tag = f"{case} t={ours.t[i]:g}"
        _same_law(ours.eps_g[:, i], direct.eps_g[:, i], f"{tag} eps_g")
        _same_law(ours.Q[:, i, 0, 0], direct.Q[:, i, 0, 0], f"{tag} Q00")
        _same_law(ours.Q[:, i, 0, 1], direct.Q[:, i, 0, 1], f"{tag} Q01")
        _same_law(ours.R[:, i, 0, 0], direct.R[:, i, 0, 0], f"{tag} R00")
        _same_law(ours.R[:, i, K - 1, M - 1], direct.R[:, i, K - 1, M - 1], f"{tag} R_KM")
        if train_v:
            _same_law(ours.v[:, i, 0], direct.v[:, i, 0], f"{tag} v0")
        else:
            assert np.all(ours.v[ours.status == fq.STATUS_DONE, i] == v0)


def test_the_law_test_has_power():
    """The comparison above sees a modest change of the dynamics: at d = 8 with 2000 runs, SGD
    with a 25 % larger learning rate is rejected."""
    d, K, M, n = 8, 2, 2, 2000
    Wt, vt = fq.make_teacher(d, M, kind="gaussian", v=[1.0, 0.6], seed=3)
    W0, v0 = fq.make_student(d, K, scale=0.6, v=0.5, seed=4)
    W = np.broadcast_to(W0, (n, K, d)).copy()
    V = np.broadcast_to(v0, (n, K)).copy()
    times = np.array([0.0, 2.0, 6.0])
    ours = run_gram(W, V, Wt, vt, 0.05, 6.0, seed=101, times=times)
    direct = fq.simulate_sgd(W, V, Wt, vt, 0.04, 6.0, seeds=202, times=times)
    with pytest.raises(AssertionError, match="KS p"):
        for i in (1, 2):
            _same_law(ours.eps_g[:, i], direct.eps_g[:, i], "eps_g")
            _same_law(ours.Q[:, i, 0, 0], direct.Q[:, i, 0, 0], "Q00")


# ---------------------------------------------------------------------------------------------
# Contracts of the batched kernel.
# ---------------------------------------------------------------------------------------------


def test_run_is_identical_alone_in_any_batch_and_thread_count(rng):
    """40 runs go in lockstep groups of 16 vector lanes; alone a run is a group of one
    (scalar code). Both give the same bits, with any thread count."""
    K, M, d, n = 2, 2, 50, 40
    W = rng.standard_normal((n, K, d)) * 0.5
    v = rng.uniform(0.3, 1.0, (n, K))
    Wt, vt = fq.make_teacher(d, M, seed=2)
    lr = rng.uniform(0.02, 0.1, n)
    kw = dict(times=fq.log_times(4.0, 25, 0.02), label_noise=0.1, batch_size=2)
    full = run_gram(W, v, Wt, vt, lr, 4.0, seed=3, num_threads=2, **kw)
    one = run_gram(W, v, Wt, vt, lr, 4.0, seed=3, num_threads=1, **kw)
    assert np.all(full.status == fq.STATUS_DONE)
    for a, b in [(full.eps_g, one.eps_g), (full.Q, one.Q), (full.F, one.F)]:
        np.testing.assert_array_equal(a, b)
    alone = run_gram(W[17], v[17], Wt, vt, lr[17], 4.0, seed=3, run_ids=[17], **kw)
    for name in ("eps_g", "Q", "R", "v", "F", "v_final"):
        np.testing.assert_array_equal(getattr(alone, name)[0], getattr(full, name)[17])
    sub = run_gram(
        W[[31, 5, 6]], v[[31, 5, 6]], Wt, vt, lr[[31, 5, 6]], 4.0, seed=3, run_ids=[31, 5, 6], **kw
    )
    np.testing.assert_array_equal(sub.eps_g, full.eps_g[[31, 5, 6]])
    np.testing.assert_array_equal(sub.F, full.F[[31, 5, 6]])
    # a longer run extends a shorter one (random numbers are drawn by whole blocks)
    short = run_gram(
        W[:3],
        v[:3],
        Wt,
        vt,
        lr[:3],
        1.0,
        seed=3,
        times=kw["times"][:12],
        label_noise=0.1,
        batch_size=2,
    )
    np.testing.assert_array_equal(short.eps_g, full.eps_g[:3, :12])
    assert not np.array_equal(full.eps_g[1, -1], full.eps_g[4, -1])


def test_teacher_block_is_exactly_constant_and_q_stays_psd(rng):
    """10^6 steps: F[:M, :M] (hence T) keeps its bits, the factor stays lower triangular with a
    non-negative diagonal, Q is exactly symmetric and positive semi-definite at every record."""
    K, M, d, n, steps = 3, 2, 400, 2, 1_000_000
    Wt, vt = fq.make_teacher(d, M, kind="gaussian", seed=5)
    W0 = rng.standard_normal((n, K, d)) * 0.4
    v0 = np.full((n, K), 0.6)
    F0 = gram.initial_factor(W0, np.broadcast_to(Wt, (n, M, d)))
    res = run_gram(
        W0, v0, Wt, vt, 0.05, steps / d, times=np.linspace(0, steps / d, 11), label_noise=0.1
    )
    assert np.all(res.status == fq.STATUS_DONE)
    assert np.array_equal(res.F[:, :M, :M], F0[:, :M, :M])
    assert np.all(res.F[:, :M, M:] == 0.0)
    assert all(np.all(np.triu(f, 1) == 0.0) and np.all(np.diag(f) >= 0.0) for f in res.F)
    assert np.array_equal(res.Q, np.swapaxes(res.Q, -1, -2))
    lam = np.linalg.eigvalsh(res.Q)
    assert lam.min() >= -1e-12 * lam.max()
    # it learnt: the run went somewhere (eps_g fell by orders of magnitude)
    assert np.all(res.eps_g[:, -1] < 1e-2 * res.eps_g[:, 0])
    # and the records are those of the final factor
    Q, R, T = naive_gram.order_parameters(res.F[0], K)
    np.testing.assert_allclose(res.Q[0, -1], Q, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(T, Wt @ Wt.T / d, rtol=1e-13)


def test_divergence_is_flagged_and_other_runs_are_unaffected(rng):
    K, M, d = 2, 2, 40
    W = rng.standard_normal((3, K, d))
    v = rng.standard_normal((3, K))
    Wt, vt = fq.make_teacher(d, M, seed=1)
    lr = np.array([0.05, 50.0, 0.05])
    times = fq.log_times(5.0, 20, 0.05)
    res = run_gram(W, v, Wt, vt, lr, 5.0, seed=1, times=times)
    assert list(res.status) == [fq.STATUS_DONE, fq.STATUS_DIVERGED, fq.STATUS_DONE]
    stop = res.stop_step[1]
    assert 0 < stop <= res.steps[-1] and list(res.stop_step[[0, 2]]) == [res.steps[-1]] * 2
    after = res.steps >= stop
    assert np.isnan(res.eps_g[1, after]).all() and np.isnan(res.Q[1, after]).all()
    assert np.isfinite(res.eps_g[1, ~after]).all()
    assert np.isfinite(res.eps_g[[0, 2]]).all()
    solo = run_gram(W[2], v[2], Wt, vt, 0.05, 5.0, seed=1, run_ids=[2], times=times)
    np.testing.assert_array_equal(solo.eps_g[0], res.eps_g[2])


@pytest.mark.parametrize("check_every", [7, 1000])
def test_loss_bound_stops_at_the_same_step_as_the_direct_kernel(rng, check_every):
    """With eps_g above max_error from the start, both kernels stop at the first check or
    record after step 0 and blank the same records."""
    K, M, d = 2, 2, 30
    W, v, Wt, vt = _networks(rng, K, M, d)
    times = np.array([0.0, 0.5, 1.0, 2.0])
    eps0 = naive.generalization_error(W, v, Wt, vt)
    kw = dict(times=times, max_error=0.5 * eps0, check_every=check_every)
    ours = run_gram(W, v, Wt, vt, 1e-4, 2.0, **kw)
    direct = fq.simulate_sgd(W, v, Wt, vt, 1e-4, 2.0, **kw)
    assert ours.status[0] == direct.status[0] == fq.STATUS_DIVERGED
    assert ours.stop_step[0] == round(direct.t_stop[0] * d) == min(check_every, 15)
    np.testing.assert_array_equal(np.isnan(ours.eps_g), np.isnan(direct.eps_g))
    np.testing.assert_allclose(ours.eps_g[0, 0], direct.eps_g[0, 0], rtol=1e-12)
