"""The ODE theory of a sweep's runs: one batched integration, bit-for-bit the per-run one, from
starts computed outside the sweep layer (config.initial_order_parameters)."""

import ast
import importlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import sweep_files  # noqa: E402

import fastquad as fq  # noqa: E402
from fastquad import config, plots  # noqa: E402
from fastquad.errors import InputError  # noqa: E402
from fastquad.sweep import parse_sweep  # noqa: E402

# two (K, M) shapes, two d, per-run lr and label noise: the batch is cut by shape and the
# rebuilt starts by d, and every per-run parameter comes from the file's coordinates
SWEEP = """
[fixed]
method = "sgd"
t_max = 3.0
n_times = 25
n_runs = 2
teacher_seed = 3
init_overlap = 0.2

[axes]
lr = [0.05, 0.2]
label_noise = [0.0, 0.3]
d = [40, 60]
init_scale = [0.05, 0.4]

[zip]
K = [1, 2]
M = [2, 1]
"""


def _run(text, out):
    return fq.load(sweep_files.run_in_process(text, out))


@pytest.fixture(scope="module")
def curves_only(tmp_path_factory):
    return _run(SWEEP, tmp_path_factory.mktemp("theory") / "c.h5")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    text = SWEEP + "\n[sweep]\norder_parameters = true\n"
    return _run(text, tmp_path_factory.mktemp("theory") / "r.h5")


def _per_run(ds, r, start):
    """The theory of run r alone: one integrate_ode call of one run, from ``start``."""
    k, m = int(ds.K.values[r]), int(ds.M.values[r])
    Q0, R0, v0 = start(ds, r, k, m)
    res = fq.integrate_ode(
        Q0,
        R0,
        v0,
        ds.T.values[r, :m, :m],
        ds.v_teacher.values[r, :m],
        float(ds.lr.values[r]),
        float(ds.time.values[-1]),
        times=ds.time.values,
        label_noise=float(ds.label_noise.values[r]),
    )
    return res.eps_g[0]


def _rebuilt(ds, r, k, m):
    """Run r's start rebuilt by hand: its networks, then closed_form.order_parameters."""
    cfg, rep = parse_sweep(str(ds.attrs["config"])).run_config(int(ds.run.values[r]))
    assert (cfg.K, cfg.M) == (k, m)
    W0, v0, Wt, _ = config.networks([cfg], [rep])
    Q0, R0, _ = fq.order_parameters(W0[0], Wt[0])
    return Q0, R0, v0[0]


def _stored(ds, r, k, m):
    return ds.Q.values[r, 0, :k, :k], ds.R.values[r, 0, :k, :m], ds.v.values[r, 0, :k]


@pytest.mark.parametrize("which", ["curves_only", "recorded"])
def test_batched_theory_is_the_per_run_theory_bit_for_bit(which, request):
    ds = request.getfixturevalue(which)
    start = _rebuilt if which == "curves_only" else _stored
    n = ds.sizes["run"]
    assert n == 64 and set(zip(ds.K.values, ds.M.values)) == {(1, 2), (2, 1)}
    th = plots.theory_curves(ds, np.arange(n))
    assert th.shape == (n, ds.sizes["time"]) and np.isfinite(th).all()
    for r in range(n):
        np.testing.assert_array_equal(th[r], _per_run(ds, r, start), err_msg=f"run {r}")
    # a run's curve does not depend on the other runs asked for, nor on their order
    some = np.array([37, 2, 63, 18, 2])
    np.testing.assert_array_equal(plots.theory_curves(ds, some), th[some])
    np.testing.assert_array_equal(plots.theory_curves(ds, [5]), th[[5]])


def test_rebuilt_and_recorded_starts_give_the_same_theory(curves_only, recorded):
    np.testing.assert_array_equal(curves_only.eps_g.values, recorded.eps_g.values)
    idx = np.arange(curves_only.sizes["run"])
    a, b = plots.theory_curves(curves_only, idx), plots.theory_curves(recorded, idx)
    np.testing.assert_allclose(a, b, rtol=1e-9)
    # and the theory starts where the simulation starts
    np.testing.assert_allclose(a[:, 0], curves_only.eps_g.values[:, 0], rtol=1e-12)


