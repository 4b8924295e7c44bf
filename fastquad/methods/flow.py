"""The population gradient flow in parameter space (RK4 on the exact population gradient)."""

from dataclasses import dataclass

from .. import _validate
from .base import SEC_PER_FMA, Method
from .options import Options, Rule
from .sgd import weights_memory

DT = Rule(
    0.0,
    lambda n, x: _validate.real(n, x, low=0.0),
    "RK4 step for flow/ode (0: automatic; initial step for rk45)",
)


@dataclass(frozen=True)
class FlowOptions(Options):
    """Options of the population gradient flow (checked when made)."""

    dt: float = DT.field()


def _run(c, W0, v0, Wt, vt, lr, sigma, seeds, ids, common):
    from ..simulate import integrate_flow

    return integrate_flow(W0, v0, Wt, vt, lr, c.t_max, dt=c.options.dt or None, **common)


def default_dt(lr):
    """The RK4 step of the flow when none is given: small against the time scale 1 / lr."""
    return min(0.05, 0.01 / lr)


def _steps(c):
    dt = c.dt or default_dt(c.lr)
    return c.t_max / dt, "dt" if c.dt else "t_max"


def _seconds(c):
    K, M, d = float(c.K), float(c.M), float(c.d)
    n, _ = _steps(c)
    return n * 4 * 3 * K * (K + M) * d * SEC_PER_FMA


METHOD = Method(
    name="flow",
    summary="population gradient flow, RK4",
    options=FlowOptions,
    run=_run,
    steps=_steps,
    seconds_per_run=_seconds,
    memory_terms=lambda c, n_runs, threads: [weights_memory(c, n_runs)],
)
