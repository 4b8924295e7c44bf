"""The sweep file: fixed parameters plus axes, validated as a whole before anything runs.

A sweep file is TOML::

    [fixed]               # any parameter of fastquad.config.PARAMETERS (top-level keys work too)
    method = "sgd"
    d = 500
    n_runs = 8            # replicas (seeds) per grid point: replica r uses the stream (seed, r)

    [axes]                # combined as a product, in file order
    lr = [0.05, 0.1, 0.2]
    init_scale = [1e-3, 1e-1]

    [zip]                 # optional: lists of equal length varied together, as one more axis
    K = [1, 2, 4]
    M = [1, 2, 4]

Any parameter may be an axis, string-valued ones too (``activation = ["quadratic", "relu"]``,
``teacher_activation``, ``method``, ...): runs that differ in one go through different kernel
calls (:func:`fastquad.config.batch_key`).

    [sweep]               # optional settings
    chunk_runs = 64       # runs per Dask task (default: sized to a few seconds of work)
    final_weights = true  # also store each run's final weights (default false)
    order_parameters = true  # also store Q, R, v at every recorded time (default false)

Runs are numbered point-major: run ``i`` is replica ``i % n_runs`` of grid point
``i // n_runs``; points enumerate the product axes (last axis fastest), then the zip index.
Replicas of different points with the same ``seed`` share their random streams and initial
students (common random numbers: differences between points come from the parameters alone);
make ``seed`` an axis for independent draws.
"""

import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass

import numpy as np

from .. import _validate, methods
from ..activations import SAME
from ..budget import check_grid, grid_size
from ..config import PARAMETERS, initial_order_parameters, make_config, time_grid
from ..errors import InputError

#: All runs of a sweep share one time axis, so these cannot vary.
NOT_AXES = ("t_max", "n_times", "n_runs")
SWEEP_SETTINGS = {
    "chunk_runs": lambda n, x: _validate.integer(n, x, low=1),
    "final_weights": _validate.boolean,
    "order_parameters": _validate.boolean,
}
#: Settings that change what the results file holds: part of the sweep's identity on resume
#: (``chunk_runs`` only changes how the work is cut, so a resume may use another value).
STORED_SETTINGS = ("final_weights", "order_parameters")


@dataclass(frozen=True)
class Sweep:
    """A validated sweep.

    Attributes
    ----------
    text : str
        The sweep file as given (stored in the results file).
    fixed : dict
    axes : dict of name -> list
        Product axes, in order.
    zipped : dict of name -> list
        Zipped lists (one combined axis), possibly empty.
    settings : dict
        ``chunk_runs`` (or None), ``final_weights`` and ``order_parameters`` (bools).
    points : list of RunConfig
        One configuration per grid point.
    n_runs : int
        Replicas per point.
    digest : str
        sha256 of the canonical content (fixed, axes, zip, and the settings that change what
        is stored): identifies the sweep on resume.
    times : ndarray
        The recording times every run of the sweep records at, exactly
        (:func:`fastquad.config.time_grid` of all the points).
    """

    text: str
    fixed: dict
    axes: dict
    zipped: dict
    settings: dict
    points: list
    n_runs: int
    digest: str
    times: np.ndarray

    @property
    def total_runs(self):
        return len(self.points) * self.n_runs

    def run_config(self, run):
        """(RunConfig, replica) of run index ``run``."""
        point, replica = self.run_point(run)
        return self.points[point], replica

    def run_point(self, run):
        """(grid point index, replica) of run index ``run`` (runs are point-major)."""
        return divmod(int(run), self.n_runs)

    def run_configs(self, runs):
        """(list of RunConfig, replicas array) of the run indices ``runs``: what
        :func:`fastquad.config.networks` and :func:`fastquad.config.initial_order_parameters`
        take to rebuild those runs."""
        pairs = [self.run_config(r) for r in np.asarray(runs, dtype=np.int64).ravel()]
        return [c for c, _ in pairs], np.array([r for _, r in pairs], dtype=np.int64)

    def initial_order_parameters(self, run):
        """(Q0, R0, v0) of run index ``run``: its start, rebuilt from the sweep's seeds.

        The sweep only says which configuration and replica the run is; the start itself is
        :func:`fastquad.config.initial_order_parameters` (for many runs at once, call that with
        :meth:`run_configs`).
        """
        Q0, R0, v0, _, _ = initial_order_parameters(*self.run_configs([run]))
        return Q0[0], R0[0], v0[0]

    def axis_names(self):
        return list(self.axes) + list(self.zipped)

    def run_coordinates(self):
        """Per-run coordinate arrays: every axis, ``replica`` and the effective ``seed``.

        List-valued axis values (per-unit second layers) are stored as the index into the axis
        (``<name>_index``); their values go in the file's attributes. When ``activation`` or
        ``teacher_activation`` is an axis, both are coordinates, with each run's resolved names
        (a teacher's ``same`` is the student's activation).
        """
        n = self.n_runs
        coords = {}
        for name in self.axis_names():
            vals = [p.values[name] for p in self.points]
            if any(isinstance(v, tuple) for v in vals):
                axis = self.axes.get(name, self.zipped.get(name))
                idx = [next(i for i, a in enumerate(axis) if _same(a, v)) for v in vals]
                coords[f"{name}_index"] = np.repeat(np.array(idx, dtype=np.int64), n)
            elif isinstance(vals[0], str):
                coords[name] = np.repeat(np.array(vals, dtype=object), n)
            elif isinstance(vals[0], bool):
                coords[name] = np.repeat(np.array(vals, dtype=np.int8), n)
            else:
                coords[name] = np.repeat(np.array(vals), n)
        if {"activation", "teacher_activation"} & set(self.axis_names()):
            pairs = [point_activations(p) for p in self.points]
            for i, name in enumerate(("activation", "teacher_activation")):
                coords[name] = np.repeat(np.array([a[i] for a in pairs], dtype=object), n)
        coords["replica"] = np.tile(np.arange(n, dtype=np.int64), len(self.points))
        if "seed" not in coords:
            coords["seed"] = np.repeat(np.array([p.seed for p in self.points], dtype=np.int64), n)
        for name in ("K", "M"):
            if name not in coords:
                coords[name] = np.repeat(np.array([p.values[name] for p in self.points]), n)
        return coords


