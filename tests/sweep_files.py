"""Sweep files and helpers shared by the sweep tests (imported as ``sweep_files``)."""

import time

SMALL = """
[fixed]
method = "sgd"
d = 60
K = 2
M = 2
teacher_v = [1.0, 0.5]
t_max = 4.0
n_times = 21
n_runs = 3
label_noise = 0.2

[axes]
lr = [0.05, 0.1]
init_scale = [0.05, 0.5]

[zip]
seed = [0, 7]
teacher_seed = [1, 2]
"""


def slow(t_max=60.0, n_runs=4, order_parameters=True):
    """A sweep of chunks of two runs, each a few tenths of a second at t_max = 60: long
    enough, on one or two workers, to kill, interrupt or probe it half-way."""
    return f"""
[fixed]
method = "sgd"
d = 400
K = 2
M = 2
t_max = {t_max}
n_times = 31
n_runs = {n_runs}

[axes]
lr = [0.02, 0.04, 0.06, 0.08]
init_scale = [0.1, 0.3]

[sweep]
chunk_runs = 2
order_parameters = {"true" if order_parameters else "false"}
"""


def run_in_process(text, out):
    """Run the sweep ``text`` into ``out`` on a one-worker in-process cluster; asserts no run
    failed."""
    from dask.distributed import Client, LocalCluster

    from fastquad.sweep import parse_sweep, run_sweep

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        assert run_sweep(parse_sweep(text), out, client=client, progress=False).ok
    return out


def write(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def wait_for(predicate, timeout, what):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
