"""Gaussian orthant moments (fastquad.kernels.orthant): exact values, independent references
(scipy quadrature along another path, nested quadrature of the density, Monte Carlo), a plain
NumPy version of the formula, invariances, merged and degenerate variables."""

import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import integrate, special

from fastquad.kernels.orthant import MERGE_TOL, orthant_moment, orthant_probability

ALL = np.ones(4, np.bool_)
PATTERNS = [(1, 1, 1, 1), (1, 1, 1, 0), (1, 1, 0, 1), (1, 1, 0, 0), (1, 0, 1, 1), (0, 0, 0, 0)]


def _theta(t):
    return np.array(t, np.bool_)


def _gram(V):
    V = np.asarray(V, float)
    return V @ V.T


def _corr(V):
    G = _gram(V)
    d = np.sqrt(np.diag(G))
    return G / np.outer(d, d)


def _rotated(v, angle, rng):
    """A vector of the norm of v at the given angle from it (in a random direction)."""
    e = rng.standard_normal(v.shape)
    e -= (e @ v) / (v @ v) * v
    return np.linalg.norm(v) * (
        math.cos(angle) * v / np.linalg.norm(v) + math.sin(angle) * e / np.linalg.norm(e)
    )


def _p2(r):
    return 0.25 + math.asin(r) / (2 * math.pi)


def _p3(R):
    return 0.125 + (math.asin(R[0, 1]) + math.asin(R[0, 2]) + math.asin(R[1, 2])) / (4 * math.pi)


def _p4_plackett(R):
    """P4 by Plackett's identity along the straight path R(t) = I + t (R - I) from the identity
    (scipy quad in s, t = 1 - s^2), with Schur-complement conditioning: another path and another
    arithmetic than the rotation of the pair of largest |rho| in the kernel."""
    pairs = list(itertools.combinations(range(4), 2))

    def dP(t):
        Rt = (1 - t) * np.eye(4) + t * R
        tot = 0.0
        for i, j in pairs:
            ij = [i, j]
            kl = [m for m in range(4) if m not in ij]
            A = Rt[np.ix_(kl, ij)]
            S = Rt[np.ix_(kl, kl)] - A @ np.linalg.solve(Rt[np.ix_(ij, ij)], A.T)
            r = np.clip(S[0, 1] / math.sqrt(S[0, 0] * S[1, 1]), -1.0, 1.0)
            tot += R[i, j] / (2 * math.pi * math.sqrt(1 - Rt[i, j] ** 2)) * _p2(r)
        return tot

    val, _ = integrate.quad(
        lambda s: 2 * s * dP(1 - s * s), 0.0, 1.0, epsabs=1e-14, epsrel=1e-13, limit=500
    )
    return 1 / 16 + val


# ---------------------------------------------------------------------------------------------
# 1. orthant probability


def test_probability_exact_values():
    assert orthant_probability(np.eye(4)) == pytest.approx(1 / 16, abs=1e-15)
    R = np.full((4, 4), 0.5) + 0.5 * np.eye(4)
    assert orthant_probability(R) == pytest.approx(1 / 5, abs=1e-14)  # 1/(n+1) at rho = 1/2
    # rho = -1/3: a regular simplex, sum u_i = 0, so no direction is positive on all four
    R = np.full((4, 4), -1 / 3) + 4 / 3 * np.eye(4)
    assert orthant_probability(R) == pytest.approx(0.0, abs=1e-14)
    # covariance instead of correlation: the scale of each variable does not matter
    D = np.diag([0.3, 2.0, 1.0, 7.0])
    R = np.full((4, 4), 0.5) + 0.5 * np.eye(4)
    assert orthant_probability(D @ R @ D) == pytest.approx(1 / 5, abs=1e-14)


def test_probability_block_diagonal_is_a_product(rng):
    for _ in range(10):
        a, b = rng.uniform(-0.999, 0.999, 2)
        R = np.eye(4)
        R[0, 1] = R[1, 0] = a
        R[2, 3] = R[3, 2] = b
        perm = rng.permutation(4)
        got = orthant_probability(R[np.ix_(perm, perm)])
        assert got == pytest.approx(_p2(a) * _p2(b), abs=1e-14)
        # a triple and an independent fourth variable
        R3 = _corr(rng.standard_normal((3, 5)))
        R = np.eye(4)
        R[:3, :3] = R3
        assert orthant_probability(R) == pytest.approx(_p3(R3) / 2, abs=1e-14)


