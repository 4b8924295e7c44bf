"""The results file of a sweep: one HDF5 file, crash-safe, resumable, every run exactly once.

How no result is lost and the file is never unreadable:

- Runs have fixed slots (run index = position), so storing a run twice writes the same slot
  with the same numbers: nothing can be duplicated, only missing.
- Each finished chunk first goes to a *journal*, a folder ``<file>.journal/`` beside the file:
  one ``.npz`` per chunk (plain arrays, loaded with ``allow_pickle=False``), written to a
  temporary name, fsynced, then renamed into place — it is there whole or not at all.
- The HDF5 file itself is never modified in place: every so often (and at the end) the client
  copies it, writes the journal's chunks into the copy, fsyncs and atomically renames the copy
  over the file, then deletes those journal entries. A kill at any moment leaves the previous
  complete file (or the new one) and a journal that holds everything finished since.
- On resume the journal is folded in first; runs whose status is done or diverged are skipped,
  pending and failed runs are (re)computed.
- One process at a time: a :class:`SweepStore` holds an exclusive lock on the file
  (``<file>.lock``) from its creation until :meth:`SweepStore.close`; a second sweep on the same
  file stops at once with a message naming the first one's pid. Stale temporaries and journal
  entries are removed only under the lock, matched by name.
- The journal may still hold two entries for the same runs (a journal written before the lock
  existed, or a chunk stored twice): the fold keeps one copy of each run, a success over a
  failure and otherwise the last entry by name (identical runs store identical numbers).
- A full disk: the fold checks the free space first, and every write goes to a temporary file
  that is removed on failure, so the previous file stays complete and the journal keeps the
  runs; the error is one line, and the same command resumes once there is space. HDF5 never
  sees a failed write (see :func:`fastquad.files.guarded`).
"""

import os
import shutil
import time
import uuid
import zipfile
from pathlib import Path

import h5py
import numpy as np

from .. import __version__, files, methods, schema
from .. import store as results_file
from ..errors import InputError, StorageError
from ..result import STATUS_DIVERGED, STATUS_DONE, STATUS_FAILED, STATUS_NAMES, STATUS_PENDING
from .spec import point_activations

JOURNAL_SUFFIX = ".journal"
ENTRY_SUFFIX = ".npz"
# runs merged into one HDF5 write (bounds the client's memory while folding the journal)
_MERGE_RUNS = 2048
_RESUMES = " and the sweep resumes when run again"
# what a journal entry that cannot be read raises (it is then left out of counts)
_ENTRY_ERRORS = (OSError, ValueError, KeyError, zipfile.BadZipFile)


