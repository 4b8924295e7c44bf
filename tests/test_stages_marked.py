"""The stage detector marks the plateaus a person marks: no more, no fewer.

- Synthetic learning curves whose plateaus are known by construction (level, start, end,
  tilt), with the noise of online SGD at d = 1000, on log and linear time grids, and curves
  with no plateau where a person sees none;
- the online-SGD curves of the study (``data/paper/stages.toml``), with plateaus marked by eye;
- invariance: relabelling the units of random problems (permutations, ``w_j -> -w_j``) leaves
  the learning curve, and so the stages, unchanged;
- the stage figure: linear time, a legend entry for every band; ``plots.save`` warns before
  a second plot replaces a file of this run.

Tolerances, for every marked plateau: its level within ``LEVEL_TOL`` (relative), its start and
end within ``TIME_TOL`` of the marked time plus the spacing of the records there (a detector
can only answer with recorded times).
"""

import matplotlib

matplotlib.use("Agg")

import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import fastquad as fq  # noqa: E402
from fastquad import plots  # noqa: E402
from fastquad.analysis import (  # noqa: E402
    detect_stages,
    detect_stages_batch,
    plateau_levels,
    plateau_levels_with_noise,
)
from fastquad.config import networks, run_many  # noqa: E402
from fastquad.sweep import load_sweep  # noqa: E402

LEVEL_TOL = 0.03
TIME_TOL = 0.05
STUDY = Path(__file__).resolve().parent.parent / "data" / "paper" / "stages.toml"

# Noise of ln eps_g about a smooth curve in online SGD at d = 1000 (the study's runs): none on
# the first plateau of a small start, 0.004 to 0.01 on the later ones -- white on a log grid,
# correlated over about ten time units on a grid of one record per unit -- and 0.03 to 0.05 at
# the floor that label noise 0.3 sets (0.035 typical). The synthetic curves take these.
SGD_NOISE = 0.01
FLOOR_NOISE = 0.035
CORRELATION_TIME = 8.0  # per 1000 time units of the record


def _smoothstep(u):
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)


def _marked_curve(t, plateaus, end_level, end_time=None):
    """ln eps_g of a curve with known plateaus, in linear time.

    ``plateaus``: (level, start, end, tilt) each. On a plateau ln eps falls by ``tilt`` from
    start to end, half linearly and half accelerating (as an escape from a saddle sags), and
    passes through ``level`` at its middle; between plateaus, and after the last one down to
    ``end_level`` at ``end_time`` (default: the last time), it falls along a smooth step with
    level ends (a corner a person puts at the plateau's start or end).
    """
    t = np.asarray(t, dtype=np.float64)
    y = np.empty_like(t)
    shape = lambda u: 0.5 * u + 0.5 * u * u  # noqa: E731
    tops = [np.log(lev) + tilt * shape(0.5) for lev, _, _, tilt in plateaus]
    for k, (_, on, esc, tilt) in enumerate(plateaus):
        on_plateau = (t >= on) & (t <= esc)
        y[on_plateau] = tops[k] - tilt * shape((t[on_plateau] - on) / (esc - on))
        y_esc = tops[k] - tilt
        if k + 1 < len(plateaus):
            nxt, y_to = plateaus[k + 1][1], tops[k + 1]
        else:
            nxt, y_to = (t[-1] if end_time is None else end_time), np.log(end_level)
        after = t > esc
        if k + 1 < len(plateaus):
            after &= t < nxt
        y[after] = y_esc + (y_to - y_esc) * _smoothstep((t[after] - esc) / (nxt - esc))
    y[t < plateaus[0][1]] = tops[0]
    return y


def _sgd_noise(t, sigma, rng, correlation_time=0.0):
    """Noise of ln eps_g: white per record, or correlated over ``correlation_time``."""
    z = rng.standard_normal(t.size)
    if correlation_time <= 0:
        return sigma * z
    out = np.empty(t.size)
    out[0] = z[0]
    for i in range(1, t.size):
        r = np.exp(-(t[i] - t[i - 1]) / correlation_time)
        out[i] = r * out[i - 1] + np.sqrt(1 - r * r) * z[i]
    return sigma * out


