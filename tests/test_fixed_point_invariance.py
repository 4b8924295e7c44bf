"""Fixed points: invariance under the symmetries, verification of every reported point,
completeness against the closed forms of docs/theory.md, and the plateau levels of the full
ODE with the SGD-noise term.

Properties run on seeded random problems: K, M up to 4; teacher second layers of mixed signs,
with ties; T the identity, diagonal (with ties), equicorrelated with random reflections, or a
random Gram matrix. Expected values come from an independent computation here (the closed
forms of docs/theory.md, a brute-force search of the teacher's symmetries,
:func:`fastquad.ode_rhs`, :func:`fastquad.integrate_ode`), never from the code under test.
"""

import itertools
import re
from dataclasses import replace

import numpy as np
import pytest

import fastquad as fq
from fastquad.analysis import (
    Symmetry,
    canonical_form,
    find_fixed_points,
    fixed_point_table,
    plateau_levels_with_noise,
)
from fastquad.analysis import fixed_points as fpm
from fastquad.cli import main

VT_VALUES = np.array([-2.0, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0])
TEACHER_KINDS = ("identity", "diagonal", "equicorrelated", "gram")


# ----------------------------------------------------------------------------- problems


def _teacher(rng, M, kind):
    """(T (M, M), v* (M,)): v* drawn from a small set, so ties are common."""
    vt = rng.choice(VT_VALUES, M)
    if kind == "identity":
        T = np.eye(M)
    elif kind == "diagonal":
        T = np.diag(rng.choice([0.5, 1.0, 1.5], M))
    elif kind == "equicorrelated":
        # a I + b J is unchanged by every permutation; the reflections D make the signs of
        # its off-diagonal entries a puzzle the sign bookkeeping must solve
        a, b = rng.uniform(0.6, 1.4), rng.uniform(-0.15, 0.3)
        D = np.diag(rng.choice([-1.0, 1.0], M))
        T = D @ (a * np.eye(M) + b * np.ones((M, M))) @ D
    else:
        G = rng.standard_normal((M, M + 1))
        T = G @ G.T / (M + 1)
    return T, vt


def _teacher_symmetries(T, vt):
    """Every (p, c) with v*[p] = v* and c_n c_m T[p_n, p_m] = T_nm: brute force."""
    M = vt.size
    found = []
    for p in itertools.permutations(range(M)):
        p = np.array(p)
        if not np.array_equal(vt[p], vt):
            continue
        for c in itertools.product([-1.0, 1.0], repeat=M):
            c = np.array(c)
            if np.allclose(np.outer(c, c) * T[np.ix_(p, p)], T, atol=1e-12):
                found.append((p, c))
    return found


def _state(rng, K, M, T):
    """A random physical state (Q, R, v) for the teacher overlaps T."""
    lam, U = np.linalg.eigh(T)
    L = U * np.sqrt(np.clip(lam, 0.0, None))  # L L^T = T
    W = rng.standard_normal((K, K + M))
    Lp = np.zeros((M, K + M))
    Lp[:, :M] = L
    v = rng.choice([-1.0, 1.0], K) * rng.uniform(0.3, 1.5, K)
    return W @ W.T, W @ Lp.T, v


def _flat_rhs(Q, R, v, T, vt, **kw):
    dQ, dR, dv = fq.ode_rhs(Q, R, v, T, vt, 0.7, **kw)
    return np.concatenate([dQ[np.triu_indices(Q.shape[0])], dR.ravel(), dv])


def _relabel(T, vt, p, c):
    """The teacher with unit n of the new labelling = c_n * (unit p_n of the old one)."""
    return np.outer(c, c) * T[np.ix_(p, p)], vt[p]


def _back(fp, p, c):
    """A point found for the relabelled teacher, in the old labelling."""
    R = np.empty_like(fp.R)
    R[:, p] = fp.R * c
    return R


