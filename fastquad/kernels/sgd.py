"""Online SGD, finite-data GD and the parameter-space population flow, batched over runs.

Every kernel takes a batch of runs (leading axis n) and runs them in one ``prange`` loop; each
iteration reads and writes only its own run's slices and owns its random stream, so a run is
bit-identical alone or inside any batch, with any thread count. Weights are updated in place
(the public layer passes copies). Exact eps_g is recorded from the weights, never sampled.

Activations: every kernel takes the student's and the teacher's activation codes ``s`` and ``t``
(:mod:`fastquad.kernels.activation`; the entry points default them to quadratic) as runtime
integers, so one compiled kernel serves every pair. A quadratic student with a quadratic teacher
takes the arithmetic these kernels always did (same operations in the same order: the same
bits); every other pair takes the generic path beside it, ``g`` and ``g'`` evaluated per unit.
"""

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from ..rng import normal_fill, normal_fill32, randbelow
from .activation import ERF, LINEAR, QUADRATIC, RELU, act, act_prime
from .arrays import axpy_into, copy_into
from .closed_form import eps_g_act, gram_into, population_gradients_act_into
from .options import FAST, JIT
from .status import STATUS_DIVERGED, STATUS_DONE


def fill_normals(state, out):
    """Fill out with N(0, 1) draws of its own precision (32-bit normals for float32)."""
    if out.dtype == np.float32:
        normal_fill32(state, out)
    else:
        normal_fill(state, out)


@overload(fill_normals)
def _fill_normals_nb(state, out):
    if out.dtype == types.float32:
        return lambda state, out: normal_fill32(state, out)
    return lambda state, out: normal_fill(state, out)


@njit(inline="always", **FAST)
def dots_into(A, n_rows, x, out, scale):
    """out[j] = scale * A[j] . x for the first n_rows rows of A.

    Four rows share each load of x and give four independent accumulation chains: this is
    what lifts the dot products from latency-bound to near the L1 load limit (1.4-1.8x).
    """
    d = x.shape[0]
    zero = x.dtype.type(0)  # accumulate in the data's precision (float32 mode stays 32-bit)
    j = 0
    while j + 4 <= n_rows:
        s0 = zero
        s1 = zero
        s2 = zero
        s3 = zero
        for k in range(d):
            xk = x[k]
            s0 += A[j, k] * xk
            s1 += A[j + 1, k] * xk
            s2 += A[j + 2, k] * xk
            s3 += A[j + 3, k] * xk
        out[j] = s0 * scale
        out[j + 1] = s1 * scale
        out[j + 2] = s2 * scale
        out[j + 3] = s3 * scale
        j += 4
    while j < n_rows:
        s = zero
        for k in range(d):
            s += A[j, k] * x[k]
        out[j] = s * scale
        j += 1


@njit(inline="always", **FAST)
def subtract_outer(A, n_rows, c, x):
    """A[j] -= c[j] * x for the first n_rows rows (blocked like ``dots_into``)."""
    d = x.shape[0]
    j = 0
    while j + 4 <= n_rows:
        c0 = c[j]
        c1 = c[j + 1]
        c2 = c[j + 2]
        c3 = c[j + 3]
        for k in range(d):
            xk = x[k]
            A[j, k] -= c0 * xk
            A[j + 1, k] -= c1 * xk
            A[j + 2, k] -= c2 * xk
            A[j + 3, k] -= c3 * xk
        j += 4
    while j < n_rows:
        cj = c[j]
        for k in range(d):
            A[j, k] -= cj * x[k]
        j += 1


@njit(inline="always", **FAST)
def quad_form(w, h, lo, hi):
    """sum_{j in [lo, hi)} w[j - lo] h[j]^2: a quadratic network's output from its
    pre-activations."""
    f = h.dtype.type(0)
    for j in range(lo, hi):
        f += w[j - lo] * h[j] * h[j]
    return f


# The per-unit loops of the other activations come in one copy per activation, each called with
# its code a constant: act's tests of the code fold away, and ReLU's max is a select rather than
# a branch on the sign of every pre-activation (that branch made a ReLU step at K = M = 8,
# d = 100 cost 1.24x the quadratic one; now 1.02x). act computes erf in float64: values go back
# to the data's precision.


@njit(inline="always", **FAST)
def _act_sum(code, w, h, lo, hi):
    real = h.dtype.type
    f = real(0)
    for j in range(lo, hi):
        f += w[j - lo] * real(act(code, h[j]))
    return f


