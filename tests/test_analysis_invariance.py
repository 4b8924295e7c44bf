"""The analysis does not depend on how the user writes the problem down.

Relabellings of one and the same network -- the student's units in another order, the
teacher's units in another order (T, the columns of R and v* permuted together), a reflection
``w_j -> -w_j`` of a student unit (row j of R, row and column j of Q off the diagonal) or
``w*_n -> -w*_n`` of a teacher unit (column n of R, row and column n of T off the diagonal) --
and the rescaling ``w_j -> a_j w_j, v_j -> v_j / a_j^2``, which maps the network function to
itself, on seeded random problems: K, M from 1 to 4, teacher second layers of mixed signs drawn
from a small set (ties are common), T a random positive definite matrix.

- eps_g (:func:`fastquad.generalization_error`) and the weight-level closed forms of
  :mod:`fastquad.closed_form` are invariant (equivariant, for the gradients) under all of them,
  and a deliberately wrong relabelling does change eps_g;
- :func:`fastquad.analysis.predict_failure` is invariant under the relabellings, but not under
  the rescaling, which maps the function but not the gradient flow: there C_j = Q_jj - 2 v_j^2
  becomes ``a_j^2 Q_jj - 2 v_j^2 / a_j^4``, and for K = M = 1 the prediction on either side
  of a rescaling that flips the sign of C agrees with the integrated flow;
- :func:`fastquad.analysis.detect_stages` on the flow from a small start finds the same
  stages for every labelling: bit-identical under reflections, to round-off under
  permutations.

The invariance of the fixed points and of canonical forms is in test_fixed_point_invariance.py;
that of stages of the ODE with the SGD-noise term, from weights, in test_stages_marked.py.
"""

import numpy as np
import pytest

import fastquad as fq
from fastquad import closed_form
from fastquad.analysis import detect_stages, predict_failure

VT_VALUES = np.array([-2.0, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0])
N_CASES = 60


# ----------------------------------------------------------------------------- problems


def _teacher(rng, M):
    """(T, v*): T a random positive definite matrix (never the identity), v* of mixed signs
    from a small set, so ties are common."""
    G = rng.standard_normal((M, M + 1))
    T = G @ G.T / (M + 1) + 0.1 * np.eye(M)
    return T, rng.choice(VT_VALUES, M)


def _weights(rng, K, M, T, d=None):
    """Student rows W (K, D) and teacher rows W* (M, D) with W* W*^T = T (D = K + M, or d)."""
    D = K + M if d is None else d
    lam, U = np.linalg.eigh(T)
    Wt = np.zeros((M, D))
    Wt[:, :M] = U * np.sqrt(lam)
    # unit sizes spread over an order of magnitude, so C_j = Q_jj - 2 v_j^2 takes both signs
    W = rng.standard_normal((K, D)) * np.sqrt(rng.uniform(0.05, 3.0, K) / D)[:, None]
    return W, Wt


def _state(rng, K, M, T):
    """A random physical state (Q, R, v): the overlaps of real vectors."""
    W, Wt = _weights(rng, K, M, T)
    v = rng.choice([-1.0, 1.0], K) * rng.uniform(0.1, 1.5, K)
    return W @ W.T, W @ Wt.T, v


def _nontrivial_permutation(rng, n):
    """A random permutation, not the identity when n > 1."""
    while True:
        p = rng.permutation(n)
        if n == 1 or np.any(p != np.arange(n)):
            return p


def _signs(rng, n):
    """Random signs with at least one -1."""
    s = rng.choice([-1.0, 1.0], n)
    s[rng.integers(n)] = -1.0
    return s


# The relabellings, on (Q, R, v, T, v*). Student unit j of the new labelling is s_j a_j times
# unit pi_j of the old one (second layer v_pi_j / a_j^2); teacher unit n is c_n times unit p_n.


