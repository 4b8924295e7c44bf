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
"""

import argparse
import sys
import time


def make_cluster(kind, args):
    import dask_jobqueue

    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[kind]
    kw = dict(cores=args.cores, processes=args.cores, memory=args.memory,
              walltime=args.walltime, queue=args.queue,
              job_script_prologue=["export NUMBA_NUM_THREADS=1", "export OMP_NUM_THREADS=1"]
              + ([f"source {args.activate}"] if args.activate else []),
              log_directory=args.log_directory,
              scheduler_options={"dashboard_address": None,
                                 **({"host": args.scheduler_host} if args.scheduler_host else {})})
    if args.account:
        kw["account"] = args.account
    if kind == "pbs" and args.resource_spec:
        kw["resource_spec"] = args.resource_spec
    return cls(**kw)


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("kind", choices=["slurm", "pbs"])
    p.add_argument("--jobs", type=int, default=1, help="batch jobs to start")
    p.add_argument("--cores", type=int, default=8, help="cores (= worker processes) per job")
    p.add_argument("--memory", default="16GB", help="memory per job")
    p.add_argument("--walltime", default="01:00:00")
    p.add_argument("--queue", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--resource-spec", default=None, help="PBS resource spec")
    p.add_argument("--activate", default=None,
                   help="a venv activate script the jobs source before starting workers")
    p.add_argument("--log-directory", default=None)
    p.add_argument("--scheduler-host", default=None,
                   help="address the scheduler listens on (default: the login node's)")
    p.add_argument("--sweep", help="sweep file to run")
    p.add_argument("--out", help="results file")
    p.add_argument("--scheduler-file", help="only start the cluster and write this file")
    p.add_argument("--dry-run", action="store_true", help="print the job script, submit nothing")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if not args.dry_run and not args.scheduler_file and not (args.sweep and args.out):
        print("jobqueue: give --sweep and --out, or --scheduler-file, or --dry-run",
              file=sys.stderr)
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
            print(f"scheduler file written to {args.scheduler_file}; Ctrl-C to stop the cluster")
            while True:
                time.sleep(60)
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
