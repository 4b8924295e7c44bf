"""Activation functions and their exact two-point Gaussian functions, as small @njit functions.

An activation is an integer code (:data:`QUADRATIC` = 0, the default, then :data:`LINEAR`,
:data:`RELU`, :data:`ERF`); a kernel takes the student's and the teacher's codes as arguments, so
one compiled kernel serves every pair and the quadratic branch does exactly the arithmetic it
always did.

For two jointly Gaussian local fields ``h_a ~ N(0, A)``, ``h_b ~ N(0, B)``, ``E[h_a h_b] = c``,
with activations ``g_a`` (code ``alpha``) and ``g_b`` (code ``beta``):

- :func:`pair_k`  ``k = E[g_a(h_a) g_b(h_b)]``
- :func:`pair_j`  ``J = E[g_a'(h_a) g_b'(h_b)] = dk/dc``
- :func:`pair_l`  ``L = E[g_a''(h_a) g_b(h_b)] = 2 dk/dA`` (Price's theorem; ReLU's ``g''`` is a
  Dirac delta, erf's is ``-h g'(h)``)

all in closed form for the 16 ordered pairs (docs/theory.md, 'Other activations'). With
``c = A = B`` they give the one-variable moments ``E[g(h)^2]``, ``E[g'(h)^2]``,
``E[g''(h) g(h)]`` of a single field (the formulas are continuous there), so a unit's self-terms
need no special case. The ReLU convention is ``relu'(0) = 0``: a unit whose weights are exactly
zero has no gradient.
"""

import math

from numba import njit

from .options import JIT

QUADRATIC = 0
LINEAR = 1
RELU = 2
ERF = 3

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TWO_PI = 2.0 * math.pi


@njit(inline="always", **JIT)
def act(code, h):
    """g(h) for the activation ``code``; h of any float type, result of the same type."""
    if code == QUADRATIC:
        return h * h
    if code == LINEAR:
        return h
    if code == RELU:
        return h if h > 0 else h * 0
    return h * 0 + math.erf(h * _SQRT_HALF)


@njit(inline="always", **JIT)
def act_prime(code, h):
    """g'(h) for the activation ``code`` (``relu'(0) = 0``)."""
    if code == QUADRATIC:
        return h + h
    if code == LINEAR:
        return h * 0 + 1
    if code == RELU:
        return h * 0 + 1 if h > 0 else h * 0
    return h * 0 + _SQRT_2_OVER_PI * math.exp(-0.5 * h * h)


@njit(**JIT)
def _mean(code, B):
    """E[g(h)] for h ~ N(0, B)."""
    if code == QUADRATIC:
        return B
    if code == RELU:
        return math.sqrt(B) * _INV_SQRT_2PI
    return 0.0  # linear and erf are odd


@njit(**JIT)
def _clip(x):
    return min(1.0, max(-1.0, x))


@njit(**JIT)
def _relu_angle(A, B, c):
    """(sqrt(A B - c^2), the angle t between the two fields' weight vectors).

    atan2 instead of acos(c / sqrt(A B)): acos loses half the digits next to 1, so a field with
    itself (c = A = B) would be off by 1e-8; atan2 is exact there (t = 0) and divides by nothing
    (a dying unit's A B may underflow)."""
    r = math.sqrt(max(A * B - c * c, 0.0))
    return r, math.atan2(r, c)


@njit(**JIT)
def pair_k(alpha, beta, A, B, c):
    """E[g_alpha(h_a) g_beta(h_b)] for (h_a, h_b) ~ N(0, [[A, c], [c, B]])."""
    if alpha > beta:  # symmetric: keep alpha <= beta
        alpha, beta = beta, alpha
        A, B = B, A
    if alpha == QUADRATIC:
        if beta == QUADRATIC:
            return A * B + 2.0 * c * c
        if beta == RELU:
            # Stein twice: A E[relu] + c^2 E[delta]
            return (A * B + c * c) / math.sqrt(_TWO_PI * B) if B > 0.0 else 0.0
        return 0.0  # h^2 against an odd function
    if alpha == LINEAR:
        if beta == LINEAR:
            return c
        if beta == RELU:
            return 0.5 * c if B > 0.0 else 0.0
        return c * _SQRT_2_OVER_PI / math.sqrt(1.0 + B)  # erf: c E[g'(h_b)]
    if alpha == RELU:
        if beta == RELU:
            if A <= 0.0 or B <= 0.0:
                return 0.0
            # the degree-1 arc-cosine kernel, sqrt(A B) (sin t + (pi - t) cos t)
            r, angle = _relu_angle(A, B, c)
            return (r + c * (math.pi - angle)) / _TWO_PI
        # erf: relu = (h + |h|) / 2 and |h_a| erf(h_b) averages to zero
        return c / math.sqrt(_TWO_PI * (1.0 + B)) if A > 0.0 else 0.0
    # erf with erf
    return (2.0 / math.pi) * math.asin(_clip(c / math.sqrt((1.0 + A) * (1.0 + B))))


@njit(**JIT)
def pair_j(alpha, beta, A, B, c):
    """E[g_alpha'(h_a) g_beta'(h_b)] (= d pair_k / dc)."""
    if alpha > beta:
        alpha, beta = beta, alpha
        A, B = B, A
    if alpha == QUADRATIC:
        if beta == QUADRATIC:
            return 4.0 * c
        if beta == RELU:
            return 2.0 * c / math.sqrt(_TWO_PI * B) if B > 0.0 else 0.0
        return 0.0  # 2 h_a against 1 (linear) or an even g' (erf): 2 c E[g''] = 0
    if alpha == LINEAR:
        if beta == LINEAR:
            return 1.0
        if beta == RELU:
            return 0.5 if B > 0.0 else 0.0
        return _SQRT_2_OVER_PI / math.sqrt(1.0 + B)
    if alpha == RELU:
        if A <= 0.0:
            return 0.0
        if beta == RELU:
            if B <= 0.0:
                return 0.0
            return (math.pi - _relu_angle(A, B, c)[1]) / _TWO_PI
        return 1.0 / math.sqrt(_TWO_PI * (1.0 + B))
    return (2.0 / math.pi) / math.sqrt(max((1.0 + A) * (1.0 + B) - c * c, 1e-300))


@njit(**JIT)
def pair_l(alpha, beta, A, B, c):
    """E[g_alpha''(h_a) g_beta(h_b)] (= 2 d pair_k / dA); not symmetric in its arguments."""
    if alpha == QUADRATIC:
        return 2.0 * _mean(beta, B)
    if alpha == LINEAR:
        return 0.0
    if alpha == RELU:
        # delta(h_a): the density of h_a at 0 times E[g_beta(h_b) | h_a = 0]
        if A <= 0.0:
            return 0.0
        # (A B - c^2) / A: exactly 0 for a field with itself (c = A = B)
        return _mean(beta, max((A * B - c * c) / A, 0.0)) / math.sqrt(_TWO_PI * A)
    # erf: 2 d/dA of pair_k(ERF, beta, A, B, c)
    if beta == QUADRATIC:
        return 0.0
    if beta == LINEAR:
        return -c * _SQRT_2_OVER_PI / (1.0 + A) ** 1.5
    if beta == RELU:
        return -c / (math.sqrt(_TWO_PI) * (1.0 + A) ** 1.5) if B > 0.0 else 0.0
    u = _clip(c / math.sqrt((1.0 + A) * (1.0 + B)))
    return -(2.0 / math.pi) * u / ((1.0 + A) * math.sqrt(max(1.0 - u * u, 1e-300)))
