"""Online-SGD throughput: the exact dimension-free sampler against the direct kernel.

Measures sample-steps per second (one step = one fresh sample through one run) for
  - the exact sampler (``fastquad.kernels.gram.gram_sgd_batch``), whose cost per step depends on
    K + M and the batch size but not on d,
  - the direct d-dimensional kernel (``fastquad.simulate_sgd``), whose cost grows like d,
over a batch of runs on all cores, and prints the ratios measured in this same run (the machine
may be shared: only ratios from one run are comparable). At large d the direct kernel is timed
over a few steps only.

    python benchmarks/bench_gram.py            # full table (a few minutes)
    python benchmarks/bench_gram.py --quick    # smaller budgets
"""

import argparse
import os
import time

import numba
import numpy as np

import fastquad as fq
from fastquad.kernels import gram
from fastquad.rng import run_states
from fastquad.threads import call_kernel

CONFIGS = [(100, 2, 2), (500, 2, 2), (1000, 2, 2), (100_000, 2, 2)]
EXTRA = [(1000, 4, 4), (1000, 8, 8)]  # sampler only: its cost grows with K + M, not d


def best_time(fn, repeats):
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def sampler_call(W0, v0, Wt, vt, lr, steps, batch=1):
    """A closure running the sampler for ``steps`` steps from fresh copies (setup excluded)."""
    n, K, d = W0.shape
    M = Wt.shape[0]
    F0 = gram.initial_factor(W0, np.broadcast_to(Wt, (n, M, d)))
    vt_n = np.ascontiguousarray(np.broadcast_to(vt, (n, M)))
    rec = np.array([0, steps], dtype=np.int64)

    def run():
        F = F0.copy()
        v = v0.copy()
        outs = (
            np.empty((n, 2)),
            np.empty((n, 2, K, K)),
            np.empty((n, 2, K, M)),
            np.empty((n, 2, K)),
            np.empty(n, dtype=np.int8),
            np.empty(n, dtype=np.int64),
        )
        call_kernel(
            gram.gram_sgd_batch,
            F,
            v,
            vt_n,
            K,
            d,
            np.full(n, lr),
            np.zeros(n),
            True,
            batch,
            rec,
            d,
            1e6,
            run_states(0, np.arange(n)),
            *outs,
        )
        assert np.all(outs[4] == 0)

    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=256)
    args = ap.parse_args()
    n = args.runs
    direct_budget = 2e7 if args.quick else 1e8  # normals drawn by a direct measurement
    sampler_budget = 5e6 if args.quick else 4e7  # sample-steps of a sampler measurement
    threads = numba.config.NUMBA_NUM_THREADS
    print(
        f"fastquad {fq.__version__}, numba {numba.__version__}, numpy {np.__version__}, "
        f"{os.cpu_count()} cores, {threads} numba threads, float64, {n} runs, batch 1\n"
    )
    rng = np.random.default_rng(0)
    lr = 1e-3

    # compile both kernels outside the timings
    Wt, vt = fq.make_teacher(50, 2, seed=1)
    W0 = rng.standard_normal((2, 2, 50)) * 0.3
    fq.simulate_sgd(W0, np.ones((2, 2)), Wt, vt, lr, 2.0)
    sampler_call(W0, np.ones((2, 2)), Wt, vt, lr, 10)()

    hdr = (
        f"{'d':>7} {'K':>3} {'M':>3} | {'sampler':>10} {'direct':>11} | {'ratio':>8} | "
        f"{'sampler ns/step/core':>20} {'setup s':>8}"
    )
    print(hdr)
    print("-" * len(hdr))
    for d, K, M in CONFIGS + EXTRA:
        Wt, vt = fq.make_teacher(d, M, seed=1)
        W0 = rng.standard_normal((n, K, d)) * 0.3
        v0 = np.ones((n, K))
        t0 = time.perf_counter()
        run = sampler_call(W0, v0, Wt, vt, lr, max(16, int(sampler_budget / n)))
        setup = time.perf_counter() - t0
        s_steps = max(16, int(sampler_budget / n))
        ours = n * s_steps / best_time(run, 3)
        per_step = threads / ours * 1e9
        direct_txt = ratio_txt = ""
        if (d, K, M) in CONFIGS:
            steps = max(8, int(direct_budget / (n * d)))
            t_max = steps / d
            direct = (
                n
                * steps
                / best_time(
                    lambda: fq.simulate_sgd(W0, v0, Wt, vt, lr, t_max, times=[0.0, t_max]),
                    2 if d > 10_000 else 3,
                )
            )
            ratio = ours / direct
            direct_txt = f"{direct / 1e6:>9.4f} M"
            ratio_txt = f"{ratio:>7.0f}x"
        print(
            f"{d:>7} {K:>3} {M:>3} | {ours / 1e6:>8.2f} M {direct_txt:>11} | {ratio_txt:>8} | "
            f"{per_step:>20.1f} {setup:>8.2f}"
        )
    print(
        "\nsample-steps/s over all cores, best of repeats; setup = initial_factor (one QR of "
        "the (K+M) x d weights per run, O(d (K+M)^2), once per run)."
    )


if __name__ == "__main__":
    main()
