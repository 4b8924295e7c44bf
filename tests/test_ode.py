"""The order-parameter ODE: right-hand side against the naive reference, integrators against
NumPy/scipy integrations of that reference, physics facts of docs/theory.md, batch
semantics, divergence handling and input validation."""

import naive
import numba
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from fastquad.kernels import ode as kode
from fastquad.ode import integrate_ode, ode_rhs
from fastquad.result import STATUS_DIVERGED, STATUS_DONE


def sym(X):
    return 0.5 * (X + X.T)


def random_state(rng, K, M, d=30, scale=1.0):
    """Order parameters of random Gaussian student/teacher weights (signs of v mixed)."""
    W = rng.standard_normal((K, d)) * np.sqrt(scale)
    Wt = rng.standard_normal((M, d))
    Q, R, T = naive.order_parameters(W, Wt)
    return sym(Q), R, rng.uniform(-1.2, 1.2, K), sym(T), rng.uniform(0.5, 1.5, M)


def pack(Q, R, v):
    return np.concatenate([Q.ravel(), R.ravel(), v])


def unpack(y, K, M):
    return (y[: K * K].reshape(K, K), y[K * K : K * K + K * M].reshape(K, M), y[K * K + K * M :])


def naive_flat(K, M, T, vt, lr, **kw):
    def f(y):
        Q, R, v = unpack(y, K, M)
        return pack(*naive.ode_rhs(Q, R, v, T, vt, lr, **kw))

    return f


def states(res, run=0):
    """Recorded states of one run as rows of flat vectors, shape (n_times, K*K + K*M + K)."""
    n = res.t.shape[0]
    return np.concatenate([res.Q[run].reshape(n, -1), res.R[run].reshape(n, -1), res.v[run]], 1)


def eps_numpy(Q, R, T, v, vt):
    trD = v @ np.diag(Q) - vt @ np.diag(T)
    trD2 = (
        np.sum(np.outer(v, v) * Q**2)
        - 2 * np.sum(np.outer(v, vt) * R**2)
        + np.sum(np.outer(vt, vt) * T**2)
    )
    return 0.5 * (trD**2 + 2 * trD2)


def assert_close_rel(a, b, rel):
    """Max deviation below rel times the largest magnitude (terms cancel: no per-entry rtol)."""
    scale = max(np.abs(b).max(), 1e-300)
    assert np.abs(a - b).max() <= rel * scale, (np.abs(a - b).max() / scale, rel)


# ---------------------------------------------------------------- right-hand side


@pytest.mark.parametrize("K,M", [(3, 2), (4, 4), (2, 5)])
@pytest.mark.parametrize("train_v", [True, False])
@pytest.mark.parametrize("sgd_noise", [True, False])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_rhs_matches_naive(rng, K, M, train_v, sgd_noise, batch_size):
    Q, R, v, T, vt = random_state(rng, K, M)
    lr, sigma = 0.3, 0.7
    ref = naive.ode_rhs(
        Q, R, v, T, vt, lr, sigma=sigma, train_v=train_v, sgd_noise=sgd_noise, batch_size=batch_size
    )
    got = ode_rhs(
        Q,
        R,
        v,
        T,
        vt,
        lr,
        label_noise=sigma,
        train_second_layer=train_v,
        sgd_noise=sgd_noise,
        batch_size=batch_size,
    )
    out = (np.empty((K, K)), np.empty((K, M)), np.empty(K))
    eps = kode.ode_rhs_into(
        Q, R, v, T, vt, 0, 0, lr, sigma**2, 1.0 / batch_size, train_v, sgd_noise, *out
    )
    for g, o, r in zip(got, out, ref):
        assert g.shape == r.shape
        if not r.any():
            assert not g.any() and not o.any()
            continue
        assert_close_rel(g, r, 1e-12)
        assert_close_rel(o, r, 1e-12)
    np.testing.assert_array_equal(got[0], got[0].T)
    assert eps == pytest.approx(eps_numpy(Q, R, T, v, vt), rel=1e-12)


