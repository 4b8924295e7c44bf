"""The HDF5 results layout (version 1), written with h5py and readable by xarray.

Every variable has a leading ``run`` dimension; dimension names are HDF5 dimension scales, so
``xarray.open_dataset(path, engine="h5netcdf")`` labels them. The variables, their dimensions
and the file attributes are declared once, in :mod:`fastquad.schema` (rendered in
``docs/file-format.md``); per-run parameters (lr, label_noise, seed, ...) are 1-D datasets
along ``run``, loaded by xarray as coordinates. Only numbers and strings are stored: nothing is
ever unpickled or evaluated from a file. Curves are chunked ``(runs, time)`` and
gzip-compressed.

Every file records the networks' activations, resolved, as the attributes ``activation`` and
``teacher_activation`` (``mixed`` for a sweep whose runs differ in them, each run's then a
per-run coordinate); a file written before they were recorded is read as quadratic.

A file is written to a temporary file beside it and renamed into place when complete, so a
failed write (a full disk) leaves the previous file as it was and no partial file. Reading
checks the layout first: a file that is not a fastquad results file, an incomplete one or a
damaged one is an :class:`~fastquad.errors.InputError` naming the file.
"""

import json
import platform
from pathlib import Path

import h5py
import numpy as np

from . import __version__, files, schema
from .activations import SAME
from .errors import InputError
from .result import STATUS_NAMES, STATUS_PENDING, Result
from .schema import LAYOUT_VERSION, LEGACY_ACTIVATION, MIXED

_FLAG_VALUES = np.array(sorted(STATUS_NAMES), dtype=np.int8)
_FLAG_MEANINGS = " ".join(STATUS_NAMES[k] for k in sorted(STATUS_NAMES))


