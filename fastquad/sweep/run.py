"""Running a sweep on Dask: an embedded cluster by default, or any existing cluster.

Workers run chunks (one batched kernel call each, one Numba thread per worker process) and
return plain arrays; the client alone writes the results file, as chunks complete.

Every cluster fastquad starts admits only its own processes: all its connections use TLS with
a certificate made for that cluster and held only by its processes and its client (batch jobs
read it from files only the user can read), and each end must present it, so a process
without it can neither connect nor run code. None of its processes serves HTTP (no dashboard,
``/metrics`` or ``/health``) unless a dashboard is asked for. A cluster of the user's own is
used as the user set it up.
"""

import contextlib
import json
import logging
import numbers
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
from distributed import Nanny, Scheduler, Worker, WorkerPlugin

from ..errors import InputError
from ..result import STATUS_DIVERGED, STATUS_DONE, STATUS_FAILED
from .plan import plan_chunks
from .store import SweepStore

# seconds to reach a user's scheduler (--scheduler, --scheduler-file) before giving up
CONNECT_TIMEOUT = 10


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: every finished run is stored; the message says how many."""


class SweepStalled(RuntimeError):
    """No run finished for ``stall_timeout`` seconds (no workers, or none that can run the
    tasks): every finished run is stored and the same command resumes."""


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
        lines = [
            f"sweep: {self.total} runs; {self.skipped} already stored; this time "
            f"{self.done} done, {self.diverged} diverged, {self.failed} failed "
            f"in {self.seconds:.1f} s"
        ]
        for m in self.messages[:5]:
            lines.append(f"  failed chunk: {m}")
        return "\n".join(lines)


_REQUESTED_THREADS = []  # this worker's NUMBA_NUM_THREADS as first seen (recorded once)


def _worker_threads():
    """Make this worker's Numba agree with its environment; the thread count for kernels:
    the worker's ``NUMBA_NUM_THREADS`` when set, else 1.

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
    # unset (a `dask worker` started by hand): one thread, since a node usually runs one
    # worker per core and each would otherwise start a thread per core
    return 1 if want is None else max(1, min(pool, want))


def _chunk_task(point_values, point_index, replicas, keep=None, times=None):
    """Worker side: one batched kernel call. Returns plain arrays (no Result objects).

    ``point_values``: the parameter dicts of the chunk's distinct grid points; run i is
    replica ``replicas[i]`` of point ``point_index[i]``. Each point is validated once, and the
    task carries a few dicts rather than one per run. ``keep``: the names of the arrays the
    results file holds (None: all); only those travel back. ``times``: the sweep's one
    recording grid (every run records exactly at the times the file says).
    """
    from ..config import make_config, run_many
    from ..store import result_arrays

    threads = _worker_threads()
    point_cfgs = [make_config(v) for v in point_values]
    cfgs = [point_cfgs[i] for i in point_index]
    res = run_many(cfgs, np.asarray(replicas), times=times, num_threads=threads)
    arrays = result_arrays(res)
    return {k: v for k, v in arrays.items() if v is not None and (keep is None or k in keep)}


def warm_up(what=None):
    """Compile (or load from Numba's cache) the kernels that ``what`` needs: method names or
    configurations (:func:`fastquad.warmup.warm_up`; default: every registered method).
    Returns this process's id."""
    from ..warmup import warm_up as compile_ahead

    compile_ahead(what, num_threads=_worker_threads())
    return os.getpid()


EMBEDDED_CLUSTER_CONFIG = {
    "distributed.admin.tick.interval": "200ms",  # event-loop health check (default 20 ms)
    "distributed.admin.system-monitor.interval": "2s",  # CPU/memory sampling (default 0.5 s)
    "distributed.worker.memory.monitor-interval": "1s",  # nanny memory check (default 0.1 s)
    "distributed.worker.profile.enabled": False,  # statistical profiler (a dashboard feature)
}


def _no_http_server(node):
    """Give a Dask server the HTTP objects it expects, without listening anywhere."""
    from distributed.http.routing import RoutingApplication
    from tornado.httpserver import HTTPServer

    node.http_application = RoutingApplication([])
    node.http_server = HTTPServer(node.http_application)  # never bound to a port


