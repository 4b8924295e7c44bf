"""What a run costs, estimated before it starts, and the limits that refuse what cannot be done.

Two kinds of limit, both checked before any array is allocated or kernel runs:

- **memory** (hard): a call whose arrays cannot fit in this machine's memory is refused in one
  line that names the parameters responsible;
- **time** (soft): a call estimated to take longer than :data:`MAX_SECONDS` on this machine's
  cores is refused unless the caller says ``force`` (``--force`` on the command line).

The estimates are rough (within a small factor on the reference machine); they are meant to
catch a typo such as ``t_max = 1e12`` or ``dt = 1e-12``, not to plan a budget.
"""

import math
import os

from . import methods
from .errors import InputError
from .methods.base import BYTES

#: Refuse (without ``force``) work estimated to take longer than this, in seconds.
MAX_SECONDS = 24 * 3600.0
#: Largest grid a sweep file may describe (points), and largest sweep (runs).
MAX_GRID_POINTS = 1_000_000
MAX_SWEEP_RUNS = 10_000_000
#: Share of the machine's memory one call may plan to use.
MEMORY_SHARE = 0.8
#: Cost of a step relative to the quadratic network's, by activation (others: 1). Deliberately
#: crude: erf evaluates a special function per unit and sample, about twice the arithmetic of
#: h^2; linear and ReLU cost about what the quadratic does. The larger of the student's and the
#: teacher's factors applies to the whole run.
ACTIVATION_COST = {"erf": 2.0}


def _steps(cfg):
    """Steps one run takes, and the parameter that sets their number."""
    return methods.get(cfg.method).steps(cfg)


def machine_memory():
    """Physical memory of this machine in bytes."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # psutil comes with dask; without it, the POSIX count
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def activation_cost(cfg):
    """The factor :data:`ACTIVATION_COST` gives a configuration's runs (1 for quadratic ones)."""
    names = (cfg.values.get("activation"), cfg.values.get("teacher_activation"))
    return max(ACTIVATION_COST.get(n, 1.0) for n in names)


def seconds_per_run(cfg):
    """A rough estimate of one run's time on one core of the reference machine: the method's
    own cost model (:attr:`fastquad.methods.Method.seconds_per_run`, measured on quadratic
    networks) times :func:`activation_cost`."""
    return methods.get(cfg.method).seconds_per_run(cfg) * activation_cost(cfg)


def memory_terms(cfg, n_runs, n_times, threads=1):
    """Bytes a call of ``n_runs`` runs of ``cfg`` allocates, by what sets each term: the
    recorded curves, and what the method allocates besides.

    Returns
    -------
    list of (bytes, parameters, formula)
    """
    method = methods.get(cfg.method)
    K, M = float(cfg.K), float(cfg.M)  # float: products of huge counts
    per_time = 1 + K * K + K * M + K + (1 if method.records_train_error else 0)
    curves = (
        float(n_runs) * float(n_times) * per_time * BYTES,
        "n_runs, n_times, K, M",
        "n_runs x n_times x (1 + K^2 + K M + K) numbers",
    )
    return [curves] + list(method.memory_terms(cfg, n_runs, threads))


def _hours(seconds):
    if seconds < 3600:
        return f"{seconds / 60:.3g} minutes"
    if seconds < 86400 * 3:
        return f"{seconds / 3600:.3g} hours"
    return f"{seconds / 86400:.3g} days"


def check_memory(cfg, n_runs, n_times, threads=1, *, where=""):
    """Raise :class:`InputError` if the call cannot fit in this machine's memory."""
    terms = memory_terms(cfg, n_runs, n_times, threads)
    total = sum(t[0] for t in terms)
    have = machine_memory()
    if total > MEMORY_SHARE * have:
        size, names, formula = max(terms)
        values = ", ".join(f"{k}={_value(cfg, k, n_runs, n_times)}" for k in names.split(", "))
        raise InputError(
            f"{names}: {values}{where} need about {size / 2**30:.3g} GiB for "
            f"{formula}, more than this machine's {have / 2**30:.3g} GiB of "
            f"memory can hold; lower one of them"
        )


