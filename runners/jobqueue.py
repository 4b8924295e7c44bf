"""Run a fastquad sweep on a SLURM or PBS cluster with dask-jobqueue.

Each batch job starts ``--cores`` Dask worker processes with one thread each (and
``NUMBA_NUM_THREADS=1``), the layout fastquad's kernels want. This script runs on the login
node: it holds the Dask scheduler and the client, which alone writes the results file, so the
file lives where this script runs.

Install the extra once (on the login node and in the environment the jobs use)::

    pip install -e ".[cluster]"

Worked example (SLURM; 4 jobs of 32 cores, 2 hours each)::

    python runners/jobqueue.py slurm --jobs 4 --cores 32 --memory 64GB --walltime 02:00:00 \
        --queue compute --account myproject \
        --sweep data/sweeps/example.toml --out results/example.h5

PBS is the same with ``pbs`` (``--queue workq``, and ``--resource-spec`` if the site needs
one). A job the scheduler refuses stops the runner at once, with its reason (exit 2); a job
that leaves the queue (walltime, node failure, preemption) is replaced; workers retire before
the walltime; ``--stall-timeout`` ends a sweep that can make no progress (exit 1, the file
resumable). Each job warms the sweep's kernels up once before its workers start
(``--cache-dir``: the kernel cache the nodes share). More: docs/sweeps.md.

``--dry-run`` prints the job script and submits nothing. ``--scheduler-file FILE`` starts
the cluster and only writes the scheduler file, for ``fastquad sweep --scheduler-file FILE``
from another shell (stop it with Ctrl-C). Running the same command again after an interruption
(walltime, a lost login session) resumes the sweep: every run is stored exactly once.

The cluster admits only its own processes: every connection uses TLS with a temporary
certificate made for this cluster, which the jobs read from ``--shared-temp-directory`` (a
folder the compute nodes see, default the current one; the files are readable by the user
only and removed when this script ends). No process serves HTTP. With ``--scheduler-file``,
the client's certificate is written beside the scheduler file, and the variables that point
Dask at it are printed, for the shell that runs the sweep.
"""

import argparse
import os
import shlex
import sys
import threading
import time


def make_cluster(kind, args):
    import dask_jobqueue
    from distributed.security import Security

    from fastquad.sweep.run import NoHttpScheduler

    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[kind]
    kw = dict(
        cores=args.cores,
        processes=args.cores,
        memory=args.memory,
        walltime=args.walltime,
        queue=args.queue,
        job_script_prologue=job_prologue(args),
        log_directory=args.log_directory,
        # TLS (tls:// addresses) with a certificate made now; the jobs' workers get it
        # through files in the shared folder, named in their command line
        security=Security.temporary(),
        shared_temp_directory=os.path.abspath(args.shared_temp_directory or os.getcwd()),
        scheduler_cls=NoHttpScheduler,
        worker_extra_args=["--no-dashboard", "--worker-class", "fastquad.sweep.run.NoHttpWorker"]
        + lifetime_args(args.walltime),
        scheduler_options={
            "dashboard_address": None,
            **({"host": args.scheduler_host} if args.scheduler_host else {}),
            # a dry run starts a scheduler only to print the job script: on loopback
            **({"host": "127.0.0.1"} if dry_loopback(args) else {}),
        },
        # PBS: -V hands the submitting shell's environment (PATH, NUMBA_CACHE_DIR) to the job
        job_extra_directives=list(args.job_directive) + (["-V"] if kind == "pbs" else []),
    )
    if args.python:
        kw["python"] = args.python
    if args.interface:
        kw["interface"] = args.interface
    if args.account:
        kw["account"] = args.account
    if kind == "pbs" and args.resource_spec:
        kw["resource_spec"] = args.resource_spec
    return cls(**kw)


def dry_loopback(args):
    """A dry run without a host or interface named binds its scheduler to loopback."""
    return bool(getattr(args, "dry_run", False)) and not (args.scheduler_host or args.interface)


def walltime_seconds(text):
    """Seconds of a walltime written [[D-]HH:]MM:SS (Slurm and PBS)."""
    days, dash, rest = text.rpartition("-")
    try:
        parts = [float(x) for x in rest.split(":")]
        days = float(days) if dash else 0.0
    except ValueError:
        parts = []
    if not 2 <= len(parts) <= 3 or any(not 0 <= x < 1e9 for x in parts + [days]):
        raise ValueError(f"--walltime must be [[D-]HH:]MM:SS, got {text!r}")
    seconds = 0.0
    for x in parts:
        seconds = 60 * seconds + x
    return seconds + 86400 * days


