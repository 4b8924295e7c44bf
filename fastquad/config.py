"""One configuration of runs: a table of parameters shared by the CLI, TOML files and sweeps.

A ``RunConfig`` is validated as a whole (every problem reported at once, each naming its key)
and turns into arrays (teacher, student initialisations) and one call of a method. The same
table generates the ``fastquad simulate`` flags, so the CLI, TOML files and sweeps never drift.
"""

import os
import tomllib
from dataclasses import dataclass, field

import numpy as np

from . import _validate, methods
from .activations import ACTIVATIONS, SAME
from .closed_form import order_parameters
from .errors import InputError
from .methods import ode as ode_method
from .methods.options import Rule, choice
from .methods.sgd import DTYPES, SAMPLERS
from .model import TEACHER_KINDS, make_student, make_teacher, student_weights

#: The methods registered at import (``fastquad.methods.names()`` is the live list).
METHODS = methods.names()
MAX_COUNT = _validate.MAX_COUNT
#: Most recording times of one run (the grid itself is built before the memory check).
MAX_TIMES = 10**7
INTEGRATORS = ode_method.INTEGRATORS
#: The parameters that take one of a few names, and those names (the live method list).
CHOICES = {
    "method": methods.names,
    "teacher": lambda: TEACHER_KINDS,
    "sampler": lambda: SAMPLERS,
    "dtype": lambda: DTYPES,
    "integrator": lambda: INTEGRATORS,
    "activation": lambda: ACTIVATIONS,
    "teacher_activation": lambda: (SAME, *ACTIVATIONS),
}


def _floats(name, value):
    """A number or a non-empty list of numbers (per-unit second layers)."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise InputError(f"{name} must be a number or a non-empty list of numbers")
        return tuple(_validate.real(f"{name}[{i}]", x) for i, x in enumerate(value))
    return _validate.real(name, value)


def _count(low):
    return lambda n, x: _validate.integer(n, x, low=low, high=MAX_COUNT)


def _seed(n, x):
    return _validate.integer(n, x, low=0, high=2**63 - 1)


#: The parameters of the problem and its runs, shared by every method. Each method's own
#: options are declared by its options class (:mod:`fastquad.methods`).
COMMON = {
    "method": Rule(
        "sgd",
        choice(methods.names),
        ", ".join(f"{m} ({methods.get(m).summary})" for m in METHODS),
    ),
    "activation": Rule(
        "quadratic",
        choice(lambda: ACTIVATIONS),
        "student activation g: quadratic (h^2), linear, relu or erf (erf(h/sqrt 2))",
    ),
    "teacher_activation": Rule(
        SAME,
        choice(lambda: (SAME, *ACTIVATIONS)),
        "teacher activation: same (the student's), quadratic, linear, relu or erf",
    ),
    "d": Rule(100, _count(1), "input dimension"),
    "K": Rule(2, _count(1), "student hidden units"),
    "M": Rule(2, _count(1), "teacher hidden units"),
    "lr": Rule(
        0.1, lambda n, x: _validate.real(n, x, low=0.0, low_open=True), "learning rate eta (> 0)"
    ),
    "t_max": Rule(
        50.0,
        lambda n, x: _validate.real(n, x, low=0.0, low_open=True),
        "last time, t = step / d (> 0)",
    ),
    "n_times": Rule(
        121,
        lambda n, x: _validate.integer(n, x, low=2, high=MAX_TIMES),
        "recording times, log-spaced from t_max/1000 (plus t = 0)",
    ),
    "n_runs": Rule(
        4, _count(1), "runs (seeds): run r uses the stream (seed, r) and its own initialisation"
    ),
    "seed": Rule(0, _seed, "base seed of the runs' streams and initialisations"),
    "label_noise": Rule(
        0.0, lambda n, x: _validate.real(n, x, low=0.0), "label noise sigma (>= 0)"
    ),
    "train_second_layer": Rule(True, _validate.boolean, "train v (false: frozen second layer)"),
    "teacher": Rule(
        "orthonormal",
        choice(lambda: TEACHER_KINDS),
        "teacher rows: orthonormal (T = I) or gaussian",
    ),
    "teacher_v": Rule(1.0, _floats, "teacher second layer v* (a number, or one per unit)"),
    "teacher_seed": Rule(0, _seed, "seed of the teacher (shared by all runs)"),
    "init_scale": Rule(
        0.1,
        lambda n, x: _validate.real(n, x, low=0.0),
        "std of the student's initial first-layer entries (>= 0)",
    ),
    "init_overlap": Rule(
        0.0,
        lambda n, x: _validate.real(n, x),
        "warm start: add this multiple of teacher row j to student row j "
        "(j < min(K, M)); 0 is a purely random start",
    ),
    "student_v": Rule(1.0, _floats, "initial student second layer v (a number, or one per unit)"),
    "max_error": Rule(
        1e6,
        lambda n, x: _validate.real(n, x, low=0.0, low_open=True),
        "a run with eps_g above this (or non-finite) is stopped as diverged",
    ),
}


def _method_options():
    """Every method's options, each once, its help naming the methods that use it."""
    rules, users = {}, {}
    for name in METHODS:
        for key, rule in methods.get(name).options.rules().items():
            if rules.setdefault(key, rule) is not rule:
                raise RuntimeError(f"option {key!r} is declared by two methods differently")
            users.setdefault(key, []).append(name)
    return {k: r._replace(help=f"{r.help} [{', '.join(users[k])}]") for k, r in rules.items()}