@njit(inline="always", **FAST)
def net_output(code, w, h, lo, hi):
    """sum_{j in [lo, hi)} w[j - lo] g(h[j]) for activation ``code``: a network's output from
    its pre-activations (quadratic: :func:`quad_form`, its arithmetic unchanged)."""
    if code == QUADRATIC:
        return quad_form(w, h, lo, hi)
    if code == LINEAR:
        return _act_sum(LINEAR, w, h, lo, hi)
    if code == RELU:
        return _act_sum(RELU, w, h, lo, hi)
    return _act_sum(ERF, w, h, lo, hi)


@njit(inline="always", **FAST)
def _slopes(code, x, v, h, scale, c):
    real = h.dtype.type
    for j in range(c.shape[0]):
        c[j] = x * v[j] * real(act_prime(code, h[j])) * scale


@njit(inline="always", **FAST)
def slopes_into(code, x, v, h, scale, c):
    """c[j] = x v_j g'(h_j) scale for j < len(c): a sample's rank-1 update of the first layer,
    ``x = step e``."""
    if code == LINEAR:
        _slopes(LINEAR, x, v, h, scale, c)
    elif code == RELU:
        _slopes(RELU, x, v, h, scale, c)
    elif code == ERF:
        _slopes(ERF, x, v, h, scale, c)
    else:
        _slopes(QUADRATIC, x, v, h, scale, c)


@njit(inline="always", **FAST)
def _add_act(code, x, h, out):
    real = h.dtype.type
    for j in range(out.shape[0]):
        out[j] += x * real(act(code, h[j]))


@njit(inline="always", **FAST)
def add_act_into(code, x, h, out):
    """out[j] += x g(h_j) for j < len(out): a sample's term of the second layer's gradient."""
    if code == LINEAR:
        _add_act(LINEAR, x, h, out)
    elif code == RELU:
        _add_act(RELU, x, h, out)
    elif code == ERF:
        _add_act(ERF, x, h, out)
    else:
        _add_act(QUADRATIC, x, h, out)


@njit(inline="always", **FAST)
def update_then_dots(W, K, c, x_old, x_new, h, scale):
    """W[j] -= c[j] * x_old, then h[j] = scale * W[j] . x_new, for j < K, in one pass over W.

    Fusing one step's rank-1 update with the next step's dot products reads and writes each
    weight once per step instead of three times; rows go four (then two) at a time so that
    they share each load of x_old and x_new.
    """
    d = W.shape[1]
    zero = x_new.dtype.type(0)
    j = 0
    while j + 4 <= K:
        c0 = c[j]
        c1 = c[j + 1]
        c2 = c[j + 2]
        c3 = c[j + 3]
        s0 = zero
        s1 = zero
        s2 = zero
        s3 = zero
        for k in range(d):
            xo = x_old[k]
            xn = x_new[k]
            a0 = W[j, k] - c0 * xo
            a1 = W[j + 1, k] - c1 * xo
            a2 = W[j + 2, k] - c2 * xo
            a3 = W[j + 3, k] - c3 * xo
            W[j, k] = a0
            W[j + 1, k] = a1
            W[j + 2, k] = a2
            W[j + 3, k] = a3
            s0 += a0 * xn
            s1 += a1 * xn
            s2 += a2 * xn
            s3 += a3 * xn
        h[j] = s0 * scale
        h[j + 1] = s1 * scale
        h[j + 2] = s2 * scale
        h[j + 3] = s3 * scale
        j += 4
    if j + 2 <= K:  # two rows left (K = 2, 3, 6, 7, ...): they too share the loads of x
        c0 = c[j]
        c1 = c[j + 1]
        s0 = zero
        s1 = zero
        for k in range(d):
            xo = x_old[k]
            xn = x_new[k]
            a0 = W[j, k] - c0 * xo
            a1 = W[j + 1, k] - c1 * xo
            W[j, k] = a0
            W[j + 1, k] = a1
            s0 += a0 * xn
            s1 += a1 * xn
        h[j] = s0 * scale
        h[j + 1] = s1 * scale
        j += 2
    if j < K:
        cj = c[j]
        s = zero
        for k in range(d):
            a = W[j, k] - cj * x_old[k]
            W[j, k] = a
            s += a * x_new[k]
        h[j] = s * scale


