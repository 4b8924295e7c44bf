"""Gaussian orthant moments E[X2 X3 prod_{m in theta} H(X_m)] for the ReLU order-parameter ODE.

For a zero-mean Gaussian X = (X0, X1, X2, X3) with covariance C (positive semi-definite, possibly
singular) and a mask theta, :func:`orthant_moment` returns

    E[X2 X3 prod_{m : theta[m]} H(X_m)],    H the Heaviside step, H(0) = 0,

so that E[H(h_i) H(h_k) relu(h_c) relu(h_d)] is ``orthant_moment(C, [1, 1, 1, 1])`` and
E[H(h_i) H(h_k) relu(h_c) h_d] is ``orthant_moment(C, [1, 1, 1, 0])``, with C the 4 x 4 Gram
matrix of (i, k, c, d), repeated indices giving repeated rows. :func:`orthant_probability`
returns P(X_m > 0 for all m) for a 4 x 4 covariance.

Method
------
Variables carrying theta whose correlation is 1 within ``MERGE_TOL`` (relative) are one variable
(H(X)^2 = H(X)); correlation -1 within ``MERGE_TOL`` makes the result 0, and so does a variable
of zero variance carrying theta (H(0) = 0) or a zero linear factor. With S the remaining set,
Gaussian integration by parts twice gives, for unit vectors u_j (X_j / sd_j = u_j . Z):

    E[X_c X_d 1{X_S > 0}] = C_cd P_S
        + 1/(2 pi) sum_{j != k in S} (u_c . u_j) (u_d . e_{k|j}) P(X_{S-j-k} > 0 | X_j = X_k = 0),

e_{k|j} the unit residual of u_k after u_j. The conditional probability is 1, 1/2 or
1/4 + asin(r)/(2 pi), r the partial correlation given (j, k). P_S has closed forms up to three
variables; for four it is integrated along a rotation: of the pair (a, b) of largest |rho|,
u_b is turned in the plane (u_a, u_b) from s u_a (s = sign rho; there P4 is the three-variable
closed form, or 0 for s = -1) to u_b, and Plackett's identity dP/drho_ij = phi2(rho_ij)
P(rest > 0 | X_i = X_j = 0) gives dP/dphi in closed form at every angle phi. The path is at
most pi/2 long and as short as the most extreme pair: a correlation of 1 - 1e-10 costs nothing.
The integrand's nearest complex singularities are roots of quadratic forms in (cos phi, sin phi)
and are found in closed form; the interval is split at them and mapped by
phi = phi* + eps sinh(tau), then integrated by adaptive Gauss-Kronrod (21 points, QUADPACK's
error estimate, tolerance ``4 pi^2 x 2e-13`` on the integral per piece).

Conditioning is computed without Schur complements: the correlation matrix is factorised by a
diagonally pivoted Cholesky (pivots below ``PIVOT_TOL`` dropped), and partial correlations,
residual directions and angles are exterior products (2 x 2 and 3 x 3 minors) of those rows.
A near-collinear pair then enters every term through the same small coordinates, so the
O(1)-weighted terms whose sum is O(sqrt(1 - rho)) cancel to working precision instead of to
1e-16 / (1 - rho); angles are atan2(|x ^ y|, x . y), accurate next to 0 and pi. A partial
correlation whose residual vanishes (a coplanar triple) is taken as 0, the limit of a
perturbation out of the span, the same in every term when one triple is degenerate (rank 3);
four Heaviside variables of rank 2 are integrated directly in their plane.

Accuracy (measured)
-------------------
orthant_probability, against a 34-digit mpmath evaluation of Plackett's identity along the
straight path from the identity (another path), on 85 matrices with one or two pairs at
1 - |rho| from 1e-12 to 1e-4, three nearly collinear variables, or near rank 2 and 3
(lambda_min down to ~1e-14): max |error| 2.0e-12. Against scipy.integrate.quad along that path
(the reference of tests/test_orthant.py) on 2000 random and near-singular matrices: 1.6e-12,
mostly that reference's own error. orthant_moment, against the same formula evaluated with
Schur complements in 40-digit arithmetic on 72 such covariances x 3 theta patterns: 5e-13
max|C|; against a nested quadrature of the density (independent of the formula), 60 problems:
1.4e-16 of the scale; against 4e6-sample Monte Carlo: within 5 standard errors.
The quadrature (tolerance 2e-13 on P4 per piece) is not what limits these: at 1 - rho = delta
the rounding of C to double alone moves the value by ~1e-16 / sqrt(delta) (1e-10 at 1e-12).
Near a merge the value moves with the opening angle sqrt(2 (1 - rho)) (that is the function):
the merge at 1 - rho = MERGE_TOL jumps by < 5.2e-8 max|C| (moment) and < 6.4e-8 (probability)
over 500 random problems. Cost once compiled: about 4 us per call with four distinct Heaviside
variables (one or two 21-point Kronrod rules; at most 11 us measured, near rank 2 or 3), under
1 us with at most three.
"""