def _verified(fp, lr=1.0, tol=1e-10):
    """The documented check (``max|rhs| / lr <= tol max(1, max|x|)^3``, PSD Gram matrix),
    recomputed with the public right-hand side."""
    dQ, dR, dv = fq.ode_rhs(
        fp.Q,
        fp.R,
        fp.v,
        fp.T,
        fp.v_teacher,
        lr,
        sgd_noise=False,
        train_second_layer=fp.train_second_layer,
    )
    x = fpm.pack(fp.Q, fp.R, fp.v, fp.train_second_layer)
    res = max(np.abs(dQ).max(), np.abs(dR).max(), np.abs(dv).max()) / lr
    G = np.block([[fp.Q, fp.R], [fp.R.T, fp.T]])
    psd = np.linalg.eigvalsh(G)[0] >= -1e-8 * max(1.0, np.abs(G).max())
    return res <= tol * max(1.0, np.abs(x).max()) ** 3 and psd


# ----------------------------------------------------------------------------- canonical form

N_CANONICAL = 160


def test_canonical_form_applies_only_symmetries_and_is_a_class_invariant():
    """On N_CANONICAL random problems and states (not fixed points): the canonical member is
    the state moved by a symmetry (same eps_g, the right-hand side -- with the SGD-noise term
    -- moved along), every symmetric copy has the same key, the key follows any relabelling
    of the teacher, and a different state has a different key."""
    rng = np.random.default_rng(101)
    n_teacher_maps = 0
    for trial in range(N_CANONICAL):
        K, M = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        T, vt = _teacher(rng, M, TEACHER_KINDS[trial % 4])
        Q, R, v = _state(rng, K, M, T)
        rescale = bool(trial % 2)
        sym = Symmetry(T, vt, rescale=rescale)
        Qc, Rc, vc, key = canonical_form(Q, R, v, T, vt, rescale=rescale)
        # a signed permutation of students and of teacher units that keeps (T, v*): the
        # error and the multiset of velocity components are unchanged
        np.testing.assert_allclose(
            fq.generalization_error(Qc, Rc, T, vc, vt),
            fq.generalization_error(Q, R, T, v, vt),
            rtol=1e-10,
            atol=1e-12,
        )
        kw = dict(sgd_noise=True, label_noise=0.3)
        np.testing.assert_allclose(
            np.sort(np.abs(_flat_rhs(Qc, Rc, vc, T, vt, **kw))),
            np.sort(np.abs(_flat_rhs(Q, R, v, T, vt, **kw))),
            rtol=1e-9,
            atol=1e-12,
        )

        # symmetric copies: students permuted, reflected (and rescaled), teacher mapped onto
        # itself by a symmetry found by brute force
        maps = _teacher_symmetries(T, vt)
        n_teacher_maps += len(maps) > 1
        for _ in range(3):
            pi, s = rng.permutation(K), rng.choice([-1.0, 1.0], K)
            a = rng.uniform(0.5, 2.0, K) if rescale else np.ones(K)
            p, c = maps[int(rng.integers(len(maps)))]
            Q2 = Q[np.ix_(pi, pi)] * np.outer(s * a, s * a)
            R2 = (R[pi] * (s * a)[:, None])[:, p] * c
            v2 = v[pi] / a**2
            assert sym.same(key, sym.canonical(Q2, R2, v2)[3]), (K, M, T, vt)

        # any relabelling of the teacher (not a symmetry): canonical there, mapped back,
        # is the same class here
        p, c = rng.permutation(M), rng.choice([-1.0, 1.0], M)
        T2, vt2 = _relabel(T, vt, p, c)
        Qd, Rd, vd, _ = canonical_form(Q, R[:, p] * c, v, T2, vt2, rescale=rescale)
        Rb = np.empty_like(Rd)
        Rb[:, p] = Rd * c
        assert sym.same(key, sym.canonical(Qd, Rb, vd)[3])

        # a different state is a different class
        v3 = v.copy()
        v3[0] *= 1.7
        assert not sym.same(key, sym.canonical(Q, R, v3)[3])
    assert n_teacher_maps >= N_CANONICAL // 8  # ties that are symmetries were exercised


# ----------------------------------------------------------------------------- the finder

FINDER_PROBLEMS = [  # (K, M, kind of T, train the second layer, starts)
    (1, 2, "identity", True, 60),
    (1, 3, "gram", True, 60),
    (2, 2, "diagonal", True, 80),
    (2, 3, "equicorrelated", True, 80),
    (3, 2, "gram", True, 80),
    (3, 3, "identity", True, 100),
    (2, 4, "diagonal", True, 80),
    (2, 3, "identity", False, 60),
    (3, 3, "gram", False, 60),
    (4, 3, "equicorrelated", True, 80),
]