def test_probability_merged_variables_reduce_to_three(rng):
    """X3 = c X2 (c > 0) merges to the three-variable formula; c < 0 gives 0; and P4 tends to
    P3 as 1 - rho, continuously (as sqrt(1 - rho), the opening of the wedge)."""
    for _ in range(5):
        V = rng.standard_normal((4, 6))
        V[3] = 2.5 * V[2]
        R3 = _corr(V[:3])
        assert orthant_probability(_gram(V)) == pytest.approx(_p3(R3), abs=1e-14)
        V[3] = -0.4 * V[2]
        assert orthant_probability(_gram(V)) == 0.0
        e = _rotated(V[2], 0.5 * math.pi, rng)  # one direction of approach for all delta
        ratios = []
        for delta in [1e-4, 1e-6, 1e-8, 1e-10, 1e-12]:
            ang = math.acos(1 - delta)
            V[3] = math.cos(ang) * V[2] + math.sin(ang) * e
            dp = orthant_probability(_gram(V)) - _p3(R3)
            assert -1.0 * math.sqrt(delta) < dp < 0  # sqrt(2 delta) / (2 pi) at most
            ratios.append(dp / math.sqrt(delta))
        # no blow-up: a bounded, converging coefficient of sqrt(1 - rho)
        assert abs(ratios[-1] - ratios[-2]) < 1e-3 * abs(ratios[-2]) + 1e-4


def test_probability_of_a_plane_is_its_arc(rng):
    """Rank 2: four directions in a plane at angles a_i; the positive set is an arc of length
    pi - (spread of the a_i) when they lie within a half-circle, else empty."""
    for _ in range(20):
        spread = rng.uniform(0.1, 1.3 * math.pi)
        a = np.sort(np.concatenate([[0.0, spread], rng.uniform(0, spread, 2)]))
        a += rng.uniform(0, 2 * math.pi)
        # an orthonormal frame of a plane in R^7, so that the angles are the a_i
        q, _ = np.linalg.qr(rng.standard_normal((7, 2)))
        V = np.cos(a)[:, None] * q[:, 0] + np.sin(a)[:, None] * q[:, 1]
        want = max(math.pi - spread, 0.0) / (2 * math.pi)
        assert orthant_probability(_gram(V)) == pytest.approx(want, abs=1e-13)


def _probability_cases(rng):
    cases = [_corr(rng.standard_normal((4, rng.integers(4, 8)))) for _ in range(30)]
    for dim in (2, 3):  # near-singular: vectors in a plane / 3-space plus 1e-3 noise
        for _ in range(5):
            V = np.hstack([rng.standard_normal((4, dim)), 1e-3 * rng.standard_normal((4, 4 - dim))])
            cases.append(_corr(V))
    for sign in (1, -1):  # a pair of correlation +-(1 - 1e-6)
        for _ in range(5):
            V = rng.standard_normal((4, 4))
            V[1] = sign * _rotated(V[0], math.acos(1 - 1e-6), rng)
            cases.append(_corr(V))
    return cases


def test_probability_matches_plackett_from_the_identity(rng):
    """50 correlation matrices, 20 of them near-singular (lambda_min down to ~1e-8, or
    |rho| = 1 - 1e-6): agreement < 1e-9 (measured: < 1e-14)."""
    worst = 0.0
    for R in _probability_cases(rng):
        worst = max(worst, abs(orthant_probability(R) - _p4_plackett(R)))
    assert worst < 1e-9


def test_probability_is_invariant_under_permutation_and_scale(rng):
    for _ in range(20):
        R = _corr(rng.standard_normal((4, 5)))
        p = orthant_probability(R)
        perm = rng.permutation(4)
        D = np.diag(rng.uniform(0.1, 10, 4))
        assert orthant_probability(R[np.ix_(perm, perm)]) == pytest.approx(p, abs=1e-14)
        assert orthant_probability(D @ R @ D) == pytest.approx(p, abs=1e-14)