import math

import numpy as np
from numba import njit

from .options import JIT

#: 1 - |rho| below which two Heaviside variables are one (or exclusive) variable
MERGE_TOL = 1e-13
#: Cholesky pivots (on the correlation scale) below this are rounding noise of a singular C
PIVOT_TOL = 1e-14
#: a wedge of unit vectors smaller than this is a degenerate (coplanar) configuration
DEGENERATE = 1e-11
#: absolute tolerance of each adaptive piece of the P4 integral (its integrand is 4 pi^2 dP)
_PIECE_TOL = 4.0 * math.pi * math.pi * 2e-13
#: a bound on the time of one piece (the hardest tested P4 used 10 rules in all)
_MAX_INTERVALS = 64

_PI = math.pi
_TWO_PI = 2.0 * math.pi

# QUADPACK qk21: Kronrod abscissae (the Gauss ones are the odd indices), weights
_XGK = np.array(
    [
        0.995657163025808080735527280689003,
        0.973906528517171720077964012084452,
        0.930157491355708226001207180059508,
        0.865063366688984510732096688423493,
        0.780817726586416897063717578345042,
        0.679409568299024406234327365114874,
        0.562757134668604683339000099272694,
        0.433395394129247190799265943165784,
        0.294392862701460198131126603103866,
        0.148874338981631210884826001129720,
        0.0,
    ]
)
_WGK = np.array(
    [
        0.011694638867371874278064396062192,
        0.032558162307964727478818972459390,
        0.054755896574351996031381300244580,
        0.075039674810919952767043140916190,
        0.093125454583697605535065465083366,
        0.109387158802297641899210590325805,
        0.123491976262065851077208416212624,
        0.134709217311473325928054001771707,
        0.142775938577060080797094273138717,
        0.147739104901338491374841515972068,
        0.149445554002916905664936468389821,
    ]
)
_WG = np.array(
    [
        0.066671344308688137593568809893332,
        0.149451349150580593145776339657697,
        0.219086362515982043995534934228163,
        0.269266719309996355091226921569469,
        0.295524224714752870173892994651338,
    ]
)


# ---------------------------------------------------------------------------------------------
# small vector algebra on R^4: bivectors as 6 components (i < j), trivectors as their Hodge dual


@njit(**JIT)
def _dot(x, y):
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i] * y[i]
    return s


@njit(**JIT)
def _norm(x):
    return math.sqrt(_dot(x, x))


@njit(**JIT)
def _angle(x, y):
    """Angle between non-zero x and y in R^4 as atan2(|x ^ y|, x . y): accurate next to 0 and
    pi, where acos of the cosine loses half the digits, and the 2 x 2 minors read a small angle
    from small coordinates without cancellation."""
    w = 0.0
    for i in range(4):
        for j in range(i + 1, 4):
            m = x[i] * y[j] - x[j] * y[i]
            w += m * m
    return math.atan2(math.sqrt(w), x[0] * y[0] + x[1] * y[1] + x[2] * y[2] + x[3] * y[3])


