"""Recording grids on the common time axis ``t = step / d``."""

import numpy as np

from . import _validate as V


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
    t_max = V.real("t_max", t_max, low=0.0, low_open=True)
    n_times = V.integer("n_times", n_times, low=2)
    t_first = t_max * 1e-3 if t_first is None else V.real(
        "t_first", t_first, low=0.0, high=t_max, low_open=True)
    if n_times == 2:
        return np.array([0.0, t_max])
    return np.concatenate([[0.0], np.geomspace(t_first, t_max, n_times - 1)])


def steps_for_times(times, d):
    """Integer step numbers nearest to ``times * d`` and the exact times they stand for.

    A grid finer than ``1/d`` maps several times to one step; they are all kept (the same state
    is recorded at each), so every method returns as many records as times were asked for.

    Returns
    -------
    steps : ndarray of int64, shape (n,)
    t : ndarray, shape (n,)  -- ``steps / d``
    """
    steps = np.rint(np.asarray(times, dtype=np.float64) * d).astype(np.int64)
    return steps, steps / d
