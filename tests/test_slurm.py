"""The job-queue runner against a real Slurm: runners/jobqueue.py submits batch jobs whose Dask
workers run a small sweep, and the results equal those of the same sweep run locally, bit for
bit.

Needs a running Slurm on this machine whose jobs see this file system (CI brings up a
single-node one on 127.0.0.1 with ``bash .ci/slurm.sh up``). Without one the test is skipped,
except under ``CI=true``, where a missing Slurm is a failure: CI must not pass by skipping it.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FASTQUAD = [sys.executable, "-m", "fastquad.cli"]

SWEEP = """
[fixed]
method = "sgd"
d = 50
K = 2
M = 2
t_max = 2.0
n_runs = 6

[axes]
lr = [0.05, 0.1]
"""

# the arrays of a results file that hold the runs' results (those present are compared)
RESULTS = ("eps_g", "status", "t_stop")

HOW = "bring one up with `bash .ci/slurm.sh up` (as root)"


def _slurm_missing():
    """Why Slurm cannot be used here, or None if it can."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return f"Slurm is not installed (no sinfo/sbatch on PATH); {HOW}"
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        return "dask-jobqueue is not installed (pip install -e '.[test]')"
    try:
        res = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return f"Slurm is not up (sinfo timed out); {HOW}"
    states = res.stdout.split()
    if res.returncode != 0:
        return f"Slurm is not up (sinfo: {res.stderr.strip() or res.returncode}); {HOW}"
    if not any(s in ("idle", "mix", "alloc", "comp") for s in states):
        return f"Slurm has no usable node (node states: {states or 'none'}); {HOW}"
    return None


def _require_slurm():
    """Skip the test without a usable Slurm; under CI=true, fail it instead."""
    why = _slurm_missing()
    if why is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {why}")
        pytest.skip(why)


def _run(cmd, cwd, timeout=300):
    res = subprocess.run(
        cmd, cwd=cwd, env=os.environ.copy(), capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == 0, (
        f"{' '.join(map(str, cmd))} exited with {res.returncode}\n"
        f"--- stdout ---\n{res.stdout[-4000:]}\n--- stderr ---\n{res.stderr[-4000:]}"
    )
    return res


@pytest.mark.slurm
def test_jobqueue_sweep_on_slurm_equals_local(tmp_path):
    _require_slurm()
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP)
    logs = tmp_path / "logs"
    on_slurm, local = tmp_path / "slurm.h5", tmp_path / "local.h5"

    _run(
        [
            sys.executable,
            ROOT / "runners" / "jobqueue.py",
            "slurm",
            "--jobs", "1",
            "--cores", "2",
            "--memory", "2GB",
            "--walltime", "00:10:00",
            "--interface", "lo",
            "--shared-temp-directory", tmp_path,
            "--log-directory", logs,
            "--sweep", sweep,
            "--out", on_slurm,
        ],
        cwd=tmp_path,
    )  # fmt: skip
    # the sweep ran on workers of a Slurm job: the job wrote its log, the workers started
    job_logs = sorted(logs.glob("*")) if logs.is_dir() else []
    assert job_logs, f"no job log in {logs}"
    text = "\n".join(p.read_text(errors="replace") for p in job_logs)
    assert "Start worker" in text, f"no job log mentions 'Start worker': {job_logs}"
    # the job warmed the sweep's kernels up (its script runs it before starting the workers)
    assert "ready in" in text and "sgd (sampler=direct" in text, text[-3000:]

    _run([*FASTQUAD, "sweep", sweep, "--out", local, "--workers", "1"], cwd=tmp_path)

    with h5py.File(on_slurm, "r") as a, h5py.File(local, "r") as b:
        names = [n for n in RESULTS if n in b]
        assert names, f"none of {RESULTS} in {local}: {list(b)}"
        for name in names:
            assert name in a, f"{name} missing from {on_slurm}"
            assert np.array_equal(a[name][()], b[name][()], equal_nan=True), (
                f"{name} differs between the Slurm run and the local run"
            )


@pytest.mark.slurm
def test_a_job_no_node_can_run_is_refused_at_once_with_slurms_message(tmp_path):
    _require_slurm()
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP)
    out = tmp_path / "r.h5"
    cmd = [sys.executable, ROOT / "runners" / "jobqueue.py", "slurm", "--jobs", "1"]
    cmd += ["--cores", "2", "--memory", "4000GB", "--walltime", "00:05:00", "--interface", "lo"]
    cmd += ["--shared-temp-directory", tmp_path, "--sweep", sweep, "--out", out]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr[-3000:]
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("jobqueue: the scheduler refuses the job:"), res.stderr[-3000:]
    assert "not available" in line  # Slurm's own words
    assert not out.exists()


# about 75 s of single-threaded work: longer than the 1 minute walltime of a 1-worker job
LONG = """
[fixed]
method = "sgd"
d = 200
K = 2
M = 2
t_max = 6000.0
n_times = 11
n_runs = 25

[axes]
lr = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
"""


@pytest.mark.slurm
def test_a_job_killed_by_its_time_limit_is_replaced_and_the_sweep_completes(tmp_path):
    _require_slurm()
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(LONG)
    logs = tmp_path / "logs"
    out = tmp_path / "r.h5"
    cmd = [sys.executable, ROOT / "runners" / "jobqueue.py", "slurm", "--jobs", "1"]
    cmd += ["--cores", "1", "--memory", "1GB", "--walltime", "00:01:00", "--interface", "lo"]
    cmd += ["--shared-temp-directory", tmp_path, "--log-directory", logs]
    cmd += ["--stall-timeout", "240", "--no-progress", "--sweep", sweep, "--out", out]
    res = _run(cmd, cwd=tmp_path, timeout=900)
    assert "left the queue" in res.stderr and "submitting 1 new job(s)" in res.stderr
    text = "\n".join(p.read_text(errors="replace") for p in sorted(logs.glob("*")))
    assert "DUE TO TIME LIMIT" in text, text[-3000:]  # Slurm killed a job ...
    assert len(list(logs.glob("*.out"))) >= 2  # ... and another one took over
    with h5py.File(out, "r") as f:
        status = f["status"][()]
    assert status.size == 150 and np.isin(status, (0, 1)).all()  # every run done once
