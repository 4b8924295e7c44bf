"""Exact dimension-free sampling of online SGD through an r x r factor of the Gram matrix.

The law of online SGD depends on the weights only through the Gram matrix of the r = M + K rows
of ``A = [W*; W] / sqrt(d)`` (teacher rows first). The kernel keeps a lower-triangular ``F`` with
``F F^T = A A^T``; per sample it draws ``z ~ N(0, I_r)`` (the input's coordinates in the span of
the rows: ``u = F z`` is exactly ``(h*, h)``) and, per mini-batch, the Cholesky factor ``L`` of
the ``B x B`` Gram matrix of the inputs' parts orthogonal to that span, which is
``Wishart(d - r, I_B)`` (Bartlett). With ``a_b = lr / (d B) (0, c_b)``, ``c_bj = e_b v_j 2 h_bj``,

    F' F'^T = (F - sum_b a_b z_b^T)(F - sum_b a_b z_b^T)^T + (a L)(a L)^T,

and Givens rotations of columns bring ``[F - a Z^T, -a L]`` back to lower-triangular form. The
cost per sample is independent of d, and the law is the same as that of the direct kernel
(:mod:`fastquad.kernels.sgd`), not an approximation.

Why teacher rows first: ``a`` vanishes on teacher rows and the rotations only mix the student
columns ``M..r-1`` and the extra ones, which are zero on teacher rows. So ``F[:M, :M]`` is never
written and ``T = F_tt F_tt^T`` stays bit-for-bit constant over any number of steps.

Random numbers, all from the run's own stream (so a run is bit-identical alone, in any batch and
with any thread count), are drawn in blocks of S steps (:func:`block_steps`, a function of
(B, r, d) only): one ``normal_fill`` of ``S (B r + B + n_off + n_L)`` normals laid out as
``[z (S, B, r) | xi (S, B) | Bartlett's below-diagonal entries (S, n_off) | one normal per
chi-square (S, n_L)]``, then the chi-squares of the block in order (their uniforms and any
rejection retries). The consumption never depends on the weights, the run length or the
recording grid, so runs that differ only in lr or sigma see the same samples (common random
numbers, like the direct kernel) and a longer run extends a shorter one.
"""

import math

import numpy as np
from numba import njit, prange

from ..rng import next_double, normal_fill
from .closed_form import JIT, eps_g_of
from .sgd import STATUS_DIVERGED, STATUS_DONE, bad, record, stop_run

__all__ = [
    "initial_factor", "gram_sgd_batch", "gram_steps", "gram_steps_into", "factor_order_params",
    "gamma_draw", "chi2_fill", "bartlett_size", "block_steps",
]


# ---------------------------------------------------------------------------------------------
# Gamma and chi-square variates (exact; Marsaglia and Tsang 2000).
# ---------------------------------------------------------------------------------------------


@njit(**JIT)
def _mt_constants(shape):
    """(dd, cc) of Marsaglia-Tsang for shape >= 1: dd = shape - 1/3, cc = 1 / sqrt(9 dd)."""
    dd = shape - 1.0 / 3.0
    return dd, 1.0 / math.sqrt(9.0 * dd)


@njit(**JIT)
def _gamma_mt(state, dd, cc, x, one):
    """Gamma(dd + 1/3) variate (shape >= 1) whose first trial uses the given normal x.

    Retries draw their normals into the scratch ``one`` (1,) and every uniform from the run's
    stream. For large shapes ``1 - v + log v`` cancels, so it is formed from ``t = cc x`` with
    ``log1p``: the log test stays accurate to ~1e-13 relative at shape 5e5 (d = 10^6).
    """
    while True:
        t = cc * x
        if t > -1.0:
            w = t * (3.0 + t * (3.0 + t))  # (1 + t)^3 - 1 without cancellation
            # u in (0, 1]: log(u) finite
            u = 1.0 - next_double(state)
            x2 = x * x
            if u < 1.0 - 0.0331 * x2 * x2:
                return dd * (1.0 + w)
            if math.log(u) < 0.5 * x2 + dd * (3.0 * math.log1p(t) - w):
                return dd * (1.0 + w)
        normal_fill(state, one)
        x = one[0]


