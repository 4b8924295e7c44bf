"""Order-parameter ODE: trajectories per second at equal final accuracy, fastquad against scipy.

Compared, on the same learning problems (T = I, distinct v*, a small student start with
plateaus, online-SGD noise on, lr = 0.1):

- ``ours rk45``: :func:`fastquad.integrate_ode` (Dormand-Prince 5(4) with error control in
  Numba), one call for the whole batch of trajectories, one per thread (``prange``);
- ``ours rk4``: the same call with the fixed-step RK4 kernel;
- ``scipy RK45``: ``scipy.integrate.solve_ivp(method="RK45")`` on a vectorised NumPy right-hand
  side, one trajectory at a time, as a user would.

Equal accuracy: each method's tolerance (rtol, with atol = 1e-3 rtol) or step is picked from a
ladder, loosest first, as the first one whose relative error of eps_g at t_max is at most
``--tolerance`` on every trajectory it runs. The error is measured against a tight reference
(fastquad's rk45 at rtol 1e-12, itself checked against scipy's DOP853 at rtol 1e-12 on the first
trajectory). Reported per method: RHS evaluations per trajectory, evaluations/s,
trajectories/s, the final error, and trajectories/s relative to scipy; timings are the best of
``--repeats`` interleaved runs. The machine is shared and noisy: compare ratios from the same
run.

Usage: python benchmarks/bench_ode.py [--sizes 4 16] [--t-max 100 200] [--runs 64]
       [--scipy-runs 2] [--tolerance 1e-6] [--lr 0.1] [--repeats 2]
"""

import argparse
import time

import numba
import numpy as np
from scipy.integrate import solve_ivp

from fastquad.closed_form import generalization_error
from fastquad.ode import integrate_ode, ode_rhs

RTOLS = (1e-5, 3e-6, 1e-6, 3e-7, 1e-7, 3e-8, 1e-8, 3e-9, 1e-9, 3e-10, 1e-10)
DTS = (0.4, 0.2, 0.1, 0.05, 0.025, 0.0125, 0.00625)


def problem(K, n, d=1000, seed=0):
    """n student starts (Q0 ~ 1e-3 I from Gaussian weights in d dims, R0 ~ 1e-3, v0 = 1) for an
    orthonormal teacher with T = I and v* decreasing from 1."""
    rng = np.random.default_rng(seed)
    Wt = np.linalg.qr(rng.standard_normal((d, K)))[0].T * np.sqrt(d)
    vt = np.linspace(1.0, 0.4, K) if K <= 4 else np.linspace(1.0, 0.25, K)
    Q0, R0 = np.empty((n, K, K)), np.empty((n, K, K))
    for r in range(n):
        W = rng.standard_normal((K, d)) * np.sqrt(1e-3)
        Q0[r] = W @ W.T / d
        R0[r] = W @ Wt.T / d
    return Q0, R0, np.ones((n, K)), Wt @ Wt.T / d, vt


def numpy_rhs(K, M, T, vt, lr):
    """The order-parameter ODE (docs/theory.md, 'The ODEs') as a user would vectorise it,
    for solve_ivp."""
    tT = vt @ np.diag(T)
    tT2 = vt @ (T**2) @ vt

    def f(t, y):
        Q = y[: K * K].reshape(K, K)
        R = y[K * K : K * K + K * M].reshape(K, M)
        v = y[K * K + K * M :]
        Qv, Rv = Q * v, R * vt
        trD = v @ np.diag(Q) - tT
        P = Qv @ Q - Rv @ R.T
        S = Qv @ R - Rv @ T
        U = (P * v) @ Q - (S * vt) @ R.T
        trD2 = v @ np.diag(P) - np.sum(v[:, None] * Rv * R) + tT2
        dQ = -2 * lr * (v[:, None] + v) * (trD * Q + 2 * P) + 4 * lr**2 * np.outer(v, v) * (
            (trD**2 + 2 * trD2) * Q + 4 * trD * P + 8 * U
        )
        dR = -2 * lr * v[:, None] * (trD * R + 2 * S)
        dv = -lr * (trD * np.diag(Q) + 2 * np.diag(P))
        return np.concatenate([dQ.ravel(), dR.ravel(), dv])

    return f


def eps_g(y, K, M, T, vt):
    Q = y[: K * K].reshape(K, K)
    return generalization_error(
        0.5 * (Q + Q.T), y[K * K : K * K + K * M].reshape(K, M), T, y[K * K + K * M :], vt
    )


def run_scipy(prob, runs, lr, t_max, method, rtol, atol):
    Q0, R0, v0, T, vt = prob
    K, M = R0.shape[1:]
    f = numpy_rhs(K, M, T, vt, lr)
    eps, nfev = [], 0
    t0 = time.perf_counter()
    for r in runs:
        y0 = np.concatenate([Q0[r].ravel(), R0[r].ravel(), v0[r]])
        sol = solve_ivp(f, (0.0, t_max), y0, method=method, rtol=rtol, atol=atol)
        assert sol.success, sol.message
        eps.append(eps_g(sol.y[:, -1], K, M, T, vt))
        nfev += sol.nfev
    return np.array(eps), nfev, time.perf_counter() - t0


def run_ours(prob, runs, lr, t_max, **kw):
    Q0, R0, v0, T, vt = prob
    t0 = time.perf_counter()
    res = integrate_ode(Q0[runs], R0[runs], v0[runs], T, vt, lr, t_max, times=[0.0, t_max], **kw)
    el = time.perf_counter() - t0
    ok = res.status == 0
    return np.where(ok, res.eps_g[:, -1], np.nan), int(res.params["n_evals"].sum()), el


