"""fastquad.analysis for every activation: fixed points and their stability, the symmetries that
do and do not exist, the conserved quantity ``Q_jj - a v_j^2``, the failure predictor, stages.

The reference is never the code under test: fixed points are checked with the public
right-hand side (:func:`fastquad.ode_rhs`), their stability with :func:`fastquad.integrate_ode`
started next to them, the failure predictor against the ODE, symmetries by applying them to the
reported points, and plateau levels against the fixed points of the same problem.
"""

import numpy as np
import pytest

import fastquad as fq
from fastquad.analysis import (
    canonical_form,
    conserved_drift,
    detect_stages,
    find_fixed_points,
    parameter_space_hessian,
    phase_diagram_failure,
    plateau_levels,
    plateau_levels_with_noise,
    predict_failure,
    weights_from_order_parameters,
)
from fastquad.analysis.fixed_points import Symmetry
from fastquad.errors import InputError

VT = np.array([1.0, 0.6])
# (activation, K, M): matched teachers; K = 1 < M = 2 is the smallest under-parameterised case
CASES = [(a, K, M) for a in ("relu", "erf", "linear") for K, M in ((2, 2), (1, 2))]

_FOUND = {}


def _points(act, K, M):
    """find_fixed_points of the matched problem, once per session (the search is the cost)."""
    if (act, K, M) not in _FOUND:
        _FOUND[act, K, M] = find_fixed_points(K, M, None, VT[:M], n_starts=150, activation=act)
    return _FOUND[act, K, M]


def _residual(fp, act, v=None, R=None, Q=None):
    """max |rhs| of the public ODE at a (possibly modified) point."""
    dQ, dR, dv = fq.ode_rhs(
        fp.Q if Q is None else Q,
        fp.R if R is None else R,
        fp.v if v is None else v,
        fp.T,
        fp.v_teacher,
        1.0,
        sgd_noise=False,
        activation=act,
    )
    return max(np.abs(dQ).max(), np.abs(dR).max(), np.abs(dv).max())


def _physical(Q, R, T):
    """Raise Q's diagonal until the Gram matrix [[Q, R], [R^T, T]] is PSD (a perturbation
    along an eigenvector may leave the boundary of the physical states at second order)."""
    shift = 0.0
    for _ in range(60):
        Qs = Q + shift * np.eye(Q.shape[0])
        if np.linalg.eigvalsh(np.block([[Qs, R], [R.T, T]]))[0] >= 0:
            return Qs
        shift = max(2 * shift, 1e-12)
    raise AssertionError("could not make the perturbed state physical")


def _final_eps(act, Q, R, v, T, vt, t_max):
    res = fq.integrate_ode(
        Q, R, v, T, vt, 1.0, t_max, times=np.array([0.0, t_max]), sgd_noise=False, activation=act
    )
    assert not res.diverged.any()
    return res.eps_g[:, -1]


# ----------------------------------------------------------------------------- fixed points


@pytest.mark.parametrize("act, K, M", CASES)
def test_reported_points_are_fixed_points_and_include_the_global_minimum(act, K, M):
    points = _points(act, K, M)
    assert len(points) >= 2 and points.n_dropped == 0
    for fp in points:
        assert fp.activation == act and fp.teacher_activation == act
        assert _residual(fp, act) < 1e-9
        eps = fq.generalization_error(fp.Q, fp.R, fp.T, fp.v, VT[:M], activation=act)
        assert abs(fp.eps_g - eps) < 1e-12
    best = points[0]
    assert best.kind == "stable"
    if K == M or act == "linear":
        # a matched student (or one linear unit: the teacher is one vector) learns exactly
        assert abs(best.eps_g) < 1e-12
    else:
        assert best.eps_g > 1e-3  # one ReLU or erf unit cannot fit two teacher units


