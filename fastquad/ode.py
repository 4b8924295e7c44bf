"""The order-parameter ODE (see docs/theory.md, 'The ODEs'): its right-hand side and its
integration.

The ODE follows the overlaps ``Q = W W^T / d``, ``R = W W*^T / d`` and the second layer ``v``
in the time ``t = step / d`` of online SGD, without any dimension ``d``: the eta^1 part is the
population gradient flow, the eta^2 part the online-SGD noise (scaled by 1 / batch_size).
All checks run here, before any kernel does; the kernels live in :mod:`fastquad.kernels.ode`.
"""

import numpy as np

from . import _validate
from .activations import activation_codes, activation_pair
from .config import check_option
from .errors import InputError
from .kernels import ode as _k
from .methods.ode import ODEOptions
from .progress import RecordProgress, records
from .result import Result
from .threads import call_kernel
from .times import log_times

#: Integrators of :func:`integrate_ode` -> adaptive?
ADAPTIVE = {"rk4": False, "rk45": True}

# Symmetric inputs may differ from their transpose by round-off (e.g. W W^T / d); they are then
# symmetrised, since the kernels mirror every symmetric product and assume exact symmetry.
_SYM_RTOL = 1e-10

# Default step: a fraction of 1 / (lr * rate), with rate a rough upper bound of the Jacobian's
# largest eigenvalue over lr along the trajectory (see _rate_scale).
_DT_FRACTION = 0.01


def _for_kernel(*arrays):
    """float64, C-contiguous and writeable (a read-only array is another Numba type, and would
    compile the kernels once more)."""
    return tuple(np.require(a, np.float64, ("C", "A", "W")) for a in arrays)


def _symmetric(name, X):
    """X (..., n, n) symmetric up to round-off -> exactly symmetric copy."""
    Xt = np.swapaxes(X, -1, -2)
    tol = _SYM_RTOL * max(1.0, float(np.abs(X).max(initial=0.0)))
    if np.abs(X - Xt).max(initial=0.0) > tol:
        raise InputError(
            f"{name} must be symmetric (|{name} - {name}^T| <= {_SYM_RTOL:g} * "
            f"max(1, max|{name}|)), got an asymmetry of {np.abs(X - Xt).max():.3g}"
        )
    return np.ascontiguousarray(0.5 * (X + Xt))


def _order_parameters(names, arrays, allow_runs):
    """Validate (Q, R, v, T, v_teacher) -> the five arrays (with a run axis if allow_runs), K, M."""
    nQ, nR, nv, nT, nvt = names
    Q, R, v, T, vt = arrays

    def ndim(base):
        return (base, base + 1) if allow_runs else base

    p = _validate.Problems()
    v = p.check(_validate.finite_array, nv, v, ndim=ndim(1))
    vt = p.check(_validate.finite_array, nvt, vt, ndim=ndim(1))
    Q = p.check(_validate.finite_array, nQ, Q, ndim=ndim(2))
    R = p.check(_validate.finite_array, nR, R, ndim=ndim(2))
    T = p.check(_validate.finite_array, nT, T, ndim=ndim(2))
    p.raise_if_any()
    K, M = v.shape[-1], vt.shape[-1]
    if K < 1:
        p.add(f"{nv} must have at least one student unit, got shape {v.shape}")
    if M < 1:
        p.add(f"{nvt} must have at least one teacher unit, got shape {vt.shape}")
    for name, arr, want in ((nQ, Q, (K, K)), (nR, R, (K, M)), (nT, T, (M, M))):
        if arr.shape[-2:] != want:
            p.add(
                f"{name} must have shape ({'[n_runs,] ' if allow_runs else ''}"
                f"{want[0]}, {want[1]}) to match K={K} ({nv}) and M={M} ({nvt}), got {arr.shape}"
            )
    p.raise_if_any()
    Q = p.check(_symmetric, nQ, Q)
    T = p.check(_symmetric, nT, T)
    p.raise_if_any()
    return (Q, R, v, T, vt), K, M


