"""The results schema: every dimension and variable of a result, declared once.

The HDF5 writer and reader (:mod:`fastquad.store`), :meth:`Result.to_xarray`, ``fastquad info``
and the file-format page of the documentation (``docs/file-format.md``, made by
:func:`markdown`) are all derived from these tables, so they cannot disagree.

>>> from fastquad import schema
>>> schema.VARIABLES["eps_g"].dims
('run', 'time')
>>> [v.name for v in schema.variables(always=True)]
['eps_g', 'T', 'v_teacher', 't_stop', 'status']
"""

from dataclasses import dataclass

#: Version of the layout a file declares in its ``layout_version`` attribute.
LAYOUT_VERSION = 1


@dataclass(frozen=True)
class Dimension:
    """A dimension of the results, stored as an HDF5 dimension scale of the same name."""

    name: str
    size: str
    doc: str


@dataclass(frozen=True)
class Variable:
    """A variable of the results.

    Attributes
    ----------
    name : str
        Dataset name in the file, and variable name in xarray.
    dims : tuple of str
        Its dimensions (names in :data:`DIMENSIONS`); every variable has ``run`` first.
    dtype : str
        ``"float64"``, ``"int8"`` or ``"str"``.
    doc : str
        What it holds (the file's ``long_name`` attribute and the documentation).
    field : str or None
        The :class:`~fastquad.result.Result` field that holds it (None: files only).
    when : str
        When a file has it: ``"always"``, or the condition in words.
    group : str or None
        The writer's switch that stores it (``train_error``, ``order_parameters``,
        ``weights``, ``messages``); None: always stored.
    """

    name: str
    dims: tuple
    dtype: str
    doc: str
    field: str | None
    when: str = "always"
    group: str | None = None


_DIMENSIONS = (
    Dimension("run", "n_runs", "run index 0 .. n_runs - 1"),
    Dimension("time", "n_times", "recording times t = step / d"),
    Dimension("student", "K", "student unit j (rows of Q, R, v)"),
    Dimension("student_b", "K", "student unit k (columns of Q)"),
    Dimension("teacher", "M", "teacher unit n (columns of R, rows of T, v_teacher)"),
    Dimension("teacher_b", "M", "teacher unit m (columns of T)"),
    Dimension("input", "d", "input coordinate (columns of W_final)"),
)

# the order is the order of writing: the status comes last, so a run counts as stored only
# once its data are
_VARIABLES = (
    Variable(
        "eps_g",
        ("run", "time"),
        "float64",
        "generalisation error (exact, label noise excluded); NaN after a run diverged",
        "eps_g",
    ),
    Variable(
        "train_error",
        ("run", "time"),
        "float64",
        "mean training loss on the fixed dataset",
        "train_error",
        "method gd",
        group="train_error",
    ),
    Variable(
        "Q",
        ("run", "time", "student", "student_b"),
        "float64",
        "student overlaps Q = W W^T / d",
        "Q",
        "order parameters stored (simulate; sweeps with order_parameters = true)",
        group="order_parameters",
    ),
    Variable(
        "R",
        ("run", "time", "student", "teacher"),
        "float64",
        "student-teacher overlaps R = W W*^T / d",
        "R",
        "as Q",
        group="order_parameters",
    ),
    Variable(
        "v",
        ("run", "time", "student"),
        "float64",
        "student second layer",
        "v",
        "as Q",
        group="order_parameters",
    ),
    Variable(
        "T",
        ("run", "teacher", "teacher_b"),
        "float64",
        "teacher overlaps T = W* W*^T / d (constant in time)",
        "T",
    ),
    Variable("v_teacher", ("run", "teacher"), "float64", "teacher second layer v*", "v_teacher"),
    Variable(
        "W_final",
        ("run", "student", "input"),
        "float64",
        "final first layer",
        "W",
        "final weights stored (--save-weights; final_weights = true)",
        group="weights",
    ),
    Variable(
        "v_final",
        ("run", "student"),
        "float64",
        "final second layer",
        "v_final",
        "as W_final",
        group="weights",
    ),
    Variable(
        "t_stop",
        ("run",),
        "float64",
        "time at which a diverged run was stopped (NaN for the others)",
        "t_stop",
    ),
    Variable(
        "message",
        ("run",),
        "str",
        "why a run failed (empty unless its status is failed)",
        None,
        "sweeps",
        group="messages",
    ),
    Variable(
        "status",
        ("run",),
        "int8",
        "-1 pending, 0 done, 1 diverged, 2 failed (flag_values, flag_meanings)",
        "status",
    ),
)

DIMENSIONS = {d.name: d for d in _DIMENSIONS}
VARIABLES = {v.name: v for v in _VARIABLES}

#: The activations of a file that does not record them (written before they were recorded):
#: every network was quadratic then.
LEGACY_ACTIVATION = "quadratic"
#: The ``activation`` or ``teacher_activation`` attribute of a sweep whose runs differ in it
#: (each run's is then a per-run coordinate of that name).
MIXED = "mixed"

#: File attributes every results file has, and what they hold.
ATTRIBUTES = {
    "layout_version": f"this layout's version ({LAYOUT_VERSION})",
    "fastquad_version": "the fastquad that wrote the file",
    "method": "sgd, gd, flow or ode (mixed: a sweep over methods)",
    "d": "input dimension",
    "K": "student units (the largest, for a sweep over K)",
    "M": "teacher units (the largest, for a sweep over M)",
    "activation": "student activation: quadratic, linear, relu or erf (mixed: a sweep over "
    "activations, each run's in the coordinate of this name); absent in files written before "
    "activations were recorded, which are read as quadratic",
    "teacher_activation": "teacher activation, resolved (never same): as activation",
    "versions": "JSON: versions of Python, numpy, numba, h5py, dask",
}


def variables(*, always=None):
    """The variables in writing order; ``always=True`` only those every file has."""
    return [v for v in _VARIABLES if always is None or (v.when == "always") == always]


def per_run_coordinate(name):
    """Whether a 1-D ``run`` dataset called ``name`` is a per-run parameter (a coordinate)."""
    return name not in VARIABLES and name not in DIMENSIONS


def markdown():
    """The tables of ``docs/file-format.md``: dimensions, variables and attributes."""
    lines = ["| dimension | size | meaning |", "|---|---|---|"]
    lines += [f"| `{d.name}` | {d.size} | {d.doc} |" for d in _DIMENSIONS]
    lines += ["", "| variable | dimensions | dtype | meaning | present |", "|---|---|---|---|---|"]
    lines += [
        f"| `{v.name}` | ({', '.join(v.dims)}) | {v.dtype} | {v.doc} | {v.when} |"
        for v in _VARIABLES
    ]
    lines += ["", "| attribute | meaning |", "|---|---|"]
    lines += [f"| `{k}` | {doc} |" for k, doc in ATTRIBUTES.items()]
    return "\n".join(lines)


__all__ = [
    "LAYOUT_VERSION",
    "Dimension",
    "Variable",
    "DIMENSIONS",
    "VARIABLES",
    "ATTRIBUTES",
    "LEGACY_ACTIVATION",
    "MIXED",
    "variables",
    "per_run_coordinate",
    "markdown",
]
