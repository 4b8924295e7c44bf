"""Sweep scaling: Dask with 1 and 2 workers against the batched kernel called directly.

Measured in one run, on the same sweep (online SGD, 2000+ runs over a grid of learning rates
and initial scales), interleaved repeats:
  - the kernel called directly in this process with all cores (``config.run_many`` per kernel
    shape, Numba threads = cores): the upper bound; and with one thread, so the kernel's own
    gain from the second core (what the host gave, next to the sweep's gain) is measured
    alongside;
  - ``fastquad sweep`` machinery (``run_sweep``) on an embedded LocalCluster with 1 worker and
    with 2 workers (one thread each), writing the HDF5 file as results arrive;
and the client's peak memory for 2k and 20k runs (tiny runs: results stream to disk, so the
two show how the client's memory scales with the number of runs).

    python benchmarks/bench_sweep.py            # about 4 minutes on 2 cores (3 repeats)
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
    from fastquad.sweep import embedded_cluster, run_sweep
    from fastquad.sweep.run import warm_up

    t0 = time.perf_counter()
    # the very cluster `fastquad sweep` embeds, started here so that its start-up and warm-up
    # are timed apart
    with embedded_cluster(workers) as client:
        client.run(warm_up, ("sgd",))
        start = time.perf_counter() - t0
        t0 = time.perf_counter()
        summary = run_sweep(sweep, out, client=client, progress=False, overwrite=True)
        assert summary.ok
        return time.perf_counter() - t0, start


def child_peak_rss(n_total, tmp):
    """Run a sweep of tiny runs in a fresh process; report its peak RSS (MiB)."""
    code = f"""
import resource, json, sys
from fastquad.sweep import parse_sweep, run_sweep
sw = parse_sweep({sweep_text(n_total, 50, 1.0)!r})
s = run_sweep(sw, {str(Path(tmp) / f"mem{n_total}.h5")!r}, workers=2, progress=False,
              overwrite=True, chunk_runs=50)
print(json.dumps(dict(runs=sw.total_runs, ok=s.ok,
                      rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(xs):
    return float(np.median(xs))


def main():
    # a worker's heartbeat can race the cluster's shutdown between measurements: not news
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="interleaved repeats (each prints its own ratios; best times are kept)",
    )
    ap.add_argument(
        "--t-max",
        type=float,
        default=None,
        help="length of each run in units of t (default 40; 8 with --quick): "
        "longer runs spread the sweep's fixed costs over more work",
    )
    args = ap.parse_args()
    from fastquad.sweep import parse_sweep
    from fastquad.sweep.run import warm_up

    n_total = 2000
    t_max = args.t_max or (8.0 if args.quick else 40.0)
    sweep = parse_sweep(sweep_text(n_total, 200, t_max))
    warm_up(("sgd",))
    cores = os.cpu_count()
    print(capacity_line())
    print(
        f"sweep of {sweep.total_runs} online-SGD runs (d=200, K=M=2, t_max={t_max}), "
        f"{cores} cores; the file stores the learning curves (the default)\n"
    )
    # Each repeat times, back to back: the kernel alone with 1 and with all Numba threads, and
    # the sweep with 1 and 2 workers. The kernel's own gain from the second core tells what the
    # host gave in that repeat: on a shared host a core can run slower while the other is busy.
    times = {k: [] for k in ("k1", "kn", "w1", "w2")}
    kgain, gain, frac = [], [], []  # per repeat: kernel 2/1 threads, sweep 2/1 workers, w2/direct
    starts = {1: [], 2: []}
    print(
        f"{'repeat':<7} {'kernel 1 thr':>12} {'kernel ' + str(cores) + ' thr':>12} "
        f"{'1 worker':>9} {'2 workers':>9}   {'kernel gain':>11} {'sweep gain':>10} "
        f"{'of kernel gain':>14} {'2 workers/direct':>16}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):  # a new file each time: an existing one would resume
            times["k1"].append(direct(sweep, 1))
            times["kn"].append(direct(sweep, cores))
            for w in (1, 2):
                t, s = via_dask(sweep, w, Path(tmp) / f"w{w}-{i}.h5")
                times[f"w{w}"].append(t)
                starts[w].append(s)
            k1, kn, w1, w2 = (times[k][-1] for k in ("k1", "kn", "w1", "w2"))
            kgain.append(k1 / kn)
            gain.append(w1 / w2)
            frac.append(kn / w2)
            print(
                f"{i + 1:<7} {k1:>12.2f} {kn:>12.2f} {w1:>9.2f} {w2:>9.2f}   {kgain[-1]:>10.2f}x "
                f"{gain[-1]:>9.2f}x {100 * gain[-1] / kgain[-1]:>13.0f}% "
                f"{100 * frac[-1]:>15.0f}%",
                flush=True,
            )
        best = {k: min(v) for k, v in times.items()}
        rate = lambda t: sweep.total_runs / t  # noqa: E731
        print(f"\nbest of {args.repeats} repeats:")
        print(f"{'how':<44} {'seconds':>8} {'runs/s':>8}")
        for key, label in (
            ("k1", "kernel called directly, 1 Numba thread"),
            ("kn", f"kernel called directly, {cores} Numba threads"),
            ("w1", "fastquad sweep, 1 worker"),
            ("w2", "fastquad sweep, 2 workers"),
        ):
            print(f"{label:<44} {best[key]:>8.2f} {rate(best[key]):>8.1f}")
        print(
            f"\n2 workers / 1 worker:              {best['w1'] / best['w2']:.2f}x best times, "
            f"{_median(gain):.2f}x median of repeats"
        )
        print(
            f"  the kernel alone, {cores} threads / 1:   "
            f"{best['k1'] / best['kn']:.2f}x best times, "
            f"{_median(kgain):.2f}x median (what the host gave the kernel alone)"
        )
        print(
            f"2 workers / direct batched kernel: {100 * best['kn'] / best['w2']:.0f}% best times, "
            f"{100 * _median(frac):.0f}% median of repeats"
        )
        print(
            f"(sweep times include scheduling and writing the HDF5 file; starting the cluster "
            f"and warming its workers took a further {min(starts[1]):.1f} s (1 worker) / "
            f"{min(starts[2]):.1f} s (2 workers), once per command)"
        )
        print(capacity_line())
        print("\nclient peak memory (tiny runs, 2 workers):")
        for n in (2000, 20000):
            m = child_peak_rss(n, tmp)
            print(f"  {m['runs']:>6} runs: peak RSS {m['rss']:.0f} MiB (ok={m['ok']})")


if __name__ == "__main__":
    main()
