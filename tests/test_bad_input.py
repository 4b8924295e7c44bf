"""Every command-line parameter's bounds: bad input is one line naming the parameter, exit 2.

Each row is run in-process through ``fastquad.cli.main`` and must fail before any kernel runs
(no output file appears). Values at the edge of what this machine can hold or would finish in
a day (memory and time budgets, :mod:`fastquad.budget`) are refused the same way.
"""

import h5py
import numpy as np
import pytest

import fastquad as fq
from fastquad.cli import main

SIMULATE = [
    (["--method", "adam"], "method must be one of"),
    (["--activation", "tanh"], "activation must be one of quadratic, linear, relu, erf"),
    (["--teacher-activation", "sigmoid"], "teacher_activation must be one of same, quadratic"),
    (["--d", "0"], "d must be an integer in [1"),
    (["--d", "1.5"], "d must be an integer"),
    (["--d", "1000000000"], "d=1000000000"),
    (["--K", "0"], "K must be an integer in [1"),
    (["--K", "100000", "--d", "100000"], "K=100000"),
    (["--M", "0"], "M must be an integer in [1"),
    (["--M", "5", "--d", "4"], "M must be <= d"),
    (["--lr", "0"], "lr must be a finite number > 0"),
    (["--lr", "-1"], "lr must be a finite number > 0"),
    (["--lr", "nan"], "lr must be a finite number > 0"),
    (["--lr", "inf"], "lr must be a finite number > 0"),
    (["--t-max", "0"], "t_max must be a finite number > 0"),
    (["--t-max", "1e300", "--d", "10"], "t_max must be <="),
    (["--t-max", "1e17", "--d", "100"], "t_max must be <="),
    (["--t-max", "0.001", "--d", "100"], "t_max must be >= 1/d"),
    (["--t-max", "1e8", "--d", "1000"], "t_max: t_max=1e+08"),
    (["--t-max", "1e7", "--d", "1000", "--n-runs", "16"], "n_runs: 16 runs would take"),
    (["--n-times", "1"], "n_times must be an integer in [2"),
    (["--n-times", "1e15"], "n_times must be an integer in [2, 10000000]"),
    (["--method", "ode", "--n-times", "10000000", "--n-runs", "100"], "n_times=10000000"),
    (["--n-runs", "0"], "n_runs must be an integer in [1"),
    (["--n-runs", "1000000000"], "n_runs=1000000000"),
    (["--seed", "-1"], "seed must be an integer in [0"),
    (["--seed", str(2**63)], "seed must be an integer in [0"),
    (["--batch-size", "0"], "batch_size must be an integer in [1"),
    (["--batch-size", "1000000000"], "batch_size=1000000000"),
    (["--method", "gd", "--n-samples", "10", "--batch-size", "11"], "batch_size must be <="),
    (["--method", "gd"], "n_samples must be an integer >= 1"),
    (["--method", "gd", "--n-samples", "-1"], "n_samples must be an integer in [0"),
    (["--method", "gd", "--n-samples", "1000000000", "--d", "1000"], "n_samples=1000000000"),
    (["--label-noise", "-1"], "label_noise must be a finite number >= 0"),
    (["--label-noise", "nan"], "label_noise must be a finite number >= 0"),
    (["--train-second-layer", "maybe"], "train-second-layer"),
    (["--teacher", "random"], "teacher must be one of"),
    (["--teacher-v", "1,2,3"], "teacher_v must have 2 entries"),
    (["--teacher-v", "a"], "teacher_v must be a real number"),
    (["--teacher-v", "nan"], "teacher_v must be a finite number"),
    (["--teacher-seed", "-1"], "teacher_seed must be an integer in [0"),
    (["--init-scale", "-1"], "init_scale must be a finite number >= 0"),
    (["--init-overlap", "inf"], "init_overlap must be a finite number"),
    (["--student-v", "1,2,3"], "student_v must have 2 entries"),
    (["--sampler", "fast"], "sampler must be one of"),
    (["--dtype", "float16"], "dtype must be one of"),
    (["--integrator", "euler"], "integrator must be one of"),
    (["--dt", "-1"], "dt must be a finite number >= 0"),
    (["--method", "flow", "--dt", "1e-12"], "dt: dt=1e-12"),
    (["--method", "ode", "--integrator", "rk4", "--dt", "1e-12"], "dt: dt=1e-12"),
    (["--rtol", "0"], "rtol must be a finite number >= 1e-14 and < 1"),
    (["--atol", "-1"], "atol must be a finite number > 0"),
    (["--sgd-noise", "maybe"], "sgd-noise"),
    (["--max-error", "0"], "max_error must be a finite number > 0"),
    (["--threads", "0"], "--threads must be an integer in [1"),
    (["--threads", "100000"], "--threads must be an integer in [1"),
    (["--config", "nope.toml"], "--config: no such file"),
]


