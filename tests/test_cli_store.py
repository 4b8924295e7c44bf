"""`fastquad simulate`, the TOML config and the HDF5 layout (h5py and xarray)."""

import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

import fastquad as fq
from fastquad import config as C
from fastquad.cli import main


def _run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "fastquad.cli", *args], capture_output=True, text=True
    )


def test_simulate_writes_a_file_that_xarray_opens(tmp_path, capsys):
    out = tmp_path / "r.h5"
    rc = main(
        [
            "simulate",
            "--method",
            "sgd",
            "--d",
            "60",
            "--K",
            "2",
            "--M",
            "2",
            "--t-max",
            "3",
            "--n-runs",
            "3",
            "--lr",
            "0.05",
            "--teacher-v",
            "1,0.5",
            "--label-noise",
            "0.1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "runs=3" in text and "wrote" in text
    ds = fq.load(out)
    assert ds.sizes["run"] == 3 and ds.sizes["student"] == 2
    assert ds.eps_g.dims == ("run", "time")
    assert ds.Q.dims == ("run", "time", "student", "student_b")
    np.testing.assert_allclose(ds["lr"].values, 0.05)
    assert "lr" in ds.coords and ds.attrs["method"] == "sgd"
    assert (ds.status.values == fq.STATUS_DONE).all()
    # the file says how it was made, and h5py reads the same numbers back
    with h5py.File(out) as f:
        assert "label_noise = 0.1" in f.attrs["config"]
        assert "numba" in f.attrs["versions"]
    res = fq.read(out)
    np.testing.assert_array_equal(res.eps_g, ds.eps_g.values)
    # and it is what the Python API gives for the same configuration
    cfg = C.make_config(
        dict(
            method="sgd",
            d=60,
            K=2,
            M=2,
            t_max=3.0,
            n_runs=3,
            lr=0.05,
            teacher_v=[1.0, 0.5],
            label_noise=0.1,
        )
    )
    np.testing.assert_array_equal(C.run(cfg).eps_g, res.eps_g)


@pytest.mark.parametrize(
    "method,extra",
    [
        ("gd", ["--n-samples", "80", "--batch-size", "20"]),
        ("flow", []),
        ("ode", ["--integrator", "rk4"]),
    ],
)
def test_every_method_from_a_toml_file(tmp_path, method, extra):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'method = "{method}"\nd = 40\nK = 2\nM = 1\nt_max = 2.0\nn_runs = 2\n')
    out = tmp_path / "r.h5"
    assert main(["simulate", "--config", str(cfg), "--out", str(out), *extra]) == 0
    res = fq.read(out)
    assert res.method == method and res.eps_g.shape[0] == 2
    assert np.isfinite(res.eps_g).all()
    if method == "gd":
        assert res.train_error is not None


def test_ode_from_the_same_start_as_sgd():
    base = dict(d=80, K=2, M=2, t_max=2.0, n_runs=2, init_scale=0.5)
    sgd = C.run(C.make_config({**base, "method": "sgd"}))
    ode = C.run(C.make_config({**base, "method": "ode"}))
    np.testing.assert_allclose(ode.Q[:, 0], sgd.Q[:, 0], rtol=1e-12)
    np.testing.assert_allclose(ode.eps_g[:, 0], sgd.eps_g[:, 0], rtol=1e-12)


def test_networks_of_a_batch_are_each_runs_own_make_student_and_teacher():
    a = C.make_config(
        dict(
            d=30,
            K=3,
            M=2,
            init_scale=0.2,
            student_v=[0.5, -1.0, 2.0],
            seed=4,
            teacher_seed=9,
            init_overlap=0.1,
        )
    )
    b = C.make_config(dict(d=30, K=3, M=2, init_scale=1.5, seed=11, teacher_seed=9))
    cfgs, reps = [a, b, a, b, a], [0, 0, 7, 3, 2**40]
    W0, v0, Wt, vt = C.networks(cfgs, reps)
    for i, (c, r) in enumerate(zip(cfgs, reps)):
        Wt_i, vt_i = fq.make_teacher(30, 2, v=C._arr(c.teacher_v), seed=9)
        W_i, v_i = fq.make_student(
            30, 3, scale=c.init_scale, v=C._arr(c.student_v), seed=c.seed, run_id=r
        )
        np.testing.assert_array_equal(Wt[i], Wt_i)
        np.testing.assert_array_equal(vt[i], vt_i)
        np.testing.assert_array_equal(W0[i], W_i + c.init_overlap * np.vstack([Wt_i, 0 * W_i[:1]]))
        np.testing.assert_array_equal(v0[i], v_i)
    with pytest.raises(ValueError, match="replicas must be"):
        C.networks([a], [-1])


def test_per_run_values_are_checked_at_once_and_a_bad_one_is_named():
    from fastquad import _validate as V

    np.testing.assert_array_equal(
        V.per_run("lr", [0.1, 2, np.float32(0.5)], 3, low=0.0), [0.1, 2.0, np.float32(0.5)]
    )
    for bad, where in (([0.1, np.nan, 0.2], "lr[1]"), ([0.1, 0.2, -3], "lr[2]")):
        with pytest.raises(ValueError, match=re.escape(where) + " must be a finite number >= 0"):
            V.per_run("lr", bad, 3, low=0.0)
    with pytest.raises(ValueError, match=r"lr\[0\] must be a finite number > 0"):
        V.per_run("lr", np.array([0, 1]), 2, low=0.0, low_open=True)


@pytest.mark.parametrize(
    "args,match",
    [
        (["--lr", "-1"], "lr must be"),
        (["--d", "0"], "d must be"),
        (["--K", "1.5"], "K must be an integer"),
        (["--method", "adam"], "method must be one of"),
        (["--teacher-v", "1,2,3"], "teacher_v must have 2 entries"),
        (["--method", "gd"], "n_samples must be"),
        (["--train-second-layer", "maybe"], "train-second-layer"),
        (["--config", "nope.toml"], "--config: no such file"),
    ],
)
def test_bad_input_is_one_line_naming_the_parameter(tmp_path, args, match):
    proc = _run_cli("simulate", "--out", str(tmp_path / "x.h5"), *args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and match in err, err


def test_unknown_toml_keys_and_several_problems_reported_at_once(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("lr = -1\nd = 0\nlearning_rate = 3\n")
    proc = _run_cli("simulate", "--config", str(cfg), "--out", str(tmp_path / "x.h5"))
    assert proc.returncode == 2
    for key in ("lr must be", "d must be", "learning_rate: unknown parameter"):
        assert key in proc.stderr


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "r.h5"
    out.write_text("x")
    assert main(["simulate", "--out", str(out), "--t-max", "1"]) == 2
    assert out.read_text() == "x"


def test_help_explains_every_option():
    proc = _run_cli("simulate", "--help")
    assert proc.returncode == 0
    for name in C.PARAMETERS:
        assert "--" + name.replace("_", "-") in proc.stdout


def test_store_round_trip_keeps_divergence_and_nan(tmp_path, rng):
    W = rng.standard_normal((3, 2, 30))
    Wt = rng.standard_normal((2, 30))
    res = fq.simulate_sgd(W, np.ones(2), Wt, np.ones(2), np.array([0.05, 80.0, 0.05]), 3.0, seeds=2)
    assert res.status[1] == fq.STATUS_DIVERGED
    fq.save(tmp_path / "a.h5", res, weights=True)
    back = fq.read(tmp_path / "a.h5")
    np.testing.assert_array_equal(back.status, res.status)
    np.testing.assert_array_equal(back.t_stop, res.t_stop)
    np.testing.assert_array_equal(back.eps_g, res.eps_g)
    np.testing.assert_array_equal(back.W, res.W)
    ds = fq.load(tmp_path / "a.h5")
    assert np.isnan(ds.eps_g.values[1, -1])
    assert ds.status.attrs["flag_meanings"].split()[1:3] == ["done", "diverged"]


@pytest.mark.parametrize("command", ["simulate", "sweep", "info", "plot", "fixed-points"])
def test_help_shows_choices_and_each_default_once(command, capsys):
    from fastquad.cli import main

    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "[default:" not in text  # never shown twice
    if command == "simulate":
        assert "--method {sgd,gd,flow,ode}" in text and "--sampler {direct,exact,auto}" in text
        assert "--train-second-layer {true,false}" in text and "(default: sgd)" in text