@njit(**JIT)
def _cond_angle(x, y):
    """Angle between two residual directions; pi/2 (partial correlation 0) when one vanishes,
    the limit of a perturbation of the degenerate variable out of the span."""
    if _norm(x) <= DEGENERATE or _norm(y) <= DEGENERATE:
        return 0.5 * _PI
    return _angle(x, y)


@njit(**JIT)
def _wedge(x, y, out):
    """out = x ^ y (6 components); <x^y, x'^y'> = (x.x')(y.y') - (x.y')(y.x')."""
    n = 0
    for i in range(4):
        for j in range(i + 1, 4):
            out[n] = x[i] * y[j] - x[j] * y[i]
            n += 1


@njit(**JIT)
def _det3(x, y, z, i, j, k):
    return (
        x[i] * (y[j] * z[k] - y[k] * z[j])
        - x[j] * (y[i] * z[k] - y[k] * z[i])
        + x[k] * (y[i] * z[j] - y[j] * z[i])
    )


@njit(**JIT)
def _cross(x, y, z, out):
    """out = *(x ^ y ^ z): out . v = det[x; y; z; v], and out(x,y,z) . out(x,y,w) is
    |x ^ y|^2 times the dot product of the residuals of z and w after x and y."""
    out[0] = -_det3(x, y, z, 1, 2, 3)
    out[1] = _det3(x, y, z, 0, 2, 3)
    out[2] = -_det3(x, y, z, 0, 1, 3)
    out[3] = _det3(x, y, z, 0, 1, 2)


@njit(**JIT)
def _pivoted_cholesky(K, active, U):
    """Rows of U (4, 4): coordinates u_i with u_i . u_j = K_ij up to rounding (backward stable).

    Diagonal pivoting puts a near-dependence into the last, small coordinates, where the
    exterior products below read it without cancellation. Pivots below PIVOT_TOL are rounding
    noise of a singular K: they are dropped, so a singular K gives exactly dependent rows.
    Returns the rank.
    """
    S = K.copy()
    done = np.zeros(4, np.bool_)
    U[:, :] = 0.0
    rank = 0
    for step in range(4):
        p = -1
        best = PIVOT_TOL
        for i in range(4):
            if active[i] and not done[i] and S[i, i] > best:
                best = S[i, i]
                p = i
        if p < 0:
            break
        piv = math.sqrt(S[p, p])
        col = np.zeros(4)
        for i in range(4):
            if active[i] and not done[i]:
                col[i] = S[i, p] / piv
        col[p] = piv
        for i in range(4):
            U[i, step] = col[i]
        for i in range(4):
            for j in range(4):
                S[i, j] -= col[i] * col[j]
        done[p] = True
        rank += 1
    return rank


# ---------------------------------------------------------------------------------------------
# orthant probabilities of unit vectors


@njit(**JIT)
def _planar_arc(u, idx, n, e1, e2):
    """For unit vectors u[idx] spanning the plane (e1, e2): the arc [psi1, psi2] of directions
    z = cos psi e1 + sin psi e2 with u . z > 0 for all (psi2 <= psi1 when it is empty)."""
    a0 = math.atan2(_dot(u[idx[0]], e2), _dot(u[idx[0]], e1))
    lo = -0.5 * _PI
    hi = 0.5 * _PI
    for m in range(1, n):
        a = math.atan2(_dot(u[idx[m]], e2), _dot(u[idx[m]], e1)) - a0
        # into (-pi, pi]: each half-circle then meets [-pi/2, pi/2] as one interval
        if a > _PI:
            a -= _TWO_PI
        elif a <= -_PI:
            a += _TWO_PI
        lo = max(lo, a - 0.5 * _PI)
        hi = min(hi, a + 0.5 * _PI)
    return a0 + lo, a0 + hi