#: Every parameter of a configuration: name -> Rule(default, check, help). The checker
#: returns the cleaned value or raises InputError. The CLI flags, TOML keys and sweep keys.
PARAMETERS = {**COMMON, **_method_options()}


@dataclass(frozen=True)
class RunConfig:
    """A validated configuration of ``n_runs`` runs of one method (see ``PARAMETERS``)."""

    values: dict = field(default_factory=dict)

    def __getattr__(self, name):
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def options(self):
        """The options object of its method (already checked: made without a problem)."""
        cls = methods.get(self.values["method"]).options
        return cls(**{k: self.values[k] for k in cls.rules()})

    def replace(self, **changes):
        return make_config({**self.values, **changes})

    def to_toml(self):
        return "\n".join(f"{k} = {_toml_value(v)}" for k, v in self.values.items()) + "\n"


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def check_option(key, value, name=None):
    """Check one shared parameter by its rule in ``COMMON`` (named ``name``, default ``key``):
    the one rule for that parameter, whether it comes from a configuration or a keyword of
    the Python API. A method's own options are checked by its options class."""
    return COMMON[key].check(key if name is None else name, value)


def make_config(values, *, problems=None, prefix=""):
    """Validate a dict of parameters (unknown keys, types, ranges, cross-checks) all at once.

    Returns
    -------
    RunConfig
    """
    p = problems or _validate.Problems()
    clean = {}
    for key in values:
        if key not in PARAMETERS:
            p.add(f"{prefix}{key}: unknown parameter (known: {', '.join(PARAMETERS)})")
    for key, (default, check, _) in PARAMETERS.items():
        raw = values.get(key, default)
        try:
            clean[key] = check(prefix + key, raw)
        except ValueError as exc:
            p.add(str(exc))
    if not p.messages:
        _cross_check(clean, p, prefix)
    if problems is None:
        p.raise_if_any()
    return RunConfig(clean)


def _cross_check(c, p, prefix):
    for key, units in (("teacher_v", c["M"]), ("student_v", c["K"])):
        if isinstance(c[key], tuple) and len(c[key]) != units:
            p.add(
                f"{prefix}{key} must have {units} entries ({'M' if key == 'teacher_v' else 'K'}),"
                f" got {len(c[key])}"
            )
    if c["teacher"] == "orthonormal" and c["M"] > c["d"]:
        p.add(f"{prefix}M must be <= d for an orthonormal teacher, got M={c['M']}, d={c['d']}")
    methods.get(c["method"]).check(c, p, prefix)


