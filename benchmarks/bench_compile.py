"""How long a user waits for the compiler: each first use from a cold Numba cache, beside the
same use once the cache is warm.

Every step runs in a fresh Python process with ``NUMBA_CACHE_DIR`` pointing to a new empty
folder (cold) and then again with the folder that the cold run filled (warm):

- ``import fastquad``;
- the first direct ``simulate_sgd`` (d = 50, K = M = 2, 2 runs, t_max = 1), including the import;
- the first exact-sampler ``simulate_sgd`` (d = 200), including the import;
- the first ``integrate_ode`` (rk45), including the import;
- the first sweep task: a one-point sweep of online SGD on an embedded Dask cluster with one
  worker, from the command line to the file (``fastquad sweep``);
- ``fastquad warm-up`` (every method on its default options).

Last, a cache filled on this CPU is used by a process that asks Numba for another CPU
(``NUMBA_CPU_NAME=generic``), as a cluster node of another kind would: it compiles its own
entries once (the first direct ``simulate_sgd`` again), then loads them.

With ``--functions`` it also prints where the compile time of each step goes: Numba's compile
events per function, exclusive of the functions it compiled in turn. With ``--main-job`` it
runs the README's main job (``runners/paper_study.py``) on a cold cache and prints its wall time
and its longest silent stretch (no byte on stdout or stderr), the wait a new user sees.

    python benchmarks/bench_compile.py               # the table (about 3 minutes)
    python benchmarks/bench_compile.py --functions   # and the functions that take longest
    python benchmarks/bench_compile.py --main-job    # and the main job, cold (about 3 minutes)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

_PRELUDE = r"""
import json, sys, time
t0 = time.perf_counter()
from numba.core import event
events = event.RecordingListener()
event.register("numba:compile", events)
import numpy as np
import fastquad as fq
t_import = time.perf_counter() - t0
"""

_STEPS = {
    "import fastquad": "",
    "first simulate_sgd (direct)": """
W_t, v_t = fq.make_teacher(50, 2); W0, v0 = fq.make_student(50, 2, seed=1)
fq.simulate_sgd(W0, v0, W_t, v_t, 0.1, 1.0, seeds=[0, 1])
""",
    "first simulate_sgd (exact)": """
W_t, v_t = fq.make_teacher(200, 2); W0, v0 = fq.make_student(200, 2, seed=1)
fq.simulate_sgd(W0, v0, W_t, v_t, 0.1, 1.0, seeds=[0, 1], sampler="exact")
""",
    "first integrate_ode (rk45)": """
Q, R, T = fq.order_parameters(*(fq.make_student(20, 2, seed=s)[0] for s in (1, 2)))
fq.integrate_ode(Q, R, [1.0, 1.0], T, [1.0, 1.0], 0.1, 5.0)
""",
}

_SWEEP = """
[fixed]
method = "sgd"
d = 50
K = 2
M = 2
t_max = 1.0
n_runs = 2
[axes]
lr = [0.1]
"""

_REPORT = r"""
stack, exclusive = [], {}
for ts, ev in events.buffer:
    if ev.is_start:
        stack.append([ev.data["dispatcher"].py_func.__qualname__, ts, 0.0])
    else:
        name, start, inner = stack.pop()
        exclusive[name] = exclusive.get(name, 0.0) + (ts - start) - inner
        if stack:
            stack[-1][2] += ts - start
print("RESULT", json.dumps(dict(
    total=time.perf_counter() - t0, import_=t_import,
    functions=sorted(exclusive.items(), key=lambda x: -x[1])[:12])))
"""


def _python_step(code, cache, **env_extra):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, **env_extra)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _PRELUDE + code + _REPORT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - start
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT"))
    return wall, json.loads(line[len("RESULT ") :])


def _command_step(args, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    start = time.perf_counter()
    subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, None


def _sweep_step(cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    with tempfile.TemporaryDirectory() as tmp:
        spec = os.path.join(tmp, "sweep.toml")
        with open(spec, "w") as fh:
            fh.write(_SWEEP)
        start = time.perf_counter()
        subprocess.run(
            ["fastquad", "sweep", spec, "--out", os.path.join(tmp, "out.h5"), "--workers", "1"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return time.perf_counter() - start, None


def _main_job(cache):
    """(wall time, longest silence, when it began) of the main job on the cache ``cache``."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, MPLBACKEND="Agg")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, os.path.join(root, "runners", "paper_study.py"), "--out", out],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        last, gap, gap_at = start, 0.0, 0.0
        while os.read(proc.stdout.fileno(), 4096):  # progress bars write without newlines
            now = time.perf_counter()
            if now - last > gap:
                gap, gap_at = now - last, last - start
            last = now
        if proc.wait() != 0:
            raise RuntimeError("the main job failed")
        end = time.perf_counter()
        if end - last > gap:
            gap, gap_at = end - last, last - start
        return end - start, gap, gap_at


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--functions", action="store_true", help="print compile time per function")
    ap.add_argument("--main-job", action="store_true", help="also time the main job, cold")
    args = ap.parse_args(argv)
    print(f"bench_compile  {time.strftime('%Y-%m-%d')}  python {sys.version.split()[0]}")
    print(f"{'step (fresh process)':34s} {'cold cache':>11s} {'warm cache':>11s} {'ratio':>7s}")
    steps = list(_STEPS.items()) + [("first sweep task (CLI)", "sweep")]
    steps.append(("fastquad warm-up (all methods)", "warm-up"))
    for name, code in steps:
        row = []
        with tempfile.TemporaryDirectory() as cache:
            for _ in ("cold", "warm"):
                if code == "sweep":
                    row.append(_sweep_step(cache))
                elif code == "warm-up":
                    row.append(_command_step(["fastquad", "warm-up"], cache))
                else:
                    row.append(_python_step(code, cache))
        (cold, info), (warm, _) = row
        print(f"{name:34s} {cold:10.1f}s {warm:10.1f}s {cold / warm:6.1f}x", flush=True)
        if args.functions and info:
            for fn, sec in info["functions"]:
                if sec >= 0.3:
                    print(f"    {sec:6.2f} s  {fn}")
    code = _STEPS["first simulate_sgd (direct)"]
    with tempfile.TemporaryDirectory() as cache:
        _python_step(code, cache)  # filled on this CPU
        other = [_python_step(code, cache, NUMBA_CPU_NAME="generic")[0] for _ in range(2)]
    print(
        f"{'same, cache from another CPU':34s} {other[0]:10.1f}s {other[1]:10.1f}s "
        f"{other[0] / other[1]:6.1f}x   (NUMBA_CPU_NAME=generic: compiles once, then loads)"
    )
    if args.main_job:
        with tempfile.TemporaryDirectory() as cache:
            wall, gap, at = _main_job(cache)
        print(
            f"main job (runners/paper_study.py), cold cache: {wall:.0f} s; longest silence "
            f"{gap:.1f} s (from {at:.1f} s after the start)"
        )


if __name__ == "__main__":
    main()