@njit(**JIT)
def _plane_of(u, idx, n, e1, e2):
    """An orthonormal basis (e1, e2) of the span of u[idx] when it is (at most) a plane: from the
    pair of largest wedge, for the best conditioned residual."""
    best = -1.0
    bj = idx[0]
    bk = idx[1]
    B = np.empty(6)
    for a in range(n):
        for b in range(a + 1, n):
            _wedge(u[idx[a]], u[idx[b]], B)
            nb = _norm(B)
            if nb > best:
                best = nb
                bj = idx[a]
                bk = idx[b]
    c = _dot(u[bj], u[bk])
    for i in range(4):
        e1[i] = u[bj, i]
        e2[i] = u[bk, i] - c * u[bj, i]
    ne = _norm(e2)
    for i in range(4):
        e2[i] /= ne


@njit(**JIT)
def _is_planar4(u, idx):
    """True when four unit vectors span at most a plane (every triple's trivector vanishes)."""
    N = np.empty(4)
    for m in range(4):
        # the triple without idx[m], in order
        t0 = idx[1] if m == 0 else idx[0]
        t1 = idx[2] if m <= 1 else idx[1]
        t2 = idx[2] if m == 3 else idx[3]
        _cross(u[t0], u[t1], u[t2], N)
        if _norm(N) > DEGENERATE:
            return False
    return True


@njit(**JIT)
def _qform_feature(al, be, ga, length):
    """Nearest complex zero phi* +- i eps of al cos^2 + 2 be cos sin + ga sin^2 (>= 0), as the
    point of [0, length] next to it and its distance: (point, scale); scale = inf if none."""
    m = 0.5 * (al + ga)
    r = math.hypot(0.5 * (al - ga), be)
    if not (r > 0.0) or not (m > 0.0):
        return 0.0, np.inf
    ratio = m / r
    eps = 0.5 * math.acosh(ratio) if ratio > 1.0 else 0.0
    ps = 0.5 * math.atan2(be, 0.5 * (al - ga)) + 0.5 * _PI
    ps -= _PI * math.floor((ps - 0.5 * length) / _PI + 0.5)
    p = min(max(ps, 0.0), length)
    return p, math.hypot(eps, ps - p)


@njit(**JIT)
def _integrand(phi, s, sc, bv, tv, wv, dv, deg):
    """h(phi) = sum_q (drho_bq/dphi) / sqrt(1 - rho_bq^2) * angle_q(phi): the part of 4 pi^2
    dP4/dphi that has no closed-form primitive. Everything is linear in (cos phi, sin phi):
    b(phi) ^ u_q from bv, the residual trivector N2 from tv, and n1 ^ N2 (n1 the unit residual
    of u_a) from wv, so one atan2 per term is the only transcendental."""
    c = math.cos(phi)
    sn = math.sin(phi)
    tot = 0.0
    for q in range(2):
        tq = -sn * s * sc[q, 0] + c * sc[q, 1]
        nb = 0.0
        for i in range(6):
            b = c * bv[q, 0, i] + sn * bv[q, 1, i]
            nb += b * b
        ang = 0.5 * _PI
        if not deg[q]:
            n2 = 0.0
            for i in range(4):
                x = c * tv[q, 0, i] + sn * tv[q, 1, i]
                n2 += x * x
            if n2 > DEGENERATE * DEGENERATE:
                nw = 0.0
                for i in range(6):
                    x = c * wv[q, 0, i] + sn * wv[q, 1, i]
                    nw += x * x
                ang = math.atan2(math.sqrt(nw), c * dv[q, 0] + sn * dv[q, 1])
        tot += tq / math.sqrt(nb) * ang
    return tot


