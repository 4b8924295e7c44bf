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

from .activation import _INV_SQRT_2PI, ERF, LINEAR, QUADRATIC, RELU, pair_j, pair_k, pair_l
from .options import JIT
from .orthant import orthant_moment, orthant_probability


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
def _density0(var):
    """The N(0, var) density at 0 (0 for a field of zero variance: H(0) = 0 kills its terms)."""
    return _INV_SQRT_2PI / math.sqrt(var) if var > 0.0 else 0.0


@njit(**JIT)
def _condition(C, s, out):
    """out = the covariance of the fields given X_s = 0 (Schur complement of C_ss)."""
    n = C.shape[0]
    css = C[s, s]
    for a in range(n):
        for b in range(n):
            out[a, b] = C[a, b] - C[a, s] * C[s, b] / css if css > 0.0 else C[a, b]


@njit(**JIT)
def _moment(C, u0, u1, c, d, C4, theta):
    """E[X_c X_d H(X_u0) H(X_u1)] under covariance C (u0 = u1 for one Heaviside factor)."""
    idx = (u0, u1, c, d)
    for p in range(4):
        for q in range(4):
            C4[p, q] = C[idx[p], idx[q]]
    theta[0] = True
    theta[1] = True
    theta[2] = False
    theta[3] = False
    return orthant_moment(C4, theta)


@njit(**JIT)
def _probability(C, f, m, C4):
    """P(X_f[0], ..., X_f[m-1] > 0) under C, m <= 4 (fewer fields are padded with repeats of
    the last, which :func:`.orthant.orthant_probability` counts once)."""
    if m == 0:
        return 1.0
    for p in range(4):
        for q in range(4):
            C4[p, q] = C[f[min(p, m - 1)], f[min(q, m - 1)]]
    return orthant_probability(C4)


@njit(**JIT)
def _first_moment(C, x, f, m, C4):
    """E[X_x prod_{j < m} H(X_f[j])] under C by integration by parts, m <= 4 (the conditional
    probabilities by :func:`_probability`)."""
    n = C.shape[0]
    Cs = np.empty((n, n))
    rest = np.empty(4, np.int64)
    acc = 0.0
    for j in range(m):
        s = f[j]
        if C[x, s] == 0.0 or C[s, s] <= 0.0:
            continue
        _condition(C, s, Cs)
        r = 0
        for q in range(m):
            if q != j:
                rest[r] = f[q]
                r += 1
        acc += C[x, s] * _density0(C[s, s]) * _probability(Cs, rest, r, C4)
    return acc


@njit(**JIT)
def relu_quadratic_moment(Om, S, nS, a, b, relu_a, C4, theta):
    """E[prod_{s in S} H(h_s) g_a(h_a) h_b^2] for a ReLU student and a quadratic teacher: g_a is
    relu (``relu_a``, a a student unit) or the square (a a teacher unit); b is a teacher unit.

    One integration by parts on a factor h_b leaves first and second moments over at most three
    Heaviside fields, conditional ones included: orthant probabilities
    (:func:`.orthant.orthant_probability`) and :func:`.orthant.orthant_moment`.
    """
    n = Om.shape[0]
    Cs = np.empty((n, n))
    Css = np.empty((n, n))
    Sa = np.empty(3, np.int64)
    nA = 0
    for j in range(nS):
        Sa[nA] = S[j]
        nA += 1
    if relu_a:
        new = True
        for j in range(nA):
            if Sa[j] == a:
                new = False
        if new:
            Sa[nA] = a
            nA += 1
    for j in range(nA):
        if Om[Sa[j], Sa[j]] <= 0.0:
            return 0.0  # H(0) = 0
    if relu_a:
        # E[H_S X_a X_b^2], a in S: d/dX_a of X_a H_a is H_a
        acc = Om[b, b] * _first_moment(Om, a, Sa, nA, C4)
        acc += Om[b, a] * _first_moment(Om, b, Sa, nA, C4)
        for j in range(nA):
            s = Sa[j]
            if s == a or Om[b, s] == 0.0:
                continue
            _condition(Om, s, Cs)
            # the Heaviside fields left: a and at most one other
            u0 = a
            u1 = a
            for q in range(nA):
                if q != j and Sa[q] != a:
                    u1 = Sa[q]
            acc += Om[b, s] * _density0(Om[s, s]) * _moment(Cs, u0, u1, a, b, C4, theta)
        return acc
    # E[H_S X_a^2 X_b^2], a and b teacher units
    u1 = Sa[1] if nA > 1 else Sa[0]
    acc = Om[b, b] * _moment(Om, Sa[0], u1, a, a, C4, theta)
    acc += 2.0 * Om[b, a] * _moment(Om, Sa[0], u1, a, b, C4, theta)
    for j in range(nA):
        s = Sa[j]
        if Om[b, s] == 0.0:
            continue
        _condition(Om, s, Cs)
        if nA == 1:
            continue  # E[X_b X_a^2] = 0: an odd moment
        o = Sa[1 - j]
        if Cs[o, o] <= 0.0:
            continue
        # E'[X_b X_a^2 H_o] = 2 C'_ba E'[X_a H_o] + C'_bo phi'_o E''[X_a^2]
        _condition(Cs, o, Css)
        phi = _density0(Cs[o, o])
        inner = 2.0 * Cs[b, a] * Cs[a, o] * phi + Cs[b, o] * phi * Css[a, a]
        acc += Om[b, s] * _density0(Om[s, s]) * inner
    return acc