class NoHttpScheduler(Scheduler):
    """A Dask scheduler that serves no HTTP: no dashboard, ``/metrics``, ``/health``, ``/json``.

    A Dask scheduler or worker starts its HTTP server whatever ``dashboard=False`` says (on
    the dashboard port, or a free one), and no setting turns it off; its pages need no
    certificate, whatever the security of the cluster.
    """

    def start_http_server(self, *args, **kwargs):
        _no_http_server(self)


class NoHttpWorker(Worker):
    """A Dask worker that serves no HTTP (see :class:`NoHttpScheduler`).

    For ``dask worker --worker-class fastquad.sweep.run.NoHttpWorker``.
    """

    def start_http_server(self, *args, **kwargs):
        _no_http_server(self)


class _EmbeddedWorker(NoHttpWorker):
    """A worker process of the embedded cluster: Ctrl-C is not for it.

    A terminal sends SIGINT to the whole process group; the worker processes would die with
    tracebacks while the client still stores what finished. The client stops them instead.
    """

    def __init__(self, *args, **kwargs):
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        super().__init__(*args, **kwargs)


class _EmbeddedNanny(Nanny):
    def __init__(self, *args, worker_class=None, **kwargs):
        super().__init__(*args, worker_class=worker_class or _EmbeddedWorker, **kwargs)


def max_workers():
    """Most worker processes of an embedded cluster: beyond this they only share the cores."""
    return 4 * (os.cpu_count() or 1)


def _check_workers(workers):
    if workers is None:
        return
    hi = max_workers()
    if (
        isinstance(workers, bool)
        or not isinstance(workers, numbers.Integral)
        or not 1 <= workers <= hi
    ):
        raise InputError(
            f"--workers must be an integer in [1, {hi}] (at most 4 per core of "
            f"this machine), got {workers!r}"
        )


def _embedded_cluster(workers, dashboard=False):
    """Start the embedded cluster; returns ``(client, cluster)``.

    Process workers with one thread each: Numba kernels run single-threaded inside them (its
    parallel layer inside multi-threaded workers can abort). The scheduler and the nannies
    live in this process and share the cores with the workers, so their housekeeping timers
    tick less often: tasks last seconds, not milliseconds. Everything listens on loopback,
    with TLS and a temporary certificate that only this client and the cluster hold.
    """
    from distributed import Client, SpecCluster
    from distributed.security import Security

    n = workers or os.cpu_count() or 1
    security = Security.temporary()
    common = {"host": "127.0.0.1", "protocol": "tls://", "security": security}
    if dashboard:
        scheduler = {
            "cls": Scheduler,
            "options": dict(common, port=0, dashboard=True, dashboard_address="127.0.0.1:8787"),
        }
    else:
        scheduler = {
            "cls": NoHttpScheduler,
            "options": dict(common, port=0, dashboard=False, dashboard_address=None),
        }
    worker = {
        "cls": _EmbeddedNanny,
        "options": dict(
            common,
            nthreads=1,
            dashboard=False,
            dashboard_address=None,
            memory_limit=1.0 / n,  # a share of this machine's memory each
            silence_logs=logging.WARN,
            env={"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
        ),
    }
    with dask.config.set(EMBEDDED_CLUSTER_CONFIG):
        cluster = SpecCluster(
            scheduler=scheduler,
            workers={i: worker for i in range(n)},
            worker=worker,
            security=security,
            silence_logs=logging.WARN,
            name="fastquad",
        )
        try:
            client = Client(cluster, security=security)
        except BaseException:
            cluster.close()
            raise
    if dashboard:
        print(f"dashboard: {cluster.dashboard_link}", flush=True)
    return client, cluster


@contextlib.contextmanager
def embedded_cluster(workers=None, *, dashboard=False):
    """The embedded Dask cluster of ``fastquad sweep``, as a context manager yielding its client.

    The same cluster ``run_sweep`` starts when given no client: process workers with one
    thread (and one Numba thread) each, on loopback, with TLS and a temporary certificate,
    no HTTP unless ``dashboard``. Use it to run several sweeps on one cluster::

        with embedded_cluster(2) as client:
            for sweep in sweeps:
                run_sweep(sweep, out, client=client)

    Parameters
    ----------
    workers : int, optional
        Worker processes (default: one per core; at most :func:`max_workers`).
    dashboard : bool
        Serve the dashboard on loopback and print its address.

    Yields
    ------
    distributed.Client
    """
    _check_workers(workers)
    client, cluster = _embedded_cluster(workers, dashboard)
    try:
        yield client
    finally:
        with _no_interrupts():
            _quiet_shutdown(client)
            client.close()
            cluster.close()


def _scheduler_file_address(path):
    """The scheduler address a Dask scheduler file holds; InputError if it is not one."""

    def not_one(why):
        return InputError(f"--scheduler-file: {path} is not a Dask scheduler file ({why})")

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"--scheduler-file: no such file {path}") from None
    except UnicodeDecodeError:
        raise not_one("not text") from None
    except OSError as exc:
        raise InputError(f"--scheduler-file: cannot read {path} ({exc.strerror})") from None
    if not text.strip():
        raise not_one("the file is empty")
    try:
        info = json.loads(text)
    except ValueError as exc:
        raise not_one(f"not JSON: {exc}") from None
    address = info.get("address") if isinstance(info, dict) else None
    if not isinstance(address, str) or "://" not in address:
        raise not_one('no "address" of the form protocol://host:port')
    return address