@pytest.mark.parametrize("act, K, M", CASES)
def test_the_ode_from_random_starts_ends_on_a_reported_stable_level(act, K, M):
    points = _points(act, K, M)
    stable = np.array([fp.eps_g for fp in points if fp.kind == "stable"])
    rng = np.random.default_rng(7)
    d = K + M + 2
    Wt = np.eye(d)[:M] * np.sqrt(d)
    Qs, Rs, vs = [], [], []
    for _ in range(6):
        W = rng.standard_normal((K, d)) * 0.7
        Q, R, T = fq.order_parameters(W, Wt)
        Qs.append(Q)
        Rs.append(R)
        # positive v: a ReLU unit with v < 0 and C < 0 dies (a degenerate point, not listed)
        vs.append(rng.uniform(0.3, 1.0, K) * (1 if act == "relu" else rng.choice([-1, 1], K)))
    eps = _final_eps(act, np.array(Qs), np.array(Rs), np.array(vs), T, VT[:M], 3000.0)
    for e in eps:
        assert np.min(np.abs(stable - e)) < 1e-6 * max(1.0, e), (e, stable)
    # the lowest level any run reaches is the lowest reported point
    assert points[0].eps_g <= eps.min() + 1e-6


@pytest.mark.parametrize("act, K, M", CASES)
def test_stable_points_attract_and_saddles_repel_along_their_unstable_direction(act, K, M):
    points = _points(act, K, M)
    rng = np.random.default_rng(3)
    checked = {"stable": 0, "saddle": 0}
    d = K + M + 1
    for fp in points:
        if fp.kind == "stable":
            # random physical perturbations: in weight space, of relative size 1e-3
            W, Wt = weights_from_order_parameters(fp.Q, fp.R, fp.T, d, seed=1)
            starts = []
            for _ in range(3):
                Wp = W + 1e-3 * rng.standard_normal(W.shape) * max(1.0, np.abs(W).max())
                Q, R, _ = fq.order_parameters(Wp, Wt)
                starts.append((Q, R, fp.v + 1e-3 * rng.standard_normal(K)))
            Q, R, v = (np.array(a) for a in zip(*starts))
            eps = _final_eps(act, Q, R, v, fp.T, fp.v_teacher, 2000.0)
            assert np.abs(eps - fp.eps_g).max() < 1e-6 * max(1.0, fp.eps_g), (fp.eps_g, eps)
        elif fp.kind == "saddle":
            lam = float(np.real(fp.eigenvalues[0]))
            assert lam > 0
            size = 1e-4 * max(1.0, np.abs(fp.Q).max())
            t_max = min(20000.0, 30.0 / lam)
            starts = []
            for sign in (1.0, -1.0):
                Q, R, v = fp.perturbed(sign * size)
                starts.append((_physical(Q, R, fp.T), R, v))
            Q, R, v = (np.array(a) for a in zip(*starts))
            eps = _final_eps(act, Q, R, v, fp.T, fp.v_teacher, t_max)
            # the flow lowers eps_g: leaving the saddle means ending clearly below it
            assert eps.min() < fp.eps_g - 1e-3 * max(fp.eps_g, 1e-2), (fp.eps_g, eps)
        else:
            continue
        checked[fp.kind] += 1
    assert checked["stable"] >= 1 and checked["saddle"] >= 1


def test_relu_and_erf_k2_m2_tables():
    """The numbers quoted in docs/analysis.md, 'Other activations'."""
    relu = _points("relu", 2, 2)
    levels = sorted({round(fp.eps_g, 6) for fp in relu})
    assert levels == [0.0, 0.038647, 0.044703, 0.434147]
    # the ReLU student has a spurious local minimum: one teacher direction taken by two
    # parallel units, whose eps_g is that of the best single unit (K = 1)
    spurious = [fp for fp in relu if round(fp.eps_g, 6) == 0.044703 and fp.kind == "stable"]
    assert spurious and round(_points("relu", 1, 2)[0].eps_g, 6) == 0.044703
    fp = spurious[0]
    W, Wt = weights_from_order_parameters(fp.Q, fp.R, fp.T, 5, seed=1)
    hessian = parameter_space_hessian(W, fp.v, Wt, fp.v_teacher, activation="relu")
    assert hessian.n_negative == 0 and hessian.gradient_norm < 1e-8
    erf = _points("erf", 2, 2)
    assert [round(fp.eps_g, 6) for fp in erf if fp.kind != "degenerate"] == [
        0.0,
        0.006591,
        0.226667,
    ]
    assert [fp.kind for fp in erf if fp.kind != "degenerate"] == ["stable", "saddle", "saddle"]
    # no rescaling orbit for erf: the minimum is isolated (no zero eigenvalue)
    assert erf[0].n_zero == 0 and relu[0].n_zero == 2