@njit(inline="always", **FAST)
def online_step(
    W, v, Wt, support, vt, lr, sigma, train_v, c, h, x_old, x_new, s=QUADRATIC, t=QUADRATIC
):
    """One single-sample SGD step with the rank-1 weight update left pending.

    On entry W lacks the previous step's update ``W -= c x_old`` (c = 0 if none is pending);
    this applies it, takes the pre-activations of the sample ``x_new[:d]`` (the teacher rows
    have their support in the first ``support`` columns), uses ``x_new[d]`` as the standard
    label-noise draw, updates v and leaves this step's update pending in c:
    ``c_j = lr e v_j g'(h_j) / sqrt d``, ``v_j -= (lr / d) e g(h_j)`` with the student's
    activation s (the teacher's, t, gives the label). h (K + M,) is scratch. Returns False if
    the per-sample error is not finite.
    """
    K, d = W.shape
    M = Wt.shape[0]
    real = x_new.dtype.type
    inv_sqrt_d = real(1.0 / math.sqrt(d))
    update_then_dots(W, K, c, x_old, x_new, h, inv_sqrt_d)
    zero = real(0)
    for m in range(M):
        acc = zero
        for k in range(support):
            acc += Wt[m, k] * x_new[k]
        h[K + m] = acc * inv_sqrt_d
    # the quadratic pair's arithmetic is kept whole in its own block: branching per network
    # here let LLVM (free to reassociate) compile the quadratic v update differently, by an ulp
    if s == QUADRATIC and t == QUADRATIC:
        target = quad_form(vt, h, K, K + M) + real(sigma) * x_new[d]
        e = quad_form(v, h, 0, K) - target
        step = real(lr)
        two = real(2.0)
        for j in range(K):
            c[j] = step * e * v[j] * two * h[j] * inv_sqrt_d
        if train_v:
            step_v = real(lr / d)
            for j in range(K):
                v[j] -= step_v * e * h[j] * h[j]
    else:
        target = net_output(t, vt, h, K, K + M) + real(sigma) * x_new[d]
        e = net_output(s, v, h, 0, K) - target
        slopes_into(s, real(lr) * e, v, h, inv_sqrt_d, c)
        if train_v:
            add_act_into(s, -(real(lr / d) * e), h, v)
    return math.isfinite(e)


@njit(**FAST)
def apply_pending(W, c, x):
    """W -= c x (the pending update of the last step), then c = 0."""
    K, d = W.shape
    for j in range(K):
        cj = c[j]
        for k in range(d):
            W[j, k] -= cj * x[k]
        c[j] = 0


@njit(**FAST)
def labels_into(Wt, vt, X, noise, y, t):
    """y_b = sum_n v*_n g_t(w*_n . x_b / sqrt d) + noise_b for rows X (B, d), activation t."""
    M, d = Wt.shape
    hs = np.empty(M, X.dtype)
    for b in range(X.shape[0]):
        dots_into(Wt, M, X[b], hs, X.dtype.type(1.0 / math.sqrt(d)))
        y[b] = net_output(t, vt, hs, 0, M) + noise[b]


@njit(**FAST)
def batch_step(A, K, v, vt, X, y, noise, lr, train_v, h, e, c, s, t):
    """One (mini-)batch gradient step on the per-sample loss (f - y)^2 / 2.

    A holds the student rows A[:K] (updated in place) and, when ``vt`` is non-empty, the
    teacher rows A[K:K+M], whose pre-activations then give the labels ``f* + noise`` in the
    same pass; otherwise the labels are ``y``. X (B, d) rows; h (B, K+M), e (B,), c (K,)
    scratch; s, t the student's and the teacher's activation codes. All B gradients are taken
    at the same weights, then averaged. Returns False if an error e_b is not finite.
    """
    # the quadratic pair's step is a function of its own, compiled as it always was: generic
    # code beside it in one function let LLVM (free to reassociate) change its bits
    if s == QUADRATIC and t == QUADRATIC:
        return _batch_step_quadratic(A, K, v, vt, X, y, noise, lr, train_v, h, e, c)
    return _batch_step_act(A, K, v, vt, X, y, noise, lr, train_v, h, e, c, s, t)


