"""The HDF5 results layout (version 1), written with h5py and readable by xarray.

Layout of a results file (every array has a leading ``run`` dimension; dimension names are
HDF5 dimension scales, so ``xarray.open_dataset(path, engine="h5netcdf")`` labels them)::

    /time          (time,)                        recording times t = step / d
    /run           (run,)                         run index 0..n-1
    /student, /student_b, /teacher, /teacher_b    unit indices (for Q, R, T)
    /eps_g         (run, time)                    exact generalisation error (NaN after divergence)
    /train_error   (run, time)                    training loss (method "gd" only)
    /Q             (run, time, student, student_b)
    /R             (run, time, student, teacher)
    /v             (run, time, student)
    /T             (run, teacher, teacher_b)
    /v_teacher     (run, teacher)
    /status        (run,) int8                    -1 pending, 0 done, 1 diverged, 2 failed
    /t_stop        (run,)                         time a diverged run was stopped (else NaN)
    /message       (run,) string                  why a run failed (sweeps; else empty)
    /<param>       (run,)                         per-run parameters (lr, label_noise, seed, ...)
    /W_final       (run, student, input)          final first layer (optional)
    /v_final       (run, student)                 final second layer (optional)

File attributes: ``layout_version``, ``fastquad_version``, ``method``, ``d``, ``K``, ``M``, scalar
parameters, ``config`` (the TOML text that made the file, when there was one) and ``versions``
(numpy, numba, h5py, dask). Only numbers and strings are stored: nothing is ever unpickled or
evaluated from a file. Curves are chunked ``(runs, time)`` and gzip-compressed.

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

from . import files
from .errors import InputError
from .result import STATUS_NAMES, STATUS_PENDING, Result

LAYOUT_VERSION = 1
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
    _scale(f, "time", np.asarray(times, dtype=np.float64))
    f["time"].attrs["long_name"] = "time t = step / d"
    _scale(f, "run", np.arange(n_runs, dtype=np.int64))
    for name, size in (("student", K), ("student_b", K), ("teacher", M), ("teacher_b", M)):
        _scale(f, name, np.arange(size, dtype=np.int64))
    if weights:
        _scale(f, "input", np.arange(d, dtype=np.int64))
    # chunks of whole curves for a block of runs: reading one run's curve, or all runs at
    # one time, touches few chunks; a chunk stays well under 1 MiB
    rc = max(1, min(n_runs, 65536 // max(1, n_t)))
    # level 1: most of the size reduction of gzip at a fraction of the client CPU it costs
    kw = dict(compression="gzip", compression_opts=1, shuffle=True, fillvalue=np.nan)

    def arr(name, dims, shape, chunks):
        ds = f.create_dataset(name, shape=shape, dtype=np.float64, chunks=chunks, **kw)
        _attach(ds, dims, f)
        return ds

    arr("eps_g", ("run", "time"), (n_runs, n_t), (rc, n_t))
    f["eps_g"].attrs["long_name"] = "generalisation error (exact, label noise excluded)"
    if train_error:
        arr("train_error", ("run", "time"), (n_runs, n_t), (rc, n_t))
    if order_parameters:
        rcq = max(1, min(n_runs, 65536 // max(1, n_t * K * max(K, M))))
        arr("Q", ("run", "time", "student", "student_b"), (n_runs, n_t, K, K), (rcq, n_t, K, K))
        arr("R", ("run", "time", "student", "teacher"), (n_runs, n_t, K, M), (rcq, n_t, K, M))
        arr("v", ("run", "time", "student"), (n_runs, n_t, K), (rcq, n_t, K))
    arr("T", ("run", "teacher", "teacher_b"), (n_runs, M, M), None)
    arr("v_teacher", ("run", "teacher"), (n_runs, M), None)
    if weights:
        wc = max(1, min(n_runs, 65536 // max(1, K * d)))
        arr("W_final", ("run", "student", "input"), (n_runs, K, d), (wc, K, d))
        arr("v_final", ("run", "student"), (n_runs, K), None)
    st = f.create_dataset("status", data=np.full(n_runs, STATUS_PENDING, dtype=np.int8))
    st.attrs["flag_values"] = _FLAG_VALUES
    st.attrs["flag_meanings"] = _FLAG_MEANINGS
    _attach(st, ("run",), f)
    ts = f.create_dataset("t_stop", data=np.full(n_runs, np.nan))
    _attach(ts, ("run",), f)
    if messages:
        msg = f.create_dataset("message", shape=(n_runs,), dtype=h5py.string_dtype())
        msg.attrs["long_name"] = "why a run failed (empty unless status is failed)"
        _attach(msg, ("run",), f)
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
    f.attrs["method"] = method
    f.attrs["d"], f.attrs["K"], f.attrs["M"] = int(d), int(K), int(M)
    f.attrs["versions"] = json.dumps(versions())
    for k, val in (attrs or {}).items():
        f.attrs[k] = val


def result_arrays(res):
    """The per-run arrays of a Result, by dataset name (None where absent)."""
    return {
        "eps_g": res.eps_g,
        "train_error": res.train_error,
        "Q": res.Q,
        "R": res.R,
        "v": res.v,
        "T": res.T,
        "v_teacher": res.v_teacher,
        "W_final": res.W,
        "v_final": res.v_final,
        "t_stop": res.t_stop,
        "status": res.status,
    }


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

    for name in (
        "eps_g",
        "train_error",
        "Q",
        "R",
        "v",
        "T",
        "v_teacher",
        "W_final",
        "v_final",
        "t_stop",
        "message",
    ):
        put(name)
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
    d = int(res.params.get("d", res.W.shape[-1] if res.W is not None else 0))
    per_run = {
        k: np.asarray(v)
        for k, v in res.params.items()
        if np.ndim(v) == 1 and np.shape(v)[0] == res.n_runs
    }
    scal = {
        k: v
        for k, v in res.params.items()
        if np.ndim(v) == 0 and isinstance(v, (bool, int, float, str, np.number, np.bool_))
    }
    scal = {k: (int(v) if isinstance(v, (bool, np.bool_)) else v) for k, v in scal.items()}
    scal.update(attrs or {})
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
REQUIRED = ("time", "run", "eps_g", "T", "v_teacher", "status", "t_stop")
_PER_RUN = (
    "eps_g",
    "train_error",
    "Q",
    "R",
    "v",
    "T",
    "v_teacher",
    "W_final",
    "v_final",
    "status",
    "t_stop",
    "message",
)
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
    g = lambda name: f[name][()] if name in f else None  # noqa: E731
    params = {
        k: (v.decode() if isinstance(v, bytes) else v)
        for k, v in f.attrs.items()
        if k not in ("versions", "config")
    }
    n = f["run"].shape[0]
    for name in f:
        ds = f[name]
        if (
            isinstance(ds, h5py.Dataset)
            and ds.ndim == 1
            and ds.shape[0] == n
            and name
            not in (
                "run",
                "status",
                "t_stop",
                "time",
                "student",
                "student_b",
                "teacher",
                "teacher_b",
                "input",
            )
        ):
            params[name] = ds[()]
    return Result(
        method=str(params.pop("method")),
        t=g("time"),
        eps_g=g("eps_g"),
        Q=g("Q"),
        R=g("R"),
        v=g("v"),
        T=g("T"),
        v_teacher=g("v_teacher"),
        status=g("status"),
        t_stop=g("t_stop"),
        train_error=g("train_error"),
        W=g("W_final"),
        v_final=g("v_final"),
        params=params,
    )


def load(path, *, lazy=False):
    """Open a results file as a labelled :class:`xarray.Dataset` (engine h5netcdf).

    Dimensions ``run``, ``time``, ``student``, ``teacher``; per-run parameters are coordinates
    along ``run``; the file's attributes are the dataset's attributes.

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
        if not lazy:
            try:
                ds.load()
            finally:
                ds.close()
        return ds
    except _READ_ERRORS as exc:
        raise damaged(path, exc) from None