def test_the_learning_curves_plot_integrates_once(recorded, monkeypatch):
    calls = []
    real = plots.theory_curves

    def counted(ds, idx):
        calls.append(np.array(idx))
        return real(ds, idx)

    monkeypatch.setattr(plots, "theory_curves", counted)
    fig = plots.plot_learning_curves(recorded)
    assert len(calls) == 1
    dashed = [ln.get_ydata() for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--"]
    kept = [plots._kept(recorded, idx)[0] for _, idx in plots.groups(recorded)[:8]]
    assert len(dashed) == len(kept) and all(len(k) for k in kept)
    np.testing.assert_array_equal(calls[0], np.concatenate([k[:8] for k in kept]))
    for keep, y in zip(kept, dashed):
        np.testing.assert_array_equal(y, real(recorded, keep[:8]).mean(axis=0))
    plots._plt().close(fig)


def test_initial_order_parameters_are_where_the_ode_method_starts():
    cfgs = [
        config.make_config(dict(method="ode", d=50, K=3, M=2, t_max=1.0, n_times=5, **kw))
        for kw in (
            dict(init_scale=0.3, seed=4),
            dict(init_scale=0.01, seed=4, init_overlap=0.5, student_v=[1.0, -0.5, 0.2]),
            dict(teacher="gaussian", teacher_seed=9, teacher_v=[1.0, 2.0]),
        )
    ]
    cfgs = [cfgs[0], cfgs[1], cfgs[0], cfgs[2], cfgs[1]]
    reps = np.array([0, 0, 3, 1, 2])
    Q0, R0, v0, T, vt = config.initial_order_parameters(cfgs, reps)
    assert Q0.shape == (5, 3, 3) and R0.shape == (5, 3, 2) and T.shape == (5, 2, 2)
    res = config.run_many(cfgs, reps)
    for got, want in ((Q0, res.Q[:, 0]), (R0, res.R[:, 0]), (v0, res.v[:, 0])):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(T, res.T)
    np.testing.assert_array_equal(vt, res.v_teacher)


def test_initial_order_parameters_mix_d_and_build_in_slices(monkeypatch):
    base = dict(method="sgd", K=2, M=2, init_scale=0.2)
    cfgs = [config.make_config(dict(base, d=d, seed=s)) for d, s in ((30, 1), (80, 2), (30, 5))]
    cfgs = cfgs * 3
    reps = np.arange(9) % 4
    whole = config.initial_order_parameters(cfgs, reps)
    for i, (c, r) in enumerate(zip(cfgs, reps)):
        W0, v0, Wt, vt = config.networks([c], [r])
        Q0, R0, T = fq.order_parameters(W0[0], Wt[0])
        for got, want in zip(whole, (Q0, R0, v0[0], T, vt[0])):
            np.testing.assert_array_equal(got[i], want)
    monkeypatch.setattr(config, "_START_CHUNK", 1)  # one run at a time
    for a, b in zip(config.initial_order_parameters(cfgs, reps), whole):
        np.testing.assert_array_equal(a, b)
    other = config.make_config(dict(base, d=30, K=3))
    with pytest.raises(InputError, match="share K and M"):
        config.initial_order_parameters([cfgs[0], other], [0, 0])
    with pytest.raises(InputError, match="replicas"):
        config.initial_order_parameters(cfgs[:2], [0])


def test_sweep_initial_order_parameters_is_the_config_one(curves_only):
    sweep = parse_sweep(str(curves_only.attrs["config"]))
    runs = np.array([0, 9, 33, 63])
    cfgs, reps = sweep.run_configs(runs)
    assert [sweep.run_config(r) for r in runs] == list(zip(cfgs, reps.tolist()))
    for r in runs:
        cfg, rep = sweep.run_config(r)
        want = config.initial_order_parameters([cfg], [rep])[:3]
        for got, w in zip(sweep.initial_order_parameters(r), want):
            np.testing.assert_array_equal(got, w[0])


PHYSICS = ("closed_form", "ode", "model", "simulate", "kernels", "analysis")


def _imported(tree):
    """Module names a source file imports (relative ones with their leading dots dropped),
    each split into its dotted parts, plus the names imported from them."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")
        elif isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".")
            yield parts
            for a in node.names:
                yield [*parts, a.name]


def test_the_sweep_layer_imports_no_physics():
    sweep_dir = Path(importlib.import_module("fastquad.sweep").__file__).parent
    for path in sorted(sweep_dir.glob("*.py")):
        tree = ast.parse(path.read_text())
        for parts in _imported(tree):
            assert not set(parts) & set(PHYSICS), f"{path.name} imports {'.'.join(parts)}"
    spec = importlib.import_module("fastquad.sweep.spec")
    for name, obj in vars(spec).items():
        module = str(getattr(obj, "__module__", None) or getattr(obj, "__name__", ""))
        assert not any(
            module == f"fastquad.{p}" or module.startswith(f"fastquad.{p}.") for p in PHYSICS
        ), name
    assert "order_parameters(" not in Path(spec.__file__).read_text().replace(
        "initial_order_parameters(", ""
    )


def test_fixed_parameters_of_a_sweep_reach_its_theory(tmp_path):
    # lr, label noise, batch size and a frozen second layer fixed in the sweep file (not axes)
    # are in its config only: the theory must use them, not defaults
    text = """
[fixed]
method = "sgd"
d = 50
K = 2
M = 2
t_max = 2.0
n_times = 9
n_runs = 2
lr = 0.2
label_noise = 0.5
batch_size = 3
train_second_layer = false

[axes]
init_scale = [0.1, 0.3]

[sweep]
order_parameters = true
"""
    ds = _run(text, tmp_path / "fixed.h5")
    got = plots.theory_curves(ds, np.arange(ds.sizes["run"]))
    assert got is not None
    for r in range(ds.sizes["run"]):
        want = fq.integrate_ode(
            *_stored(ds, r, 2, 2),
            ds.T.values[r],
            ds.v_teacher.values[r],
            0.2,
            2.0,
            times=ds.time.values,
            label_noise=0.5,
            batch_size=3,
            train_second_layer=False,
        ).eps_g[0]
        np.testing.assert_array_equal(got[r], want)
    # and the defaults would have given another curve: the test can fail
    plain = fq.integrate_ode(
        *_stored(ds, 0, 2, 2),
        ds.T.values[0],
        ds.v_teacher.values[0],
        0.2,
        2.0,
        times=ds.time.values,
    ).eps_g[0]
    assert np.max(np.abs(plain - got[0]) / got[0]) > 1e-3