def _tolerance(t, mark):
    """TIME_TOL of the marked time, plus the spacing of the records there."""
    k = int(np.clip(np.searchsorted(t, mark), 1, t.size - 1))
    return TIME_TOL * mark + (t[k] - t[k - 1])


def _assert_marks(t, st, marks, what):
    """The detector's plateaus are the marked ones: (level, start, end[, level tolerance])
    each, start 0 for a plateau the curve starts on and end None for one it has not left."""
    found = [
        f"{lv:.4g} [{on:.4g}, {esc:.4g}]" for lv, on, esc in zip(st.levels, st.onsets, st.escapes)
    ]
    assert st.n_plateaus == len(marks), f"{what}: marked {marks}, found {found}"
    for k, (mark, lv, on, esc) in enumerate(zip(marks, st.levels, st.onsets, st.escapes)):
        level, start, end = mark[:3]
        where = f"{what}: plateau {k + 1} marked {level:g} [{start:g}, {end}], found {found[k]}"
        assert abs(lv / level - 1) <= (mark[3] if len(mark) > 3 else LEVEL_TOL), where
        if start == 0:
            assert on == 0, where
        else:
            assert abs(on - start) <= _tolerance(t, start), where
        if end is None:
            assert np.isnan(esc), where
        else:
            assert abs(esc - end) <= _tolerance(t, end), where


def _log_grid(t_max, t_min=None, n=400):
    return np.concatenate([[0.0], np.geomspace(t_min or t_max / 1000, t_max, n)])


def _linear_grid(t_max, n=1001):
    return np.linspace(0.0, t_max, n)


# Synthetic curves: (plateaus, end level, end time, quiet until, floor noise, grids).
# Levels, durations and tilts of online SGD at d = 1000: the study (v* = 1, 0.6, 0.3: raised
# plateaus at 0.80 and 0.124, the first one tilted by 8%), four teacher units (tilts up to
# 13%, just under the smallest drop), a label-noise floor the curve ends on, and plateaus from
# t of order 1 to 10^4 (a log grid only: a linear one does not resolve the first ones).
SYNTHETIC = {
    "study": (
        [(3.255, 0, 386, 0.0), (0.80, 410, 505, 0.08), (0.124, 552, 790, 0.04)],
        1e-6,
        None,
        390.0,
        None,
        ("log", "linear"),
    ),
    "four units": (
        [
            (4.63, 0, 340, 0.0),
            (1.55, 352, 410, 0.05),
            (0.44, 430, 520, 0.10),
            (0.085, 545, 700, 0.13),
        ],
        1e-5,
        None,
        345.0,
        None,
        ("log", "linear"),
    ),
    "label-noise floor": (
        [(2.37, 0, 450, 0.0), (0.37, 470, 600, 0.06), (0.005, 700, 1000, 0.0)],
        0.005,
        None,
        455.0,
        FLOOR_NOISE,
        ("log", "linear"),
    ),
    "every time scale": (
        [
            (2.0, 0, 4, 0.0),
            (0.8, 5, 10, 0.06),
            (0.25, 12, 200, 0.03),
            (0.05, 230, 2000, 0.0),
            (1e-3, 2600, 1e4, 0.0),
        ],
        1e-3,
        2600.0,
        0.0,
        None,
        ("log",),
    ),
}