def _students(Q, R, v, T, vt, pi=None, s=None, a=None):
    K = v.size
    pi = np.arange(K) if pi is None else pi
    f = (np.ones(K) if s is None else s) * (np.ones(K) if a is None else a)
    return (
        np.outer(f, f) * Q[np.ix_(pi, pi)],
        f[:, None] * R[pi],
        v[pi] / (np.ones(K) if a is None else a) ** 2,
        T,
        vt,
    )


def _teachers(Q, R, v, T, vt, p=None, c=None):
    M = vt.size
    p = np.arange(M) if p is None else p
    c = np.ones(M) if c is None else c
    return Q, R[:, p] * c, v, np.outer(c, c) * T[np.ix_(p, p)], vt[p]


def _eps(Q, R, v, T, vt):
    return fq.generalization_error(Q, R, T, v, vt)


# ----------------------------------------------------------------------------- eps_g


def test_eps_g_is_invariant_under_relabelling_and_rescaling_of_units():
    """N_CASES random problems, each relabelled in every way and all at once: eps_g of the
    order parameters is unchanged (to 1e-12 relative); reflections alone change only signs
    that eps_g sees squared, so there it is bit-identical."""
    rng = np.random.default_rng(11)
    for case in range(N_CASES):
        K, M = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        T, vt = _teacher(rng, M)
        x = (*_state(rng, K, M, T), T, vt)
        want = _eps(*x)
        pi, s, a = _nontrivial_permutation(rng, K), _signs(rng, K), rng.uniform(0.3, 3.0, K)
        p, c = _nontrivial_permutation(rng, M), _signs(rng, M)
        relabelled = {
            "student permutation": _students(*x, pi=pi),
            "teacher permutation": _teachers(*x, p=p),
            "rescaling": _students(*x, a=a),
            "all at once": _teachers(*_students(*x, pi=pi, s=s, a=a), p=p, c=c),
        }
        for name, y in relabelled.items():
            np.testing.assert_allclose(
                _eps(*y),
                want,
                rtol=1e-12,
                atol=1e-14,
                err_msg=f"case {case} (K={K}, M={M}): {name}",
            )
        for name, y in {
            "student reflections": _students(*x, s=s),
            "teacher reflections": _teachers(*x, c=c),
        }.items():
            assert _eps(*y) == want, f"case {case} (K={K}, M={M}): {name}"
        # the closed-form module is the public function
        assert closed_form.generalization_error(x[0], x[1], T, x[2], vt) == want