@njit(**FAST)
def _batch_step_quadratic(A, K, v, vt, X, y, noise, lr, train_v, h, e, c):
    """:func:`batch_step` of a quadratic student and teacher."""
    d = X.shape[1]
    B = X.shape[0]
    M = vt.shape[0]
    # constants in the data's precision, so float32 mode does float32 arithmetic
    real = X.dtype.type
    inv_sqrt_d = real(1.0 / math.sqrt(d))
    two = real(2.0)
    step = real(lr / B)
    step_v = real(lr / B / d)
    ok = True
    for b in range(B):
        hb = h[b]
        dots_into(A, K + M, X[b], hb, inv_sqrt_d)
        if M > 0:
            target = quad_form(vt, hb, K, K + M) + noise[b]
        else:
            target = y[b]
        e[b] = quad_form(v, hb, 0, K) - target
        if not math.isfinite(e[b]):
            ok = False
    for b in range(B):
        for j in range(K):
            c[j] = step * e[b] * v[j] * two * h[b, j] * inv_sqrt_d
        subtract_outer(A, K, c, X[b])
    if train_v:
        for j in range(K):
            gv = real(0)
            for b in range(B):
                gv += e[b] * h[b, j] * h[b, j]
            v[j] -= step_v * gv
    return ok


@njit(**FAST)
def _batch_step_act(A, K, v, vt, X, y, noise, lr, train_v, h, e, c, s, t):
    """:func:`batch_step` for any activations."""
    d = X.shape[1]
    B = X.shape[0]
    M = vt.shape[0]
    real = X.dtype.type
    inv_sqrt_d = real(1.0 / math.sqrt(d))
    step = real(lr / B)
    step_v = real(lr / B / d)
    ok = True
    for b in range(B):
        hb = h[b]
        dots_into(A, K + M, X[b], hb, inv_sqrt_d)
        if M > 0:
            target = net_output(t, vt, hb, K, K + M) + noise[b]
        else:
            target = y[b]
        e[b] = net_output(s, v, hb, 0, K) - target
        if not math.isfinite(e[b]):
            ok = False
    for b in range(B):
        slopes_into(s, step * e[b], v, h[b], inv_sqrt_d, c)
        subtract_outer(A, K, c, X[b])
    if train_v:
        # c (done with the first layer) accumulates the second layer's gradient
        c[:] = 0
        for b in range(B):
            add_act_into(s, e[b], h[b], c)
        for j in range(K):
            v[j] -= step_v * c[j]
    return ok


@njit(**JIT)
def measure(W, v, Wt, vt, T, Q, R, s, t):
    """Order parameters into Q, R and the exact eps_g of the current weights (activations
    s, t)."""
    gram_into(W, W, Q)
    gram_into(W, Wt, R)
    return eps_g_act(Q, R, T, v, vt, s, t)


@njit(**JIT)
def record(i, eps, Q, R, v, eps_out, Q_out, R_out, v_out):
    eps_out[i] = eps
    copy_into(Q_out[i], Q)
    copy_into(R_out[i], R)
    copy_into(v_out[i], v)


@njit(**JIT)
def record_due(i_rec, step, rec_steps, eps, Q, R, v, eps_out, Q_out, R_out, v_out):
    """Record the state at every record index due at this step (a grid finer than 1/d
    rounds several times to one step); returns the next record index."""
    while i_rec < rec_steps.shape[0] and rec_steps[i_rec] == step:
        record(i_rec, eps, Q, R, v, eps_out, Q_out, R_out, v_out)
        i_rec += 1
    return i_rec


@njit(**JIT)
def stop_run(i_rec, eps_out, Q_out, R_out, v_out):
    """Blank the records after a divergence (NaN, never stale numbers)."""
    eps_out[i_rec:] = np.nan
    Q_out[i_rec:] = np.nan
    R_out[i_rec:] = np.nan
    v_out[i_rec:] = np.nan


@njit(**JIT)
def bad(eps, max_error):
    return not (math.isfinite(eps) and eps <= max_error)


@njit(**JIT)
def start_records(W, v, Wt, vt, rec_steps, eps_out, Q_out, R_out, v_out, s, t):
    """Scratch for the measurements and the record of step 0 if it is due.
    Returns (Q, R, T, i_rec)."""
    K, M = W.shape[0], Wt.shape[0]
    Q = np.empty((K, K))
    R = np.empty((K, M))
    T = np.empty((M, M))
    gram_into(Wt, Wt, T)
    i_rec = 0
    if rec_steps[0] == 0:
        eps = measure(W, v, Wt, vt, T, Q, R, s, t)
        i_rec = record_due(0, 0, rec_steps, eps, Q, R, v, eps_out, Q_out, R_out, v_out)
    return Q, R, T, i_rec


@njit(**JIT)
def measure_due(step, i_rec, rec_steps, check_every):
    """A record or a divergence check falls on this step."""
    return step == rec_steps[i_rec] or step % check_every == 0


