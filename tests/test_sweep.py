"""Sweeps with real Dask: embedded cluster, external scheduler and workers, kills, resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import sweep_files
import xarray as xr

import fastquad as fq
from fastquad.config import run_many
from fastquad.sweep import load_sweep, parse_sweep, plan_chunks, run_sweep
from fastquad.sweep.store import SweepStore

SMALL = sweep_files.SMALL
SLOW = sweep_files.slow()

FASTQUAD = [sys.executable, "-m", "fastquad.cli"]


def _direct(sweep):
    eps = []
    for cfg in sweep.points:
        res = run_many([cfg] * cfg.n_runs, np.arange(cfg.n_runs))
        eps.append(res.eps_g)
    return np.concatenate(eps)


def test_embedded_cluster_sweep_matches_direct_runs_and_opens_in_xarray(tmp_path):
    sweep = parse_sweep(SMALL)
    assert sweep.total_runs == 2 * 2 * 2 * 3
    out = tmp_path / "r.h5"
    summary = run_sweep(sweep, out, workers=2, progress=False, chunk_runs=5)
    assert summary.ok and summary.done + summary.diverged == sweep.total_runs
    ds = xr.open_dataset(out, engine="h5netcdf")
    assert ds.sizes["run"] == 24 and ds.eps_g.dims == ("run", "time")
    for name in ("lr", "init_scale", "seed", "teacher_seed", "replica"):
        assert name in ds.coords
    # run i is replica i % 3 of point i // 3 (product axes, last fastest, then the zip)
    assert list(ds.lr.values[:12:3]) == [0.05, 0.05, 0.05, 0.05]
    assert list(ds.seed.values[:6:3]) == [0, 7]
    np.testing.assert_array_equal(ds.eps_g.values, _direct(sweep))
    assert (ds.status.values == fq.STATUS_DONE).all()
    assert not Path(str(out) + ".journal").exists()
    # the labelled grid: unstack the run axis into the sweep axes
    grid = ds.set_index(run=["lr", "init_scale", "seed", "replica"]).unstack("run")
    assert grid.eps_g.sizes == {
        "time": len(sweep.times),
        "lr": 2,
        "init_scale": 2,
        "seed": 2,
        "replica": 3,
    }
    assert fq.load(out).sizes == ds.sizes
    # running again finds nothing to do
    again = run_sweep(sweep, out, workers=1, progress=False)
    assert again.skipped == sweep.total_runs and again.done == 0


def test_chunking_does_not_change_results(tmp_path):
    sweep = parse_sweep(SMALL)
    with pytest.raises(AssertionError):
        # sanity: different replicas really differ, so the comparison below has power
        np.testing.assert_array_equal(_direct(sweep)[0], _direct(sweep)[1])
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        a = run_sweep(sweep, tmp_path / "a.h5", client=client, chunk_runs=1, progress=False)
        b = run_sweep(sweep, tmp_path / "b.h5", client=client, chunk_runs=24, progress=False)
    assert a.ok and b.ok
    np.testing.assert_array_equal(
        fq.read(tmp_path / "a.h5").eps_g, fq.read(tmp_path / "b.h5").eps_g
    )


def test_final_weights_are_stored_when_asked_and_change_the_sweeps_identity(tmp_path):
    text = SMALL + "\n[sweep]\nfinal_weights = true\n"
    sweep = parse_sweep(text)
    assert sweep.settings["final_weights"] is True
    assert sweep.digest != parse_sweep(SMALL).digest  # the file's layout differs
    # scheduling alone does not change what is stored: a resume may cut the work differently
    assert parse_sweep(text + "chunk_runs = 3\n").digest == sweep.digest
    out = tmp_path / "w.h5"
    assert run_sweep(sweep, out, workers=1, progress=False, chunk_runs=5).ok
    ds = xr.open_dataset(out, engine="h5netcdf")
    assert ds.W_final.dims == ("run", "student", "input") and ds.W_final.shape == (24, 2, 60)
    W, v = [], []
    for cfg in sweep.points:
        res = run_many([cfg] * cfg.n_runs, np.arange(cfg.n_runs))
        W.append(res.W)
        v.append(res.v_final)
    np.testing.assert_array_equal(ds.W_final.values, np.concatenate(W))
    np.testing.assert_array_equal(ds.v_final.values, np.concatenate(v))
    # a file made without weights is a different sweep's file
    with pytest.raises(ValueError, match="different sweep file"):
        SweepStore(out, parse_sweep(SMALL))
    plain = tmp_path / "p.h5"
    assert run_sweep(parse_sweep(SMALL), plain, workers=1, progress=False).ok
    assert "W_final" not in xr.open_dataset(plain, engine="h5netcdf")
    assert "W_final, v_final" in fq.sweep.info(out) and "W_final" not in fq.sweep.info(plain)


def test_order_parameters_are_stored_when_asked_and_the_theory_rebuilds_each_start(tmp_path):
    from dask.distributed import Client, LocalCluster

    from fastquad import plots

    curves = parse_sweep(SMALL)
    full = parse_sweep(SMALL + "\n[sweep]\norder_parameters = true\n")
    assert curves.settings["order_parameters"] is False and full.digest != curves.digest
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        assert run_sweep(curves, tmp_path / "c.h5", client=client, progress=False).ok
        assert run_sweep(full, tmp_path / "f.h5", client=client, progress=False).ok
    a, b = fq.load(tmp_path / "c.h5"), fq.load(tmp_path / "f.h5")
    assert not {"Q", "R", "v"} & set(a.data_vars) and {"Q", "R", "v"} <= set(b.data_vars)
    np.testing.assert_array_equal(a.eps_g.values, b.eps_g.values)
    Q = np.concatenate([run_many([c] * c.n_runs, np.arange(c.n_runs)).Q for c in full.points])
    np.testing.assert_array_equal(b.Q.values, Q)
    # the start rebuilt from the sweep file's seeds is the recorded one
    for r in (0, 7, 23):
        Q0, R0, v0 = curves.initial_order_parameters(r)
        np.testing.assert_allclose(Q0, b.Q.values[r, 0], rtol=1e-12)
        np.testing.assert_allclose(R0, b.R.values[r, 0], rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(v0, b.v.values[r, 0])
    idx = np.array([0, 5, 23])
    np.testing.assert_allclose(plots.theory_curves(a, idx), plots.theory_curves(b, idx), rtol=1e-9)
    with pytest.raises(ValueError, match="order_parameters = true"):
        plots.plot_order_parameters(a)
    # as a Result: no order parameters, and whatever needs them says so
    res = fq.read(tmp_path / "c.h5")
    assert res.Q is None and res.K == 2 and "K=2" in res.summary()
    assert not {"Q", "R", "v"} & set(res.to_xarray().data_vars)
    from fastquad.analysis import conserved_drift

    for need in (lambda: res.conserved, lambda: conserved_drift(res)):
        with pytest.raises(ValueError, match="order_parameters = true"):
            need()
    fq.save(tmp_path / "copy.h5", res)
    np.testing.assert_array_equal(fq.read(tmp_path / "copy.h5").eps_g, res.eps_g)


def test_sweep_validation_reports_every_problem_at_once(tmp_path):
    bad = """
