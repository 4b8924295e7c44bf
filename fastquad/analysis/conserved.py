"""The conserved quantities ``C_j = Q_jj - a v_j^2`` and the failures they predict.

For a student activation of degree a (``g(c h) = c^a g(h)``, c > 0: quadratic a = 2, linear
and relu a = 1) the rescaling ``w_j -> c w_j, v_j -> c^-a v_j`` leaves the network unchanged,
so ``w_j . grad_{w_j} eps_g = a v_j d eps_g / d v_j``, and under the population gradient flow
with a trained second layer each C_j is exactly conserved (``d Q_jj/dt = 2 a v_j dv_j/dt`` unit
by unit). The ODE's SGD-noise term only raises it (quadratic: ``dC_j/dt = 4 eta^2 v_j^2
E[e^2 h_j^2] >= 0``). Since ``a v_j^2 = Q_jj - C_j >= -C_j``, a unit with ``C_j < 0`` keeps
``|v_j| >= sqrt(-C_j / a)``: its second-layer weight can never cross zero, whatever the rest
of the network does. An erf network has no conserved quantity (erf is not homogeneous).
"""

from dataclasses import dataclass

import numpy as np

from .. import _validate
from ..activations import activation_degree, check_activation
from ..errors import InputError
from ..result import conserved_degree


@dataclass(frozen=True, eq=False)
class ConservedDrift:
    """How far ``C_j = Q_jj - a v_j^2`` moved along recorded runs.

    Attributes
    ----------
    initial : ndarray, shape (n_runs, K)
        ``C_j`` at the first record.
    max_change : ndarray, shape (n_runs, K)
        ``max_t |C_j(t) - C_j(0)|`` over the finite records (NaN if there are none).
    final_change : ndarray, shape (n_runs, K)
        ``C_j - C_j(0)`` at the last finite record: for the flow an integrator check (0 up to
        its tolerance), for SGD a measure of the noise (>= 0 on average).
    """

    initial: np.ndarray
    max_change: np.ndarray
    final_change: np.ndarray


def conserved_drift(result):
    """Drift of the conserved quantities of every run and unit of a result.

    Parameters
    ----------
    result : Result
        Any method's result (``Q`` (n_runs, n_times, K, K), ``v`` (n_runs, n_times, K));
        records after a divergence are NaN and ignored. The degree a is that of its student
        activation (``result.attrs["activation"]``, quadratic if absent); an erf result has
        no conserved quantity (InputError).

    Returns
    -------
    ConservedDrift
    """
    if getattr(result, "Q", 0) is None or getattr(result, "v", 0) is None:
        result._need_order_parameters("conserved_drift")
    try:
        Q = np.asarray(result.Q, dtype=float)
        v = np.asarray(result.v, dtype=float)
    except AttributeError:
        raise InputError(f"result must be a fastquad Result, got {type(result).__name__}") from None
    if Q.ndim != 4 or v.ndim != 3 or Q.shape[:3] != v.shape or Q.shape[2] != Q.shape[3]:
        raise InputError(
            f"result must hold Q (n_runs, n_times, K, K) and v (n_runs, n_times, "
            f"K), got {Q.shape} and {v.shape}"
        )
    a = conserved_degree(getattr(result, "attrs", None) or {}, "conserved_drift")
    C = np.einsum("rtjj->rtj", Q) - a * v**2
    C0 = C[:, 0]
    change = C - C0[:, None]
    finite = np.isfinite(change)
    n_runs, _, K = C.shape
    max_change = np.full((n_runs, K), np.nan)
    final = np.full((n_runs, K), np.nan)
    for r in range(n_runs):
        ok = finite[r].all(axis=1)
        if ok.any():
            max_change[r] = np.abs(change[r, ok]).max(axis=0)
            final[r] = change[r, np.flatnonzero(ok)[-1]]
    return ConservedDrift(initial=C0, max_change=max_change, final_change=final)