def _check_overlaps(Q, R, T):
    """Q, R, T (n, ., .) must be the overlaps of real vectors: [[Q, R], [R^T, T]] is a Gram
    matrix, so positive semi-definite (up to rounding)."""
    G = np.concatenate(
        [np.concatenate([Q, R], axis=2), np.concatenate([R.transpose(0, 2, 1), T], axis=2)], axis=1
    )
    low = np.linalg.eigvalsh(G)[:, 0]
    scale = np.maximum(1.0, np.abs(G).max(axis=(1, 2)))
    # a state rebuilt from rounded numbers (a fixed point, a file) may dip below 0 by rounding
    bad = np.flatnonzero(low < -1e-6 * scale)
    if bad.size:
        r = int(bad[0])
        raise InputError(
            f"Q0, R0, T must be overlaps of real weight vectors ([[Q0, R0], "
            f"[R0^T, T]] positive semi-definite); run {r} has an eigenvalue "
            f"{low[r]:.3g}"
        )


def _rate_scale(Q, v, T, vt, lr, noise_weight):
    """Rough bound of |Jacobian| / lr over a trajectory, per run (n_runs,).

    With q the largest diagonal overlap (student or teacher) and c the largest |second-layer
    weight|, the eta^1 part moves Q and R at rates ~ lr c^2 q and v at ~ lr q^2, per unit
    summed over (K + M); the eta^2 part adds a factor ~ 1 + lr (K + M) c^2 q (times
    ``noise_weight`` = 1 / batch_size, or 0 without SGD noise). The teacher's sizes enter
    because the student grows towards them.
    """
    q = np.maximum(np.einsum("rjj->rj", Q).max(axis=1), np.einsum("rnn->rn", T).max(axis=1))
    c = np.maximum(np.abs(v).max(axis=1), np.abs(vt).max(axis=1))
    units = Q.shape[-1] + T.shape[-1]
    drift = units * (c * c + q) * q
    return np.maximum(drift * (1.0 + noise_weight * lr * units * c * c * q), 1e-12)


