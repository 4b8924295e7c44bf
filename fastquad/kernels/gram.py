"""Exact dimension-free sampling of online SGD through an r x r factor of the Gram matrix.

The law of online SGD depends on the weights only through the Gram matrix of the r = M + K rows
of ``A = [W*; W] / sqrt(d)`` (teacher rows first). The kernel keeps a lower-triangular ``F`` with
``F F^T = A A^T``; per sample it draws ``z ~ N(0, I_r)`` (the input's coordinates in the span of
the rows: ``u = F z`` is exactly ``(h*, h)``) and, per mini-batch, the Cholesky factor ``L`` of
the ``B x B`` Gram matrix of the inputs' parts orthogonal to that span, which is
``Wishart(d - r, I_B)`` (Bartlett). With ``a_b = lr / (d B) (0, c_b)``, ``c_bj = e_b v_j g'(h_bj)``,

    F' F'^T = (F - sum_b a_b z_b^T)(F - sum_b a_b z_b^T)^T + (a L)(a L)^T,

and Givens rotations of columns bring ``[F - a Z^T, -a L]`` back to lower-triangular form. The
cost per sample is independent of d, and the law is the same as that of the direct kernel
(:mod:`fastquad.kernels.sgd`), not an approximation.

The activation enters only through the per-sample error ``e_b = f - y`` (from ``u``), the
coefficients ``c_bj`` and the second layer's update ``v_j -= lr / (d B) sum_b e_b g(h_bj)``:
the student's and the teacher's codes ``s``, ``t`` (:mod:`fastquad.kernels.activation`) are
runtime arguments, and a quadratic network keeps the arithmetic it always had (the same bits).

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

Runs are advanced in lockstep groups of up to 16 (structure of arrays, run index innermost, so
that the lane loops vectorise); lanes never interact, so the group does not change any bit.

Entry points: :func:`initial_factor` (weights -> F), :func:`gram_sgd_batch` (the batched kernel,
outputs as ``sgd_batch``), :func:`gram_steps` (steps from explicit random numbers, through the
same step code), :func:`factor_order_params`, and the variates :func:`gamma_draw`,
:func:`chi2_fill`. Float64 only. Needs d >= K + M.
"""

import math

import numpy as np
from numba import njit

from ..rng import next_double, normal_fill
from .activation import QUADRATIC, act, act_prime
from .closed_form import eps_g_act
from .options import JIT, NUMPY_ERRORS
from .sgd import bad, record, stop_run
from .status import STATUS_DIVERGED, STATUS_DONE

__all__ = [
    "initial_factor",
    "gram_sgd_batch",
    "gram_steps",
    "factor_order_params",
    "gamma_draw",
    "chi2_fill",
    "bartlett_size",
    "block_steps",
    "lanes_for",
]


# ---------------------------------------------------------------------------------------------
# Gamma and chi-square variates (exact; Marsaglia and Tsang 2000).
# ---------------------------------------------------------------------------------------------


@njit(inline="always", **JIT)
def _mt_constants(shape):
    """(dd, cc) of Marsaglia-Tsang for shape >= 1: dd = shape - 1/3, cc = 1 / sqrt(9 dd)."""
    dd = shape - 1.0 / 3.0
    return dd, 1.0 / math.sqrt(9.0 * dd)


