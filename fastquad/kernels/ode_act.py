"""The order-parameter ODE of networks with any activation pair (docs/theory.md, 'Other
activations'): the right-hand side that :mod:`fastquad.kernels.ode` calls when the student or the
teacher is not quadratic (the quadratic pair keeps its own, faster right-hand side).

Units are stacked, students first: ``Omega = [[Q, R], [R^T, T]]`` is their covariance and
``c = (v, -v*)`` their signed second-layer weights, so that the error is ``e = sum_a c_a g_a(h_a)``.
By Stein's lemma the eta^1 part needs only the two-point functions of
:mod:`fastquad.kernels.activation`:

    G_ib = sum_e c_e E[g_e' g_i'] Omega_eb + (sum_e c_e E[g_i'' g_e]) Omega_ib
    dQ_ik = -eta (v_i G_ik + v_k G_ki) + eta^2 v_i v_k (E[e^2 g_i' g_k'] + sigma^2 E[g_i' g_k']) / B
    dR_in = -eta v_i G_i,K+n          dv_i = -eta sum_e c_e E[g_i g_e]

and the SGD-noise term the four-point functions ``I4(i, k, c, d) = E[g_i' g_k' g_c g_d]``:
a linear student has ``g' = 1`` (two-point); an erf student's ``g_i' g_k'`` is a Gaussian factor
absorbed into the covariance (two-point on a modified covariance); a quadratic student's
``4 h_i h_k`` is removed by second-order Stein (two-point functions and their derivatives); a
ReLU student's ``H(h_i) H(h_k)`` makes a Gaussian orthant moment (:mod:`.orthant`, one
deterministic quadrature when four distinct fields are involved).
"""

import math

import numpy as np
from numba import njit

from .activation import ERF, LINEAR, QUADRATIC, RELU, pair_j, pair_k, pair_l
from .options import JIT
from .orthant import orthant_moment


@njit(**JIT)
def noise_available(s, t):
    """Whether the eta^2 term of student activation s against teacher activation t exists:
    everywhere except a ReLU student with a quadratic or erf teacher (a degree-4 or
    erf-weighted orthant moment that no routine here computes)."""
    return not (s == RELU and (t == QUADRATIC or t == ERF))


@njit(**JIT)
def stack(Q, R, T, v, vt, s, t, Om, g, c):
    """Omega (n, n), activation codes g (n,) and signed weights c (n,) of the stacked units."""
    K = v.shape[0]
    M = vt.shape[0]
    for i in range(K):
        g[i] = s
        c[i] = v[i]
        for j in range(K):
            Om[i, j] = Q[i, j]
        for n in range(M):
            Om[i, K + n] = R[i, n]
            Om[K + n, i] = R[i, n]
    for n in range(M):
        g[K + n] = t
        c[K + n] = -vt[n]
        for m in range(M):
            Om[K + n, K + m] = T[n, m]


@njit(**JIT)
def two_point_tables(Om, g, Kt, Jt, Lt):
    """Kt[a, b] = E[g_a g_b], Jt[a, b] = E[g_a' g_b'], Lt[a, b] = E[g_a'' g_b]."""
    n = g.shape[0]
    for a in range(n):
        A = Om[a, a]
        for b in range(n):
            B = Om[b, b]
            cab = Om[a, b]
            if b >= a:
                Kt[a, b] = pair_k(g[a], g[b], A, B, cab)
                Kt[b, a] = Kt[a, b]
                Jt[a, b] = pair_j(g[a], g[b], A, B, cab)
                Jt[b, a] = Jt[a, b]
            Lt[a, b] = pair_l(g[a], g[b], A, B, cab)


@njit(**JIT)
def _erf_pair_weight(Om, i, k, Op):
    """E[g'(h_i) g'(h_k)] = (2/pi) exp(-(h_i^2 + h_k^2)/2) absorbed into the Gaussian: returns
    its mass and writes the covariance Op (n, n) of the reweighted law."""
    n = Om.shape[0]
    if i == k:
        m = 1.0 + 2.0 * Om[i, i]
        for a in range(n):
            for b in range(n):
                Op[a, b] = Om[a, b] - 2.0 * Om[a, i] * Om[i, b] / m
        return (2.0 / math.pi) / math.sqrt(m)
    m00 = 1.0 + Om[i, i]
    m11 = 1.0 + Om[k, k]
    m01 = Om[i, k]
    det = m00 * m11 - m01 * m01
    for a in range(n):
        ai = Om[a, i]
        ak = Om[a, k]
        for b in range(n):
            bi = Om[b, i]
            bk = Om[b, k]
            # Omega_aS (I + Omega_SS)^-1 Omega_Sb by the 2 x 2 inverse
            Op[a, b] = Om[a, b] - (ai * (m11 * bi - m01 * bk) + ak * (m00 * bk - m01 * bi)) / det
    return (2.0 / math.pi) / math.sqrt(det)