@pytest.fixture(scope="module")
def finder_runs():
    """Each problem of FINDER_PROBLEMS found as drawn, with its units permuted, and with them
    permuted and reflected: (K, M, T, v*, p, c, as drawn, permuted by p, p and c)."""
    rng = np.random.default_rng(202)
    runs = []
    for K, M, kind, train_v, n in FINDER_PROBLEMS:
        T, vt = _teacher(rng, M, kind)
        p, c = rng.permutation(M), rng.choice([-1.0, 1.0], M)
        kw = dict(n_starts=n, seed=3, train_second_layer=train_v)
        if not train_v:
            kw["v_student"] = rng.choice([-1.0, 1.0], K) * rng.uniform(0.5, 1.5, K)
        a = find_fixed_points(K, M, T, vt, 0.8, **kw)
        b = find_fixed_points(K, M, *_relabel(T, vt, p, np.ones(M)), 0.8, **kw)
        r = find_fixed_points(K, M, *_relabel(T, vt, p, c), 0.8, **kw)
        runs.append((K, M, T, vt, p, c, a, b, r))
    return runs


def test_the_table_is_the_same_for_every_labelling_of_the_teacher(finder_runs):
    """Permuted teacher units: one table, up to the permutation of R's columns (points,
    kinds, eps_g, multiplicities, eigenvalues, canonical members). Reflected units as well:
    the same points up to a symmetry (a reflection of a unit that overlaps no other one is
    invisible in T and v*, so the member shown may differ by it)."""
    for K, M, T, vt, p, c, a, b, r in finder_runs:
        assert len(a) > 0
        back = [replace(fp, R=_back(fp, p, np.ones(M)), T=T, v_teacher=vt) for fp in b]
        assert fixed_point_table(back) == fixed_point_table(a), (K, M, vt, p)
        train_v = a[0].train_second_layer
        sym = Symmetry(T, vt, rescale=train_v, fixed_v=not train_v)
        assert len(r) == len(a)
        for x, y in zip(a, r):
            assert (x.kind, x.n_unstable, x.n_zero, x.multiplicity, x.n_variants) == (
                y.kind,
                y.n_unstable,
                y.n_zero,
                y.multiplicity,
                y.n_variants,
            )
            assert x.eps_g == y.eps_g
            np.testing.assert_array_equal(x.eigenvalues, y.eigenvalues)
            assert sym.same(
                sym.canonical(x.Q, x.R, x.v)[3], sym.canonical(y.Q, _back(y, p, c), y.v)[3]
            )
        for pts in (b, r):
            assert (a.n_dropped, a.n_converged, a.n_starts) == (
                pts.n_dropped,
                pts.n_converged,
                pts.n_starts,
            )


def test_every_reported_point_is_verified_in_the_labelling_it_is_reported_in(finder_runs):
    for K, M, _T, _vt, _p, _c, a, b, r in finder_runs:
        for pts in (a, b, r):
            assert pts.n_dropped == 0
            for fp in pts:
                assert _verified(fp, lr=0.8), fixed_point_table([fp])
                np.testing.assert_allclose(
                    fp.eps_g,
                    fq.generalization_error(fp.Q, fp.R, fp.T, fp.v, fp.v_teacher),
                    rtol=1e-9,
                    atol=1e-9,
                )
                # eigenvectors are reported in the same coordinates as the state
                sys_ = fpm._System(
                    K,
                    M,
                    fp.T,
                    fp.v_teacher,
                    0.8,
                    fp.train_second_layer,
                    False,
                    0.0,
                    None if fp.train_second_layer else fp.v,
                )
                J = sys_.jacobian(sys_.pack(fp.Q, fp.R, fp.v))
                vec, lam = fp.eigenvectors[:, 0], fp.eigenvalues[0]
                assert np.abs(J @ vec - lam * vec).max() <= 1e-5 * max(1.0, abs(lam))