# ----------------------------------------------------------------------------- symmetries


def _random_problem(rng, M):
    A = rng.standard_normal((M, M))
    T = A @ A.T / M + 0.5 * np.eye(M)
    vt = rng.uniform(0.4, 1.4, M) * rng.choice([-1.0, 1.0], M)
    return T, vt


def _summary(points):
    return sorted((round(fp.eps_g, 7), fp.kind, fp.n_unstable) for fp in points)


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_permuting_teacher_and_student_units_gives_the_same_fixed_points(act):
    rng = np.random.default_rng(11 if act == "relu" else 12)
    for _ in range(2):
        T, vt = _random_problem(rng, 2)
        a = find_fixed_points(2, 2, T, vt, n_starts=60, seed=1, activation=act)
        p = np.array([1, 0])
        b = find_fixed_points(2, 2, T[np.ix_(p, p)], vt[p], n_starts=60, seed=1, activation=act)
        assert len(a) >= 2 and _summary(a) == _summary(b)
        sym = Symmetry(T, vt, rescale=act == "relu", activation=act)
        for fp in a:
            # students in the other order: still a fixed point, the same canonical class
            q = np.array([1, 0])
            Qp, Rp, vp = fp.Q[np.ix_(q, q)], fp.R[q], fp.v[q]
            assert _residual(fp, act, Q=Qp, R=Rp, v=vp) < 1e-9
            assert sym.same(sym.canonical(fp.Q, fp.R, fp.v)[3], sym.canonical(Qp, Rp, vp)[3])


def _flip(fp, j, with_v):
    s = np.ones(fp.K)
    s[j] = -1.0
    return fp.Q * np.outer(s, s), fp.R * s[:, None], fp.v * (s if with_v else 1.0)


def test_sign_flips_are_symmetries_only_of_even_units_or_odd_units_with_their_v():
    rng = np.random.default_rng(5)
    T, vt = _random_problem(rng, 2)
    broken = {}
    for act in ("quadratic", "relu", "erf", "linear"):
        points = find_fixed_points(2, 2, T, vt, n_starts=40, seed=2, activation=act)
        worst = 0.0
        for fp in points:
            for j in range(fp.K):
                if np.abs(fp.R[j]).max() < 1e-3:
                    continue
                Q, R, v = _flip(fp, j, with_v=False)
                res = _residual(fp, act, Q=Q, R=R, v=v)
                worst = max(worst, res)
                if act == "quadratic":
                    assert res < 1e-9
                if act in ("erf", "linear"):
                    # (w_j, v_j) -> (-w_j, -v_j) is one
                    Q, R, v = _flip(fp, j, with_v=True)
                    assert _residual(fp, act, Q=Q, R=R, v=v) < 1e-9
        broken[act] = worst
    assert broken["quadratic"] < 1e-9
    assert min(broken["relu"], broken["erf"], broken["linear"]) > 1e-3, broken