@njit(**JIT)
def gamma_draw(state, shape):
    """One Gamma(shape, 1) variate from the run's stream.

    Parameters
    ----------
    state : uint64 array, shape (STATE_WORDS,)
        One row of :func:`fastquad.rng.run_states`; advanced in place.
    shape : float, > 0
        Shapes below 1 use ``Gamma(shape + 1) U^(1/shape)`` (exact).

    Returns
    -------
    float
    """
    one = np.empty(1)
    boost = shape < 1.0
    a = shape + 1.0 if boost else shape
    dd, cc = _mt_constants(a)
    normal_fill(state, one)
    g = _gamma_mt(state, dd, cc, one[0], one)
    if boost:
        # 1 - U in (0, 1]: never 0 ** (1/shape) from a U = 0 draw
        g *= (1.0 - next_double(state)) ** (1.0 / shape)
    return g


@njit(**JIT)
def _chi2_from(state, k, dd, cc, x, one):
    """chi^2_k (integer k >= 1) whose first normal is x: x^2 for k = 1, else 2 Gamma(k/2)."""
    if k == 1:
        return x * x
    return 2.0 * _gamma_mt(state, dd, cc, x, one)


@njit(**JIT)
def chi2_fill(state, k, out):
    """Fill ``out`` with independent chi^2_k variates, drawn as the sampler draws them.

    Parameters
    ----------
    state : uint64 array, shape (STATE_WORDS,)
        Advanced in place.
    k : int, >= 1
        Degrees of freedom.
    out : float64 array, shape (n,)
    """
    if k < 1:
        raise ValueError("chi2_fill: k must be >= 1")
    one = np.empty(1)
    dd, cc = _mt_constants(max(k, 2) / 2.0)
    for i in range(out.shape[0]):
        normal_fill(state, one)
        out[i] = _chi2_from(state, k, dd, cc, one[0], one)


# ---------------------------------------------------------------------------------------------
# The factor and its order parameters.
# ---------------------------------------------------------------------------------------------


def initial_factor(W, Wt):
    """Lower-triangular ``F`` with ``F F^T = A A^T``, ``A = [Wt; W] / sqrt(d)`` (teacher first).

    Parameters
    ----------
    W : array, shape (K, d) or (n, K, d)
        Student first layers.
    Wt : array, shape (M, d) or (n, M, d)
        Teacher first layers (same leading shape as W).

    Returns
    -------
    F : ndarray, shape (r, r) or (n, r, r), r = M + K
        C-contiguous, with a non-negative diagonal: rows ``0..M-1`` belong to the teacher,
        ``M..r-1`` to the student. ``F[:M, :M]`` is the Cholesky factor of T.

    Raises
    ------
    ValueError
        If ``d < r`` (the span of the rows is then not generic; use the direct kernel).
    """
    W = np.asarray(W, dtype=np.float64)
    Wt = np.asarray(Wt, dtype=np.float64)
    if W.ndim != Wt.ndim or W.ndim not in (2, 3) or W.shape[:-2] != Wt.shape[:-2] \
            or W.shape[-1] != Wt.shape[-1]:
        raise ValueError(f"W (..., K, d) and Wt (..., M, d) disagree: {W.shape}, {Wt.shape}")
    d = W.shape[-1]
    r = W.shape[-2] + Wt.shape[-2]
    if d < r:
        raise ValueError(f"the exact sampler needs d >= K + M, got d={d}, K + M = {r}")
    A = np.concatenate([Wt, W], axis=-2) / math.sqrt(d)
    R0 = np.linalg.qr(np.swapaxes(A, -1, -2), mode="r")  # (..., r, r) upper, A^T = V R0
    sign = np.where(np.diagonal(R0, axis1=-2, axis2=-1) < 0.0, -1.0, 1.0)
    F = np.swapaxes(R0 * sign[..., :, None], -1, -2)
    return np.ascontiguousarray(np.tril(F))