def _reason(exc, address):
    """Why a connection failed, in a few words: the innermost cause that says something."""
    chain = []
    while exc is not None and len(chain) < 20:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    if address.startswith("tls://") and any(isinstance(e, TypeError) for e in chain):
        return (
            "no TLS certificate is set up for the client: set distributed.comm.tls.ca-file, "
            ".client.cert and .client.key in the Dask configuration"
        )
    for e in reversed(chain):
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if text and not text.startswith(("Timed out trying to connect", "in <")):
            return text
    return "no answer"


def _connect(scheduler, scheduler_file):
    """A client of the user's cluster, with the Dask configuration's security; InputError
    (one line) if the scheduler cannot be reached within CONNECT_TIMEOUT seconds."""
    from distributed import Client

    if scheduler_file:
        address = _scheduler_file_address(scheduler_file)
        what = (
            f"--scheduler-file: cannot reach the Dask scheduler {address} named in {scheduler_file}"
        )
    else:
        address = str(scheduler)
        what = f"--scheduler: cannot reach a Dask scheduler at {address}"
    try:
        return Client(address, timeout=CONNECT_TIMEOUT)
    except Exception as exc:
        raise InputError(f"{what} within {CONNECT_TIMEOUT:g} s ({_reason(exc, address)})") from None


def _silence_worker_logs():
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


def _quiet_shutdown(client):
    """Stop the embedded cluster's workers from logging errors before it shuts down.

    Every result is stored by then; what a worker could still log is a heartbeat that races
    the scheduler's shutdown on a busy machine, a traceback at ERROR level that means nothing
    (dask/distributed#7105), or the cancellation of the tasks left after a Ctrl-C.
    """
    try:
        # workers only: the nannies of the embedded cluster live in this process, whose
        # logging belongs to the caller
        client.run(_silence_worker_logs, on_error="ignore")
    except Exception:  # a cluster that is already going away needs no silencing
        pass


