"""The order-parameter ODE (with or without its SGD-noise term), from the order parameters of
the very initial weights the simulations start from."""

import numpy as np

from .base import SEC_PER_FMA, Method


def _run(c, W0, v0, Wt, vt, lr, sigma, seeds, ids, common):
    from ..closed_form import order_parameters
    from ..ode import integrate_ode

    ops = [order_parameters(W, T) for W, T in zip(W0, Wt)]
    Q0 = np.array([o[0] for o in ops])
    R0 = np.array([o[1] for o in ops])
    T = np.array([o[2] for o in ops])
    res = integrate_ode(
        Q0,
        R0,
        v0,
        T,
        vt,
        lr,
        c.t_max,
        dt=c.dt or None,
        label_noise=sigma,
        sgd_noise=c.sgd_noise,
        batch_size=c.batch_size,
        method=c.integrator,
        rtol=c.rtol,
        atol=c.atol,
        **common,
    )
    return res.replace(params=dict(d=c.d, seed=seeds, run_id=ids))


def _steps(c):
    if c.integrator == "rk4" and c.dt:
        return c.t_max / c.dt, "dt"
    return 3000.0, "t_max"  # adaptive: a few thousand steps for the problems of this model


def _seconds(c):
    n, _ = _steps(c)
    # each step a few right-hand sides of O((K + M)^3) work
    return n * 10 * (float(c.K) + c.M) ** 3 * SEC_PER_FMA + 1e-4


METHOD = Method(
    name="ode",
    summary="order-parameter ODE",
    run=_run,
    steps=_steps,
    seconds_per_run=_seconds,
)