def test_weight_level_closed_forms_follow_the_relabelling():
    """From weights (closed_form.order_parameters, population_gradients): relabelled weights
    have the relabelled overlaps and the same eps_g, and the gradient moves with them --
    ``dL/dw'_j = s_j / a_j dL/dw_pi_j``, ``dL/dv'_j = a_j^2 dL/dv_pi_j`` (the chain rule
    through ``w' = s a w``, ``v' = v / a^2``, which leave L unchanged)."""
    rng = np.random.default_rng(12)
    for case in range(N_CASES // 2):
        K, M = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        T0, vt = _teacher(rng, M)
        W, Wt = _weights(rng, K, M, T0, d=12)
        v = rng.choice([-1.0, 1.0], K) * rng.uniform(0.1, 1.5, K)
        pi, s, a = _nontrivial_permutation(rng, K), _signs(rng, K), rng.uniform(0.3, 3.0, K)
        p, c = _nontrivial_permutation(rng, M), _signs(rng, M)
        W2, v2, Wt2 = (s * a)[:, None] * W[pi], v[pi] / a**2, c[:, None] * Wt[p]
        Q, R, T = closed_form.order_parameters(W, Wt)
        Q2, R2, T2 = closed_form.order_parameters(W2, Wt2)
        wQ, wR, _, wT, wvt = _teachers(*_students(Q, R, v, T, vt, pi=pi, s=s, a=a), p=p, c=c)
        msg = f"case {case} (K={K}, M={M})"
        for got, want in ((Q2, wQ), (R2, wR), (T2, wT)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13, err_msg=msg)
        np.testing.assert_allclose(
            _eps(Q2, R2, v2, T2, wvt), _eps(Q, R, v, T, vt), rtol=1e-12, err_msg=msg
        )
        gW, gv = closed_form.population_gradients(W, v, Wt, vt)
        gW2, gv2 = closed_form.population_gradients(W2, v2, Wt2, wvt)
        scale = np.abs(gW).max()
        np.testing.assert_allclose(
            gW2, (s / a)[:, None] * gW[pi], rtol=1e-10, atol=1e-12 * scale, err_msg=msg
        )
        np.testing.assert_allclose(
            gv2,
            a**2 * gv[pi],
            rtol=1e-10,
            atol=1e-12 * np.abs(gv).max() * a.max() ** 2,
            err_msg=msg,
        )


def test_a_wrong_relabelling_changes_eps_g():
    """The tests above can fail: moving the teacher's first-layer units (R's columns, T)
    without their second-layer weights v* is another teacher, and eps_g changes wherever the
    permuted v* differs; so does a rescaling ``v_j -> v_j / a_j`` with the wrong power."""
    rng = np.random.default_rng(13)
    changed = considered = 0
    for case in range(N_CASES):
        K, M = int(rng.integers(1, 5)), int(rng.integers(2, 5))
        T, vt = _teacher(rng, M)
        x = (*_state(rng, K, M, T), T, vt)
        want = _eps(*x)
        p = _nontrivial_permutation(rng, M)
        Q, R, v, T2, vt2 = _teachers(*x, p=p)
        np.testing.assert_allclose(_eps(Q, R, v, T2, vt2), want, rtol=1e-12)  # right
        wrong = _eps(Q, R, v, T2, vt)  # v* left behind
        if not np.array_equal(vt[p], vt):
            considered += 1
            changed += abs(wrong - want) > 1e-6 * want
        a = rng.uniform(1.5, 3.0, K)
        Qa, Ra, _, _, _ = _students(*x, a=a)
        assert abs(_eps(Qa, Ra, v / a, T, vt) - want) > 1e-6 * want, case
    assert considered >= N_CASES // 2 and changed >= 1
    assert changed >= 0.9 * considered, (changed, considered)


# ----------------------------------------------------------------------------- failures


def test_failure_prediction_does_not_depend_on_the_labels_of_the_units():
    """N_CASES random starts (a few with R0 = 0), each relabelled by a student permutation, a
    teacher permutation, student reflections, teacher reflections and all at once, predicted
    in one batched call (each run with its own T) and the original alone: success, exact and
    the reason are the same, C0 and can_cross move with the student permutation (and the
    reflections leave C0 bit-identical)."""
    rng = np.random.default_rng(21)
    outcomes = set()
    for case in range(N_CASES):
        K, M = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        T, vt = _teacher(rng, M)
        Q, R, v = _state(rng, K, M, T)
        if case % 7 == 3:
            R = np.zeros((K, M))
        x = (Q, R, v, T, vt)
        pi, s = _nontrivial_permutation(rng, K), _signs(rng, K)
        p, c = _nontrivial_permutation(rng, M), _signs(rng, M)
        variants = [
            x,
            _students(*x, pi=pi),
            _teachers(*x, p=p),
            _students(*x, s=s),
            _teachers(*x, c=c),
            _teachers(*_students(*x, pi=pi, s=s), p=p, c=c),
        ]
        student_order = [np.arange(K), pi, np.arange(K), np.arange(K), np.arange(K), pi]
        Qs, Rs, vs, Ts, vts = (np.stack(z) for z in zip(*variants))
        pred = predict_failure(vs, vts, Q0=Qs, R0=Rs, T=Ts)
        alone = predict_failure(v, vt, Q0=Q, R0=R, T=T)
        msg = f"case {case} (K={K}, M={M}, v*={vt}, C0={alone.C0[0]})"
        for name in ("success", "exact", "reason"):
            np.testing.assert_array_equal(
                getattr(pred, name),
                np.repeat(getattr(alone, name), len(variants)),
                err_msg=f"{msg}: {name}",
            )
        for k, order in enumerate(student_order):
            np.testing.assert_array_equal(pred.C0[k], alone.C0[0][order], err_msg=msg)
            np.testing.assert_array_equal(pred.can_cross[k], alone.can_cross[0][order], err_msg=msg)
        outcomes.add(
            (
                bool(alone.success[0]),
                bool(alone.exact[0]),
                bool(np.any(alone.can_cross)),
                bool(np.all(alone.can_cross)),
            )
        )
    # every kind of answer was exercised: certain failures, certain successes (K = M = 1),
    # possible successes, with units free and stuck
    assert {o[:2] for o in outcomes} == {(False, True), (True, True), (True, False)}
    assert any(o[2] and not o[3] for o in outcomes)


def test_conserved_quantities_follow_the_rescaling_and_the_prediction_does_not():
    """The rescaling keeps the function but not the flow: C0 becomes ``a_j^2 Q_jj - 2 v_j^2 /
    a_j^4`` and can_cross its sign, so the prediction changes with it for some starts."""
    rng = np.random.default_rng(22)
    flipped = changed = 0
    for case in range(N_CASES):
        K, M = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        T, vt = _teacher(rng, M)
        x = (*_state(rng, K, M, T), T, vt)
        Q, R, v = x[:3]
        a = rng.uniform(0.3, 3.0, K)
        Qa, Ra, va, _, _ = _students(*x, a=a)
        before = predict_failure(v, vt, Q0=Q, R0=R, T=T)
        after = predict_failure(va, vt, Q0=Qa, R0=Ra, T=T)
        want = a**2 * np.diag(Q) - 2 * v**2 / a**4
        np.testing.assert_allclose(
            after.C0[0], want, rtol=1e-12, atol=1e-14, err_msg=f"case {case}"
        )
        np.testing.assert_array_equal(after.can_cross[0], want > 0)
        np.testing.assert_allclose(before.C0[0], np.diag(Q) - 2 * v**2, rtol=1e-12)
        flipped += np.any(np.sign(want) != np.sign(before.C0[0]))
        changed += before.success[0] != after.success[0]
    assert flipped >= N_CASES // 4 and changed >= 1, (flipped, changed)


K1_CASES = 10
K1_T_MAX = 500.0


def test_k1_m1_prediction_on_both_sides_of_a_rescaling_matches_the_flow():
    """K = M = 1, K1_CASES random starts (T, v*, signs, cosines random) and, for each, a
    rescaling that flips the sign of C (both |C| > 0.05): the prediction before and after
    agrees with the population gradient flow (integrate_ode, sgd_noise=False; learnt:
    eps_g(t_max) <= 1e-3 eps_g(0), as in runners/paper_study.py). Most starts have v0 of
    the wrong sign, where the rescaling turns a success into a failure or back."""
    rng = np.random.default_rng(23)
    rows = []
    for case in range(K1_CASES):
        T = rng.uniform(0.5, 2.0)
        vt = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 2.0)
        wrong = case % 5 != 0
        v0 = (-1.0 if wrong else 1.0) * np.sign(vt) * rng.uniform(0.2, 1.5)
        # Q0 = C + 2 v0^2 >= 0.02
        C = (
            rng.uniform(0.05, 1.0)
            if rng.random() < 0.5
            else -rng.uniform(0.05, min(1.0, 2 * v0**2 - 0.02))
        )
        Q0 = C + 2 * v0**2
        cos = rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.9)
        # C(a) = a^2 Q0 - 2 v0^2 / a^4 increases from -inf to inf, through 0 at a0
        a0 = (2 * v0**2 / Q0) ** (1 / 6)
        for _ in range(100):
            a = a0 * (rng.uniform(1.2, 2.0) if C < 0 else rng.uniform(0.5, 0.85))
            Ca = a**2 * Q0 - 2 * v0**2 / a**4
            if abs(Ca) > 0.05:
                break
        assert np.sign(Ca) == -np.sign(C) and abs(Ca) > 0.05, (case, Q0, v0, a)
        R0 = cos * np.sqrt(Q0 * T)
        rows.append((Q0, R0, v0, T, vt))
        rows.append((a**2 * Q0, a * R0, v0 / a**2, T, vt))
    Q0, R0, v0, T, vt = (np.array(z) for z in zip(*rows))
    n = Q0.size
    pred = predict_failure(
        v0[:, None],
        vt[:, None],
        Q0=Q0.reshape(n, 1, 1),
        R0=R0.reshape(n, 1, 1),
        T=T.reshape(n, 1, 1),
    )
    np.testing.assert_allclose(pred.C0[:, 0], Q0 - 2 * v0**2, rtol=1e-12)
    assert np.all(np.abs(pred.C0) > 0.05) and pred.exact.all()
    res = fq.integrate_ode(
        Q0.reshape(n, 1, 1),
        R0.reshape(n, 1, 1),
        v0[:, None],
        T.reshape(n, 1, 1),
        vt[:, None],
        1.0,
        K1_T_MAX,
        times=[0.0, K1_T_MAX],
        sgd_noise=False,
    )
    assert np.all(res.status == fq.STATUS_DONE)
    # the same function at the start: eps_g(0) is invariant under the rescaling
    np.testing.assert_allclose(res.eps_g[1::2, 0], res.eps_g[0::2, 0], rtol=1e-12)
    learnt = res.eps_g[:, -1] <= 1e-3 * res.eps_g[:, 0]
    np.testing.assert_array_equal(pred.success, learnt, err_msg=f"eps_g {res.eps_g}")
    # the failures end on the w = 0 line, eps_g = 3/2 (v* T)^2
    np.testing.assert_allclose(res.eps_g[~learnt, -1], 1.5 * (vt * T)[~learnt] ** 2, rtol=1e-3)
    # not vacuous: the rescaling changed the outcome of the flow in most starts
    assert np.count_nonzero(learnt[0::2] != learnt[1::2]) >= K1_CASES // 2
    assert learnt.any() and not learnt.all()