@dataclass(frozen=True, eq=False)
class FailurePrediction:
    """Predicted outcome of the population gradient flow from the conserved quantities.

    Attributes
    ----------
    success : ndarray of bool, shape (n_runs,)
        False: the flow cannot learn the teacher (certain). True: nothing conserved forbids
        it -- the outcome itself for K = M = 1, only a necessary condition otherwise.
    exact : ndarray of bool, shape (n_runs,)
        Whether the prediction is certain (K = M = 1, or a predicted failure).
    reason : ndarray of str, shape (n_runs,)
        Why, in words.
    C0 : ndarray, shape (n_runs, K)
        ``Q_jj - a v_j^2`` at the start.
    can_cross : ndarray of bool, shape (n_runs, K)
        Whether v_j may change sign (``C_j > 0``, or ``v_j = 0`` with ``w_j != 0``).
    activation : str
        The activation of student and teacher the prediction is for.
    """

    success: np.ndarray
    exact: np.ndarray
    reason: np.ndarray
    C0: np.ndarray
    can_cross: np.ndarray
    activation: str = "quadratic"


def _teacher_inertia(T, vt):
    """Numbers of positive and negative eigenvalues of A* = W*^T diag(v*) W* / d."""
    lam, U = np.linalg.eigh(T)
    S = U * np.sqrt(np.clip(lam, 0.0, None))  # S S^T = T
    ev = np.linalg.eigvalsh(S.T @ (vt[:, None] * S))
    tol = 1e-12 * max(1.0, np.abs(ev).max(initial=0.0))
    return int(np.count_nonzero(ev > tol)), int(np.count_nonzero(ev < -tol))


def _relu_teacher_lines(T, vt):
    """Numbers of teacher lines (directions up to sign) whose ReLU units carry a positive and
    a negative even part.

    ``relu(h) = (h + |h|) / 2``: the even part of ``v*_n relu(w*_n . x)`` is ``v*_n |w*_n|
    |u . x| / 2`` along the unit vector u of its line, and ``|u . x|`` of different lines are
    linearly independent functions. A student matches the teacher's even part only with, on
    each line whose total ``sum_n v*_n |w*_n|`` is positive (negative), at least one unit with
    ``v_j > 0`` (``v_j < 0``) on that line.
    """
    M = vt.shape[0]
    norm = np.sqrt(np.clip(np.diag(T), 0.0, None))
    line = -np.ones(M, dtype=int)
    weights = []
    for n in range(M):
        if norm[n] <= 1e-12 * max(1.0, norm.max(initial=0.0)) or line[n] >= 0:
            continue
        line[n] = len(weights)
        total = vt[n] * norm[n]
        for m in range(n + 1, M):
            if line[m] < 0 and abs(T[n, m]) >= (1.0 - 1e-9) * norm[n] * norm[m] > 0:
                line[m] = line[n]
                total += vt[m] * norm[m]
        weights.append(total)
    w = np.array(weights)
    tol = 1e-12 * max(1.0, np.abs(w).max(initial=0.0))
    return int(np.count_nonzero(w > tol)), int(np.count_nonzero(w < -tol))