def test_rhs_terms_scale_as_documented(rng):
    """The eta^2 part scales as lr^2 / batch_size and carries sigma^2 Q; the eta^1 part as lr."""
    Q, R, v, T, vt = random_state(rng, 3, 2)
    flow = ode_rhs(Q, R, v, T, vt, 0.1, sgd_noise=False)[0]
    noisy = {
        (lr, B, s): ode_rhs(Q, R, v, T, vt, lr, batch_size=B, label_noise=s)[0] - lr / 0.1 * flow
        for lr in (0.1, 0.2)
        for B in (1, 4)
        for s in (0.0, 1.0)
    }
    assert_close_rel(noisy[0.2, 1, 0.0], 4 * noisy[0.1, 1, 0.0], 1e-10)
    assert_close_rel(noisy[0.1, 4, 0.0], noisy[0.1, 1, 0.0] / 4, 1e-10)
    sigma_part = noisy[0.1, 1, 1.0] - noisy[0.1, 1, 0.0]
    assert_close_rel(sigma_part, 4 * 0.1**2 * np.outer(v, v) * Q, 1e-10)


# ---------------------------------------------------------------- integrators


def test_rk4_matches_numpy_rk4_on_the_same_grid(rng):
    K, M = 3, 2
    Q, R, v, T, vt = random_state(rng, K, M, scale=0.3)
    lr, dt = 0.1, 0.05
    times = np.array([0.0, 0.35, 1.0, 1.72, 3.0])  # not all multiples of dt: cut steps
    res = integrate_ode(Q, R, v, T, vt, lr, 3.0, times=times, dt=dt, method="rk4", label_noise=0.2)
    f = naive_flat(K, M, T, vt, lr, sigma=0.2)
    y, t, ref = pack(Q, R, v), 0.0, []
    n_steps = 0
    for t_rec in times:
        while t < t_rec:  # the documented grid: dt steps, the one reaching t_rec cut onto it
            land = t + dt * (1 + 1e-9) >= t_rec
            h = t_rec - t if land else dt
            y = naive.rk4(f, y, h)
            t = t_rec if land else t + h
            n_steps += 1
        ref.append(y)
    ref = np.array(ref)
    got = states(res)
    assert res.status[0] == STATUS_DONE and np.isnan(res.t_stop[0])
    for i in range(len(times)):
        assert_close_rel(got[i], ref[i], 1e-12)
    assert res.params["n_evals"][0] == 4 * n_steps + 1
    eps_ref = [eps_numpy(*unpack(y, K, M)[:2], T, unpack(y, K, M)[2], vt) for y in ref]
    np.testing.assert_allclose(res.eps_g[0], eps_ref, rtol=1e-12)


@pytest.fixture(scope="module")
def learning_problem():
    """K = M = 2 from a small start, with SGD noise: eps_g falls from 2.6 to 3e-5 by t = 60."""
    rng = np.random.default_rng(7)
    K = M = 2
    W = rng.standard_normal((K, 50)) * np.sqrt(1e-2)
    Q, R, _ = naive.order_parameters(W, np.eye(M, 50) * np.sqrt(50))
    return dict(
        Q0=sym(Q),
        R0=R,
        v0=np.ones(K),
        T=np.eye(M),
        v_teacher=np.array([1.0, 0.6]),
        lr=0.1,
        times=np.linspace(0, 60, 31),
    )


def test_adaptive_matches_small_fixed_step(learning_problem):
    p = dict(learning_problem)
    times = p.pop("times")
    ad = integrate_ode(**p, t_max=60.0, times=times, rtol=1e-10, atol=1e-13)
    fx = integrate_ode(**p, t_max=60.0, times=times, method="rk4", dt=5e-3)
    assert fx.params["n_evals"][0] > 20 * ad.params["n_evals"][0]
    assert_close_rel(states(ad), states(fx), 1e-7)
    np.testing.assert_allclose(ad.eps_g, fx.eps_g, rtol=1e-7, atol=1e-9)
    assert ad.eps_g[0, 0] / ad.eps_g[0, -1] > 100  # it did learn: the comparison is not idle