def test_candidates_failing_verification_are_dropped_and_counted(monkeypatch):
    """A canonical form that moves R's columns without v* (what the teacher relabelling used
    to do) produces states that are not fixed points: none may be reported."""
    honest = Symmetry.canonical

    def broken(self, Q, R, v):
        Qc, Rc, vc, key = honest(self, Q, R, v)
        return Qc, np.roll(Rc, 1, axis=1), vc, key

    monkeypatch.setattr(Symmetry, "canonical", broken)
    vt = np.array([2.0, -1.0])
    pts = find_fixed_points(1, 2, None, vt, n_starts=60, seed=0)
    assert pts.n_dropped >= 2  # the two points with R != 0
    assert all(_verified(fp) for fp in pts)
    assert all(np.abs(fp.R).max() < 1e-9 for fp in pts)


def test_student_symmetries_map_reported_points_onto_reported_points(finder_runs):
    """Permuted, reflected and (trained v) rescaled students are still fixed points with the
    same eps_g and the same class. Permutations and reflections are linear maps of the
    coordinates: the same eigenvalues, so the same kind. The rescaling is not (the kind of the
    linearisation may differ between members of an orbit where the Gram matrix is singular),
    so for it the property is the finder's: the rescaled point, reported as the finder reports
    (at C_j = 0, canonical), is the same point with the same kind."""
    rng = np.random.default_rng(303)
    n = n_rescaled = 0
    for K, M, T, vt, _, _, a, _, _ in finder_runs:
        train_v = a[0].train_second_layer
        sym = Symmetry(T, vt, rescale=train_v, fixed_v=not train_v)
        sys_ = fpm._System(K, M, T, vt, 0.8, train_v, False, 0.0, None if train_v else a[0].v)
        key = [sym.canonical(fp.Q, fp.R, fp.v)[3] for fp in a]
        for i, fp in enumerate(a):
            # frozen v: only units with equal v may trade places
            pi = rng.permutation(K) if train_v else np.arange(K)
            s = rng.choice([-1.0, 1.0], K)
            Q = fp.Q[np.ix_(pi, pi)] * np.outer(s, s)
            R = fp.R[pi] * s[:, None]
            v = fp.v[pi]
            lam, _, kind, n_unstable, n_zero = fpm._classify(sys_, sys_.pack(Q, R, v), 1e-6, 1e-10)
            np.testing.assert_allclose(
                np.sort_complex(lam),
                np.sort_complex(fp.eigenvalues),
                atol=1e-6 * max(1.0, np.abs(lam).max()),
            )
            assert (kind, n_unstable, n_zero) == (fp.kind, fp.n_unstable, fp.n_zero)
            if train_v:
                alpha = rng.uniform(0.5, 2.0, K)
                Q = Q * np.outer(alpha, alpha)
                R = R * alpha[:, None]
                v = v / alpha**2
            moved = replace(fp, Q=Q, R=R, v=v)
            # exact fixed points map to exact ones; the residual of an approximate one (up to
            # the tolerance) is multiplied by powers of the rescaling factors
            assert _verified(moved, lr=0.8, tol=1e-9)
            np.testing.assert_allclose(
                fq.generalization_error(Q, R, T, v, vt), fp.eps_g, rtol=1e-9, atol=1e-9
            )
            assert sym.same(key[i], sym.canonical(Q, R, v)[3])
            weight = np.abs(fp.v) * np.diag(fp.Q)
            if train_v and not np.any((weight > 0) & (weight < 1e-4)):
                # (a unit of vanishing but nonzero weight lies on a continuum joining the
                # w_j = 0 line, whose members the finder lists as separate points)
                x = fpm._polish(
                    sys_,
                    fpm._rescale_to(sys_, sys_.pack(Q, R, v), np.zeros(K)),
                    1e-9,
                    1e3,
                    scaled=False,
                )
                Qr, Rr, vr = sys_.state(x)
                assert sym.same(key[i], sym.canonical(Qr, Rr, vr)[3])
                assert fpm._classify(sys_, x, 1e-6, 1e-10)[2] == fp.kind
                n_rescaled += 1
            n += 1
    assert n >= 100 and n_rescaled >= 50, (n, n_rescaled)