@contextlib.contextmanager
def _no_interrupts():
    """Ctrl-C waits while the results file is closed and the cluster stopped (a second
    Ctrl-C would only leave a traceback: the file is safe either way)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_sweep(
    sweep,
    out,
    *,
    workers=None,
    scheduler=None,
    scheduler_file=None,
    client=None,
    overwrite=False,
    chunk_runs=None,
    progress=True,
    consolidate_every=30.0,
    retries=2,
    dashboard=False,
    expected_workers=None,
    stall_timeout=None,
):
    """Run every pending run of a sweep and store it in ``out``.

    Parameters
    ----------
    sweep : Sweep
    out : path of the results file (created, or resumed if it holds this sweep)
    workers : int, optional
        Worker processes of the embedded cluster (default: one per core; at most
        :func:`max_workers`).
    scheduler, scheduler_file : str, optional
        Use an existing Dask cluster instead, with the security of the Dask configuration.
        It is reached before anything is written, within ``CONNECT_TIMEOUT`` seconds.
    client : dask.distributed.Client, optional
        Use this client (the caller owns it, and the cluster's security).
    chunk_runs : int, optional
        Runs per task (default: the sweep file's ``chunk_runs``, else sized automatically).
    retries : int
        Times Dask retries a task whose worker died or that raised, before it counts as failed.
    dashboard : bool
        Serve the embedded cluster's dashboard on loopback (127.0.0.1:8787, or a free port)
        and print its address. Off by default: nothing then serves HTTP.
    expected_workers : int, optional
        Workers the cluster will have (a job-queue cluster whose jobs are still starting):
        chunks are planned for them rather than for the workers connected so far.
    stall_timeout : float, optional
        Give up, with :class:`SweepStalled`, when no run has finished for this many seconds
        (default: wait as long as it takes). Finished runs are stored; running again resumes.

    Returns
    -------
    SweepSummary

    Raises
    ------
    InputError
        Bad ``workers``; a scheduler that cannot be reached or a file that is not a
        scheduler file (nothing is written then); an ``out`` file of another sweep.
    SweepInterrupted
        Ctrl-C (KeyboardInterrupt): every finished run is stored first, the embedded cluster
        is stopped; the message says how many runs the file holds. Running again resumes.
    """
    t0 = time.perf_counter()
    user_cluster = client is None and bool(scheduler or scheduler_file)
    if scheduler and scheduler_file and client is None:
        raise InputError("--scheduler and --scheduler-file: give one, not both")
    if client is None and not user_cluster:
        _check_workers(workers)
    own = client is None
    cluster = None
    store = None
    state = {"skipped": None, "done": 0, "diverged": 0, "failed": 0, "messages": []}
    interrupted = False
    stalled = None
    try:
        if user_cluster:
            client = _connect(scheduler, scheduler_file)  # before anything is written
        store = SweepStore(out, sweep, overwrite=overwrite, consolidate_every=consolidate_every)
        todo = store.pending()
        state["skipped"] = sweep.total_runs - len(todo)
        if len(todo):
            # compile once in the client: workers then load the kernels from Numba's disk
            # cache instead of compiling at the same time (concurrent cache writes can race)
            kernels = _kernels(sweep, todo)
            warm_up(kernels)
            if client is None:
                client, cluster = _embedded_cluster(workers, dashboard)
            _compute(
                client,
                sweep,
                store,
                todo,
                kernels,
                state,
                expected_workers=expected_workers,
                stall_timeout=stall_timeout,
                chunk_runs=chunk_runs,
                retries=retries,
                progress=progress,
            )
    except KeyboardInterrupt:
        interrupted = True
    except SweepStalled as exc:
        stalled = exc
    finally:
        with _no_interrupts():
            try:
                if store is not None:
                    if interrupted or stalled:  # on disk, journal included, is what is stored
                        st = store.status()
                        state["stored"] = int(
                            np.count_nonzero((st == STATUS_DONE) | (st == STATUS_DIVERGED))
                        )
                    store.close()
            finally:
                if own and client is not None:
                    if cluster is not None:
                        _quiet_shutdown(client)
                    client.close()
                    if cluster is not None:
                        cluster.close()
    if interrupted:
        if "stored" not in state:
            raise SweepInterrupted(
                f"interrupted before {out} was opened; run the same command again to run the sweep"
            )
        raise SweepInterrupted(
            f"interrupted: {state['stored']} of {sweep.total_runs} runs are "
            f"stored in {out}; run the same command again to resume"
        )
    if stalled:
        raise SweepStalled(
            f"{stalled}: {state['stored']} of {sweep.total_runs} runs are stored in {out}; "
            "run the same command again to resume"
        )
    return SweepSummary(
        sweep.total_runs,
        state["skipped"],
        state["done"],
        state["diverged"],
        state["failed"],
        time.perf_counter() - t0,
        state["messages"],
    )


def _kernels(sweep, todo):
    """The warm-up configurations of the kernels the pending runs call."""
    from ..warmup import warm_up_configs

    points = sorted({int(r) // sweep.n_runs for r in todo})  # runs are point-major
    return [c.values for c in warm_up_configs([sweep.points[i] for i in points])]


class WarmUpPlugin(WorkerPlugin):
    """Warms up a sweep's kernels on every worker when it joins the cluster, restarted
    workers and workers of jobs that start late included (the compilation runs in a thread,
    so the worker keeps answering its scheduler meanwhile)."""

    name = "fastquad-warm-up"

    def __init__(self, kernels):
        self.kernels = kernels

    async def setup(self, worker):
        import asyncio

        await asyncio.to_thread(warm_up, self.kernels)


def _compute(
    client,
    sweep,
    store,
    todo,
    kernels,
    state,
    *,
    expected_workers,
    stall_timeout,
    chunk_runs,
    retries,
    progress,
):
    """Submit the pending runs in chunks and store each chunk as it completes; ``state``
    counts what is stored (up to date when a Ctrl-C stops the loop)."""

    client.register_plugin(WarmUpPlugin(kernels))
    connected = len(client.scheduler_info().get("workers", {}))
    n_workers = max(1, connected, expected_workers or 0)
    chunks = plan_chunks(
        sweep, todo, chunk_runs=chunk_runs or sweep.settings.get("chunk_runs"), n_workers=n_workers
    )
    keep = sorted(store.stored())
    futures = {}
    for ch in chunks:
        slots, point_index, reps = {}, [], []
        for r in ch.runs:
            point, rep = sweep.run_point(r)
            point_index.append(slots.setdefault(point, len(slots)))
            reps.append(rep)
        vals = [sweep.points[p].values for p in slots]
        fut = client.submit(
            _chunk_task,
            vals,
            np.array(point_index),
            np.array(reps),
            keep,
            sweep.times,
            pure=False,
            retries=retries,
            key=f"fastquad-chunk-{int(ch.runs[0])}-{len(ch)}-{sweep.digest[:8]}",
        )
        futures[fut] = ch
    bar = _progress(len(todo), progress)
    try:
        for fut in _as_finished(futures, stall_timeout):
            ch = futures.pop(fut)
            try:
                arrays = fut.result()
            except Exception as exc:  # a chunk that raised: record it, go on with the others
                msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]
                store.add_failure(ch.runs, msg)
                state["failed"] += len(ch)
                state["messages"].append(f"runs {int(ch.runs[0])}..{int(ch.runs[-1])}: {msg}")
            else:
                store.add(ch.runs, arrays)
                st = arrays["status"]
                state["done"] += int(np.count_nonzero(st == STATUS_DONE))
                state["diverged"] += int(np.count_nonzero(st == STATUS_DIVERGED))
            if bar is not None:
                bar.update(len(ch))
            fut.release()
    finally:
        if bar is not None:
            bar.close()


def _as_finished(futures, stall_timeout):
    """The futures as they finish; :class:`SweepStalled` when none finishes for
    ``stall_timeout`` seconds (None: no limit)."""
    from dask.distributed import as_completed, wait

    if stall_timeout is None:
        yield from as_completed(futures)
        return
    pending = set(futures)
    while pending:
        try:
            done, pending = wait(pending, timeout=stall_timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            raise SweepStalled(
                f"no run finished in {stall_timeout:g} s (no workers, or none that can run "
                f"the tasks); {len(pending)} task(s) left"
            ) from None
        yield from done


def _progress(total, enabled):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total, unit="run", desc="sweep", file=sys.stderr, smoothing=0.1, dynamic_ncols=True
    )


__all__ = [
    "run_sweep",
    "SweepSummary",
    "SweepInterrupted",
    "SweepStalled",
    "WarmUpPlugin",
    "warm_up",
    "max_workers",
    "NoHttpScheduler",
    "NoHttpWorker",
    "CONNECT_TIMEOUT",
    "STATUS_FAILED",
]