@njit(**JIT)
def factor_order_params(F, M, Q, R, T):
    """Q (K,K), R (K,M) and, if T has shape (M,M), T from ``F F^T`` (student rows M..r-1).

    Only the lower triangle of F is read (dot products stop at the diagonal); Q is filled
    symmetrically from its upper half, so it is exactly symmetric.
    """
    r = F.shape[0]
    K = r - M
    for a in range(K):
        ia = M + a
        for b in range(a, K):
            ib = M + b
            s = 0.0
            for k in range(ia + 1):
                s += F[ia, k] * F[ib, k]
            Q[a, b] = s
            Q[b, a] = s
        for n in range(M):
            s = 0.0
            for k in range(n + 1):
                s += F[ia, k] * F[n, k]
            R[a, n] = s
    if T.shape[0] == M and T.shape[1] == M:
        for n in range(M):
            for m in range(n, M):
                s = 0.0
                for k in range(n + 1):
                    s += F[n, k] * F[m, k]
                T[n, m] = s
                T[m, n] = s


# ---------------------------------------------------------------------------------------------
# One step.
# ---------------------------------------------------------------------------------------------


# Normals drawn per block of steps: one normal_fill call per block instead of per step, and the
# chi-squares of a block drawn together, keep every call with array arguments (and its atomic
# reference counting, ~20 cycles each) out of the per-step loop. The block length is a fixed
# function of (B, r, d), never of the run length or the recording grid, so a run's samples do not
# depend on t_max, the times or check_every (the tail of the last block is simply unused).
_BLOCK_NORMALS = 512


@njit(**JIT)
def bartlett_size(B, n_perp):
    """(n_L, n_off): columns of Bartlett's factor of Wishart(n_perp, I_B) and its
    below-diagonal entries. When ``n_perp < B`` the Wishart matrix is singular and its factor
    is B x n_perp (the orthogonal parts span only n_perp dimensions)."""
    nL = min(B, n_perp)
    n_off = 0
    for j in range(nL):
        n_off += B - 1 - j
    return nL, n_off