@pytest.mark.parametrize(
    "K,M,v_teacher,want",
    [
        # the cases: the same teacher written in another order
        (1, 2, [-1.0, 2.0], {4 / 3: "stable", 16 / 3: "stable"}),
        (2, 2, [1.0, 2.0], {0.0: "stable", 5 / 4: "saddle"}),
        (3, 3, [1.0, 2.0, 4.0], {0.0: "stable", 5 / 4: "stable"}),
    ],
)
def test_the_reported_orderings_find_their_points(K, M, v_teacher, want):
    vt = np.array(v_teacher)
    pts = find_fixed_points(K, M, None, vt, n_starts=120, seed=0)
    assert pts.n_dropped == 0 and all(_verified(fp) for fp in pts)
    for eps, kind in want.items():
        assert any(abs(fp.eps_g - eps) < 1e-9 and fp.kind == kind for fp in pts), fixed_point_table(
            pts
        )
    rev = find_fixed_points(K, M, None, vt[::-1], n_starts=120, seed=0)
    p = np.arange(M)[::-1]
    assert fixed_point_table(
        [replace(fp, R=_back(fp, p, np.ones(M))) for fp in rev]
    ) == fixed_point_table(pts)


# ----------------------------------------------------------------------------- completeness


def _closed_form_points(vt, K):
    """The plateaus of docs/theory.md, 'Fixed points, plateaus and stages' (T = I): for each
    set S of at most K learnt directions, the weights c_n = v*_n + s / (2 + L) on S (s, q: sum
    of the unlearnt v*, of their squares; L = |S|) and eps_g = s^2 / (2 + L) + q."""
    M = vt.size
    out = []
    for L in range(min(K, M) + 1):
        for S in itertools.combinations(range(M), L):
            U = [n for n in range(M) if n not in S]
            s, q = vt[U].sum(), (vt[U] ** 2).sum()
            c = np.zeros(M)
            c[list(S)] = vt[list(S)] + s / (2 + L)
            out.append((S, c, s * s / (2 + L) + q))
    return out


def _has_function(pts, vt, c, eps):
    """A reported point with the function sum_n c_n e_n e_n^T up to the teacher's symmetries
    (T = I: rotations among units with equal v*), and the level eps."""
    blocks = [np.flatnonzero(vt == x) for x in np.unique(vt)]
    for fp in pts:
        if abs(fp.eps_g - eps) > 1e-8 * max(1.0, eps):
            continue
        B = fp.R.T @ (fp.v[:, None] * fp.R)  # the student's A seen in the teacher span
        A2 = np.sum(np.outer(fp.v, fp.v) * fp.Q**2)  # |A|_F^2: nothing outside the span
        if abs(A2 - np.sum(B**2)) > 1e-7 * max(1.0, A2):
            continue
        ok = all(np.abs(B[np.ix_(g, h)]).max() < 1e-6 for g in blocks for h in blocks if g is not h)
        ok = ok and all(
            np.allclose(np.linalg.eigvalsh(B[np.ix_(g, g)]), np.sort(c[g]), atol=1e-6)
            for g in blocks
        )
        if ok:
            return True
    return False


COMPLETENESS = [
    (1, 1, 2),
    (1, 3, 3),
    (1, 4, 2),
    (2, 2, 3),
    (2, 3, 3),
    (2, 4, 2),
    (3, 3, 3),
    (4, 4, 2),
]  # (K, M, teachers)


@pytest.mark.parametrize("K,M,n_teachers", COMPLETENESS)
def test_the_finder_returns_every_closed_form_plateau_for_teachers_in_any_order(K, M, n_teachers):
    rng = np.random.default_rng(404 + 10 * K + M)
    n_starts = (
        10 * sum(len(list(itertools.combinations(range(M), L))) for L in range(min(K, M) + 1)) + 40
    )
    for _ in range(n_teachers):
        while True:
            vt = rng.choice(VT_VALUES, M)
            want = _closed_form_points(vt, K)
            # a learnt weight near 0 is the point with that direction unlearnt: redraw
            if all(np.all(np.abs(c[list(S)]) > 0.05) for S, c, _ in want):
                break
        for order in (np.arange(M), rng.permutation(M)):
            pts = find_fixed_points(K, M, None, vt[order], n_starts=n_starts, seed=1)
            missing = [
                (S, eps)
                for S, c, eps in _closed_form_points(vt[order], K)
                if not _has_function(pts, vt[order], c, eps)
            ]
            assert not missing, (vt[order], missing)


