"""The machine's limits for online SGD, measured in this run, and the direct kernel against them.

Measures, best of interleaved repeats:
  - Gaussian generation: fastquad's ``normal_fill`` (and ``normal_fill32``) filling a buffer of
    d + 1 numbers over and over (what the kernel draws each step: an input and a label-noise
    draw), on one thread and on all threads (one stream per thread, ``prange``); NumPy's
    ``Generator(PCG64).standard_normal`` per buffer of d + 1 from Python and in one large call;
  - multiply-adds: OpenBLAS dgemm (sgemm) via NumPy, on all threads and (in a child process with
    OPENBLAS_NUM_THREADS=1) on one; a Numba dot-product loop on data in L1, one and all threads;
  - the direct kernel ``simulate_sgd`` (256 runs on all threads, 32 on one; ``times=[0, t_max]``,
    label_noise = 0) at (d, K, M) = (100, 4, 4), (500, 8, 8), (1000, 2, 2), as a fraction of
      RNG bound = best normal_fill rate on those threads / (d + 1) normals per step,
      FMA bound = multiply-add rate / (2 K d + M^2) multiply-adds per step (K dot products
                  and K rank-1 updates of length d, fused in one pass; the teacher's M
                  pre-activations cost M^2 because inputs are drawn in the teacher's frame,
                  fastquad.frame), for gemm and for the L1 dot loop;
  - where a step's time goes, on one thread: the kernel per sample-step against drawing its
    d + 1 normals alone and doing its arithmetic alone (``kernels.sgd.online_step`` on a fixed
    sample), the rest being loop, call and check overhead; and, on all threads, the fixed cost
    of a call (a 1-step call of the same batch) and the cost of the periodic divergence checks
    (``check_every = d``: Q, R and eps_g once per unit of time), from a call with them off.

    python benchmarks/bench_roofline.py                # about 1 minute
    python benchmarks/bench_roofline.py --quick        # about 30 s
    python benchmarks/bench_roofline.py --float32      # also the float32 kernel and bounds
    python benchmarks/bench_roofline.py --clock wall   # one-thread probes on wall time

The machine may be shared: compare the fractions of one run, not absolute rates across runs.
One-thread probes run on the thread's CPU time by default (steady under load; the one-thread
gemm, in a child process, is on wall time); all-thread probes can only be on wall time and
suffer most from load (a parallel region waits for its slowest thread, and waking a thread
pool can take milliseconds on an oversubscribed machine).
"""

import argparse
import math
import os
import subprocess
import sys
import time

import numba
import numpy as np

# the one-thread fill probes are bench_rng's (this folder is on sys.path when run as a script)
from bench_rng import _ours32 as _fill_loop32
from bench_rng import _ours64 as _fill_loop
from machine import capacity_line
from numba import njit, prange

import fastquad as fq
from fastquad.frame import teacher_frame, to_frame
from fastquad.kernels.sgd import online_step
from fastquad.rng import run_states

CONFIGS = [(100, 4, 4), (500, 8, 8), (1000, 2, 2)]
RUNS = 256
RUNS_1 = 32  # runs of the one-thread kernel calls
LR = 0.05
# steps of the timed kernel calls (full mode; --quick takes a third)
STEPS = {(100, 4, 4): 3000, (500, 8, 8): 1200, (1000, 2, 2): 1000}
DOT_N = 512  # a (4, 512) block and a vector of 512: 20 KB in float64, in L1
FAST = dict(nogil=True, fastmath={"reassoc", "contract", "nsz"})


# ------------------------------------------------------------------------------------------
# Compiled probes
# ------------------------------------------------------------------------------------------


@njit(parallel=True, nogil=True)
def _fill_par(states, bufs, ncalls):
    """One stream and one buffer per row, rows spread over the threads."""
    acc = 0.0
    for r in prange(states.shape[0]):
        acc += _fill_loop(states[r], bufs[r], ncalls)
    return acc