def predict_failure(v0, v_teacher, *, Q0=None, C0=None, R0=None, T=None, activation="quadratic"):
    """Which starts the gradient flow can never take to the teacher, from ``C_j = Q_jj - a
    v_j^2`` (a the degree of the activation: quadratic 2, linear and relu 1).

    The rule. A unit whose ``v_j`` is nonzero and ``C_j <= 0`` keeps the sign of ``v_j``
    forever (``C_j = 0`` reaches ``v_j = 0`` only as ``w_j -> 0``, never crossing); a unit with
    ``C_j > 0`` (or ``v_j = 0``, ``w_j != 0``) is free to end with either sign. What the
    teacher needs of the signs depends on the activation (student and teacher share it):

    - quadratic: ``A = W^T diag(v) W / d`` must have the inertia of ``A* = W*^T diag(v*) W* /
      d`` (``m+`` positive, ``m-`` negative eigenvalues, from T and v*), which needs at least
      ``m+`` units with ``v_j > 0`` and ``m-`` with ``v_j < 0`` at the end. Also, ``R = 0`` is
      invariant under the flow (``dR`` is linear in R), so ``R0 = 0`` fails.
    - relu: the even part ``|h| / 2`` of ``relu(h)`` must match on every teacher line: ``m+``
      (``m-``) lines whose units' ``sum v*_n |w*_n|`` is positive (negative) each need a unit
      with ``v_j > 0`` (``v_j < 0``) (a ReLU unit with ``v_j < 0`` is a function <= 0, so a
      positive teacher unit cannot be copied with the wrong sign). ``R = 0`` is not invariant.
    - linear: the activation is odd, ``(w_j, v_j) -> (-w_j, -v_j)`` leaves the network
      unchanged, so no sign is wrong: a unit whose v cannot cross zero turns w around
      instead. Only ``v0 = 0`` with ``R0 = 0`` (every unit) fails: nothing then moves the
      student towards the teacher.

    Predicted success (quadratic, relu) iff the free units can make up both shortfalls:
    ``max(0, m+ - stuck_positive) + max(0, m- - stuck_negative) <= free``.

    Scope. For K = M = 1 this is exact for the flow: with the teacher's sign, or with the wrong
    sign and C > 0, v ends with the teacher's sign and the flow reaches eps_g = 0 (R0 != 0 for
    quadratic); with the wrong sign and C <= 0 it goes to ``w = 0`` (eps_g of the zero
    network: 3/2 (v* T)^2 quadratic, (v*)^2 T / 4 relu). The boundary is ``Q0 = a v0^2``
    (docs/analysis.md, 'Other activations', measures it for relu). For larger networks a
    predicted failure is certain, a predicted success only necessary (units may still fail to
    cross, or stop at other local minima). SGD noise raises C_j, so under SGD a predicted
    failure can turn into a success at large lr or late times. erf conserves nothing, and the
    predictor does not apply (InputError).

    Parameters
    ----------
    v0 : array, shape (K,) or (n_runs, K)
        Initial second layer.
    v_teacher : array, shape (M,) or (n_runs, M)
    Q0 : array, shape (K, K) or (n_runs, K, K), optional
        Initial overlaps (their diagonal is used) -- give Q0 or C0.
    C0 : array, shape (K,) or (n_runs, K), optional
        Initial conserved quantities ``Q_jj - a v_j^2``.
    R0 : array, shape (K, M) or (n_runs, K, M), optional
        Initial student-teacher overlaps: if given, ``R0 = 0`` predicts failure (quadratic;
        linear with ``v0 = 0``).
    T : array, shape (M, M) or (n_runs, M, M), optional
        Teacher overlaps (default identity): they and v* fix what the teacher needs.
    activation : {"quadratic", "linear", "relu"}
        Activation of student and teacher; "erf" is refused.

    Returns
    -------
    FailurePrediction

    Examples
    --------
    K = M = 1, two runs that start with the wrong sign of v, with C < 0 and C > 0:

    >>> from fastquad.analysis import predict_failure
    >>> pred = predict_failure([[-1.0], [-1.0]], [1.0], C0=[[-0.5], [0.5]])
    >>> pred.success, pred.exact
    (array([False,  True]), array([ True,  True]))
    >>> print(pred.reason[0])
    v0 has the wrong sign and C = -0.5 <= 0: v can never cross zero

    K = M = 2, a teacher with one positive and one negative unit, a student whose two units
    are both stuck positive:

    >>> pred = predict_failure([1.0, 1.0], [1.0, -0.5], C0=[-0.5, -0.5])
    >>> bool(pred.success[0]), bool(pred.exact[0])
    (False, True)

    ReLU, K = M = 1: the boundary is ``Q0 = v0^2`` (C = Q0 - v0^2):

    >>> pred = predict_failure([[-1.0], [-1.0]], [1.0], Q0=[[[0.8]], [[1.2]]], activation="relu")
    >>> pred.success, pred.C0.ravel().round(2)
    (array([False,  True]), array([-0.2,  0.2]))
    """
    p = _validate.Problems()
    name = p.check(check_activation, activation, "activation")
    v = p.check(_validate.finite_array, "v0", v0, ndim=(1, 2))
    vt = p.check(_validate.finite_array, "v_teacher", v_teacher, ndim=(1, 2))
    p.raise_if_any()
    a = activation_degree(name)
    if a is None:
        raise InputError(
            f"activation: {name} has no conserved quantity (it is not homogeneous), so the "
            "failure predictor does not apply; it is for quadratic, linear and relu networks"
        )
    v = _validate.with_run_axis("v0", v, 1)
    vt = _validate.with_run_axis("v_teacher", vt, 1)
    K, M = v.shape[1], vt.shape[1]
    if (Q0 is None) == (C0 is None):
        raise InputError(
            "give exactly one of Q0 (initial overlaps) and C0 (initial conserved quantities)"
        )
    if Q0 is not None:
        Q = _validate.with_run_axis("Q0", _validate.finite_array("Q0", Q0, ndim=(2, 3)), 2)
        if Q.shape[1:] != (K, K):
            raise InputError(f"Q0 must have shape (K, K) = ({K}, {K}) (K from v0), got {Q.shape}")
        qd = np.einsum("rjj->rj", Q)
        if np.any(qd < 0):
            raise InputError("Q0 must have a non-negative diagonal (Q_jj = |w_j|^2 / d)")
    else:
        C = _validate.with_run_axis("C0", _validate.finite_array("C0", C0, ndim=(1, 2)), 1)
        if C.shape[1] != K:
            raise InputError(f"C0 must have K={K} entries per run (K from v0), got {C.shape}")
    if T is None:
        T = np.eye(M)
    Tm = _validate.with_run_axis("T", _validate.finite_array("T", T, ndim=(2, 3)), 2)
    if Tm.shape[1:] != (M, M):
        raise InputError(
            f"T must have shape (M, M) = ({M}, {M}) (M from v_teacher), got {Tm.shape}"
        )
    Rm = None
    if R0 is not None:
        Rm = _validate.with_run_axis("R0", _validate.finite_array("R0", R0, ndim=(2, 3)), 2)
        if Rm.shape[1:] != (K, M):
            raise InputError(f"R0 must have shape (K, M) = ({K}, {M}), got {Rm.shape}")
    sizes = {
        a.shape[0]
        for a in (v, vt, Tm)
        + ((Q,) if Q0 is not None else (C,))
        + ((Rm,) if Rm is not None else ())
    } - {1}
    if len(sizes) > 1:
        raise InputError(
            f"the run axes of v0, v_teacher, Q0/C0, R0 and T disagree: {sorted(sizes)}"
        )
    n = sizes.pop() if sizes else 1
    v = _validate.broadcast_runs("v0", v, n)
    vt = _validate.broadcast_runs("v_teacher", vt, n)
    Tm = _validate.broadcast_runs("T", Tm, n)
    C = (
        (_validate.broadcast_runs("Q0", qd, n) - a * v**2)
        if Q0 is not None
        else _validate.broadcast_runs("C0", C, n)
    )
    if Rm is not None:
        Rm = _validate.broadcast_runs("R0", Rm, n)

    success = np.zeros(n, dtype=bool)
    exact = np.zeros(n, dtype=bool)
    reason = np.empty(n, dtype=object)
    # v_j = 0 with C_j = Q_jj > 0 moves off zero towards whichever sign it needs
    can_cross = C > 0
    for r in range(n):
        Tr = 0.5 * (Tm[r] + Tm[r].T)
        if name == "relu":
            m_pos, m_neg = _relu_teacher_lines(Tr, vt[r])
        else:
            m_pos, m_neg = _teacher_inertia(Tr, vt[r])
        stuck_pos = int(np.count_nonzero(~can_cross[r] & (v[r] > 0)))
        stuck_neg = int(np.count_nonzero(~can_cross[r] & (v[r] < 0)))
        free = int(np.count_nonzero(can_cross[r]))
        short = max(0, m_pos - stuck_pos) + max(0, m_neg - stuck_neg)
        if name == "linear":
            success[r], exact[r], reason[r] = _linear_outcome(
                v[r], vt[r], None if Rm is None else Rm[r], m_pos or m_neg, K == M == 1
            )
        elif name == "quadratic" and Rm is not None and not np.any(Rm[r]) and (m_pos or m_neg):
            success[r], exact[r] = False, True
            reason[r] = "R0 = 0: the flow keeps R = 0, the student never aligns with the teacher"
        elif K == 1 and M == 1:
            s, c = np.sign(v[r, 0]) * np.sign(vt[r, 0]), C[r, 0]
            exact[r] = True
            if vt[r, 0] == 0:
                success[r], reason[r] = True, "the teacher is zero"
            elif v[r, 0] == 0:
                success[r] = bool(can_cross[r, 0])
                reason[r] = (
                    "v0 = 0 and w0 != 0: v moves off zero with the teacher's sign"
                    if success[r]
                    else "v0 = 0 and w0 = 0: nothing ever moves"
                )
            elif s > 0:
                success[r], reason[r] = True, "v0 has the teacher's sign"
            elif can_cross[r, 0]:
                success[r] = True
                reason[r] = f"v0 has the wrong sign but C = {c:.4g} > 0: v crosses zero"
            else:
                reason[r] = f"v0 has the wrong sign and C = {c:.4g} <= 0: v can never cross zero"
        else:
            success[r] = short <= free
            exact[r] = not success[r]
            reason[r] = (
                f"the teacher needs {m_pos} positive and {m_neg} negative unit(s); "
                f"{stuck_pos} stuck positive, {stuck_neg} stuck negative (C_j <= 0), "
                f"{free} free (C_j > 0)"
            )
    return FailurePrediction(
        success=success,
        exact=exact,
        reason=reason.astype(str),
        C0=C,
        can_cross=can_cross,
        activation=name,
    )


