"""Every figure kind is produced from a small sweep (PNG and PDF), from the CLI."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import sweep_files  # noqa: E402
from matplotlib.image import imread  # noqa: E402

import fastquad as fq  # noqa: E402
from fastquad import plots  # noqa: E402
from fastquad.cli import main  # noqa: E402

SWEEP = """
[fixed]
method = "sgd"
d = 100
K = 2
M = 2
teacher_v = [1.0, 0.5]
t_max = 30.0
n_times = 41
n_runs = 3
student_v = 0.5

[axes]
lr = [0.05, 0.1]
init_scale = [0.01, 0.5]

[sweep]
order_parameters = true
"""


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("plots") / "s.h5"
    return sweep_files.run_in_process(SWEEP, out)


def _looks_like_a_figure(path):
    img = imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 300
    # not blank: a real figure has many distinct colours
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 20


@pytest.mark.parametrize("kind", ["curves", "order", "stages", "phase", "fixed-points"])
def test_each_figure_kind_from_the_cli(sweep_file, tmp_path, kind, capsys):
    extra = ["--quantity", "time_to_learn", "--threshold", "0.1"] if kind == "phase" else []
    assert main(["plot", str(sweep_file), "--kind", kind, "--out", str(tmp_path), *extra]) == 0
    png = tmp_path / f"s-{kind}.png"
    assert png.exists() and (tmp_path / f"s-{kind}.pdf").stat().st_size > 1000
    _looks_like_a_figure(png)
    assert "wrote" in capsys.readouterr().out


def test_phase_quantities_and_groups(sweep_file):
    ds = fq.load(sweep_file)
    assert plots.sweep_axes(ds) == ["lr", "init_scale"]
    gr = plots.groups(ds)
    assert len(gr) == 4 and all(len(idx) == 3 for _, idx in gr)
    final = plots.phase_quantity(ds, "final_eps")
    np.testing.assert_array_equal(final, ds.eps_g.values[:, -1])
    rate = plots.phase_quantity(ds, "success_rate", threshold=0.5)
    ttl = plots.phase_quantity(ds, "time_to_learn", threshold=0.5)
    assert set(np.unique(rate)) <= {0.0, 1.0}
    assert (np.isfinite(ttl) == (rate == 1)).all()
    with pytest.raises(ValueError, match="quantity must be one of"):
        plots.phase_quantity(ds, "speed")


def test_theory_curves_start_where_the_simulation_starts(sweep_file):
    ds = fq.load(sweep_file)
    th = plots.theory_curves(ds, np.arange(3))
    np.testing.assert_allclose(th[:, 0], ds.eps_g.values[:3, 0], rtol=1e-12)


def test_plot_errors_name_the_flag(sweep_file, tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nope.h5")]) == 2
    assert (
        main(["plot", str(sweep_file), "--kind", "phase", "--x", "colour", "--out", str(tmp_path)])
        == 2
    )
    assert "--x must name a per-run coordinate" in capsys.readouterr().err
    assert main(["plot", str(sweep_file), "--kind", "order", "--run", "99"]) == 2


def test_a_curves_only_sweep_plots_every_kind_that_applies(tmp_path, capsys):
    out = tmp_path / "c.h5"
    curves_only = SWEEP.replace("order_parameters = true", "")
    sweep_files.run_in_process(curves_only, out)
    assert main(["plot", str(out), "--kind", "order", "--out", str(tmp_path)]) == 2
    assert "order_parameters = true" in capsys.readouterr().err
    assert main(["plot", str(out), "--kind", "all", "--out", str(tmp_path)]) == 0
    wrote = capsys.readouterr().out
    assert "c-curves.png" in wrote and "c-order" not in wrote
    _looks_like_a_figure(tmp_path / "c-curves.png")
