"""Activations wherever a user meets a network outside the kernels: CLI flags and their errors,
configuration files, the attributes of results files (old files read as quadratic), sweeps
over activations (planned, stored, resumed, loaded with a labelled coordinate), figures and
cost estimates.

The tests that run a non-quadratic network (marked "API" in their docstrings) need the
methods to take ``activation=`` and ``teacher_activation=`` and record them in the Result's
attributes.
"""

import matplotlib

matplotlib.use("Agg")

import subprocess  # noqa: E402
import sys  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import sweep_files  # noqa: E402

import fastquad as fq  # noqa: E402
from fastquad import budget, plots  # noqa: E402
from fastquad import config as C  # noqa: E402
from fastquad.cli import main  # noqa: E402
from fastquad.config import run_many  # noqa: E402
from fastquad.errors import InputError  # noqa: E402
from fastquad.store import result_arrays  # noqa: E402
from fastquad.sweep import parse_sweep, plan_chunks  # noqa: E402
from fastquad.sweep.store import SweepStore  # noqa: E402

FASTQUAD = [sys.executable, "-m", "fastquad.cli"]
NAMES = ("quadratic", "linear", "relu", "erf")

# online SGD of a tiny network, 40 steps a run: a second or so once compiled
SWEEP = """
[fixed]
method = "sgd"
d = 20
K = 2
M = 2
t_max = 2.0
n_times = 11
n_runs = 2
init_scale = 0.5

[axes]
activation = ["quadratic", "relu", "erf"]
lr = [0.05, 0.1]
"""


def _quadratic_result(d=20, runs=2):
    """A quadratic Result made without naming an activation (as before activations existed)."""
    W_t, v_t = fq.make_teacher(d, 2, seed=1)
    W0, v0 = fq.make_student(d, 2, scale=0.5, seed=2)
    return fq.simulate_sgd(W0, v0, W_t, v_t, 0.05, 1.0, seeds=np.arange(runs))


def _one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ------------------------------------------------------------------ CLI and configurations


def test_help_lists_both_flags_with_their_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--activation {quadratic,linear,relu,erf}" in text
    assert "--teacher-activation {same,quadratic,linear,relu,erf}" in text
    assert "(default: quadratic)" in text and "(default: same)" in text


@pytest.mark.parametrize(
    "flag, param", [("--activation", "activation"), ("--teacher-activation", "teacher_activation")]
)
def test_a_bad_activation_flag_is_one_line_naming_it_and_the_allowed_values(
    flag, param, tmp_path, capsys
):
    out = tmp_path / "r.h5"
    line = _one_line_error(capsys, ["simulate", flag, "sigmoid", "--out", str(out)])
    assert line.startswith(f"fastquad: error: {param} must be one of")
    assert all(name in line for name in NAMES) and "'sigmoid'" in line
    assert ("same" in line) == (param == "teacher_activation")
    assert not out.exists()


