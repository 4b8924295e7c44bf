"""Online-SGD cost per step for each activation, beside the quadratic network's.

Measures nanoseconds per sample-step on one thread (one step = one fresh sample through one run)
of ``fastquad.simulate_sgd`` for the student and teacher activations quadratic, linear, relu
and erf (the teacher's the student's), with
  - the direct d-dimensional kernel (batch 1, float64, the inputs drawn in the teacher's frame),
  - the exact dimension-free sampler (its cost depends on K + M, not on d),
at d in (100, 1000) and K = M in (2, 8), and prints each activation's ratio to quadratic. The
activations of one configuration are timed in interleaved rounds (their order rotating) and
the median of the rounds is kept, so that the load of a shared machine falls on all alike;
times are the process's CPU time (the kernel runs on one thread; time spent descheduled by
other work on the machine is not counted). Only ratios from one run are comparable.

The divergence checks are those of the API (eps_g every d steps); ``--check-every 100000000``
leaves the steps alone (the closed-form eps_g of the other activations costs more than the
quadratic one's, and at d = 100, K = M = 8 the checks are part of the difference).

    python benchmarks/bench_activations.py            # full table (a few minutes)
    python benchmarks/bench_activations.py --quick    # smaller budgets

It ends with the cost of one right-hand-side evaluation of the order-parameter ODE (with its
SGD-noise term) per activation, at K = M = 2, 3, 4.
"""

import argparse
import os
import statistics
import time

import numba
import numpy as np
from machine import capacity_line

import fastquad as fq

CONFIGS = [(100, 2), (100, 8), (1000, 2), (1000, 8)]  # (d, K = M)
SAMPLERS = ("direct", "exact")
RUNS = 16  # one lockstep group of the exact sampler, on one thread


def make_call(d, K, sampler, activation, budget, rng, check_every=None):
    """A closure running RUNS runs for a number of steps set by ``budget`` (normals drawn by
    the direct kernel, sample-steps for the sampler); returns (call, sample-steps)."""
    Wt, vt = fq.make_teacher(d, K, seed=1)
    W0 = rng.standard_normal((RUNS, K, d)) * 0.5
    v0 = np.full((RUNS, K), 1.0 / K)
    per_step = d if sampler == "direct" else 1
    steps = max(2 * d, int(budget / (RUNS * per_step)))
    t_max = steps / d

    def call():
        res = fq.simulate_sgd(
            W0,
            v0,
            Wt,
            vt,
            1e-3,
            t_max,
            times=[0.0, t_max],
            sampler=sampler,
            activation=activation,
            check_every=check_every,
            num_threads=1,
        )
        assert np.all(res.status == fq.STATUS_DONE)

    return call, RUNS * round(t_max * d)


def ns_per_step(calls, repeats):
    """Median ns per sample-step of each call, over interleaved rounds (the order rotates)."""
    names = list(calls)
    times = {k: [] for k in names}
    for r in range(repeats):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            fn, work = calls[k]
            t0 = time.process_time()
            fn()
            times[k].append((time.process_time() - t0) / work * 1e9)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved timed rounds")
    ap.add_argument(
        "--check-every", type=int, default=None, help="steps between eps_g checks (default d)"
    )
    args = ap.parse_args()
    budget = {"direct": 3e6 if args.quick else 2e7, "exact": 3e5 if args.quick else 2e6}
    repeats = args.repeats or (3 if args.quick else 7)
    print(
        f"fastquad {fq.__version__}, numba {numba.__version__}, numpy {np.__version__}, "
        f"{os.cpu_count()} cores; one thread, {RUNS} runs, float64, batch 1, teacher "
        f"activation = student's; median of {repeats} interleaved rounds; eps_g checked every "
        f"{args.check_every or 'd'} steps\n"
    )
    print(capacity_line() + "\n")
    rng = np.random.default_rng(0)
    # compile outside the timings: the activations share one compiled kernel per sampler
    for sampler in SAMPLERS:
        for a in fq.ACTIVATIONS:
            make_call(20, 2, sampler, a, 1e3, rng)[0]()
    acts = fq.ACTIVATIONS
    hdr = f"{'d':>5} {'K=M':>4} {'sampler':>7} | " + " | ".join(f"{a:>16}" for a in acts)
    print(hdr)
    print(f"{'':>5} {'':>4} {'':>7} | " + " | ".join(f"{'ns/step (ratio)':>16}" for _ in acts))
    print("-" * len(hdr))
    for d, K in CONFIGS:
        for sampler in SAMPLERS:
            calls = {
                a: make_call(d, K, sampler, a, budget[sampler], rng, args.check_every) for a in acts
            }
            ns = ns_per_step(calls, repeats)
            cells = [f"{ns[a]:>8.1f} ({ns[a] / ns['quadratic']:.2f}x)" for a in acts]
            print(f"{d:>5} {K:>4} {sampler:>7} | " + " | ".join(f"{c:>16}" for c in cells))
    print(
        "\nCPU ns per sample-step on one thread (median of rounds); ratio to quadratic in the same "
        "configuration. The exact sampler's cost does not depend on d.\n"
        "The machine may be shared: compare ratios of one run."
    )
    ode_table(repeats, quick=args.quick)


def ode_rhs_cost(K, activation, n_steps):
    """(CPU seconds, right-hand-side evaluations) of one fixed-step RK4 trajectory of the
    order-parameter ODE with its SGD-noise term, from a random state."""
    rng = np.random.default_rng(K)
    A = rng.standard_normal((2 * K, 4 * K))
    Om = A @ A.T / (4 * K)
    Q, R, T = Om[:K, :K], Om[:K, K:], Om[K:, K:]
    v, vt = np.full(K, 0.5), np.linspace(1.0, 0.5, K)
    t0 = time.process_time()
    res = fq.integrate_ode(
        Q,
        R,
        v,
        T,
        vt,
        0.05,
        n_steps * 1e-3,
        dt=1e-3,
        method="rk4",
        activation=activation,
        times=[0.0, n_steps * 1e-3],
        max_error=1e12,
    )
    return time.process_time() - t0, int(res.params["n_evals"][0])


def ode_table(repeats, quick):
    """Microseconds per right-hand-side evaluation of the order-parameter ODE, per activation
    (a ReLU student's noise term integrates four-field orthant probabilities)."""
    n_steps = 500 if quick else 5000
    acts = fq.ACTIVATIONS
    print(
        f"\nOrder-parameter ODE with its SGD-noise term, RK4 ({n_steps} steps), teacher "
        "activation = student's: CPU microseconds per right-hand-side evaluation "
        f"(median of {repeats} interleaved rounds)\n"
    )
    print(f"{'K=M':>4} | " + " | ".join(f"{a:>16}" for a in acts))
    for K in (2, 3, 4):
        for a in acts:
            ode_rhs_cost(K, a, 10)  # compile outside the timings
        per = {a: [] for a in acts}
        for r in range(repeats):
            for a in acts[r % len(acts) :] + acts[: r % len(acts)]:
                sec, n = ode_rhs_cost(K, a, n_steps)
                per[a].append(1e6 * sec / n)
        us = {a: statistics.median(per[a]) for a in acts}
        cells = [f"{us[a]:>7.2f} ({us[a] / us['quadratic']:.1f}x)" for a in acts]
        print(f"{K:>4} | " + " | ".join(f"{c:>16}" for c in cells))


if __name__ == "__main__":
    main()