def _linear_outcome(v, vt, R, teacher_nonzero, single):
    """(success, exact, reason) of a linear network: signs never matter (see predict_failure)."""
    if not teacher_nonzero:
        return True, True, "the teacher is zero"
    if R is not None and not np.any(R) and not np.any(v):
        return (
            False,
            True,
            "v0 = 0 and R0 = 0: the flow keeps both at zero, the student never moves "
            "towards the teacher",
        )
    return (
        True,
        single,
        "linear: (w, v) -> (-w, -v) leaves the network unchanged, so no sign of v0 is wrong "
        "(w turns around where v cannot cross zero)",
    )


@dataclass(frozen=True, eq=False)
class PhaseDiagram:
    """Predicted against simulated success over a grid of initial conditions (K = M = 1).

    Attributes
    ----------
    v0 : ndarray, shape (n_v,)
    Q0 : ndarray, shape (n_q,)
    C0 : ndarray, shape (n_v, n_q)
        ``Q0 - a v0^2`` (a the degree of the activation).
    predicted, simulated : ndarray of bool, shape (n_v, n_q)
    eps_final : ndarray, shape (n_v, n_q)
        eps_g at t_max (NaN if the run diverged).
    agreement : float
        Fraction of the grid where prediction and simulation agree.
    agreement_away : float
        The same over the points with ``|C0| > margin`` (NaN if there are none).
    margin : float
    activation : str
        Activation of student and teacher.
    """

    v0: np.ndarray
    Q0: np.ndarray
    C0: np.ndarray
    predicted: np.ndarray
    simulated: np.ndarray
    eps_final: np.ndarray
    agreement: float
    agreement_away: float
    margin: float
    activation: str = "quadratic"