def test_single_unit_points_have_v_q_from_model_md():
    """K = 1, T = I: the unit on direction n has v Q = (sum v* + 2 v*_n) / 3 (distinct v*, so
    that the unit on each direction is its own point; ties are covered above)."""
    rng = np.random.default_rng(505)
    for _ in range(4):
        vt = rng.choice(VT_VALUES, 3, replace=False)
        while np.abs(vt.sum() + 2 * vt).min() < 0.15:  # v Q = 0 is the unit at w = 0
            vt = rng.choice(VT_VALUES, 3, replace=False)
        pts = find_fixed_points(1, 3, None, vt, n_starts=60, seed=2)
        for n in range(3):
            want = (vt.sum() + 2 * vt[n]) / 3
            assert any(
                abs(fp.v[0] * fp.Q[0, 0] - want) < 1e-8
                and abs(fp.R[0, n]) > 1e-3
                and np.abs(np.delete(fp.R[0], n)).max() < 1e-8
                for fp in pts
            ), (vt, n, fixed_point_table(pts))


# ----------------------------------------------------------------------------- SGD noise

NOISE = dict(label_noise=0.3, batch_size=2)
T_NOISE, VT_NOISE, LR_NOISE = np.diag([1.2, 0.8]), np.array([2.0, -0.7]), 0.04


@pytest.mark.parametrize("train_v", [True, False], ids=["trained-v", "frozen-v"])
def test_noisy_plateau_level_is_where_a_long_ode_run_sits(train_v):
    """One unit learning the first of two orthogonal teacher directions (R[:, 1] = 0 is kept
    exactly by the ODE, so the run stays on that plateau for good): from the flow's fixed
    point, the full ODE settles at the predicted level, not at the lr^1 one."""
    kw = dict(train_second_layer=train_v)
    if not train_v:
        kw["v_student"] = [1.5]
    pts = find_fixed_points(1, 2, T_NOISE, VT_NOISE, LR_NOISE, n_starts=40, **kw)
    fp = next(p for p in pts if abs(p.R[0, 0]) > 0.1 and abs(p.R[0, 1]) < 1e-12)
    times = np.array([0.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0])
    run = fq.integrate_ode(
        fp.Q,
        fp.R,
        fp.v,
        T_NOISE,
        VT_NOISE,
        LR_NOISE,
        times[-1],
        times=times,
        rtol=1e-10,
        atol=1e-12,
        train_second_layer=train_v,
        **NOISE,
    )
    eps_run = run.eps_g[0]
    assert np.all(np.abs(run.R[0, :, 0, 1]) < 1e-12)
    pred = plateau_levels_with_noise(
        1, 2, T_NOISE, VT_NOISE, LR_NOISE, states=(run.Q[0], run.R[0], run.v[0]), **NOISE, **kw
    )
    assert np.all(np.abs(pred.eps_flow - fp.eps_g) < 1e-9)  # the lr^1 level
    late = times >= 500
    gap = np.abs(eps_run - pred.eps_flow)[late]
    err = np.abs(eps_run - pred.eps_full)[late]
    assert gap.min() > 0.005  # the noise term matters here
    assert np.all(err < 0.02 * gap), (eps_run, pred.eps_full)
    if not train_v:
        # a true fixed point: the run converges onto it
        assert np.all(err < 1e-7)
        np.testing.assert_allclose(pred.conserved_rate, 0.0)
    else:
        # C grows (docs/theory.md, 'Symmetries and conserved quantities'), so the level
        # moves; the prediction follows the run's C
        assert np.all(np.diff(run.conserved[0, :, 0]) > 0)
        assert np.all(pred.conserved_rate[late] > 0)
    # the default search gives the same level for the flow point at the run's start
    levels = plateau_levels_with_noise(1, 2, T_NOISE, VT_NOISE, LR_NOISE, points=pts, **NOISE, **kw)
    i = next(i for i, p in enumerate(levels.points) if p is fp)
    np.testing.assert_allclose(levels.eps_full[i], pred.eps_full[0], rtol=1e-8)
    assert "full ODE" in levels.table() and "lr^1" in levels.table()