def _value(cfg, name, n_runs, n_times):
    if name == "n_runs":
        return n_runs
    if name == "n_times":
        return n_times
    return getattr(cfg, name)


def check_time(cfg, n_runs, cores=1, *, force=False, where=""):
    """Raise :class:`InputError` if the runs would take longer than :data:`MAX_SECONDS`.

    Checks one run (it runs on one core whatever the machine) and all ``n_runs`` on ``cores``.
    ``force=True`` skips the check.
    """
    if force:
        return
    one = seconds_per_run(cfg)
    steps, name = _steps(cfg)
    limit = _hours(MAX_SECONDS)
    if one > MAX_SECONDS:
        raise InputError(
            f"{name}: {name}={getattr(cfg, name):g}{where} makes one run of "
            f"{steps:.3g} steps, about {_hours(one)} on one core (more than "
            f"{limit}); lower it, or use --force (force=True) to run it anyway"
        )
    total = one * n_runs / max(1, cores)
    if total > MAX_SECONDS:
        raise InputError(
            f"n_runs: {n_runs} runs{where} would take about {_hours(total)} on "
            f"{cores} core(s) (more than {limit}); use fewer runs, a cluster, or "
            "--force (force=True) to run them anyway"
        )


def check_sweep(points, n_runs, n_times, cores=None, *, force=False):
    """Budget checks of a sweep before it starts: each grid point's run fits in memory and
    takes less than :data:`MAX_SECONDS` (unless ``force``); with ``cores`` (an embedded
    cluster), so does the whole sweep."""
    seen = set()
    total = 0.0
    for i, cfg in enumerate(points):
        key = tuple(sorted((k, str(v)) for k, v in cfg.values.items() if k != "seed"))
        total += seconds_per_run(cfg) * n_runs
        if key in seen:
            continue
        seen.add(key)
        where = f" (grid point {i})" if len(points) > 1 else ""
        check_memory(cfg, 1, n_times, where=where)
        check_time(cfg, 1, force=force, where=where)
    if cores and not force and total / cores > MAX_SECONDS:
        raise InputError(
            f"n_runs: the sweep's {n_runs * len(points)} runs would take about "
            f"{_hours(total / cores)} on {cores} worker(s) (more than "
            f"{_hours(MAX_SECONDS)}); use a cluster (--scheduler), fewer runs, or "
            "--force to run them anyway"
        )


def check_grid(n_points, n_runs):
    """Raise :class:`InputError` for a sweep grid too large to describe or store."""
    if n_points > MAX_GRID_POINTS:
        raise InputError(
            f"axes: the grid has {n_points:.4g} points, at most {MAX_GRID_POINTS} "
            "are allowed in one sweep file; split the sweep"
        )
    if n_points * n_runs > MAX_SWEEP_RUNS:
        raise InputError(
            f"n_runs: {n_points} points x {n_runs} replicas = "
            f"{n_points * n_runs:.4g} runs, at most {MAX_SWEEP_RUNS} in one sweep; "
            "split the sweep"
        )


def grid_size(axes, zipped):
    """Points of a grid of product axes and one zipped axis, without building it."""
    n = math.prod(len(v) if isinstance(v, list) else 1 for v in axes.values())
    if zipped:
        n *= max(len(v) if isinstance(v, list) else 1 for v in zipped.values())
    return n


__all__ = [
    "MAX_SECONDS",
    "MAX_GRID_POINTS",
    "MAX_SWEEP_RUNS",
    "machine_memory",
    "seconds_per_run",
    "activation_cost",
    "ACTIVATION_COST",
    "memory_terms",
    "check_memory",
    "check_time",
    "check_sweep",
    "check_grid",
    "grid_size",
]