def lifetime_args(walltime):
    """Worker options that retire each worker before its job's walltime kills it (its tasks
    move to other workers and a replacement job is submitted): the walltime less a margin of
    a tenth (at least 1 min, at most 10 min), staggered so the workers do not all leave at
    once."""
    total = walltime_seconds(walltime)
    margin = min(600.0, max(60.0, total / 10))
    if total <= 2 * margin:
        return []  # too short to retire early: the job simply ends
    stagger = min(margin / 2, 300.0)
    return ["--lifetime", f"{int(total - margin)}s", "--lifetime-stagger", f"{int(stagger)}s"]


def active_job_ids(kind):
    """Ids of this user's queued or running jobs, or None when the scheduler cannot say."""
    import getpass
    import subprocess

    user = getpass.getuser()
    cmd = {
        "slurm": ["squeue", "-h", "-o", "%i", "-u", user],
        "pbs": ["qselect", "-u", user, "-s", "QRHW"],
    }[kind]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return {word.split(".")[0] for word in out.stdout.split()}


class JobKeeper(threading.Thread):
    """Keeps ``jobs`` jobs in the queue: a job that has left it (its walltime, a node
    failure, preemption, a scancel) is dropped from the cluster and a new one submitted.

    dask-jobqueue only learns that a job is gone when asked to close it, and Dask's adaptive
    scaling counts the lost job as still planned, so neither replaces it by itself.
    """

    def __init__(self, kind, cluster, jobs, every=10.0):
        super().__init__(name="fastquad-job-keeper", daemon=True)
        self.kind, self.cluster, self.jobs, self.every = kind, cluster, jobs, every
        self.seen = set()  # ids seen in the queue: a job just submitted may not show yet
        self.replaced = 0
        self.stopped = threading.Event()

    def check(self):
        ids = active_job_ids(self.kind)
        if ids is None:
            return
        gone = []
        for name, job in list(self.cluster.workers.items()):
            job_id = getattr(job, "job_id", None)
            if job_id is None:
                continue
            if job_id in ids:
                self.seen.add(job_id)
            elif job_id in self.seen:
                gone.append((name, job_id))
        if gone:
            for name, _ in gone:
                # out of both: the cluster would otherwise try to cancel the finished job,
                # fail, and start nothing
                self.cluster.worker_spec.pop(name, None)
                self.cluster.workers.pop(name, None)
            self.replaced += len(gone)
            print(
                f"jobqueue: job {', '.join(j for _, j in gone)} left the queue (time limit, "
                f"node failure or preemption); submitting {len(gone)} new job(s)",
                file=sys.stderr,
                flush=True,
            )
            self.cluster.scale(jobs=self.jobs)

    def run(self):
        while not self.stopped.wait(self.every):
            self.check()


def submit_jobs(cluster, jobs):
    """Submit the cluster's first ``jobs`` jobs and wait until the scheduler has taken them.
    Returns None, or the scheduler's message when it refuses them (a request no node can
    satisfy, an unknown queue or account): the runner then stops at once instead of waiting
    for workers that will never come. (``scale`` would submit in the background, where a
    refusal is only logged.)"""
    while len(cluster.worker_spec) < jobs:
        cluster.worker_spec.update(cluster.new_worker_spec())
    try:
        cluster.sync(cluster._correct_state_internal)
    except RuntimeError as exc:  # dask-jobqueue: the submit command's exit code and output
        from distributed.core import Status

        for name, job in list(cluster.workers.items()):
            if getattr(job, "job_id", None) is None:  # never submitted: nothing to close
                job.status = Status.failed
                cluster.workers.pop(name)
                cluster.worker_spec.pop(name, None)
        text = str(exc)
        reason = text.split("stderr:", 1)[-1].strip() or text
        return " ".join(reason.split())
    return None


def job_prologue(args):
    """What a job runs before its workers start: one thread per worker, the environment, the
    shared kernel cache, and one warm-up per job (the job's workers then load the kernels
    instead of compiling them at once; a node with another kind of CPU compiles its own)."""
    lines = ["export NUMBA_NUM_THREADS=1", "export OMP_NUM_THREADS=1"]
    lines += args.prologue
    if args.activate:
        lines.append(f"source {shlex.quote(args.activate)}")
    cache = args.cache_dir or os.environ.get("NUMBA_CACHE_DIR")
    if cache:
        lines.append(f"export NUMBA_CACHE_DIR={shlex.quote(os.path.abspath(cache))}")
    warm = ["fastquad", "warm-up"]
    if args.sweep:
        warm += ["--sweep", os.path.abspath(args.sweep)]
    lines.append(shlex.join(warm))
    return lines


_CREDENTIAL_FILES = (
    ("ca_file", ".ca.pem"),
    ("cert", ".client-cert.pem"),
    ("key", ".client-key.pem"),
)


def _write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fd, 0o600)  # a file that existed keeps its mode otherwise
        fh.write(text)