def test_a_bad_activation_exits_with_code_2_from_the_shell(tmp_path):
    proc = subprocess.run(
        FASTQUAD + ["simulate", "--activation", "tanh", "--out", str(tmp_path / "r.h5")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "fastquad: error: activation must be one of quadratic, linear, relu, erf; got 'tanh'"
    ]


def test_bad_activations_in_a_config_file_and_a_sweep_file_name_their_keys(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('activation = "gelu"\n')
    line = _one_line_error(
        capsys, ["simulate", "--config", str(cfg), "--out", str(tmp_path / "r.h5")]
    )
    assert "activation must be one of" in line and "'gelu'" in line
    sweep = tmp_path / "s.toml"
    sweep.write_text('[fixed]\nmethod = "ode"\n[axes]\nactivation = ["quadratic", "gelu"]\n')
    line = _one_line_error(capsys, ["sweep", str(sweep), "--out", str(tmp_path / "s.h5")])
    assert "axes.activation[1] must be one of" in line and "'gelu'" in line


def test_a_config_file_round_trips_its_activations(tmp_path):
    path = tmp_path / "erf.toml"
    path.write_text('method = "ode"\nactivation = "erf"\nteacher_activation = "quadratic"\n')
    cfg = C.make_config(C.load_toml(path))
    assert (cfg.activation, cfg.teacher_activation) == ("erf", "quadratic")
    again = tmp_path / "again.toml"
    again.write_text(cfg.to_toml())
    assert C.make_config(C.load_toml(again)) == cfg
    # the teacher's default is the student's
    assert C.make_config({"activation": "relu"}).teacher_activation == "same"


def test_simulate_with_a_config_file_and_a_flag_records_both_activations(tmp_path, capsys):
    """API: a relu student with an erf teacher, through --config and a flag."""
    path = tmp_path / "relu.toml"
    path.write_text('method = "sgd"\nactivation = "relu"\nd = 20\nt_max = 1.0\nn_runs = 2\n')
    out = tmp_path / "r.h5"
    argv = ["simulate", "--config", str(path), "--teacher-activation", "erf", "--out", str(out)]
    assert main(argv + ["--no-progress"]) == 0
    assert "activations: relu student, erf teacher" in capsys.readouterr().out
    with h5py.File(out) as f:
        assert (f.attrs["activation"], f.attrs["teacher_activation"]) == ("relu", "erf")
        assert 'teacher_activation = "erf"' in f.attrs["config"]
    res = fq.read(out)
    assert (res.attrs["activation"], res.attrs["teacher_activation"]) == ("relu", "erf")
    assert (res.status == fq.STATUS_DONE).all()


# ------------------------------------------------------------------ file attributes


def test_save_read_and_load_record_the_activations_resolved(tmp_path):
    """API: the Result's own attributes go to the file, 'same' resolved."""
    W_t, v_t = fq.make_teacher(20, 2, seed=1)
    W0, v0 = fq.make_student(20, 2, scale=0.5, seed=2)
    for student, teacher, want in (
        ("relu", "quadratic", "quadratic"),
        ("erf", "same", "erf"),
        ("linear", None, "linear"),
    ):
        res = fq.simulate_sgd(
            W0, v0, W_t, v_t, 0.05, 1.0, seeds=[0], activation=student, teacher_activation=teacher
        )
        out = tmp_path / f"{student}.h5"
        fq.save(out, res)
        with h5py.File(out) as f:
            assert (f.attrs["activation"], f.attrs["teacher_activation"]) == (student, want)
        back = fq.read(out)
        assert (back.attrs["activation"], back.attrs["teacher_activation"]) == (student, want)
        ds = fq.load(out)
        assert (ds.attrs["activation"], ds.attrs["teacher_activation"]) == (student, want)


def test_save_resolves_a_teacher_given_as_same_whatever_made_the_result(tmp_path):
    res = _quadratic_result().replace(params={"activation": "relu", "teacher_activation": "same"})
    fq.save(tmp_path / "r.h5", res)
    with h5py.File(tmp_path / "r.h5") as f:
        assert (f.attrs["activation"], f.attrs["teacher_activation"]) == ("relu", "relu")
    # a Result that names no activation is quadratic
    res = _quadratic_result()
    res = res.replace(attrs={k: v for k, v in res.attrs.items() if "activation" not in k})
    fq.save(tmp_path / "q.h5", res)
    with h5py.File(tmp_path / "q.h5") as f:
        assert f.attrs["activation"] == f.attrs["teacher_activation"] == "quadratic"


def test_a_file_written_before_activations_were_recorded_reads_as_quadratic(tmp_path, capsys):
    out = tmp_path / "old.h5"
    fq.save(out, _quadratic_result())
    with h5py.File(out, "r+") as f:  # what a file of an earlier fastquad holds
        del f.attrs["activation"], f.attrs["teacher_activation"]
    res = fq.read(out)
    assert (res.attrs["activation"], res.attrs["teacher_activation"]) == ("quadratic",) * 2
    ds = fq.load(out)
    assert (ds.attrs["activation"], ds.attrs["teacher_activation"]) == ("quadratic",) * 2
    assert fq.load(out, lazy=True).attrs["activation"] == "quadratic"
    assert main(["info", str(out)]) == 0
    assert "activations: quadratic student and teacher" in capsys.readouterr().out
    assert plots.activation_label(ds) == "quadratic student and teacher"
    assert plots.is_quadratic(ds)


# ------------------------------------------------------------------ figures


def test_every_figure_of_runs_names_their_activations(tmp_path):
    res = _quadratic_result(runs=3).replace(
        params={"activation": "relu", "teacher_activation": "quadratic"}
    )
    fq.save(tmp_path / "r.h5", res)
    ds = fq.load(tmp_path / "r.h5")
    want = "relu student, quadratic teacher"
    figs = {
        "curves": plots.plot_learning_curves(ds, theory=False),
        "order": plots.plot_order_parameters(ds, run=1),
        "stages": plots.plot_stages(ds, run=0),
    }
    for kind, fig in figs.items():
        title = fig._suptitle.get_text() if kind == "order" else fig.axes[0].get_title()
        assert want in title, (kind, title)
        plots.save(fig, tmp_path, kind)
    # the plateau levels predicted for quadratic networks are not drawn for a relu run
    assert not any(line.get_linestyle() == "--" for line in figs["stages"].axes[0].lines)
    # fixed points of another pair are refused over these runs; those of the runs' own pair
    # are drawn, the pair in the title
    with pytest.raises(InputError, match="quadratic student and teacher; run 0 has a relu"):
        plots.plot_fixed_points([], ds, runs=(0,))
    fig = plots.plot_fixed_points(
        [],
        ds,
        runs=(0,),
        activation=ds.attrs["activation"],
        teacher_activation=ds.attrs["teacher_activation"],
    )
    assert want in fig.axes[0].get_title()
    assert (
        "quadratic student and teacher"
        in plots.plot_conserved_phase([-0.5, -1.0], [1.0, 0.5], [True, False]).axes[0].get_title()
    )


def test_the_cli_draws_the_fixed_points_of_a_relu_file(tmp_path, capsys):
    res = _quadratic_result().replace(params={"activation": "relu", "teacher_activation": "relu"})
    fq.save(tmp_path / "r.h5", res)
    argv = ["plot", str(tmp_path / "r.h5"), "--out", str(tmp_path), "--no-theory"]
    assert main(argv + ["--kind", "all"]) == 0
    wrote = capsys.readouterr().out
    assert "r-curves.png" in wrote and "r-fixed-points.png" in wrote


# ------------------------------------------------------------------ cost estimates


def test_erf_counts_twice_the_quadratic_in_cost_estimates():
    for method in ("sgd", "ode"):
        base = C.make_config({"method": method})
        quad = budget.seconds_per_run(base)
        assert budget.seconds_per_run(base.replace(activation="relu")) == quad
        assert budget.seconds_per_run(base.replace(activation="erf")) == 2 * quad
        assert budget.seconds_per_run(base.replace(teacher_activation="erf")) == 2 * quad


# ------------------------------------------------------------------ sweeps


def test_a_sweep_over_activations_plans_one_kernel_call_per_activation():
    sweep = parse_sweep(SWEEP)
    assert sweep.total_runs == 3 * 2 * 2
    coords = sweep.run_coordinates()
    assert list(coords["activation"][::4]) == ["quadratic", "relu", "erf"]
    np.testing.assert_array_equal(coords["teacher_activation"], coords["activation"])
    for chunk in plan_chunks(sweep, np.arange(sweep.total_runs), chunk_runs=100):
        names = {coords["activation"][r] for r in chunk.runs}
        assert len(names) == 1, names
    # a teacher's axis: coordinates hold the resolved names, never 'same'
    pairs = parse_sweep(
        '[fixed]\nmethod = "sgd"\n[axes]\nactivation = ["relu", "erf"]\n'
        'teacher_activation = ["same", "quadratic"]\n'
    ).run_coordinates()
    assert list(zip(pairs["activation"][::4], pairs["teacher_activation"][::4])) == [
        ("relu", "relu"),
        ("relu", "quadratic"),
        ("erf", "erf"),
        ("erf", "quadratic"),
    ]


def test_grid_points_that_are_the_same_runs_are_refused():
    with pytest.raises(InputError, match="are the same runs"):
        parse_sweep(
            '[fixed]\nmethod = "sgd"\nactivation = "relu"\n'
            '[axes]\nteacher_activation = ["same", "relu"]\n'
        )


@pytest.fixture(scope="module")
def activation_sweep(tmp_path_factory):
    """API: the sweep SWEEP, its first point stored directly (as a killed sweep leaves it),
    then resumed by ``fastquad sweep``."""
    folder = tmp_path_factory.mktemp("act")
    sweep = parse_sweep(SWEEP)
    out = folder / "s.h5"
    first = sweep.points[0]
    with SweepStore(out, sweep) as store:
        res = run_many([first] * first.n_runs, np.arange(first.n_runs), times=sweep.times)
        keep = store.stored()
        store.add(
            np.arange(first.n_runs),
            {k: v for k, v in result_arrays(res).items() if v is not None and k in keep},
        )
    path = sweep_files.write(folder, SWEEP)
    return sweep, path, out


def test_a_sweep_over_activations_resumes_and_loads_with_a_labelled_coordinate(
    activation_sweep, capsys
):
    """API: resume through the CLI, then every run is the direct run's, bit for bit."""
    sweep, path, out = activation_sweep
    argv = ["sweep", str(path), "--out", str(out), "--workers", "1", "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"; {sweep.n_runs} already stored" in text
    direct = np.concatenate(
        [
            run_many([c] * c.n_runs, np.arange(c.n_runs), times=sweep.times).eps_g
            for c in sweep.points
        ]
    )
    res = fq.read(out)
    np.testing.assert_array_equal(res.eps_g, direct)
    assert (res.status == fq.STATUS_DONE).all()
    assert list(res.coords["activation"][::4]) == ["quadratic", "relu", "erf"]
    ds = fq.load(out)
    assert ds.attrs["activation"] == ds.attrs["teacher_activation"] == "mixed"
    assert ds.activation.dims == ("run",) and "activation" in ds.coords
    per = ds.eps_g.groupby("activation").mean()
    assert per.dims == ("activation", "time")
    assert sorted(per.activation.values) == ["erf", "quadratic", "relu"]
    grid = ds.set_index(run=["activation", "lr", "replica"]).unstack("run")
    assert grid.eps_g.sizes == {"time": len(sweep.times), "activation": 3, "lr": 2, "replica": 2}
    # the runs differ: the activation reaches the kernels
    assert not np.allclose(per.sel(activation="relu"), per.sel(activation="quadratic"))
    # nothing left to do
    assert main(argv) == 0
    assert f"; {sweep.total_runs} already stored" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    assert "activations: quadratic/relu/erf student and teacher" in capsys.readouterr().out


def test_a_figure_of_a_sweep_over_activations_has_one_curve_per_activation(
    activation_sweep, tmp_path
):
    """API: the ODE theory of each activation, and a legend entry per activation."""
    _, _, out = activation_sweep
    ds = fq.load(out)
    fig = plots.plot_learning_curves(ds)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    for name in ("quadratic", "relu", "erf"):
        assert f"lr=0.05, {name} student and teacher" in labels
        assert f"lr=0.1, {name} student and teacher" in labels
    assert "quadratic/relu/erf student and teacher" in fig.axes[0].get_title()
    plots.save(fig, tmp_path, "curves")
    fig = plots.plot_phase_diagram(ds, "activation", "lr")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["erf", "quadratic", "relu"]
    plots.save(fig, tmp_path, "phase")