def test_probability_extreme_correlations(rng):
    """Two pairs at rho = 1 - 1e-8 and -(1 - 1e-8), independent of each other, in shuffled
    order: P2 P2 to 1e-13 (the rotated pair's path is 1.4e-4 long). That is the conditioning of
    the input: rho = 1 - 1e-8 rounded to double has 1 - rho to 1e-8 relative, so P2(-rho) ~ 2e-5
    is known to ~1e-13."""
    a = math.acos(1 - 1e-8)
    V = np.array(
        [
            [1, 0, 0, 0],
            [math.cos(a), math.sin(a), 0, 0],
            [0, 0, 1, 0],
            [0, 0, -math.cos(a), math.sin(a)],
        ]
    )
    R = _corr(V)
    want = _p2(R[0, 1]) * _p2(R[2, 3])
    for _ in range(5):
        perm = rng.permutation(4)
        assert orthant_probability(R[np.ix_(perm, perm)]) == pytest.approx(want, abs=1e-13)


# ---------------------------------------------------------------------------------------------
# 2. orthant moment


def _monte_carlo(C, patterns, rng, n=4_000_000, chunk=1_000_000):
    """Mean and standard error of X2 X3 prod_theta H(X_m) for each theta pattern."""
    w, Q = np.linalg.eigh(C)
    L = Q * np.sqrt(np.clip(w, 0, None))
    sums = np.zeros(len(patterns))
    sq = np.zeros(len(patterns))
    for _ in range(n // chunk):
        X = L @ rng.standard_normal((4, chunk))  # rows contiguous
        pos = X > 0
        xx = X[2] * X[3]
        for p, t in enumerate(patterns):
            keep = np.ones(chunk, np.bool_)
            for m in range(4):
                if t[m]:
                    keep &= pos[m]
            f = np.where(keep, xx, 0.0)
            sums[p] += f.sum()
            sq[p] += f @ f
    mean = sums / n
    return mean, np.sqrt((sq / n - mean**2) / n)


def _mc_cases(rng):
    cases = []
    for _ in range(6):
        A = rng.standard_normal((4, 6)) * rng.uniform(0.5, 2.0, (4, 1))
        cases.append(_gram(A) / 6)
    w = rng.standard_normal((3, 6))
    cases.append(_gram([w[0], w[0], w[1], w[2]]))  # i = k
    cases.append(_gram([w[0], w[1], w[0], w[2]]))  # i = c
    cases.append(_gram([w[0], w[1], w[2], 2.0 * w[2]]))  # c = d, proportional
    cases.append(_gram([w[0], w[1], -0.5 * w[0], w[1] + w[0]]))  # rank 2, anti-proportional
    V = rng.standard_normal((4, 3))  # rank 3
    cases.append(_gram(V))
    cases.append(_gram([w[0], w[1], w[0] - 0.7 * w[1], w[2]]))  # a coplanar triple
    return cases


@pytest.mark.slow
def test_moment_matches_monte_carlo(rng):
    """12 covariances (random, repeated, proportional, rank 2 and 3) x 6 theta patterns,
    4e6 samples each: within 5 standard errors, with errors of 1% of the scale detectable."""
    for C in _mc_cases(rng):
        mean, se = _monte_carlo(C, PATTERNS, rng)
        scale = math.sqrt(C[2, 2] * C[3, 3])
        for t, m, s in zip(PATTERNS, mean, se):
            got = orthant_moment(C, _theta(t))
            assert abs(got - m) < 5 * s + 1e-12, (t, got, m, s)
            assert 5 * s < 0.01 * scale


def _phi2(h, k, rho):
    """P(Y0 < h, Y1 < k) for a standard bivariate normal of correlation rho (Owen's T)."""
    h = h if h != 0 else 1e-300
    k = k if k != 0 else 1e-300
    sq = math.sqrt(1 - rho * rho)
    beta = 0.5 if h * k < 0 else 0.0
    return (
        0.5 * (special.ndtr(h) + special.ndtr(k))
        - special.owens_t(h, (k - rho * h) / (h * sq))
        - special.owens_t(k, (h - rho * k) / (k * sq))
        - beta
    )


def _moment_nested(C, theta23):
    """E[X2 X3 1{X0 > 0, X1 > 0} (1{X2 > 0}) (1{X3 > 0})] by nested scipy quad over the density
    of (X2, X3) in polar coordinates, with P(X0 > 0, X1 > 0 | X2, X3) exact (Owen's T)."""
    Z = [2, 3]
    Y = [0, 1]
    Czz = C[np.ix_(Z, Z)]
    Czi = np.linalg.inv(Czz)
    B = C[np.ix_(Y, Z)] @ Czi
    S = C[np.ix_(Y, Y)] - B @ C[np.ix_(Z, Y)]
    s0, s1 = math.sqrt(S[0, 0]), math.sqrt(S[1, 1])
    rs = S[0, 1] / (s0 * s1)
    norm = 1 / (2 * math.pi * math.sqrt(np.linalg.det(Czz)))

    def radial(psi):
        e = np.array([math.cos(psi), math.sin(psi)])
        q = e @ Czi @ e
        h = (B[0] @ e) / s0 / math.sqrt(q)
        k = (B[1] @ e) / s1 / math.sqrt(q)

        def f(x):
            return x**3 * math.exp(-0.5 * x * x) * _phi2(x * h, x * k, rs)

        val, _ = integrate.quad(f, 0, 14, epsabs=1e-14, epsrel=1e-13, limit=200)
        return e[0] * e[1] / q**2 * norm * val

    lo, hi = {
        (1, 1): (0.0, 0.5 * math.pi),
        (1, 0): (-0.5 * math.pi, 0.5 * math.pi),
        (0, 1): (0.0, math.pi),
        (0, 0): (0.0, 2 * math.pi),
    }[tuple(theta23)]
    total = 0.0
    for a in np.arange(lo, hi - 1e-12, 0.5 * math.pi):  # quadrant by quadrant: smooth pieces
        v, _ = integrate.quad(radial, a, a + 0.5 * math.pi, epsabs=1e-14, epsrel=1e-13)
        total += v
    return total


def test_phi2_helper_is_exact():
    """The test's bivariate normal CDF against a one-dimensional quad and the orthant limit."""
    for h, k, r in [(0.3, -1.2, 0.6), (-0.7, -0.2, -0.8), (1.5, 0.4, 0.1), (-2.0, 1.0, 0.95)]:
        s = math.sqrt(1 - r * r)
        want, _ = integrate.quad(
            lambda x: (
                math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi) * special.ndtr((k - r * x) / s)
            ),
            -np.inf,
            h,
            epsabs=1e-15,
        )
        assert _phi2(h, k, r) == pytest.approx(want, abs=1e-13)
    assert _phi2(1e-12, -1e-12, 0.3) == pytest.approx(_p2(0.3), abs=1e-11)


