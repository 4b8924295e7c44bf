"""Chunks: runs that share a kernel shape, grouped into Dask tasks of a few seconds of work."""

import math
from dataclasses import dataclass

import numpy as np

from ..budget import seconds_per_run
from ..config import batch_key

#: Work per task the automatic sizing aims at: long enough that Dask's few ms per task and the
#: client's writes are noise, short enough to balance the workers and to lose little on a kill.
TARGET_TASK_SECONDS = 3.0
#: The smallest task the automatic sizing makes (per-task costs, a few ms, stay under 2 %).
MIN_TASK_SECONDS = 0.25


@dataclass(frozen=True)
class Chunk:
    """Runs (indices into the sweep) that go through one batched kernel call."""

    runs: np.ndarray

    def __len__(self):
        return len(self.runs)


def _guided_sizes(n, n_workers, largest, smallest):
    """Chunk sizes for n runs, shrinking as the work left shrinks (guided self-scheduling).

    Each chunk takes 1/(4 n_workers) of the runs left, between ``smallest`` and ``largest``:
    the first chunks are long (few tasks), the last ones short, so the workers finish close
    together even when one of them runs slower than the other (a shared host) and a sweep does
    not wait for one long last chunk.
    """
    sizes = []
    left = n
    while left > 0:
        size = min(left, largest, max(smallest, math.ceil(left / (4 * max(1, n_workers)))))
        sizes.append(size)
        left -= size
    return sizes


def plan_chunks(sweep, runs, *, chunk_runs=None, n_workers=1):
    """Group the given runs into chunks.

    Parameters
    ----------
    sweep : Sweep
    runs : array of int
        The runs to do (e.g. those still pending on resume).
    chunk_runs : int, optional
        Runs per chunk; by default the sizes shrink from about ``TARGET_TASK_SECONDS`` of work
        to about ``MIN_TASK_SECONDS`` as the sweep nears its end (:func:`_guided_sizes`).
    n_workers : int

    Returns
    -------
    list of Chunk, in a deterministic order (largest estimated work first, for balance).
    """
    runs = np.asarray(runs, dtype=np.int64)
    groups = {}
    keys = {}  # a grid point's runs share its kernel shape: one key per point, not per run
    for r in runs.tolist():
        point, _ = sweep.run_point(r)
        if point not in keys:
            keys[point] = batch_key(sweep.points[point])
        groups.setdefault(keys[point], []).append(r)
    chunks = []
    for members in groups.values():
        if chunk_runs is None:
            per = max(max(seconds_per_run(sweep.run_config(m)[0]) for m in members[:64]), 1e-9)
            sizes = _guided_sizes(
                len(members),
                n_workers,
                max(1, int(TARGET_TASK_SECONDS / per)),
                max(1, int(MIN_TASK_SECONDS / per)),
            )
        else:
            sizes = [chunk_runs] * math.ceil(len(members) / chunk_runs)
        i = 0
        for size in sizes:
            chunks.append(Chunk(np.array(members[i : i + size], dtype=np.int64)))
            i += size
    cost = [len(c) * seconds_per_run(sweep.run_config(int(c.runs[0]))[0]) for c in chunks]
    order = sorted(range(len(chunks)), key=lambda i: (-cost[i], int(chunks[i].runs[0])))
    return [chunks[i] for i in order]