def phase_diagram_failure(
    v0_values,
    Q0_values,
    *,
    v_teacher=1.0,
    T=1.0,
    overlap=0.1,
    lr=1.0,
    t_max=200.0,
    method="ode",
    d=8,
    success_tol=1e-3,
    margin=0.05,
    seed=0,
    num_threads=None,
    activation="quadratic",
):
    """The failure predictor against simulation over a grid of (v0, Q0), K = M = 1.

    Each grid point starts with ``Q = Q0``, ``R = overlap * sqrt(Q0 T)`` (a cosine
    ``overlap`` with the teacher) and ``v = v0``, so ``C0 = Q0 - a v0^2`` (a the degree of the
    activation); ``Q0`` plays the part of ``init_scale^2``. The predicted boundary between
    failure and success of a wrong-signed start is ``Q0 = a v0^2``.

    Parameters
    ----------
    v0_values : array, shape (n_v,)
    Q0_values : array, shape (n_q,), > 0
    v_teacher : float, nonzero
    T : float, > 0
        Teacher overlap ``|w*|^2 / d``.
    overlap : float, in (0, 1]
        Initial cosine between student and teacher.
    lr : float, > 0
    t_max : float, > 0
        Integration time; near the boundary C0 = 0 crossing takes ever longer.
    method : {"ode", "flow"}
        ``"ode"``: :func:`fastquad.integrate_ode` with ``sgd_noise=False``; ``"flow"``:
        :func:`fastquad.integrate_flow` from weights with these overlaps at dimension d.
    d : int, >= 2
        Input dimension of ``"flow"``.
    success_tol : float, in (0, 1)
        Success: final eps_g below ``success_tol`` times the error of the zero network, where
        failures end (quadratic ``(3/2) (v* T)^2``, relu ``(v*)^2 T / 4``, linear
        ``(v*)^2 T / 2``).
    margin : float, >= 0
        Half-width in C0 of the boundary band left out of ``agreement_away``.
    seed : int, >= 0
        Frame of the weights of ``"flow"``.
    num_threads : int, optional
    activation : {"quadratic", "linear", "relu"}
        Activation of student and teacher (erf conserves nothing: refused).

    Returns
    -------
    PhaseDiagram
    """
    from ..closed_form import generalization_error
    from ..ode import integrate_ode
    from ..simulate import integrate_flow
    from .fixed_points import weights_from_order_parameters

    p = _validate.Problems()
    name = p.check(check_activation, activation, "activation")
    if name is not None and activation_degree(name) is None:
        p.add(
            f"activation: {name} has no conserved quantity (it is not homogeneous), so the "
            "failure predictor does not apply; it is for quadratic, linear and relu networks"
        )
    vs = p.check(_validate.finite_array, "v0_values", v0_values, ndim=1)
    qs = p.check(_validate.finite_array, "Q0_values", Q0_values, ndim=1)
    vt = p.check(_validate.real, "v_teacher", v_teacher)
    Tn = p.check(_validate.real, "T", T, low=0.0, low_open=True)
    overlap = p.check(_validate.real, "overlap", overlap, low=0.0, high=1.0, low_open=True)
    lr = p.check(_validate.real, "lr", lr, low=0.0, low_open=True)
    t_max = p.check(_validate.real, "t_max", t_max, low=0.0, low_open=True)
    d = p.check(_validate.integer, "d", d, low=2)
    success_tol = p.check(
        _validate.real, "success_tol", success_tol, low=0.0, high=1.0, low_open=True, high_open=True
    )
    margin = p.check(_validate.real, "margin", margin, low=0.0)
    seed = p.check(_validate.integer, "seed", seed, low=0)
    if method not in ("ode", "flow"):
        p.add(f"method must be 'ode' or 'flow', got {method!r}")
    p.raise_if_any()
    if vt == 0:
        raise InputError("v_teacher must be nonzero (a zero teacher has nothing to learn)")
    if vs.size == 0 or qs.size == 0:
        raise InputError("v0_values and Q0_values must each hold at least one value")
    if np.any(qs <= 0):
        raise InputError("Q0_values must be > 0 (Q0 = |w0|^2 / d)")
    V_, Q_ = np.meshgrid(vs, qs, indexing="ij")
    v0 = V_.ravel()
    q0 = Q_.ravel()
    r0 = overlap * np.sqrt(q0 * Tn)
    n = v0.size
    times = np.array([0.0, t_max])
    if method == "ode":
        res = integrate_ode(
            q0.reshape(n, 1, 1),
            r0.reshape(n, 1, 1),
            v0.reshape(n, 1),
            np.full((1, 1), Tn),
            np.array([vt]),
            lr,
            t_max,
            times=times,
            sgd_noise=False,
            num_threads=num_threads,
            activation=name,
        )
    else:
        W0 = np.empty((n, 1, d))
        Wt = np.empty((n, 1, d))
        for k in range(n):
            W0[k], Wt[k] = weights_from_order_parameters([[q0[k]]], [[r0[k]]], [[Tn]], d, seed)
        res = integrate_flow(
            W0,
            v0.reshape(n, 1),
            Wt,
            np.full((n, 1), vt),
            lr,
            t_max,
            times=times,
            num_threads=num_threads,
            activation=name,
        )
    eps_final = res.eps_g[:, -1]
    eps_zero = (
        1.5 * (vt * Tn) ** 2
        if name == "quadratic"
        else generalization_error([[0.0]], [[0.0]], [[Tn]], [0.0], [vt], activation=name)
    )
    simulated = np.isfinite(eps_final) & (eps_final < success_tol * eps_zero)
    pred = predict_failure(
        v0.reshape(n, 1),
        np.array([vt]),
        Q0=q0.reshape(n, 1, 1),
        R0=r0.reshape(n, 1, 1),
        T=np.full((1, 1), Tn),
        activation=name,
    )
    predicted = pred.success
    C0 = pred.C0[:, 0]
    agree = predicted == simulated
    away = np.abs(C0) > margin
    shape = (vs.size, qs.size)
    return PhaseDiagram(
        v0=vs,
        Q0=qs,
        C0=C0.reshape(shape),
        predicted=predicted.reshape(shape),
        simulated=simulated.reshape(shape),
        eps_final=eps_final.reshape(shape),
        agreement=float(agree.mean()),
        agreement_away=float(agree[away].mean()) if away.any() else np.nan,
        margin=margin,
        activation=name,
    )