@njit(**JIT)
def checkpoint(
    step, i_rec, rec_steps, W, v, Wt, vt, T, Q, R, max_error, eps_out, Q_out, R_out, v_out, s, t
):
    """Measure the current weights: flag a divergence, else record what is due.
    Returns (i_rec, diverged)."""
    eps = measure(W, v, Wt, vt, T, Q, R, s, t)
    if bad(eps, max_error):
        return i_rec, True
    return record_due(i_rec, step, rec_steps, eps, Q, R, v, eps_out, Q_out, R_out, v_out), False


# Normals drawn per call of the generator: a stream's numbers do not depend on how its draws
# are split, so drawing several steps' samples at once changes no result; it spreads the cost
# of a call (partial 16-word rounds, state loads) over more numbers: 6 % per step at d=100 in
# an interleaved A/B. Beyond a few hundred numbers a call is already long (no gain measured at
# d=200-1000), and larger pools only crowd the weights in L1.
POOL_NUMBERS = 768


@njit(**FAST)
def _online_run(
    W,
    v,
    Wt,
    support,
    vt,
    lr,
    sigma,
    train_v,
    rec_steps,
    check_every,
    max_error,
    state,
    samples,
    eps_out,
    Q_out,
    R_out,
    v_out,
    s,
    t,
):
    """One run of single-sample online SGD, the rank-1 updates fused with the next step's dot
    products (``online_step``); the update is applied before every measurement, so results do
    not depend on when measurements happen. Returns (status, step)."""
    K, d = W.shape
    M = Wt.shape[0]
    dt = W.dtype
    stride = d + 1  # a sample: d inputs, then the standard label-noise draw
    explicit = samples.shape[0] > 1 or samples.shape[1] > 1
    per_fill = 1 if explicit else max(1, POOL_NUMBERS // stride)
    # two pools used in turn, so that a refill never overwrites the pending sample
    pools = np.empty((2, per_fill * stride), dt)
    which = 1
    x_old = np.zeros(stride, dt)  # the sample whose update is pending (none yet: c = 0)
    c = np.zeros(K, dt)
    h = np.empty(K + M, dt)
    Q, R, T, i_rec = start_records(W, v, Wt, vt, rec_steps, eps_out, Q_out, R_out, v_out, s, t)
    n_steps = rec_steps[rec_steps.shape[0] - 1]
    used = per_fill
    step = 0
    status = STATUS_DONE
    while step < n_steps:
        if explicit:
            x_new = samples[step]
        else:
            if used == per_fill:
                which = 1 - which
                # one draw for the inputs and the label noise: runs that differ only in sigma
                # see the same inputs (common random numbers)
                fill_normals(state, pools[which, : min(per_fill, n_steps - step) * stride])
                used = 0
            x_new = pools[which, used * stride : (used + 1) * stride]
            used += 1
        ok = online_step(W, v, Wt, support, vt, lr, sigma, train_v, c, h, x_old, x_new, s, t)
        x_old = x_new
        step += 1
        if not ok:
            status = STATUS_DIVERGED
            break
        if measure_due(step, i_rec, rec_steps, check_every):
            apply_pending(W, c, x_old)
            i_rec, diverged = checkpoint(
                step,
                i_rec,
                rec_steps,
                W,
                v,
                Wt,
                vt,
                T,
                Q,
                R,
                max_error,
                eps_out,
                Q_out,
                R_out,
                v_out,
                s,
                t,
            )
            if diverged:
                status = STATUS_DIVERGED
                break
    # the last step's update (a no-op if it was applied at a measurement)
    apply_pending(W, c, x_old)
    if status == STATUS_DIVERGED:
        stop_run(i_rec, eps_out, Q_out, R_out, v_out)
    return status, step


@njit(**FAST)
def _batch_run(
    W,
    v,
    Wt,
    vt,
    lr,
    sigma,
    train_v,
    batch,
    rec_steps,
    check_every,
    max_error,
    state,
    samples,
    eps_out,
    Q_out,
    R_out,
    v_out,
    s,
    t,
):
    """One run of mini-batch online SGD (batch >= 2); W and v are left at their final values.
    Returns (status, step)."""
    K, d = W.shape
    M = Wt.shape[0]
    # student and teacher rows in one array: one blocked pass gives all pre-activations
    dt = W.dtype
    A = np.empty((K + M, d), dt)
    copy_into(A[:K], W)
    copy_into(A[K:], Wt)
    Ws = A[:K]
    buf = np.empty(batch * (d + 1), dt)
    h = np.empty((batch, K + M), dt)
    e = np.empty(batch, dt)
    c = np.empty(K, dt)
    noise = np.empty(batch, dt)
    Q, R, T, i_rec = start_records(Ws, v, Wt, vt, rec_steps, eps_out, Q_out, R_out, v_out, s, t)
    explicit = samples.shape[0] > 1 or samples.shape[1] > 1
    n_steps = rec_steps[rec_steps.shape[0] - 1]
    step = 0
    status = STATUS_DONE
    while step < n_steps:
        if explicit:
            copy_into(buf, samples[step])
        else:
            fill_normals(state, buf)
        X = buf[: batch * d].reshape((batch, d))
        for b in range(batch):
            noise[b] = sigma * buf[batch * d + b]
        ok = batch_step(A, K, v, vt, X, noise, noise, lr, train_v, h, e, c, s, t)
        step += 1
        if not ok:
            status = STATUS_DIVERGED
            break
        if measure_due(step, i_rec, rec_steps, check_every):
            i_rec, diverged = checkpoint(
                step,
                i_rec,
                rec_steps,
                Ws,
                v,
                Wt,
                vt,
                T,
                Q,
                R,
                max_error,
                eps_out,
                Q_out,
                R_out,
                v_out,
                s,
                t,
            )
            if diverged:
                status = STATUS_DIVERGED
                break
    if status == STATUS_DIVERGED:
        stop_run(i_rec, eps_out, Q_out, R_out, v_out)
    copy_into(W, Ws)
    return status, step


@njit(**FAST)
def sgd_batch(
    first,
    step,
    W,
    v,
    Wt,
    support,
    vt,
    lr,
    sigma,
    train_v,
    rec_steps,
    check_every,
    max_error,
    states,
    samples,
    eps_out,
    Q_out,
    R_out,
    v_out,
    status,
    stop_step,
    s=QUADRATIC,
    t=QUADRATIC,
):
    """Online SGD, one sample per step, for the runs ``first, first + step, ...`` of n.

    W (n,K,d), v (n,K), Wt (n,M,d), vt (n,M), lr (n,), sigma (n,); support: the teacher rows
    are zero beyond their first ``support`` columns (d if nothing is known; the public layer
    rotates the inputs' frame so that it is M); rec_steps (n_rec,) int64 increasing; states
    (n, STATE_WORDS) uint64; samples either (1,1,1) (draw from the streams) or
    (n, n_steps, d+1) explicit inputs then standard-normal label noise per step.
    Outputs eps_out (n,n_rec), Q_out (n,n_rec,K,K), R_out (n,n_rec,K,M), v_out (n,n_rec,K),
    status (n,) int8, stop_step (n,) int64. s, t: the student's and the teacher's activation
    codes (:mod:`fastquad.kernels.activation`; default quadratic). Each call writes only its
    runs' slices (:func:`fastquad.threads.call_kernel` runs one call per thread).
    """
    n = W.shape[0]
    explicit = samples.shape[0] > 1 or samples.shape[1] > 1
    for r in range(first, n, step):
        smp = samples[r] if explicit else samples[0]
        status[r], stop_step[r] = _online_run(
            W[r],
            v[r],
            Wt[r],
            support,
            vt[r],
            lr[r],
            sigma[r],
            train_v,
            rec_steps,
            check_every,
            max_error,
            states[r],
            smp,
            eps_out[r],
            Q_out[r],
            R_out[r],
            v_out[r],
            s,
            t,
        )


@njit(**FAST)
def sgd_minibatch(
    first,
    step,
    W,
    v,
    Wt,
    vt,
    lr,
    sigma,
    train_v,
    batch,
    rec_steps,
    check_every,
    max_error,
    states,
    samples,
    eps_out,
    Q_out,
    R_out,
    v_out,
    status,
    stop_step,
    s=QUADRATIC,
    t=QUADRATIC,
):
    """Online SGD with mini-batches of ``batch`` >= 2 samples per step; as :func:`sgd_batch`
    (explicit samples: (n, n_steps, batch*(d+1)))."""
    n = W.shape[0]
    explicit = samples.shape[0] > 1 or samples.shape[1] > 1
    for r in range(first, n, step):
        smp = samples[r] if explicit else samples[0]
        status[r], stop_step[r] = _batch_run(
            W[r],
            v[r],
            Wt[r],
            vt[r],
            lr[r],
            sigma[r],
            train_v,
            batch,
            rec_steps,
            check_every,
            max_error,
            states[r],
            smp,
            eps_out[r],
            Q_out[r],
            R_out[r],
            v_out[r],
            s,
            t,
        )


@njit(**FAST)
def train_loss(W, v, X, y, s):
    """Mean over rows of X (n, d) of (f - y)^2 / 2, f with the student's activation s."""
    K, d = W.shape
    h = np.empty(K, X.dtype)
    acc = 0.0
    for b in range(X.shape[0]):
        dots_into(W, K, X[b], h, X.dtype.type(1.0 / math.sqrt(d)))
        acc += (net_output(s, v, h, 0, K) - y[b]) ** 2
    return 0.5 * acc / X.shape[0]


@njit(**FAST)
def _gd_run(
    W,
    v,
    Wt,
    vt,
    lr,
    sigma,
    train_v,
    n_samples,
    batch,
    rec_steps,
    check_every,
    max_error,
    state,
    data,
    eps_out,
    tr_out,
    Q_out,
    R_out,
    v_out,
    s,
    t,
):
    K, d = W.shape
    n = n_samples
    if data.shape[0] > 1:
        buf = data.copy()
    else:
        buf = np.empty(n * (d + 1))
        normal_fill(state, buf)
    X = buf[: n * d].reshape((n, d))
    noise = np.empty(n)
    for b in range(n):
        noise[b] = sigma * buf[n * d + b]
    y = np.empty(n)
    labels_into(Wt, vt, X, noise, y, t)
    no_teacher = np.empty(0)  # labels are fixed: batch_step uses y
    full = batch == n
    Xb = np.empty((batch, d))
    yb = np.empty(batch)
    perm = np.arange(n)
    pos = n  # forces a shuffle before the first mini-batch
    h = np.empty((batch, K))
    e = np.empty(batch)
    c = np.empty(K)
    Q, R, T, i_rec = start_records(W, v, Wt, vt, rec_steps, eps_out, Q_out, R_out, v_out, s, t)
    if i_rec > 0:
        tr_out[:i_rec] = train_loss(W, v, X, y, s)
    n_steps = rec_steps[rec_steps.shape[0] - 1]
    step = 0
    status = STATUS_DONE
    while step < n_steps:
        if full:
            ok = batch_step(W, K, v, no_teacher, X, y, y, lr, train_v, h, e, c, s, t)
        else:
            if pos + batch > n:
                # a new epoch: Fisher-Yates shuffle; the last partial batch of an epoch is dropped
                for i in range(n - 1, 0, -1):
                    j = randbelow(state, i + 1)
                    tmp = perm[i]
                    perm[i] = perm[j]
                    perm[j] = tmp
                pos = 0
            for b in range(batch):
                Xb[b] = X[perm[pos + b]]
                yb[b] = y[perm[pos + b]]
            pos += batch
            ok = batch_step(W, K, v, no_teacher, Xb, yb, yb, lr, train_v, h, e, c, s, t)
        step += 1
        if not ok:
            status = STATUS_DIVERGED
            break
        if measure_due(step, i_rec, rec_steps, check_every):
            i0 = i_rec
            i_rec, diverged = checkpoint(
                step,
                i_rec,
                rec_steps,
                W,
                v,
                Wt,
                vt,
                T,
                Q,
                R,
                max_error,
                eps_out,
                Q_out,
                R_out,
                v_out,
                s,
                t,
            )
            if diverged:
                status = STATUS_DIVERGED
                break
            if i_rec > i0:
                tr_out[i0:i_rec] = train_loss(W, v, X, y, s)
    if status == STATUS_DIVERGED:
        stop_run(i_rec, eps_out, Q_out, R_out, v_out)
        tr_out[i_rec:] = np.nan
    return status, step


@njit(**FAST)
def gd_batch(
    first,
    step,
    W,
    v,
    Wt,
    vt,
    lr,
    sigma,
    train_v,
    n_samples,
    batch,
    rec_steps,
    check_every,
    max_error,
    states,
    data,
    eps_out,
    tr_out,
    Q_out,
    R_out,
    v_out,
    status,
    stop_step,
    s=QUADRATIC,
    t=QUADRATIC,
):
    """Training on a fixed dataset of n_samples per run: full-batch GD (batch == n_samples) or
    multi-pass mini-batch SGD with a fresh shuffle every epoch.

    data: (1, 1) to draw each run's dataset from its stream, or (n, n_samples*(d+1)) explicit
    inputs (row-major) followed by standard-normal label noise. Other shapes as ``sgd_batch``;
    tr_out (n, n_rec) receives the training loss.
    """
    n = W.shape[0]
    explicit = data.shape[0] > 1 or data.shape[1] > 1
    for r in range(first, n, step):
        dat = data[r] if explicit else data[0]
        st, sp = _gd_run(
            W[r],
            v[r],
            Wt[r],
            vt[r],
            lr[r],
            sigma[r],
            train_v,
            n_samples,
            batch,
            rec_steps,
            check_every,
            max_error,
            states[r],
            dat,
            eps_out[r],
            tr_out[r],
            Q_out[r],
            R_out[r],
            v_out[r],
            s,
            t,
        )
        status[r] = st
        stop_step[r] = sp


@njit(**JIT)
def _flow_rhs(W, v, Wt, vt, T, lr, train_v, Q, R, dW, dv, s, t):
    """dW/dt = -lr d dL/dW, dv/dt = -lr dL/dv; returns eps_g at (W, v) (activations s, t)."""
    eps = measure(W, v, Wt, vt, T, Q, R, s, t)
    population_gradients_act_into(W, v, Wt, vt, Q, R, T, s, t, dW, dv)
    d = W.shape[1]
    dW *= -lr * d
    if train_v:
        dv *= -lr
    else:
        dv[:] = 0.0
    return eps


@njit(**JIT)
def _flow_run(W, v, Wt, vt, lr, train_v, times, dt, max_error, eps_out, Q_out, R_out, v_out, s, t):
    """Classic RK4 in parameter space; the step that would pass a record time is shortened."""
    K, d = W.shape
    M = Wt.shape[0]
    Q = np.empty((K, K))
    R = np.empty((K, M))
    T = np.empty((M, M))
    gram_into(Wt, Wt, T)
    kW = np.empty((4, K, d))
    kv = np.empty((4, K))
    Wy = np.empty((K, d))
    vy = np.empty(K)
    now = 0.0
    for i in range(times.shape[0]):
        while now < times[i]:
            h = min(dt, times[i] - now)
            if times[i] - (now + h) < 1e-12 * dt:
                h = times[i] - now
            eps = _flow_rhs(W, v, Wt, vt, T, lr, train_v, Q, R, kW[0], kv[0], s, t)
            if bad(eps, max_error):
                stop_run(i, eps_out, Q_out, R_out, v_out)
                return STATUS_DIVERGED, now
            for k in range(1, 4):
                c = 0.5 * h if k < 3 else h
                axpy_into(Wy, W, c, kW[k - 1])
                axpy_into(vy, v, c, kv[k - 1])
                _flow_rhs(Wy, vy, Wt, vt, T, lr, train_v, Q, R, kW[k], kv[k], s, t)
            W += h / 6.0 * (kW[0] + 2.0 * kW[1] + 2.0 * kW[2] + kW[3])
            v += h / 6.0 * (kv[0] + 2.0 * kv[1] + 2.0 * kv[2] + kv[3])
            now = now + h if now + h < times[i] else times[i]
        eps = measure(W, v, Wt, vt, T, Q, R, s, t)
        if bad(eps, max_error):
            stop_run(i, eps_out, Q_out, R_out, v_out)
            return STATUS_DIVERGED, now
        record(i, eps, Q, R, v, eps_out, Q_out, R_out, v_out)
    return STATUS_DONE, now


@njit(**JIT)
def flow_batch(
    first,
    step,
    W,
    v,
    Wt,
    vt,
    lr,
    train_v,
    times,
    dt,
    max_error,
    eps_out,
    Q_out,
    R_out,
    v_out,
    status,
    t_stop,
    s=QUADRATIC,
    t=QUADRATIC,
):
    """Population gradient flow by RK4 for n runs; times (n_rec,) increasing from >= 0;
    dt (n,) the step of each run; s, t the activation codes (default quadratic)."""
    n = W.shape[0]
    for r in range(first, n, step):
        st, ts = _flow_run(
            W[r],
            v[r],
            Wt[r],
            vt[r],
            lr[r],
            train_v,
            times,
            dt[r],
            max_error,
            eps_out[r],
            Q_out[r],
            R_out[r],
            v_out[r],
            s,
            t,
        )
        status[r] = st
        t_stop[r] = ts if st == STATUS_DIVERGED else np.nan
