"""Every run records at exactly the times its file says: sweeps, simulate, any d and method.

A run of online SGD or GD moves in steps of 1/d, so it can only record at whole steps. The
recording grid is made of such times (for a sweep over several d, of multiples of
1/gcd(d), which every d hits), and each file's ``time`` is the grid the runs recorded on.
The check is against independent calls of the API with explicit times, and against
``fastquad simulate`` of the same run.
"""

import numpy as np
import pytest

import fastquad as fq
from fastquad.cli import main
from fastquad.config import make_config, time_grid
from fastquad.sweep import parse_sweep, run_sweep
from fastquad.times import MAX_STEPS, recording_times, steps_for_times

SWEEP = """
[fixed]
K = 2
M = 2
teacher_v = [1.0, 0.5]
t_max = 3.0
n_times = 25
n_runs = 2
lr = 0.1
init_scale = 0.3
n_samples = 64
{fixed}
[axes]
{axes}
"""


def _api_run(cfg, replica, times):
    """The same run through the public API, recorded at the given times."""
    W_t, v_t = fq.make_teacher(cfg.d, cfg.M, v=np.array(cfg.teacher_v), seed=cfg.teacher_seed)
    W0, v0 = fq.make_student(
        cfg.d, cfg.K, scale=cfg.init_scale, v=cfg.student_v, seed=cfg.seed, run_id=replica
    )
    kw = dict(times=times, max_error=cfg.max_error)
    if cfg.method == "sgd":
        return fq.simulate_sgd(
            W0,
            v0,
            W_t,
            v_t,
            cfg.lr,
            cfg.t_max,
            seeds=cfg.seed,
            run_ids=[replica],
            sampler=cfg.sampler,
            **kw,
        )
    if cfg.method == "gd":
        return fq.simulate_gd(
            W0,
            v0,
            W_t,
            v_t,
            cfg.lr,
            cfg.t_max,
            n_samples=cfg.n_samples,
            seeds=cfg.seed,
            run_ids=[replica],
            **kw,
        )
    if cfg.method == "flow":
        return fq.integrate_flow(W0, v0, W_t, v_t, cfg.lr, cfg.t_max, **kw)
    Q, R, T = fq.order_parameters(W0, W_t)
    return fq.integrate_ode(Q, R, v0, T, v_t, cfg.lr, cfg.t_max, **kw)


@pytest.mark.parametrize(
    "fixed,axes",
    [
        ('method = "sgd"', "d = [20]"),
        ('method = "sgd"', "d = [10, 1000]"),
        ('method = "sgd"\nsampler = "exact"', "d = [30, 45]"),
        ("d = 40", 'method = ["sgd", "ode", "flow", "gd"]'),
        ('method = "gd"', "d = [12, 18]"),
    ],
    ids=["one-d", "d-10-1000", "exact-30-45", "methods", "gd-12-18"],
)
def test_every_run_of_a_sweep_records_at_the_files_times(tmp_path, fixed, axes):
    sweep = parse_sweep(SWEEP.format(fixed=fixed, axes=axes))
    out = tmp_path / "r.h5"
    assert run_sweep(sweep, out, workers=1, progress=False).ok
    res = fq.read(out)
    np.testing.assert_array_equal(res.t, sweep.times)
    ds = [c.d for c in sweep.points if c.method in ("sgd", "gd")]
    if ds:  # whole steps of every d of the sweep
        for d in ds:
            steps = res.t * d
            np.testing.assert_array_equal(steps, np.rint(steps))
    assert np.all(np.diff(res.t) > 0)
    for run in range(sweep.total_runs):
        cfg, rep = sweep.run_config(run)
        ref = _api_run(cfg, rep, res.t)
        np.testing.assert_array_equal(ref.t, res.t)
        np.testing.assert_array_equal(res.eps_g[run], ref.eps_g[0], err_msg=f"run {run}")


@pytest.mark.parametrize(
    "args",
    [
        ["--method", "sgd", "--d", "20"],
        ["--method", "sgd", "--d", "37", "--sampler", "exact"],
        ["--method", "gd", "--d", "16", "--n-samples", "64"],
        ["--method", "ode", "--d", "20"],
    ],
)
def test_a_single_point_sweep_matches_fastquad_simulate_time_by_time(tmp_path, args):
    flags = dict(zip(args[::2], args[1::2]))
    fixed = "\n".join(
        f"{k[2:].replace('-', '_')} = " + (v if v.replace(".", "").isdigit() else f'"{v}"')
        for k, v in flags.items()
        if k != "--n-samples"
    )
    sweep = parse_sweep(SWEEP.format(fixed=fixed, axes="seed = [3]"))
    out = tmp_path / "sweep.h5"
    assert run_sweep(sweep, out, workers=1, progress=False).ok
    single = tmp_path / "simulate.h5"
    common = [
        "--K",
        "2",
        "--M",
        "2",
        "--teacher-v",
        "1,0.5",
        "--t-max",
        "3",
        "--n-times",
        "25",
        "--n-runs",
        "2",
        "--lr",
        "0.1",
        "--init-scale",
        "0.3",
        "--seed",
        "3",
    ]
    assert main(["simulate", "--out", str(single), *common, *args]) == 0
    a, b = fq.read(out), fq.read(single)
    np.testing.assert_array_equal(a.t, b.t)
    np.testing.assert_array_equal(a.eps_g, b.eps_g)


@pytest.mark.parametrize("d", [1, 7, 50, 1000])
@pytest.mark.parametrize("t_max", [None, 1.0, 3.7, 200.0])
def test_default_grids_are_whole_steps_strictly_increasing_and_reach_t_max(d, t_max):
    t_max = 1.0 / d if t_max is None else t_max
    t = recording_times(t_max, 121, d)
    assert t[0] == 0 and np.all(np.diff(t) > 0) and len(t) <= 121
    steps, exact = steps_for_times(t, d)
    np.testing.assert_array_equal(exact, t)
    assert steps[-1] == np.rint(t_max * d)


def test_t_max_of_one_step_runs_every_method():
    """t_max = 1/d is accepted and records t = 0 and t = 1/d (it used to fail on the grid)."""
    for method in ("sgd", "gd", "flow", "ode"):
        cfg = make_config(dict(method=method, d=10, t_max=0.1, n_samples=4, n_runs=1))
        res = fq.config.run(cfg)
        assert res.t[-1] == pytest.approx(0.1)
        assert res.status[0] == fq.STATUS_DONE
    assert list(time_grid(make_config(dict(d=10, t_max=0.1)))) == [0.0, 0.1]


def test_step_counts_beyond_2_53_are_refused_not_wrapped():
    W_t, v_t = fq.make_teacher(10, 1, seed=1)
    W0, v0 = fq.make_student(10, 1, seed=2)
    for t_max in (1e300, 1e17, MAX_STEPS / 10 * 1.01):
        with pytest.raises(ValueError, match="t_max must be <="):
            fq.simulate_sgd(W0, v0, W_t, v_t, 0.1, t_max)
    with pytest.raises(ValueError, match="times must be <="):
        steps_for_times(np.array([0.0, 1e300]), 10)