def test_canonical_forms_quotient_exactly_the_symmetries_of_each_activation(rng):
    T, vt = _random_problem(rng, 2)
    W = rng.standard_normal((2, 6))
    Wt = rng.standard_normal((2, 6))
    v = np.array([0.8, -0.5])
    Q, R, _ = fq.order_parameters(W, Wt)
    c = np.array([1.7, 0.6])

    def key(Q, R, v, act):
        return canonical_form(Q, R, v, T, vt, activation=act)[3]

    # rescaling of degree 1 (relu, linear): w -> c w, v -> v / c; degree 2 (quadratic): v / c^2
    for act, a in (("relu", 1), ("linear", 1), ("quadratic", 2)):
        k0 = key(Q, R, v, act)
        sym = Symmetry(T, vt, rescale=True, activation=act)
        assert sym.same(k0, key(Q * np.outer(c, c), R * c[:, None], v / c**a, act))
        wrong = 3 - a
        assert not sym.same(k0, key(Q * np.outer(c, c), R * c[:, None], v / c**wrong, act))
    # erf: no rescaling (refused), the odd flip (w_j, v_j) -> (-w_j, -v_j) is quotiented
    with pytest.raises(InputError, match="rescale"):
        canonical_form(Q, R, v, T, vt, rescale=True, activation="erf")
    s = np.array([-1.0, 1.0])
    sym = Symmetry(T, vt, rescale=False, activation="erf")
    assert sym.same(key(Q, R, v, "erf"), key(Q * np.outer(s, s), R * s[:, None], v * s, "erf"))
    # relu: the flip of w_j (with or without v_j) is another state
    sym = Symmetry(T, vt, rescale=True, activation="relu")
    for flipped_v in (v, v * s):
        assert not sym.same(
            key(Q, R, v, "relu"), key(Q * np.outer(s, s), R * s[:, None], flipped_v, "relu")
        )
    # a reflected teacher unit is the same teacher for quadratic units, another for ReLU ones
    Tr = T * np.outer(s, s)
    for act, same in (("quadratic", True), ("relu", False)):
        a = find_fixed_points(1, 2, T, vt, n_starts=30, activation=act)
        b = find_fixed_points(1, 2, Tr, vt, n_starts=30, activation=act)
        assert (_summary(a) == _summary(b)) == same


# ----------------------------------------------------------------------------- Hessian


def test_parameter_space_hessian_has_the_rescaling_zero_modes_of_the_degree():
    for act in ("relu", "erf"):
        fp = _points(act, 2, 2)[0]
        W, Wt = weights_from_order_parameters(fp.Q, fp.R, fp.T, 5, seed=1, activation=act)
        h = parameter_space_hessian(W, fp.v, Wt, fp.v_teacher, activation=act)
        assert h.n_negative == 0 and h.gradient_norm < 1e-8
        assert h.symmetry_leak < 1e-5
        rot = parameter_space_hessian(W, fp.v, Wt, fp.v_teacher, train_second_layer=False)
        # K rescalings for relu on top of the rotations; none for erf
        assert h.n_symmetry - rot.n_symmetry == (2 if act == "relu" else 0)
        if act == "relu":
            assert h.n_flat == 0  # no flat direction left once the rescalings are removed


# ----------------------------------------------------------------------------- conserved


def _trajectory(act, rng):
    W = rng.standard_normal((3, 12)) * 0.6
    Wt = rng.standard_normal((2, 12))
    Q, R, T = fq.order_parameters(W, Wt)
    v = np.array([0.9, 0.5, -0.4])
    return fq.integrate_ode(
        Q,
        R,
        v,
        T,
        np.array([1.0, -0.7]),
        0.5,
        50.0,
        times=np.linspace(0.0, 50.0, 51),
        sgd_noise=False,
        activation=act,
        rtol=1e-12,
        atol=1e-14,
    )


@pytest.mark.parametrize("act", ["linear", "relu"])
def test_the_flow_conserves_q_minus_a_v_squared(act, rng):
    res = _trajectory(act, rng)
    assert res.attrs["activation"] == act
    drift = conserved_drift(res)
    assert np.all(drift.max_change < 1e-9)
    Qd = np.einsum("rtjj->rtj", res.Q)
    np.testing.assert_array_equal(res.conserved, Qd - res.v**2)
    # the quadratic degree is the wrong one here
    C2 = Qd - 2 * res.v**2
    assert np.abs(C2 - C2[:, :1]).max() > 1e-3


