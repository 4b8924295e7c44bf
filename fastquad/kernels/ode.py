"""The order-parameter ODE (see docs/theory.md, 'The ODEs'): its right-hand side and a batched
RK4 / Dormand-Prince integrator, one ``prange`` iteration per trajectory.

The state of one trajectory is a flat float64 vector ``y = [Q.ravel(), R.ravel(), v]`` of length
``K*K + K*M + K``, so the Runge-Kutta stage combinations are single loops; the right-hand side
reads it through (K, K), (K, M) and (K,) views made once per trajectory. Q is stored in full and
stays exactly symmetric (every symmetric product is computed once and mirrored).
"""

import numpy as np
from numba import njit

from . import ode_act
from .activation import QUADRATIC
from .closed_form import eps_g_act
from .options import JIT, RHS
from .status import STATUS_DIVERGED, STATUS_DONE, STATUS_FAILED

#: Attempted steps after which an adaptive trajectory is given up (status FAILED): a guard
#: against a tolerance the problem cannot meet, not a limit a sensible run comes near.
MAX_STEPS = 10_000_000

# Explicit Runge-Kutta tableaus: row s >= 1 holds the weights of stage s; the last row holds the
# weights of y_new, and that last stage, f(y_new), is the first stage of the next step (FSAL)
# and gives eps_g(y_new) for the divergence check. Both methods run through one stage loop.
# Classic RK4:
_RK4_A = np.array(
    [
        [0.0, 0.0, 0.0, 0.0],
        [0.5, 0.0, 0.0, 0.0],
        [0.0, 0.5, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [1 / 6, 1 / 3, 1 / 3, 1 / 6],
    ]
)
# Dormand-Prince 5(4) (as in scipy's RK45): the 5th-order solution is propagated; _DP_E combines
# the stages into the difference with the embedded 4th-order one, the error estimate.
_DP_A = np.array(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [1 / 5, 0.0, 0.0, 0.0, 0.0, 0.0],
        [3 / 40, 9 / 40, 0.0, 0.0, 0.0, 0.0],
        [44 / 45, -56 / 15, 32 / 9, 0.0, 0.0, 0.0],
        [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0.0, 0.0],
        [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656, 0.0],
        [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
    ]
)
_DP_E = np.array([-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40])
_SAFETY = 0.9
_MIN_FACTOR = 0.2
_MAX_FACTOR = 10.0
# A fixed step that would stop short of a record time by less than this fraction of dt is
# stretched onto it instead of leaving a sliver of a step.
_LAND_SLACK = 1e-9


# Row 0 as a plain int64: a literal 0 would make Numba compile _rhs a second time.
_ROW0 = np.int64(0)


@njit(**JIT)
def _teacher_constants(T, vt):
    """sum_n v*_n T_nn and sum_nm v*_n v*_m T_nm^2: the teacher's share of tr D and tr D^2."""
    M = vt.shape[0]
    tT = 0.0
    tT2 = 0.0
    for n in range(M):
        tT += vt[n] * T[n, n]
        for m in range(M):
            tT2 += vt[n] * vt[m] * T[n, m] * T[n, m]
    return tT, tT2


@njit(**RHS)
def _rhs(
    Q, R, v, T, vt, tT, tT2, lr, sigma2, inv_batch, train_v, sgd_noise, out, row, A, B, Rt, P, S
):
    """Right-hand side at (Q, R, v) into ``out[row]`` laid out as ``[dQ.ravel(), dR.ravel(), dv]``;
    returns eps_g of the state (nearly free from P; it stops diverging runs).

    Q and T must be exactly symmetric: their rows stand in for their columns, so every product
    below is a contiguous dot product. ``tT, tT2`` come from ``_teacher_constants``. Scratch:
    A = Q diag(v) (K, K), B = R diag(v*) (K, M), Rt = R^T (M, K), P (K, K), S (K, M). Writing
    into a row of the stage array, instead of into views of it, keeps the per-call overhead
    small enough to matter at K = 4.
    """
    K = v.shape[0]
    M = vt.shape[0]
    oR = K * K
    ov = oR + K * M
    trD = -tT
    for i in range(K):
        trD += v[i] * Q[i, i]
        for j in range(K):
            A[i, j] = Q[i, j] * v[j]
        for n in range(M):
            B[i, n] = R[i, n] * vt[n]
            Rt[n, i] = R[i, n]
    # P = Q Dv Q - R Dt R^T (symmetric), S = Q Dv R - R Dt T
    for i in range(K):
        for k in range(i, K):
            acc = 0.0
            for j in range(K):
                acc += A[i, j] * Q[k, j]
            for n in range(M):
                acc -= B[i, n] * R[k, n]
            P[i, k] = acc
            P[k, i] = acc
        for n in range(M):
            acc = 0.0
            for j in range(K):
                acc += A[i, j] * Rt[n, j]
            for m in range(M):
                acc -= B[i, m] * T[n, m]
            S[i, n] = acc
    # tr D^2 = sum_i v_i (P_ii - sum_n v*_n R_in^2) + the teacher's part
    trD2 = tT2
    for i in range(K):
        acc = P[i, i]
        for n in range(M):
            acc -= B[i, n] * R[i, n]
        trD2 += v[i] * acc
    two_eps = trD * trD + 2.0 * trD2
    c_noise = 4.0 * lr * lr * inv_batch
    c_noise_q = two_eps + sigma2
    for i in range(K):
        for k in range(i, K):
            x = -2.0 * lr * (v[i] + v[k]) * (trD * Q[i, k] + 2.0 * P[i, k])
            if sgd_noise:
                # U = P Dv Q - S Dt R^T: the four terms of U (docs/theory.md, 'The ODEs')
                # regrouped (symmetric)
                u = 0.0
                for j in range(K):
                    u += P[i, j] * A[k, j]
                for n in range(M):
                    u -= S[i, n] * B[k, n]
                x += c_noise * v[i] * v[k] * (c_noise_q * Q[i, k] + 4.0 * trD * P[i, k] + 8.0 * u)
            out[row, i * K + k] = x
            out[row, k * K + i] = x
        for n in range(M):
            out[row, oR + i * M + n] = -2.0 * lr * v[i] * (trD * R[i, n] + 2.0 * S[i, n])
        out[row, ov + i] = -lr * (trD * Q[i, i] + 2.0 * P[i, i]) if train_v else 0.0
    return 0.5 * two_eps


@njit(**JIT)
def _rhs_pair(
    Q,
    R,
    v,
    T,
    vt,
    act_s,
    act_t,
    tT,
    tT2,
    lr,
    sigma2,
    inv_batch,
    train_v,
    sgd_noise,
    out,
    row,
    A,
    B,
    Rt,
    P,
    S,
    work,
):
    """The right-hand side of activation pair (act_s, act_t): the quadratic pair's own
    :func:`_rhs` (scratch A, B, Rt, P, S), any other :func:`.ode_act.rhs_act` (scratch work)."""
    if act_s == QUADRATIC and act_t == QUADRATIC:
        return _rhs(
            Q,
            R,
            v,
            T,
            vt,
            tT,
            tT2,
            lr,
            sigma2,
            inv_batch,
            train_v,
            sgd_noise,
            out,
            row,
            A,
            B,
            Rt,
            P,
            S,
        )
    return ode_act.rhs_act(
        Q, R, v, T, vt, act_s, act_t, lr, sigma2, inv_batch, train_v, sgd_noise, out, row, work
    )


@njit(**JIT)
def _views(y, K, M):
    """(Q, R, v) views of a flat state [Q.ravel(), R.ravel(), v]."""
    KK = K * K
    KM = K * M
    return y[:KK].reshape((K, K)), y[KK : KK + KM].reshape((K, M)), y[KK + KM :]


# Copies are explicit loops: Numba's array-to-array slice assignment pulls in its broadcasting
# machinery, which costs seconds of compilation for nothing here.
@njit(**JIT)
def _pack(Q, R, v, y):
    """y = [Q.ravel(), R.ravel(), v]."""
    K, M = R.shape
    for i in range(K):
        for j in range(K):
            y[i * K + j] = Q[i, j]
        for n in range(M):
            y[K * K + i * M + n] = R[i, n]
        y[K * K + K * M + i] = v[i]


@njit(**JIT)
def _unpack(y, Q, R, v):
    """Inverse of _pack."""
    K, M = R.shape
    for i in range(K):
        for j in range(K):
            Q[i, j] = y[i * K + j]
        for n in range(M):
            R[i, n] = y[K * K + i * M + n]
        v[i] = y[K * K + K * M + i]


@njit(**JIT)
def _scratch(K, M):
    return np.empty((K, K)), np.empty((K, M)), np.empty((M, K)), np.empty((K, K)), np.empty((K, M))


@njit(**JIT)
def ode_rhs_into(
    Q, R, v, T, vt, act_s, act_t, lr, sigma2, inv_batch, train_v, sgd_noise, dQ, dR, dv
):
    """The order-parameter ODE (docs/theory.md, 'The ODEs') at one state, into dQ (K, K),
    dR (K, M), dv (K,).

    ``sigma2`` is label_noise**2; the eta^2 (SGD-noise) term is scaled by ``inv_batch`` =
    1 / batch_size and dropped when ``sgd_noise`` is False; ``train_v=False`` gives dv = 0.
    Q and T must be exactly symmetric. ``act_s``, ``act_t``: the student's and the teacher's
    activation codes (:mod:`.activation`); any pair but the quadratic one takes
    :func:`.ode_act.rhs_act`. Returns eps_g of the state. Allocates its scratch; the
    integrator calls the right-hand side with scratch allocated once per trajectory.
    """
    K = v.shape[0]
    M = vt.shape[0]
    out = np.empty((1, K * K + K * M + K))
    tT, tT2 = _teacher_constants(T, vt)
    A, B, Rt, P, S = _scratch(K, M)
    work = ode_act.scratch(K, M)
    eps = _rhs_pair(
        Q,
        R,
        v,
        T,
        vt,
        act_s,
        act_t,
        tT,
        tT2,
        lr,
        sigma2,
        inv_batch,
        train_v,
        sgd_noise,
        out,
        _ROW0,
        A,
        B,
        Rt,
        P,
        S,
        work,
    )
    _unpack(out[0], dQ, dR, dv)
    return eps


@njit(**JIT)
def _fill_nan(r0, Q_out, R_out, v_out, eps_out):
    nan = np.full(Q_out.shape[1] ** 2 + Q_out.shape[1] * R_out.shape[2] + Q_out.shape[1], np.nan)
    for r in range(r0, eps_out.shape[0]):
        _unpack(nan, Q_out[r], R_out[r], v_out[r])
        eps_out[r] = np.nan


@njit(**JIT)
def _integrate_one(
    Q0,
    R0,
    v0,
    T,
    vt,
    act_s,
    act_t,
    lr,
    sigma2,
    inv_batch,
    train_v,
    sgd_noise,
    times,
    dt,
    adaptive,
    rtol,
    atol,
    max_error,
    Q_out,
    R_out,
    v_out,
    eps_out,
):
    """One trajectory into its own output slices; returns (status, t_stop, n_evals).

    Records are written exactly at ``times``: the step that would pass a record time is cut to
    land on it. A state whose eps_g exceeds max_error or is not finite (a non-finite entry
    always makes eps_g non-finite) stops the run at its time; the records from there on are NaN.
    A non-finite trial step of the adaptive method has a non-finite error and is rejected.
    """
    K = v0.shape[0]
    M = vt.shape[0]
    N = K * K + K * M + K
    n_rec = times.shape[0]
    tT, tT2 = _teacher_constants(T, vt)
    A, B, Rt, P, S = _scratch(K, M)
    work = ode_act.scratch(K, M)
    tab = _DP_A if adaptive else _RK4_A
    last = tab.shape[0] - 1
    y = np.empty(N)
    yt = np.empty(N)
    ev = np.empty(N)
    k = np.empty((tab.shape[0], N))
    yQ, yR, yv = _views(y, K, M)
    tQ, tR, tv = _views(yt, K, M)
    _pack(Q0, R0, v0, y)

    t = 0.0
    r = 0
    status = STATUS_DONE
    # k[0] always holds f(y)
    eps = _rhs_pair(
        yQ,
        yR,
        yv,
        T,
        vt,
        act_s,
        act_t,
        tT,
        tT2,
        lr,
        sigma2,
        inv_batch,
        train_v,
        sgd_noise,
        k,
        _ROW0,
        A,
        B,
        Rt,
        P,
        S,
        work,
    )
    n_evals = 1
    h = dt
    n_steps = 0
    rejected = False
    while True:
        if not eps <= max_error:
            status = STATUS_DIVERGED
            break
        while r < n_rec and times[r] <= t:
            _unpack(y, Q_out[r], R_out[r], v_out[r])
            eps_out[r] = eps_g_act(yQ, yR, T, yv, vt, act_s, act_t)
            r += 1
        if r == n_rec:
            break
        if adaptive and n_steps >= MAX_STEPS:
            status = STATUS_FAILED
            break
        n_steps += 1

        t_rec = times[r]
        h_natural = h
        # a fixed step stopping a sliver short of a record time is stretched onto it instead
        landing = t + h * (1.0 + (0.0 if adaptive else _LAND_SLACK)) >= t_rec
        if landing:
            h = t_rec - t
        # stage sums accumulate in yt one stage at a time, so the loops along the state vectorise
        for s in range(1, last + 1):
            for i in range(N):
                yt[i] = 0.0
            for j in range(s):
                c = tab[s, j]
                if c != 0.0:
                    for i in range(N):
                        yt[i] += c * k[j, i]
            for i in range(N):
                yt[i] = y[i] + h * yt[i]
            eps_new = _rhs_pair(
                tQ,
                tR,
                tv,
                T,
                vt,
                act_s,
                act_t,
                tT,
                tT2,
                lr,
                sigma2,
                inv_batch,
                train_v,
                sgd_noise,
                k,
                s,
                A,
                B,
                Rt,
                P,
                S,
                work,
            )
        n_evals += last

        factor = 1.0
        if adaptive:
            # error control as in scipy's RK45: rms norm, mixed rtol/atol, safety factor and
            # bounded growth; err is inf or NaN for a non-finite trial state
            for i in range(N):
                ev[i] = 0.0
            for j in range(last + 1):
                c = _DP_E[j]
                if c != 0.0:
                    for i in range(N):
                        ev[i] += c * k[j, i]
            err2 = 0.0
            for i in range(N):
                e = h * ev[i] / (atol + rtol * max(abs(y[i]), abs(yt[i])))
                err2 += e * e
            err = np.sqrt(err2 / N)
            if not err <= 1.0:
                factor = max(_MIN_FACTOR, _SAFETY * err**-0.2) if err < np.inf else _MIN_FACTOR
                h = h * factor
                rejected = True
                if h < 10.0 * (np.nextafter(t, np.inf) - t):
                    status = STATUS_DIVERGED
                    break
                continue
            factor = _MAX_FACTOR if err == 0.0 else min(_MAX_FACTOR, _SAFETY * err**-0.2)
            if rejected:
                factor = min(1.0, factor)
            rejected = False

        t = t_rec if landing else t + h
        for i in range(N):
            y[i] = yt[i]
            k[0, i] = k[last, i]
        eps = eps_new
        if adaptive:
            # a step cut short to land on a record says little about the natural step size
            h = max(h * factor, h_natural) if landing else h * factor
        else:
            h = dt

    if status == STATUS_DONE:
        return status, np.nan, n_evals
    _fill_nan(r, Q_out, R_out, v_out, eps_out)
    return status, t, n_evals


@njit(**JIT)
def integrate_batch(
    first,
    step,
    Q0,
    R0,
    v0,
    T,
    vt,
    act_s,
    act_t,
    lr,
    sigma2,
    inv_batch,
    train_v,
    sgd_noise,
    times,
    dt,
    adaptive,
    rtol,
    atol,
    max_error,
    Q_out,
    R_out,
    v_out,
    eps_out,
    status,
    t_stop,
    n_evals,
):
    """Integrate the trajectories ``first, first + step, ...`` of n independent ones of the
    order-parameter ODE (each writes only its own slices, so results do not depend on the
    batch or on the number of threads).

    Shapes: Q0 (n, K, K) symmetric, R0 (n, K, M), v0 (n, K), T (n, M, M) symmetric, vt (n, M),
    lr, sigma2, dt (n,), times (n_rec,) increasing from >= 0. Outputs: Q_out (n, n_rec, K, K),
    R_out (n, n_rec, K, M), v_out (n, n_rec, K), eps_out (n, n_rec), status (n,) int8 (0 done,
    1 diverged, 2 failed: MAX_STEPS exhausted), t_stop (n,) (NaN unless stopped), n_evals (n,)
    int64. ``act_s``, ``act_t``: activation codes of student and teacher (:mod:`.activation`).
    ``adaptive=False``: classic RK4 with step dt; True: Dormand-Prince 5(4) with mixed
    rtol/atol error control, dt the initial step.
    """
    for r in range(first, Q0.shape[0], step):
        st, ts, ne = _integrate_one(
            Q0[r],
            R0[r],
            v0[r],
            T[r],
            vt[r],
            act_s,
            act_t,
            lr[r],
            sigma2[r],
            inv_batch,
            train_v,
            sgd_noise,
            times,
            dt[r],
            adaptive,
            rtol,
            atol,
            max_error,
            Q_out[r],
            R_out[r],
            v_out[r],
            eps_out[r],
        )
        status[r] = st
        t_stop[r] = ts
        n_evals[r] = ne