[fixed]
method = "sgd"
d = 0
lr = 0.1
colour = "blue"
[axes]
lr = [0.1]
init_scale = [0.1, -1.0]
t_max = [1.0, 2.0]
[zip]
K = [1, 2]
M = [1]
[weird]
x = 1
[sweep]
final_weights = "yes"
chunk_runs = 0
"""
    with pytest.raises(ValueError) as err:
        parse_sweep(bad)
    msg = str(err.value)
    for needle in (
        "fixed.d must be",
        "fixed.colour: unknown parameter",
        "axes.lr: also given as a fixed",
        "axes.init_scale[1]",
        "axes.t_max: t_max cannot be swept",
        "zip: lists must have equal lengths",
        "[weird]: unknown section",
        "sweep.final_weights must be true or false",
        "sweep.chunk_runs must be",
    ):
        assert needle in msg, needle
    proc = subprocess.run(
        FASTQUAD
        + ["sweep", str(sweep_files.write(tmp_path, bad)), "--out", str(tmp_path / "x.h5")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "axes.init_scale[1]" in proc.stderr
    assert not (tmp_path / "x.h5").exists()


def test_a_different_sweep_against_an_existing_file_needs_overwrite(tmp_path):
    out = tmp_path / "r.h5"
    run_sweep(parse_sweep(SMALL), out, workers=1, progress=False)
    other = parse_sweep(SMALL.replace("lr = [0.05, 0.1]", "lr = [0.05, 0.2]"))
    with pytest.raises(ValueError, match="different sweep file.*--overwrite"):
        SweepStore(out, other)
    summary = run_sweep(other, out, workers=1, progress=False, overwrite=True)
    assert summary.skipped == 0 and summary.ok
    assert set(fq.load(out).lr.values) == {0.05, 0.2}


def test_a_chunk_that_raises_is_recorded_and_the_others_complete(tmp_path, monkeypatch):
    from fastquad.sweep import run as R

    sweep = parse_sweep(SMALL)
    original = R._chunk_task

    def flaky(point_values, point_index, replicas, keep=None, times=None):
        if point_values[0]["lr"] == 0.1 and point_values[0]["init_scale"] == 0.5:
            raise RuntimeError("boom in the kernel")
        return original(point_values, point_index, replicas, keep, times)

    monkeypatch.setattr(R, "_chunk_task", flaky)
    from dask.distributed import Client, LocalCluster

    out = tmp_path / "r.h5"
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        summary = run_sweep(sweep, out, client=client, chunk_runs=3, progress=False, retries=0)
    assert not summary.ok and summary.failed == 6 and "boom in the kernel" in summary.messages[0]
    ds = fq.load(out)
    failed = ds.status.values == fq.STATUS_FAILED
    assert failed.sum() == 6
    assert all("boom in the kernel" in m for m in ds.message.values[failed])
    assert (ds.status.values[~failed] == fq.STATUS_DONE).all()
    assert "failed 6" in fq.sweep.info(out)
    # resuming retries the failed runs only
    monkeypatch.setattr(R, "_chunk_task", original)
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        again = run_sweep(sweep, out, client=client, progress=False)
    assert again.ok and again.done == 6 and again.skipped == 18
    np.testing.assert_array_equal(fq.read(out).eps_g, _direct(sweep))


def test_diverged_runs_are_recorded_and_the_sweep_goes_on(tmp_path):
    text = SMALL.replace("lr = [0.05, 0.1]", "lr = [0.05, 40.0]")
    out = tmp_path / "r.h5"
    summary = run_sweep(parse_sweep(text), out, workers=1, progress=False)
    assert summary.ok and summary.diverged == 12 and summary.done == 12
    ds = fq.load(out)
    div = ds.status.values == fq.STATUS_DIVERGED
    assert (ds.lr.values[div] == 40.0).all() and np.isfinite(ds.t_stop.values[div]).all()
    assert "diverged 12" in fq.sweep.info(out)


def _journal_entries(out):
    j = Path(str(out) + ".journal")
    return len(list(j.glob("*.npz"))) if j.exists() else 0


def _stored_done(out):
    try:
        with h5py.File(out, "r") as f:
            return int((f["status"][()] >= 0).sum())
    except (OSError, KeyError):
        return 0


def test_client_killed_mid_sweep_resumes_exactly_once_bit_for_bit(tmp_path):
    """SIGKILL the `fastquad sweep` process at several moments, rerun until done; the file is
    readable after every kill and ends equal to an uninterrupted sweep."""
    sweep_file = sweep_files.write(tmp_path, SLOW)
    sweep = load_sweep(sweep_file)
    out = tmp_path / "r.h5"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    kills = 0
    for delay in (0.0, 0.7, 1.9):
        proc = subprocess.Popen(
            FASTQUAD
            + ["sweep", str(sweep_file), "--out", str(out), "--workers", "2", "--no-progress"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        # kill once some results exist (in the journal or the file), plus a delay
        sweep_files.wait_for(
            lambda: proc.poll() is not None or _journal_entries(out) + _stored_done(out) > 0,
            180,
            "first results",
        )
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        # whatever the moment, the file opens and says which runs it holds
        with h5py.File(out, "r") as f:
            assert f["status"].shape == (sweep.total_runs,)
        xr.open_dataset(out, engine="h5netcdf").close()
    assert kills >= 1
    final = subprocess.run(
        FASTQUAD + ["sweep", str(sweep_file), "--out", str(out), "--no-progress", "--workers", "2"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert final.returncode == 0, final.stderr
    res = fq.read(out)
    assert (res.status == fq.STATUS_DONE).all()
    np.testing.assert_array_equal(res.eps_g, _direct(sweep))
    np.testing.assert_array_equal(
        res.Q,
        np.concatenate([run_many([c] * c.n_runs, np.arange(c.n_runs)).Q for c in sweep.points]),
    )
    assert not Path(str(out) + ".journal").exists()


def test_interrupted_consolidation_and_torn_journal_entries_are_harmless(tmp_path):
    """A kill mid-write leaves at most a temporary copy or a half-written journal entry:
    neither is ever read; the sweep then completes with every run once."""
    sweep = parse_sweep(SMALL)
    out = tmp_path / "r.h5"
    store = SweepStore(out, sweep)
    res = run_many([sweep.points[0]] * 3, np.arange(3))
    from fastquad.store import result_arrays

    arrays = {k: v for k, v in result_arrays(res).items() if k not in ("W_final", "v_final")}
    store.add(np.arange(3), arrays)
    # the state a kill can leave: a torn copy of the file and a torn journal entry
    (tmp_path / "r.h5.tmp-deadbeef").write_bytes(b"HDF\x89 torn")
    (Path(str(out) + ".journal") / "chunk-000000003-torn.tmp").write_bytes(b"PK\x03 torn")
    del store
    summary = run_sweep(sweep, out, workers=1, progress=False)
    assert summary.skipped == 3 and summary.done == sweep.total_runs - 3
    np.testing.assert_array_equal(fq.read(out).eps_g, _direct(sweep))
    assert not list(tmp_path.glob("r.h5.tmp-*"))


def _start(cmd, log):
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def test_external_scheduler_and_workers_with_a_worker_killed_mid_sweep(tmp_path):
    """A real `dask scheduler` and two `dask worker` processes on loopback; one worker process
    is SIGKILLed while it computes; its task is retried and the sweep completes."""
    sched_file = tmp_path / "scheduler.json"
    log = open(tmp_path / "dask.log", "w")
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [
        _start(
            dask
            + [
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--scheduler-file",
                str(sched_file),
                "--dashboard-address",
                ":0",
            ],
            log,
        )
    ]
    try:
        sweep_files.wait_for(sched_file.exists, 60, "the scheduler file")
        env = dict(os.environ, NUMBA_NUM_THREADS="1")
        worker = [
            sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            "--scheduler-file",
            str(sched_file),
            "--nthreads",
            "1",
            "--nworkers",
            "1",
            "--host",
            "127.0.0.1",
            "--no-dashboard",
        ]
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    worker, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
            )
        from dask.distributed import Client

        client = Client(scheduler_file=str(sched_file))
        client.wait_for_workers(2, timeout=120)
        sweep_file = sweep_files.write(tmp_path, SLOW)
        sweep = load_sweep(sweep_file)
        out = tmp_path / "r.h5"
        import threading

        killed = {}

        def kill_a_busy_worker():
            deadline = time.time() + 120
            while time.time() < deadline:  # a task may end between a look and the kill
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy:
                    time.sleep(0.3)
                    try:
                        pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                    except Exception:
                        continue
                    os.kill(pid, signal.SIGKILL)  # the worker process, not its nanny
                    killed["pid"] = pid
                    return
                time.sleep(0.02)

        t = threading.Thread(target=kill_a_busy_worker)
        t.start()
        summary = run_sweep(sweep, out, client=client, progress=False)
        t.join()
        assert "pid" in killed
        assert summary.ok, summary.text()
        res = fq.read(out)
        assert (res.status == fq.STATUS_DONE).all()
        np.testing.assert_array_equal(res.eps_g, _direct(sweep))
        # a user's cluster keeps its workers' logging; only the embedded one is silenced at
        # shutdown (a heartbeat racing it is not news)
        from fastquad.sweep.run import _quiet_shutdown

        def level():
            import logging

            return logging.getLogger("distributed").getEffectiveLevel()

        assert all(v < 50 for v in client.run(level).values())
        _quiet_shutdown(client)
        assert set(client.run(level).values()) == {50}
        client.close()
    finally:
        for p in procs[::-1]:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        log.close()


def test_plan_groups_by_kernel_shape(tmp_path):
    text = SMALL.replace(
        "[zip]\nseed = [0, 7]\nteacher_seed = [1, 2]", "[zip]\nK = [1, 2]\nM = [1, 2]"
    )
    text = text.replace("teacher_v = [1.0, 0.5]\n", "").replace("K = 2\nM = 2\n", "")
    sweep = parse_sweep(text + "\n[sweep]\norder_parameters = true\n")
    chunks = plan_chunks(sweep, np.arange(sweep.total_runs), chunk_runs=100)
    assert len(chunks) == 2  # one per K
    Ks = {tuple(sorted({sweep.run_config(int(r))[0].K for r in c.runs})) for c in chunks}
    assert Ks == {(1,), (2,)}
    assert sorted(np.concatenate([c.runs for c in chunks])) == list(range(sweep.total_runs))
    out = tmp_path / "k.h5"
    assert run_sweep(sweep, out, workers=1, progress=False).ok
    ds = fq.load(out)
    k1 = ds.K.values == 1
    assert (
        np.isnan(ds.Q.values[k1][:, :, 1, :]).all()
        and np.isfinite(ds.Q.values[k1][:, :, 0, 0]).all()
    )


def test_automatic_chunks_shrink_towards_the_end_of_a_sweep():
    """Guided sizes: every run once, long tasks first, none outside the bounds, and the last
    tasks short, so workers finish close together."""
    from fastquad.sweep.plan import _guided_sizes

    for n, workers, largest, smallest in [
        (2000, 2, 357, 31),
        (2000, 1, 100, 10),
        (5, 2, 50, 3),
        (10_000, 8, 10_000, 1),
        (1, 4, 1, 1),
    ]:
        sizes = _guided_sizes(n, workers, largest, smallest)
        assert sum(sizes) == n and min(sizes) >= 1
        assert all(a >= b for a, b in zip(sizes, sizes[1:-1]))  # the very last takes the rest
        assert max(sizes) <= largest
        assert all(s >= min(smallest, n) for s in sizes[:-1])
    sizes = _guided_sizes(2000, 2, 357, 31)
    assert sizes[0] == 250 and sizes[-2] == 31  # a quarter of a worker's share, then the floor
    # the planner uses them: 400 runs of a few tens of ms each (planned, not run) go in
    # shrinking chunks, largest first
    sweep = parse_sweep(SLOW.replace("n_runs = 4", "n_runs = 50").replace("chunk_runs = 2", ""))
    chunks = plan_chunks(sweep, np.arange(sweep.total_runs), n_workers=2)
    lens = [len(c) for c in chunks]
    assert sorted(np.concatenate([c.runs for c in chunks])) == list(range(sweep.total_runs))
    assert lens == sorted(lens, reverse=True)
    assert len(lens) >= 10 and lens[0] >= 4 * lens[-1]


@pytest.mark.parametrize("kind,marker", [("slurm", "#SBATCH"), ("pbs", "#PBS")])
def test_jobqueue_launcher_writes_single_threaded_worker_jobs(kind, marker):
    """The SLURM/PBS launcher of runners/ (dry run: the job script, nothing submitted)."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [
            sys.executable,
            str(root / "runners" / "jobqueue.py"),
            kind,
            "--dry-run",
            "--cores",
            "6",
            "--walltime",
            "00:30:00",
            "--scheduler-host",
            "127.0.0.1",
            "--cache-dir",
            "/shared/numba-cache",
            "--prologue",
            "module load python/3.11",
            "--job-directive=--constraint=skylake",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    assert marker in script and "00:30:00" in script
    assert "export NUMBA_NUM_THREADS=1" in script
    # one warm-up per job, into the cache the nodes share, before its workers start
    assert "export NUMBA_CACHE_DIR=/shared/numba-cache\nfastquad warm-up\n" in script
    assert script.index("fastquad warm-up") < script.index("distributed.cli.dask_worker")
    assert "\nmodule load python/3.11\n" in script
    assert f"{marker} --constraint=skylake" in script
    # workers retire 3 min (a tenth) before the 30 min walltime, 1.5 min apart at most
    assert "--lifetime 1620s --lifetime-stagger 90s" in script
    # PBS hands the environment to the job (NUMBA_CACHE_DIR, PATH)
    assert ("#PBS -V" in script) == (kind == "pbs")
    assert "--nthreads 1" in script and "--nworkers 6" in script
    assert "tls://127.0.0.1:" in script