def test_adaptive_matches_scipy_dop853(learning_problem):
    p = dict(learning_problem)
    times = p.pop("times")
    K, M = p["R0"].shape
    res = integrate_ode(**p, t_max=60.0, times=times, rtol=1e-10, atol=1e-13)
    f = naive_flat(K, M, p["T"], p["v_teacher"], p["lr"])
    sol = solve_ivp(
        lambda t, y: f(y),
        (0, 60.0),
        pack(p["Q0"], p["R0"], p["v0"]),
        method="DOP853",
        t_eval=times,
        rtol=1e-11,
        atol=1e-14,
    )
    assert sol.success
    assert_close_rel(states(res), sol.y.T, 1e-7)
    eps_ref = [
        eps_numpy(*unpack(y, K, M)[:2], p["T"], unpack(y, K, M)[2], p["v_teacher"]) for y in sol.y.T
    ]
    np.testing.assert_allclose(res.eps_g[0], eps_ref, rtol=1e-7, atol=1e-9)


def test_rk45_steps_like_scipy_rk45(learning_problem):
    """Same pair and controller as scipy's RK45: from the same first step, the same steps
    (as many evaluations) and the same error."""
    p = dict(learning_problem)
    p.pop("times")
    K, M = p["R0"].shape
    ends = [0.0, 60.0]
    tight = integrate_ode(**p, t_max=60.0, times=ends, rtol=1e-12, atol=1e-15)
    ours = integrate_ode(**p, t_max=60.0, times=ends, rtol=1e-6, atol=1e-9)
    f = naive_flat(K, M, p["T"], p["v_teacher"], p["lr"])
    sol = solve_ivp(
        lambda t, y: f(y),
        (0, 60.0),
        pack(p["Q0"], p["R0"], p["v0"]),
        method="RK45",
        rtol=1e-6,
        atol=1e-9,
        first_step=ours.params["dt"][0],
    )
    assert 0.98 < ours.params["n_evals"][0] / sol.nfev < 1.02
    err_ours = np.abs(states(ours)[-1] - states(tight)[-1]).max()
    err_scipy = np.abs(sol.y[:, -1] - states(tight)[-1]).max()
    assert 0.9 < err_ours / err_scipy < 1.1


def test_tolerance_controls_the_error(learning_problem):
    p = dict(learning_problem)
    times = p.pop("times")
    tight = integrate_ode(**p, t_max=60.0, times=times, rtol=1e-12, atol=1e-15)
    errs, evals = [], []
    for rtol in (1e-5, 1e-8):
        res = integrate_ode(**p, t_max=60.0, times=times, rtol=rtol, atol=rtol * 1e-3)
        errs.append(np.abs(states(res) - states(tight)).max())
        evals.append(res.params["n_evals"][0])
    assert errs[1] < errs[0] / 100 and evals[1] > evals[0]
    assert errs[1] < 1e-6


# ---------------------------------------------------------------- physics (docs/theory.md)


def test_conserved_quantity_without_sgd_noise(rng):
    K, M = 3, 2
    Q, R, v, T, vt = random_state(rng, K, M, scale=0.2)
    res = integrate_ode(Q, R, v, T, vt, 0.2, 300.0, sgd_noise=False, rtol=1e-12, atol=1e-14)
    assert res.status[0] == STATUS_DONE
    C = res.conserved[0]
    assert np.abs(C - C[0]).max() < 1e-9
    assert np.abs(res.Q[0, -1] - Q).max() > 0.1  # the overlaps did move


