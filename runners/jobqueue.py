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
one). ``--dry-run`` prints the job script and submits nothing. ``--scheduler-file FILE`` starts
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
        worker_extra_args=["--no-dashboard", "--worker-class", "fastquad.sweep.run.NoHttpWorker"],
        scheduler_options={
            "dashboard_address": None,
            **({"host": args.scheduler_host} if args.scheduler_host else {}),
        },
    )
    if args.account:
        kw["account"] = args.account
    if kind == "pbs" and args.resource_spec:
        kw["resource_spec"] = args.resource_spec
    return cls(**kw)


def job_prologue(args):
    """What a job runs before its workers start: one thread per worker, the environment, the
    shared kernel cache, and one warm-up per job (the job's workers then load the kernels
    instead of compiling them at once; a node with another kind of CPU compiles its own)."""
    lines = ["export NUMBA_NUM_THREADS=1", "export OMP_NUM_THREADS=1"]
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
    cluster = make_cluster(args.kind, args)
    try:
        if args.dry_run:
            print(cluster.job_script())
            return 0
        cluster.scale(jobs=args.jobs)
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

        summary = run_sweep(load_sweep(args.sweep), args.out, client=client)
        print(summary.text())
        return 0 if summary.ok else 1
    except KeyboardInterrupt:
        return 130
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