@pytest.mark.parametrize("act", ["linear", "quadratic", "relu"])
def test_the_right_hand_side_keeps_q_minus_a_v_squared_to_rounding(act, rng):
    """``dQ_jj / dt = 2 a v_j dv_j / dt`` at any state: the identity behind conservation."""
    a = 2 if act == "quadratic" else 1
    worst = 0.0
    for _ in range(300):
        W = rng.standard_normal((3, 8)) * rng.uniform(0.2, 2.0)
        Wt = rng.standard_normal((2, 8))
        Q, R, T = fq.order_parameters(W, Wt)
        v = rng.standard_normal(3)
        dQ, _, dv = fq.ode_rhs(
            Q, R, v, T, np.array([1.0, -0.7]), 1.0, sgd_noise=False, activation=act
        )
        scale = max(1.0, np.abs(dQ).max(), np.abs(v * dv).max())
        worst = max(worst, np.abs(np.diag(dQ) - 2 * a * v * dv).max() / scale)
    assert worst < 1e-14


def test_erf_conserves_nothing(rng):
    res = _trajectory("erf", rng)
    Qd = np.einsum("rtjj->rtj", res.Q)
    for a in (1, 2):
        C = Qd - a * res.v**2
        assert np.abs(C - C[:, :1]).max() > 1e-3
    with pytest.raises(InputError, match="erf has no conserved quantity"):
        _ = res.conserved
    with pytest.raises(InputError, match="erf has no conserved quantity"):
        conserved_drift(res)


# ----------------------------------------------------------------------------- failure


def test_relu_failure_predictor_matches_the_ode_on_a_grid():
    v0 = np.linspace(-1.5, 1.5, 13)
    q0 = np.array([0.05, 0.2, 0.5, 1.0, 1.5, 2.0, 3.0])
    pd = phase_diagram_failure(v0, q0, activation="relu", margin=0.1, t_max=100.0)
    assert pd.activation == "relu"
    np.testing.assert_allclose(pd.C0, q0[None, :] - v0[:, None] ** 2)
    assert pd.agreement_away == 1.0 and pd.agreement >= 0.95
    # failures end at the zero network, eps_g = (v*)^2 T / 4
    fail = ~pd.simulated
    assert fail.sum() >= 10
    np.testing.assert_allclose(pd.eps_final[fail], 0.25, atol=1e-4)
    # wrong sign with v0^2 < Q0 < 2 v0^2: learnt (the boundary is Q0 = v0^2, not 2 v0^2)
    V, Qg = np.meshgrid(v0, q0, indexing="ij")
    band = (V < 0) & (Qg > V**2 + 0.1) & (Qg < 2 * V**2)
    assert band.sum() >= 3 and pd.simulated[band].all()


def test_linear_wrong_signs_never_fail_and_erf_has_no_predictor():
    pd = phase_diagram_failure([-1.0, -0.5, 0.5], [0.1, 1.0], activation="linear")
    assert pd.simulated.all() and pd.predicted.all()
    pred = predict_failure([[-1.0]], [1.0], C0=[[-0.5]], activation="linear")
    assert pred.success[0] and "no sign of v0 is wrong" in pred.reason[0]
    pred = predict_failure([[0.0]], [1.0], Q0=[[[1.0]]], R0=[[[0.0]]], activation="linear")
    assert not pred.success[0]
    for call in (
        lambda: predict_failure([[-1.0]], [1.0], C0=[[-0.5]], activation="erf"),
        lambda: phase_diagram_failure([-1.0], [1.0], activation="erf"),
    ):
        with pytest.raises(InputError, match="^activation: erf has no conserved quantity"):
            call()