def test_moment_matches_nested_quadrature(rng):
    """All four Heaviside (and X3 linear): agreement 1e-8 relative to the scale (measured
    ~1e-12)."""
    for _ in range(4):
        A = rng.standard_normal((4, 6))
        C = _gram(A) / 6
        scale = math.sqrt(C[2, 2] * C[3, 3])
        for t in [(1, 1, 1, 1), (1, 1, 1, 0), (1, 1, 0, 0)]:
            want = _moment_nested(C, t[2:])
            assert orthant_moment(C, _theta(t)) == pytest.approx(want, abs=1e-8 * scale)


def _moment_numpy(C, theta):
    """The integration-by-parts formula with Schur complements (no merging; C non-singular):
    C_cd P_S + sum_{j != k} C_cj C'_dk|j phi2_jk(0, 0) P(rest > 0 | X_j = X_k = 0)."""
    S = [m for m in range(4) if theta[m]]
    R = C / np.sqrt(np.outer(np.diag(C), np.diag(C)))
    n = len(S)
    if n == 0:
        P = 1.0
    elif n == 1:
        P = 0.5
    elif n == 2:
        P = _p2(R[S[0], S[1]])
    elif n == 3:
        P = _p3(R[np.ix_(S, S)])
    else:
        P = _p4_plackett(R)
    total = C[2, 3] * P
    for j in S:
        for k in S:
            if j == k:
                continue
            cdk = C[3, k] - C[3, j] * C[j, k] / C[j, j]
            det = C[j, j] * C[k, k] - C[j, k] ** 2
            rest = [m for m in S if m not in (j, k)]
            if len(rest) == 0:
                pr = 1.0
            elif len(rest) == 1:
                pr = 0.5
            else:
                jk = [j, k]
                A = C[np.ix_(rest, jk)]
                Sc = C[np.ix_(rest, rest)] - A @ np.linalg.solve(C[np.ix_(jk, jk)], A.T)
                pr = _p2(Sc[0, 1] / math.sqrt(Sc[0, 0] * Sc[1, 1]))
            total += C[2, j] * cdk / (2 * math.pi * math.sqrt(det)) * pr
    return total


