"""The fixed-point figure (plots.plot_fixed_points): one style and one legend entry per class
of fixed point, w = 0 drawn once, coinciding levels merged, eps_g = 0 on a symlog axis,
no negative values drawn."""

import matplotlib

matplotlib.use("Agg")

from dataclasses import replace  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from fastquad import plots  # noqa: E402
from fastquad.analysis import find_fixed_points  # noqa: E402

W0_EPS = 2.375


@pytest.fixture(scope="module")
def template():
    """A real FixedPoint (K = M = 1), to build made-up points from with dataclasses.replace."""
    return find_fixed_points(1, 1, [[1.0]], [1.0], 0.1, n_starts=8, seed=0)[0]


def _point(template, eps, kind, n_unstable, v, dead=False):
    v = np.asarray(v, float)
    K = v.size
    Q = np.zeros((K, K)) if dead else np.eye(K)
    R = np.zeros((K, 2)) if dead else np.full((K, 2), 0.3)
    return replace(
        template,
        Q=Q,
        R=R,
        v=v,
        eps_g=eps,
        kind=kind,
        n_unstable=n_unstable,
        T=np.eye(2),
        v_teacher=np.array([1.0, 0.5]),
    )


@pytest.fixture(scope="module")
def points(template):
    """K = M = 2: the global minimum (round-off eps_g), four levels of which two hold two
    points each, and w = 0 reported four times (stable twice, saddle, unstable)."""
    p = lambda *a, **k: _point(template, *a, **k)  # noqa: E731
    return [
        p(4e-16, "stable", 0, [0.8, 0.6]),
        p(0.3125, "saddle", 1, [0.8, 0.4]),
        p(1 / 3, "stable", 0, [0.9, -0.4]),
        p(1 / 3 * (1 + 1e-9), "saddle", 2, [0.8, 0.01]),
        p(4 / 3, "saddle", 1, [1.2, -1.1]),
        p(4 / 3, "saddle", 3, [0.7, 0.01]),
        p(2.0, "saddle", 2, [0.6, -0.3]),
        p(W0_EPS, "stable", 0, [-1.0, -1.0], dead=True),
        p(W0_EPS, "saddle", 3, [1.0, -1.0], dead=True),
        p(W0_EPS, "unstable", 7, [1.0, 1.0], dead=True),
        p(W0_EPS + 1e-15, "stable", 0, [-0.5, -2.0], dead=True),
    ]


def _fake_ds():
    t = np.concatenate([[0.0], np.logspace(-1, 3, 200)])
    e = W0_EPS * np.exp(-t / 50.0)
    e[-40:] = np.array([-1e-15, 0.0, 3e-16, -2e-12] * 10)  # round-off around 0
    e2 = e.copy()
    e2[5] = np.nan
    return SimpleNamespace(
        time=SimpleNamespace(values=t), eps_g=SimpleNamespace(values=np.array([e, e2]))
    )


@pytest.fixture(params=["no-ds", "ds"])
def fig(request, points):
    ds = _fake_ds() if request.param == "ds" else None
    f = plots.plot_fixed_points(points, ds, runs=(0, 1)) if ds else plots.plot_fixed_points(points)
    f.canvas.draw()
    yield f
    plt.close(f)


def _gid(artists, prefix):
    return [a for a in artists if (a.get_gid() or "").startswith(prefix)]


def _labels(fig):
    return [t.get_text() for t in _gid(fig.axes[0].texts, "fp-label")]


def _levels(fig):
    return sorted(float(ln.get_ydata()[0]) for ln in _gid(fig.axes[0].lines, "fp-level"))


def test_one_axes_and_legend_labels_are_unique(fig):
    assert len(fig.axes) == 1
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(labels) == len(set(labels)) and all(labels)


def test_one_style_per_class_of_kind_and_unstable_directions(fig, points):
    ax = fig.axes[0]
    dead = [float(np.abs(p.Q).max()) == 0 for p in points]
    classes = {(p.kind, p.n_unstable) for p, d in zip(points, dead) if not d}
    n_styles = len(classes) + 1  # + w = 0, a style of its own
    markers = _gid(ax.lines, "fp-marker:")
    styles = {
        m.get_gid(): (to_hex(m.get_color()), m.get_marker(), to_hex(m.get_mfc())) for m in markers
    }
    assert set(styles) == {f"fp-marker:{k}:{n}" for k, n in classes} | {"fp-marker:w0"}
    assert len(set(styles.values())) == n_styles
    # the legend: one entry per class, each in its own style (and the two learning curves)
    leg = ax.get_legend()
    fp_handles = [
        (h, t.get_text())
        for h, t in zip(leg.legend_handles, leg.get_texts())
        if not t.get_text().startswith("learning curve")
    ]
    assert len(fp_handles) == n_styles
    assert (
        len(
            {(to_hex(h.get_color()), h.get_marker(), str(h.get_linestyle())) for h, _ in fp_handles}
        )
        == n_styles
    )
    names = [t for _, t in fp_handles]
    assert "saddle, 1 unstable direction" in names and "saddle, 3 unstable directions" in names