def _synthetic(name, grid, seed):
    plateaus, end_level, end_time, quiet, floor_noise, _ = SYNTHETIC[name]
    t_max = float(plateaus[-1][2]) if end_time else 1000.0
    t = (
        _log_grid(t_max, t_min=0.1 if t_max > 1000 else None)
        if grid == "log"
        else _linear_grid(t_max)
    )
    y = _marked_curve(t, plateaus, end_level, end_time)
    rng = np.random.default_rng(seed)
    corr = 0.0 if grid == "log" else CORRELATION_TIME * t_max / 1000
    noise = np.where(t > quiet, _sgd_noise(t, SGD_NOISE, rng, corr), 0.0)
    marks = [
        (lev, on, None if (end_time or floor_noise) and k == len(plateaus) - 1 else esc)
        for k, (lev, on, esc, _) in enumerate(plateaus)
    ]
    if floor_noise:
        on = plateaus[-1][1]
        noise = np.where(t >= on, _sgd_noise(t, floor_noise, rng, corr), noise)
        # its level is a median of noisy records: within three of its standard errors more
        n_independent = np.count_nonzero(t >= on) if corr == 0 else (t[-1] - on) / (2 * corr)
        marks[-1] += (LEVEL_TOL + 3 * 1.2533 * floor_noise / np.sqrt(n_independent),)
    return t, np.exp(y + noise), marks


@pytest.mark.parametrize("name, grid", [(n, g) for n, c in SYNTHETIC.items() for g in c[-1]])
def test_synthetic_plateaus_are_found_as_marked(name, grid):
    for seed in range(3):
        t, eps, marks = _synthetic(name, grid, seed)
        _assert_marks(t, detect_stages(t, eps), marks, f"{name}, {grid} grid, seed {seed}")


def test_the_synthetic_curves_are_what_they_claim():
    # the construction itself: level at each plateau's middle, the tilt across it, and the
    # noise as stated (so the cases above test what they say)
    plateaus = SYNTHETIC["study"][0]
    t = _linear_grid(1000.0, 100001)
    y = _marked_curve(t, plateaus, 1e-6)
    for lev, on, esc, tilt in plateaus:
        mid = np.argmin(np.abs(t - (on + esc) / 2))
        np.testing.assert_allclose(np.exp(y[mid]), lev, rtol=1e-3)
        a, b = np.searchsorted(t, [on, esc])
        np.testing.assert_allclose(y[a] - y[b - 1], tilt, atol=2e-3)
    np.testing.assert_allclose(np.exp(y[-1]), 1e-6)
    tl = _linear_grid(1000.0)
    noise = _sgd_noise(tl, SGD_NOISE, np.random.default_rng(0), CORRELATION_TIME)
    assert 0.8 * SGD_NOISE < noise.std() < 1.2 * SGD_NOISE
    lag = int(CORRELATION_TIME)
    assert np.corrcoef(noise[:-lag], noise[lag:])[0, 1] > 0.2


def _no_plateau_cases():
    """Curves with one flat plateau first and then none a person would mark."""
    t = _log_grid(1000.0)
    lt = _linear_grid(1000.0)
    cliff = np.log(2.0) + np.log(0.25) * _smoothstep((t - 100) / 10)
    tail = np.where(t > 110, -1.0 * np.log(np.maximum(t, 110) / 110), 0.0)  # eps ~ 1/t
    decay = np.log(1.5) - np.maximum(lt - 200, 0) / 80  # exp(-t / 80)
    one_drop = np.log(1.0) + np.log(0.1) / (1 + np.exp(-(lt - 500) / 12))  # logistic in t
    return [
        ("a cliff into a power-law tail", t, 0.0, cliff + tail, [(2.0, 0, 100)]),
        ("an exponential decay", lt, CORRELATION_TIME, decay, [(1.5, 0, 200)]),
        ("one smooth drop", lt, CORRELATION_TIME, one_drop, [(1.0, 0, 450), (0.1, 550, None)]),
    ]


@pytest.mark.parametrize("case", range(3))
def test_curves_without_a_plateau_where_none_is_marked(case):
    name, t, corr, y, marks = _no_plateau_cases()[case]
    for seed in range(3):
        noise = np.where(
            t > marks[0][2], _sgd_noise(t, SGD_NOISE, np.random.default_rng(seed), corr), 0.0
        )
        _assert_marks(t, detect_stages(t, np.exp(y + noise)), marks, f"{name}, seed {seed}")


# ------------------------------------------------------------------ the study's curves