@njit(**JIT)
def _gk21(origin, dirn, scale, ta, tb, s, sc, bv, tv, wv, dv, deg):
    """QUADPACK qk21 on tau in [ta, tb] of h(phi(tau)) dphi/dtau, phi = origin + dirn *
    (scale sinh tau, or tau when scale = 0). Returns (integral, error estimate)."""
    centr = 0.5 * (ta + tb)
    hl = 0.5 * (tb - ta)
    fv = np.empty(21)
    for j in range(21):
        if j < 10:
            t = centr - hl * _XGK[j]
        elif j == 10:
            t = centr
        else:
            t = centr + hl * _XGK[20 - j]
        if scale > 0.0:
            phi = origin + dirn * scale * math.sinh(t)
            jac = scale * math.cosh(t)
        else:
            phi = origin + dirn * t
            jac = 1.0
        fv[j] = _integrand(phi, s, sc, bv, tv, wv, dv, deg) * jac
    resk = _WGK[10] * fv[10]
    resg = 0.0
    resabs = abs(resk)
    for j in range(10):
        f1 = fv[j]
        f2 = fv[20 - j]
        resk += _WGK[j] * (f1 + f2)
        resabs += _WGK[j] * (abs(f1) + abs(f2))
        if j % 2 == 1:
            resg += _WG[j // 2] * (f1 + f2)
    reskh = 0.5 * resk
    resasc = _WGK[10] * abs(fv[10] - reskh)
    for j in range(10):
        resasc += _WGK[j] * (abs(fv[j] - reskh) + abs(fv[20 - j] - reskh))
    result = resk * hl
    resabs *= abs(hl)
    resasc *= abs(hl)
    err = abs((resk - resg) * hl)
    if resasc != 0.0 and err != 0.0:
        err = resasc * min(1.0, (200.0 * err / resasc) ** 1.5)
    err = max(err, 50.0 * 2.220446049250313e-16 * resabs)
    return result, err


@njit(**JIT)
def _piece(origin, dirn, scale, length, s, sc, bv, tv, wv, dv, deg):
    """Adaptive Gauss-Kronrod of h over [origin, origin + dirn * length], bisecting the
    interval of largest error until the sum of the estimates is below _PIECE_TOL."""
    T = math.asinh(length / scale) if scale > 0.0 else length
    lo = np.empty(_MAX_INTERVALS)
    hi = np.empty(_MAX_INTERVALS)
    val = np.empty(_MAX_INTERVALS)
    err = np.empty(_MAX_INTERVALS)
    lo[0] = 0.0
    hi[0] = T
    val[0], err[0] = _gk21(origin, dirn, scale, 0.0, T, s, sc, bv, tv, wv, dv, deg)
    n = 1
    while n < _MAX_INTERVALS:
        tot_err = 0.0
        worst = 0
        for i in range(n):
            tot_err += err[i]
            if err[i] > err[worst]:
                worst = i
        if tot_err <= _PIECE_TOL:
            break
        a = lo[worst]
        b = hi[worst]
        m = 0.5 * (a + b)
        hi[worst] = m
        val[worst], err[worst] = _gk21(origin, dirn, scale, a, m, s, sc, bv, tv, wv, dv, deg)
        lo[n] = m
        hi[n] = b
        val[n], err[n] = _gk21(origin, dirn, scale, m, b, s, sc, bv, tv, wv, dv, deg)
        n += 1
    tot = 0.0
    for i in range(n):
        tot += val[i]
    return tot


@njit(**JIT)
def _p4(u, idx):
    """P(u_i . Z > 0, i in idx) for four unit vectors of rank >= 3 with no pair merged."""
    # the pair of largest |rho| is rotated: the path is then as short as the most extreme pair
    best = -1.0
    ia = 0
    ib = 1
    for x in range(4):
        for y in range(x + 1, 4):
            r = abs(_dot(u[idx[x]], u[idx[y]]))
            if r > best:
                best = r
                ia = x
                ib = y
    others = np.empty(2, np.int64)
    m = 0
    for x in range(4):
        if x != ia and x != ib:
            others[m] = idx[x]
            m += 1
    ua = u[idx[ia]]
    ub = u[idx[ib]]
    rho = _dot(ua, ub)
    s = 1.0 if rho >= 0.0 else -1.0
    w = np.empty(4)
    sa = np.empty(4)
    for i in range(4):
        w[i] = ub[i] - rho * ua[i]
        sa[i] = s * ua[i]
    nw = _norm(w)
    for i in range(4):
        w[i] /= nw
    theta_ab = _angle(sa, ub)
    up = u[others[0]]
    uo = u[others[1]]

    # closed-form part: start, the constant (b, a) term, the 1/4 of the (b, q) terms
    if s > 0.0:
        P = 0.5 - (_angle(ua, up) + _angle(ua, uo) + _angle(up, uo)) / (4.0 * _PI)
    else:
        P = 0.0
    N1 = np.empty(4)
    N2 = np.empty(4)
    _cross(ua, w, up, N1)
    _cross(ua, w, uo, N2)
    p_ab = (_PI - _cond_angle(N1, N2)) / _TWO_PI
    P -= s * theta_ab * p_ab / _TWO_PI
    P += (_angle(sa, up) - _angle(ub, up) + _angle(sa, uo) - _angle(ub, uo)) / (4.0 * _PI)

    # the integrand's coefficients, for q = p (other o) and q = o (other p)
    sc = np.empty((2, 2))
    bv = np.empty((2, 2, 6))
    tv = np.empty((2, 2, 4))
    wv = np.empty((2, 2, 6))
    dv = np.empty((2, 2))
    n1s = np.empty((2, 4))
    deg = np.zeros(2, np.bool_)
    for q in range(2):
        uq = u[others[q]]
        uother = u[others[1 - q]]
        sc[q, 0] = _dot(ua, uq)
        sc[q, 1] = _dot(w, uq)
        _wedge(sa, uq, bv[q, 0])
        _wedge(w, uq, bv[q, 1])
        n1 = n1s[q]
        _cross(w, uq, ua, n1)
        _cross(sa, uq, uother, tv[q, 0])
        _cross(w, uq, uother, tv[q, 1])
        nn = _norm(n1)
        deg[q] = nn <= DEGENERATE
        if not deg[q]:
            for i in range(4):
                n1[i] /= nn
            for r in range(2):
                _wedge(n1, tv[q, r], wv[q, r])
                dv[q, r] = _dot(n1, tv[q, r])

    # near-singularities: b(phi) next to +-u_q, the residual of the other vector vanishing,
    # and the two residual directions turning parallel
    fpos = np.empty(6)
    fscl = np.empty(6)
    nf = 0
    for q in range(2):
        B0 = bv[q, 0]
        B1 = bv[q, 1]
        fpos[nf], fscl[nf] = _qform_feature(_dot(B0, B0), _dot(B0, B1), _dot(B1, B1), theta_ab)
        nf += 1
        if deg[q]:
            continue
        A = tv[q, 0]
        B = tv[q, 1]
        fpos[nf], fscl[nf] = _qform_feature(_dot(A, A), _dot(A, B), _dot(B, B), theta_ab)
        nf += 1
        W0 = wv[q, 0]
        W1 = wv[q, 1]
        fpos[nf], fscl[nf] = _qform_feature(_dot(W0, W0), _dot(W0, W1), _dot(W1, W1), theta_ab)
        nf += 1
    # only the sharp ones shape the pieces; a scale below 1e-13 theta is a jump at the point
    pts = np.empty(nf + 2)
    pts[0] = 0.0
    pts[1] = theta_ab
    npts = 2
    for f in range(nf):
        if fscl[f] < 0.5 * theta_ab:
            if fscl[f] < 1e-13 * theta_ab:
                fscl[f] = 0.0
            pts[npts] = fpos[f]
            npts += 1
    pts = np.sort(pts[:npts])
    integral = 0.0
    for k in range(npts - 1):
        a = pts[k]
        b = pts[k + 1]
        if b <= a:
            continue
        el = np.inf
        er = np.inf
        for f in range(nf):
            if fscl[f] < 0.5 * theta_ab:
                if fpos[f] == a:
                    el = min(el, fscl[f])
                if fpos[f] == b:
                    er = min(er, fscl[f])
        if el < np.inf and er < np.inf:
            mid = 0.5 * (a + b)
            integral += _piece(a, 1.0, el, mid - a, s, sc, bv, tv, wv, dv, deg)
            integral += _piece(b, -1.0, er, b - mid, s, sc, bv, tv, wv, dv, deg)
        elif er < np.inf:
            integral += _piece(b, -1.0, er, b - a, s, sc, bv, tv, wv, dv, deg)
        elif el < np.inf:
            integral += _piece(a, 1.0, el, b - a, s, sc, bv, tv, wv, dv, deg)
        else:
            integral += _piece(a, 1.0, 0.0, b - a, s, sc, bv, tv, wv, dv, deg)
    return P - integral / (4.0 * _PI * _PI)


@njit(**JIT)
def _probability(u, idx, n):
    """P(u_i . Z > 0 for i in idx[:n]) for n <= 4 unit vectors, no pair (anti-)merged."""
    if n == 0:
        return 1.0
    if n == 1:
        return 0.5
    if n == 2:
        return 0.5 - _angle(u[idx[0]], u[idx[1]]) / _TWO_PI
    if n == 3:
        a = u[idx[0]]
        b = u[idx[1]]
        c = u[idx[2]]
        return 0.5 - (_angle(a, b) + _angle(a, c) + _angle(b, c)) / (4.0 * _PI)
    if _is_planar4(u, idx):
        e1 = np.empty(4)
        e2 = np.empty(4)
        _plane_of(u, idx, n, e1, e2)
        p1, p2 = _planar_arc(u, idx, n, e1, e2)
        return max(p2 - p1, 0.0) / _TWO_PI
    # P4 >= 0; a configuration of measure ~0 can come out as -1e-17
    return max(_p4(u, idx), 0.0)


# ---------------------------------------------------------------------------------------------
# preparation shared by both public functions


@njit(**JIT)
def _prepare(C, theta, U, u, sd, idx):
    """Merge the Heaviside variables and factorise the correlation matrix.

    Fills sd (standard deviations), U (pivoted-Cholesky rows, correlation scale), u (those rows
    normalised) and idx[:n] (one representative per distinct Heaviside variable); returns n, or
    -1 when the expectation is 0 (a zero Heaviside variable or linear factor, or two Heaviside
    variables of correlation -1).
    """
    active = np.zeros(4, np.bool_)
    for m in range(4):
        v = C[m, m]
        sd[m] = math.sqrt(v) if v > 0.0 else 0.0
        active[m] = v > 0.0
    K = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            if active[i] and active[j]:
                r = 0.5 * (C[i, j] + C[j, i]) / (sd[i] * sd[j])
                K[i, j] = min(max(r, -1.0), 1.0)
        if active[i]:
            K[i, i] = 1.0
    n = 0
    for m in range(4):
        if not theta[m]:
            continue
        if not active[m]:
            return -1
        merged = False
        for r in range(n):
            rho = K[m, idx[r]]
            if rho > 1.0 - MERGE_TOL:
                merged = True
                break
            if rho < -1.0 + MERGE_TOL:
                return -1
        if not merged:
            idx[n] = m
            n += 1
    _pivoted_cholesky(K, active, U)
    for m in range(4):
        nu = _norm(U[m])
        for i in range(4):
            u[m, i] = U[m, i] / nu if nu > 0.0 else 0.0
    return n


# ---------------------------------------------------------------------------------------------
# public


@njit(**JIT)
def orthant_probability(R):
    """P(X_m > 0 for m = 0..3) for X ~ N(0, R), R a 4 x 4 covariance (or correlation) matrix.

    Identical variables (correlation 1 within MERGE_TOL) count once; correlation -1, or a
    variable of zero variance, gives 0.
    """
    U = np.empty((4, 4))
    u = np.empty((4, 4))
    sd = np.empty(4)
    idx = np.zeros(4, np.int64)
    theta = np.ones(4, np.bool_)
    n = _prepare(R, theta, U, u, sd, idx)
    if n < 0:
        return 0.0
    return _probability(u, idx, n)


@njit(**JIT)
def orthant_moment(C, theta):
    """E[X2 X3 prod_{m : theta[m]} H(X_m)] for X ~ N(0, C), C (4, 4) positive semi-definite,
    theta (4,) bool or uint8; H(0) = 0.

    Parameters
    ----------
    C : ndarray, shape (4, 4)
        Covariance; may be singular (repeated, proportional or zero variables).
    theta : ndarray, shape (4,)
        Which variables enter through the Heaviside step (X2, X3 enter as relu when theirs is
        set, as the plain linear field otherwise).

    Returns
    -------
    float
        The expectation; it scales as C (orthant_moment(s^2 C) = s^2 orthant_moment(C)).
    """
    U = np.empty((4, 4))
    u = np.empty((4, 4))
    sd = np.empty(4)
    idx = np.zeros(4, np.int64)
    n = _prepare(C, theta, U, u, sd, idx)
    if n < 0 or sd[2] == 0.0 or sd[3] == 0.0:
        return 0.0
    c_cd = 0.5 * (C[2, 3] + C[3, 2])
    if n == 0:
        return c_cd
    if n == 1:
        return 0.5 * c_cd
    uc = np.empty(4)
    ud = np.empty(4)
    for i in range(4):
        uc[i] = sd[2] * U[2, i]
        ud[i] = sd[3] * U[3, i]
    # P(rest > 0 | X_j = X_k = 0) for the unordered pair of positions (a, b) of idx
    rest = np.empty((4, 4))
    planar = n == 4
    if n == 4:
        N1 = np.empty(4)
        N2 = np.empty(4)
        for a in range(4):
            for b in range(a + 1, 4):
                l = -1
                m = -1
                for c in range(4):
                    if c != a and c != b:
                        if l < 0:
                            l = idx[c]
                        else:
                            m = idx[c]
                _cross(u[idx[a]], u[idx[b]], u[l], N1)
                _cross(u[idx[a]], u[idx[b]], u[m], N2)
                if _norm(N1) > DEGENERATE or _norm(N2) > DEGENERATE:
                    planar = False
                rest[a, b] = rest[b, a] = (_PI - _cond_angle(N1, N2)) / _TWO_PI
    else:
        rest[:, :] = 1.0 if n == 2 else 0.5
    if planar:
        # four Heaviside variables in a plane: the cone is a wedge of that plane, and the
        # residual directions of the formula below are all undetermined at once
        e1 = np.empty(4)
        e2 = np.empty(4)
        _plane_of(u, idx, n, e1, e2)
        p1, p2 = _planar_arc(u, idx, n, e1, e2)
        if p2 <= p1:
            return 0.0
        c1 = _dot(uc, e1)
        c2 = _dot(uc, e2)
        d1 = _dot(ud, e1)
        d2 = _dot(ud, e2)
        inplane = c1 * d1 + c2 * d2
        arc = p2 - p1
        # (1/pi) int (c.e)(d.e) dpsi, plus the out-of-plane parts times P
        val = 0.5 * inplane * arc
        val += 0.25 * (c1 * d1 - c2 * d2) * (math.sin(2.0 * p2) - math.sin(2.0 * p1))
        val -= 0.25 * (c1 * d2 + c2 * d1) * (math.cos(2.0 * p2) - math.cos(2.0 * p1))
        return (c_cd - inplane) * arc / _TWO_PI + val / _PI
    P = max(_p4(u, idx), 0.0) if n == 4 else _probability(u, idx, n)
    total = c_cd * P
    B = np.empty(6)
    D = np.empty(6)
    for a in range(n):
        j = idx[a]
        _wedge(u[j], ud, D)
        cj = _dot(uc, u[j]) / _TWO_PI
        for b in range(n):
            if a != b:
                # u_d . e_{k|j} = <u_j ^ u_d, u_j ^ u_k> / |u_j ^ u_k|: no cancellation
                _wedge(u[j], u[idx[b]], B)
                total += cj * _dot(D, B) / _norm(B) * rest[a, b]
    return total


__all__ = ["orthant_moment", "orthant_probability", "MERGE_TOL"]
