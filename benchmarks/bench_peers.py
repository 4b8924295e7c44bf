"""Online-SGD throughput: fastquad's direct kernel against NumPy, PyTorch and JAX, side by side.

Sample-steps per second (one step = one fresh Gaussian sample through one run), best of
interleaved repeats, on (d, K, M) = (100, 4, 4), (500, 8, 8) and (1000, 2, 2), for
  - fastquad   ``simulate_sgd`` over a batch of runs (prange over runs, all cores);
  - np loop    NumPy, one run, one sample per Python step;
  - np batch   NumPy, all runs advanced together each Python step;
  - torch loop PyTorch, one run, one sample per Python step (the "per-step loop" peer);
  - torch batch PyTorch, all runs advanced together each step (the "batched" peer),
               ``torch.randn`` inputs, ``inference_mode``, update by hand; the batched
               mat-vec as multiply-and-sum (see torch_batched);
  - torch ag   (``--autograd``) the batched PyTorch step with the gradient from autograd;
  - jax        ``jit(vmap(run))`` over runs, ``run`` a ``lax.scan`` over steps drawing its
               input with ``jax.random.normal`` (threefry, key split each step); compile time
               is excluded from the rate and reported.
PyTorch runs on all cores or on one thread, whichever a short calibration finds faster (on a
shared machine its per-op thread barriers can cost 5x); the choice is printed. fastquad always
runs on all cores.
Every implementation does the same update as fastquad: online SGD on ``(f - y)^2 / 2`` with
teacher labels, ``w_j -= lr e v_j 2 h_j x / sqrt(d)``, ``v_j -= (lr / d) e h_j^2``. The batched
peers and fastquad do equal work (same runs, same steps); the one-run loops do the same steps
for one run. Like fastquad, every peer works in the teacher's frame (``fastquad.frame``: an
orthogonal change of input coordinates, exact in law, after which the teacher's rows live in
the first M coordinates), so its labels cost M^2 multiply-adds per sample, not M d; the
peers get the student and teacher already rotated (``--literal-teacher``: peers apply the
full (M, d) teacher instead). The peers get two small advantages: no label noise is drawn
(fastquad draws d + 1 normals per step; the benchmark uses label_noise = 0) and the teacher,
shared by all runs, is applied by one matrix product. Before timing, the script checks on a
tiny problem that every peer gives fastquad's final weights when fed fastquad's explicit
samples, and that with their own generators the final eps_g agrees in distribution (mean
within 5 standard errors).

    python benchmarks/bench_peers.py              # float64, about 1 minute
    python benchmarks/bench_peers.py --float32    # float64 and float32 side by side, ~2-3 min
    python benchmarks/bench_peers.py --quick      # smaller work, about 30-40 s

(times on 2 quiet cores; a loaded machine can double them). At these sizes a fastquad call
still carries a fixed cost (set-up and the initial and final order parameters of 256 runs),
printed below the table; it counts against fastquad.

Peers are optional: a missing torch or jax is reported (``pip install .[bench]``) and skipped.
The machine may be shared: compare the ratios of one run, not absolute rates across runs.
"""

import argparse
import math
import os
import time

import numba
import numpy as np
from machine import capacity_line

import fastquad as fq
from fastquad.frame import teacher_frame, to_frame

try:
    import torch
except ImportError:  # pragma: no cover - optional peer
    torch = None

try:
    import jax

    jax.config.update("jax_enable_x64", True)  # before any array exists; float32 stays explicit
    import jax.numpy as jnp
    from jax import lax
except ImportError:  # pragma: no cover - optional peer
    jax = None

CONFIGS = [(100, 4, 4), (500, 8, 8), (1000, 2, 2)]
LR = 0.05
# steps per configuration (full mode); the batched work is runs x steps
STEPS_FULL = {(100, 4, 4): 800, (500, 8, 8): 400, (1000, 2, 2): 200}
STEPS_QUICK = {(100, 4, 4): 300, (500, 8, 8): 150, (1000, 2, 2): 80}