# The plateaus of the study's online-SGD runs (data/paper/stages.toml, replicas 0-2), marked
# by eye on their records: where the curve turns from a drop into a plateau and back. Run 0
# is the one in the study's figure, with its tilted plateau at about 0.8 from t = 410 to 505.
STUDY_MARKS = {
    0: [(3.255, 0, 388), (0.80, 410, 505), (0.125, 550, 800)],
    1: [(3.255, 0, 388), (0.80, 410, 522), (0.124, 565, 910)],
    2: [(3.255, 0, 376), (0.80, 395, 495), (0.124, 548, 760)],
}


@pytest.fixture(scope="module")
def study_sgd():
    sweep = load_sweep(STUDY)
    point = next(p for p in sweep.points if p.method == "sgd")
    assert point.d == 1000
    res = run_many([point] * len(STUDY_MARKS), np.array(sorted(STUDY_MARKS)), times=sweep.times)
    return point, sweep, res


def test_the_study_plateaus_are_found_as_marked(study_sgd):
    _, _, res = study_sgd
    for run, marks in STUDY_MARKS.items():
        _assert_marks(res.t, detect_stages(res.t, res.eps_g[run]), marks, f"study run {run}")
    batch = detect_stages_batch(res.t, res.eps_g)
    np.testing.assert_array_equal(batch.n_plateaus, [len(m) for m in STUDY_MARKS.values()])


def test_the_study_plateaus_sit_at_the_levels_predicted_with_the_noise_term(study_sgd):
    # the raised plateaus of online SGD are the noise-term levels of the run's own state, not
    # the lr^1 levels: measured within 2% of the former, more than 5% from the latter
    point, _, res = study_sgd
    lr1 = plateau_levels(np.asarray(point.teacher_v, dtype=float))
    for run in range(res.eps_g.shape[0]):
        st = detect_stages(res.t, res.eps_g[run])
        ends = np.where(np.isfinite(st.escapes), st.escapes, res.t[-1])
        mid = [int(np.argmin(np.abs(res.t - 0.5 * (a + b)))) for a, b in zip(st.onsets, ends)]
        pred = plateau_levels_with_noise(
            point.K,
            point.M,
            None,
            point.teacher_v,
            point.lr,
            states=(res.Q[run, mid], res.R[run, mid], res.v[run, mid]),
        ).eps_full
        for level, full in zip(st.levels[1:], pred[1:]):  # the plateaus after w = 0
            flow = lr1[np.argmin(np.abs(np.log(level / lr1[lr1 > 0])))]
            assert abs(level - full) <= 0.02 * full, (run, level, full)
            assert abs(level - flow) > 0.05 * flow, (run, level, flow)


# ------------------------------------------------------------------ invariance


def _relabel(rng, W, v):
    """The same units in a random order, each with a random sign of its weights."""
    perm = rng.permutation(W.shape[0])
    sign = rng.choice([-1.0, 1.0], size=W.shape[0])
    return sign[:, None] * W[perm], v[perm]