def test_sgd_noise_only_increases_conserved_quantity(rng):
    K, M = 3, 2
    Q, R, v, T, vt = random_state(rng, K, M, scale=0.2)
    res = integrate_ode(Q, R, v, T, vt, 0.1, 100.0, label_noise=0.5, rtol=1e-11, atol=1e-14)
    assert res.status[0] == STATUS_DONE
    C = res.conserved[0]
    assert np.diff(C, axis=0).min() >= -1e-12
    assert (C[-1] - C[0]).min() > 1e-4  # a real increase, for every unit


def test_eps_decreases_under_gradient_flow(learning_problem):
    p = dict(learning_problem)
    p.pop("times")
    res = integrate_ode(**p, t_max=200.0, sgd_noise=False, rtol=1e-10, atol=1e-14)
    e = res.eps_g[0]
    assert np.diff(e).max() <= 1e-13 * e[0]
    assert e[-1] < 1e-8 * e[0]


def test_first_plateau_single_unit():
    """K = M = 1: the saddle R = 0, v Q = v* T / 3 sits at eps_g = (4/3) v*^2 T^2, then learns."""
    T, vt = 1.5, 0.8
    res = integrate_ode(
        [[vt * T / 3]],
        [[1e-6]],
        [1.0],
        [[T]],
        [vt],
        1.0,
        12.0,
        times=np.linspace(0, 12, 241),
        sgd_noise=False,
        rtol=1e-11,
        atol=1e-15,
    )
    R, e = res.R[0, :, 0, 0], res.eps_g[0]
    on = np.abs(R) < 1e-3
    assert on.sum() >= 10
    np.testing.assert_allclose(e[on], 4 / 3 * vt**2 * T**2, rtol=1e-6)
    np.testing.assert_allclose(res.v[0, on, 0] * res.Q[0, on, 0, 0], vt * T / 3, rtol=1e-6)
    assert e[-1] < 1e-10


@pytest.mark.parametrize("v0,learns", [(-0.5, False), (-0.05, True)])
def test_wrong_sign_start_learns_iff_conserved_quantity_positive(v0, learns):
    Q0 = 1e-2  # w close to 0; C = Q - 2 v^2 is -0.49 or +0.005
    res = integrate_ode(
        [[Q0]],
        [[1e-3]],
        [v0],
        [[1.0]],
        [1.0],
        1.0,
        200.0,
        times=np.linspace(0, 200, 101),
        sgd_noise=False,
        rtol=1e-10,
        atol=1e-14,
    )
    assert np.sign(res.conserved[0, 0, 0]) == (1 if learns else -1)
    v, e = res.v[0, :, 0], res.eps_g[0]
    if learns:
        assert v.max() > 0 and e[-1] < 1e-8
    else:
        assert v.max() < 0 and e.min() > 1.4


# ---------------------------------------------------------------- batches and divergence


def _batch(rng, n, K=3, M=2):
    runs = [random_state(rng, K, M, scale=0.3) for _ in range(n)]
    return [np.array([r[i] for r in runs]) for i in range(5)]


@pytest.mark.parametrize("method", ["rk45", "rk4"])
def test_batch_and_threads_do_not_change_a_trajectory(rng, method):
    Q, R, v, T, vt = _batch(rng, 5)
    lr = np.array([0.1, 0.2, 0.05, 0.3, 0.15])
    kw = dict(t_max=20.0, method=method, label_noise=0.1)
    if method == "rk4":
        kw["dt"] = 0.01
    before = numba.get_num_threads()
    batch = integrate_ode(Q, R, v, T, vt, lr, **kw, num_threads=2)
    one_thread = integrate_ode(Q, R, v, T, vt, lr, **kw, num_threads=1)
    assert numba.get_num_threads() == before
    for name in ("eps_g", "Q", "R", "v", "status"):
        np.testing.assert_array_equal(getattr(batch, name), getattr(one_thread, name))
    np.testing.assert_array_equal(batch.params["n_evals"], one_thread.params["n_evals"])
    for i in (0, 3):
        alone = integrate_ode(Q[i], R[i], v[i], T[i], vt[i], lr[i], **kw)
        for name in ("eps_g", "Q", "R", "v"):
            np.testing.assert_array_equal(getattr(alone, name)[0], getattr(batch, name)[i])
        assert alone.params["n_evals"][0] == batch.params["n_evals"][i]