@njit(**JIT)
def _gamma_mt(state, dd, cc, x, one):
    """Gamma(dd + 1/3) variate (shape >= 1) whose first trial uses the given normal x.

    Retries draw their normals into the scratch ``one`` (1,) and every uniform from the run's
    stream. For large shapes ``1 - v + log v`` cancels, so it is formed from ``t = cc x`` with
    ``log1p``: at shape 5e5 (d = 10^6) its relative error stays below 2e-11 for |x| <= 5
    (checked against 50-digit arithmetic), so an acceptance is almost never decided wrongly.
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


@njit(inline="always", **JIT)
def _chi2(state, k, dd, cc, x, one):
    """chi^2_k (integer k >= 1) whose first normal is x: x^2 for k = 1, else 2 Gamma(k/2).

    Marsaglia-Tsang's first trial is inline (accepted > 95 % of the time, > 99.9 % for large
    k); the call to the full loop, with its reference counting, is made only on rejection.
    """
    if k == 1:
        return x * x
    t = cc * x
    if t > -1.0:
        w = t * (3.0 + t * (3.0 + t))
        u = 1.0 - next_double(state)
        x2 = x * x
        if u < 1.0 - 0.0331 * x2 * x2 or math.log(u) < 0.5 * x2 + dd * (3.0 * math.log1p(t) - w):
            return 2.0 * dd * (1.0 + w)
    normal_fill(state, one)
    return 2.0 * _gamma_mt(state, dd, cc, one[0], one)


@njit(**JIT)
def chi2_fill(state, k, out):
    """Fill ``out`` with independent chi^2_k variates by the sampler's own code path.

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
    x = np.empty(1)
    dd, cc = _mt_constants(max(k, 2) / 2.0)
    for i in range(out.shape[0]):
        normal_fill(state, x)
        out[i] = _chi2(state, k, dd, cc, x[0], one)


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
    if (
        W.ndim != Wt.ndim
        or W.ndim not in (2, 3)
        or W.shape[:-2] != Wt.shape[:-2]
        or W.shape[-1] != Wt.shape[-1]
    ):
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
# Steps.
# ---------------------------------------------------------------------------------------------


# The step core advances G runs in lockstep, structure-of-arrays with the run index innermost:
# one run's step is a chain of dependent latencies (sqrt, division, the next step reading the
# factor just written), so interleaving runs keeps the core busy, and LLVM turns the lane loops
# into vector code. Lanes never interact and the arithmetic is IEEE (no fast-math, no
# contraction), so vector and scalar lanes give the same bits: results do not depend on G, the
# batch or the thread count. NUMPY_ERRORS drops Python's division-by-zero check, a branch that
# stops vectorisation (every divisor here is non-zero by construction).

# Runs per lockstep group: 16 lanes are four 4-wide vectors, enough independent chains to hide
# the sqrt and division latencies (measured: 16 ~1.4x faster than 8 per run-step, 32 no faster).
_LANES = 16

# Normals drawn per block of steps per run: one normal_fill call per block instead of per step,
# and the chi-squares of a block drawn together, keep every call with array arguments (and its
# atomic reference counting, ~20 cycles each) out of the per-step loop. The block length is a
# fixed function of (B, r, d), never of the run length or the recording grid, so a run's samples
# do not depend on t_max, the times or check_every (the tail of the last block is unused).
_BLOCK_NORMALS = 256


@njit(inline="always", **JIT)
def bartlett_size(B, n_perp):
    """(n_L, n_off): columns of Bartlett's factor of Wishart(n_perp, I_B) and its
    below-diagonal entries. When ``n_perp < B`` the Wishart matrix is singular and its factor
    is B x n_perp (the orthogonal parts span only n_perp dimensions)."""
    nL = min(B, n_perp)
    n_off = 0
    for j in range(nL):
        n_off += B - 1 - j
    return nL, n_off


