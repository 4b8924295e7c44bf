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
"""

import os
import shutil
import time
import uuid
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from .. import store as S
from ..result import STATUS_DIVERGED, STATUS_DONE, STATUS_FAILED, STATUS_NAMES, STATUS_PENDING

JOURNAL_SUFFIX = ".journal"
# runs merged into one HDF5 write (bounds the client's memory while folding the journal)
_MERGE_RUNS = 2048


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_replace(tmp, final):
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    _fsync_dir(os.path.dirname(os.path.abspath(final)) or ".")


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
    """

    def __init__(self, path, sweep, *, overwrite=False, consolidate_every=30.0):
        self.path = Path(path)
        self.sweep = sweep
        self.journal = Path(str(self.path) + JOURNAL_SUFFIX)
        self.consolidate_every = consolidate_every
        self._last = time.monotonic()
        self._journal_runs = 0  # runs journaled since the last fold
        self._fold_runs = max(1, sweep.total_runs // 4)
        for stale in self.path.parent.glob(self.path.name + ".tmp-*"):
            stale.unlink()  # an interrupted consolidation; the file and journal are intact
        if self.path.exists():
            digest = _read_digest(self.path)
            if digest != sweep.digest:
                if not overwrite:
                    why = ("it is not a fastquad sweep file" if digest is None else
                           "it was made by a different sweep file")
                    raise ValueError(f"--out: {self.path} exists and {why}; use --overwrite to "
                                     "replace it, or another --out")
                self.path.unlink()
                shutil.rmtree(self.journal, ignore_errors=True)
        elif self.journal.exists():
            shutil.rmtree(self.journal)  # a journal without its file belongs to nothing
        if not self.path.exists():
            self._create()
        self.journal.mkdir(exist_ok=True)
        for tmp in self.journal.glob("*.tmp"):
            tmp.unlink()
        self.consolidate()

    # ------------------------------------------------------------------ creation
    def _create(self):
        sw = self.sweep
        cfgs = sw.points
        K = max(c.K for c in cfgs)
        M = max(c.M for c in cfgs)
        d = max(c.d for c in cfgs)
        from ..config import time_grid

        attrs = {"config": sw.text, "sweep_digest": sw.digest, "sweep_axes": " ".join(sw.axis_names()),
                 "n_replicas": sw.n_runs, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "fastquad_version": __version__}
        for name, vals in list(sw.axes.items()) + list(sw.zipped.items()):
            attrs[f"axis_{name}"] = str(vals)
        methods = {c.method for c in cfgs}
        tmp = self._tmp_name()
        f = S.create(tmp, n_runs=sw.total_runs, times=time_grid(cfgs[0]), d=d, K=K, M=M,
                     method=methods.pop() if len(methods) == 1 else "mixed",
                     per_run=sw.run_coordinates(), attrs=attrs,
                     train_error="gd" in {c.method for c in cfgs}, messages=True, mode="w",
                     weights=bool(sw.settings.get("final_weights")),
                     order_parameters=bool(sw.settings.get("order_parameters")))
        f.close()
        _atomic_replace(tmp, self.path)

    def _tmp_name(self):
        return str(self.path.parent / f"{self.path.name}.tmp-{uuid.uuid4().hex[:8]}")

    # ------------------------------------------------------------------ state
    def stored(self):
        """Names of the per-run arrays this file holds (what workers need to send back)."""
        with h5py.File(self.path, "r") as f:
            return {name for name in f}

    def status(self):
        """Per-run status (n_runs,), counting the journal's runs."""
        with h5py.File(self.path, "r") as f:
            st = f["status"][()]
        for entry in sorted(self.journal.glob("*.npz")):
            with np.load(entry, allow_pickle=False) as z:
                st[z["index"]] = z["status"]
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
        name = f"chunk-{int(index.min()):09d}-{uuid.uuid4().hex[:8]}"
        tmp = self.journal / (name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.journal / (name + ".npz"))
        _fsync_dir(self.journal)
        self._journal_runs += len(index)
        if (time.monotonic() - self._last > self.consolidate_every
                or self._journal_runs >= self._fold_runs):
            self.consolidate()

    def add_failure(self, index, message):
        n = len(index)
        self.add(index, {"status": np.full(n, STATUS_FAILED, dtype=np.int8),
                         "message": np.array([message] * n)})

    def consolidate(self):
        """Fold the journal into the HDF5 file by copy, write and atomic rename."""
        self._last = time.monotonic()
        self._journal_runs = 0
        entries = sorted(self.journal.glob("*.npz"))
        if not entries:
            return 0
        tmp = self._tmp_name()
        shutil.copyfile(self.path, tmp)
        # entries of the same kind (same datasets and unit sizes) are merged and written
        # together: every write rewrites whole compressed HDF5 chunks, so few large writes keep
        # the client's share of the CPU small; at most _MERGE_RUNS runs are held per kind, so
        # the client's memory stays flat however many runs finished
        pending = {}

        def flush(f, kind):
            items, _ = pending.pop(kind)
            merged = {k: np.concatenate([a[k] for a in items]) for k in items[0]}
            index = merged.pop("index")
            S.write_arrays(f, index, merged)

        with h5py.File(tmp, "r+") as f:
            for entry in entries:
                with np.load(entry, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
                kind = tuple((k, arrays[k].shape[1:], arrays[k].dtype.str) for k in sorted(arrays))
                items, n = pending.get(kind, ([], 0))
                items.append(arrays)
                pending[kind] = (items, n + len(arrays["index"]))
                if pending[kind][1] >= _MERGE_RUNS:
                    flush(f, kind)
            for kind in list(pending):
                flush(f, kind)
        _atomic_replace(tmp, self.path)
        for entry in entries:
            entry.unlink()
        return len(entries)

    def close(self):
        self.consolidate()
        if self.journal.exists() and not any(self.journal.iterdir()):
            self.journal.rmdir()


def _read_digest(path):
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("sweep_digest")
    except OSError:
        return None


def info(path):
    """A short text describing a results file: axes, counts by status, provenance."""
    import json

    path = Path(path)
    if not path.exists():
        raise ValueError(f"FILE: no such file {path}")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise ValueError(f"FILE: {path} is not an HDF5 file") from None
    with f:
        lines = [f"{path}: fastquad results, layout {f.attrs.get('layout_version')}, "
                 f"method {f.attrs.get('method')}"]
        n = f["run"].shape[0]
        lines.append(f"runs: {n}   times: {f['time'].shape[0]} "
                     f"(t = {f['time'][0]:g} .. {f['time'][-1]:g})   "
                     f"d={f.attrs.get('d')} K={f.attrs.get('K')} M={f.attrs.get('M')}")
        stored = [name for name in ("eps_g", "train_error", "Q", "R", "v", "W_final", "v_final")
                  if name in f]
        lines.append("arrays: " + ", ".join(stored))
        axes = str(f.attrs.get("sweep_axes", "")).split()
        for name in axes:
            vals = f.attrs.get(f"axis_{name}")
            lines.append(f"  axis {name}: {vals}")
        if "n_replicas" in f.attrs:
            lines.append(f"  replicas per point: {f.attrs['n_replicas']}")
        st = f["status"][()]
        journal = Path(str(path) + JOURNAL_SUFFIX)
        n_j = 0
        if journal.exists():
            for entry in journal.glob("*.npz"):
                with np.load(entry, allow_pickle=False) as z:
                    st[z["index"]] = z["status"]
                    n_j += len(z["index"])
        counts = {name: int(np.count_nonzero(st == code)) for code, name in STATUS_NAMES.items()}
        lines.append("status: " + ", ".join(f"{k} {v}" for k, v in counts.items())
                     + (f"   ({n_j} run(s) still in the journal)" if n_j else ""))
        if counts["diverged"]:
            ts = f["t_stop"][()]
            lines.append(f"  diverged runs stopped at t in [{np.nanmin(ts):.4g}, {np.nanmax(ts):.4g}]"
                         if np.isfinite(ts).any() else "  diverged (times in the journal)")
        if counts["failed"] and "message" in f:
            msgs = {m.decode() if isinstance(m, bytes) else m
                    for m, s in zip(f["message"][()], f["status"][()]) if s == STATUS_FAILED}
            for m in sorted(msgs)[:5]:
                lines.append(f"  failed: {m}")
        vers = f.attrs.get("versions")
        if vers:
            lines.append("made with: " + ", ".join(f"{k} {v}" for k, v in json.loads(vers).items()))
        if "created" in f.attrs:
            lines.append(f"created: {f.attrs['created']}")
    return "\n".join(lines)


__all__ = ["SweepStore", "info", "STATUS_DONE", "STATUS_DIVERGED"]
