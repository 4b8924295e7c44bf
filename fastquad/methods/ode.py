"""The order-parameter ODE (with or without its SGD-noise term), from the order parameters of
the very initial weights the simulations start from."""

from dataclasses import dataclass

import numpy as np

from .. import _validate
from .base import SEC_PER_FMA, Method
from .flow import DT
from .options import Options, Rule, choice
from .sgd import BATCH_SIZE

INTEGRATORS = ("rk45", "rk4")


@dataclass(frozen=True)
class ODEOptions(Options):
    """Options of the order-parameter ODE (checked when made)."""

    integrator: str = Rule(
        "rk45",
        choice(lambda: INTEGRATORS),
        "ode integrator: rk45 (adaptive, default) or rk4 (fixed step)",
    ).field()
    dt: float = DT.field()
    rtol: float = Rule(
        1e-8,
        lambda n, x: _validate.real(n, x, low=1e-14, high=1.0, high_open=True),
        "rk45 relative tolerance",
    ).field()
    atol: float = Rule(
        1e-10,
        lambda n, x: _validate.real(n, x, low=0.0, low_open=True),
        "rk45 absolute tolerance",
    ).field()
    sgd_noise: bool = Rule(
        True, _validate.boolean, "include the eta^2 SGD-noise term in the ode"
    ).field()
    batch_size: int = BATCH_SIZE.field()


def _run(c, W0, v0, Wt, vt, lr, sigma, seeds, ids, common):
    o = c.options
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
        dt=o.dt or None,
        label_noise=sigma,
        sgd_noise=o.sgd_noise,
        batch_size=o.batch_size,
        method=o.integrator,
        rtol=o.rtol,
        atol=o.atol,
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
    options=ODEOptions,
    run=_run,
    steps=_steps,
    seconds_per_run=_seconds,
)