def test_moment_matches_a_plain_numpy_version(rng):
    for _ in range(20):
        C = _gram(rng.standard_normal((4, 5)))
        for t in PATTERNS:
            want = _moment_numpy(C, t)
            assert orthant_moment(C, _theta(t)) == pytest.approx(want, rel=1e-11, abs=1e-13)


def test_moment_invariances(rng):
    swap01 = [1, 0, 2, 3]
    swap23 = [0, 1, 3, 2]
    for _ in range(30):
        C = _gram(rng.standard_normal((4, rng.integers(3, 6))))  # rank 3 included
        for t in PATTERNS:
            th = _theta(t)
            m = orthant_moment(C, th)
            tol = 1e-12 * np.abs(C).max()
            for p in (swap01, swap23):
                assert abs(orthant_moment(C[np.ix_(p, p)], th[p]) - m) < tol
            s = rng.uniform(0.1, 10)
            assert orthant_moment(s * s * C, th) == pytest.approx(s * s * m, rel=1e-12, abs=tol)
            # rescaling a Heaviside-only variable changes nothing
            for v in (0, 1):
                if t[v]:
                    D = np.eye(4)
                    D[v, v] = rng.uniform(0.01, 100)
                    assert abs(orthant_moment(D @ C @ D, th) - m) < tol
            # uint8 masks are the same masks
            assert orthant_moment(C, th.astype(np.uint8)) == m


def _k1(C2):
    """E[relu(X) relu(Y)] (arc-cosine kernel of degree 1)."""
    sx, sy = math.sqrt(C2[0, 0]), math.sqrt(C2[1, 1])
    r = C2[0, 1] / (sx * sy)
    return sx * sy * (math.sqrt(1 - r * r) + r * (math.pi - math.acos(r))) / (2 * math.pi)


def test_moment_repeated_variables_equal_the_closed_forms(rng):
    for _ in range(10):
        w = rng.standard_normal((3, 6))
        c = w[0] @ w[0]
        # all four the same: E[H(X)^2 relu(X)^2] = E[H(X) X^2] = C00 / 2
        for t in [(1, 1, 1, 1), (1, 1, 0, 0), (1, 1, 1, 0)]:
            got = orthant_moment(_gram([w[0]] * 4), _theta(t))
            assert got == pytest.approx(c / 2, rel=1e-14)
        C2 = _gram(w[:2])
        k1 = _k1(C2)
        # E[H(X0) H(X1) relu(X0) relu(X1)] = E[relu X0 relu X1], also with X1 linear
        assert orthant_moment(_gram([w[0], w[1], w[0], w[1]]), ALL) == pytest.approx(k1, rel=1e-13)
        th = _theta((1, 1, 1, 0))
        assert orthant_moment(_gram([w[0], w[1], w[0], w[1]]), th) == pytest.approx(k1, rel=1e-13)
        # i = k = c: E[H(X0) relu(X0) relu(X1)]
        assert orthant_moment(_gram([w[0], w[0], w[0], w[1]]), ALL) == pytest.approx(k1, rel=1e-13)
        # i = k, c = d: E[H(X0) relu(X1)^2] = C11 (1/4 + asin r / 2pi + r sqrt(1 - r^2) / 2pi)
        r = C2[0, 1] / math.sqrt(C2[0, 0] * C2[1, 1])
        want = C2[1, 1] * (_p2(r) + r * math.sqrt(1 - r * r) / (2 * math.pi))
        assert orthant_moment(_gram([w[0], w[0], w[1], w[1]]), ALL) == pytest.approx(
            want, rel=1e-13
        )
        # one Heaviside variable and two linear ones: E[H(X0) X1 X2] = C12 / 2 (X -> -X)
        C = _gram([w[0], w[0], w[1], w[2]])
        got = orthant_moment(C, _theta((1, 1, 0, 0)))
        assert got == pytest.approx(C[2, 3] / 2, rel=1e-13, abs=1e-15)
        # proportional copies (positive multiples) merge exactly
        C = _gram([w[0], 3.0 * w[0], 0.5 * w[1], w[1]])
        want = 0.5 * C2[1, 1] * (_p2(r) + r * math.sqrt(1 - r * r) / (2 * math.pi))
        assert orthant_moment(C, ALL) == pytest.approx(want, rel=1e-13)