def _same_stages(a, b):
    assert a.n_plateaus == b.n_plateaus and a.n_drops == b.n_drops
    np.testing.assert_allclose(a.levels, b.levels, rtol=1e-6)
    np.testing.assert_array_equal(a.onsets, b.onsets)
    np.testing.assert_array_equal(a.escapes, b.escapes)
    np.testing.assert_allclose(a.drop_depths, b.drop_depths, rtol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_stages_do_not_depend_on_the_labels_of_the_units(seed):
    # random problems: K = M in 2..4, distinct teacher weights, a small start, the ODE with its
    # SGD-noise term (raised, tilted plateaus); the relabelled problem permutes the student's
    # and the teacher's units and flips the signs of some of their rows
    rng = np.random.default_rng(100 + seed)
    K = int(rng.integers(2, 5))
    v_star = np.sort(rng.uniform(0.25, 1.0, K))[::-1] + 0.15 * np.arange(K)[::-1]
    d = 200
    Wt, vt = fq.make_teacher(d, K, v=v_star, seed=seed)
    W0, v0 = fq.make_student(d, K, scale=1e-3, v=0.05, seed=seed + 7)
    W1, v1 = _relabel(rng, W0, v0)
    Wt1, vt1 = _relabel(rng, Wt, vt)
    np.testing.assert_allclose(plateau_levels(vt1), plateau_levels(vt), rtol=1e-12)
    for times in (_log_grid(1500.0), _linear_grid(1500.0, 1501)):
        curves = []
        for W, v, Wtt, vtt in ((W0, v0, Wt, vt), (W1, v1, Wt1, vt1)):
            Q, R, T = fq.order_parameters(W, Wtt)
            curves.append(
                fq.integrate_ode(Q, R, v, T, vtt, 0.05, 1500.0, times=times, sgd_noise=True).eps_g[
                    0
                ]
            )
        # the curve is invariant (down to round-off, where it has converged)
        np.testing.assert_allclose(curves[1], curves[0], rtol=1e-6, atol=1e-12 * curves[0][0])
        a, b = (detect_stages(times, e) for e in curves)
        assert a.n_plateaus >= 2, (K, v_star, a.levels)  # a problem with stages to compare
        _same_stages(a, b)


def test_stages_of_online_sgd_do_not_depend_on_the_labels_of_the_student_units(study_sgd):
    # online SGD draws its inputs in the teacher's frame, so relabelling the student's units
    # gives the same run (to round-off): its stages must be the same
    point, sweep, res = study_sgd
    W0, v0, Wt, vt = networks([point], [0])
    W1, v1 = _relabel(np.random.default_rng(5), W0[0], v0[0])
    again = fq.simulate_sgd(
        W1,
        v1,
        Wt[0],
        vt[0],
        point.lr,
        point.t_max,
        seeds=point.seed,
        run_ids=[0],
        times=sweep.times,
        batch_size=point.batch_size,
        label_noise=point.label_noise,
        sampler=point.sampler,
        dtype=point.dtype,
        max_error=point.max_error,
        train_second_layer=point.train_second_layer,
    )
    np.testing.assert_allclose(again.eps_g[0], res.eps_g[0], rtol=1e-6)
    _same_stages(detect_stages(res.t, res.eps_g[0]), detect_stages(again.t, again.eps_g[0]))


# ------------------------------------------------------------------ the figure and save()


def test_the_stage_figure_has_linear_time_and_a_legend_entry_for_every_band(study_sgd):
    _, _, res = study_sgd
    ds = res.to_xarray()
    st = detect_stages(res.t, res.eps_g[0])
    fig = plots.plot_stages(ds, run=0, stages=st, levels_with_noise=[0.8, np.nan, 0.124])
    ax = fig.axes[0]
    dotted = [ln.get_ydata()[0] for ln in ax.lines if ln.get_linestyle() == ":"]
    assert dotted == [0.8, 0.124]  # NaN (lost level) skipped
    assert ax.get_xscale() == "linear" and ax.get_yscale() == "log"
    assert [a.get_xscale() for a in ax.child_axes] == ["log"]  # the log-time inset
    bands = [p for p in ax.patches if p.get_label() and not p.get_label().startswith("_")]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert len(bands) == st.n_plateaus
    for band, level in zip(bands, st.levels):
        assert band.get_label() in labels and f"{level:.4g}" in band.get_label()
    assert len(ax.patches) == st.n_plateaus  # no band without a label
    # the drops lie inside the linear axis, where they are seen
    lo, hi = ax.get_xlim()
    assert lo <= st.drop_starts.min() and st.drop_ends.max() <= hi
    matplotlib.pyplot.close(fig)


def test_save_warns_when_a_second_plot_replaces_a_file(tmp_path):
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = plots.save(plt.figure(), tmp_path, "one")
        plots.save(plt.figure(), tmp_path, "two")
    assert all(p.exists() for p in paths)
    with pytest.warns(RuntimeWarning, match="one.png.*already written"):
        plots.save(plt.figure(), tmp_path, "one")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.save(plt.figure(), tmp_path, "one", overwrite=True)