def _one_line(capsys, code, argv, match):
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own checks (choices, types) exit from the parser
        rc = exc.code
    assert rc == code
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert match in err, err
    return err


@pytest.mark.parametrize("args,match", SIMULATE, ids=[" ".join(a) for a, _ in SIMULATE])
def test_simulate_parameter_bounds(tmp_path, capsys, args, match):
    out = tmp_path / "x.h5"
    _one_line(capsys, 2, ["simulate", "--out", str(out), *args], match)
    assert not out.exists()


def test_every_simulate_parameter_has_a_row():
    from fastquad.config import PARAMETERS

    flags = {a[i] for a, _ in SIMULATE for i in range(0, len(a), 2)}
    missing = [k for k in PARAMETERS if "--" + k.replace("_", "-") not in flags]
    assert not missing, f"parameters without a bad-input row: {missing}"


def test_simulate_output_folder_is_checked_before_computing(tmp_path, capsys):
    _one_line(capsys, 2, ["simulate", "--out", str(tmp_path / "no" / "x.h5")], "--out")
    (tmp_path / "dir.h5").mkdir()
    _one_line(capsys, 2, ["simulate", "--out", str(tmp_path / "dir.h5"), "--overwrite"], "--out")


SWEEP_TEXT = """
[fixed]
method = "sgd"
d = 20
t_max = 2.0
n_times = 11
n_runs = 2
[axes]
lr = [0.05, 0.1]
"""

SWEEP = [
    (["--workers", "0"], SWEEP_TEXT, "--workers"),
    (["--workers", "100000"], SWEEP_TEXT, "--workers"),
    (["--chunk-runs", "0"], SWEEP_TEXT, "--chunk-runs must be"),
    (
        ["--scheduler", "tcp://127.0.0.1:1", "--scheduler-file", "s.json"],
        SWEEP_TEXT,
        "give one, not both",
    ),
    (["--scheduler-file", "missing.json"], SWEEP_TEXT, "--scheduler-file: no such file"),
    ([], "", "the sweep file sets no parameter"),
    ([], "# only a comment\n[sweep]\nchunk_runs = 4\n", "the sweep file sets no parameter"),
    (
        [],
        "[axes]\n"
        + "\n".join(f"{k} = {list(range(1, 1001))}" for k in ("seed", "teacher_seed", "K")),
        "axes: the grid has 1e+09 points",
    ),
    (
        [],
        "[fixed]\nn_runs = 100000\n[axes]\nseed = " + str(list(range(1000))),
        "n_runs: 1000 points x 100000 replicas",
    ),
    ([], SWEEP_TEXT.replace("t_max = 2.0", "t_max = 1e300"), "t_max must be <="),
    (
        [],
        SWEEP_TEXT.replace("d = 20", "d = 1000").replace("t_max = 2.0", "t_max = 1e8"),
        "t_max: t_max=1e+08",
    ),
    (
        [],
        SWEEP_TEXT.replace("d = 20", "d = 1000")
        .replace("t_max = 2.0", "t_max = 1e7")
        .replace("n_runs = 2", "n_runs = 8"),
        "n_runs: the sweep's 16 runs would take",
    ),
    (
        [],
        SWEEP_TEXT.replace("[axes]", "[axes]\nd = [10, 1001]")
        .replace("d = 20\n", "")
        .replace("t_max = 2.0", "t_max = 0.5"),
        "t_max must be >= 1 in this sweep",
    ),
    ([], SWEEP_TEXT.replace("n_runs = 2", "n_runs = 10000000"), "n_runs: 2 points x 10000000"),
]