def test_moment_zero_variance_and_anti_identical_give_zero(rng):
    w = rng.standard_normal((3, 6))
    for t in PATTERNS:
        th = _theta(t)
        # a zero Heaviside variable (H(0) = 0) or a zero linear factor
        for m in range(4):
            if t[m] or m >= 2:
                V = [w[0], w[1], w[2], w[0] + w[1]]
                V[m] = np.zeros(6)
                assert orthant_moment(_gram(V), th) == 0.0
    # X1 = -c X0 with both Heaviside: H(X0) H(-c X0) = 0
    for c in (1.0, 0.3, 7.0):
        for t in [(1, 1, 1, 1), (1, 1, 0, 0)]:
            C = _gram([w[0], -c * w[0], w[1], w[2]])
            assert orthant_moment(C, _theta(t)) == 0.0
        C = _gram([w[0], w[1], -c * w[0], w[2]])  # relu(-c X0) H(X0) = 0
        assert orthant_moment(C, ALL) == 0.0
    # a zero variable that carries no Heaviside is just absent
    C = _gram([w[0], np.zeros(6), w[1], w[2]])
    got = orthant_moment(C, _theta((1, 0, 1, 1)))
    assert got == pytest.approx(orthant_moment(_gram([w[0], w[0], w[1], w[2]]), ALL))


def test_moment_is_continuous_at_a_merge(rng):
    """Turn a copy of X_i away from it by the angle a = acos(1 - delta): the moment moves
    by g a + O(a^2) (a = sqrt(2 delta): every covariance of the copy moves by O(a), Heaviside or
    not), with g converging as delta -> 0 down to 1e-12, just above MERGE_TOL: continuous, no
    blow-up. So at 1 - rho = 1e-9 the distance to the merged value is ~4.5e-5 g, not 1e-7; the
    merge itself (at 1e-13) jumps by < 1e-6 of the scale."""
    for i, k in [(0, 1), (0, 2), (2, 3), (1, 3), (0, 3)]:
        V = rng.standard_normal((4, 6))
        V[k] = 1.7 * V[i]
        e = _rotated(V[i], 0.5 * math.pi, rng)  # one direction of approach for all delta
        scale = np.abs(_gram(V)).max()
        for t in [(1, 1, 1, 1), (1, 1, 1, 0), (1, 1, 0, 0)]:
            th = _theta(t)
            M0 = orthant_moment(_gram(V), th)
            slopes = []
            angles = [math.acos(1 - delta) for delta in [1e-4, 1e-6, 1e-8, 1e-10, 1e-12]]
            for ang in angles:
                W = V.copy()
                W[k] = 1.7 * (math.cos(ang) * V[i] + math.sin(ang) * e)
                slopes.append((orthant_moment(_gram(W), th) - M0) / ang)
            g = slopes[-1]
            assert abs(g) < 10 * scale
            for ang, sl in zip(angles[:-1], slopes[:-1]):
                assert abs(sl - g) < 10 * ang * scale + 1e-5 * scale
            # the jump of the merge at MERGE_TOL
            ang = math.acos(1 - 1.5 * MERGE_TOL)
            W = V.copy()
            W[k] = 1.7 * (math.cos(ang) * V[i] + math.sin(ang) * e)
            assert abs(orthant_moment(_gram(W), th) - M0) < 1e-6 * scale