# ----------------------------------------------------------------------------- stages

STAGE_T_MAX = 500.0
STAGE_TIMES = fq.log_times(STAGE_T_MAX, 301, t_first=0.1)


def _small_start(rng, K, M):
    """A small start for a teacher of distinct |v*| and mixed signs: Q and R about 1e-3,
    |v0| about 0.05 with the signs of v* (C_j < 0 keeps them, so the student can learn)."""
    G = rng.standard_normal((M, M + 2))
    T = G @ G.T / (M + 2) + 0.2 * np.eye(M)
    vt = rng.permutation(rng.choice([-1.0, 1.0], M) * np.sort(rng.uniform(0.3, 2.0, M)))
    lam, U = np.linalg.eigh(T)
    Wt = np.zeros((M, K + M))
    Wt[:, :M] = U * np.sqrt(lam)
    W = np.hstack(
        [1e-3 * rng.standard_normal((K, M)), np.sqrt(1e-3 / K) * rng.standard_normal((K, K))]
    )
    v = 0.05 * rng.permutation(np.sign(vt)) * rng.uniform(0.8, 1.2, K)
    return W @ W.T, W @ Wt.T, v, T, vt


def _stage_fields(st):
    return {
        name: getattr(st, name)
        for name in (
            "levels",
            "onsets",
            "escapes",
            "durations",
            "drop_starts",
            "drop_ends",
            "drop_depths",
            "final_eps",
        )
    }