@njit(**JIT)
def block_steps(B, r, d):
    """Steps per block of random numbers, and the normals drawn per step (see module notes)."""
    nL, n_off = bartlett_size(B, d - r)
    per = B * r + B + n_off + nL
    return max(1, _BLOCK_NORMALS // per), per


@njit(**JIT)
def gram_steps_into(F, v, vt, K, d, lr, sigma, train_v, Z, XI, L, s0, s1, u, e, amat, work,
                    zeta):
    """Exact online-SGD steps ``s0 .. s1-1`` (mini-batches of B samples) on the factor F.

    Parameters
    ----------
    F : float64 array, shape (r, r), r = M + K
        Lower-triangular factor, teacher rows first; updated in place (``F[:M, :M]`` is never
        written).
    v : float64 array, shape (K,)
        Student second layer; updated in place when ``train_v``.
    vt : float64 array, shape (M,)
    K : int
    d : int
        Input dimension (enters only through the step sizes lr/d).
    lr, sigma : float
    train_v : bool
    Z : float64 array, shape (S, B, r)
        Standard normal coordinates of the inputs in the span of the rows (teacher first).
    XI : float64 array, shape (S, B)
        Standard normal label noise.
    L : float64 array, shape (S, B, n_L)
        Lower-trapezoidal factors of the Gram matrices of the inputs' orthogonal parts (Bartlett
        draws of Wishart(d - r, I_B); ``n_L = min(B, d - r)``).
    s0, s1 : int
        Steps to take: rows ``s0 .. s1-1`` of Z, XI, L.
    u, e, amat, work, zeta : float64 arrays
        Scratch of shapes (B, r), (B,), (B, K), (K, K + n_L), (B, K + n_L).

    Returns
    -------
    ok : bool
        False if a per-sample error e_b was not finite (F and v then hold non-finite numbers).
    n_done : int
        Steps taken, the failing one included.

    Notes
    -----
    The gradients of the B samples are taken at the same weights and averaged, as in the direct
    kernel's ``batch_step``. ``[F_ss - A Z_s^T, -A L] = [F_ss, 0] - sum_b a_b zeta_b^T`` with
    ``zeta_b = (z_b[M:], L[b])``, so the student block is a rank-B update of a lower-trapezoidal
    matrix; each rank-1 term costs O(K (K + B)): rotate zeta_b onto the first column (the block
    becomes lower Hessenberg), subtract, then chase the superdiagonal out. Later zeta rows are
    rotated along, since they refer to the current columns. Everything here is scalar indexing
    on arrays passed once: no views or calls per step (their reference counting costs more than
    the arithmetic at small K).
    """
    r = F.shape[0]
    M = r - K
    B = Z.shape[1]
    nL = L.shape[2]
    N = K + nL
    scale = lr / (d * B)
    vstep = lr / B / d
    for s in range(s0, s1):
        ok = True
        for b in range(B):
            for i in range(r):
                acc = 0.0
                for k in range(i + 1):
                    acc += F[i, k] * Z[s, b, k]
                u[b, i] = acc
            fs = 0.0
            for n in range(M):
                fs += vt[n] * u[b, n] * u[b, n]
            f = 0.0
            for j in range(K):
                f += v[j] * u[b, M + j] * u[b, M + j]
            e[b] = f - (fs + sigma * XI[s, b])
            if not math.isfinite(e[b]):
                ok = False
        for b in range(B):
            for j in range(K):
                amat[b, j] = scale * e[b] * v[j] * 2.0 * u[b, M + j]
        if train_v:
            for j in range(K):
                gv = 0.0
                for b in range(B):
                    gv += e[b] * u[b, M + j] * u[b, M + j]
                v[j] -= vstep * gv

        # teacher columns of the student rows are never rotated: a plain rank-B update
        for j in range(K):
            for k in range(M):
                acc = 0.0
                for b in range(B):
                    acc += amat[b, j] * Z[s, b, k]
                F[M + j, k] -= acc
        for i in range(K):
            for k in range(N):
                work[i, k] = F[M + i, M + k] if k <= i else 0.0
        for b in range(B):
            for k in range(K):
                zeta[b, k] = Z[s, b, M + k]
            for k in range(nL):
                zeta[b, K + k] = L[s, b, k]

        for b in range(B):
            # rotate zeta_b onto column 0, right to left; columns >= K of work are zero here
            for c in range(N - 2, -1, -1):
                x = zeta[b, c]
                y = zeta[b, c + 1]
                if y == 0.0:
                    continue
                rr = math.sqrt(x * x + y * y)
                inv = 1.0 / rr
                cs = x * inv
                sn = y * inv
                zeta[b, c] = rr
                zeta[b, c + 1] = 0.0
                for i in range(b + 1, B):
                    p = zeta[i, c]
                    q = zeta[i, c + 1]
                    zeta[i, c] = cs * p + sn * q
                    zeta[i, c + 1] = cs * q - sn * p
                if c < K:
                    for i in range(c, K):
                        p = work[i, c]
                        q = work[i, c + 1]
                        work[i, c] = cs * p + sn * q
                        work[i, c + 1] = cs * q - sn * p
            rho = zeta[b, 0]
            for i in range(K):
                work[i, 0] -= amat[b, i] * rho
            # chase the superdiagonal out, top to bottom
            for j in range(min(K, N - 1)):
                x = work[j, j]
                y = work[j, j + 1]
                if y == 0.0 and x >= 0.0:
                    continue
                # y == 0 > x: a rotation by pi, which keeps the diagonal non-negative
                rr = math.sqrt(x * x + y * y)
                inv = 1.0 / rr
                cs = x * inv
                sn = y * inv
                work[j, j] = rr
                work[j, j + 1] = 0.0
                for i in range(j + 1, K):
                    p = work[i, j]
                    q = work[i, j + 1]
                    work[i, j] = cs * p + sn * q
                    work[i, j + 1] = cs * q - sn * p
                for i in range(b + 1, B):
                    p = zeta[i, j]
                    q = zeta[i, j + 1]
                    zeta[i, j] = cs * p + sn * q
                    zeta[i, j + 1] = cs * q - sn * p

        for i in range(K):
            for k in range(i + 1):
                F[M + i, M + k] = work[i, k]
        if not ok:
            return False, s - s0 + 1
    return True, s1 - s0


@njit(**JIT)
def gram_steps(F, v, vt, K, d, lr, sigma, train_v, Z, XI, L):
    """:func:`gram_steps_into` over all rows of explicit random numbers, with its own scratch.

    F (r, r) and v (K,) are updated in place; Z (S, B, r), XI (S, B), L (S, B, n_L) as there
    (any n_L <= B columns; the kernel itself uses ``min(B, d - r)``). Returns (ok, n_done).
    """
    r = F.shape[0]
    B = Z.shape[1]
    N = K + L.shape[2]
    return gram_steps_into(F, v, vt, K, d, lr, sigma, train_v, Z, XI, L, 0, Z.shape[0],
                           np.empty((B, r)), np.empty(B), np.empty((B, K)), np.empty((K, N)),
                           np.empty((B, N)))


# ---------------------------------------------------------------------------------------------
# Runs.
# ---------------------------------------------------------------------------------------------


@njit(**JIT)
def _fill_block(state, flat, S, B, r, n_perp, dd, cc, L, one):
    """Draw a block of S steps: flat = [z (S, B, r) | xi (S, B) | Bartlett's below-diagonal
    entries (S, n_off) | one normal per chi-square (S, n_L)], then the chi-squares in order."""
    nL = L.shape[2]
    normal_fill(state, flat)
    n_off = 0
    for j in range(nL):
        n_off += B - 1 - j
    p_off = S * B * r + S * B
    p_chi = p_off + S * n_off
    for s in range(S):
        p = p_off + s * n_off
        for j in range(nL):
            for i in range(j + 1, B):
                L[s, i, j] = flat[p]
                p += 1
            x = flat[p_chi + s * nL + j]
            L[s, j, j] = math.sqrt(_chi2_from(state, n_perp - j, dd[j], cc[j], x, one))


@njit(**JIT)
def _measure(F, M, v, vt, T, Q, R, no_T):
    factor_order_params(F, M, Q, R, no_T)
    return eps_g_of(Q, R, T, v, vt)


@njit(**JIT)
def _gram_run(F, v, vt, K, d, lr, sigma, train_v, batch, rec_steps, check_every, max_error,
              state, eps_out, Q_out, R_out, v_out):
    """One run of the exact sampler; F and v are left at their final values.

    Records, checks and divergence follow ``_sgd_run`` exactly (a non-finite error stops the run
    at that step; eps_g is checked at records and at multiples of check_every), so both kernels
    stop at the same step for the same sample path. Returns (status, step).
    """
    r = F.shape[0]
    M = r - K
    B = batch
    n_perp = d - r
    nL, n_off = bartlett_size(B, n_perp)
    S, per = block_steps(B, r, d)
    flat = np.empty(S * per)
    Z = flat[:S * B * r].reshape((S, B, r))
    XI = flat[S * B * r:S * B * (r + 1)].reshape((S, B))
    L = np.zeros((S, B, nL))
    one = np.empty(1)
    dd = np.empty(nL)
    cc = np.empty(nL)
    for j in range(nL):
        # k = 1 draws x^2 and ignores these
        dj, cj = _mt_constants(max(n_perp - j, 2) / 2.0)
        dd[j] = dj
        cc[j] = cj
    u = np.empty((B, r))
    e = np.empty(B)
    amat = np.empty((B, K))
    work = np.empty((K, K + nL))
    zeta = np.empty((B, K + nL))
    Q = np.empty((K, K))
    R = np.empty((K, M))
    T = np.empty((M, M))
    no_T = np.empty((0, 0))  # T is never recomputed: F[:M, :M] does not change
    factor_order_params(F, M, Q, R, T)
    i_rec = 0
    n_steps = rec_steps[rec_steps.shape[0] - 1]
    step = 0
    pos = S  # forces a draw before the first step
    next_check = check_every
    status = STATUS_DONE
    if rec_steps[0] == 0:
        eps = _measure(F, M, v, vt, T, Q, R, no_T)
        record(0, eps, Q, R, v, eps_out, Q_out, R_out, v_out)
        i_rec = 1
    while step < n_steps:
        if pos == S:
            _fill_block(state, flat, S, B, r, n_perp, dd, cc, L, one)
            pos = 0
        # up to the next event: the end of the block, a record or a check
        stop = min(step + (S - pos), rec_steps[i_rec], next_check)
        ok, n_done = gram_steps_into(F, v, vt, K, d, lr, sigma, train_v, Z, XI, L, pos,
                                     pos + (stop - step), u, e, amat, work, zeta)
        step += n_done
        pos += n_done
        if not ok:
            status = STATUS_DIVERGED
            break
        is_rec = step == rec_steps[i_rec]
        is_check = step == next_check
        if is_check:
            next_check += check_every
        if is_rec or is_check:
            eps = _measure(F, M, v, vt, T, Q, R, no_T)
            if bad(eps, max_error):
                status = STATUS_DIVERGED
                break
            if is_rec:
                record(i_rec, eps, Q, R, v, eps_out, Q_out, R_out, v_out)
                i_rec += 1
    if status == STATUS_DIVERGED:
        stop_run(i_rec, eps_out, Q_out, R_out, v_out)
    return status, step


@njit(parallel=True, **JIT)
def gram_sgd_batch(F, v, vt, K, d, lr, sigma, train_v, batch, rec_steps, check_every, max_error,
                   states, eps_out, Q_out, R_out, v_out, status, stop_step):
    """Online SGD for n runs by the exact dimension-free sampler.

    Parameters
    ----------
    F : float64 array, shape (n, r, r)
        Factors from :func:`initial_factor` (teacher rows first, r = M + K); updated in place to
        the final factor of each run.
    v : float64 array, shape (n, K)
        Updated in place.
    vt : float64 array, shape (n, M)
    K, d : int
        Student width and input dimension, ``d >= r``.
    lr, sigma : float64 arrays, shape (n,)
    train_v : bool
    batch : int
        Mini-batch size B.
    rec_steps : int64 array, shape (n_rec,)
        Increasing step numbers at which to record.
    check_every : int
        Steps between divergence checks of eps_g.
    max_error : float
    states : uint64 array, shape (n, STATE_WORDS)
        Per-run streams; advanced in place.
    eps_out, Q_out, R_out, v_out : float64 arrays
        Shapes (n, n_rec), (n, n_rec, K, K), (n, n_rec, K, M), (n, n_rec, K).
    status : int8 array, shape (n,)
    stop_step : int64 array, shape (n,)
        Outputs, as ``sgd_batch``.
    """
    n = F.shape[0]
    for i in prange(n):
        st, sp = _gram_run(F[i], v[i], vt[i], K, d, lr[i], sigma[i], train_v, batch, rec_steps,
                           check_every, max_error, states[i], eps_out[i], Q_out[i], R_out[i],
                           v_out[i])
        status[i] = st
        stop_step[i] = sp