def test_moment_near_singular_is_continuous(rng):
    """Four variables of rank 3, then rank 2 (a plane), approached by eps out of it: the
    value at eps = 0 is the limit (rank 3: O(eps^2); rank 2: O(eps))."""
    for rank, power in [(3, 2), (2, 1)]:
        for _ in range(3):
            V = np.hstack([rng.standard_normal((4, rank)), np.zeros((4, 5 - rank))])
            N = np.hstack([np.zeros((4, rank)), rng.standard_normal((4, 5 - rank))])
            M0 = orthant_moment(_gram(V), ALL)
            for eps in [1e-3, 1e-5, 1e-7]:
                M = orthant_moment(_gram(V + eps * N), ALL)
                assert abs(M - M0) < 50 * eps**power * np.abs(_gram(V)).max()


def test_coplanar_triple_is_the_limit(rng):
    """X2 = a X0 + b X1 exactly (rank 3, a residual that vanishes): the value is the limit of
    perturbations eps N out of the plane, with |difference| = O(eps) (measured ~eps)."""
    for _ in range(8):
        w = rng.standard_normal((3, 6))
        a, b = rng.uniform(-2, 2, 2)
        V = np.array([w[0], w[1], a * w[0] + b * w[1], w[2]])[rng.permutation(4)]
        N = rng.standard_normal((4, 6))
        scale = np.abs(_gram(V)).max()
        P0 = orthant_probability(_gram(V))
        M0 = [orthant_moment(_gram(V), _theta(t)) for t in PATTERNS[:3]]
        for eps in [1e-4, 1e-6, 1e-8]:
            W = V + eps * N
            assert abs(orthant_probability(_gram(W)) - P0) < 20 * eps
            for t, m0 in zip(PATTERNS[:3], M0):
                assert abs(orthant_moment(_gram(W), _theta(t)) - m0) < 20 * eps * scale


_INTERPRETED = r"""
import json, sys
import numpy as np
from fastquad.kernels.orthant import orthant_moment, orthant_probability
cases = json.loads(sys.argv[1])
print(json.dumps([
    [orthant_moment(np.array(C), np.array(t, np.bool_)), orthant_probability(np.array(C))]
    for C, t in cases
]))
"""


def test_compiled_kernels_match_the_same_source_interpreted(rng):
    """The module run as plain Python (NUMBA_DISABLE_JIT=1, in a fresh interpreter) and as
    machine code give the same numbers: Numba compiled what the source says."""
    cases = []
    for V in [rng.standard_normal((4, 5)), rng.standard_normal((4, 3))]:
        for t in PATTERNS[:3]:
            cases.append((_gram(V), t))
    w = rng.standard_normal((2, 5))
    cases.append((_gram([w[0], w[1], 0.3 * w[0] - w[1], w[0] + w[1]]), (1, 1, 1, 1)))  # plane
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    payload = json.dumps([(C.tolist(), t) for C, t in cases])
    out = subprocess.run(
        [sys.executable, "-c", _INTERPRETED, payload],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    interpreted = json.loads(out.stdout.strip().splitlines()[-1])
    for (C, t), (m, p) in zip(cases, interpreted):
        scale = np.abs(C).max()
        assert orthant_moment(C, _theta(t)) == pytest.approx(m, rel=1e-13, abs=1e-15 * scale)
        assert orthant_probability(C) == pytest.approx(p, abs=1e-15)
    assert orthant_moment.signatures  # compiled lazily, at the first call: no eager signature


def test_merge_tolerance_is_relative():
    """1 - rho below MERGE_TOL merges; above it the variables stay two (both finite)."""
    V = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0.3, 0.2, 0.9]])
    for delta in (0.1 * MERGE_TOL, 10 * MERGE_TOL):
        W = V.copy()
        a = math.acos(1 - delta)
        W[1] = [math.cos(a), math.sin(a), 0]
        for s in (1e-6, 1.0, 1e6):
            assert math.isfinite(orthant_moment(s * _gram(W), ALL))
    W = V.copy()
    W[1] = [math.cos(1e-8), math.sin(1e-8), 0]  # 1 - rho = 5e-17: merged
    merged = orthant_moment(_gram(np.vstack([V[0], V[0], V[2:]])), ALL)
    assert orthant_moment(_gram(W), ALL) == pytest.approx(merged, rel=1e-14)