def ode_rhs(
    Q,
    R,
    v,
    T,
    v_teacher,
    lr,
    *,
    label_noise=0.0,
    train_second_layer=True,
    sgd_noise=True,
    batch_size=1,
    activation="quadratic",
    teacher_activation=None,
):
    """Right-hand side of the order-parameter ODE (docs/theory.md, 'The ODEs') at one state.

    Parameters
    ----------
    Q : array, shape (K, K)
        Student overlaps ``W W^T / d``; symmetric.
    R : array, shape (K, M)
        Student-teacher overlaps ``W W*^T / d``.
    v : array, shape (K,)
        Student second layer.
    T : array, shape (M, M)
        Teacher overlaps ``W* W*^T / d``; symmetric.
    v_teacher : array, shape (M,)
    lr : float, > 0
        Learning rate eta.
    label_noise : float, >= 0
        Standard deviation sigma of the label noise (enters the SGD-noise term as sigma^2).
    train_second_layer : bool
        False freezes v (dv = 0).
    sgd_noise : bool
        False drops the eta^2 (online-SGD noise) term: the population gradient flow.
    batch_size : int, >= 1
        Mini-batch size B; the eta^2 term scales as 1 / B.
    activation : {"quadratic", "linear", "relu", "erf"}
        The student's activation g.
    teacher_activation : str or None
        The teacher's; None (or "same") means the student's. Every pair has its SGD-noise
        term.

    Returns
    -------
    dQ : ndarray, shape (K, K)
    dR : ndarray, shape (K, M)
    dv : ndarray, shape (K,)
        Time derivatives per unit of ``t = step / d``.

    Examples
    --------
    K = M = 1: the teacher itself is a fixed point, until label noise enters through the
    SGD-noise term, at order lr^2 (and 1 / batch_size):

    >>> import numpy as np
    >>> import fastquad as fq
    >>> I = np.eye(1)
    >>> dQ, dR, dv = fq.ode_rhs(I, I, [1.0], I, [1.0], lr=0.1)
    >>> float(np.abs(dQ).max() + np.abs(dR).max() + np.abs(dv).max())
    0.0
    >>> dQ, dR, dv = fq.ode_rhs(I, I, [1.0], I, [1.0], lr=0.1, label_noise=1.0)
    >>> round(float(dQ[0, 0]), 6), float(np.abs(dR).max() + np.abs(dv).max())
    (0.04, 0.0)
    >>> round(float(fq.ode_rhs(I, I, [1.0], I, [1.0], lr=0.2, label_noise=1.0)[0][0, 0]), 6)
    0.16
    """
    (Q, R, v, T, vt), K, M = _order_parameters(
        ("Q", "R", "v", "T", "v_teacher"), (Q, R, v, T, v_teacher), allow_runs=False
    )
    p = _validate.Problems()
    lr = p.check(_validate.real, "lr", lr, low=0.0, low_open=True)
    sigma = p.check(_validate.real, "label_noise", label_noise, low=0.0)
    train_v = p.check(check_option, "train_second_layer", train_second_layer)
    opts = ODEOptions.make(p, sgd_noise=sgd_noise, batch_size=batch_size)
    pair = p.check(activation_pair, activation, teacher_activation)
    p.raise_if_any()
    act_s, act_t = activation_codes(pair)
    noise, batch = opts.sgd_noise, opts.batch_size
    Q, R, v, T, vt = _for_kernel(Q, R, v, T, vt)
    dQ, dR, dv = np.empty((K, K)), np.empty((K, M)), np.empty(K)
    _k.ode_rhs_into(
        Q, R, v, T, vt, act_s, act_t, lr, sigma * sigma, 1.0 / batch, train_v, noise, dQ, dR, dv
    )
    return dQ, dR, dv