# ------------------------------------------------------------------------------------------
# Exact eps_g of a batch of networks (the closed form, vectorised over runs)
# ------------------------------------------------------------------------------------------


def eps_g_batch(W, v, Wt, vt):
    """eps_g = ((trD)^2 + 2 trD2) / 2 for W (n, K, d), v (n, K), one teacher (M, d), (M,)."""
    W = np.asarray(W, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    d = W.shape[-1]
    Q = np.einsum("rkd,rjd->rkj", W, W) / d
    R = np.einsum("rkd,md->rkm", W, Wt) / d
    T = Wt @ Wt.T / d
    trD = np.einsum("rk,rkk->r", v, Q) - vt @ np.diag(T)
    trD2 = (
        np.einsum("rk,rkj,rj->r", v, Q**2, v)
        - 2 * np.einsum("rk,rkm,m->r", v, R**2, vt)
        + vt @ (T**2) @ vt
    )
    return (trD**2 + 2 * trD2) / 2


def in_frame(W0, Wt, literal=False):
    """The problem in the teacher's frame, as the peers get it: the student W0 (K, d) rotated,
    the teacher's (M, M) head (its rows are zero beyond column M), and the full rotated
    teacher (M, d) for exact eps_g. ``literal``: no rotation, the full teacher."""
    if literal:
        return W0, Wt, Wt
    U, Wt_rot = teacher_frame(Wt[None])
    M = Wt.shape[0]
    return to_frame(W0[None], U)[0], np.ascontiguousarray(Wt_rot[0][:, :M]), Wt_rot[0]


# ------------------------------------------------------------------------------------------
# Peers. Each takes a float dtype through its arrays; X (n, steps, d) replaces the draws; a
# teacher of shape (M, m) with m < d applies to the first m coordinates of the inputs.
# ------------------------------------------------------------------------------------------


def numpy_loop(W, v, Wt, vt, lr, steps, rng, X=None):
    """One run (W (K, d)), one sample per step."""
    W, v = W.copy(), v.copy()
    real = W.dtype.type
    d = W.shape[1]
    s = real(1.0 / math.sqrt(d))
    a, b = real(lr * 2.0 / math.sqrt(d)), real(lr / d)
    for t in range(steps):
        x = rng.standard_normal(d, dtype=W.dtype) if X is None else X[t]
        h = (W @ x) * s
        hs = (Wt @ x[: Wt.shape[1]]) * s
        e = v @ (h * h) - vt @ (hs * hs)
        W -= np.outer((a * e) * v * h, x)
        v -= (b * e) * h * h
    return W, v


def numpy_batched(W, v, Wt, vt, lr, steps, rng, X=None):
    """All runs (W (n, K, d)) advanced together: one (n, d) draw and batched products a step."""
    W, v = W.copy(), v.copy()
    real = W.dtype.type
    n, K, d = W.shape
    s = real(1.0 / math.sqrt(d))
    a, b = real(lr * 2.0 / math.sqrt(d)), real(lr / d)
    WtT = np.ascontiguousarray(Wt.T)
    for t in range(steps):
        x = rng.standard_normal((n, d), dtype=W.dtype) if X is None else X[:, t]
        h = np.matmul(W, x[:, :, None])[:, :, 0] * s
        hs = (x[:, : WtT.shape[0]] @ WtT) * s
        e = (v * h * h).sum(1) - (hs * hs) @ vt
        W -= ((a * e)[:, None] * v * h)[:, :, None] * x[:, None, :]
        v -= (b * e)[:, None] * h * h
    return W, v


def torch_loop(W, v, Wt, vt, lr, steps, gen, X=None):
    """One run, one sample per step, PyTorch tensors, update by hand."""
    with torch.inference_mode():
        W, v = W.clone(), v.clone()
        d = W.shape[1]
        s = 1.0 / math.sqrt(d)
        a, b = lr * 2.0 / math.sqrt(d), lr / d
        for t in range(steps):
            x = torch.randn(d, dtype=W.dtype, generator=gen) if X is None else X[t]
            h = torch.mv(W, x).mul_(s)
            hs = torch.mv(Wt, x[: Wt.shape[1]]).mul_(s)
            h2 = h * h
            e = torch.dot(v, h2) - torch.dot(vt, hs * hs)
            W.addr_((v * h).mul_(a * e), x, alpha=-1.0)
            v.sub_(h2.mul_(b * e))
    return W, v


def torch_batched(W, v, Wt, vt, lr, steps, gen, X=None):
    """All runs together each step, update by hand, in inference mode. The batched
    matrix-vector product is a broadcast multiply-and-sum and the rank-1 updates one
    ``addcmul_``: at these small per-run shapes on CPU these forms are faster than ``bmm`` /
    ``einsum`` / ``baddbmm_``, so the peer gets its faster form (``matvec="bmm"`` selects the
    literal bmm + baddbmm_ form; the correctness check runs it too)."""
    return _torch_batched(W, v, Wt, vt, lr, steps, gen, X, "mulsum")


def _torch_batched(W, v, Wt, vt, lr, steps, gen, X, matvec):
    with torch.inference_mode():
        W, v = W.clone(), v.clone()
        n, K, d = W.shape
        s = 1.0 / math.sqrt(d)
        a, b = lr * 2.0 / math.sqrt(d), lr / d
        WtT = Wt.T.contiguous()
        for t in range(steps):
            x = torch.randn(n, d, dtype=W.dtype, generator=gen) if X is None else X[:, t]
            xr = x.unsqueeze(1)
            if matvec == "bmm":
                h = torch.bmm(W, x.unsqueeze(2)).squeeze(2).mul_(s)
            else:
                h = (W * xr).sum(2).mul_(s)
            hs = torch.mm(x[:, : WtT.shape[0]], WtT).mul_(s)
            h2 = h * h
            e = (v * h2).sum(1) - (hs * hs) @ vt
            c = (v * h).mul_((a * e).unsqueeze(1)).unsqueeze(2)
            if matvec == "bmm":
                W.baddbmm_(c, xr, alpha=-1.0)
            else:
                W.addcmul_(c, xr, value=-1.0)
            v.sub_(h2.mul_((b * e).unsqueeze(1)))
    return W, v


def torch_autograd(W, v, Wt, vt, lr, steps, gen, X=None):
    """The batched PyTorch step with the per-sample gradients from autograd (the sum of the
    runs' losses has the per-run gradients as its partial derivatives)."""
    W = W.clone().requires_grad_(True)
    v = v.clone().requires_grad_(True)
    n, K, d = W.shape
    s = 1.0 / math.sqrt(d)
    WtT = Wt.T.contiguous()
    for t in range(steps):
        x = torch.randn(n, d, dtype=W.dtype, generator=gen) if X is None else X[:, t]
        with torch.no_grad():
            y = (torch.mm(x[:, : WtT.shape[0]], WtT) * s).square() @ vt
        h = torch.bmm(W, x.unsqueeze(2)).squeeze(2) * s
        f = (v * h * h).sum(1)
        loss = 0.5 * (f - y).square().sum()
        gW, gv = torch.autograd.grad(loss, (W, v))
        with torch.no_grad():
            W.sub_(gW, alpha=lr)
            v.sub_(gv, alpha=lr / d)
    return W.detach(), v.detach()


def _jax_step(W, v, x, Wt, vt, lr, d):
    s = 1.0 / math.sqrt(d)
    h = (W @ x) * s
    hs = (Wt @ x[: Wt.shape[1]]) * s
    e = v @ (h * h) - vt @ (hs * hs)
    W = W - ((lr * 2.0 * s) * e * v * h)[:, None] * x[None, :]
    v = v - (lr / d) * e * h * h
    return W, v


def jax_runner(d, steps, lr, dtype):
    """jit(vmap(run)): run = lax.scan over steps, a threefry key split and d normals a step."""

    def run(W, v, key, Wt, vt):
        def body(carry, _):
            W, v, key = carry
            key, sub = jax.random.split(key)
            x = jax.random.normal(sub, (d,), dtype)
            W, v = _jax_step(W, v, x, Wt, vt, lr, d)
            return (W, v, key), None

        (W, v, _), _ = lax.scan(body, (W, v, key), None, length=steps)
        return W, v

    return jax.jit(jax.vmap(run, in_axes=(0, 0, 0, None, None)))


def jax_explicit(d, lr):
    """The same step, scanning over given inputs X (steps, d) per run (for the check)."""

    def run(W, v, X, Wt, vt):
        def body(carry, x):
            return _jax_step(*carry, x, Wt, vt, lr, d), None

        (W, v), _ = lax.scan(body, (W, v), X)
        return W, v

    return jax.jit(jax.vmap(run, in_axes=(0, 0, 0, None, None)))


def jax_keys(seed, n):
    return jax.random.split(jax.random.PRNGKey(seed), n)  # threefry2x32, the default


# ------------------------------------------------------------------------------------------
# Correctness checks on tiny problems
# ------------------------------------------------------------------------------------------


def _rel(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _stack(pairs):
    """[(W, v) per run] -> (W (n, K, d), v (n, K)) as NumPy."""
    return tuple(np.stack([np.asarray(p[i]) for p in pairs]) for i in (0, 1))


def check_same_samples(dt, autograd):
    """Fed fastquad's explicit samples, every peer must end at fastquad's final weights."""
    d, K, M, n, steps = 16, 3, 2, 4, 60
    real = np.dtype(dt)
    Wt, vt = fq.make_teacher(d, M, seed=1)
    W0, v0 = fq.make_student(d, K, scale=0.3, seed=2)
    Wn = np.repeat(W0[None], n, 0)
    vn = np.repeat(v0[None], n, 0)
    X = np.random.default_rng(5).standard_normal((n, steps, d)).astype(real)
    _, Wt_head, Wt_rot = in_frame(W0, Wt)
    # fastquad, on explicit samples, applies the full rotated teacher; the peers its head
    ref = fq.simulate_sgd(
        Wn,
        vn,
        Wt_rot,
        vt,
        LR,
        steps / d,
        times=[0.0, steps / d],
        samples=(X[:, :, None, :], np.zeros((n, steps, 1))),
        dtype=dt,
    )
    cast = [a.astype(real) for a in (Wn, vn, Wt_head, vt)]
    got = {
        "np loop": _stack(
            [
                numpy_loop(cast[0][r], cast[1][r], cast[2], cast[3], LR, steps, None, X[r])
                for r in range(n)
            ]
        ),
        "np batch": numpy_batched(*cast, LR, steps, None, X),
    }
    if torch is not None:
        tt = [torch.from_numpy(a) for a in cast]
        Xt = torch.from_numpy(X)
        got["torch loop"] = _stack(
            [torch_loop(tt[0][r], tt[1][r], tt[2], tt[3], LR, steps, None, Xt[r]) for r in range(n)]
        )
        got["torch batch"] = torch_batched(*tt, LR, steps, None, Xt)
        got["torch bmm"] = _torch_batched(*tt, LR, steps, None, Xt, "bmm")
        if autograd:
            got["torch ag"] = torch_autograd(*tt, LR, steps, None, Xt)
    if jax is not None:
        j = [jnp.asarray(a) for a in cast]
        got["jax"] = jax_explicit(d, LR)(j[0], j[1], jnp.asarray(X), j[2], j[3])
    tol = 1e-10 if dt == "float64" else 2e-4
    errs = {name: max(_rel(W, ref.W), _rel(v, ref.v_final)) for name, (W, v) in got.items()}
    ok = all(e < tol for e in errs.values())
    return ok, (
        f"  same samples, {dt}: max rel. diff of final (W, v) from fastquad's: "
        + ", ".join(f"{k} {e:.0e}" for k, e in errs.items())
        + f" (tol {tol:g})"
    )


def check_own_generators(autograd):
    """With their own generators, the final eps_g must have fastquad's law (z-test on means)."""
    d, K, M, steps, lr = 20, 2, 2, 400, 0.03
    nb, nl = 400, 32  # runs of the batched implementations, of the one-run loops
    Wt, vt = fq.make_teacher(d, M, seed=1)
    W0, v0 = fq.make_student(d, K, scale=0.3, seed=2)
    Wn = np.repeat(W0[None], nb, 0)
    vn = np.repeat(v0[None], nb, 0)
    res = fq.simulate_sgd(Wn, vn, Wt, vt, lr, steps / d, seeds=7, times=[0.0, steps / d])
    e0 = eps_g_batch(W0[None], v0[None], Wt, vt)[0]
    assert abs(e0 - res.eps_g[0, 0]) < 1e-12 * max(1.0, e0)  # eps_g_batch agrees with fastquad
    eps = {"fastquad": res.eps_g[:, -1]}
    # the peers get the problem in the teacher's frame (same law); eps_g with the full
    # rotated teacher
    W0, Wt_head, Wt = in_frame(W0, Wt)
    Wn = np.repeat(W0[None], nb, 0)
    rng = np.random.default_rng(11)
    eps["np loop"] = eps_g_batch(
        *_stack([numpy_loop(W0, v0, Wt_head, vt, lr, steps, rng) for _ in range(nl)]), Wt, vt
    )
    eps["np batch"] = eps_g_batch(*numpy_batched(Wn, vn, Wt_head, vt, lr, steps, rng), Wt, vt)
    if torch is not None:
        gen = torch.Generator().manual_seed(11)
        tt = [torch.from_numpy(a) for a in (Wn, vn, Wt_head, vt)]
        eps["torch loop"] = eps_g_batch(
            *_stack(
                [torch_loop(tt[0][0], tt[1][0], tt[2], tt[3], lr, steps, gen) for _ in range(nl)]
            ),
            Wt,
            vt,
        )
        eps["torch batch"] = eps_g_batch(*torch_batched(*tt, lr, steps, gen), Wt, vt)
        if autograd:
            eps["torch ag"] = eps_g_batch(*torch_autograd(*tt, lr, steps, gen), Wt, vt)
    if jax is not None:
        j = [jnp.asarray(a) for a in (Wn, vn, Wt_head, vt)]
        W, v = jax_runner(d, steps, lr, jnp.float64)(j[0], j[1], jax_keys(11, nb), j[2], j[3])
        eps["jax"] = eps_g_batch(np.asarray(W), np.asarray(v), Wt, vt)
    ref = eps.pop("fastquad")
    m0, s0 = ref.mean(), ref.std(ddof=1) / math.sqrt(ref.size)
    ok = True
    parts = [f"fastquad {m0:.3f}+-{s0:.3f}"]
    for name, e in eps.items():
        m, s = e.mean(), e.std(ddof=1) / math.sqrt(e.size)
        z = (m - m0) / math.hypot(s, s0)
        ok &= bool(np.isfinite(e).all() and abs(z) < 5)
        parts.append(f"{name} {m:.3f} (z {z:+.1f})")
    return ok, (
        f"  own generators, float64, mean final eps_g (from {e0:.2f}; d={d}, K=M={K}, "
        f"lr={lr}, t={steps / d:g}; {nb} runs, loops {nl}): " + ", ".join(parts)
    )


# ------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------


def fmt_rate(r):
    if r is None:
        return "-"
    return f"{r / 1e6:.2f} M" if r >= 1e6 else f"{r / 1e3:.1f} k"


def _best_time(fn, repeats):
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _torch_threads(fn, all_threads, cal_steps):
    """1 or all_threads, whichever runs ``fn(cal_steps)`` faster (alternating, best of 3)."""
    if all_threads <= 1:
        return 1
    times = {nt: math.inf for nt in (all_threads, 1)}
    for _ in range(3):
        for nt in times:
            torch.set_num_threads(nt)
            fn(2)  # thread pool start-up
            times[nt] = min(times[nt], _best_time(lambda: fn(cal_steps), 1))
    return min(times, key=times.get)


def time_config(d, K, M, n, steps, dt, repeats, autograd, threads, literal=False):
    """Best sample-steps/s of every implementation (repeats interleaved so that a change of
    load hits all alike), JAX's compile time, fastquad's 1-step call time, torch threads."""
    real = np.dtype(dt)
    Wt, vt = fq.make_teacher(d, M, seed=1)
    W0, v0 = fq.make_student(d, K, scale=0.3, seed=2)
    Wn = np.repeat(W0[None], n, 0)
    vn = np.repeat(v0[None], n, 0)
    W0f, Wt_head, Wt_full = in_frame(W0, Wt, literal)
    cast = [
        np.ascontiguousarray(a.astype(real)) for a in (np.repeat(W0f[None], n, 0), vn, Wt_head, vt)
    ]
    rng = np.random.default_rng(0)
    runs = {}  # name -> (fn(steps) returning W (n?, K, d), v; runs in the call)

    def fq_call(k):
        r = fq.simulate_sgd(Wn, vn, Wt, vt, LR, k / d, seeds=3, times=[0.0, k / d], dtype=dt)
        assert (r.status == fq.STATUS_DONE).all(), "a fastquad run diverged: lower LR"
        return r.W, r.v_final

    runs["fastquad"] = (fq_call, n)
    runs["np loop"] = (
        lambda k: numpy_loop(cast[0][0], cast[1][0], cast[2], cast[3], LR, k, rng),
        1,
    )
    runs["np batch"] = (lambda k: numpy_batched(*cast, LR, k, rng), n)
    nthreads = {}
    if torch is not None:
        gen = torch.Generator().manual_seed(0)
        tt = [torch.from_numpy(a) for a in cast]
        runs["torch loop"] = (lambda k: torch_loop(tt[0][0], tt[1][0], tt[2], tt[3], LR, k, gen), 1)
        runs["torch batch"] = (lambda k: torch_batched(*tt, LR, k, gen), n)
        if autograd:
            runs["torch ag"] = (lambda k: torch_autograd(*tt, LR, k, gen), n)
        for name in [x for x in runs if x.startswith("torch")]:
            nthreads[name] = _torch_threads(runs[name][0], threads, max(6, steps // 8))
    compile_s = None
    if jax is not None:
        jdt = jnp.float64 if dt == "float64" else jnp.float32
        args = (
            jnp.asarray(cast[0]),
            jnp.asarray(cast[1]),
            jax_keys(0, n),
            jnp.asarray(cast[2]),
            jnp.asarray(cast[3]),
        )
        t0 = time.perf_counter()
        compiled = jax_runner(d, steps, LR, jdt).lower(*args).compile()
        compile_s = time.perf_counter() - t0

        def jax_call(k):
            assert k == steps  # compiled for this length; its first timed call is the warm-up
            W, v = compiled(*args)
            return W.block_until_ready(), v.block_until_ready()

        runs["jax"] = (jax_call, n)
    for name, (fn, _) in runs.items():  # warm-up: JIT, caches, thread pools
        if name != "jax":
            if name in nthreads:
                torch.set_num_threads(nthreads[name])
            fn(2)
    call_1 = _best_time(lambda: fq_call(1), repeats)
    best = {name: math.inf for name in runs}
    finals = {}
    for _ in range(repeats):
        for name, (fn, _) in runs.items():
            if name in nthreads:
                torch.set_num_threads(nthreads[name])
            t0 = time.perf_counter()
            finals[name] = fn(steps)
            best[name] = min(best[name], time.perf_counter() - t0)
    if torch is not None:
        torch.set_num_threads(threads)
    for name, (W, v) in finals.items():  # the timed runs must have stayed finite
        W, v = np.asarray(W), np.asarray(v)
        teacher = Wt if name == "fastquad" else Wt_full
        if not np.isfinite(eps_g_batch(W.reshape(-1, K, d), v.reshape(-1, K), teacher, vt)).all():
            print(f"  warning: {name} produced non-finite weights at d={d}")
    rates = {name: nr * steps / best[name] for name, (_, nr) in runs.items()}
    return rates, compile_s, call_1, nthreads


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller work (about 40 s)")
    ap.add_argument(
        "--float32", action="store_true", help="also float32, side by side with float64"
    )
    ap.add_argument("--runs", type=int, default=256, help="runs in a batch (default 256)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved timed repeats")
    ap.add_argument("--autograd", action="store_true", help="also time the autograd PyTorch peer")
    ap.add_argument(
        "--literal-teacher",
        action="store_true",
        help="peers apply the full (M, d) teacher (no teacher's frame)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="threads for numba and torch (default: all cores)",
    )
    args = ap.parse_args()
    t_start = time.perf_counter()
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    dtypes = ["float64"] + (["float32"] if args.float32 else [])
    steps_of = STEPS_QUICK if args.quick else STEPS_FULL
    repeats = args.repeats or (2 if args.quick else 3)
    n = args.runs

    vers = [f"fastquad {fq.__version__}", f"numba {numba.__version__}", f"numpy {np.__version__}"]
    if torch is not None:
        torch.set_num_threads(args.threads)
        vers.append(f"torch {torch.__version__}")
    if jax is not None:
        vers.append(f"jax {jax.__version__} ({jax.default_backend()})")
    print(", ".join(vers) + f"; {os.cpu_count()} cores, {numba.get_num_threads()} numba threads")
    print(capacity_line())
    if torch is None:
        print("skipped: torch not installed (pip install .[bench])")
    if jax is None:
        print("skipped: jax not installed (pip install .[bench])")

    print("\ncheck on tiny problems: every peer does fastquad's update")
    results = [check_same_samples(dt, args.autograd) for dt in dtypes]
    results.append(check_own_generators(args.autograd))
    print("\n".join(line for _, line in results))
    ok = all(r for r, _ in results)
    print(f"  -> {'passed' if ok else 'FAILED: the comparison below is not like for like'}")

    summary = []
    for dt in dtypes:
        names = ["fastquad", "np loop", "np batch"]
        if torch is not None:
            names += ["torch loop", "torch batch"] + (["torch ag"] if args.autograd else [])
        if jax is not None:
            names += ["jax"]
        print(
            f"\n{dt}: sample-steps/s, batch of {n} runs (loops: 1 run, same steps), "
            f"best of {repeats}"
        )
        hdr = (
            f"{'d':>5} {'K':>2} {'M':>2} {'steps':>5} | "
            + " ".join(f"{x:>11}" for x in names)
            + f" | {'jax compile':>11} | {'fq / best peer':>20}"
        )
        print(hdr)
        print("-" * len(hdr))
        notes = []
        for d, K, M in CONFIGS:
            steps = steps_of[(d, K, M)]
            rates, comp, call_1, nthreads = time_config(
                d, K, M, n, steps, dt, repeats, args.autograd, args.threads, args.literal_teacher
            )
            peers = {k: rates[k] for k in ("torch batch", "jax") if k in rates}
            if peers:
                best_name = max(peers, key=peers.get)
                ratio = rates["fastquad"] / peers[best_name]
                rtxt = f"{ratio:.1f}x ({best_name})"
                summary.append(
                    f"{dt:>7} d={d:<4} K=M={K}: fastquad {fmt_rate(rates['fastquad'])}"
                    f" / {best_name} {fmt_rate(peers[best_name])} = {ratio:5.1f}x"
                )
            else:
                rtxt = "(no peer)"
            ctxt = f"{comp:>9.2f} s" if comp is not None else f"{'-':>11}"
            print(
                f"{d:>5} {K:>2} {M:>2} {steps:>5} | "
                + " ".join(f"{fmt_rate(rates.get(x)):>11}" for x in names)
                + f" | {ctxt} | {rtxt:>20}"
            )
            th = ", ".join(f"{k} {v}" for k, v in nthreads.items())
            notes.append(
                f"d={d}: fastquad 1-step call {call_1 * 1e3:.0f} ms"
                + (f"; torch threads: {th}" if th else "")
            )
        print("  " + "\n  ".join(notes))
    print("\nfastquad / faster of (JAX, PyTorch batched), equal work:")
    print("\n".join("  " + s for s in summary) if summary else "  no peer installed")
    print("\n" + capacity_line())
    print(
        f"\ntotal {time.perf_counter() - t_start:.0f} s; the machine may be shared: compare "
        f"ratios of one run."
    )


if __name__ == "__main__":
    main()