@njit(**JIT)
def relu_erf_moment(Om, S, nS, a, b, relu_a, C4):
    """E[prod_{s in S} H(h_s) g_a(h_a) erf(h_b / sqrt 2)] for a ReLU student and an erf teacher:
    g_a is relu (``relu_a``, a a student unit) or erf (a a teacher unit); b is a teacher unit.

    erf(h / sqrt 2) = 2 P(z < h) - 1 for an independent z ~ N(0, 1): each erf factor is
    2 H(h - z) - 1, and h - z is one more Gaussian field (variance + 1, the same covariances;
    two erf factors of one unit take independent z). The moment becomes orthant probabilities
    of at most four fields and first moments over them (by parts), all from
    :func:`.orthant.orthant_probability`.
    """
    # the local fields: S, then a (relu), then the shifted fields of the erf factors
    orig = np.empty(6, np.int64)
    shifted = np.zeros(6, np.bool_)
    m = 0
    for j in range(nS):
        if Om[S[j], S[j]] <= 0.0:
            return 0.0  # H(0) = 0
        orig[m] = S[j]
        m += 1
    xa = -1
    if relu_a:
        if Om[a, a] <= 0.0:
            return 0.0
        for j in range(m):
            if orig[j] == a:
                xa = j
        if xa < 0:
            orig[m] = a
            xa = m
            m += 1
    else:
        orig[m] = a
        shifted[m] = True
        m += 1
    orig[m] = b
    shifted[m] = True
    m += 1
    L = np.empty((m, m))
    for p in range(m):
        for q in range(m):
            L[p, q] = Om[orig[p], orig[q]] + (1.0 if p == q and shifted[p] else 0.0)
    f = np.empty(4, np.int64)
    if relu_a:
        # 2 E[X_a H_S H_a H(Y_b)] - E[X_a H_S H_a], Y_b the last field
        nf = m - 1
        for j in range(nf):
            f[j] = j
        low = _first_moment(L, xa, f, nf, C4)
        f[nf] = m - 1
        return 2.0 * _first_moment(L, xa, f, nf + 1, C4) - low
    # (2 H(Y_a) - 1)(2 H(Y_b) - 1) against H_S: fields 0..nS-1, then Y_a, Y_b
    for j in range(nS):
        f[j] = j
    p_s = _probability(L, f, nS, C4)
    f[nS] = nS
    p_a = _probability(L, f, nS + 1, C4)
    f[nS] = nS + 1
    p_b = _probability(L, f, nS + 1, C4)
    f[nS] = nS
    f[nS + 1] = nS + 1
    p_ab = _probability(L, f, nS + 2, C4)
    return 4.0 * p_ab - 2.0 * p_a - 2.0 * p_b + p_s


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
    # ReLU: E[H(h_i) H(h_k) g_a(h_a) g_b(h_b)] with g_a, g_b relu (x H(x)) or linear (x), or
    # squares (a quadratic teacher: relu_quadratic_moment)
    idx = np.empty(4, np.int64)
    idx[0] = i
    idx[1] = k
    S = np.empty(2, np.int64)
    S[0] = i
    S[1] = k
    nS = 1 if i == k else 2
    acc = 0.0
    for a in range(n):
        for b in range(a, n):
            if g[b] == ERF:
                # students come first: a is a ReLU student (relu) or an erf teacher
                x = c[a] * c[b] * relu_erf_moment(Om, S, nS, a, b, g[a] == RELU, C4)
                acc += x if a == b else 2.0 * x
                continue
            if g[b] == QUADRATIC:
                # students come first: a is a ReLU student (relu) or a quadratic teacher
                x = c[a] * c[b] * relu_quadratic_moment(Om, S, nS, a, b, g[a] == RELU, C4, theta)
                acc += x if a == b else 2.0 * x
                continue
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
