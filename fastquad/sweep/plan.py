"""Chunks: runs that share a kernel shape, grouped into Dask tasks of a few seconds of work."""

import math
from dataclasses import dataclass

import numpy as np

from ..config import batch_key

#: Work per task the automatic sizing aims at: long enough that Dask's few ms per task and the
#: client's writes are noise, short enough to balance the workers and to lose little on a kill.
TARGET_TASK_SECONDS = 3.0
# rough single-core costs measured on the reference machine (PERFORMANCE-NOTES.md)
_SEC_PER_NORMAL = 4e-9
_SEC_PER_FMA = 1.5e-10


@dataclass(frozen=True)
class Chunk:
    """Runs (indices into the sweep) that go through one batched kernel call."""

    runs: np.ndarray

    def __len__(self):
        return len(self.runs)


def seconds_per_run(cfg):
    """A rough estimate of one run's cost on one core (for sizing chunks only)."""
    K, M, d = cfg.K, cfg.M, cfg.d
    if cfg.method == "sgd":
        steps = cfg.t_max * d
        if cfg.batch_size == 1:  # fused single-sample steps, the teacher in its frame
            return steps * ((d + 1) * _SEC_PER_NORMAL + (2 * K * d + M * M) * _SEC_PER_FMA)
        return steps * cfg.batch_size * ((d + 1) * _SEC_PER_NORMAL + d * (2 * K + M) * _SEC_PER_FMA)
    if cfg.method == "gd":
        steps = cfg.t_max * d
        return steps * cfg.batch_size * d * (2 * K + M) * _SEC_PER_FMA + cfg.n_samples * d * 5e-9
    if cfg.method == "flow":
        steps = cfg.t_max / min(0.05, 0.01 / cfg.lr) if not cfg.dt else cfg.t_max / cfg.dt
        return steps * 4 * 3 * K * (K + M) * d * _SEC_PER_FMA
    # ode: a few thousand right-hand sides of O((K + M)^3) work
    return 3000 * 10 * (K + M) ** 3 * _SEC_PER_FMA + 1e-4


def plan_chunks(sweep, runs, *, chunk_runs=None, n_workers=1):
    """Group the given runs into chunks.

    Parameters
    ----------
    sweep : Sweep
    runs : array of int
        The runs to do (e.g. those still pending on resume).
    chunk_runs : int, optional
        Runs per chunk; default sized so a chunk is about ``TARGET_TASK_SECONDS`` of work, and
        small enough that every worker gets several chunks.
    n_workers : int

    Returns
    -------
    list of Chunk, in a deterministic order (largest estimated work first, for balance).
    """
    runs = np.asarray(runs, dtype=np.int64)
    groups = {}
    for r in runs:
        cfg, _ = sweep.run_config(int(r))
        groups.setdefault(batch_key(cfg), []).append(int(r))
    chunks = []
    for key, members in groups.items():
        cfg, _ = sweep.run_config(members[0])
        if chunk_runs is None:
            per = max(seconds_per_run(sweep.run_config(m)[0]) for m in members[:64])
            size = max(1, int(TARGET_TASK_SECONDS / max(per, 1e-9)))
            # at least ~8 chunks per worker when the group allows it: the last chunks finish
            # close together (load balance at the end of a sweep)
            size = min(size, max(1, math.ceil(len(runs) / (8 * max(1, n_workers)))))
        else:
            size = chunk_runs
        for i in range(0, len(members), size):
            chunks.append(Chunk(np.array(members[i:i + size], dtype=np.int64)))
    cost = [len(c) * seconds_per_run(sweep.run_config(int(c.runs[0]))[0]) for c in chunks]
    order = sorted(range(len(chunks)), key=lambda i: (-cost[i], int(chunks[i].runs[0])))
    return [chunks[i] for i in order]