def rel_err(eps, ref):
    e = np.abs(eps - ref) / np.abs(ref)
    return np.inf if np.isnan(e).any() else float(e.max())


def pick(ladder, trial, tolerance):
    """First rung (loosest first) whose error is at most the tolerance: (rung, error)."""
    err = np.inf
    for rung in ladder:
        err = trial(rung)
        if err <= tolerance:
            return rung, err
    raise SystemExit(
        f"no rung of {ladder} reaches the tolerance {tolerance:g} (last error {err:.2g})"
    )


def bench(K, n_runs, n_scipy, t_max, lr, tolerance, repeats):
    prob = problem(K, n_runs)
    runs = np.arange(n_runs)
    few = np.arange(n_scipy)
    vt, T = prob[4], prob[3]
    print(
        f"\n== K = M = {K}: {n_runs} trajectories, t_max = {t_max:g}, lr = {lr:g}, "
        f"v* = {vt[0]:g} .. {vt[-1]:g}, SGD noise on; error tolerance {tolerance:g} =="
    )

    Q, R, v = prob[0][0], prob[1][0], prob[2][0]
    ours = np.concatenate([a.ravel() for a in ode_rhs(Q, R, v, T, vt, lr)])
    y0 = np.concatenate([Q.ravel(), R.ravel(), v])
    assert np.allclose(numpy_rhs(K, K, T, vt, lr)(0.0, y0), ours, rtol=1e-10, atol=1e-14)
    run_ours(prob, few, lr, 1.0)  # JIT warm-up (or cache load)
    ref, ref_ev, ref_t = run_ours(prob, runs, lr, t_max, rtol=1e-12, atol=1e-15)
    dop, dop_ev, _ = run_scipy(prob, few[:1], lr, t_max, "DOP853", 1e-12, 1e-15)
    print(
        f"reference: ours rk45 rtol 1e-12 ({ref_ev / n_runs:.0f} evals/trajectory, "
        f"{ref_t:.1f} s);"
        f" vs scipy DOP853 rtol 1e-12 on run 0: rel. diff of eps_g(t_max) "
        f"{abs(dop[0] - ref[0]) / ref[0]:.1e}; eps_g(t_max) in "
        f"[{ref.min():.3g}, {ref.max():.3g}]"
    )

    sub = np.arange(min(8, n_runs))  # tolerances are tuned on a few trajectories
    rtol_ours, _ = pick(
        RTOLS,
        lambda rt: rel_err(run_ours(prob, sub, lr, t_max, rtol=rt, atol=1e-3 * rt)[0], ref[sub]),
        tolerance,
    )
    dt_rk4, _ = pick(
        DTS,
        lambda dt: rel_err(run_ours(prob, sub, lr, t_max, method="rk4", dt=dt)[0], ref[sub]),
        tolerance,
    )
    rtol_sp, _ = pick(
        RTOLS,
        lambda rt: rel_err(run_scipy(prob, few, lr, t_max, "RK45", rt, 1e-3 * rt)[0], ref[few]),
        tolerance,
    )

    methods = [
        (
            "ours rk45",
            f"rtol {rtol_ours:g}",
            runs,
            lambda: run_ours(prob, runs, lr, t_max, rtol=rtol_ours, atol=1e-3 * rtol_ours),
        ),
        (
            "ours rk4",
            f"dt {dt_rk4:g}",
            runs,
            lambda: run_ours(prob, runs, lr, t_max, method="rk4", dt=dt_rk4),
        ),
        (
            "scipy RK45",
            f"rtol {rtol_sp:g}",
            few,
            lambda: run_scipy(prob, few, lr, t_max, "RK45", rtol_sp, 1e-3 * rtol_sp),
        ),
    ]
    best = {}
    for _ in range(repeats):  # interleaved, best of: the machine is shared
        for name, _, _, call in methods:
            eps, ev, el = call()
            if name not in best or el < best[name][2]:
                best[name] = (eps, ev, el)
    rows = [
        (name, setting, len(rr), best[name][1], best[name][2], rel_err(best[name][0], ref[rr]))
        for name, setting, rr, _ in methods
    ]

    sp_rate = rows[-1][2] / rows[-1][4]
    print(
        f"{'method':<11} {'setting':<12} {'runs':>5} {'evals/traj':>11} {'evals/s':>10} "
        f"{'traj/s':>9} {'max rel err':>11} {'traj/s vs scipy':>16}"
    )
    for name, setting, n, ev, el, err in rows:
        rate = n / el
        print(
            f"{name:<11} {setting:<12} {n:>5} {ev / n:>11.0f} {ev / el:>10.3g} {rate:>9.3g} "
            f"{err:>11.2g} {rate / sp_rate:>15.1f}x"
        )
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 16])
    ap.add_argument(
        "--t-max",
        type=float,
        nargs="+",
        default=[100.0, 200.0],
        help="one per size: long enough for a plateau and a drop",
    )
    ap.add_argument("--runs", type=int, default=64)
    ap.add_argument("--scipy-runs", type=int, default=2)
    ap.add_argument(
        "--tolerance",
        type=float,
        default=1e-6,
        help="max relative error of eps_g(t_max) every integrator must reach (default 1e-6)",
    )
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=2, help="timings are the best of this many")
    args = ap.parse_args()
    if len(args.t_max) != len(args.sizes):
        ap.error("give one --t-max per size")
    print(f"numba threads: {numba.get_num_threads()}")
    for K, t_max in zip(args.sizes, args.t_max):
        bench(K, args.runs, args.scipy_runs, t_max, args.lr, args.tolerance, args.repeats)


if __name__ == "__main__":
    main()
