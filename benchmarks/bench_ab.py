"""Run-time speed of two versions of fastquad, interleaved: did a change make a kernel slower?

Each round times every case once in version A and once in version B, alternating which goes
first, each in a fresh process (kernels loaded from that version's warm cache, compile time
excluded), so that the load of a shared machine falls on both alike. It prints the median rate
of each version and their ratio per case.

    git worktree add /tmp/before <commit>        # the version to compare against
    python benchmarks/bench_ab.py /tmp/before    # B = this checkout (about 4 minutes)
    python benchmarks/bench_ab.py /tmp/before --rounds 3 --threads 1
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CASE = r"""
import sys, time
import numpy as np
import fastquad as fq
kind, d, K, M, n, steps, threads = sys.argv[1], *map(int, sys.argv[2:8])
W_t, v_t = fq.make_teacher(d, M)
W0, v0 = fq.make_student(d, K, scale=0.3, seed=1)
W0 = np.broadcast_to(W0, (n, K, d)).copy()
t_max = steps / d
kw = dict(seeds=np.arange(n), times=[0.0, t_max], num_threads=threads)
if kind == "ode":
    Q, R, T = fq.order_parameters(W0[0], W_t)
    call = lambda: fq.integrate_ode(Q, R, v0, T, v_t, 0.1 * np.ones(n), float(steps),
                                    times=[0.0, float(steps)], num_threads=threads)
else:
    extra = dict(sampler="exact") if kind == "exact" else {}
    extra.update(batch_size=8) if kind == "minibatch" else None
    call = lambda: fq.simulate_sgd(W0, v0, W_t, v_t, 0.01, t_max, **kw, **extra)
call()  # compile or load
best = float("inf")
for _ in range(3):
    t = time.perf_counter(); call(); best = min(best, time.perf_counter() - t)
work = n * steps * (8 if kind == "minibatch" else 1)
print(work / best)
"""

# kind, d, K, M, runs, steps per run (sample-steps for SGD; time units for the ODE)
CASES = [
    ("direct", 100, 2, 2, 64, 20000),
    ("direct", 500, 4, 4, 64, 4000),
    ("minibatch", 200, 2, 2, 32, 2000),
    ("exact", 1000, 2, 2, 64, 20000),
    ("ode", 20, 4, 4, 64, 200),  # d only makes the starting overlaps
]


def _rate(tree, case, threads, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    kind, d, K, M, n, steps = case
    out = subprocess.run(
        [sys.executable, "-c", _CASE, kind, str(d), str(K), str(M), str(n), str(steps)]
        + [str(threads)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path, help="source tree of version A (holds fastquad/)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", nargs="+", help="only these kinds of case (direct, exact, ...)")
    ap.add_argument("--d", type=int, nargs="+", help="only the cases of these d")
    args = ap.parse_args(argv)
    if not (args.before / "fastquad" / "__init__.py").is_file():
        ap.error(f"{args.before} holds no fastquad/ package")
    here = Path(__file__).resolve().parents[1]
    print(f"bench_ab  {time.strftime('%Y-%m-%d')}  A = {args.before}  B = this checkout")
    print(f"{args.rounds} interleaved rounds, {args.threads} threads; rates per second, median")
    with tempfile.TemporaryDirectory() as ca, tempfile.TemporaryDirectory() as cb:
        print(f"{'case':40s} {'A':>12s} {'B':>12s} {'B / A':>7s}")
        for case in CASES:
            if (args.only and case[0] not in args.only) or (args.d and case[1] not in args.d):
                continue
            a, b = [], []
            for r in range(args.rounds):
                pair = [(args.before, ca, a), (here, cb, b)]
                for tree, cache, acc in pair if r % 2 == 0 else pair[::-1]:
                    acc.append(_rate(tree, case, args.threads, cache))
            kind, d, K, M, n, steps = case
            unit = "time units" if kind == "ode" else "sample-steps"
            size = f"K={K} M={M}" if kind == "ode" else f"d={d} K={K} M={M}"
            label = f"{kind} {size} ({unit})"
            ma, mb = statistics.median(a), statistics.median(b)
            print(f"{label:40s} {ma:12.4g} {mb:12.4g} {mb / ma:7.3f}", flush=True)


if __name__ == "__main__":
    main()