def load_toml(path):
    """Read a TOML file of parameters (flat keys, as in ``PARAMETERS``)."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


#: Parameters that may differ between the runs of one kernel call (they only change arrays);
#: runs that agree on all the others share a kernel shape and can be batched together.
PER_RUN = (
    "lr",
    "label_noise",
    "seed",
    "init_scale",
    "init_overlap",
    "student_v",
    "teacher",
    "teacher_v",
    "teacher_seed",
    "n_runs",
)


def batch_key(cfg):
    """What runs must share to go through one kernel call."""
    return tuple((k, cfg.values[k]) for k in PARAMETERS if k not in PER_RUN)


def time_grid(cfgs):
    """The recording grid of a configuration, or the one grid shared by several (a sweep).

    ``n_times`` log-spaced times up to ``t_max``. When online SGD or GD is among the
    configurations, every time is a whole number of steps for each of their ``d`` (a multiple
    of ``1 / gcd(d)``), so every run records its state at exactly the times the grid says, and
    times closer than that step are kept once. Flow and ODE runs record at any time.
    """
    from .times import common_steps_per_unit, recording_times

    cfgs = [cfgs] if isinstance(cfgs, RunConfig) else list(cfgs)
    c = cfgs[0]
    discrete = [o.d for o in cfgs if methods.get(o.method).discrete]
    return recording_times(
        c.t_max, c.n_times, common_steps_per_unit(discrete) if discrete else None
    )


def networks(cfgs, replicas):
    """Teacher and student initialisations, one per run.

    Run i is replica ``replicas[i]`` of ``cfgs[i]``: its student comes from the stream
    ``(cfg.seed, replica)`` and its teacher from ``cfg.teacher_seed`` (shared by all replicas).

    Returns
    -------
    W0 (n, K, d), v0 (n, K), W_teacher (n, M, d), v_teacher (n, M)
    """
    n = len(cfgs)
    c0 = cfgs[0]
    ids = np.asarray(replicas, dtype=np.int64)
    if ids.shape != (n,) or (n and ids.min() < 0):
        raise InputError(f"replicas must be {n} integers >= 0, got {replicas!r}")
    W0, v0 = np.empty((n, c0.K, c0.d)), np.empty((n, c0.K))
    Wt, vt = np.empty((n, c0.M, c0.d)), np.empty((n, c0.M))
    teachers = {}
    students = {}  # per configuration: its checked scale, seed and v0 (checks once, not per run)
    for i, (c, r) in enumerate(zip(cfgs, ids.tolist())):
        key = (c.teacher, c.teacher_v, c.teacher_seed)
        if key not in teachers:
            teachers[key] = make_teacher(
                c.d, c.M, kind=c.teacher, v=_arr(c.teacher_v), seed=c.teacher_seed
            )
        Wt[i], vt[i] = teachers[key]
        if id(c) in students:
            scale, seed, v0[i] = students[id(c)]
            W0[i] = student_weights(c.d, c.K, scale, seed, r)
        else:  # the configuration's first run: make_student checks its arguments
            W0[i], v0[i] = make_student(
                c.d, c.K, scale=c.init_scale, v=_arr(c.student_v), seed=c.seed, run_id=r
            )
            students[id(c)] = (float(c.init_scale), int(c.seed), v0[i].copy())
        if c.init_overlap:
            k = min(c.K, c.M)
            W0[i, :k] += c.init_overlap * Wt[i, :k]
    return W0, v0, Wt, vt


#: Numbers of first-layer weights ((K + M) * d per run) built at a time by
#: :func:`initial_order_parameters`: many runs of a large d are done a slice at a time.
_START_CHUNK = 2**22


def initial_order_parameters(cfgs, replicas):
    """The order parameters of the very networks runs start from (the start of their ODE).

    Run i is replica ``replicas[i]`` of ``cfgs[i]``, built by :func:`networks`; its overlaps
    are :func:`fastquad.closed_form.order_parameters` of those weights, the very numbers the
    ``ode`` method starts from. The runs must share K and M; d may differ (the overlaps do
    not depend on it), and many runs are built a slice at a time (a few tens of MB of weights).

    Returns
    -------
    Q0 (n, K, K), R0 (n, K, M), v0 (n, K), T (n, M, M), v_teacher (n, M)
    """
    cfgs = list(cfgs)
    n = len(cfgs)
    ids = np.asarray(replicas, dtype=np.int64)
    if ids.shape != (n,):
        raise InputError(f"replicas must be {n} integers >= 0, got {replicas!r}")
    if not n:
        raise InputError("initial_order_parameters: no runs given")
    K, M = cfgs[0].K, cfgs[0].M
    if any(c.K != K or c.M != M for c in cfgs):
        raise InputError("initial_order_parameters: the runs must share K and M")
    Q0, R0, v0 = np.empty((n, K, K)), np.empty((n, K, M)), np.empty((n, K))
    T, vt = np.empty((n, M, M)), np.empty((n, M))
    by_d = {}
    for i, c in enumerate(cfgs):
        by_d.setdefault(c.d, []).append(i)
    for d, rows in by_d.items():
        step = max(1, _START_CHUNK // ((K + M) * d))
        for lo in range(0, len(rows), step):
            sel = rows[lo : lo + step]
            W0, v0_sel, Wt, vt_sel = networks([cfgs[i] for i in sel], ids[sel])
            v0[sel], vt[sel] = v0_sel, vt_sel
            for j, i in enumerate(sel):
                Q0[i], R0[i], T[i] = order_parameters(W0[j], Wt[j])
    return Q0, R0, v0, T, vt


def _arr(v):
    return np.array(v) if isinstance(v, tuple) else v


def run(cfg, *, run_ids=None, num_threads=None, force=False, progress=False):
    """Run the ``n_runs`` runs of a configuration (or the replicas ``run_ids``) -> Result.

    Refused before anything runs (:mod:`fastquad.budget`) when the runs cannot fit in this
    machine's memory, or would take longer than ``budget.MAX_SECONDS`` unless ``force``.
    With ``progress``, a call that runs for more than a few seconds shows a progress bar on
    stderr (:mod:`fastquad.progress`); the numbers are the same.
    """
    from .budget import check_memory, check_time

    n = cfg.n_runs if run_ids is None else len(run_ids)
    threads = num_threads or os.cpu_count() or 1
    check_memory(cfg, n, len(time_grid(cfg)), threads)
    check_time(cfg, n, threads, force=force)
    ids = np.arange(cfg.n_runs) if run_ids is None else np.asarray(run_ids, dtype=np.int64)
    return run_many([cfg] * len(ids), ids, num_threads=num_threads, progress=progress)


def run_many(cfgs, replicas, *, times=None, num_threads=None, progress=False):
    """One kernel call for runs that share a kernel shape (``batch_key``).

    Parameters
    ----------
    cfgs : list of RunConfig, length n
        The configuration of each run; they may differ only in ``PER_RUN`` parameters.
    replicas : array of int, shape (n,)
        Replica index of each run within its configuration (its stream is ``(seed, replica)``).
    times : array, optional
        Recording times (default: :func:`time_grid` of the configuration). A sweep passes its
        one shared grid, on which every run records exactly.

    Returns
    -------
    Result with n runs, in the given order.
    """
    c = cfgs[0]
    key = batch_key(c)
    if any(batch_key(o) != key for o in {id(o): o for o in cfgs[1:]}.values()):
        raise InputError(
            f"run_many: the configurations differ in more than the per-run parameters {PER_RUN}"
        )
    ids = np.asarray(replicas, dtype=np.int64)
    W0, v0, Wt, vt = networks(cfgs, ids)
    lr = np.array([o.lr for o in cfgs])
    sigma = np.array([o.label_noise for o in cfgs])
    seeds = np.array([o.seed for o in cfgs], dtype=np.int64)
    common = dict(
        times=time_grid(c) if times is None else times,
        train_second_layer=c.train_second_layer,
        activation=c.activation,
        teacher_activation=c.teacher_activation,
        max_error=c.max_error,
        num_threads=num_threads,
        progress=progress,
    )
    return methods.get(c.method).run(c, W0, v0, Wt, vt, lr, sigma, seeds, ids, common)


def fields():
    """The dataclass-free view used by docs: (name, default, help)."""
    return [(k, d, h) for k, (d, _, h) in PARAMETERS.items()]


__all__ = [
    "RunConfig",
    "PARAMETERS",
    "PER_RUN",
    "make_config",
    "load_toml",
    "networks",
    "initial_order_parameters",
    "run",
    "run_many",
    "batch_key",
    "time_grid",
    "fields",
]