class SweepStore:
    """The results file of one sweep, opened by the client (the only writer).

    Parameters
    ----------
    path : str or Path
    sweep : Sweep
    overwrite : bool
        Replace an existing file made by a different sweep (otherwise that is an error).
    consolidate_every : float
        Seconds between folding the journal into the HDF5 file. The journal is also folded
        whenever it holds a quarter of the sweep's runs, so the fold left for the end of a
        sweep (after the last task, when the workers are idle) stays small.

    Raises
    ------
    InputError
        Another sweep is writing the file; the file exists and was not made by this sweep
        (without ``overwrite``); the folder cannot be written.
    StorageError
        No space left to create the file or fold the journal; the previous file is intact.

    The store holds the file's lock until :meth:`close` (also usable as a context manager).
    """

    def __init__(self, path, sweep, *, overwrite=False, consolidate_every=30.0):
        self.path = Path(path)
        self.sweep = sweep
        self.journal = Path(str(self.path) + JOURNAL_SUFFIX)
        self.consolidate_every = consolidate_every
        self._last = time.monotonic()
        self._journal_runs = 0  # runs journaled since the last fold
        self._fold_runs = max(1, sweep.total_runs // 4)
        self._failed = False  # a write failed: close() then only releases the lock
        self._lock = files.OutputLock(self.path)
        try:
            self._open(overwrite)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, overwrite):
        # under the lock, whatever is left of an interrupted fold is nobody's
        for stale in files.temporaries(self.path):
            _unlink(stale)
        if self.path.is_dir():
            raise InputError(f"--out: {self.path} is a folder; give the name of a file in it")
        create = not self.path.exists()
        if not create:
            digest = _read_digest(self.path)
            stale_times = digest == self.sweep.digest and not _same_times(
                self.path, self.sweep.times
            )
            if digest != self.sweep.digest or stale_times:
                if not overwrite:
                    why = (
                        "it is not a fastquad sweep file"
                        if digest is None
                        else "it was made by a different sweep file"
                        if not stale_times
                        else "its time axis is not the one its runs record at (a file made "
                        "before fastquad 0.2 labelled some times wrongly)"
                    )
                    raise InputError(
                        f"--out: {self.path} exists and {why}; use --overwrite to "
                        "replace it, or another --out"
                    )
                # the old journal goes first: it must never be folded into the new file; the
                # old file itself is replaced only by a complete new one
                shutil.rmtree(self.journal, ignore_errors=True)
                create = True
        elif self.journal.exists():
            shutil.rmtree(self.journal)  # a journal without its file belongs to nothing
        if create:
            self._create()
        try:
            self.journal.mkdir(exist_ok=True)
        except OSError as exc:
            raise files.storage_error(exc, self.path, existed=True, hint=_RESUMES) from None
        for name in os.listdir(self.journal):
            if not name.endswith(ENTRY_SUFFIX):  # a journal entry torn by a kill
                _unlink(self.journal / name)
        self.consolidate()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ creation
    def _create(self):
        sw = self.sweep
        cfgs = sw.points
        K = max(c.K for c in cfgs)
        M = max(c.M for c in cfgs)
        d = max(c.d for c in cfgs)

        attrs = {
            "config": sw.text,
            "sweep_digest": sw.digest,
            "sweep_axes": " ".join(sw.axis_names()),
            "n_replicas": sw.n_runs,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "fastquad_version": __version__,
        }
        for name, vals in list(sw.axes.items()) + list(sw.zipped.items()):
            attrs[f"axis_{name}"] = str(vals)
        # each run's activations are coordinates when they vary (Sweep.run_coordinates)
        pairs = {point_activations(c) for c in cfgs}
        for i, name in enumerate(("activation", "teacher_activation")):
            names = {pair[i] for pair in pairs}
            attrs[name] = names.pop() if len(names) == 1 else schema.MIXED
        used = {c.method for c in cfgs}
        try:
            with files.atomic_output(self.path) as tmp, files.guarded(tmp, create=True) as g:
                results_file.create(
                    g,
                    n_runs=sw.total_runs,
                    times=sw.times,
                    d=d,
                    K=K,
                    M=M,
                    method=used.pop() if len(used) == 1 else "mixed",
                    per_run=sw.run_coordinates(),
                    attrs=attrs,
                    train_error=any(methods.get(c.method).records_train_error for c in cfgs),
                    messages=True,
                    mode="w",
                    weights=bool(sw.settings.get("final_weights")),
                    order_parameters=bool(sw.settings.get("order_parameters")),
                ).close()
        except StorageError:
            self._failed = True
            raise

    # ------------------------------------------------------------------ state
    def stored(self):
        """Names of the per-run arrays this file holds (what workers need to send back)."""
        with h5py.File(self.path, "r") as f:
            return {name for name in f}

    def _entries(self):
        return (
            [self.journal / n for n in sorted(os.listdir(self.journal)) if n.endswith(ENTRY_SUFFIX)]
            if self.journal.is_dir()
            else []
        )

    def status(self):
        """Per-run status (n_runs,), counting the journal's runs."""
        with h5py.File(self.path, "r") as f:
            st = f["status"][()]
        _apply_journal(st, self._entries())
        return st

    def pending(self):
        """Runs still to compute: pending, or failed before (a failure is retried)."""
        st = self.status()
        return np.flatnonzero((st == STATUS_PENDING) | (st == STATUS_FAILED))

    # ------------------------------------------------------------------ writing
    def add(self, index, arrays):
        """Journal the arrays of finished runs ``index``; fold into the file when due."""
        index = np.asarray(index, dtype=np.int64)
        payload = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
        payload["index"] = index
        entry = self.journal / f"chunk-{int(index.min()):09d}-{uuid.uuid4().hex[:8]}{ENTRY_SUFFIX}"
        tmp = files.temporary_name(entry)
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, entry)
        except OSError as exc:
            _unlink(tmp)
            self._failed = True
            # the message names the results file: the journal is part of it
            raise files.storage_error(exc, self.path, existed=True, hint=_RESUMES) from None
        files.fsync_dir(self.journal)
        self._journal_runs += len(index)
        if (
            time.monotonic() - self._last > self.consolidate_every
            or self._journal_runs >= self._fold_runs
        ):
            self.consolidate()

    def add_failure(self, index, message):
        n = len(index)
        self.add(
            index,
            {
                "status": np.full(n, STATUS_FAILED, dtype=np.int8),
                "message": np.array([message] * n),
            },
        )

    def consolidate(self):
        """Fold the journal into the HDF5 file by copy, write and atomic rename.

        Raises
        ------
        StorageError
            No space (checked before copying) or a failed write; the file and the journal
            are then as they were.
        """
        self._last = time.monotonic()
        self._journal_runs = 0
        entries = self._entries()
        if not entries:
            return 0
        readable = _readable(entries)  # a damaged entry's runs stay pending: computed again
        if readable:
            keep = _winners([i for _, i, _ in readable], [s for _, _, s in readable])
            try:
                # the copy, plus what the journal adds to it (compressed, it takes less)
                need = self.path.stat().st_size + sum(e.stat().st_size for e, _, _ in readable)
                files.check_space(self.path, need, hint=_RESUMES)
                with files.atomic_output(self.path, hint=_RESUMES) as tmp:
                    shutil.copyfile(self.path, tmp)
                    with files.guarded(tmp) as g, h5py.File(g, "r+") as f:
                        self._fold(f, g, [e for e, _, _ in readable], keep)
            except StorageError:
                self._failed = True
                raise
        for entry in entries:
            _unlink(entry)
        files.fsync_dir(self.journal)
        return len(entries)

    @staticmethod
    def _fold(f, g, entries, keep):
        # entries of the same kind (same datasets and unit sizes) are merged and written
        # together: every write rewrites whole compressed HDF5 chunks, so few large writes keep
        # the client's share of the CPU small; at most _MERGE_RUNS runs are held per kind, so
        # the client's memory stays flat however many runs finished
        pending = {}

        def flush(kind):
            items, _ = pending.pop(kind)
            merged = {k: np.concatenate([a[k] for a in items]) for k in items[0]}
            index = merged.pop("index")
            results_file.write_arrays(f, index, merged)
            g.check()  # a full disk: stop now rather than write the rest into memory

        for entry, mask in zip(entries, keep):
            if not mask.any():
                continue  # every run of this entry is stored by another entry
            try:
                with np.load(entry, allow_pickle=False) as z:
                    arrays = {k: z[k] if mask.all() else z[k][mask] for k in z.files}
            except _ENTRY_ERRORS:
                continue  # damaged: its runs stay as the file has them (pending: recomputed)
            kind = tuple((k, arrays[k].shape[1:], arrays[k].dtype.str) for k in sorted(arrays))
            items, n = pending.get(kind, ([], 0))
            items.append(arrays)
            pending[kind] = (items, n + len(arrays["index"]))
            if pending[kind][1] >= _MERGE_RUNS:
                flush(kind)
        for kind in list(pending):
            flush(kind)

    def close(self):
        """Fold the journal and release the file's lock; safe to call again, or after a failure.

        After a failed write only the lock is released: the file and journal are as the
        failure left them (complete, and resumable).
        """
        try:
            if self._lock.held and not self._failed:
                self.consolidate()
                if self.journal.exists() and not any(self.journal.iterdir()):
                    self.journal.rmdir()
        finally:
            self._lock.release()


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        shutil.rmtree(path, ignore_errors=True)