@pytest.mark.parametrize("train_v", [True, False], ids=["trained-v", "frozen-v"])
def test_noisy_levels_depend_on_lr_over_batch_and_tend_to_the_flow_levels(train_v):
    """The right-hand side over lr is ``F1 + (lr / B) F2``, so the levels depend on lr / B
    only; as lr -> 0 they tend to the flow's, the shift falling like (lr/B)^1 (or ^2 where the
    first-order move does not change eps_g); they do not depend on the order of the teacher
    units."""
    T, vt = np.diag([1.0, 0.7]), np.array([1.5, -0.6])
    points = find_fixed_points(
        2,
        2,
        T,
        vt,
        n_starts=60,
        train_second_layer=train_v,
        **({} if train_v else dict(v_student=[1.0, -0.8])),
    )
    kw = dict(train_second_layer=train_v, points=points)
    if not train_v:
        kw["v_student"] = [1.0, -0.8]

    def levels(lr, batch=1):
        return plateau_levels_with_noise(2, 2, T, vt, lr, batch_size=batch, **kw)

    lv = levels(1e-3)
    np.testing.assert_allclose(levels(4e-3, batch=4).eps_full, lv.eps_full, rtol=1e-9, atol=1e-12)
    s1, s2 = lv.eps_full - lv.eps_flow, levels(2e-3).eps_full - lv.eps_flow
    kept = np.isfinite(s1) & np.isfinite(s2) & (np.abs(s1) > 1e-7)
    assert kept.sum() >= 2, lv.table()
    ratio = s2[kept] / s1[kept]
    assert np.all((ratio > 1.9) & (ratio < 4.2)), (ratio, lv.table())
    assert np.all(np.abs(s1[np.isfinite(s1)]) < 0.05)

    p = np.array([1, 0])
    kw.pop("points")
    other = plateau_levels_with_noise(2, 2, T[np.ix_(p, p)], vt[p], 1e-3, n_starts=60, **kw)
    here = plateau_levels_with_noise(2, 2, T, vt, 1e-3, n_starts=60, **kw)
    np.testing.assert_allclose(other.eps_full, here.eps_full, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- command line


def _table_rows(out):
    """Rows of the printed table, split into columns (values contain single spaces only)."""
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("#"))
    rows = []
    for ln in lines[start + 1 :]:
        if not re.match(r"^\d+\s\s", ln):
            break
        rows.append(re.split(r"\s{2,}", ln))
    return rows


def _matrix(text):
    return np.array([[float(x) for x in row.split()] for row in text.strip("[]").split(";")])


def test_cli_table_is_the_same_for_every_order_of_the_teacher(capsys):
    base = None
    for order in itertools.permutations(range(3)):
        values = np.array([1.0, 2.0, 4.0])[list(order)]
        arg = ",".join(f"{x:g}" for x in values)
        assert main(["fixed-points", "--K", "3", "--teacher-v", arg, "--n-starts", "80"]) == 0
        out = capsys.readouterr().out
        assert "0 candidate point(s) failed verification" in out
        rows = _table_rows(out)
        # R's column n is the teacher unit given n-th: put it back in the order 1, 2, 4
        canon = [r[:10] + [_matrix(r[10])[:, np.argsort(order)].tolist()] + r[11:] for r in rows]
        if base is None:
            base = canon
            eps = {float(r[1]) for r in rows}
            assert {0.0, 1.25} <= eps
        assert canon == base, order


def test_cli_accepts_negative_lists(capsys):
    args = ["fixed-points", "--K", "1", "--n-starts", "40"]
    assert main(args + ["--teacher-v", "-1,2"]) == 0
    plain = capsys.readouterr().out
    assert main(args + ["--teacher-v=-1,2"]) == 0
    assert capsys.readouterr().out == plain
    eps = np.array([float(r[1]) for r in _table_rows(plain)])
    assert all(np.abs(eps - want).min() < 1e-5 for want in (4 / 3, 16 / 3))
    assert (
        main(args + ["--teacher-v", "-.5,-1e-1", "--freeze-second-layer", "--student-v", "-1"]) == 0
    )
    assert "v*=-.5,-1e-1" in capsys.readouterr().out
    assert main(args + ["--teacher-v", "-1,x"]) == 2
    err = capsys.readouterr().err
    assert "--teacher-v must be a number" in err and err.count("\n") == 1
