"""Exact Gaussian closed forms as small @njit functions shared by every kernel.

One implementation of each formula: the public NumPy API in :mod:`fastquad.closed_form`
calls these same functions, so the kernels and the analysis can never disagree.
All arrays are float64 and C-contiguous; shapes use K student units, M teacher units, d inputs.
"""

import numpy as np
from numba import njit

from .activation import QUADRATIC, pair_j, pair_k, pair_l
from .options import FAST, JIT

# FAST: reassociation vectorises the d-long dot products of gram_into (called at every record
# and divergence check)


@njit(**FAST)
def gram_into(A, B, out):
    """out[i, j] = A[i] . B[j] / d for A (a, d), B (b, d) -> out (a, b)."""
    d = A.shape[1]
    inv_d = 1.0 / d
    for i in range(A.shape[0]):
        for j in range(B.shape[0]):
            s = 0.0
            for k in range(d):
                s += A[i, k] * B[j, k]
            out[i, j] = s * inv_d


@njit(**JIT)
def trace_delta(Q, R, T, v, vt):
    """tr(A - A*) = sum_i v_i Q_ii - sum_n v*_n T_nn."""
    s = 0.0
    for i in range(v.shape[0]):
        s += v[i] * Q[i, i]
    for n in range(vt.shape[0]):
        s -= vt[n] * T[n, n]
    return s


@njit(**JIT)
def trace_delta_sq(Q, R, T, v, vt):
    """tr((A - A*)^2) from the order parameters (Isserlis)."""
    K = v.shape[0]
    M = vt.shape[0]
    s = 0.0
    for i in range(K):
        for j in range(K):
            s += v[i] * v[j] * Q[i, j] * Q[i, j]
    for i in range(K):
        for n in range(M):
            s -= 2.0 * v[i] * vt[n] * R[i, n] * R[i, n]
    for n in range(M):
        for m in range(M):
            s += vt[n] * vt[m] * T[n, m] * T[n, m]
    return s


@njit(**JIT)
def eps_g_of(Q, R, T, v, vt):
    """Generalisation error ((tr D)^2 + 2 tr D^2) / 2, label noise excluded."""
    a = trace_delta(Q, R, T, v, vt)
    b = trace_delta_sq(Q, R, T, v, vt)
    return 0.5 * (a * a + 2.0 * b)


@njit(**JIT)
def population_gradients_into(W, v, Wt, vt, Q, R, T, gW, gv):
    """Gradients of eps_g: gW (K, d) = (2/d) v_j G w_j, gv (K,) = w_j^T G w_j / d.

    G w_j = trD w_j + 2 (sum_i v_i Q_ij w_i - sum_n v*_n R_jn w*_n): the d x d matrix G is never
    formed. Q, R, T must already hold the order parameters of (W, Wt).
    """
    K, d = W.shape
    M = Wt.shape[0]
    trD = trace_delta(Q, R, T, v, vt)
    for j in range(K):
        # coefficients of G w_j on the rows of W and Wt
        for k in range(d):
            gW[j, k] = trD * W[j, k]
        for i in range(K):
            c = 2.0 * v[i] * Q[i, j]
            for k in range(d):
                gW[j, k] += c * W[i, k]
        for n in range(M):
            c = -2.0 * vt[n] * R[j, n]
            for k in range(d):
                gW[j, k] += c * Wt[n, k]
        s = 0.0
        for i in range(K):
            s += v[i] * Q[i, j] * Q[i, j]
        for n in range(M):
            s -= vt[n] * R[j, n] * R[j, n]
        gv[j] = trD * Q[j, j] + 2.0 * s
        c = 2.0 * v[j] / d
        for k in range(d):
            gW[j, k] *= c


@njit(inline="always", **JIT)
def overlap(Q, R, T, a, b):
    """E[h_a h_b] for units a, b of the stacked network: 0..K-1 the student's, then the
    teacher's."""
    K = Q.shape[0]
    if a < K:
        return Q[a, b] if b < K else R[a, b - K]
    return R[b, a - K] if b < K else T[a - K, b - K]


@njit(inline="always", **JIT)
def _unit(K, s, t, vs, vt, a):
    """(activation code, signed second-layer weight c_a) of stacked unit a: c = (v, -v*)."""
    if a < K:
        return s, vs[a]
    return t, -vt[a - K]


@njit(**JIT)
def eps_g_act(Q, R, T, v, vt, s, t):
    """eps_g = 1/2 sum_ab c_a c_b E[g_a(h_a) g_b(h_b)] for student activation s and teacher
    activation t; the quadratic pair takes :func:`eps_g_of` (the same bits as always)."""
    if s == QUADRATIC and t == QUADRATIC:
        return eps_g_of(Q, R, T, v, vt)
    K = v.shape[0]
    n = K + vt.shape[0]
    acc = 0.0
    for a in range(n):
        ga, ca = _unit(K, s, t, v, vt, a)
        A = overlap(Q, R, T, a, a)
        acc += 0.5 * ca * ca * pair_k(ga, ga, A, A, A)
        for b in range(a + 1, n):
            gb, cb = _unit(K, s, t, v, vt, b)
            B = overlap(Q, R, T, b, b)
            acc += ca * cb * pair_k(ga, gb, A, B, overlap(Q, R, T, a, b))
    return acc


@njit(**JIT)
def gradient_coefficients(Q, R, T, v, vt, s, t, j, coef):
    """The population gradient of student unit j on the stacked rows: coef (K + M,) such that
    d eps_g / d w_j = (v_j / d) sum_b coef_b w_b (rows w_b of [W; W*]); returns
    d eps_g / d v_j.

    By Stein's lemma, d eps_g / d w_j = (v_j / d) sum_b w_b E[d_b (e g'(h_j))], so
    coef_b = c_b E[g_b' g_j'] for b != j and coef_j also collects E[e g''(h_j)]
    (docs/theory.md, 'Other activations').
    """
    K = v.shape[0]
    n = K + vt.shape[0]
    A = Q[j, j]
    ell = 0.0
    grad_v = 0.0
    for b in range(n):
        gb, cb = _unit(K, s, t, v, vt, b)
        B = overlap(Q, R, T, b, b)
        c = overlap(Q, R, T, j, b)
        coef[b] = cb * pair_j(gb, s, B, A, c)
        ell += cb * pair_l(s, gb, A, B, c)
        grad_v += cb * pair_k(s, gb, A, B, c)
    coef[j] += ell
    return grad_v


@njit(**JIT)
def population_gradients_act_into(W, v, Wt, vt, Q, R, T, s, t, gW, gv):
    """As :func:`population_gradients_into` for student activation s and teacher activation t
    (the quadratic pair takes that function: the same bits as always)."""
    if s == QUADRATIC and t == QUADRATIC:
        population_gradients_into(W, v, Wt, vt, Q, R, T, gW, gv)
        return
    K, d = W.shape
    M = Wt.shape[0]
    coef = np.empty(K + M)
    for j in range(K):
        gv[j] = gradient_coefficients(Q, R, T, v, vt, s, t, j, coef)
        scale = v[j] / d
        for k in range(d):
            gW[j, k] = 0.0
        for b in range(K):
            cb = scale * coef[b]
            for k in range(d):
                gW[j, k] += cb * W[b, k]
        for n in range(M):
            cb = scale * coef[K + n]
            for k in range(d):
                gW[j, k] += cb * Wt[n, k]