def test_shared_initial_condition_broadcasts(rng):
    Q, R, v, T, vt = random_state(rng, 2, 2, scale=0.3)
    res = integrate_ode(Q, R, v, T, vt, [0.1, 0.2], 5.0, label_noise=0.3)
    assert res.n_runs == 2 and res.T.shape == (2, 2, 2) and res.v_teacher.shape == (2, 2)
    np.testing.assert_array_equal(res.params["label_noise"], [0.3, 0.3])
    assert not np.array_equal(res.eps_g[0], res.eps_g[1])
    slow = integrate_ode(Q, R, v, T, vt, 0.1, 5.0, label_noise=0.3)
    np.testing.assert_array_equal(slow.eps_g[0], res.eps_g[0])


@pytest.mark.parametrize("method", ["rk45", "rk4"])
def test_divergence_is_flagged_and_isolated(method):
    K = M = 2
    Q = np.array([0.5 * np.eye(K), 0.5 * np.eye(K), 0.3 * np.eye(K)])
    R = np.full((3, K, M), 0.1)
    lr = np.array([0.1, 5.0, 0.2])
    times = np.array([0.0, 1e-4, 1e-2, 1.0, 10.0])
    kw = dict(times=times, method=method)
    res = integrate_ode(Q, R, np.ones(K), np.eye(M), np.ones(M), lr, 10.0, **kw)
    np.testing.assert_array_equal(res.status, [STATUS_DONE, STATUS_DIVERGED, STATUS_DONE])
    ts = res.t_stop[1]
    assert 1e-4 < ts < 1e-2
    assert np.isnan(res.t_stop[[0, 2]]).all()
    after = times >= ts
    for name in ("eps_g", "Q", "R", "v"):
        arr = getattr(res, name)[1]
        assert np.isnan(arr[after]).all() and np.isfinite(arr[~after]).all()
    for i in (0, 2):
        alone = integrate_ode(Q[i], R[i], np.ones(K), np.eye(M), np.ones(M), lr[i], 10.0, **kw)
        np.testing.assert_array_equal(alone.eps_g[0], res.eps_g[i])
        np.testing.assert_array_equal(alone.Q[0], res.Q[i])


@pytest.mark.parametrize("method,dt", [("rk4", 1e-3), ("rk45", None)])
def test_non_finite_state_is_divergence(method, dt):
    """A step that jumps to NaN (not through a large eps_g) still stops the run."""
    res = integrate_ode(
        0.5 * np.eye(2),
        np.full((2, 2), 0.1),
        np.ones(2),
        np.eye(2),
        np.ones(2),
        1e5,
        10.0,
        method=method,
        dt=dt,
        max_error=1e300,
        times=[0.0, 5.0, 10.0],
    )
    assert res.status[0] == STATUS_DIVERGED
    assert 0.0 < res.t_stop[0] < 5.0
    assert np.isfinite(res.eps_g[0, 0]) and np.isnan(res.eps_g[0, 1:]).all()


def test_max_error_stops_a_run_at_its_time(learning_problem):
    p = dict(learning_problem)
    times = p.pop("times")
    full = integrate_ode(**p, t_max=60.0, times=times)
    e0 = full.eps_g[0, 0]
    # learning lowers eps_g, so a bound just below eps_g(0) stops the run at t = 0
    res = integrate_ode(**p, t_max=60.0, times=times, max_error=0.999 * e0)
    assert res.status[0] == STATUS_DIVERGED and res.t_stop[0] == 0.0
    assert np.isnan(res.eps_g).all()


# ---------------------------------------------------------------- validation


def names_parameter(name):
    """A message that starts a sentence with the parameter (or one of its entries)."""
    return name if name == "run axes" else rf"\b{name}(\[\d+\])? must"