@njit(**JIT)
def noise_moment(s, Om, g, c, Kt, Jt, Lt, i, k, Op, C4, theta):
    """E[e^2 g'(h_i) g'(h_k)] for students i, k (label noise excluded), e = sum_a c_a g_a(h_a).

    Op (n, n), C4 (4, 4), theta (4,) are scratch.
    """
    n = g.shape[0]
    if s == LINEAR:
        acc = 0.0
        for a in range(n):
            for b in range(n):
                acc += c[a] * c[b] * Kt[a, b]
        return acc
    if s == ERF:
        w = _erf_pair_weight(Om, i, k, Op)
        acc = 0.0
        for a in range(n):
            A = Op[a, a]
            for b in range(a, n):
                x = c[a] * c[b] * pair_k(g[a], g[b], A, Op[b, b], Op[a, b])
                acc += x if a == b else 2.0 * x
        return w * acc
    if s == QUADRATIC:
        # E[4 h_i h_k F(h_a, h_b)] by second-order Stein, F = g_a g_b
        acc = 0.0
        for a in range(n):
            for b in range(a, n):
                x = (
                    Om[i, k] * Kt[a, b]
                    + Om[i, a] * Om[k, a] * Lt[a, b]
                    + (Om[i, a] * Om[k, b] + Om[i, b] * Om[k, a]) * Jt[a, b]
                    + Om[i, b] * Om[k, b] * Lt[b, a]
                )
                x *= 4.0 * c[a] * c[b]
                acc += x if a == b else 2.0 * x
        return acc
    # ReLU: E[H(h_i) H(h_k) g_a(h_a) g_b(h_b)] with g_a, g_b relu (x H(x)) or linear (x)
    idx = np.empty(4, np.int64)
    idx[0] = i
    idx[1] = k
    acc = 0.0
    for a in range(n):
        for b in range(a, n):
            idx[2] = a
            idx[3] = b
            for p in range(4):
                for q in range(4):
                    C4[p, q] = Om[idx[p], idx[q]]
            theta[0] = True
            theta[1] = True
            theta[2] = g[a] == RELU
            theta[3] = g[b] == RELU
            x = c[a] * c[b] * orthant_moment(C4, theta)
            acc += x if a == b else 2.0 * x
    return acc


@njit(**JIT)
def scratch(K, M):
    """Work arrays of :func:`rhs_act` for K students and M teachers."""
    n = K + M
    return (
        np.empty((n, n)),
        np.empty(n, np.int64),
        np.empty(n),
        np.empty((n, n)),
        np.empty((n, n)),
        np.empty((n, n)),
        np.empty((n, n)),
        np.empty((4, 4)),
        np.empty(4, np.bool_),
        np.empty((K, n)),
    )


@njit(**JIT)
def rhs_act(Q, R, v, T, vt, s, t, lr, sigma2, inv_batch, train_v, sgd_noise, out, row, work):
    """Right-hand side at (Q, R, v) into ``out[row]`` laid out as ``[dQ.ravel(), dR.ravel(), dv]``
    (as the quadratic ``_rhs``); returns eps_g of the state. ``work`` is :func:`scratch`."""
    Om, g, c, Kt, Jt, Lt, Op, C4, theta, G = work
    K = v.shape[0]
    M = vt.shape[0]
    n = K + M
    oR = K * K
    ov = oR + K * M
    stack(Q, R, T, v, vt, s, t, Om, g, c)
    two_point_tables(Om, g, Kt, Jt, Lt)
    eps = 0.0
    for a in range(n):
        for b in range(n):
            eps += c[a] * c[b] * Kt[a, b]
    eps *= 0.5
    for i in range(K):
        ell = 0.0
        for e in range(n):
            ell += c[e] * Lt[i, e]
        for b in range(n):
            acc = ell * Om[i, b]
            for e in range(n):
                acc += c[e] * Jt[e, i] * Om[e, b]
            G[i, b] = acc
    noise = lr * lr * inv_batch
    for i in range(K):
        for k in range(i, K):
            x = -lr * (v[i] * G[i, k] + v[k] * G[k, i])
            if sgd_noise:
                m4 = noise_moment(s, Om, g, c, Kt, Jt, Lt, i, k, Op, C4, theta)
                x += noise * v[i] * v[k] * (m4 + sigma2 * Jt[i, k])
            out[row, i * K + k] = x
            out[row, k * K + i] = x
        for m in range(M):
            out[row, oR + i * M + m] = -lr * v[i] * G[i, K + m]
        if train_v:
            acc = 0.0
            for e in range(n):
                acc += c[e] * Kt[i, e]
            out[row, ov + i] = -lr * acc
        else:
            out[row, ov + i] = 0.0
    return eps