def point_activations(cfg):
    """(student, teacher) activation names of a configuration, the teacher's ``same``
    resolved to the student's."""
    s = cfg.values["activation"]
    t = cfg.values["teacher_activation"]
    return s, s if t == SAME else t


def _same(a, b):
    return tuple(a) == tuple(b) if isinstance(a, (list, tuple)) else a == b


def load_sweep(path):
    """Read and validate a sweep file (all problems reported at once)."""
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
    except OSError as exc:
        raise InputError(f"sweep file: cannot read {path}: {exc.strerror}") from None
    return parse_sweep(text, source=str(path))


def parse_sweep(text, source="sweep"):
    """Validate a sweep given as TOML text; returns a :class:`Sweep`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{source}: not valid TOML: {exc}") from None
    if not any(not isinstance(v, dict) for v in doc.values()) and not any(
        doc.get(section) for section in ("fixed", "axes", "zip")
    ):
        raise InputError(
            f"{source}: the sweep file sets no parameter and no axis (it is "
            "empty); give at least [fixed] or [axes]"
        )
    p = _validate.Problems()
    fixed = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    for section in doc:
        if isinstance(doc[section], dict) and section not in ("fixed", "axes", "zip", "sweep"):
            p.add(f"[{section}]: unknown section (known: fixed, axes, zip, sweep)")
    for k, v in doc.get("fixed", {}).items():
        if k in fixed:
            p.add(f"fixed.{k}: given both at the top level and in [fixed]")
        fixed[k] = v
    axes = dict(doc.get("axes", {}))
    zipped = dict(doc.get("zip", {}))
    settings = {}
    for k, v in doc.get("sweep", {}).items():
        if k not in SWEEP_SETTINGS:
            p.add(f"sweep.{k}: unknown setting (known: {', '.join(SWEEP_SETTINGS)})")
        else:
            settings[k] = p.check(SWEEP_SETTINGS[k], f"sweep.{k}", v)
    settings.setdefault("chunk_runs", None)
    settings.setdefault("final_weights", False)
    settings.setdefault("order_parameters", False)

    for k, val in fixed.items():
        if k not in PARAMETERS:
            p.add(f"fixed.{k}: unknown parameter (known: {', '.join(PARAMETERS)})")
        else:
            p.check(PARAMETERS[k][1], f"fixed.{k}", val)
    for section, table in (("axes", axes), ("zip", zipped)):
        for k, vals in table.items():
            where = f"{section}.{k}"
            if k not in PARAMETERS:
                p.add(f"{where}: unknown parameter (known: {', '.join(PARAMETERS)})")
                continue
            if k in NOT_AXES:
                p.add(
                    f"{where}: {k} cannot be swept (all runs of a sweep share one time axis "
                    "and one number of replicas); use separate sweeps"
                )
                continue
            if k in fixed:
                p.add(f"{where}: also given as a fixed parameter")
            if k in axes and k in zipped and section == "zip":
                p.add(f"{where}: also an axis in [axes]")
            if not isinstance(vals, list) or not vals:
                p.add(f"{where} must be a non-empty list of values, got {vals!r}")
                continue
            check = PARAMETERS[k][1]
            for i, val in enumerate(vals):
                p.check(check, f"{where}[{i}]", val)
            if section == "axes" and len({json.dumps(v) for v in vals}) != len(vals):
                p.add(f"{where}: repeated values")
    lengths = {k: len(v) for k, v in zipped.items() if isinstance(v, list)}
    if len(set(lengths.values())) > 1:
        p.add(f"zip: lists must have equal lengths, got {lengths}")
    elif lengths:
        combos = [json.dumps([zipped[k][i] for k in lengths]) for i in range(max(lengths.values()))]
        if len(set(combos)) != len(combos):
            p.add("zip: repeated combinations of values")
    if p.messages:
        p.raise_if_any()
    # the size of the grid is known before it is built: a file (or a results file's stored
    # config) describing billions of points is refused at once, not enumerated
    n_replicas = fixed.get("n_runs", PARAMETERS["n_runs"][0])
    check_grid(grid_size(axes, zipped), n_replicas if isinstance(n_replicas, int) else 1)

    base = {k: v for k, v in fixed.items()}
    axis_items = list(axes.items())
    n_zip = len(next(iter(zipped.values()))) if zipped else 1
    points, seen = [], set()
    for combo in itertools.product(*[vals for _, vals in axis_items]):
        for z in range(n_zip):
            values = dict(base)
            values.update({k: v for (k, _), v in zip(axis_items, combo)})
            values.update({k: vals[z] for k, vals in zipped.items()})
            sub = _validate.Problems()
            cfg = make_config(values, problems=sub)
            for msg in sub.messages:
                label = ", ".join(f"{k}={values[k]}" for k in list(axes) + list(zipped))
                full = f"{msg} (at {label})" if label else msg
                if msg not in seen:
                    seen.add(msg)
                    p.add(full)
            points.append(cfg)
    p.raise_if_any()
    _check_distinct_activations(points, list(axes) + list(zipped), p)
    times = _shared_times(points)
    n_runs = points[0].n_runs
    content = {"fixed": fixed, "axes": axes, "zip": zipped}
    stored = {k: settings[k] for k in STORED_SETTINGS if settings[k]}
    if stored:  # only when set, so files made before these settings existed still resume
        content["stored"] = stored
    canon = json.dumps(content, sort_keys=True)
    digest = hashlib.sha256(canon.encode()).hexdigest()
    return Sweep(
        text=text,
        fixed=fixed,
        axes=axes,
        zipped=zipped,
        settings=settings,
        points=points,
        n_runs=n_runs,
        digest=digest,
        times=times,
    )


def _check_distinct_activations(points, names, p):
    """Grid points that differ only in writing the teacher's activation as ``same`` or by its
    name are the same runs twice (and one grid cell twice in the file): refused."""
    if not {"activation", "teacher_activation"} & set(names):
        return
    seen = {}
    for i, cfg in enumerate(points):
        s, t = point_activations(cfg)
        key = json.dumps(
            {**cfg.values, "activation": s, "teacher_activation": t}, sort_keys=True, default=str
        )
        if key in seen:
            j = seen[key]
            label = ", ".join(f"{k}={points[j].values[k]}" for k in names)
            again = ", ".join(f"{k}={cfg.values[k]}" for k in names)
            p.add(
                f"axes: the grid points ({label}) and ({again}) are the same runs "
                f"(teacher_activation = same is the student's activation, {s}); "
                "list each pair of activations once"
            )
            break
        seen[key] = i
    p.raise_if_any()


def _shared_times(points):
    """The one recording grid of every run (``config.time_grid`` of all the points)."""
    discrete = sorted({c.d for c in points if methods.get(c.method).discrete})
    g = math.gcd(*discrete) if discrete else None
    t_max = points[0].t_max
    if len(discrete) > 1 and t_max * g < 1:
        raise InputError(
            f"t_max must be >= {1 / g:g} in this sweep, got {t_max:g}: every run "
            f"records at the same times, and d = {', '.join(map(str, discrete))} "
            f"take whole steps together only every 1/gcd(d) = {1 / g:g}"
        )
    return time_grid(points)