def test_relu_needs_a_unit_of_each_sign_per_teacher_line():
    # two orthogonal teacher units of opposite signs, two units stuck positive: failure
    pred = predict_failure([1.0, 1.0], [1.0, -0.5], C0=[-0.5, -0.5], activation="relu")
    assert not pred.success[0] and pred.exact[0]
    # two antiparallel teacher units of weights 1 and 0.5: one line, even part 1.5 > 0
    T = np.array([[1.0, -1.0], [-1.0, 1.0]])
    pred = predict_failure([1.0, -1.0], [1.0, 0.5], C0=[-0.5, -0.5], T=T, activation="relu")
    assert pred.success[0] and not pred.exact[0]
    pred = predict_failure([-1.0, -1.0], [1.0, 0.5], C0=[-0.5, -0.5], T=T, activation="relu")
    assert not pred.success[0]


# ----------------------------------------------------------------------------- stages


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_stages_of_a_curve_sit_on_the_levels_of_the_fixed_points(act):
    rng = np.random.default_rng(0)
    d = 30
    Wt = np.eye(d)[:2] * np.sqrt(d)
    W = rng.standard_normal((2, d)) * 1e-2
    Q, R, T = fq.order_parameters(W, Wt)
    v = np.array([0.01, 0.012])
    t = np.concatenate([[0.0], np.geomspace(0.1, 3000.0, 300)])
    res = fq.integrate_ode(Q, R, v, T, VT, 1.0, 3000.0, times=t, sgd_noise=False, activation=act)
    stages = detect_stages(res.t, res.eps_g[0])
    assert stages.n_plateaus == 2
    saddles = [fp.eps_g for fp in _points(act, 2, 2) if fp.kind == "saddle"]
    zero = fq.generalization_error(
        np.zeros((2, 2)), np.zeros((2, 2)), T, [0.0, 0.0], VT, activation=act
    )
    if act == "erf":
        # both plateaus are saddles of the flow: v = 0, then one teacher direction learnt
        for level in stages.levels:
            assert min(abs(level - s) / s for s in saddles) < 0.01
    else:
        # relu: the first plateau is the zero network (w = 0, where the flow is not smooth),
        # the second the level of the single-unit points
        assert abs(stages.levels[0] - zero) / zero < 0.01
        assert min(abs(stages.levels[1] - s) / s for s in saddles) < 0.05
    with pytest.raises(InputError, match="find_fixed_points"):
        plateau_levels(VT, activation=act)


# ----------------------------------------------------------------------------- inputs


def test_plateau_levels_with_noise_for_erf():
    levels = plateau_levels_with_noise(1, 1, None, [1.0], 0.1, n_starts=30, activation="erf")
    ok = ~np.isnan(levels.eps_full)
    assert ok.any()
    # no orbits: nothing conserved, the continued point is a fixed point of the full ODE
    assert np.isnan(levels.conserved[ok]).all() and np.all(levels.residual[ok] < 1e-9)


@pytest.mark.parametrize(
    "call",
    [
        lambda **kw: find_fixed_points(1, 1, None, [1.0], n_starts=1, **kw),
        lambda **kw: canonical_form([[1.0]], [[0.5]], [1.0], [[1.0]], [1.0], **kw),
        lambda **kw: plateau_levels_with_noise(1, 1, None, [1.0], 0.1, n_starts=1, **kw),
        lambda **kw: weights_from_order_parameters([[1.0]], [[0.5]], [[1.0]], 3, **kw),
        lambda **kw: parameter_space_hessian(np.ones((1, 3)), [1.0], np.ones((1, 3)), [1.0], **kw),
    ],
)
@pytest.mark.parametrize("param", ["activation", "teacher_activation"])
def test_a_bad_activation_is_named_before_any_work(call, param):
    with pytest.raises(InputError, match=f"^{param} must be one of"):
        call(**{param: "tanh"})


def test_trajectories_of_another_activation_are_refused():
    res = fq.integrate_ode(
        [[1.0]], [[0.5]], [1.0], [[1.0]], [1.0], 1.0, 1.0, sgd_noise=False, activation="erf"
    )
    with pytest.raises(InputError, match="activation='erf'"):
        find_fixed_points(1, 1, None, [1.0], n_starts=1, trajectories=res, activation="relu")