@njit(parallel=True, nogil=True)
def _fill_par32(states, bufs, ncalls):
    acc = 0.0
    for r in prange(states.shape[0]):
        acc += _fill_loop32(states[r], bufs[r], ncalls)
    return acc


@njit(**FAST)
def _dot_loop(A, x, ncalls):
    """ncalls dot products of a row of A (4 rows, in L1) with x; the row changes every call so
    that no product can be hoisted out of the loop."""
    acc = A.dtype.type(0)
    for i in range(ncalls):
        r = i & 3
        s = A.dtype.type(0)
        for k in range(x.shape[0]):
            s += A[r, k] * x[k]
        acc += s
    return acc


@njit(parallel=True, nogil=True)
def _dot_par(A, X, ncalls):
    """_dot_loop on every thread, each with its own (4, n) block of A and its own x."""
    acc = 0.0
    for t in prange(X.shape[0]):
        acc += _dot_loop(A[t], X[t], ncalls)
    return acc


@njit(**FAST)
def _steps_only(W, v, Wt, vt, x, lr, nsteps):
    """The kernel's arithmetic alone: nsteps single-sample steps (``online_step``, the teacher
    in its frame) on one fixed sample x (d + 1,)."""
    K = W.shape[0]
    h = np.empty(K + Wt.shape[0], W.dtype)
    c = np.zeros(K, W.dtype)
    for _ in range(nsteps):
        online_step(W, v, Wt, Wt.shape[0], vt, lr, 0.0, True, c, h, x, x)
    return v[0]


# ------------------------------------------------------------------------------------------
# Measurement helpers
# ------------------------------------------------------------------------------------------


def best_time(fn, repeats, clock=time.perf_counter):
    best = math.inf
    for _ in range(repeats):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def calibrate(fn, seconds, clock=time.perf_counter):
    """Count n so that fn(n) lasts about ``seconds`` (after a warm-up call); probes at least a
    quarter of that, so a fixed cost (a parallel region's start) cannot fool it."""
    fn(4)
    n = 16
    while True:
        t = best_time(lambda: fn(n), 2, clock)
        if t >= seconds / 4:
            return max(1, int(n * seconds / t))
        n *= 4 if t < seconds / 32 else 2


def interleaved(calls, repeats, clock=time.perf_counter):
    """Best time of each thunk, the thunks alternating within each repeat so that a change of
    load hits them all alike."""
    best = {k: math.inf for k in calls}
    for _ in range(repeats):
        for k, fn in calls.items():
            t0 = clock()
            fn()
            best[k] = min(best[k], clock() - t0)
    return best


def blas_one_thread(n, dtype, repeats):
    """GEMM multiply-adds/s on one OpenBLAS thread, in a child process (NumPy can't switch)."""
    code = (
        "import time, numpy as np\n"
        f"n, r = {n}, {repeats}\n"
        f"a = np.random.default_rng(0).standard_normal((n, n)).astype('{dtype}')\n"
        "b = a.T.copy()\n"
        "a @ b\n"
        "best = float('inf')\n"
        "for _ in range(r):\n"
        "    t0 = time.perf_counter()\n"
        "    a @ b\n"
        "    best = min(best, time.perf_counter() - t0)\n"
        "print(n ** 3 / best)\n"
    )
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return math.nan


def fmt(r):
    if r is None or not math.isfinite(r):
        return "-"
    for scale, pre in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if r >= scale:
            return f"{r / scale:.3g} {pre}"
    return f"{r:.3g}"


def networks(d, K, M, n, dt):
    Wt, vt = fq.make_teacher(d, M, seed=1)
    W0, v0 = fq.make_student(d, K, scale=0.3, seed=2)
    return np.repeat(W0[None], n, 0), np.repeat(v0[None], n, 0), Wt, vt