@pytest.mark.parametrize("seed,K", [(1, 3), (7, 3), (8, 2)])
def test_stages_of_the_flow_do_not_depend_on_the_labels_of_the_units(seed, K):
    """The flow from a small start (K = M, distinct v* of mixed signs, T random), integrated
    as written and relabelled (in one batch: each trajectory is independent of the others).

    Reflections: bit-identical -- every term of the right-hand side of a reflected entry of Q
    or R changes sign, and negation commutes exactly with rounded products, sums and fused
    multiply-adds, in any order; the other entries (v, the diagonal of Q, eps_g) are sums of
    products of two reflected factors, and the step-size control sees |y|: the same steps
    are taken on exactly reflected states.

    Permutations: the same to round-off, not bit-identical -- the right-hand side sums over
    units in index order (and fastmath lets LLVM regroup the sums), so a permutation changes
    the rounding of every step, and an accept/reject decision of the step control may flip
    (then the step sequences differ). Measured: recorded eps_g differs by at most ~2e-14
    eps_g(0) absolute (~1e-14 relative on the plateaus; more, relatively, only in the tail
    that converges to 0), plateau levels by ~2e-14 relative. Checked: eps_g to 1e-9
    relative or 1e-13 eps_g(0) absolute, levels to 1e-9 relative, drop depths to 1e-9;
    onsets, escapes and the ends of drops are recorded times, picked by thresholds that such
    differences do not cross, so they must be identical.
    """
    rng = np.random.default_rng(seed)
    x = _small_start(rng, K, K)
    pi, s = _nontrivial_permutation(rng, K), _signs(rng, K)
    p, c = _nontrivial_permutation(rng, K), _signs(rng, K)
    variants = {
        "as written": x,
        "student reflections": _students(*x, s=s),
        "teacher reflections": _teachers(*x, c=c),
        "all reflections": _teachers(*_students(*x, s=s), c=c),
        "student permutation": _students(*x, pi=pi),
        "teacher permutation": _teachers(*x, p=p),
        "everything": _teachers(*_students(*x, pi=pi, s=s), p=p, c=c),
    }
    Q0, R0, v0, T, vt = (np.stack(z) for z in zip(*variants.values()))
    res = fq.integrate_ode(Q0, R0, v0, T, vt, 1.0, STAGE_T_MAX, times=STAGE_TIMES, sgd_noise=False)
    assert np.all(res.status == fq.STATUS_DONE)
    stages = [detect_stages(res.t, e) for e in res.eps_g]
    base = stages[0]
    # a curve with stages to compare: a first plateau the flow escapes, and a later one
    assert base.n_plateaus >= 2 and np.isfinite(base.escapes[0]) and base.n_drops >= 2, base.table()
    for k, (name, st) in enumerate(zip(variants, stages)):
        msg = f"seed {seed}, {name}"
        assert (st.n_plateaus, st.n_drops, st.converged) == (
            base.n_plateaus,
            base.n_drops,
            base.converged,
        ), msg
        got, want = _stage_fields(st), _stage_fields(base)
        if "reflections" in name or name == "as written":
            np.testing.assert_array_equal(res.eps_g[k], res.eps_g[0], err_msg=msg)
            np.testing.assert_array_equal(res.v[k], res.v[0], err_msg=msg)
            np.testing.assert_array_equal(np.abs(res.Q[k]), np.abs(res.Q[0]), err_msg=msg)
            np.testing.assert_array_equal(np.abs(res.R[k]), np.abs(res.R[0]), err_msg=msg)
            for field in want:
                np.testing.assert_array_equal(got[field], want[field], err_msg=f"{msg}: {field}")
        else:
            # once converged, eps_g is the round-off of terms of the size of eps_g(0) that
            # cancel: compared to 1e-13 of eps_g(0) there
            np.testing.assert_allclose(
                res.eps_g[k], res.eps_g[0], rtol=1e-9, atol=1e-13 * res.eps_g[0, 0], err_msg=msg
            )
            for field in ("onsets", "escapes", "durations", "drop_starts", "drop_ends"):
                np.testing.assert_array_equal(got[field], want[field], err_msg=f"{msg}: {field}")
            np.testing.assert_allclose(got["levels"], want["levels"], rtol=1e-9, err_msg=msg)
            np.testing.assert_allclose(
                got["drop_depths"], want["drop_depths"], rtol=0, atol=1e-9, err_msg=msg
            )
        # the trajectory itself is the relabelled one, at every record
        if name == "everything":
            f = s
            np.testing.assert_allclose(
                res.Q[k], np.outer(f, f) * res.Q[0][:, pi][:, :, pi], rtol=1e-7, atol=1e-12
            )
            np.testing.assert_allclose(
                res.R[k], f[:, None] * res.R[0][:, pi][:, :, p] * c, rtol=1e-7, atol=1e-12
            )
