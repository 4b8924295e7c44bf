"""SGD, GD and flow kernels against the slow references, step by step, and their contracts."""

import naive
import numpy as np
import pytest
from conftest import random_networks

import fastquad as fq
from fastquad.rng import randbelow, run_states


def _every_step(n, d):
    return np.arange(n + 1) / d


@pytest.mark.parametrize("B,train_v,sigma", [(1, True, 0.0), (1, False, 0.3), (3, True, 0.5)])
def test_sgd_matches_reference_step_by_step(rng, B, train_v, sigma):
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
    )
    assert np.all(res.status == fq.STATUS_DONE)
    for r in range(2):
        Ws, vs = naive.sgd(W[r], v[r], Wt, vt, X[r], xi[r], lr, sigma, train_v)
        np.testing.assert_allclose(res.W[r], Ws[-1], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(res.v_final[r], vs[-1], rtol=1e-12, atol=1e-12)
        ref_eps = [naive.generalization_error(a, b, Wt, vt) for a, b in zip(Ws, vs)]
        np.testing.assert_allclose(res.eps_g[r], ref_eps, rtol=1e-11)
        ref_Q = [naive.order_parameters(a, Wt)[0] for a in Ws]
        np.testing.assert_allclose(res.Q[r], ref_Q, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(res.v[r], vs, rtol=1e-12, atol=1e-13)
        if not train_v:
            np.testing.assert_array_equal(res.v[r], np.broadcast_to(v[r], res.v[r].shape))


def test_full_batch_gd_matches_reference(rng):
    K, M, d, n, steps, lr, sigma = 2, 3, 12, 40, 30, 0.1, 0.2
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
        times=_every_step(steps, d),
        label_noise=sigma,
        data=(X, xi),
    )
    Ws, vs = naive.sgd(
        W, v, Wt, vt, np.broadcast_to(X, (steps, n, d)), np.broadcast_to(xi, (steps, n)), lr, sigma
    )
    np.testing.assert_allclose(res.W[0], Ws[-1], rtol=1e-12, atol=1e-12)
    ref_train = [naive.train_error(a, b, Wt, vt, X, sigma * xi) for a, b in zip(Ws, vs)]
    np.testing.assert_allclose(res.train_error[0], ref_train, rtol=1e-11)
    ref_eps = [naive.generalization_error(a, b, Wt, vt) for a, b in zip(Ws, vs)]
    np.testing.assert_allclose(res.eps_g[0], ref_eps, rtol=1e-11)


def test_minibatch_gd_matches_reference_with_the_same_shuffles(rng):
    """Multi-pass SGD on a fixed dataset: epochs reshuffled by the run's stream (Fisher-Yates)."""
    K, M, d, n, B, steps, lr, seed = 2, 2, 10, 23, 5, 13, 0.05, 7
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
        batch_size=B,
        seeds=seed,
        times=_every_step(steps, d),
        data=(X, xi),
    )
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
    Xs = np.array([X[b] for b in batches])
    xis = np.array([xi[b] for b in batches])
    Ws, vs = naive.sgd(W, v, Wt, vt, Xs, xis, lr, 0.0)
    np.testing.assert_allclose(res.W[0], Ws[-1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.v[0], vs, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("train_v", [True, False])
def test_flow_matches_numpy_rk4(rng, train_v):
    K, M, d, lr, dt, n = 3, 2, 9, 0.2, 0.05, 20
    W, v, Wt, vt = random_networks(rng, K, M, d)
    v = np.abs(v)
    res = fq.integrate_flow(
        W, v, Wt, vt, lr, n * dt, dt=dt, times=np.arange(n + 1) * dt, train_second_layer=train_v
    )
    y = np.concatenate([W.ravel(), v])

    def f(y):
        dW, dv = naive.flow_rhs(y[: K * d].reshape(K, d), y[K * d :], Wt, vt, lr, train_v)
        return np.concatenate([dW.ravel(), dv])

    for _ in range(n):
        y = naive.rk4(f, y, dt)
    np.testing.assert_allclose(res.W[0], y[: K * d].reshape(K, d), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(res.v_final[0], y[K * d :], rtol=1e-11, atol=1e-12)


def test_flow_conserves_q_minus_two_v_squared(rng):
    """C_j = Q_jj - 2 v_j^2 is exactly conserved by the eta^1 flow (RK4 error only)."""
    W, v, Wt, vt = random_networks(rng, 3, 3, 30)
    W *= 0.5
    res = fq.integrate_flow(W, v, Wt, vt, 0.1, 40.0, dt=0.01)
    C = res.conserved[0]
    assert np.all(res.status == fq.STATUS_DONE)
    assert np.abs(C - C[0]).max() < 1e-9
    # it is a real constraint: Q and v themselves moved by O(1)
    assert np.abs(res.v[0, -1] - res.v[0, 0]).max() > 0.05
    # and the loss went down
    assert res.eps_g[0, -1] < 0.5 * res.eps_g[0, 0]


def test_flow_is_the_mean_of_sgd_over_one_step(rng):
    """The flow's velocity equals -lr d E[per-sample gradient] (finite d, exact)."""
    K, M, d = 2, 2, 6
    W, v, Wt, vt = random_networks(rng, K, M, d)
    dW, dv = naive.flow_rhs(W, v, Wt, vt, 0.3)
    gW, gv = fq.population_gradients(W, v, Wt, vt)
    np.testing.assert_allclose(dW, -0.3 * d * gW, rtol=1e-12)
    np.testing.assert_allclose(dv, -0.3 * gv, rtol=1e-12)


def test_sgd_run_is_identical_alone_in_any_batch_and_thread_count(rng):
    K, M, d = 2, 2, 50
    W, v, Wt, vt = random_networks(rng, K, M, d, runs=6)
    W *= 0.3
    lr = np.array([0.05, 0.1, 0.02, 0.08, 0.1, 0.03])
    kw = dict(times=fq.log_times(4.0, 30, 0.02), label_noise=0.1)
    full = fq.simulate_sgd(W, v, Wt, vt, lr, 4.0, seeds=3, num_threads=2, **kw)
    one = fq.simulate_sgd(W, v, Wt, vt, lr, 4.0, seeds=3, num_threads=1, **kw)
    np.testing.assert_array_equal(full.eps_g, one.eps_g)
    np.testing.assert_array_equal(full.W, one.W)
    # run 4 alone, by its key (seed 3, run id 4)
    alone = fq.simulate_sgd(W[4], v[4], Wt, vt, lr[4], 4.0, seeds=3, run_ids=[4], **kw)
    np.testing.assert_array_equal(alone.eps_g[0], full.eps_g[4])
    np.testing.assert_array_equal(alone.Q[0], full.Q[4])
    # a differently composed batch: runs 5, 1 in reverse order
    sub = fq.simulate_sgd(
        W[[5, 1]], v[[5, 1]], Wt, vt, lr[[5, 1]], 4.0, seeds=3, run_ids=[5, 1], **kw
    )
    np.testing.assert_array_equal(sub.eps_g, full.eps_g[[5, 1]])
    # different keys really give different runs
    assert not np.array_equal(full.eps_g[1, -1], full.eps_g[4, -1])


def test_gd_run_is_identical_alone_and_in_a_batch(rng):
    W, v, Wt, vt = random_networks(rng, 2, 2, 20, runs=3)
    kw = dict(n_samples=50, batch_size=10, times=fq.log_times(3.0, 10, 0.05))
    full = fq.simulate_gd(W, v, Wt, vt, 0.1, 3.0, seeds=[4, 5, 6], **kw)
    alone = fq.simulate_gd(W[2], v[2], Wt, vt, 0.1, 3.0, seeds=6, **kw)
    np.testing.assert_array_equal(alone.train_error[0], full.train_error[2])
    np.testing.assert_array_equal(alone.W[0], full.W[2])


def test_divergent_run_is_flagged_and_others_unaffected(rng):
    K, M, d = 2, 2, 40
    W, v, Wt, vt = random_networks(rng, K, M, d, runs=3)
    lr = np.array([0.05, 50.0, 0.05])
    times = fq.log_times(5.0, 20, 0.05)
    res = fq.simulate_sgd(W, v, Wt, vt, lr, 5.0, seeds=1, times=times)
    assert list(res.status) == [fq.STATUS_DONE, fq.STATUS_DIVERGED, fq.STATUS_DONE]
    assert 0 < res.t_stop[1] <= 5.0 and np.isnan(res.t_stop[[0, 2]]).all()
    after = res.t > res.t_stop[1]
    assert np.isnan(res.eps_g[1, after]).all() and np.isnan(res.Q[1, after]).all()
    assert np.isfinite(res.eps_g[[0, 2]]).all()
    solo = fq.simulate_sgd(W[2], v[2], Wt, vt, 0.05, 5.0, seeds=1, run_ids=[2], times=times)
    np.testing.assert_array_equal(solo.eps_g[0], res.eps_g[2])
    mean, left_out = res.mean_eps_g()
    assert left_out == 1 and np.isfinite(mean).all()


def test_divergence_by_loss_bound_in_flow_and_gd(rng):
    W, v, Wt, vt = random_networks(rng, 2, 2, 10)
    flow = fq.integrate_flow(W, v, Wt, vt, 1.0, 50.0, max_error=1e-3)
    assert flow.status[0] == fq.STATUS_DIVERGED and flow.t_stop[0] == 0.0
    gd = fq.simulate_gd(W, v, Wt, vt, 30.0, 5.0, n_samples=30)
    assert gd.status[0] == fq.STATUS_DIVERGED and np.isfinite(gd.t_stop[0])


def test_sgd_learns_the_teacher():
    """Physics sanity: with a matched student, online SGD drives eps_g down by orders."""
    d, K = 200, 2
    Wt, vt = fq.make_teacher(d, K, v=[1.0, 0.6], seed=1)
    W0, v0 = fq.make_student(d, K, scale=0.3, v=0.8, seed=2)
    res = fq.simulate_sgd(W0, v0, Wt, vt, 0.05, 60.0, seeds=[1, 2, 3])
    assert np.all(res.status == fq.STATUS_DONE)
    assert np.all(res.eps_g[:, -1] < 1e-2 * res.eps_g[:, 0])


BAD_INPUTS = [
    (dict(lr=-0.1), "lr"),
    (dict(lr=np.nan), "lr"),
    (dict(t_max=0.0), "t_max"),
    (dict(t_max=0.001), "t_max must be >= 1/d"),
    (dict(batch_size=0), "batch_size"),
    (dict(label_noise=-1.0), "label_noise"),
    (dict(seeds=-1), "seeds"),
    (dict(seeds=[1.5, 2.0]), "seeds"),
    (dict(times=[0.0, 2.0, 1.0]), "times must be strictly increasing"),
    (dict(times=[0.0, 100.0]), "times must lie in"),
    (dict(train_second_layer="yes"), "train_second_layer"),
    (dict(max_error=0.0), "max_error"),
    (dict(num_threads=0), "num_threads"),
    (dict(W0=np.full((2, 10), np.inf)), "W0"),
    (dict(v0=np.ones(3)), "v0 must have K=2"),
    (dict(W_teacher=np.ones((2, 9))), "W_teacher must have d=10"),
    (dict(lr=[0.1, 0.2, 0.3], seeds=[1, 2]), "disagree"),
]


@pytest.mark.parametrize("change,match", BAD_INPUTS)
def test_sgd_validation_names_the_parameter(change, match):
    args = dict(
        W0=np.ones((2, 10)),
        v0=np.ones(2),
        W_teacher=np.ones((2, 10)),
        v_teacher=np.ones(2),
        lr=0.1,
        t_max=1.0,
    )
    args.update(change)
    pos = [args.pop(k) for k in ("W0", "v0", "W_teacher", "v_teacher", "lr", "t_max")]
    with pytest.raises(ValueError, match=match):
        fq.simulate_sgd(*pos, **args)


def test_gd_and_flow_validation():
    W, v = np.ones((2, 10)), np.ones(2)
    with pytest.raises(ValueError, match="n_samples"):
        fq.simulate_gd(W, v, W, v, 0.1, 1.0, n_samples=0)
    with pytest.raises(ValueError, match="batch_size"):
        fq.simulate_gd(W, v, W, v, 0.1, 1.0, n_samples=10, batch_size=11)
    with pytest.raises(ValueError, match="dt"):
        fq.integrate_flow(W, v, W, v, 0.1, 1.0, dt=-1.0)
    with pytest.raises(ValueError, match="samples"):
        fq.simulate_sgd(W, v, W, v, 0.1, 1.0, samples=np.ones((10, 1, 10)))
    with pytest.raises(ValueError, match="inputs"):
        fq.simulate_sgd(W, v, W, v, 0.1, 1.0, samples=(np.ones((3, 1, 10)), np.ones((3, 1))))


def test_model_generators():
    Wt, vt = fq.make_teacher(50, 3, kind="orthonormal", v=[1.0, 0.5, 0.2], seed=4)
    T = Wt @ Wt.T / 50
    np.testing.assert_allclose(T, np.eye(3), atol=1e-12)
    Wg, _ = fq.make_teacher(50, 3, kind="gaussian", seed=4)
    assert not np.allclose(Wg @ Wg.T / 50, np.eye(3), atol=1e-3)
    W0, v0 = fq.make_student(1000, 2, scale=1e-3, v=-1.0, seed=1)
    assert W0.std() == pytest.approx(1e-3, rel=0.05) and np.all(v0 == -1.0)
    same, _ = fq.make_student(1000, 2, scale=1e-3, seed=1)
    np.testing.assert_array_equal(same, W0)
    with pytest.raises(ValueError, match="M <= d"):
        fq.make_teacher(2, 3)
    with pytest.raises(ValueError, match="teacher kind"):
        fq.make_teacher(5, 2, kind="random")
    with pytest.raises(ValueError, match="init_scale"):
        fq.make_student(5, 2, scale=-1.0)


def test_times_finer_than_one_step_repeat_the_state(rng):
    """Every requested time gets a record; times within one step share the state."""
    W, v, Wt, vt = random_networks(rng, 2, 2, 10)
    times = np.array([0.0, 0.01, 0.04, 0.1, 0.12, 0.5])
    res = fq.simulate_sgd(W, v, Wt, vt, 0.05, 0.5, times=times)
    np.testing.assert_array_equal(res.t, [0.0, 0.0, 0.0, 0.1, 0.1, 0.5])
    assert res.eps_g[0, 0] == res.eps_g[0, 1] == res.eps_g[0, 2]
    assert res.eps_g[0, 3] == res.eps_g[0, 4] != res.eps_g[0, 5]
    gd = fq.simulate_gd(W, v, Wt, vt, 0.05, 0.5, n_samples=20, times=times)
    assert gd.train_error[0, 3] == gd.train_error[0, 4]


def test_float32_mode_follows_the_float64_reference(rng):
    """float32: same explicit samples, reference in float64; agreement to float32 round-off."""
    K, M, d, steps, lr = 3, 2, 40, 60, 0.05
    W, v, Wt, vt = random_networks(rng, K, M, d)
    X = rng.standard_normal((steps, 2, d)).astype(np.float32)
    xi = rng.standard_normal((steps, 2)).astype(np.float32)
    times = np.arange(steps + 1) / d
    res = fq.simulate_sgd(
        W,
        v,
        Wt,
        vt,
        lr,
        steps / d,
        times=times,
        batch_size=2,
        label_noise=0.2,
        samples=(X, xi),
        dtype="float32",
    )
    assert res.W.dtype == np.float32 and res.eps_g.dtype == np.float64
    W32, v32, Wt32, vt32 = (a.astype(np.float32).astype(np.float64) for a in (W, v, Wt, vt))
    Ws, vs = naive.sgd(W32, v32, Wt32, vt32, X.astype(np.float64), xi.astype(np.float64), lr, 0.2)
    np.testing.assert_allclose(res.W[0], Ws[-1], rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(res.v[0], vs, rtol=2e-4, atol=2e-5)
    # and it is really float32 arithmetic: not equal to the float64 result to 1e-10
    assert np.abs(res.W[0] - Ws[-1]).max() > 1e-9


def test_float32_streams_are_reproducible_and_learn():
    d, K = 200, 2
    Wt, vt = fq.make_teacher(d, K, v=[1.0, 0.6], seed=1)
    W0, v0 = fq.make_student(d, K, scale=0.3, v=0.8, seed=2)
    kw = dict(seeds=[1, 2, 3], times=fq.log_times(150.0, 20, 0.1), dtype="float32")
    a = fq.simulate_sgd(W0, v0, Wt, vt, 0.05, 150.0, num_threads=1, **kw)
    b = fq.simulate_sgd(np.stack([W0] * 3), v0, Wt, vt, 0.05, 150.0, num_threads=2, **kw)
    np.testing.assert_array_equal(a.eps_g, b.eps_g)
    assert np.all(a.eps_g[:, -1] < 1e-2 * a.eps_g[:, 0])
    with pytest.raises(ValueError, match="dtype"):
        fq.simulate_sgd(W0, v0, Wt, vt, 0.05, 1.0, dtype="float16")


def test_exact_sampler_through_simulate_sgd_agrees_with_direct_and_validates():
    """The wiring of sampler='exact' (the kernel's own law is tested in test_gram.py)."""
    d = 300
    Wt, vt = fq.make_teacher(d, 2, v=[1.0, 0.5], seed=1)
    G, _ = fq.make_student(d, 2, scale=1.0, seed=2)
    W0, v0 = 0.7 * Wt + 0.7 * G, np.array([0.6, 0.3])
    times = np.array([0.0, 0.001, 1.0, 3.0, 3.001, 6.0])  # includes times within one step
    kw = dict(seeds=np.arange(48), times=times, label_noise=0.3)
    ex = fq.simulate_sgd(W0, v0, Wt, vt, 0.1, 6.0, sampler="exact", **kw)
    di = fq.simulate_sgd(W0, v0, Wt, vt, 0.1, 6.0, sampler="direct", **kw)
    assert ex.params["sampler"] == "exact" and ex.W is None and ex.eps_g.shape == di.eps_g.shape
    np.testing.assert_allclose(ex.eps_g[:, 0], di.eps_g[:, 0], rtol=1e-12)
    assert ex.eps_g[0, 3] == ex.eps_g[0, 4]
    se = np.sqrt(ex.eps_g.var(0, ddof=1) / 48 + di.eps_g.var(0, ddof=1) / 48)[1:]
    assert np.all(np.abs(ex.eps_g.mean(0) - di.eps_g.mean(0))[1:] < 4 * se + 1e-12)
    np.testing.assert_allclose(ex.T, di.T, rtol=1e-12)
    auto = fq.simulate_sgd(W0, v0, Wt, vt, 0.1, 6.0, sampler="auto", **kw)
    np.testing.assert_array_equal(auto.eps_g, ex.eps_g)
    small = fq.simulate_sgd(W0[:, :3], v0, Wt[:, :3], vt, 0.1, 2.0, sampler="auto", seeds=1)
    assert small.W is not None  # d < K + M: falls back to direct
    with pytest.raises(ValueError, match="sampler must be"):
        fq.simulate_sgd(W0, v0, Wt, vt, 0.1, 1.0, sampler="fast")
    with pytest.raises(ValueError, match="d >= K \\+ M"):
        fq.simulate_sgd(W0[:, :3], v0, Wt[:, :3], vt, 0.1, 1.0, sampler="exact")
    with pytest.raises(ValueError, match="samples"):
        fq.simulate_sgd(
            W0,
            v0,
            Wt,
            vt,
            0.1,
            1.0,
            sampler="exact",
            samples=(np.ones((300, 1, d)), np.ones((300, 1))),
        )