def kernel_call(d, K, M, n, dt, threads):
    """fn(steps, check_every=None): one simulate_sgd call of n runs on ``threads`` threads."""
    Wn, vn, Wt, vt = networks(d, K, M, n, dt)

    def call(k, check_every=None):
        r = fq.simulate_sgd(
            Wn,
            vn,
            Wt,
            vt,
            LR,
            k / d,
            seeds=5,
            times=[0.0, k / d],
            dtype=dt,
            num_threads=threads,
            check_every=check_every,
        )
        assert (r.status == fq.STATUS_DONE).all()

    call(2)  # compile, warm up
    return call


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter measurements (about 35 s)")
    ap.add_argument("--float32", action="store_true", help="also the float32 kernel and bounds")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="cpu",
        help="clock of the one-thread probes: the thread's CPU time (default; "
        "steady on a shared machine) or wall time",
    )
    args = ap.parse_args()
    t_start = time.perf_counter()
    repeats = args.repeats or 3
    sec = 0.05 if args.quick else 0.12  # length of one timed probe
    clock1 = time.perf_counter if args.clock == "wall" else time.thread_time
    nth = numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(nth)
    dtypes = ["float64"] + (["float32"] if args.float32 else [])
    print(
        f"fastquad {fq.__version__}, numba {numba.__version__}, numpy {np.__version__}; "
        f"{os.cpu_count()} cores, {nth} numba threads; best of {repeats}; one-thread clock: "
        f"{args.clock}"
    )
    print(capacity_line() + "\n")

    # ---- Gaussian generation ---------------------------------------------------------------
    rng_rate = {}  # (dtype, threads, L) -> normals/s
    np_rate = {}
    gen = np.random.Generator(np.random.PCG64(1))
    print("N(0,1) normals/s, filling a buffer of L = d + 1 over and over")
    hdr = (
        f"{'L':>5} | {'normal_fill 1 thr':>17} {f'{nth} thr':>9} | "
        f"{'normal_fill32 1 thr':>19} {f'{nth} thr':>9} | {'numpy Gen. per buffer':>21}"
    )
    print(hdr)
    print("-" * len(hdr))
    for d, _, _ in CONFIGS:
        L = d + 1
        calls1, callsp = {}, {}
        for dt, one, par in (
            ("float64", _fill_loop, _fill_par),
            ("float32", _fill_loop32, _fill_par32),
        ):
            st1 = run_states(11, [0])[0]
            b1 = np.empty(L, dtype=dt)
            n1 = calibrate(lambda k, st1=st1, b1=b1, one=one: one(st1, b1, k), sec, clock1)
            calls1[dt] = (lambda st1=st1, b1=b1, one=one, n1=n1: one(st1, b1, n1), n1 * L)
            stp = run_states(12, np.arange(nth))
            bp = np.empty((nth, L), dtype=dt)
            npar = calibrate(lambda k, stp=stp, bp=bp, par=par: par(stp, bp, k), sec)
            callsp[dt] = (
                lambda stp=stp, bp=bp, par=par, npar=npar: par(stp, bp, npar),
                npar * L * nth,
            )
        bnp = np.empty(L)
        nnp = calibrate(lambda k: [gen.standard_normal(out=bnp) for _ in range(k)], sec, clock1)
        calls1["numpy"] = (lambda: [gen.standard_normal(out=bnp) for _ in range(nnp)], nnp * L)
        b1 = interleaved({k: fn for k, (fn, _) in calls1.items()}, repeats, clock1)
        bp = interleaved({k: fn for k, (fn, _) in callsp.items()}, repeats)
        for dt in ("float64", "float32"):
            rng_rate[(dt, 1, L)] = calls1[dt][1] / b1[dt]
            rng_rate[(dt, nth, L)] = callsp[dt][1] / bp[dt]
        np_rate[L] = calls1["numpy"][1] / b1["numpy"]
        print(
            f"{L:>5} | {fmt(rng_rate[('float64', 1, L)]):>17} "
            f"{fmt(rng_rate[('float64', nth, L)]):>9} | "
            f"{fmt(rng_rate[('float32', 1, L)]):>19} {fmt(rng_rate[('float32', nth, L)]):>9} | "
            f"{fmt(np_rate[L]):>21}"
        )
    big = np.empty(1 << 20)
    np_big = (1 << 20) / best_time(lambda: gen.standard_normal(out=big), repeats, clock1)
    print(
        f"numpy Generator(PCG64), one call of 2^20 normals: {fmt(np_big)}/s (one thread); "
        f"numba threading layer: {numba.threading_layer()}"
    )

    # ---- multiply-adds ---------------------------------------------------------------------
    fma = {}
    ng = 768 if args.quick else 1024
    for dt in ("float64", "float32"):
        a = np.random.default_rng(0).standard_normal((ng, ng)).astype(dt)
        b = a.T.copy()
        a @ b
        fma[("gemm", dt, nth)] = ng**3 / best_time(lambda: a @ b, repeats)
        fma[("gemm", dt, 1)] = blas_one_thread(ng, dt, repeats)
        A = np.random.default_rng(1).standard_normal((nth, 4, DOT_N)).astype(dt)
        X = np.random.default_rng(2).standard_normal((nth, DOT_N)).astype(dt)
        n1 = calibrate(lambda k: _dot_loop(A[0], X[0], k), sec, clock1)
        fma[("dot", dt, 1)] = (
            n1 * DOT_N / best_time(lambda: _dot_loop(A[0], X[0], n1), repeats, clock1)
        )
        npar = calibrate(lambda k: _dot_par(A, X, k), sec)
        fma[("dot", dt, nth)] = (
            npar * DOT_N * nth / best_time(lambda: _dot_par(A, X, npar), repeats)
        )
    print(f"\nmultiply-adds/s {'':>26} {'1 thread':>9} {f'{nth} threads':>10}")
    for kind, label in (("gemm", f"OpenBLAS gemm {ng}^3"), ("dot", f"Numba dot in L1 ({DOT_N})")):
        for dt in ("float64", "float32"):
            print(
                f"  {label:<26} {dt:<9} {fmt(fma[(kind, dt, 1)]):>9} "
                f"{fmt(fma[(kind, dt, nth)]):>10}"
            )
    print("  (gemm 1 thread: wall clock, in a child process)")

    # ---- the kernel against the bounds -----------------------------------------------------
    print(
        f"\ndirect kernel (simulate_sgd; {RUNS} runs on {nth} threads, {RUNS_1} on 1), "
        f"sample-steps/s against the bounds"
    )
    hdr = (
        f"{'dtype':>7} {'d':>5} {'K':>2} {'M':>2} {'thr':>3} | {'kernel':>8} | "
        f"{'RNG bound':>9} {'frac':>5} | {'FMA bd gemm':>11} {'frac':>5} | "
        f"{'FMA bd dot':>10} {'frac':>5}"
    )
    print(hdr)
    print("-" * len(hdr))
    where, summary = [], []
    for dt in dtypes:
        one, par = (_fill_loop, _fill_par) if dt == "float64" else (_fill_loop32, _fill_par32)
        for d, K, M in CONFIGS:
            steps = STEPS[(d, K, M)] // (3 if args.quick else 1)
            L = d + 1
            for threads, n in ((nth, RUNS), (1, RUNS_1)):
                call = kernel_call(d, K, M, n, dt, threads)
                st = run_states(13, np.arange(threads))
                buf = np.empty((threads, L), dtype=dt)
                if threads == 1:

                    def fill(st=st, b=buf, m=steps * n):
                        one(st[0], b[0], m)
                else:

                    def fill(st=st, b=buf, m=steps * n // threads):
                        par(st, b, m)

                calls = {"kernel": lambda: call(steps), "fill": fill, "1 step": lambda: call(1)}
                if threads > 1:
                    calls["no checks"] = lambda: call(steps, 10**9)
                clock = time.perf_counter if threads > 1 else clock1
                best = interleaved(calls, repeats, clock)
                work = n * steps
                rate = work / best["kernel"]
                rng_bound = (
                    max(
                        [v for (t, th, _), v in rng_rate.items() if t == dt and th == threads]
                        + [work * L / best["fill"]]
                    )
                    / L
                )
                fb_gemm = fma[("gemm", dt, threads)] / (2 * K * d + M * M)
                fb_dot = fma[("dot", dt, threads)] / (2 * K * d + M * M)
                if threads == nth:
                    summary.append(
                        f"{dt} d={d} K=M={K}: {rate / rng_bound:4.0%} of the RNG bound "
                        f"({fmt(rate)} / {fmt(rng_bound)})"
                    )
                    t_all = best
                else:  # per step without the fixed cost of a call
                    t_one = (best["kernel"] - best["1 step"]) / (n * (steps - 1))
                print(
                    f"{dt:>7} {d:>5} {K:>2} {M:>2} {threads:>3} | {fmt(rate):>8} | "
                    f"{fmt(rng_bound):>9} {rate / rng_bound:>5.0%} | {fmt(fb_gemm):>11} "
                    f"{rate / fb_gemm:>5.0%} | {fmt(fb_dot):>10} {rate / fb_dot:>5.0%}"
                )
            # one thread, per sample-step: normals alone, arithmetic alone
            Wn, vn, Wt, vt = networks(d, K, M, 1, dt)
            U, Wt_rot = teacher_frame(Wt[None])
            Wf = to_frame(Wn[:1], U)[0].astype(dt)
            Wtf = Wt_rot[0].astype(dt)
            vv, vtt = vn[0].astype(dt), vt.astype(dt)
            xs = np.random.default_rng(3).standard_normal(L).astype(dt)
            st = run_states(14, [0])[0]
            b1 = np.empty(L, dtype=dt)
            ns = calibrate(lambda k: one(st, b1, k), sec, clock1)
            _steps_only(Wf.copy(), vv.copy(), Wtf, vtt, xs, 1e-12, 4)
            parts = interleaved(
                {
                    "fill": lambda: one(st, b1, ns),
                    "math": lambda: _steps_only(Wf.copy(), vv.copy(), Wtf, vtt, xs, 1e-12, ns),
                },
                repeats,
                clock1,
            )
            t_fill, t_math = parts["fill"] / ns, parts["math"] / ns
            where.append(
                f"{dt:>7} {d:>5} {K:>2} {M:>2} | {t_one * 1e9:>7.0f} {t_fill * 1e9:>7.0f} "
                f"{t_math * 1e9:>7.0f} {(t_one - t_fill - t_math) * 1e9:>7.0f} "
                f"{(2 * K * d + M * M) / t_math / 1e9:>7.1f} | "
                f"{t_all['1 step'] * 1e3:>7.0f} ms {t_all['1 step'] / t_all['kernel']:>5.0%} | "
                f"{(t_all['kernel'] - t_all['no checks']) / t_all['kernel']:>+7.0%}"
            )
    print(
        f"\nwhere the time goes. One thread, ns per sample-step: the kernel (a call minus a "
        f"1-step call), its d + 1\nnormals alone, its arithmetic alone (online_step on a fixed "
        f"sample; G FMA/s achieved), the rest (loop,\ncalls, checks; it can come out negative "
        f"when the parts overlap in the core, or from noise).\n{nth} threads, {RUNS} runs: the "
        f"fixed cost of a call (a 1-step call; its share of the timed call above)\nand the "
        f"share of the periodic divergence checks (from a call with them off)."
    )
    hdr = (
        f"{'dtype':>7} {'d':>5} {'K':>2} {'M':>2} | {'kernel':>7} {'normals':>7} "
        f"{'arith':>7} {'rest':>7} {'GFMA/s':>7} | {'fixed cost':>16} | {'checks':>7}"
    )
    print(hdr)
    print("-" * len(hdr))
    print("\n".join(where))
    print("\nall cores, fraction of the RNG bound:")
    print("\n".join("  " + s for s in summary))
    print("\n" + capacity_line())
    print(
        f"\ntotal {time.perf_counter() - t_start:.0f} s; the machine may be shared: compare "
        f"fractions of one run."
    )


if __name__ == "__main__":
    main()
