"""Running a sweep on Dask: an embedded LocalCluster by default, or any existing cluster.

Workers run chunks (one batched kernel call each, one Numba thread per worker process) and
return plain arrays; the client alone writes the results file, as chunks complete.
"""

import os
import sys
import time
from dataclasses import dataclass

import dask
import numpy as np

from ..result import STATUS_DIVERGED, STATUS_DONE, STATUS_FAILED
from .plan import plan_chunks
from .store import SweepStore


@dataclass
class SweepSummary:
    total: int
    skipped: int
    done: int
    diverged: int
    failed: int
    seconds: float
    messages: list

    @property
    def ok(self):
        return self.failed == 0

    def text(self):
        lines = [f"sweep: {self.total} runs; {self.skipped} already stored; this time "
                 f"{self.done} done, {self.diverged} diverged, {self.failed} failed "
                 f"in {self.seconds:.1f} s"]
        for m in self.messages[:5]:
            lines.append(f"  failed chunk: {m}")
        return "\n".join(lines)


_REQUESTED_THREADS = []  # this worker's NUMBA_NUM_THREADS as first seen (recorded once)


def _worker_threads():
    """Make this worker's Numba agree with its environment; the thread count for kernels.

    A Dask nanny sets its ``env`` (``NUMBA_NUM_THREADS=1``) after the worker process has
    started, possibly after Numba was imported with the default (all cores). Numba re-reads
    the variable at every compilation and raises if it disagrees with a thread pool already
    running, so a worker that compiled anything after its first parallel call would fail.
    Here the setting is applied if the pool has not started yet, the environment is then made
    to agree with the pool, and kernels are limited to the requested count at run time.
    """
    import numba

    if not _REQUESTED_THREADS:
        raw = os.environ.get("NUMBA_NUM_THREADS", "").strip()
        _REQUESTED_THREADS.append(int(raw) if raw.isdigit() and int(raw) > 0 else None)
        if _REQUESTED_THREADS[0] not in (None, numba.config.NUMBA_NUM_THREADS):
            try:
                numba.config.reload_config()
            except RuntimeError:  # the pool is running already: limit at run time instead
                pass
    pool = numba.config.NUMBA_NUM_THREADS
    os.environ["NUMBA_NUM_THREADS"] = str(pool)
    want = _REQUESTED_THREADS[0]
    return pool if want is None else max(1, min(pool, want))


def _chunk_task(point_values, point_index, replicas, keep=None):
    """Worker side: one batched kernel call. Returns plain arrays (no Result objects).

    ``point_values``: the parameter dicts of the chunk's distinct grid points; run i is
    replica ``replicas[i]`` of point ``point_index[i]``. Each point is validated once, and the
    task carries a few dicts rather than one per run. ``keep``: the names of the arrays the
    results file holds (None: all); only those travel back.
    """
    from ..config import make_config, run_many
    from ..store import result_arrays

    threads = _worker_threads()
    point_cfgs = [make_config(v) for v in point_values]
    cfgs = [point_cfgs[i] for i in point_index]
    res = run_many(cfgs, np.asarray(replicas), num_threads=threads)
    arrays = result_arrays(res)
    return {k: v for k, v in arrays.items()
            if v is not None and (keep is None or k in keep)}


def warm_up(methods=("sgd", "gd", "flow", "ode")):
    """Compile (or load from Numba's cache) every kernel a sweep can call, on a tiny problem."""
    from ..config import make_config, run

    threads = _worker_threads()
    for m in methods:
        extra = {"n_samples": 4} if m == "gd" else {}
        run(make_config(dict(method=m, d=4, K=1, M=1, t_max=0.5, n_times=3, n_runs=1, **extra)),
            num_threads=threads)
    return os.getpid()


EMBEDDED_CLUSTER_CONFIG = {
    "distributed.admin.tick.interval": "200ms",  # event-loop health check (default 20 ms)
    "distributed.admin.system-monitor.interval": "2s",  # CPU/memory sampling (default 0.5 s)
    "distributed.worker.memory.monitor-interval": "1s",  # nanny memory check (default 0.1 s)
    "distributed.worker.profile.enabled": False,  # statistical profiler (a dashboard feature)
}


def _client(workers, scheduler, scheduler_file):
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), None
    if scheduler_file:
        return Client(scheduler_file=scheduler_file), None
    n = workers or os.cpu_count() or 1
    # process workers with one thread each: Numba kernels run single-threaded inside them
    # (its parallel layer inside multi-threaded workers can abort). The embedded cluster shares
    # the cores with its workers (scheduler and nannies live in this process), so its
    # housekeeping timers tick less often: tasks last seconds, not milliseconds.
    with dask.config.set(EMBEDDED_CLUSTER_CONFIG):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=None, env={"NUMBA_NUM_THREADS": "1",
                                                            "OMP_NUM_THREADS": "1"})
        return Client(cluster), cluster