_LATE_ENV = r"""
import os
os.environ.pop("NUMBA_NUM_THREADS", None)
import numba
from numba import njit, prange
import numpy as np

@njit(parallel=True)
def first(x):
    for i in prange(x.shape[0]):
        x[i] += 1.0
    return x

first(np.zeros(8))  # the thread pool starts with the default size
os.environ["NUMBA_NUM_THREADS"] = "1"  # what a Dask nanny does after the worker started
if {use_fix}:
    from fastquad.sweep.run import _worker_threads
    print("threads", _worker_threads())

@njit
def later(x):  # any compilation re-reads NUMBA_NUM_THREADS
    return x + 1.0

print("compiled", later(1.0))
"""


@pytest.mark.parametrize("use_fix", [True, False])
def test_a_worker_whose_thread_setting_arrives_late_can_still_compile(use_fix):
    """A nanny sets NUMBA_NUM_THREADS after the worker imported Numba; without the worker-side
    reconciliation the next compilation in that worker raises (as in a cold-cache sweep)."""
    env = dict(os.environ)
    env.pop("NUMBA_NUM_THREADS", None)
    out = subprocess.run(
        [sys.executable, "-c", _LATE_ENV.format(use_fix=use_fix)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if use_fix:
        assert out.returncode == 0, out.stderr[-2000:]
        assert "threads 1" in out.stdout and "compiled 2.0" in out.stdout
    elif (os.cpu_count() or 1) > 1:  # the failure needs a default pool of more than one thread
        assert out.returncode != 0 and "Cannot set NUMBA_NUM_THREADS" in out.stderr


def _kernels_with_machine_code():
    from fastquad.kernels import ode, sgd

    return sorted(
        name
        for name, k in (("sgd_batch", sgd.sgd_batch), ("integrate_batch", ode.integrate_batch))
        if k.overloads
    )


def test_a_worker_that_joins_later_is_warmed_up_when_it_joins():
    # a job-queue worker may start long after the sweep: the plugin warms it up on joining
    from distributed import Client, LocalCluster

    from fastquad.sweep.run import WarmUpPlugin
    from fastquad.warmup import warm_up_configs

    kernels = [c.values for c in warm_up_configs(["sgd", "ode"])]
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(WarmUpPlugin(kernels))
        first = set(client.scheduler_info()["workers"])
        cluster.scale(2)
        client.wait_for_workers(2, timeout=60)
        # the plugin's setup has run before a worker takes tasks; give its thread the time
        deadline = time.time() + 60
        while True:
            got = client.run(_kernels_with_machine_code)
            if all(v == ["integrate_batch", "sgd_batch"] for v in got.values()):
                break
            assert time.time() < deadline, got
            time.sleep(0.5)
        assert set(got) - first, "no second worker"


def test_a_sweep_that_can_make_no_progress_stops_and_resumes(tmp_path):
    # a cluster without workers (every job lost, none replaced): the sweep gives up after
    # stall_timeout with a clear message, and the same call with workers completes the file
    from distributed import Client, LocalCluster

    from fastquad.sweep.run import SweepStalled

    sweep = parse_sweep(SMALL)
    out = tmp_path / "r.h5"
    with LocalCluster(n_workers=0, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            t0 = time.time()
            with pytest.raises(SweepStalled, match="no run finished in 2 s") as exc:
                run_sweep(sweep, out, client=client, stall_timeout=2.0, progress=False)
            assert time.time() - t0 < 60
            assert f"0 of {sweep.total_runs} runs are stored in {out}" in str(exc.value)
            cluster.scale(1)
            summary = run_sweep(sweep, out, client=client, stall_timeout=120.0, progress=False)
    assert summary.done + summary.diverged == sweep.total_runs
    ds = fq.load(out)
    assert (ds.status.values != fq.STATUS_PENDING).all()  # nothing left pending


def test_walltimes_are_parsed_and_workers_retire_before_them():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runners"))
    try:
        import jobqueue
    finally:
        sys.path.pop(0)
    assert jobqueue.walltime_seconds("01:00:00") == 3600
    assert jobqueue.walltime_seconds("2-00:00:30") == 2 * 86400 + 30
    assert jobqueue.walltime_seconds("10:00") == 600
    for bad in ("abc", "30", "1:2:3:4", "x-01:00", "nan:00", "-1:00"):
        with pytest.raises(ValueError, match="--walltime must be"):
            jobqueue.walltime_seconds(bad)
    for walltime in ("00:10:00", "01:00:00", "12:00:00", "7-00:00:00"):
        total = jobqueue.walltime_seconds(walltime)
        args = jobqueue.lifetime_args(walltime)
        life = float(args[1].rstrip("s"))
        stagger = float(args[3].rstrip("s"))
        assert life + stagger < total and total - life <= 600  # gone before the walltime
    assert jobqueue.lifetime_args("00:01:00") == []  # too short to retire early


@pytest.mark.parametrize("env, want", [(None, 1), ("1", 1), ("2", 2)])
def test_a_hand_started_worker_runs_kernels_on_one_thread_unless_told(env, want):
    # a `dask worker` started by hand has no NUMBA_NUM_THREADS: one thread per worker, not
    # one per core in every worker of the node
    environ = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    if env is not None:
        environ["NUMBA_NUM_THREADS"] = env
    code = "from fastquad.sweep.run import _worker_threads; print(_worker_threads())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
    )
    assert int(out.stdout) == min(want, os.cpu_count())


def test_a_dry_run_binds_its_scheduler_to_loopback():
    # a dry run starts a real scheduler just to print the script: nothing on the network
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, str(root / "runners" / "jobqueue.py"), "slurm", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "dask_worker tls://127.0.0.1:" in proc.stdout