@njit(inline="always", **JIT)
def block_steps(B, r, d):
    """(S, per): steps per block of random numbers and normals drawn per step."""
    nL, n_off = bartlett_size(B, d - r)
    per = B * r + B + n_off + nL
    return max(1, _BLOCK_NORMALS // per), per


@njit(inline="always", **NUMPY_ERRORS)
def _givens_into(A, row, c, csv, snv, G):
    """Per lane, the rotation of columns (c, c + 1) that zeroes A[row, c + 1]: its cosine and
    sine into csv, snv, and A[row, c] <- the norm (a zero pair gives the identity)."""
    for g in range(G):
        x = A[row, c, g]
        y = A[row, c + 1, g]
        rr = math.sqrt(x * x + y * y)
        nz = rr > 0.0
        inv = 1.0 / (rr if nz else 1.0)
        csv[g] = x * inv if nz else 1.0
        snv[g] = y * inv
        A[row, c, g] = rr
        A[row, c + 1, g] = 0.0


@njit(inline="always", **NUMPY_ERRORS)
def _rotate_rows(A, lo, hi, c, csv, snv, G):
    """Apply the lanes' rotations (csv, snv) to columns (c, c + 1) of rows lo .. hi-1 of A."""
    for i in range(lo, hi):
        for g in range(G):
            p = A[i, c, g]
            q = A[i, c + 1, g]
            A[i, c, g] = csv[g] * p + snv[g] * q
            A[i, c + 1, g] = csv[g] * q - snv[g] * p


# The lane loops of the other activations. The code is the same for every lane: LLVM takes its
# tests out of the loops, which stay vector loops (a ReLU or linear step at K = M = 8 costs
# 1.00-1.05x the quadratic one; erf pays for its exp and erf).


@njit(inline="always", **NUMPY_ERRORS)
def _add_outputs(code, out, w, u, b, lo, G):
    """out[g] += sum_k w[k, g] g(u[b, lo + k, g]): a network's output, per lane."""
    for k in range(w.shape[0]):
        for g in range(G):
            out[g] += w[k, g] * act(code, u[b, lo + k, g])


@njit(inline="always", **NUMPY_ERRORS)
def _slopes_into(code, amat, scale, e, v, u, b, M, G):
    """amat[b, j, g] = scale e_b v_j g'(h_bj): the student part of the column a_b."""
    for j in range(v.shape[0]):
        for g in range(G):
            amat[b, j, g] = scale[g] * e[b, g] * v[j, g] * act_prime(code, u[b, M + j, g])


@njit(inline="always", **NUMPY_ERRORS)
def _v_gradient_into(code, acc, e, u, col, G):
    """acc[g] = sum_b e_b g(u[b, col]): the batch's gradient of one unit's second layer."""
    for g in range(G):
        acc[g] = 0.0
    for b in range(e.shape[0]):
        for g in range(G):
            acc[g] += e[b, g] * act(code, u[b, col, g])


@njit(**NUMPY_ERRORS)
def _steps_soa(
    F,
    v,
    vt,
    K,
    scale,
    sigma,
    train_v,
    Z,
    XI,
    L,
    s0,
    s1,
    active,
    fail,
    u,
    e,
    amat,
    work,
    zeta,
    acc,
    csv,
    snv,
    act_s,
    act_t,
):
    """Exact online-SGD steps ``s0 .. s1-1`` of G runs in lockstep (lane g = run g).

    Parameters
    ----------
    F : float64 array, shape (r, r, G)
        Lower-triangular factors, teacher rows first (r = M + K); updated in place.
        ``F[:M, :M]`` is never written.
    v : float64 array, shape (K, G)
        Student second layers; updated in place when ``train_v``.
    vt : float64 array, shape (M, G)
    K : int
    scale, sigma : float64 arrays, shape (G,)
        ``lr / (d B)`` (the step of both layers: ``a_b = scale (0, e_b v g'(h_b))``, ``v -=
        scale sum_b e_b g(h_b)``) and the label-noise level.
    train_v : bool
    Z : float64 array, shape (S, B, r, G)
        Standard normal coordinates of the inputs in the span of the rows (teacher first).
    XI : float64 array, shape (S, B, G)
        Standard normal label noise.
    L : float64 array, shape (S, B, n_L, G)
        Lower-trapezoidal factors of the Gram matrices of the inputs' orthogonal parts (Bartlett
        draws of Wishart(d - r, I_B), ``n_L = min(B, d - r)``).
    s0, s1 : int
        Steps to take: rows ``s0 .. s1-1`` of Z, XI, L.
    active : bool array, shape (G,)
        Lanes whose failures count.
    fail : bool array, shape (G,)
        Set for the active lanes whose error e_b became non-finite (never cleared here).
    u, e, amat, work, zeta, acc, csv, snv : float64 arrays
        Scratch of shapes (B, r, G), (B, G), (B, K, G), (K, K + n_L, G), (B, K + n_L, G), (G,),
        (G,), (G,).
    act_s, act_t : int
        The student's and the teacher's activation codes.

    Returns
    -------
    int
        Steps taken: ``s1 - s0``, or up to and including the first step at which an active
        lane failed (all lanes take that step).

    Notes
    -----
    Per lane, exactly :mod:`fastquad.kernels.sgd`'s ``batch_step`` in law: the B gradients are
    taken at the same weights and averaged. ``[F_ss - A Z_s^T, -A L] = [F_ss, 0] - sum_b a_b
    zeta_b^T`` with ``zeta_b = (z_b[M:], L[b])``, so the student block is a rank-B update of a
    lower-trapezoidal matrix; each rank-1 term costs O(K (K + B)): rotate zeta_b onto the first
    column (the block becomes lower Hessenberg), subtract, then chase the superdiagonal out.
    Later zeta rows are rotated along, since they refer to the current columns. Rotations are
    branch-free (a zero pair gives the identity; a pair (x < 0, 0) a rotation by pi, which keeps
    the diagonal non-negative) so that lanes vectorise.
    """
    r = F.shape[0]
    G = F.shape[2]
    M = r - K
    B = Z.shape[1]
    nL = L.shape[2]
    N = K + nL
    for s in range(s0, s1):
        for b in range(B):
            for i in range(r):
                for g in range(G):
                    u[b, i, g] = F[i, 0, g] * Z[s, b, 0, g]
                for k in range(1, i + 1):
                    for g in range(G):
                        u[b, i, g] += F[i, k, g] * Z[s, b, k, g]
            for g in range(G):
                acc[g] = 0.0
                e[b, g] = 0.0
            if act_t == QUADRATIC:
                for n in range(M):
                    for g in range(G):
                        acc[g] += vt[n, g] * u[b, n, g] * u[b, n, g]
            else:
                _add_outputs(act_t, acc, vt, u, b, 0, G)
            if act_s == QUADRATIC:
                for j in range(K):
                    for g in range(G):
                        e[b, g] += v[j, g] * u[b, M + j, g] * u[b, M + j, g]
            else:
                _add_outputs(act_s, e[b], v, u, b, M, G)
            for g in range(G):
                e[b, g] -= acc[g] + sigma[g] * XI[s, b, g]
        hit = False
        for g in range(G):
            if active[g]:
                for b in range(B):
                    if not math.isfinite(e[b, g]):
                        fail[g] = True
                        hit = True
        for b in range(B):
            if act_s == QUADRATIC:
                for j in range(K):
                    for g in range(G):
                        amat[b, j, g] = scale[g] * e[b, g] * v[j, g] * 2.0 * u[b, M + j, g]
            else:
                _slopes_into(act_s, amat, scale, e, v, u, b, M, G)
        if train_v:
            for j in range(K):
                if act_s == QUADRATIC:
                    for g in range(G):
                        acc[g] = 0.0
                    for b in range(B):
                        for g in range(G):
                            acc[g] += e[b, g] * u[b, M + j, g] * u[b, M + j, g]
                else:
                    _v_gradient_into(act_s, acc, e, u, M + j, G)
                for g in range(G):
                    v[j, g] -= scale[g] * acc[g]

        # teacher columns of the student rows are never rotated: a plain rank-B update
        for j in range(K):
            for k in range(M):
                for g in range(G):
                    acc[g] = 0.0
                for b in range(B):
                    for g in range(G):
                        acc[g] += amat[b, j, g] * Z[s, b, k, g]
                for g in range(G):
                    F[M + j, k, g] -= acc[g]
        for i in range(K):
            for k in range(N):
                if k <= i:
                    for g in range(G):
                        work[i, k, g] = F[M + i, M + k, g]
                else:
                    for g in range(G):
                        work[i, k, g] = 0.0
        for b in range(B):
            for k in range(K):
                for g in range(G):
                    zeta[b, k, g] = Z[s, b, M + k, g]
            for k in range(nL):
                for g in range(G):
                    zeta[b, K + k, g] = L[s, b, k, g]

        for b in range(B):
            # rotate zeta_b onto column 0, right to left; columns >= K of work are zero here
            for c in range(N - 2, -1, -1):
                _givens_into(zeta, b, c, csv, snv, G)
                _rotate_rows(zeta, b + 1, B, c, csv, snv, G)
                if c < K:
                    _rotate_rows(work, c, K, c, csv, snv, G)
            for i in range(K):
                for g in range(G):
                    work[i, 0, g] -= amat[b, i, g] * zeta[b, 0, g]
            # chase the superdiagonal out, top to bottom
            for j in range(min(K, N - 1)):
                _givens_into(work, j, j, csv, snv, G)
                _rotate_rows(work, j + 1, K, j, csv, snv, G)
                _rotate_rows(zeta, b + 1, B, j, csv, snv, G)

        for i in range(K):
            for k in range(i + 1):
                for g in range(G):
                    F[M + i, M + k, g] = work[i, k, g]
        if hit:
            return s - s0 + 1
    return s1 - s0


@njit(inline="always", **NUMPY_ERRORS)
def _pack(F, v, vt, lr, sigma, d, B, i0, Fg, vg, vtg, scale, sig):
    """Lanes g <- runs i0 + g: F (n, r, r) -> Fg (r, r, G), and so on."""
    r = F.shape[1]
    K = v.shape[1]
    M = vt.shape[1]
    for g in range(Fg.shape[2]):
        i = i0 + g
        for a in range(r):
            for k in range(r):
                Fg[a, k, g] = F[i, a, k]
        for j in range(K):
            vg[j, g] = v[i, j]
        for n in range(M):
            vtg[n, g] = vt[i, n]
        scale[g] = lr[i] / (d * B)
        sig[g] = sigma[i]


@njit(inline="always", **NUMPY_ERRORS)
def _unpack(Fg, vg, g, Fi, vi):
    """Lane g -> one run's F (r, r) and v (K,)."""
    r = Fg.shape[0]
    for a in range(r):
        for k in range(r):
            Fi[a, k] = Fg[a, k, g]
    for j in range(vg.shape[0]):
        vi[j] = vg[j, g]


@njit(inline="always", **NUMPY_ERRORS)
def _silence(Fg, vg, scale, sig, g):
    """Zero a finished lane: it then steps on zeros (no overflow, no NaN) until the group ends."""
    Fg[:, :, g] = 0.0
    vg[:, g] = 0.0
    scale[g] = 0.0
    sig[g] = 0.0


def gram_steps(F, v, vt, K, d, lr, sigma, train_v, Z, XI, L, s=QUADRATIC, t=QUADRATIC):
    """Exact online-SGD steps of n runs from explicit random numbers, in lockstep through the
    kernel's own step code (for tests and one-off steps; Python around the compiled core, so
    that no second large kernel needs compiling).

    Parameters
    ----------
    F : float64 array, shape (n, r, r)
        Lower-triangular factors, teacher rows first; updated in place.
    v : float64 array, shape (n, K)
        Updated in place.
    vt : float64 array, shape (n, M)
    K, d : int
    lr, sigma : float or float64 arrays, shape (n,)
    train_v : bool
    Z : float64 array, shape (n, S, B, r)
        Coordinates of the inputs in the span of the rows, per run and step.
    XI : float64 array, shape (n, S, B)
        Standard normal label noise.
    L : float64 array, shape (n, S, B, n_L)
        Factors of the Gram matrices of the inputs' orthogonal parts (any n_L <= B; the sampler
        itself uses ``min(B, d - r)`` Bartlett columns).
    s, t : int
        The student's and the teacher's activation codes (:mod:`fastquad.kernels.activation`).

    Returns
    -------
    n_done : int64 array, shape (n,)
        Steps taken per run: S, or up to and including the step whose error was not finite
        (the run's F and v are then those right after that step).
    """
    n, S, B, r = Z.shape
    N = K + L.shape[3]

    def lanes(a):
        return np.ascontiguousarray(np.moveaxis(np.asarray(a, dtype=np.float64), 0, -1))

    Fg, vg, vtg = lanes(F), lanes(v), lanes(vt)
    scale = np.array(np.broadcast_to(np.asarray(lr, dtype=np.float64), (n,))) / (d * B)
    sig = np.array(np.broadcast_to(np.asarray(sigma, dtype=np.float64), (n,)))
    Zg, XIg, Lg = lanes(Z), lanes(XI), lanes(L)
    active = np.ones(n, dtype=np.bool_)
    fail = np.zeros(n, dtype=np.bool_)
    scratch = (
        np.empty((B, r, n)),
        np.empty((B, n)),
        np.empty((B, K, n)),
        np.empty((K, N, n)),
        np.empty((B, N, n)),
        np.empty(n),
        np.empty(n),
        np.empty(n),
    )
    n_done = np.full(n, S, dtype=np.int64)
    step = 0
    while step < S:
        step += _steps_soa(
            Fg,
            vg,
            vtg,
            K,
            scale,
            sig,
            bool(train_v),
            Zg,
            XIg,
            Lg,
            step,
            S,
            active,
            fail,
            *scratch,
            int(s),
            int(t),
        )
        for g in np.flatnonzero(fail):
            fail[g] = False
            active[g] = False
            n_done[g] = step
            F[g] = Fg[:, :, g]
            v[g] = vg[:, g]
            Fg[:, :, g] = vg[:, g] = scale[g] = sig[g] = 0.0
    for g in np.flatnonzero(active):
        F[g] = Fg[:, :, g]
        v[g] = vg[:, g]
    return n_done


# ---------------------------------------------------------------------------------------------
# Runs.
# ---------------------------------------------------------------------------------------------


@njit(**JIT)
def _fill_lane(state, flat, n_perp, dd, cc, Z, XI, L, g, one):
    """Draw a block of S steps for lane g: flat = [z (S, B, r) | xi (S, B) | Bartlett's
    below-diagonal entries (S, n_off) | one normal per chi-square (S, n_L)] in one call, then
    the chi-squares in order; scattered into Z (S, B, r, G), XI (S, B, G), L (S, B, n_L, G)."""
    S, B, r, _ = Z.shape
    nL = L.shape[2]
    normal_fill(state, flat)
    p = 0
    for s in range(S):
        for b in range(B):
            for k in range(r):
                Z[s, b, k, g] = flat[p]
                p += 1
    for s in range(S):
        for b in range(B):
            XI[s, b, g] = flat[p]
            p += 1
    n_off = 0
    for j in range(nL):
        n_off += B - 1 - j
    p_chi = p + S * n_off
    for s in range(S):
        for j in range(nL):
            for i in range(j + 1, B):
                L[s, i, j, g] = flat[p]
                p += 1
            x = flat[p_chi + s * nL + j]
            L[s, j, j, g] = math.sqrt(_chi2(state, n_perp - j, dd[j], cc[j], x, one))


@njit(inline="always", **JIT)
def _lane(Fg, g, Fl):
    r = Fl.shape[0]
    for a in range(r):
        for k in range(r):
            Fl[a, k] = Fg[a, k, g]


@njit(inline="always", **JIT)
def _measure(Fg, g, M, v, vt, T, Fl, Q, R, no_T, s, t):
    """eps_g of lane g (Q, R left in Q, R); T is the lane's fixed teacher Gram matrix; s, t the
    activation codes."""
    _lane(Fg, g, Fl)
    factor_order_params(Fl, M, Q, R, no_T)
    return eps_g_act(Q, R, T, v, vt, s, t)


@njit(**NUMPY_ERRORS)
def _gram_group(
    F,
    v,
    vt,
    K,
    d,
    lr,
    sigma,
    train_v,
    B,
    rec_steps,
    check_every,
    max_error,
    states,
    eps_out,
    Q_out,
    R_out,
    v_out,
    status,
    stop_step,
    i0,
    G,
    s,
    t,
):
    """Runs i0 .. i0+G-1 in lockstep. Records, checks and divergence follow ``_sgd_run`` per
    run exactly (a non-finite error stops a run at that step; eps_g is checked at records and
    at multiples of check_every), so a run stops at the same step as the direct kernel would on
    the same sample path; a stopped lane keeps stepping, silenced, until the group ends."""
    r = F.shape[1]
    M = r - K
    n_perp = d - r
    nL, _ = bartlett_size(B, n_perp)
    N = K + nL
    S, per = block_steps(B, r, d)
    Fg = np.empty((r, r, G))
    vg = np.empty((K, G))
    vtg = np.empty((M, G))
    scale = np.empty(G)
    sig = np.empty(G)
    _pack(F, v, vt, lr, sigma, d, B, i0, Fg, vg, vtg, scale, sig)
    flat = np.empty((G, S * per))
    Z = np.empty((S, B, r, G))
    XI = np.empty((S, B, G))
    L = np.zeros((S, B, nL, G))
    one = np.empty(1)
    dd = np.empty(nL)
    cc = np.empty(nL)
    for j in range(nL):
        # k = 1 draws x^2 and ignores these
        dj, cj = _mt_constants(max(n_perp - j, 2) / 2.0)
        dd[j] = dj
        cc[j] = cj
    u = np.empty((B, r, G))
    e = np.empty((B, G))
    amat = np.empty((B, K, G))
    work = np.empty((K, N, G))
    zeta = np.empty((B, N, G))
    acc = np.empty(G)
    csv = np.empty(G)
    snv = np.empty(G)
    active = np.ones(G, dtype=np.bool_)
    fail = np.zeros(G, dtype=np.bool_)
    Fl = np.empty((r, r))
    Q = np.empty((K, K))
    R = np.empty((K, M))
    T = np.empty((G, M, M))
    no_T = np.empty((0, 0))  # T is never recomputed: F[:M, :M] does not change
    for g in range(G):
        _lane(Fg, g, Fl)
        factor_order_params(Fl, M, Q, R, T[g])
    i_rec = 0
    n_steps = rec_steps[rec_steps.shape[0] - 1]
    step = 0
    pos = S  # forces a draw before the first step
    next_check = check_every
    n_active = G
    if rec_steps[0] == 0:
        for g in range(G):
            i = i0 + g
            eps = _measure(Fg, g, M, v[i], vt[i], T[g], Fl, Q, R, no_T, s, t)
            # i_rec, not a literal 0: one specialisation of record() fewer to compile
            record(i_rec, eps, Q, R, v[i], eps_out[i], Q_out[i], R_out[i], v_out[i])
        i_rec = 1
    while step < n_steps and n_active > 0:
        if pos == S:
            for g in range(G):
                if active[g]:
                    _fill_lane(states[i0 + g], flat[g], n_perp, dd, cc, Z, XI, L, g, one)
            pos = 0
        # up to the next event: the end of the block, a record or a check
        stop = min(step + (S - pos), rec_steps[i_rec], next_check)
        n_done = _steps_soa(
            Fg,
            vg,
            vtg,
            K,
            scale,
            sig,
            train_v,
            Z,
            XI,
            L,
            pos,
            pos + (stop - step),
            active,
            fail,
            u,
            e,
            amat,
            work,
            zeta,
            acc,
            csv,
            snv,
            s,
            t,
        )
        step += n_done
        pos += n_done
        for g in range(G):
            if fail[g]:
                i = i0 + g
                fail[g] = False
                active[g] = False
                n_active -= 1
                status[i] = STATUS_DIVERGED
                stop_step[i] = step
                stop_run(i_rec, eps_out[i], Q_out[i], R_out[i], v_out[i])
                _unpack(Fg, vg, g, F[i], v[i])
                _silence(Fg, vg, scale, sig, g)
        is_rec = step == rec_steps[i_rec]
        is_check = step == next_check
        if is_check:
            next_check += check_every
        if is_rec or is_check:
            for g in range(G):
                if not active[g]:
                    continue
                i = i0 + g
                for j in range(K):
                    v[i, j] = vg[j, g]
                eps = _measure(Fg, g, M, v[i], vt[i], T[g], Fl, Q, R, no_T, s, t)
                if bad(eps, max_error):
                    active[g] = False
                    n_active -= 1
                    status[i] = STATUS_DIVERGED
                    stop_step[i] = step
                    stop_run(i_rec, eps_out[i], Q_out[i], R_out[i], v_out[i])
                    _unpack(Fg, vg, g, F[i], v[i])
                    _silence(Fg, vg, scale, sig, g)
                elif is_rec:
                    record(i_rec, eps, Q, R, v[i], eps_out[i], Q_out[i], R_out[i], v_out[i])
            if is_rec:
                i_rec += 1
    for g in range(G):
        if active[g]:
            i = i0 + g
            status[i] = STATUS_DONE
            stop_step[i] = step
            _unpack(Fg, vg, g, F[i], v[i])


@njit(inline="always", **JIT)
def lanes_for(n, n_threads):
    """Runs per lockstep group: up to _LANES, fewer when that would leave threads idle."""
    return max(1, min(_LANES, (n + n_threads - 1) // n_threads))


@njit(**NUMPY_ERRORS)
def gram_sgd_batch(
    first,
    step,
    F,
    v,
    vt,
    K,
    d,
    lr,
    sigma,
    train_v,
    batch,
    rec_steps,
    check_every,
    max_error,
    states,
    eps_out,
    Q_out,
    R_out,
    v_out,
    status,
    stop_step,
    s=QUADRATIC,
    t=QUADRATIC,
):
    """Online SGD for n runs by the exact dimension-free sampler.

    Parameters
    ----------
    F : float64 array, shape (n, r, r)
        Factors from :func:`initial_factor` (teacher rows first, r = M + K); updated in place to
        the final factor of each run (for a diverged run, right after its last step).
    v : float64 array, shape (n, K)
        Updated in place, likewise.
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
        Per-run streams; advanced in place (by whole blocks of steps).
    eps_out, Q_out, R_out, v_out : float64 arrays
        Shapes (n, n_rec), (n, n_rec, K, K), (n, n_rec, K, M), (n, n_rec, K).
    status : int8 array, shape (n,)
    stop_step : int64 array, shape (n,)
        Outputs, as ``sgd_batch``.
    s, t : int
        The student's and the teacher's activation codes (:mod:`fastquad.kernels.activation`;
        default quadratic).

    Notes
    -----
    Runs are advanced in lockstep groups of up to 16, fewer when that would leave some of the
    ``step`` threads idle; this call takes the groups ``first, first + step, ...``, each
    writing only its runs' slices. A run's numbers do not depend on its group.
    """
    n = F.shape[0]
    G = lanes_for(n, step)
    n_groups = (n + G - 1) // G
    for grp in range(first, n_groups, step):
        i0 = grp * G
        _gram_group(
            F,
            v,
            vt,
            K,
            d,
            lr,
            sigma,
            train_v,
            batch,
            rec_steps,
            check_every,
            max_error,
            states,
            eps_out,
            Q_out,
            R_out,
            v_out,
            status,
            stop_step,
            i0,
            min(G, n - i0),
            s,
            t,
        )
