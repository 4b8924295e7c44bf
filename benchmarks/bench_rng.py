"""Normal-variate throughput of fastquad.rng against the alternatives, on one thread.

Each method fills one buffer of length d over and over, the way the online-SGD kernel draws one
input per step: ``normal_fill`` / ``normal_fill32`` from a compiled loop over one run's state;
numba's built-in ``np.random.standard_normal`` element by element inside ``@njit`` (its float32
variant casts); NumPy's ``Generator(PCG64).standard_normal(out=...)`` called from Python per
buffer (its float32 variant uses ``dtype=np.float32``); for reference also the same Generator
passed into ``@njit`` and drawn element by element (one shared state, so it cannot give per-run
streams inside ``prange``). Reported: normals/s, best of several repeats after a JIT warm-up, and
the ratio of fastquad's rate to each. The machine is shared and noisy:
compare ratios from the same run.

Usage: python benchmarks/bench_rng.py [--repeats 7] [--seconds 0.1] [--clock wall|cpu]
"""

import argparse
import time

import numba
import numpy as np
from numba import njit

from fastquad.rng import normal_fill, normal_fill32, run_states

DIMS = (100, 500, 1000)


@njit(nogil=True)
def _ours64(state, buf, ncalls):
    acc = 0.0
    for _ in range(ncalls):
        normal_fill(state, buf)
        acc += buf[0]  # keeps the fills observable
    return acc


@njit(nogil=True)
def _ours32(state, buf, ncalls):
    acc = np.float32(0.0)
    for _ in range(ncalls):
        normal_fill32(state, buf)
        acc += buf[0]
    return acc


@njit(nogil=True)
def _numba64(buf, ncalls):
    acc = 0.0
    for _ in range(ncalls):
        for i in range(buf.shape[0]):
            buf[i] = np.random.standard_normal()
        acc += buf[0]
    return acc


@njit(nogil=True)
def _numba32(buf, ncalls):
    acc = np.float32(0.0)
    for _ in range(ncalls):
        for i in range(buf.shape[0]):
            buf[i] = np.float32(np.random.standard_normal())
        acc += buf[0]
    return acc


@njit(nogil=True)
def _gen64(gen, buf, ncalls):
    for _ in range(ncalls):
        for i in range(buf.shape[0]):
            buf[i] = gen.standard_normal()


@njit(nogil=True)
def _gen32(gen, buf, ncalls):
    for _ in range(ncalls):
        for i in range(buf.shape[0]):
            buf[i] = gen.standard_normal(dtype=np.float32)


def _numpy64(gen, buf, ncalls):
    for _ in range(ncalls):
        gen.standard_normal(out=buf)


def _numpy32(gen, buf, ncalls):
    for _ in range(ncalls):
        gen.standard_normal(dtype=np.float32, out=buf)


def _calibrate(call, seconds):
    """Number of calls of ``call(ncalls)`` that lasts about ``seconds`` (after a warm-up)."""
    call(10)  # JIT compilation, caches
    ncalls = 16
    while True:
        t0 = time.perf_counter()
        call(ncalls)
        dt = time.perf_counter() - t0
        if dt > 0.02:
            return max(1, int(ncalls * seconds / dt))
        ncalls *= 4


def _rates(calls, d, repeats, seconds, clock):
    """Best normals/s of each ``calls[name](ncalls)``; the methods alternate within each repeat
    so that a change of machine load hits them all alike."""
    ncalls = {name: _calibrate(call, seconds) for name, call in calls.items()}
    best = {name: float("inf") for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            t0 = clock()
            call(ncalls[name])
            best[name] = min(best[name], clock() - t0)
    return {name: ncalls[name] * d / best[name] for name in calls}


@njit
def _seed_numba(seed):
    np.random.seed(seed)  # numba's generator is separate from NumPy's; it is seeded in @njit


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=0.1, help="duration of one timed run")
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time, or this thread's CPU time (steadier on a shared, oversubscribed machine)",
    )
    args = ap.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    numba.set_num_threads(1)
    _seed_numba(0)
    state = run_states(12345, [0])[0]
    gen = np.random.Generator(np.random.PCG64(12345))

    print(f"N(0,1) draws per second, one thread, best of {args.repeats}, {args.clock} clock")
    head = (
        f"{'dtype':>7} {'d':>5} | {'fastquad':>9} {'numba @njit':>12} {'numpy Gen.':>11}"
        f" {'Gen. @njit':>11} | {'vs numba':>8} {'vs numpy':>8} {'vs Gen@njit':>11}"
    )
    print(head)
    print("-" * len(head))
    for dtype in (np.float64, np.float32):
        for d in DIMS:
            buf = np.empty(d, dtype=dtype)
            if dtype == np.float64:
                calls = {
                    "ours": lambda n: _ours64(state, buf, n),
                    "numba": lambda n: _numba64(buf, n),
                    "numpy": lambda n: _numpy64(gen, buf, n),
                    "gen_njit": lambda n: _gen64(gen, buf, n),
                }
            else:
                calls = {
                    "ours": lambda n: _ours32(state, buf, n),
                    "numba": lambda n: _numba32(buf, n),
                    "numpy": lambda n: _numpy32(gen, buf, n),
                    "gen_njit": lambda n: _gen32(gen, buf, n),
                }
            r = _rates(calls, d, args.repeats, args.seconds, clock)
            print(
                f"{np.dtype(dtype).name:>7} {d:>5} | {r['ours'] / 1e6:>8.0f}M"
                f" {r['numba'] / 1e6:>11.0f}M {r['numpy'] / 1e6:>10.0f}M"
                f" {r['gen_njit'] / 1e6:>10.0f}M"
                f" | {r['ours'] / r['numba']:>7.1f}x {r['ours'] / r['numpy']:>7.2f}x"
                f" {r['ours'] / r['gen_njit']:>10.2f}x"
            )


if __name__ == "__main__":
    main()