def write_client_credentials(security, scheduler_file):
    """Write the client's CA, certificate and key beside the scheduler file (readable by the
    user only); returns the environment variables that point Dask's configuration at them."""
    tls = security.get_tls_config_for_role("client")
    paths = {}
    for field, suffix in _CREDENTIAL_FILES:
        paths[field] = os.path.abspath(str(scheduler_file) + suffix)
        _write_private(paths[field], tls[field])
    return {
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": paths["ca_file"],
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": paths["cert"],
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": paths["key"],
    }


def remove_client_credentials(scheduler_file):
    """Remove the files :func:`write_client_credentials` wrote."""
    for _, suffix in _CREDENTIAL_FILES:
        try:
            os.unlink(str(scheduler_file) + suffix)
        except FileNotFoundError:
            pass


def parser():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("kind", choices=["slurm", "pbs"])
    p.add_argument("--jobs", type=int, default=1, help="batch jobs to start")
    p.add_argument("--cores", type=int, default=8, help="cores (= worker processes) per job")
    p.add_argument("--memory", default="16GB", help="memory per job")
    p.add_argument("--walltime", default="01:00:00")
    p.add_argument("--queue", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--resource-spec", default=None, help="PBS resource spec")
    p.add_argument(
        "--activate",
        default=None,
        help="a venv activate script the jobs source before starting workers",
    )
    p.add_argument("--log-directory", default=None)
    p.add_argument(
        "--scheduler-host",
        default=None,
        help="address the scheduler listens on (default: the login node's)",
    )
    p.add_argument(
        "--shared-temp-directory",
        default=None,
        help="folder the compute nodes also see, for the cluster's temporary TLS "
        "certificate (default: the current folder)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="folder the nodes share for Numba's compiled kernels (default: NUMBA_CACHE_DIR "
        "of this shell, if set)",
    )
    p.add_argument(
        "--python", default=None, help="the Python the jobs start workers with (default: this one)"
    )
    p.add_argument(
        "--interface",
        default=None,
        help="network interface the scheduler and the workers bind to (e.g. ib0, lo)",
    )
    p.add_argument(
        "--job-directive",
        action="append",
        default=[],
        metavar="LINE",
        help="an extra #SBATCH / #PBS directive, without its prefix (repeatable), e.g. "
        "--job-directive=--constraint=skylake",
    )
    p.add_argument(
        "--prologue",
        action="append",
        default=[],
        metavar="LINE",
        help="a shell line the jobs run before starting workers (repeatable), e.g. "
        "'module load python/3.11'",
    )
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="exit 1 (the file resumable) when no run finishes for this long: no job "
        "starts, or every job is lost and none replaces it (default: 3600)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--sweep", help="sweep file to run")
    p.add_argument("--out", help="results file")
    p.add_argument("--scheduler-file", help="only start the cluster and write this file")
    p.add_argument("--dry-run", action="store_true", help="print the job script, submit nothing")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if not args.dry_run and not args.scheduler_file and not (args.sweep and args.out):
        print(
            "jobqueue: give --sweep and --out, or --scheduler-file, or --dry-run", file=sys.stderr
        )
        return 2
    try:
        walltime_seconds(args.walltime)
    except ValueError as exc:
        print(f"jobqueue: {exc}", file=sys.stderr)
        return 2
    cluster = make_cluster(args.kind, args)
    keeper = None
    try:
        if args.dry_run:
            print(cluster.job_script())
            return 0
        refused = submit_jobs(cluster, args.jobs)
        if refused:
            print(f"jobqueue: the scheduler refuses the job: {refused}", file=sys.stderr)
            return 2
        # a job lost to its walltime, a node failure or preemption is replaced
        keeper = JobKeeper(args.kind, cluster, args.jobs)
        keeper.start()
        from dask.distributed import Client

        client = Client(cluster)
        if args.scheduler_file:
            client.write_scheduler_file(args.scheduler_file)
            creds = write_client_credentials(cluster.security, args.scheduler_file)
            try:
                print(
                    f"scheduler file written to {args.scheduler_file}; the cluster admits "
                    "only clients with its certificate: in the shell that runs the sweep, "
                    "first"
                )
                for name, value in creds.items():
                    print(f"  export {name}={shlex.quote(value)}")
                print("Ctrl-C to stop the cluster")
                while True:
                    time.sleep(60)
            finally:
                remove_client_credentials(args.scheduler_file)
        from fastquad.sweep import load_sweep, run_sweep
        from fastquad.sweep.run import SweepStalled

        try:
            summary = run_sweep(
                load_sweep(args.sweep),
                args.out,
                client=client,
                expected_workers=args.jobs * args.cores,
                stall_timeout=args.stall_timeout,
                progress=not args.no_progress,
            )
        except SweepStalled as exc:
            print(f"jobqueue: {exc}", file=sys.stderr)
            return 1
        print(summary.text())
        return 0 if summary.ok else 1
    except KeyboardInterrupt:
        return 130
    finally:
        if keeper is not None:
            keeper.stopped.set()  # no new job while the cluster closes
            keeper.join()
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