def test_w0_is_drawn_once_with_its_stability_by_the_sign_of_v(fig):
    ax = fig.axes[0]
    assert len(_gid(ax.lines, "fp-marker:w0")) == 1
    assert _levels(fig).count(pytest.approx(W0_EPS)) == 1
    w0 = [t for t in _labels(fig) if "$w = 0$" in t]
    assert len(w0) == 1
    text = w0[0]
    assert text.startswith("2.375 (4 points)")
    assert "stable for all $v_j<0$" in text
    assert "saddle (3 unst.) for 1 of 2 $v_j>0$" in text
    assert "unstable (7 unst.) for all $v_j>0$" in text


def test_coinciding_levels_are_drawn_once_with_a_combined_label(fig):
    assert _levels(fig) == pytest.approx([0.0, 0.3125, 1 / 3, 4 / 3, 2.0, W0_EPS])
    labels = _labels(fig)
    assert len(labels) == 6
    assert "0.3333 (2 points): stable, saddle (2 unst.)" in labels
    assert "1.333 (2 points): saddles (1, 3 unst.)" in labels
    assert "0.3125: saddle (1 unst.)" in labels


def test_eps_zero_is_on_a_symlog_axis_and_labelled(fig):
    ax = fig.axes[0]
    assert ax.get_yscale() == "symlog"
    lo, hi = ax.get_ylim()
    assert lo <= 0.0 < W0_EPS < hi
    linthresh = ax.yaxis.get_transform().linthresh
    assert 0.1 * 0.3125 < linthresh < 0.3125  # a bit below the smallest positive level
    assert 0.0 in _levels(fig)
    assert sum("global minimum" in t for t in _labels(fig)) == 1
    # every level lies inside the axis, apart from the others
    y = ax.transData.transform([(1.0, v) for v in _levels(fig)])[:, 1]
    y0, y1 = ax.get_window_extent().y0, ax.get_window_extent().y1
    assert np.all((y > y0) & (y < y1)) and np.all(np.diff(y) > 1.0)


def test_no_global_minimum_label_without_a_zero_level(points):
    f = plots.plot_fixed_points(points[1:])
    assert not any("global minimum" in t for t in _labels(f))
    assert f.axes[0].get_yscale() == "symlog" and f.axes[0].get_ylim()[0] <= 0
    plt.close(f)


def test_nothing_negative_is_drawn(fig):
    ax = fig.axes[0]
    # every line in eps_g units: level lines and learning curves (not the markers and leaders
    # at the right edge, placed in axes coordinates)
    data_lines = [ln for ln in ax.lines if ln.get_transform() is not ax.transAxes]
    assert len(data_lines) >= 6
    for ln in data_lines:
        y = np.asarray(ln.get_ydata(), float)
        assert np.all(y[np.isfinite(y)] >= 0.0), ln.get_gid()


def test_learning_curves_clamped_at_zero_on_log_time(points):
    ds = _fake_ds()
    f = plots.plot_fixed_points(points, ds, runs=(0, 1))
    ax = f.axes[0]
    curves = _gid(ax.lines, "learning-curve")
    assert len(curves) == 2 and ax.get_xscale() == "log"
    x, y = np.asarray(curves[0].get_xdata()), np.asarray(curves[0].get_ydata())
    assert np.all(x > 0) and x.size == ds.time.values.size - 1
    assert np.all(y[-40:] >= 0) and np.any(y[-40:] == 0)
    np.testing.assert_allclose(y[:-40], ds.eps_g.values[0, 1:-40])
    assert np.isnan(curves[1].get_ydata()[4])  # non-finite left out, not drawn
    plt.close(f)


def test_labels_do_not_overlap_and_fit_the_figure(fig):
    r = fig.canvas.get_renderer()
    boxes = sorted(
        (t.get_window_extent(r) for t in _gid(fig.axes[0].texts, "fp-label")), key=lambda b: b.y0
    )
    assert all(a.y1 <= b.y0 + 0.5 for a, b in zip(boxes, boxes[1:]))
    W, H = fig.get_size_inches() * fig.dpi
    assert all(b.x1 <= W and b.y0 >= 0 and b.y1 <= H for b in boxes)


def test_with_found_fixed_points_and_no_points(tmp_path):
    pts = find_fixed_points(2, 2, np.eye(2), [1.0, 0.5], 0.1, n_starts=40, seed=1)
    f = plots.plot_fixed_points(pts, _fake_ds())
    f.savefig(tmp_path / "fp.png")
    assert len(_gid(f.axes[0].lines, "fp-marker:w0")) <= 1
    labels = [t.get_text() for t in f.axes[0].get_legend().get_texts()]
    assert len(labels) == len(set(labels))
    plt.close(f)
    for ds in (None, _fake_ds()):
        f = plots.plot_fixed_points([], ds)
        f.savefig(tmp_path / "empty.png")
        assert not _labels(f)
        plt.close(f)
