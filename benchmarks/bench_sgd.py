"""Online-SGD throughput: fastquad's batched Numba kernel against plain NumPy, side by side.

Measures sample-steps per second (one step = one fresh Gaussian sample through one run) for
  - fastquad.simulate_sgd over a batch of runs (prange over runs, all cores),
  - a plain NumPy per-sample loop (one run, the way the model is usually first written, with
    the full (M, d) teacher; fastquad draws in the teacher's frame, see fastquad.frame, and
    bench_peers.py gives its peers that frame too),
  - NumPy vectorised over the runs (one step of all runs per NumPy call),
on the configurations (d, K, M) = (100, 4, 4), (500, 8, 8), (1000, 2, 2), and prints the ratios
measured in this same run.

    python benchmarks/bench_sgd.py            # full table (about a minute)
    python benchmarks/bench_sgd.py --quick    # smaller budgets
"""

import argparse
import os
import time

import numba
import numpy as np
from machine import capacity_line

import fastquad as fq

CONFIGS = [(100, 4, 4), (500, 8, 8), (1000, 2, 2)]


def numpy_loop(W, v, Wt, vt, lr, steps, rng):
    """One run, one sample per step, NumPy operations."""
    W, v = W.copy(), v.copy()
    d = W.shape[1]
    s = 1.0 / np.sqrt(d)
    for _ in range(steps):
        x = rng.standard_normal(d)
        h = W @ x * s
        y = vt @ (Wt @ x * s) ** 2
        e = v @ h**2 - y
        W -= lr * (e * v * 2 * h * s)[:, None] * x[None, :]
        v -= lr / d * e * h**2
    return W, v


def numpy_batched(W, v, Wt, vt, lr, steps, rng):
    """All runs advanced together: one (n, d) draw and batched contractions per step."""
    W, v = W.copy(), v.copy()
    n, K, d = W.shape
    s = 1.0 / np.sqrt(d)
    for _ in range(steps):
        X = rng.standard_normal((n, d))
        h = np.einsum("rkd,rd->rk", W, X) * s
        y = ((X @ Wt.T) * s) ** 2 @ vt
        e = np.einsum("rk,rk->r", v, h**2) - y
        c = lr * e[:, None] * v * 2 * h * s
        W -= c[:, :, None] * X[:, None, :]
        v -= lr / d * e[:, None] * h**2
    return W, v


def best_rate(fn, work, repeats):
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return work / best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=256)
    args = ap.parse_args()
    budget = 2e7 if args.quick else 1e8  # normals drawn by the fastquad measurement
    threads = numba.config.NUMBA_NUM_THREADS
    print(
        f"fastquad {fq.__version__}, numba {numba.__version__}, numpy {np.__version__}, "
        f"{os.cpu_count()} cores, {threads} numba threads, float64\n"
    )
    print(capacity_line() + "\n")
    hdr = (
        f"{'d':>5} {'K':>3} {'M':>3} | {'fastquad':>12} {'1 thread':>10} {'numpy loop':>12} "
        f"{'numpy batched':>14} | {'vs loop':>8} {'vs batched':>10}"
    )
    print(hdr)
    print("-" * len(hdr))
    rng = np.random.default_rng(0)
    for d, K, M in CONFIGS:
        n = args.runs
        Wt, vt = fq.make_teacher(d, M, seed=1)
        W0 = rng.standard_normal((n, K, d)) * 0.3
        v0 = np.ones((n, K))
        steps = max(8, int(budget / (n * d)))
        t_max = steps / d
        fq.simulate_sgd(W0[:2], v0[:2], Wt, vt, 1e-3, 2.0)  # compile outside the timing
        ours = best_rate(
            lambda: fq.simulate_sgd(W0, v0, Wt, vt, 1e-3, t_max, times=[0.0, t_max]), n * steps, 5
        )
        one = best_rate(
            lambda: fq.simulate_sgd(
                W0[:32], v0[:32], Wt, vt, 1e-3, t_max, times=[0.0, t_max], num_threads=1
            ),
            32 * steps,
            3,
        )
        loop_steps = max(200, int(2e5 / d))
        loop = best_rate(
            lambda: numpy_loop(W0[0], v0[0], Wt, vt, 1e-3, loop_steps, rng), loop_steps, 2
        )
        nb = min(n, 64)
        b_steps = max(20, int(1e7 / (nb * d * 10)))
        batched = best_rate(
            lambda: numpy_batched(W0[:nb], v0[:nb], Wt, vt, 1e-3, b_steps, rng), nb * b_steps, 2
        )
        print(
            f"{d:>5} {K:>3} {M:>3} | {ours / 1e6:>10.3f} M {one / 1e6:>8.3f} M "
            f"{loop / 1e6:>10.4f} M "
            f"{batched / 1e6:>12.4f} M | {ours / loop:>7.0f}x {ours / batched:>9.1f}x"
        )
    print(
        f"\nsample-steps/s; best of repeats; fastquad on {threads} threads ({args.runs} runs) "
        f"and on 1 thread (32 runs).\n"
        + capacity_line()
        + "\nThe machine may be shared: compare ratios of one run."
    )


if __name__ == "__main__":
    main()