GOOD = dict(
    Q0=0.1 * np.eye(2),
    R0=np.zeros((2, 3)),
    v0=np.ones(2),
    T=np.eye(3),
    v_teacher=np.ones(3),
    lr=0.1,
    t_max=10.0,
)


@pytest.mark.parametrize(
    "change,name",
    [
        (dict(Q0=np.eye(3)), "Q0"),
        (dict(R0=np.zeros((2, 2))), "R0"),
        (dict(R0=np.zeros(6)), "R0"),
        (dict(v0=np.ones((2, 2, 2))), "v0"),
        (dict(T=np.eye(2)), "T"),
        (dict(Q0=np.array([[1.0, 0.2], [0.1, 1.0]])), "Q0"),
        (dict(T=np.triu(np.ones((3, 3)))), "T"),
        (dict(R0=np.full((2, 3), np.nan)), "R0"),
        (dict(v_teacher=[1.0, np.inf, 1.0]), "v_teacher"),
        (dict(Q0=np.zeros((3, 2, 2)), v0=np.ones((2, 2))), "run axes"),
        (dict(lr=-0.1), "lr"),
        (dict(lr=0.0), "lr"),
        (dict(lr=[0.1, np.nan]), "lr"),
        (dict(label_noise=-1.0), "label_noise"),
        (dict(t_max=0.0), "t_max"),
        (dict(times=[0.0, 5.0, 11.0]), "times"),
        (dict(times=[-1.0, 5.0]), "times"),
        (dict(times=[0.0, 5.0, 2.0]), "times"),
        (dict(method="euler"), "method"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=1.5), "batch_size"),
        (dict(dt=-0.01), "dt"),
        (dict(rtol=0.0), "rtol"),
        (dict(atol=0.0), "atol"),
        (dict(max_error=np.nan), "max_error"),
        (dict(train_second_layer="yes"), "train_second_layer"),
        (dict(sgd_noise=1), "sgd_noise"),
        (dict(num_threads=0), "num_threads"),
    ],
)
def test_integrate_ode_rejects_bad_input_before_any_kernel(monkeypatch, change, name):
    def boom(*args):
        raise AssertionError("the kernel ran")

    monkeypatch.setattr(kode, "integrate_batch", boom)
    with pytest.raises(ValueError, match=names_parameter(name)):
        integrate_ode(**{**GOOD, **change})


@pytest.mark.parametrize(
    "change,name",
    [
        (dict(Q=np.array([[1.0, 0.5], [0.0, 1.0]])), "Q"),
        (dict(R=np.zeros((3, 3))), "R"),
        (dict(v=[1.0, np.nan]), "v"),
        (dict(T=np.ones((2, 3))), "T"),
        (dict(lr=0.0), "lr"),
        (dict(label_noise=-0.5), "label_noise"),
        (dict(batch_size=0), "batch_size"),
        (dict(train_second_layer=None), "train_second_layer"),
    ],
)
def test_ode_rhs_rejects_bad_input(change, name):
    args = dict(
        Q=0.1 * np.eye(2),
        R=np.zeros((2, 3)),
        v=np.ones(2),
        T=np.eye(3),
        v_teacher=np.ones(3),
        lr=0.1,
    )
    with pytest.raises(ValueError, match=names_parameter(name)):
        ode_rhs(**{**args, **change})


def test_result_records_how_it_was_made():
    res = integrate_ode(**GOOD, method="rk4", batch_size=2, label_noise=0.5)
    assert res.method == "ode" and res.t[0] == 0.0 and res.t[-1] == 10.0
    assert res.eps_g.shape == (1, res.t.shape[0]) and res.Q.shape == (1, res.t.shape[0], 2, 2)
    prm = res.params
    assert prm["integrator"] == "rk4" and prm["batch_size"] == 2
    np.testing.assert_array_equal(prm["label_noise"], [0.5])
    np.testing.assert_array_equal(prm["lr"], [0.1])
    assert prm["dt"][0] > 0 and prm["n_evals"][0] > 4 * 10.0 / prm["dt"][0]
