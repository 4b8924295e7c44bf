"""Recording grids on the common time axis ``t = step / d``."""

import math

import numpy as np

from . import _validate
from .errors import InputError

#: Largest number of steps of one run: step numbers and ``t = step / d`` stay exact in float64.
MAX_STEPS = 2**53


def log_times(t_max, n_times=121, t_first=None):
    """Log-spaced recording times ``[0, t_first, ..., t_max]``.

    Learning curves of quadratic networks have plateaus and drops on every time scale, so a
    log-spaced grid records the early drop and the late plateaus with the same budget.

    Parameters
    ----------
    t_max : float
        Last time, > 0.
    n_times : int
        Number of times including t = 0 (>= 2).
    t_first : float, optional
        First non-zero time; default ``t_max * 1e-3``.

    Returns
    -------
    ndarray, shape (n_times,)
    """
    t_max = _validate.real("t_max", t_max, low=0.0, low_open=True)
    n_times = _validate.integer("n_times", n_times, low=2)
    t_first = (
        t_max * 1e-3
        if t_first is None
        else _validate.real("t_first", t_first, low=0.0, high=t_max, low_open=True)
    )
    if n_times == 2:
        return np.array([0.0, t_max])
    return np.concatenate([[0.0], np.geomspace(t_first, t_max, n_times - 1)])


def check_steps(t_max, steps_per_unit, name="t_max"):
    """Raise :class:`InputError` unless ``t_max * steps_per_unit`` is a step count a run can
    make: at least one step, and exactly representable. The one rule for every method that
    advances in steps of ``1 / d`` (the Python API and configurations alike)."""
    n = t_max * steps_per_unit
    if n < 1:
        raise InputError(
            f"{name} must be >= 1/d = {1 / steps_per_unit:g} (at least one step), got {t_max:g}"
        )
    if not n <= MAX_STEPS:
        raise InputError(
            f"{name} must be <= {MAX_STEPS / steps_per_unit:.6g} at d = "
            f"{steps_per_unit} (at most 2^53 = {MAX_STEPS:.3g} steps of 1/d), "
            f"got {t_max:g}"
        )
    return n


def recording_times(t_max, n_times=121, steps_per_unit=None):
    """The default recording grid: about ``n_times`` log-spaced times up to ``t_max``, plus 0.

    Parameters
    ----------
    t_max : float
        Last time, > 0.
    n_times : int
        Times asked for, including t = 0 (>= 2).
    steps_per_unit : int, optional
        For methods that move in whole steps of ``1 / steps_per_unit`` (online SGD and GD, where
        it is d; for several values of d, their greatest common divisor, so that every one of
        them records at every time). Each time is then a whole number of steps -- the time of
        a state that is really recorded -- and times closer than one step are kept once, so
        the grid may hold fewer than ``n_times`` times. The log grid starts at one step (or
        at ``t_max / 1000`` if that is later); the last time is ``t_max`` rounded to a whole
        step. None (flow and ODE): times are not rounded.

    Returns
    -------
    ndarray, shape (<= n_times,), strictly increasing, starting at 0.
    """
    t_max = _validate.real("t_max", t_max, low=0.0, low_open=True)
    n_times = _validate.integer("n_times", n_times, low=2)
    if steps_per_unit is None:
        return log_times(t_max, n_times)
    g = _validate.integer("steps_per_unit", steps_per_unit, low=1)
    last = int(np.rint(check_steps(t_max, g)))
    if last < 1:
        raise InputError(f"t_max must be >= {0.5 / g:g} (half a step of 1/{g}), got {t_max:g}")
    grid = log_times(t_max, n_times, min(max(1.0 / g, t_max * 1e-3), t_max))
    steps = np.unique(np.rint(grid * g).astype(np.int64))
    return steps / g


def common_steps_per_unit(ds):
    """The finest step every ``d`` in ``ds`` takes whole: ``1 / gcd(ds)`` (as gcd(ds))."""
    return math.gcd(*[int(d) for d in ds])


def steps_for_times(times, d):
    """Integer step numbers nearest to ``times * d`` and the exact times they stand for.

    A grid finer than ``1/d`` maps several times to one step; they are all kept (the same state
    is recorded at each), so every method returns as many records as times were asked for.

    Returns
    -------
    steps : ndarray of int64, shape (n,)
    t : ndarray, shape (n,)  -- ``steps / d``
    """
    times = np.asarray(times, dtype=np.float64)
    if times.size:
        check_steps(float(times.max()), d, "times")
    steps = np.rint(times * d).astype(np.int64)
    return steps, steps / d
