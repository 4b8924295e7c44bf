"""Sweep scaling: Dask with 1 and 2 workers against the batched kernel called directly.

Measured in one run, on the same sweep (online SGD, 2000+ runs over a grid of learning rates
and initial scales):
  - the kernel called directly in this process with all cores (``config.run_many`` per kernel
    shape, Numba threads = cores): the upper bound;
  - ``fastquad sweep`` machinery (``run_sweep``) on an embedded LocalCluster with 1 worker and
    with 2 workers (one thread each), writing the HDF5 file as results arrive;
and the client's peak memory for 2k and 20k runs (small runs: memory must not grow with the
number of runs, results stream to disk).

    python benchmarks/bench_sweep.py            # about 4 minutes on 2 cores (best of 2)
    python benchmarks/bench_sweep.py --quick
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import capacity_line

SWEEP = """
[fixed]
method = "sgd"
d = {d}
K = 2
M = 2
teacher_v = [1.0, 0.5]
t_max = {t_max}
n_times = 41
n_runs = {n_runs}
label_noise = 0.1

[axes]
lr = {lrs}
init_scale = [0.05, 0.1, 0.2, 0.4, 0.8]
"""


def sweep_text(n_total, d, t_max):
    lrs = [round(0.01 + 0.01 * i, 3) for i in range(10)]
    n_runs = max(1, n_total // (len(lrs) * 5))
    return SWEEP.format(d=d, t_max=t_max, n_runs=n_runs, lrs=lrs)


def direct(sweep, threads):
    import numba

    from fastquad.config import batch_key, run_many

    numba.set_num_threads(threads)
    groups = {}
    for i in range(sweep.total_runs):
        cfg, rep = sweep.run_config(i)
        groups.setdefault(batch_key(cfg), []).append((cfg, rep))
    t0 = time.perf_counter()
    for members in groups.values():
        run_many([c for c, _ in members], np.array([r for _, r in members]))
    return time.perf_counter() - t0


def via_dask(sweep, workers, out):
    """(seconds of the sweep on a started, warmed cluster; seconds to start and warm it)."""
    from fastquad.sweep import run_sweep
    from fastquad.sweep.run import _client, _quiet_shutdown, warm_up

    t0 = time.perf_counter()
    # the very cluster `fastquad sweep` embeds, started here so that its start-up and warm-up
    # are timed apart
    client, cluster = _client(workers, None, None)
    client.run(warm_up, ("sgd",))
    start = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        summary = run_sweep(sweep, out, client=client, progress=False, overwrite=True)
        assert summary.ok
        return time.perf_counter() - t0, start
    finally:
        _quiet_shutdown(client)
        client.close()
        cluster.close()


def child_peak_rss(n_total, tmp):
    """Run a sweep of tiny runs in a fresh process; report its peak RSS (MiB)."""
    code = f"""
import resource, json, sys
from fastquad.sweep import parse_sweep, run_sweep
sw = parse_sweep({sweep_text(n_total, 50, 1.0)!r})
s = run_sweep(sw, {str(Path(tmp) / f'mem{n_total}.h5')!r}, workers=2, progress=False,
              overwrite=True, chunk_runs=50)
print(json.dumps(dict(runs=sw.total_runs, ok=s.ok,
                      rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    # a worker's heartbeat can race the cluster's shutdown between measurements: not news
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats (best is kept)")
    ap.add_argument("--t-max", type=float, default=None,
                    help="length of each run in units of t (default 40; 8 with --quick): "
                         "longer runs spread the sweep's fixed costs over more work")
    args = ap.parse_args()
    from fastquad.sweep import parse_sweep
    from fastquad.sweep.run import warm_up

    n_total = 2000
    t_max = args.t_max or (8.0 if args.quick else 40.0)
    sweep = parse_sweep(sweep_text(n_total, 200, t_max))
    warm_up(("sgd",))
    cores = os.cpu_count()
    print(capacity_line())
    print(f"sweep of {sweep.total_runs} online-SGD runs (d=200, K=M=2, t_max={t_max}), "
          f"{cores} cores\n")
    with tempfile.TemporaryDirectory() as tmp:
        # best of interleaved repeats: a change of load on a shared machine hits all three
        t_direct = t1 = t2 = float("inf")
        for i in range(args.repeats):  # a new file each time: an existing one would resume
            t_direct = min(t_direct, direct(sweep, cores))
            t, s1 = via_dask(sweep, 1, Path(tmp) / f"w1-{i}.h5")
            t1 = min(t1, t)
            t, s2 = via_dask(sweep, 2, Path(tmp) / f"w2-{i}.h5")
            t2 = min(t2, t)
        rate = lambda t: sweep.total_runs / t  # noqa: E731
        print(f"{'how':<44} {'seconds':>8} {'runs/s':>8}")
        print(f"{'kernel called directly, ' + str(cores) + ' Numba threads':<44} {t_direct:>8.2f} "
              f"{rate(t_direct):>8.1f}")
        print(f"{'fastquad sweep, 1 worker':<44} {t1:>8.2f} {rate(t1):>8.1f}")
        print(f"{'fastquad sweep, 2 workers':<44} {t2:>8.2f} {rate(t2):>8.1f}")
        print(f"\n2 workers / 1 worker:              {t1 / t2:.2f}x   (target >= 1.85x)")
        print(f"2 workers / direct batched kernel: {100 * t_direct / t2:.0f}%   (target >= 90%)")
        print(f"(sweep times include scheduling and writing the HDF5 file; starting the cluster "
              f"and warming its workers took a further {s1:.1f} s (1 worker) / {s2:.1f} s "
              f"(2 workers), once per command)")
        print(capacity_line())
        print("\nclient peak memory (tiny runs, 2 workers):")
        for n in (2000, 20000):
            m = child_peak_rss(n, tmp)
            print(f"  {m['runs']:>6} runs: peak RSS {m['rss']:.0f} MiB (ok={m['ok']})")


if __name__ == "__main__":
    main()