def integrate_ode(
    Q0,
    R0,
    v0,
    T,
    v_teacher,
    lr,
    t_max,
    *,
    dt=None,
    times=None,
    label_noise=0.0,
    train_second_layer=True,
    sgd_noise=True,
    batch_size=1,
    method="rk45",
    rtol=1e-8,
    atol=1e-10,
    max_error=1e6,
    activation="quadratic",
    teacher_activation=None,
    num_threads=None,
    progress=False,
):
    """Integrate the order-parameter ODE for a batch of runs (one trajectory per thread).

    Parameters
    ----------
    Q0 : array, shape (K, K) or (n_runs, K, K)
        Initial student overlaps ``W W^T / d`` (symmetric). A leading run axis gives one
        initial condition per run; a run axis of length 1 (or none) is shared by every run.
    R0 : array, shape (K, M) or (n_runs, K, M)
    v0 : array, shape (K,) or (n_runs, K)
    T : array, shape (M, M) or (n_runs, M, M)
        Teacher overlaps (symmetric), constant in time.
    v_teacher : array, shape (M,) or (n_runs, M)
    lr : float or array of shape (n_runs,), > 0
        Learning rate eta.
    t_max : float, > 0
        Last time, in units of ``t = step / d``.
    dt : float or array of shape (n_runs,), > 0, optional
        ``"rk4"``: the fixed step. ``"rk45"``: the initial step (the controller adapts it within
        a few steps). Default, per run: ``0.01 / (lr * rate)`` with
        ``rate = (K + M) (c^2 + q) q (1 + lr (K + M) c^2 q / batch_size)`` (the last factor only
        with SGD noise), ``q`` the largest diagonal of Q0 and T and ``c`` the largest |v0| or
        |v_teacher|: a rough bound of the Jacobian's spectral radius over lr near the start and
        near the teacher, so that ``dt * |lambda|`` stays around 0.005-0.05 there (RK4 is stable
        up to 2.8). It is cautious, hence slow; it is no guarantee where the noise term drives
        the overlaps far from the teacher's size -- use "rk45" there. dt must exceed
        ``1e-12 * t_max``.
    times : array, shape (n_times,), optional
        Recording times, strictly increasing in [0, t_max]; default ``log_times(t_max)``. The
        integrator lands exactly on each of them (the step before a record time is cut short;
        a fixed step stopping within 1e-9 dt of it is stretched onto it instead).
    label_noise : float or array of shape (n_runs,), >= 0
        Label-noise standard deviation sigma.
    train_second_layer : bool
        False freezes v.
    sgd_noise : bool
        False drops the eta^2 term (population gradient flow).
    batch_size : int, >= 1
        Mini-batch size B; the eta^2 term scales as 1 / B.
    method : {"rk45", "rk4"}
        ``"rk45"``: Dormand-Prince 5(4) with error control (scipy's RK45 rules: safety 0.9,
        step factor in [0.2, 10], error norm ``rms(err / (atol + rtol * max(|y|, |y_new|)))``
        over the entries of Q, R and v). ``"rk4"``: classic RK4 with the fixed step dt.
    rtol : float, in [1e-14, 1)
    atol : float, > 0
        Tolerances of ``"rk45"`` (ignored by ``"rk4"``).
    max_error : float, > 0
        A run whose eps_g exceeds this or whose state becomes non-finite is stopped and flagged
        diverged, with its time in ``t_stop``; so is an adaptive run whose step underflows.
    activation, teacher_activation : str
        As in :func:`ode_rhs` (default quadratic; the teacher's defaults to the student's).
    num_threads : int, optional
        Numba threads for this call (restored afterwards). Results do not depend on it.
    progress : bool
        Show a progress bar on stderr (simulated time, mean over the runs) once the call has
        run for 5 s. It reads the records the kernel has written: the numbers are the same.

    Returns
    -------
    Result
        ``method="ode"``; ``t`` (n_times,); ``eps_g`` (n_runs, n_times), exact from the
        recorded state; ``Q`` (n_runs, n_times, K, K), ``R`` (n_runs, n_times, K, M), ``v``
        (n_runs, n_times, K); ``T`` (n_runs, M, M), ``v_teacher`` (n_runs, M); ``status``
        (0 done, 1 diverged, 2 failed: an adaptive run used up its budget of
        ``fastquad.kernels.ode.MAX_STEPS`` = 10^7 attempted steps); ``t_stop``
        (NaN unless stopped; records from then on are NaN). ``params``: lr, label_noise, dt and
        n_evals (right-hand-side evaluations) per run; batch_size, train_second_layer,
        sgd_noise, integrator, rtol, atol, max_error.

    Examples
    --------
    K = M = 1 from a small student with v = 0 and almost no overlap with the teacher: eps_g
    starts at the ``w = 0`` level 3/2, sits on the ``R = 0`` saddle at 4/3 (the unit grows
    before it aligns), then learns the teacher:

    >>> import numpy as np
    >>> import fastquad as fq
    >>> I = np.eye(1)
    >>> res = fq.integrate_ode(1e-2 * I, 1e-8 * I, [0.0], I, [1.0], lr=0.5, t_max=200.0,
    ...                        times=[0.0, 40.0, 200.0])
    >>> res.method, res.eps_g.shape, res.status
    ('ode', (1, 3), array([0], dtype=int8))
    >>> print(np.round(res.eps_g, 4))
    [[1.5    1.3333 0.    ]]
    """
    names = ("Q0", "R0", "v0", "T", "v_teacher")
    (Q0, R0, v0, T, vt), K, M = _order_parameters(
        names, (Q0, R0, v0, T, v_teacher), allow_runs=True
    )
    Q0, R0, v0, T, vt = (
        _validate.with_run_axis(nm, a, b)
        for nm, a, b in zip(names, (Q0, R0, v0, T, vt), (2, 2, 1, 2, 1))
    )
    sizes = {a.shape[0] for a in (Q0, R0, v0, T, vt)}
    sizes |= {np.size(x) for x in (lr, label_noise, dt) if x is not None and np.ndim(x)}
    sizes.discard(1)
    if len(sizes) > 1:
        raise InputError(
            f"the run axes of Q0, R0, v0, T, v_teacher, lr, label_noise and dt "
            f"disagree: lengths {sorted(sizes)} (each must be 1 or n_runs)"
        )
    n = sizes.pop() if sizes else 1

    p = _validate.Problems()
    lr = p.check(_validate.per_run, "lr", lr, n, low=0.0, low_open=True)
    sigma = p.check(_validate.per_run, "label_noise", label_noise, n, low=0.0)
    t_max = p.check(_validate.real, "t_max", t_max, low=0.0, low_open=True)
    train_v = p.check(check_option, "train_second_layer", train_second_layer)
    # dt may be one per run: checked below, on the run axis
    opts = ODEOptions.make(
        p,
        names={"integrator": "method"},
        integrator=method,
        sgd_noise=sgd_noise,
        batch_size=batch_size,
        rtol=rtol,
        atol=atol,
    )
    max_error = p.check(check_option, "max_error", max_error)
    pair = p.check(activation_pair, activation, teacher_activation)
    p.raise_if_any()
    act_s, act_t = activation_codes(pair)
    noise, batch, method = opts.sgd_noise, opts.batch_size, opts.integrator
    rtol, atol = opts.rtol, opts.atol
    times = log_times(t_max) if times is None else _validate.times_grid("times", times, t_max)
    times = np.minimum(times, t_max)
    Q0, R0, v0, T, vt = (
        _validate.broadcast_runs(nm, a, n) for nm, a in zip(names, (Q0, R0, v0, T, vt))
    )
    _check_overlaps(Q0, R0, T)
    if dt is None:
        dt = _DT_FRACTION / (lr * _rate_scale(Q0, v0, T, vt, lr, noise / batch))
    else:
        dt = _validate.per_run("dt", dt, n, low=1e-12 * t_max)

    Q0, R0, v0, T, vt, lr, sigma2, times, dt = _for_kernel(
        Q0, R0, v0, T, vt, lr, sigma * sigma, times, dt
    )
    n_rec = times.shape[0]
    Q, R, v = np.empty((n, n_rec, K, K)), np.empty((n, n_rec, K, M)), np.empty((n, n_rec, K))
    eps = records((n, n_rec))
    status = np.empty(n, dtype=np.int8)
    t_stop = np.empty(n)
    n_evals = np.empty(n, dtype=np.int64)
    call_kernel(
        _k.integrate_batch,
        Q0,
        R0,
        v0,
        T,
        vt,
        act_s,
        act_t,
        lr,
        sigma2,
        1.0 / batch,
        train_v,
        noise,
        times,
        dt,
        ADAPTIVE[method],
        rtol,
        atol,
        max_error,
        Q,
        R,
        v,
        eps,
        status,
        t_stop,
        n_evals,
        num_threads=num_threads,
        progress=progress and RecordProgress(eps, times, "ode"),
    )
    params = dict(
        lr=lr,
        label_noise=sigma,
        dt=dt,
        n_evals=n_evals,
        batch_size=batch,
        train_second_layer=train_v,
        sgd_noise=noise,
        integrator=method,
        rtol=rtol,
        atol=atol,
        max_error=max_error,
        activation=pair[0],
        teacher_activation=pair[1],
    )
    return Result.from_params(
        params,
        method="ode",
        t=times,
        eps_g=eps,
        Q=Q,
        R=R,
        v=v,
        T=T,
        v_teacher=vt,
        status=status,
        t_stop=t_stop,
    )