def _silence_worker_logs():
    import logging

    logging.getLogger("distributed").setLevel(logging.CRITICAL)


def _quiet_shutdown(client):
    """Stop the embedded cluster's workers from logging errors before it shuts down.

    Every result is stored by then; what a worker could still log is a heartbeat that races
    the scheduler's shutdown on a busy machine, a traceback at ERROR level that means nothing
    (dask/distributed#7105).
    """
    try:
        # workers only: the nannies of a LocalCluster live in this process, whose logging
        # belongs to the caller
        client.run(_silence_worker_logs, on_error="ignore")
    except Exception:  # a cluster that is already going away needs no silencing
        pass


def run_sweep(sweep, out, *, workers=None, scheduler=None, scheduler_file=None, client=None,
              overwrite=False, chunk_runs=None, progress=True, consolidate_every=30.0,
              retries=2):
    """Run every pending run of a sweep and store it in ``out``.

    Parameters
    ----------
    sweep : Sweep
    out : path of the results file (created, or resumed if it holds this sweep)
    workers : int, optional
        Worker processes of the embedded LocalCluster (default: one per core).
    scheduler, scheduler_file : str, optional
        Use an existing Dask cluster instead.
    client : dask.distributed.Client, optional
        Use this client (the caller owns it).
    chunk_runs : int, optional
        Runs per task (default: the sweep file's ``chunk_runs``, else sized automatically).
    retries : int
        Times Dask retries a task whose worker died or that raised, before it counts as failed.

    Returns
    -------
    SweepSummary
    """
    from dask.distributed import as_completed

    t0 = time.perf_counter()
    store = SweepStore(out, sweep, overwrite=overwrite, consolidate_every=consolidate_every)
    todo = store.pending()
    skipped = sweep.total_runs - len(todo)
    counts = {"done": 0, "diverged": 0, "failed": 0}
    messages = []
    if len(todo) == 0:
        store.close()
        return SweepSummary(sweep.total_runs, skipped, 0, 0, 0, time.perf_counter() - t0, [])
    # compile once in the client: workers then load the kernels from Numba's disk cache
    # instead of compiling at the same time (concurrent cache writes can race)
    methods = sorted({sweep.run_config(int(r))[0].method for r in todo})
    warm_up(methods)
    own = client is None
    cluster = None
    if own:
        client, cluster = _client(workers, scheduler, scheduler_file)
    try:
        client.run(warm_up, methods)
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        chunks = plan_chunks(sweep, todo, chunk_runs=chunk_runs or sweep.settings.get("chunk_runs"),
                             n_workers=n_workers)
        keep = sorted(store.stored())
        futures = {}
        for ch in chunks:
            slots, point_index, reps = {}, [], []
            for r in ch.runs:
                point, rep = sweep.run_point(r)
                point_index.append(slots.setdefault(point, len(slots)))
                reps.append(rep)
            vals = [sweep.points[p].values for p in slots]
            fut = client.submit(_chunk_task, vals, np.array(point_index), np.array(reps),
                                keep, pure=False, retries=retries,
                                key=f"fastquad-chunk-{int(ch.runs[0])}-{len(ch)}-{sweep.digest[:8]}")
            futures[fut] = ch
        bar = _progress(len(todo), progress)
        for fut in as_completed(futures):
            ch = futures.pop(fut)
            try:
                arrays = fut.result()
            except Exception as exc:  # a chunk that raised: record it, go on with the others
                msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]
                store.add_failure(ch.runs, msg)
                counts["failed"] += len(ch)
                messages.append(f"runs {int(ch.runs[0])}..{int(ch.runs[-1])}: {msg}")
            else:
                store.add(ch.runs, arrays)
                st = arrays["status"]
                counts["done"] += int(np.count_nonzero(st == STATUS_DONE))
                counts["diverged"] += int(np.count_nonzero(st == STATUS_DIVERGED))
            if bar is not None:
                bar.update(len(ch))
            fut.release()
        if bar is not None:
            bar.close()
    finally:
        store.close()
        if own:
            if cluster is not None:
                _quiet_shutdown(client)
            client.close()
            if cluster is not None:
                cluster.close()
    return SweepSummary(sweep.total_runs, skipped, counts["done"], counts["diverged"],
                        counts["failed"], time.perf_counter() - t0, messages)


def _progress(total, enabled):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="run", desc="sweep", file=sys.stderr, smoothing=0.1,
                dynamic_ncols=True)


__all__ = ["run_sweep", "SweepSummary", "warm_up", "STATUS_FAILED"]
