"""Exact Gaussian closed forms as small @njit functions shared by every kernel.

One implementation of each formula: the public NumPy API in :mod:`fastquad.closed_form`
calls these same functions, so the kernels and the analysis can never disagree.
All arrays are float64 and C-contiguous; shapes use K student units, M teacher units, d inputs.
"""

from numba import njit

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