def versions():
    """Versions of the libraries a result depends on (provenance)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("fastquad", "numpy", "numba", "h5py", "dask", "distributed"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def activation_attrs(activation=None, teacher_activation=None):
    """The attributes ``activation`` and ``teacher_activation`` as a file records them.

    A teacher's ``"same"`` (or None) is the student's activation, and a student's None is the
    quadratic network of the files written before activations were recorded; ``"mixed"`` (a
    sweep whose runs differ) is kept.

    Returns
    -------
    dict with the keys ``activation`` and ``teacher_activation``
    """
    s = LEGACY_ACTIVATION if activation is None else _text(activation)
    t = s if teacher_activation is None or _text(teacher_activation) == SAME else teacher_activation
    return {"activation": s, "teacher_activation": _text(t)}


def run_activations(attrs, coords, n_runs):
    """Each run's (student, teacher) activation names: the per-run coordinates of those names
    where a file has them (a sweep over activations), else its attributes (quadratic when it
    has none).

    Parameters
    ----------
    attrs : mapping
        The file's (or dataset's) attributes.
    coords : mapping of name -> array (n_runs,)
        Its per-run coordinates (only ``activation`` and ``teacher_activation`` are read).
    n_runs : int

    Returns
    -------
    student, teacher : ndarray of str, shape (n_runs,)
    """
    named = activation_attrs(attrs.get("activation"), attrs.get("teacher_activation"))
    out = []
    for key in ("activation", "teacher_activation"):
        if key in coords:
            out.append(np.array([_text(x) for x in np.asarray(coords[key]).ravel()], dtype=str))
        else:
            out.append(np.full(n_runs, named[key]))
    student, teacher = out
    if "activation" in coords and "teacher_activation" not in coords:
        if attrs.get("teacher_activation") in (None, SAME, MIXED):
            teacher = student.copy()  # the teacher's follows the student's
    return student, teacher


def activation_phrase(student, teacher):
    """'relu student, quadratic teacher' or 'erf student and teacher': what figures and
    ``fastquad info`` say; per-run arrays give every name that occurs ('quadratic/relu
    student and teacher' for a sweep over the student's activation, the teacher's the same)."""
    s = np.atleast_1d(np.asarray(student, dtype=str))
    t = np.atleast_1d(np.asarray(teacher, dtype=str))
    names_s = "/".join(dict.fromkeys(s.tolist()))
    if s.shape == t.shape and (s == t).all():
        return f"{names_s} student and teacher"
    return f"{names_s} student, {'/'.join(dict.fromkeys(t.tolist()))} teacher"


def _scale(f, name, values):
    ds = f.create_dataset(name, data=values)
    ds.make_scale(name)
    return ds


def _attach(ds, dims, f):
    for i, name in enumerate(dims):
        ds.dims[i].attach_scale(f[name])


def create(
    path,
    *,
    n_runs,
    times,
    d,
    K,
    M,
    method,
    per_run=None,
    attrs=None,
    train_error=False,
    weights=False,
    messages=False,
    order_parameters=True,
    mode="w-",
):
    """Create a results file with every array preallocated (status pending).

    Parameters
    ----------
    path : str, Path or file object
        Where to write; a :class:`fastquad.files.GuardedFile` keeps a full disk from
        reaching HDF5.
    n_runs : int
    times : array, shape (n_times,)
    d, K, M : int
    method : str
    per_run : dict of name -> array (n_runs,)
        Per-run parameters, stored as coordinates along ``run``.
    attrs : dict
        Scalar attributes (numbers and strings).
    train_error, weights, messages, order_parameters : bool
        Whether to store the training loss, the final weights, per-run failure messages and
        the order parameters ``Q``, ``R``, ``v`` at every recorded time.
    mode : str
        h5py mode: ``"w-"`` fails if the file exists, ``"w"`` overwrites.

    Returns
    -------
    h5py.File, open for writing.
    """
    f = h5py.File(path, mode)
    try:
        _fill(
            f,
            n_runs=n_runs,
            times=times,
            d=d,
            K=K,
            M=M,
            method=method,
            per_run=per_run,
            attrs=attrs,
            train_error=train_error,
            weights=weights,
            messages=messages,
            order_parameters=order_parameters,
        )
    except BaseException:
        f.close()  # an open file would be closed (and written) again at interpreter exit
        raise
    return f


def _fill(
    f,
    *,
    n_runs,
    times,
    d,
    K,
    M,
    method,
    per_run,
    attrs,
    train_error,
    weights,
    messages,
    order_parameters,
):
    n_t = len(times)
    sizes = {
        "run": n_runs,
        "time": n_t,
        "student": K,
        "student_b": K,
        "teacher": M,
        "teacher_b": M,
        "input": d,
    }
    stored = {
        None: True,
        "train_error": train_error,
        "order_parameters": order_parameters,
        "weights": weights,
        "messages": messages,
    }
    _scale(f, "run", np.arange(n_runs, dtype=np.int64))
    _scale(f, "time", np.asarray(times, dtype=np.float64))
    for name in ("student", "student_b", "teacher", "teacher_b") + (("input",) if weights else ()):
        _scale(f, name, np.arange(sizes[name], dtype=np.int64))
    for dim in schema.DIMENSIONS.values():
        if dim.name in f:
            f[dim.name].attrs["long_name"] = dim.doc
    # level 1: most of the size reduction of gzip at a fraction of the client CPU it costs
    kw = dict(compression="gzip", compression_opts=1, shuffle=True, fillvalue=np.nan)
    for var in schema.variables():
        if not stored[var.group]:
            continue
        shape = tuple(sizes[dim] for dim in var.dims)
        if var.dtype == "float64":
            # chunks of whole curves (or weights) for a block of runs: reading one run, or all
            # runs at one time, touches few chunks; a chunk stays well under 1 MiB
            chunks = None
            if "time" in var.dims or "input" in var.dims:
                rows = max(1, min(n_runs, 65536 // max(1, int(np.prod(shape[1:])))))
                chunks = (rows,) + shape[1:]
            ds = f.create_dataset(var.name, shape=shape, dtype=np.float64, chunks=chunks, **kw)
        elif var.dtype == "int8":  # the status: every run pending until stored
            ds = f.create_dataset(var.name, data=np.full(shape, STATUS_PENDING, dtype=np.int8))
            ds.attrs["flag_values"] = _FLAG_VALUES
            ds.attrs["flag_meanings"] = _FLAG_MEANINGS
        else:
            ds = f.create_dataset(var.name, shape=shape, dtype=h5py.string_dtype())
        ds.attrs["long_name"] = var.doc
        _attach(ds, var.dims, f)
    coord_names = []
    for name, values in (per_run or {}).items():
        values = np.asarray(values)
        if values.dtype.kind in "OU":
            ds = f.create_dataset(name, data=values.astype(object), dtype=h5py.string_dtype())
        else:
            ds = f.create_dataset(name, data=values)
        _attach(ds, ("run",), f)
        coord_names.append(name)
    if coord_names:
        # the CF "coordinates" attribute makes xarray load the per-run parameters as coordinates
        for name in ("eps_g", "status", "t_stop"):
            f[name].attrs["coordinates"] = " ".join(coord_names)
    f.attrs["layout_version"] = LAYOUT_VERSION
    f.attrs["fastquad_version"] = __version__
    f.attrs["method"] = method
    f.attrs["d"], f.attrs["K"], f.attrs["M"] = int(d), int(K), int(M)
    f.attrs["versions"] = json.dumps(versions())
    for k, val in (attrs or {}).items():
        f.attrs[k] = val


def result_arrays(res):
    """The per-run arrays of a Result, by dataset name (None where absent)."""
    return {v.name: getattr(res, v.field) for v in schema.variables() if v.field is not None}


def write_arrays(f, index, arrays):
    """Store per-run arrays at run positions ``index`` (n,) of an open results file.

    Arrays may be smaller than the file's padded unit dimensions (a sweep over K stores every
    run in K_max slots, NaN beyond its own K). The status is written last, so a run counts as
    stored only once its data are.
    """
    index = np.asarray(index, dtype=np.int64)
    order = np.argsort(index, kind="stable")
    idx = index[order]
    # a run given twice is stored once, as given last (HDF5 needs increasing indices)
    last = np.r_[idx[1:] != idx[:-1], True]
    order, idx = order[last], idx[last]
    # h5py fancy indexing needs increasing indices; contiguous blocks are written as slices
    sel = slice(int(idx[0]), int(idx[-1]) + 1) if np.all(np.diff(idx) == 1) else idx

    def put(name):
        val = arrays.get(name)
        if name not in f or val is None:
            return
        val = np.asarray(val)[order]
        ds = f[name]
        tail = tuple(slice(0, s) for s in val.shape[1:])
        if val.dtype.kind == "U":
            val = val.astype(object)
        ds[(sel,) + tail] = val

    for var in schema.variables():
        if var.name != "status":
            put(var.name)
    f.flush()
    put("status")
    f.flush()


def write_runs(f, index, res):
    """Store the runs of a Result at positions ``index`` of an open results file."""
    write_arrays(f, index, result_arrays(res))


def save(path, res, *, attrs=None, weights=False, overwrite=False):
    """Write a whole :class:`Result` to a results file (the layout above).

    The file is written to a temporary file in the same folder, fsynced and renamed into
    place: an existing file is replaced only by a complete new one, never truncated.

    Raises
    ------
    InputError
        ``path`` exists and ``overwrite`` is false, is a folder, or its folder is missing or
        cannot be written.
    StorageError
        The file could not be written (e.g. no space left); the message says that the previous
        file is intact, or that nothing was written. No temporary file is left behind.
    """
    path = files.check_output(path, overwrite=overwrite, name="path")
    K = res.K
    M = res.v_teacher.shape[-1]
    d = int(res.attrs.get("d", res.W.shape[-1] if res.W is not None else 0))
    per_run = dict(res.coords)
    scal = {k: (int(v) if isinstance(v, (bool, np.bool_)) else v) for k, v in res.attrs.items()}
    scal.update(attrs or {})
    # the activations, resolved; runs that differ in them (a sweep's runs read back) keep
    # theirs as per-run coordinates and the attribute says mixed
    for key in ("activation", "teacher_activation"):
        if key in per_run:
            names = set(map(_text, np.asarray(per_run[key]).ravel()))
            scal[key] = names.pop() if len(names) == 1 else MIXED
    scal.update(activation_attrs(scal.get("activation"), scal.get("teacher_activation")))
    with (
        files.atomic_output(path, overwrite=overwrite, name="path") as tmp,
        files.guarded(tmp, create=True) as g,
    ):
        with create(
            g,
            n_runs=res.n_runs,
            times=res.t,
            d=d,
            K=K,
            M=M,
            method=res.method,
            per_run=per_run,
            attrs=scal,
            train_error=res.train_error is not None,
            weights=weights and res.W is not None,
            order_parameters=res.Q is not None,
            mode="w",
        ) as f:
            write_runs(f, np.arange(res.n_runs), res)


# ------------------------------------------------------------------ reading

#: Datasets every results file has, and the per-run ones among them (leading ``run`` axis).
REQUIRED = ("time", "run") + tuple(v.name for v in schema.variables(always=True))
_PER_RUN = tuple(schema.VARIABLES)
# what h5py, numpy and xarray raise on a damaged file
_READ_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError)


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def damaged(path, exc):
    """The :class:`InputError` for a file that failed to read with ``exc``."""
    return InputError(f"{path} is damaged and cannot be read ({_first_line(exc)})")


def check_layout(f, path):
    """Raise :class:`InputError` unless the open h5py file ``f`` is a complete results file."""
    if "layout_version" not in f.attrs:
        raise InputError(
            f"{path} is not a fastquad results file (it has no layout_version attribute)"
        )
    version = f.attrs["layout_version"]
    if np.ndim(version) != 0 or not np.issubdtype(np.asarray(version).dtype, np.integer):
        raise InputError(f"{path} is damaged: its layout_version is {version!r}, not a number")
    if int(version) > LAYOUT_VERSION:
        raise InputError(
            f"{path} has results layout {version}, newer than the layouts this "
            f"fastquad reads (up to {LAYOUT_VERSION}); update fastquad"
        )
    missing = [name for name in REQUIRED if not isinstance(f.get(name), h5py.Dataset)]
    missing += [f"attribute {name}" for name in ("method",) if name not in f.attrs]
    if missing:
        raise InputError(
            f"{path} is an incomplete fastquad results file (missing {', '.join(missing)})"
        )
    n = f["run"].shape[0] if f["run"].ndim == 1 else -1
    for name in _PER_RUN:
        if name in f and (not f[name].shape or f[name].shape[0] != n):
            raise InputError(
                f"{path} is damaged: {name} has shape {f[name].shape}, but the file has {n} runs"
            )
    if f["eps_g"].shape[1:] != f["time"].shape:
        raise InputError(
            f"{path} is damaged: eps_g has shape {f['eps_g'].shape} for {f['time'].shape[0]} times"
        )


def open_results(path):
    """Open a results file for reading (h5py), checked by :func:`check_layout`.

    Raises
    ------
    InputError
        No such file, not an HDF5 file, damaged, not a fastquad results file or incomplete;
        one line naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a results file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path} is damaged or not an HDF5 file ({_first_line(exc)})") from None
    try:
        check_layout(f, path)
    except InputError:
        f.close()
        raise
    except _READ_ERRORS as exc:
        f.close()
        raise damaged(path, exc) from None
    return f


def read(path):
    """Read a results file back into a :class:`Result` (with h5py only).

    Raises
    ------
    InputError
        The file is missing, not a fastquad results file, incomplete or damaged.
    """
    path = Path(path)
    f = open_results(path)
    try:
        with f:
            return _read(f)
    except InputError:
        raise
    except _READ_ERRORS as exc:
        raise damaged(path, exc) from None


def _read(f):
    params = {
        k: (v.decode() if isinstance(v, bytes) else v)
        for k, v in f.attrs.items()
        if k not in ("versions", "config")
    }
    params.update(activation_attrs(params.get("activation"), params.get("teacher_activation")))
    n = f["run"].shape[0]
    for name in f:
        ds = f[name]
        if (
            isinstance(ds, h5py.Dataset)
            and ds.ndim == 1
            and ds.shape[0] == n
            and schema.per_run_coordinate(name)
        ):
            params[name] = ds.asstr()[()] if h5py.check_string_dtype(ds.dtype) else ds[()]
    fields = {
        v.field: (f[v.name][()] if v.name in f else None)
        for v in schema.variables()
        if v.field is not None
    }
    return Result.from_params(params, method=str(params.pop("method")), t=f["time"][()], **fields)


def load(path, *, lazy=False):
    """Open a results file as a labelled :class:`xarray.Dataset` (engine h5netcdf).

    Dimensions ``run``, ``time``, ``student``, ``teacher``; per-run parameters are coordinates
    along ``run`` (a sweep over activations: ``activation`` and ``teacher_activation``); the
    file's attributes are the dataset's attributes, ``activation`` and ``teacher_activation``
    always among them (quadratic for a file written before they were recorded).

    Parameters
    ----------
    lazy : bool
        False (default): every array is read now and the file is closed, so damage anywhere
        in it is found here. True: arrays are read when used (large files); only the layout is
        checked now, and a damaged array raises when it is read.

    Raises
    ------
    InputError
        The file is missing, not a fastquad results file, incomplete or damaged.
    """
    import xarray as xr

    path = Path(path)
    open_results(path).close()
    try:
        ds = xr.open_dataset(path, engine="h5netcdf")
        ds.attrs.update(
            activation_attrs(ds.attrs.get("activation"), ds.attrs.get("teacher_activation"))
        )
        if not lazy:
            try:
                ds.load()
            finally:
                ds.close()
        return ds
    except _READ_ERRORS as exc:
        raise damaged(path, exc) from None