def _entry_status(entry):
    with np.load(entry, allow_pickle=False) as z:
        return z["index"], z["status"]


def _winners(index, status):
    """Which runs of each journal entry the fold stores (a boolean mask per entry).

    ``index``, ``status``: the entries' run indices and statuses, in name order. Each run is
    stored by one entry: a success (done, diverged) before a failure, otherwise the last entry
    in name order (and the last position within it).
    """
    sizes = [len(i) for i in index]
    idx = np.concatenate(index)
    good = np.concatenate(status) != STATUS_FAILED
    order = np.lexsort((np.arange(len(idx)), good, idx))  # by run, success, sequence
    run = idx[order]
    last = np.r_[run[1:] != run[:-1], True]
    keep = np.zeros(len(idx), dtype=bool)
    keep[order[last]] = True
    return np.split(keep, np.cumsum(sizes)[:-1])


def _readable(entries):
    """``(entry, index, status)`` of the journal entries that can be read.

    Entries that vanish (another process folding, for a reader without the lock) or are
    damaged are left out.
    """
    out = []
    for entry in entries:
        try:
            out.append((entry, *_entry_status(entry)))
        except _ENTRY_ERRORS:
            continue
    return out


def _apply_journal(st, entries):
    """Update the status array ``st`` with the journal's runs, as the fold will store them;
    returns the number of runs in readable entries."""
    readable, n = _readable(entries), 0
    if not readable:
        return 0
    index = [i for _, i, _ in readable]
    status = [s for _, _, s in readable]
    keep = _winners(index, status)
    for i, s, k in zip(index, status, keep):
        st[i[k]] = s[k]
        n += int(k.sum())
    return n