@pytest.mark.parametrize("args,text,match", SWEEP, ids=[str(i) for i in range(len(SWEEP))])
def test_sweep_parameter_bounds(tmp_path, capsys, monkeypatch, args, text, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(text)
    out = tmp_path / "r.h5"
    _one_line(capsys, 2, ["sweep", "s.toml", "--out", str(out), "--no-progress", *args], match)
    assert not out.exists()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    W_t, v_t = fq.make_teacher(20, 2, seed=1)
    W0, v0 = fq.make_student(20, 2, scale=0.3, seed=2)
    res = fq.simulate_sgd(W0, v0, W_t, v_t, lr=0.1, t_max=1.0, seeds=[0, 1])
    path = tmp_path_factory.mktemp("plot") / "r.h5"
    fq.save(path, res)
    return path


PLOT = [
    (["--threshold", "nan"], "--threshold must be a finite number > 0"),
    (["--threshold", "-1"], "--threshold must be a finite number > 0"),
    (["--threshold", "inf"], "--threshold must be a finite number > 0"),
    (["--run", "-1"], "--run must be in [0, 1]"),
    (["--run", "2"], "--run must be in [0, 1]"),
    (["--kind", "bogus"], "invalid choice"),
    (["--quantity", "bogus"], "invalid choice"),
    (["--kind", "phase"], "--x/--y: phase needs two sweep axes"),
]


@pytest.mark.parametrize("args,match", PLOT, ids=[" ".join(a) for a, _ in PLOT])
def test_plot_parameter_bounds(tmp_path, capsys, results, args, match):
    _one_line(capsys, 2, ["plot", str(results), "--out", str(tmp_path), *args], match)


def test_plot_and_info_of_missing_and_foreign_files(tmp_path, capsys):
    _one_line(capsys, 2, ["plot", str(tmp_path / "none.h5")], "no such file")
    _one_line(capsys, 2, ["info", str(tmp_path / "none.h5")], "no such file")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    _one_line(capsys, 2, ["plot", str(foreign)], str(foreign))
    _one_line(capsys, 2, ["info", str(foreign)], str(foreign))


def test_stages_of_a_run_that_did_not_finish_is_one_line_and_all_skips_it(tmp_path, capsys):
    W_t, v_t = fq.make_teacher(20, 2, seed=1)
    W0, v0 = fq.make_student(20, 2, scale=0.3, seed=2)
    res = fq.simulate_sgd(W0, v0, W_t, v_t, lr=[0.1, 50.0], t_max=2.0, seeds=[0, 1])
    assert list(res.status) == [fq.STATUS_DONE, fq.STATUS_DIVERGED]
    path = tmp_path / "d.h5"
    fq.save(path, res)
    _one_line(
        capsys,
        2,
        ["plot", str(path), "--kind", "stages", "--run", "1", "--out", str(tmp_path)],
        "run 1 is diverged",
    )
    assert main(["plot", str(path), "--kind", "all", "--run", "1", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "skipped stages" in captured.err and "curves" in captured.out


FIXED_POINTS = [
    (["--K", "0"], "--K must be an integer in [1, 12]"),
    (["--K", "1000000000"], "--K must be an integer in [1, 12]"),
    (["--M", "0"], "--M must be an integer in [1, 12]"),
    (["--teacher-v", ",".join(["1"] * 13)], "--teacher-v must have at most 12 values"),
    (["--teacher-v", "a"], "--teacher-v must be a number"),
    (["--teacher-v", "nan"], "--teacher-v must contain finite numbers"),
    (["--lr", "0"], "--lr must be one number > 0"),
    (["--n-starts", "0"], "--n-starts must be an integer in [1, 100000]"),
    (["--n-starts", "1000000000"], "--n-starts must be an integer in [1, 100000]"),
    (["--seed", "-1"], "--seed must be an integer in [0"),
    (["--freeze-second-layer", "--student-v", "1,2,3"], "--student-v must have 1 or 2 values"),
]


@pytest.mark.parametrize("args,match", FIXED_POINTS, ids=[" ".join(a) for a, _ in FIXED_POINTS])
def test_fixed_points_parameter_bounds(capsys, args, match):
    _one_line(capsys, 2, ["fixed-points", *args], match)


def test_api_refuses_what_the_kernels_cannot_take():
    W_t, v_t = fq.make_teacher(20, 2, seed=1)
    W0, v0 = fq.make_student(20, 2, scale=0.3, seed=2)
    with pytest.raises(ValueError, match="W0 must have at least one input"):
        fq.simulate_sgd(np.zeros((2, 0)), v0, np.zeros((2, 0)), v_t, lr=0.1, t_max=1.0)
    with pytest.raises(ValueError, match="W0 must have at least one student unit"):
        fq.simulate_sgd(np.zeros((0, 20)), np.zeros(0), W_t, v_t, lr=0.1, t_max=1.0)
    with pytest.raises(ValueError, match="W0 must be an array of real numbers, got complex"):
        fq.simulate_sgd(W0 + 1j, v0, W_t, v_t, lr=0.1, t_max=1.0)
    with pytest.raises(ValueError, match="t_max must be <="):
        fq.simulate_sgd(W0, v0, W_t, v_t, lr=0.1, t_max=1e300)
    with pytest.raises(ValueError, match="d must be an integer in"):
        fq.make_student(0, 2)
    Q, R, T = fq.order_parameters(W0, W_t)
    with pytest.raises(ValueError, match="positive semi-definite"):
        fq.integrate_ode(-Q, R, v0, T, v_t, lr=0.1, t_max=1.0)
    with pytest.raises(ValueError, match="positive semi-definite"):
        fq.integrate_ode(Q, R + 10.0, v0, T, v_t, lr=0.1, t_max=1.0)


def test_real_number_messages_read_well():
    from fastquad import _validate as V

    with pytest.raises(ValueError) as err:
        V.real("x", float("nan"))
    assert str(err.value) == "x must be a finite number, got nan"


def test_a_results_file_whose_stored_sweep_is_huge_is_refused_at_once(tmp_path, capsys):
    """The limits apply to what is read from files: a crafted ``config`` of 10^9 points."""
    import time

    W_t, v_t = fq.make_teacher(20, 2, seed=1)
    W0, v0 = fq.make_student(20, 2, scale=0.3, seed=2)
    res = fq.simulate_sgd(W0, v0, W_t, v_t, lr=0.1, t_max=1.0, seeds=[0, 1])
    res = res.replace(
        Q=None, R=None, v=None
    )  # a curves-only file: plot rebuilds starts from the config
    path = tmp_path / "crafted.h5"
    fq.save(path, res)
    huge = "[axes]\n" + "\n".join(
        f"{k} = {list(range(1, 1001))}" for k in ("seed", "teacher_seed", "K")
    )
    with h5py.File(path, "r+") as f:
        f.attrs["config"] = huge
        f.attrs["sweep_digest"] = "0" * 64
    t0 = time.perf_counter()
    _one_line(
        capsys,
        2,
        ["plot", str(path), "--kind", "curves", "--out", str(tmp_path)],
        "axes: the grid has 1e+09 points",
    )
    assert time.perf_counter() - t0 < 30