def _same_times(path, times):
    """Whether the file's time axis is exactly ``times``."""
    try:
        with h5py.File(path, "r") as f:
            return "time" in f and np.array_equal(f["time"][()], times)
    except OSError:
        return False


def _read_digest(path):
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("sweep_digest")
    except (OSError, KeyError, ValueError, RuntimeError, TypeError):
        return None


def info(path):
    """A short text describing a results file: axes, counts by status, provenance.

    Raises
    ------
    InputError
        No such file, or not a complete fastquad results file (one line naming the file).
    """
    path = Path(path)
    try:
        f = results_file.open_results(path)
    except InputError as exc:
        raise InputError(f"FILE: {exc}") from None
    try:
        with f:
            return _info(f, path)
    except results_file._READ_ERRORS as exc:
        raise InputError(f"FILE: {results_file.damaged(path, exc)}") from None


def _info(f, path):
    import json

    lines = [
        f"{path}: fastquad results, layout {f.attrs.get('layout_version')}, "
        f"method {f.attrs.get('method')}"
    ]
    n = f["run"].shape[0]
    t = f["time"][()]
    lines.append(
        f"runs: {n}   times: {len(t)}"
        + (f" (t = {t[0]:g} .. {t[-1]:g})" if len(t) else "")
        + f"   d={f.attrs.get('d')} K={f.attrs.get('K')} M={f.attrs.get('M')}"
    )
    stored = [var.name for var in schema.variables() if var.name in f]
    lines.append("arrays: " + ", ".join(stored))
    coords = {
        k: f[k][()]
        for k in ("activation", "teacher_activation")
        if isinstance(f.get(k), h5py.Dataset)
    }
    student, teacher = results_file.run_activations(f.attrs, coords, n)
    lines.append("activations: " + results_file.activation_phrase(student, teacher))
    axes = str(f.attrs.get("sweep_axes", "")).split()
    for name in axes:
        vals = f.attrs.get(f"axis_{name}")
        lines.append(f"  axis {name}: {vals}")
    if "n_replicas" in f.attrs:
        lines.append(f"  replicas per point: {f.attrs['n_replicas']}")
    st = f["status"][()]
    journal = Path(str(path) + JOURNAL_SUFFIX)
    entries = (
        [journal / e for e in sorted(os.listdir(journal)) if e.endswith(ENTRY_SUFFIX)]
        if journal.is_dir()
        else []
    )
    n_j = _apply_journal(st, entries)
    counts = {name: int(np.count_nonzero(st == code)) for code, name in STATUS_NAMES.items()}
    lines.append(
        "status: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + (f"   ({n_j} run(s) still in the journal)" if n_j else "")
    )
    if counts["diverged"]:
        ts = f["t_stop"][()]
        lines.append(
            f"  diverged runs stopped at t in [{np.nanmin(ts):.4g}, {np.nanmax(ts):.4g}]"
            if np.isfinite(ts).any()
            else "  diverged (times in the journal)"
        )
    if counts["failed"] and "message" in f:
        msgs = {
            m.decode() if isinstance(m, bytes) else m
            for m, s in zip(f["message"][()], f["status"][()])
            if s == STATUS_FAILED
        }
        for m in sorted(msgs)[:5]:
            lines.append(f"  failed: {m}")
    vers = f.attrs.get("versions")
    if vers:
        lines.append("made with: " + ", ".join(f"{k} {v}" for k, v in json.loads(vers).items()))
    if "created" in f.attrs:
        lines.append(f"created: {f.attrs['created']}")
    return "\n".join(lines)


__all__ = ["SweepStore", "info", "STATUS_DONE", "STATUS_DIVERGED"]
