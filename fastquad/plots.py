"""Figures (matplotlib) from results files or datasets: curves, order parameters, stages,
phase diagrams and fixed points.

Every function takes an :class:`xarray.Dataset` in the results layout (``fastquad.load(path)``
or ``Result.to_xarray()``), draws on a new figure and returns it; :func:`save` writes PNG and
PDF. Averages over replicas leave diverged runs out and say how many in the legend. Every
figure of runs names their activations ("relu student, quadratic teacher") in its title, and
a sweep over activations gets one curve per pair of activations, named in the legend.
"""

import warnings
from pathlib import Path

import numpy as np

from . import methods
from .errors import InputError
from .result import STATUS_DIVERGED, STATUS_DONE
from .store import activation_phrase, run_activations

KINDS = ("curves", "order", "stages", "phase", "fixed-points")
QUANTITIES = ("final_eps", "time_to_learn", "success_rate", "n_plateaus")
_NOT_GROUPING = {"replica", "seed", "run_id", "K", "M", "teacher_seed"}
_ACTIVATION_AXES = ("activation", "teacher_activation")
# Files written by save() in this process (resolved paths).
_WRITTEN = set()


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg") and not _interactive():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _interactive():
    import os

    return bool(os.environ.get("DISPLAY"))


def save(fig, out_dir, name, *, overwrite=False):
    """Write ``name.png`` and ``name.pdf`` into out_dir; returns the two paths.

    A file this process has already written with an earlier figure is overwritten with a
    warning (two plots given one name lose the first without a trace otherwise), unless
    ``overwrite`` says it is meant. Files from earlier processes (a rerun) are replaced
    silently.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    again = [p for p in paths if p.resolve() in _WRITTEN]
    if again and not overwrite:
        warnings.warn(
            f"{', '.join(map(str, again))}: already written by an earlier plot in this "
            "run; overwritten by this one",
            RuntimeWarning,
            stacklevel=2,
        )
    fig.savefig(paths[0], dpi=130, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    _WRITTEN.update(p.resolve() for p in paths)
    _plt().close(fig)
    return paths


def sweep_axes(ds):
    """Names of the per-run coordinates that define grid points (sweep axes)."""
    named = str(ds.attrs.get("sweep_axes", "")).split()
    if named:
        return [
            a if a in ds.coords else f"{a}_index"
            for a in named
            if a in ds.coords or f"{a}_index" in ds.coords and a not in _NOT_GROUPING
        ]
    return [
        c
        for c in ds.coords
        if ds[c].dims == ("run",)
        and c not in _NOT_GROUPING
        and c != "run"
        and len(np.unique(ds[c].values)) > 1
    ]


def activations(ds):
    """Each run's (student, teacher) activation names, two arrays of str (n_runs,): the
    per-run coordinates of a sweep over activations, else the dataset's attributes (quadratic
    when it has none: a file written before they were recorded)."""
    attrs = getattr(ds, "attrs", None) or {}
    coords = getattr(ds, "coords", None) or {}
    per_run = {k: ds[k].values for k in _ACTIVATION_AXES if k in coords and ds[k].dims == ("run",)}
    return run_activations(attrs, per_run, len(ds.eps_g.values))


def is_quadratic(ds, run=None):
    """Whether the runs (or run ``run``) have a quadratic student and a quadratic teacher."""
    s, t = activations(ds)
    sel = slice(None) if run is None else [run]
    return bool((s[sel] == "quadratic").all() and (t[sel] == "quadratic").all())


def activation_label(ds, idx=None):
    """'relu student, quadratic teacher' for the runs ``idx`` (default: all) of a dataset."""
    s, t = activations(ds)
    sel = slice(None) if idx is None else np.asarray(idx, dtype=np.int64)
    return activation_phrase(s[sel], t[sel])


def groups(ds, axes=None):
    """Runs grouped by grid point: list of (label, run indices). An axis of activations is
    labelled by the pair ('lr=0.1, relu student, quadratic teacher')."""
    axes = sweep_axes(ds) if axes is None else axes
    if not axes:
        return [("all runs", np.arange(ds.sizes["run"]))]
    keys = np.stack([ds[a].values.astype(str) for a in axes], axis=1)
    by_pair = any(a in _ACTIVATION_AXES for a in axes)
    out = []
    for key in dict.fromkeys(map(tuple, keys)):
        idx = np.flatnonzero((keys == np.array(key)).all(axis=1))
        parts = [f"{a}={_fmt(ds[a].values[idx[0]])}" for a in axes if a not in _ACTIVATION_AXES]
        if by_pair:
            parts.append(activation_label(ds, idx[:1]))
        out.append((", ".join(parts), idx))
    return out


def _fmt(x):
    try:
        return f"{float(x):g}"
    except (TypeError, ValueError):
        return str(x)


def _kept(ds, idx):
    st = ds.status.values[idx]
    keep = idx[st == STATUS_DONE]
    return keep, int(np.count_nonzero(st == STATUS_DIVERGED)), int(len(idx) - len(keep))


def theory_curves(ds, idx):
    """The order-parameter ODE from the t = 0 state of each run (same starts).

    The start is the recorded one, or, for a sweep that stored curves only, the one rebuilt
    from the sweep file's seeds (:func:`fastquad.config.initial_order_parameters`). All the runs
    go through one batched :func:`fastquad.integrate_ode` call (one per distinct (K, M) and
    pair of activations when a sweep varies them); each trajectory is integrated on its own, so
    a run's curve does not depend on which other runs are asked for.

    Returns eps_g (len(idx), n_times) or None when the records do not start at t = 0 or the
    parameters needed are not in the dataset; NaN for runs whose pair of activations has no
    ODE here (:func:`fastquad.integrate_ode` refuses it).
    """
    from .ode import integrate_ode

    t = ds.time.values
    sweep = None
    if "sweep_digest" in ds.attrs:  # a sweep's file: every run's parameters are in its config
        from .sweep import parse_sweep

        sweep = parse_sweep(str(ds.attrs["config"]))
    elif "lr" not in ds.coords and "lr" not in ds.attrs:
        return None
    if t[0] != 0 or ("Q" not in ds and sweep is None):
        return None
    idx = np.asarray(idx, dtype=np.int64).ravel()
    n = len(idx)
    act_s, act_t = (a[idx] for a in activations(ds))
    if sweep is not None:
        cfgs, replicas = sweep.run_configs(ds.run.values[idx])
        ks, ms = (np.array([getattr(c, a) for c in cfgs], dtype=np.int64) for a in "KM")
        lr, sigma = (
            np.array([getattr(c, a) for c in cfgs], dtype=np.float64) for a in ("lr", "label_noise")
        )
        batch = np.array([c.batch_size for c in cfgs], dtype=np.int64)
        train_v = np.array([c.train_second_layer for c in cfgs], dtype=bool)
    else:  # one configuration (simulate, save): per-run coordinates, else attributes
        ks = np.full(n, ds.sizes["student"])
        ms = np.full(n, ds.sizes["teacher"])
        lr = (
            ds.lr.values[idx].astype(np.float64)
            if "lr" in ds.coords
            else np.full(n, float(ds.attrs["lr"]))
        )
        sigma = (
            ds.label_noise.values[idx].astype(np.float64)
            if "label_noise" in ds.coords
            else np.full(n, float(ds.attrs.get("label_noise", 0.0)))
        )
        batch = np.full(n, int(ds.attrs.get("batch_size", 1)))
        train_v = np.full(n, bool(ds.attrs.get("train_second_layer", True)))
    out = np.empty((n, len(t)))
    # one batched call per kernel shape: runs that share K, M, batch size, training of v and
    # activations
    shapes = list(zip(ks.tolist(), ms.tolist(), batch.tolist(), train_v.tolist(), act_s, act_t))
    for k, m, b, tv, g_s, g_t in dict.fromkeys(shapes):
        sel = np.flatnonzero([s == (k, m, b, tv, g_s, g_t) for s in shapes])
        runs = idx[sel]
        if "Q" in ds:
            start = ds[["Q", "R", "v"]].isel(run=runs, time=0)
            Q0, R0 = start.Q.values[:, :k, :k], start.R.values[:, :k, :m]
            v0 = start.v.values[:, :k]
        else:  # a sweep that stored curves only: rebuild each run's start from its seeds
            from .config import initial_order_parameters

            Q0, R0, v0, _, _ = initial_order_parameters([cfgs[i] for i in sel], replicas[sel])
        teacher = ds[["T", "v_teacher"]].isel(run=runs)
        try:
            res = integrate_ode(
                Q0,
                R0,
                v0,
                teacher.T.values[:, :m, :m],
                teacher.v_teacher.values[:, :m],
                lr[sel],
                float(t[-1]),
                times=t,
                label_noise=sigma[sel],
                batch_size=b,
                train_second_layer=tv,
                activation=str(g_s),
                teacher_activation=str(g_t),
            )
        except InputError:
            if (g_s, g_t) == ("quadratic", "quadratic"):
                raise
            # a pair of activations whose ODE the theory does not have (the SGD-noise term
            # of a ReLU student with a quadratic teacher): these runs get no theory curve
            out[sel] = np.nan
            continue
        out[sel] = res.eps_g
    return out


def plot_learning_curves(ds, *, theory=True, max_groups=8, title=None):
    """Mean learning curve with a 10-90% band over replicas per grid point, and the ODE
    theory from the same initial conditions (dashed).

    ``title`` replaces the first line of the title; the second names the activations (a sweep
    over activations has one curve per pair, each named in the legend)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    t = ds.time.values
    tt = np.where(t > 0, t, np.nan)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    name = str(ds.attrs.get("method", ""))  # "mixed" for a sweep over methods
    is_sim = name in methods.names() and methods.get(name).discrete
    all_groups = groups(ds)
    shown = [(label, idx, *_kept(ds, idx)) for label, idx in all_groups[:max_groups]]
    # the theory of every group at once: one batched ODE call, split back by group below
    th_runs = [keep[:8] for _, _, keep, _, _ in shown]
    th_all = None
    if theory and is_sim and any(len(r) for r in th_runs):
        th_all = theory_curves(ds, np.concatenate(th_runs))
    th_ends = np.cumsum([len(r) for r in th_runs])
    theory_shown, no_theory = False, []
    for i, (label, idx, keep, _, n_out) in enumerate(shown):
        c = colors[i % len(colors)]
        if len(keep):
            eps = ds.eps_g.values[keep]
            mean = eps.mean(axis=0)
            note = f" ({n_out} of {len(idx)} left out: diverged)" if n_out else ""
            ax.plot(
                tt,
                mean,
                color=c,
                lw=1.6,
                label=f"{label}{note}"
                if len(all_groups) > 1
                else f"mean over {len(keep)} runs{note}",
            )
            if len(keep) > 1:
                lo, hi = np.percentile(eps, [10, 90], axis=0)
                ax.fill_between(tt, lo, hi, color=c, alpha=0.2, lw=0)
        if th_all is not None and len(keep):
            th = th_all[th_ends[i] - len(th_runs[i]) : th_ends[i]]
            if np.isnan(th).all():  # no ODE for this pair of activations (theory_curves)
                no_theory.append(activation_label(ds, keep[:1]))
                continue
            ax.plot(
                tt,
                th.mean(axis=0),
                color=c,
                ls="--",
                lw=1.2,
                label=None if theory_shown else "ODE theory (same starts)",
            )
            theory_shown = True
    if no_theory:
        ax.plot([], [], ls="none", label=f"no ODE theory for {'; '.join(dict.fromkeys(no_theory))}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("time t = step / d")
    ax.set_ylabel(r"generalisation error $\epsilon_g$")
    head = title or f"learning curves ({ds.attrs.get('method', '')}), band: 10-90% of runs"
    ax.set_title(f"{head}\n{activation_label(ds)}")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(True, which="both", alpha=0.25)
    return fig


def plot_order_parameters(ds, run=0):
    """Q_jj, R_jn and v_j of one run against time."""
    if "Q" not in ds:
        raise InputError(
            "kind order: this file has no order parameters over time (a sweep "
            "stores them with the setting order_parameters = true)"
        )
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharex=True)
    t = ds.time.values
    tt = np.where(t > 0, t, np.nan)
    K, M = ds.sizes["student"], ds.sizes["teacher"]
    for j in range(K):
        axes[0].plot(tt, ds.Q.values[run, :, j, j], label=f"$Q_{{{j}{j}}}$")
        axes[2].plot(tt, ds.v.values[run, :, j], label=f"$v_{j}$")
        for n in range(M):
            axes[1].plot(tt, ds.R.values[run, :, j, n], label=f"$R_{{{j}{n}}}$")
    for ax, name in zip(
        axes, ("student norms $Q_{jj}$", "overlaps $R_{jn}$", "second layer $v_j$")
    ):
        ax.set_xscale("log")
        ax.set_xlabel("time t = step / d")
        ax.set_title(name)
        ax.legend(fontsize=7, ncol=2)
        ax.grid(True, alpha=0.25)
    fig.suptitle(
        f"order parameters, run {run} ({ds.attrs.get('method', '')}; {activation_label(ds, [run])})"
    )
    fig.tight_layout()
    return fig


def plot_stages(ds, run=0, stages=None, levels_with_noise=None):
    """One learning curve with its detected plateaus shaded and labelled, and the plateau
    levels predicted for an orthonormal teacher (dashed).

    ``levels_with_noise`` (array, optional): plateau levels predicted with the SGD-noise term
    (``plateau_levels_with_noise(...).eps_full``), drawn dotted beside the lr^1 levels.

    The main axis has linear time, where the drops (fast on the curve's own time scale, short
    on a log axis at late times) and the tilt of a plateau show as a person judges them; an
    inset repeats the curve on log time for stages at early times. Every band has its own
    legend entry (its level and time span), below the axes, so that no legend hides the curve.
    """
    from .analysis.stages import detect_stages, plateau_levels

    plt = _plt()
    from matplotlib.ticker import LogLocator, NullFormatter

    t = ds.time.values
    eps = ds.eps_g.values[run]
    st = detect_stages(t, eps) if stages is None else stages
    fig, ax = plt.subplots(figsize=(7.0, 5.2))
    ok = (t > 0) & np.isfinite(eps) & (eps > 0)
    colors = plt.get_cmap("tab10")(np.arange(10) % 10)
    t_last = t[np.isfinite(eps)][-1] if np.isfinite(eps).any() else t[-1]
    bands = []
    for k, (lev, on, esc) in enumerate(zip(st.levels, st.onsets, st.escapes)):
        hi = esc if np.isfinite(esc) else t_last
        till = f"{esc:.4g}" if np.isfinite(esc) else f"{t_last:.4g} (not left)"
        bands.append(
            (
                on,
                hi,
                colors[(k + 1) % 10],
                f"plateau {k + 1}: $\\epsilon_g$ = {lev:.4g}, t = {on:.4g} to {till}",
            )
        )
    predicted = None
    T = ds.T.values[run]
    if np.allclose(T, np.eye(len(T)), atol=1e-8) and is_quadratic(ds, run):
        predicted = plateau_levels(ds.v_teacher.values[run])
        predicted = predicted[predicted > 0]

    def draw(a, log_time):
        a.plot(
            t[ok], eps[ok], color="k", lw=1.3, label=None if log_time else r"$\epsilon_g$", zorder=3
        )
        for lo, hi, c, label in bands:
            a.axvspan(
                max(lo, t[ok][0]) if log_time else lo,
                hi,
                color=c,
                alpha=0.22,
                lw=0,
                label=None if log_time else label,
            )
        for i, lev in enumerate(predicted if predicted is not None else []):
            a.axhline(
                lev,
                color="tab:red",
                lw=0.7,
                ls="--",
                label="plateau levels of the lr^1 theory (T = I)"
                if i == 0 and not log_time
                else None,
            )
        noisy = [] if levels_with_noise is None else np.asarray(levels_with_noise, float)
        for i, lev in enumerate(x for x in noisy if np.isfinite(x) and x > 0):
            a.axhline(
                lev,
                color="tab:blue",
                lw=0.9,
                ls=":",
                label="plateau levels with the SGD-noise term (this run)"
                if i == 0 and not log_time
                else None,
            )
        a.set_yscale("log")
        if log_time:
            a.set_xscale("log")

    draw(ax, False)
    ax.set_xlim(0, t_last)
    ax.set_xlabel("time t = step / d")
    ax.set_ylabel(r"generalisation error $\epsilon_g$")
    ax.set_title(
        f"learning stages, run {run}: {st.n_plateaus} plateau(s), {st.n_drops} drop(s)\n"
        f"{activation_label(ds, [run])}"
    )
    ax.grid(True, which="both", alpha=0.25)
    if np.count_nonzero(ok) >= 2:
        inset = ax.inset_axes(_empty_corner(ax, t[ok], eps[ok]))
        draw(inset, True)
        inset.set_title("log time", fontsize=7, pad=2)
        inset.tick_params(labelsize=6)
        for axis in (inset.xaxis, inset.yaxis):
            axis.set_major_locator(LogLocator(numticks=4))
            axis.set_minor_formatter(NullFormatter())
        inset.grid(True, which="major", alpha=0.2)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1, frameon=False)
    return fig


def _empty_corner(ax, x, y, size=(0.4, 0.36)):
    """Bounds (axes fraction) of the corner of ax the curve (x, y) least passes through,
    with room on the left and below for the inset's own tick labels."""
    fig = ax.figure
    fig.canvas.draw()  # the limits and scales as they will be drawn
    fx, fy = ax.transAxes.inverted().transform(ax.transData.transform(np.c_[x, y])).T
    w, h = size
    left, right, low, high = 0.1, 1 - 0.03 - w, 0.1, 1 - 0.07 - h
    corners = [(right, high), (left, high), (right, low), (left, low)]
    inside = [
        np.count_nonzero((fx >= x0) & (fx <= x0 + w) & (fy >= y0) & (fy <= y0 + h))
        for x0, y0 in corners
    ]
    x0, y0 = corners[int(np.argmin(inside))]
    return [x0, y0, w, h]


def phase_quantity(ds, quantity, threshold=1e-3):
    """A per-run quantity for phase diagrams.

    ``final_eps``: eps_g at the last time; ``time_to_learn``: first time eps_g <= threshold *
    eps_g(0) (NaN if never); ``success_rate``: 1 if it learnt (as time_to_learn) else 0;
    ``n_plateaus``: plateaus detected in the curve. Diverged runs give NaN (and count as not
    learnt in success_rate).
    """
    if quantity not in QUANTITIES:
        raise InputError(f"quantity must be one of {', '.join(QUANTITIES)}, got {quantity!r}")
    eps = ds.eps_g.values
    t = ds.time.values
    diverged = ds.status.values == STATUS_DIVERGED
    if quantity == "final_eps":
        return np.where(diverged, np.nan, eps[:, -1])
    if quantity == "n_plateaus":
        from .analysis.stages import detect_stages

        return np.array(
            [np.nan if dv else detect_stages(t, e).n_plateaus for e, dv in zip(eps, diverged)],
            dtype=float,
        )
    learnt = eps <= threshold * eps[:, :1]
    first = np.where(learnt.any(axis=1), t[np.argmax(learnt, axis=1)], np.nan)
    if quantity == "time_to_learn":
        return np.where(diverged, np.nan, first)
    return np.where(np.isfinite(first) & ~diverged, 1.0, 0.0)


def plot_phase_diagram(ds, x, y, quantity="final_eps", threshold=1e-3):
    """Heat map of a per-run quantity over two sweep axes (median over replicas; the rate for
    success_rate)."""
    plt = _plt()
    for name, flag in ((x, "--x"), (y, "--y")):
        if name not in ds.coords or ds[name].dims != ("run",):
            raise InputError(
                f"{flag} must name a per-run coordinate of the file "
                f"({', '.join(sweep_axes(ds)) or 'none'}), got {name!r}"
            )
    q = phase_quantity(ds, quantity, threshold)
    xs = np.unique(ds[x].values)
    ys = np.unique(ds[y].values)
    grid = np.full((len(ys), len(xs)), np.nan)
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            sel = (ds[x].values == xv) & (ds[y].values == yv)
            vals = q[sel]
            if quantity == "success_rate":
                grid[i, j] = vals.mean() if len(vals) else np.nan
            elif np.isfinite(vals).any():
                grid[i, j] = np.nanmedian(vals)
    fig, ax = plt.subplots(figsize=(6.0, 4.6))
    log = quantity in ("final_eps", "time_to_learn") and np.nanmin(grid, initial=np.inf) > 0
    data = np.log10(grid) if log else grid
    im = ax.imshow(data, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(xs)), [_fmt(v) for v in xs], rotation=45)
    ax.set_yticks(range(len(ys)), [_fmt(v) for v in ys])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    label = {
        "final_eps": r"final $\epsilon_g$ (median)",
        "time_to_learn": f"time to reach {threshold:g} x initial error (median)",
        "success_rate": f"fraction of runs reaching {threshold:g} x initial error",
        "n_plateaus": "plateaus (median)",
    }[quantity]
    cb = fig.colorbar(im, ax=ax)
    cb.set_label(("log10 " if log else "") + label)
    for i in range(len(ys)):
        for j in range(len(xs)):
            if np.isfinite(grid[i, j]):
                # dark text on the bright end of viridis, light text elsewhere
                light = im.norm(data[i, j]) < 0.6
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.2g}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="w" if light else "k",
                )
    ax.set_title(f"phase diagram: {quantity}\n{activation_label(ds)}")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- fixed points

# eps_g within this of 0 (times max(1, the largest level)) is the global minimum eps_g = 0
# (the finder reports it as round-off, of either sign).
_FP_ZERO_RTOL = 1e-10
# Levels within this relative distance coincide: drawn once, with a combined label.
_FP_LEVEL_RTOL = 1e-6
# Q and R below this (times max(1, max|T|)): w = 0, every student unit dead.
_FP_DEAD_RTOL = 1e-8
# Order of the kinds in legends and labels (least unstable first); others after these.
_FP_KINDS = ("stable", "degenerate", "saddle", "unstable")
# Per kind: colours (ramp over its values of n_unstable), markers, line styles.
_FP_KIND_STYLE = {
    "stable": (("#1a9641", "#006837"), ("o", "s", "D"), ("-",)),
    "degenerate": (("#969696", "#404040"), ("d", "H"), ((0, (4, 1, 1, 1)),)),
    "saddle": (
        ("#e31a1c", "#fd8d3c", "#a6611a", "#67001f"),
        ("v", "^", "<", ">", "p", "h", "*", "P", "X", "d", "8", "H"),
        (
            "--",
            "-.",
            (0, (5, 1.5, 1, 1.5, 1, 1.5)),
            (0, (2.5, 1.5)),
            (0, (7, 2, 1.5, 2)),
            (0, (1.2, 1.2)),
        ),
    ),
    "unstable": (("#9e6ac8", "#3f007d"), ("^", "s", "v", "D"), (":", (0, (3, 1, 1, 1)))),
}
_FP_W0_STYLE = dict(color="#3b3b3b", ls=(0, (1, 1.4)), marker="o", mfc="white")
_FP_CURVE_COLOURS = ("k", "#0072b2", "#56b4e9", "#009e73", "#cc79a7")
_FP_FONT = 7.0  # points, labels at the right edge and legend
_FP_LINE_H = 1.3  # line height, in font sizes


def _fp_class_key(cls):
    kind, n = cls
    rank = _FP_KINDS.index(kind) if kind in _FP_KINDS else len(_FP_KINDS)
    return (rank, str(kind), n)


def _fp_is_dead(p):
    """w = 0: Q = 0 and R = 0, every student unit dead (a line of fixed points in v)."""
    scale = _FP_DEAD_RTOL * max(1.0, float(np.abs(np.asarray(p.T, float)).max(initial=0.0)))
    return (
        float(np.abs(np.asarray(p.Q, float)).max(initial=0.0)) <= scale
        and float(np.abs(np.asarray(p.R, float)).max(initial=0.0)) <= scale
    )


def _fp_styles(classes):
    """(kind, n_unstable) -> dict(color, ls, marker): distinct per class (a colour ramp over
    each kind's values of n_unstable, with markers and line styles cycling)."""
    from matplotlib.colors import LinearSegmentedColormap, to_hex

    styles = {}
    for kind in sorted({k for k, _ in classes}, key=lambda k: _fp_class_key((k, 0))):
        ns = sorted(n for k, n in classes if k == kind)
        colours, markers, lss = _FP_KIND_STYLE.get(
            kind, (("#000000", "#7f7f7f"), ("x", "+", "1"), ((0, (3, 3)),))
        )
        ramp = LinearSegmentedColormap.from_list(f"fp-{kind}", colours)
        for i, n in enumerate(ns):
            styles[(kind, n)] = dict(
                color=to_hex(ramp(i / (len(ns) - 1) if len(ns) > 1 else 0.0)),
                marker=markers[i % len(markers)],
                ls=lss[i % len(lss)],
            )
    return styles


def _fp_class_name(cls, short=False):
    kind, n = cls
    if kind in ("saddle", "unstable") or n != 0:
        if short:
            return f"{kind} ({n} unst.)"
        return f"{kind}, {n} unstable direction{'s' if n != 1 else ''}"
    return str(kind)


def _fp_levels(eps, zero_tol):
    """Indices of the points grouped by coinciding eps_g (relative _FP_LEVEL_RTOL, or both
    within zero_tol of 0), in increasing eps_g; and each group's level (0 for the global
    minimum, else the mean)."""
    order = np.argsort(eps, kind="stable")
    groups = []
    for i in order:
        if groups:
            first = eps[groups[-1][0]]
            both_zero = abs(first) <= zero_tol and abs(eps[i]) <= zero_tol
            if both_zero or abs(eps[i] - first) <= _FP_LEVEL_RTOL * max(abs(first), abs(eps[i])):
                groups[-1].append(i)
                continue
        groups.append([i])
    levels = [
        0.0 if abs(eps[g[0]]) <= zero_tol else max(0.0, float(np.mean(eps[g]))) for g in groups
    ]
    return groups, levels


def _fp_level_digits(levels):
    """Significant digits (4 or more, up to 10) that tell every two distinct levels apart."""
    for digits in range(4, 11):
        shown = [f"{x:#.{digits}g}" for x in levels]
        if len(set(shown)) == len(shown):
            return digits
    return 10


def _fp_sign_phrase(n_pos, n_neg, K):
    if K == 1:
        return "$v>0$" if n_pos else "$v<0$" if n_neg else "$v=0$"
    if n_pos == K:
        return "all $v_j>0$"
    if n_neg == K:
        return "all $v_j<0$"
    if n_pos + n_neg == K:
        return f"{n_pos} of {K} $v_j>0$"
    return f"{n_pos} $v_j>0$, {n_neg} $v_j<0$, {K - n_pos - n_neg} $v_j=0$"


def _fp_dead_description(dead):
    """The stability of w = 0 by the signs of the entries of v, from the points found there:
    a list of phrases "kind for sign pattern", fewest positive v_j first."""
    by_sign = {}
    for p in dead:
        v = np.asarray(p.v, float)
        tiny = 1e-12 * max(1.0, float(np.abs(v).max(initial=0.0)))
        key = (int(np.count_nonzero(v > tiny)), int(np.count_nonzero(v < -tiny)), v.size)
        by_sign.setdefault(key, set()).add((p.kind, int(p.n_unstable)))
    phrases = []
    for (n_pos, n_neg, K), classes in sorted(by_sign.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        kinds = " or ".join(
            _fp_class_name(c, short=True) for c in sorted(classes, key=_fp_class_key)
        )
        phrases.append(f"{kinds} for {_fp_sign_phrase(n_pos, n_neg, K)}")
    return phrases


def _fp_classes_phrase(classes):
    """'stable, saddles (1, 3 unst.)' for the classes (with repeats) of the points of a level."""
    parts = []
    for kind in sorted({k for k, _ in classes}, key=lambda k: _fp_class_key((k, 0))):
        ns = sorted(n for k, n in classes if k == kind)
        if kind in ("saddle", "unstable"):
            plural = "s" if kind == "saddle" and len(ns) > 1 else ""
            parts.append(f"{kind}{plural} ({', '.join(map(str, ns))} unst.)")
        else:
            parts.append(kind if len(ns) == 1 else f"{len(ns)} {kind}")
    return ", ".join(parts)


def _fp_level_label(value, live, dead, digits):
    """Text lines of one level: its eps_g, how many points coincide there, their kinds."""
    n = len(live) + len(dead)
    count = f" ({n} points)" if n > 1 else ""
    if value == 0.0:
        head = r"$\epsilon_g = 0$ (global minimum)" + count
    else:
        head = f"{value:#.{digits}g}" + count
    classes = [(p.kind, int(p.n_unstable)) for p in live]
    lines = []
    if dead:
        phrases = _fp_dead_description(dead)
        lines.append(head + ": $w = 0$ (all units dead), by sign of $v$:")
        for i in range(0, len(phrases), 2):
            lines.append("    " + ";  ".join(phrases[i : i + 2]))
        if live:
            lines.append("    and " + _fp_classes_phrase(classes))
    elif value == 0.0 and all(k == "stable" for k, _ in classes):
        lines.append(head)
    else:
        lines.append(head + ": " + _fp_classes_phrase(classes))
    return lines


def _fp_spread(y, heights, lo, hi):
    """Label centres near y (sorted increasing) that do not overlap: ``q[i+1] - q[i] >=
    (h[i] + h[i+1]) / 2``, within [lo, hi] where the room allows; least squares (isotonic
    regression of y minus the cumulative offsets, pool adjacent violators)."""
    y = np.asarray(y, float)
    h = np.asarray(heights, float)
    if y.size == 0:
        return y
    c = np.concatenate([[0.0], np.cumsum(0.5 * (h[:-1] + h[1:]))])
    r = y - c
    blocks = []  # [mean, weight]
    for x in r:
        blocks.append([x, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2 = blocks.pop()
            m1, w1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    fit = np.concatenate([[m] * w for m, w in blocks])
    low, high = lo + 0.5 * h[0], hi - 0.5 * h[-1] - c[-1]
    fit = (
        np.clip(fit, low, max(low, high)) if high >= low else np.full_like(fit, 0.5 * (low + high))
    )
    return fit + c


def _fp_ticks(ax, linthresh, top):
    """Ticks of a symlog eps_g axis: 0, then decades (and 2..9 x decades, minor) only where the
    scale is logarithmic, above linthresh."""
    from matplotlib.ticker import FixedLocator

    lo, hi = int(np.ceil(np.log10(linthresh))), int(np.floor(np.log10(top)))
    major = [0.0] + [10.0**k for k in range(lo, hi + 1)]
    minor = [
        m * 10.0**k
        for k in range(lo - 1, hi + 1)
        for m in range(2, 10)
        if linthresh < m * 10.0**k < top
    ]
    ax.yaxis.set_major_locator(FixedLocator(major))
    ax.yaxis.set_minor_locator(FixedLocator(minor))


def plot_fixed_points(
    points, ds=None, runs=(0,), *, activation="quadratic", teacher_activation=None
):
    """Fixed points of the order-parameter flow as levels of eps_g, over learning curves.

    Every distinct level of eps_g is one horizontal line, labelled at the right edge with its
    value and the kinds of the fixed points there; points whose eps_g coincide (relative
    1e-6) share one line and one label ("n points"). Line and marker styles tell the classes
    (kind, number of unstable directions) apart -- one legend entry per class -- and the
    markers next to each label show which classes sit at that level. The line of a level
    takes the style of its least unstable class.

    The point w = 0 (Q = 0, R = 0: all student units dead) is a line of fixed points in v,
    whose stability depends on the signs of the entries of v; the finder may report it
    several times, with different v and kinds. It is drawn once, labelled with its stability
    by the signs of v, built from the points given.

    The eps_g axis is symmetric-log: logarithmic above ``linthresh`` = 0.3 times the smallest
    positive level (shaded below, where it is linear), so that eps_g = 0 -- the global minimum,
    labelled as such when present -- sits on the axis instead of at an arbitrary small value.

    Parameters
    ----------
    points : sequence of FixedPoint
        From :func:`fastquad.analysis.find_fixed_points` (fields used: ``Q``, ``R``, ``v``,
        ``T``, ``eps_g``, ``kind``, ``n_unstable``). May be empty.
    ds : xarray.Dataset or None
        Results with ``ds.time.values`` (n_times,) and ``ds.eps_g.values`` (n_runs,
        n_times); any object with those attributes works. None: the levels alone. The runs
        drawn must have the activations of the fixed points (an object without ``attrs`` is
        taken as quadratic).
    runs : sequence of int
        Runs of ds whose learning curves are drawn on log time (t > 0; values below 0, round
        off at convergence, are drawn at 0; non-finite values are left out).
    activation, teacher_activation : str
        The activations the points were found for (``find_fixed_points(..., activation=)``;
        the teacher's None or "same": the student's).

    Returns
    -------
    matplotlib.figure.Figure
        One axes (``fig.axes[0]``). Artists carry gids: ``"fp-level"`` (level lines),
        ``"fp-marker:<kind>:<n_unstable>"`` and ``"fp-marker:w0"`` (class markers),
        ``"fp-label"`` (level labels), ``"learning-curve"``.
    """
    from matplotlib.lines import Line2D

    from .activations import activation_pair

    pair = activation_pair(activation, teacher_activation)
    if ds is not None:
        names = activations(ds)
        for r in runs:
            if (names[0][int(r)], names[1][int(r)]) != pair:
                raise InputError(
                    f"the fixed points are those of a {activation_phrase(*pair)}; run {int(r)} "
                    f"has a {activation_label(ds, [int(r)])}"
                )
    plt = _plt()
    points = list(points)
    eps = np.array([float(p.eps_g) for p in points], dtype=float)
    zero_tol = _FP_ZERO_RTOL * max(1.0, float(np.nanmax(np.abs(eps), initial=0.0)))
    dead_mask = np.array([_fp_is_dead(p) for p in points], dtype=bool)
    if dead_mask.any():
        # one line for w = 0: every report of it at the level of the first (eps_g does not
        # depend on v there)
        eps[dead_mask] = eps[np.flatnonzero(dead_mask)[0]]
    groups, levels = _fp_levels(eps, zero_tol)
    digits = _fp_level_digits([x for x in levels if x != 0.0])
    classes = sorted(
        {(p.kind, int(p.n_unstable)) for p, d in zip(points, dead_mask) if not d}, key=_fp_class_key
    )
    styles = _fp_styles(classes)

    # learning curves: finite, t > 0 (log time), clamped at 0
    curves = []
    if ds is not None:
        t = np.asarray(ds.time.values, float)
        ok = t > 0
        for r in dict.fromkeys(int(r) for r in runs):
            e = np.asarray(ds.eps_g.values[r], float)[ok]
            e = np.where(np.isfinite(e), np.maximum(e, 0.0), np.nan)
            curves.append((r, t[ok], e))

    # the eps_g axis: symlog, linear below linthresh
    pos_levels = [x for x in levels if x > 0]
    curve_vals = np.concatenate([c[2][np.isfinite(c[2])] for c in curves] or [np.zeros(0)])
    if pos_levels:
        linthresh = 0.3 * min(pos_levels)
    elif np.any(curve_vals > 0):
        top_c = float(curve_vals.max())
        linthresh = 0.3 * max(float(curve_vals[curve_vals > 0].min()), 1e-3 * top_c)
    else:
        linthresh = 1.0
    top = max(pos_levels + [float(curve_vals.max(initial=0.0)), 3 * linthresh])
    ylim = (-0.12 * linthresh, top * 1.7)

    # labels of the levels, and the vertical room they need
    labels = []
    for g, value in zip(groups, levels):
        live = [points[i] for i in g if not dead_mask[i]]
        dead = [points[i] for i in g if dead_mask[i]]
        here = sorted({(p.kind, int(p.n_unstable)) for p in live}, key=_fp_class_key)
        labels.append((value, _fp_level_label(value, live, dead, digits), here, bool(dead)))
    line_in = _FP_FONT * _FP_LINE_H / 72.0
    heights = [len(lines) * line_in + 0.03 for _, lines, _, _ in labels]

    # geometry in inches; the figure is sized once the labels and the legend are measured
    ax_w = 4.6 if curves else 2.4
    ax_h = max(3.4, 1.08 * sum(heights) + 0.2)
    left, top_m, xlab = 0.95, 0.6, (0.45 if curves else 0.1)
    fig = plt.figure(figsize=(left + ax_w + 5.0, ax_h + top_m + 2.0))
    ax = fig.add_axes(
        [
            left / fig.get_figwidth(),
            2.0 / fig.get_figheight(),
            ax_w / fig.get_figwidth(),
            ax_h / fig.get_figheight(),
        ]
    )

    def x_right(points_):  # axes x of a distance (points) right of the axes
        return 1.0 + points_ / 72.0 / ax_w

    ax.set_yscale("symlog", linthresh=linthresh, linscale=0.4)
    ax.set_ylim(*ylim)
    _fp_ticks(ax, linthresh, ylim[1])
    ax.axhspan(ylim[0], linthresh, color="0.93", lw=0, zorder=0)
    ax.set_ylabel(
        r"generalisation error $\epsilon_g$"
        + "\n"
        + f"(log scale; linear below {linthresh:.2g}, shaded)"
    )
    handles = []
    for k, (r, tt, e) in enumerate(curves):
        (line,) = ax.plot(
            tt,
            e,
            color=_FP_CURVE_COLOURS[k % len(_FP_CURVE_COLOURS)],
            lw=1.5,
            zorder=4,
            gid="learning-curve",
            label=f"learning curve (run {r})",
        )
        handles.append(line)
    if curves:
        ax.set_xscale("log")
        ax.set_xlabel("time t = step / d")
    else:
        ax.set_xlim(0, 1)
        ax.set_xticks([])

    # levels: a line each, the markers of the classes there and a label at the right edge
    to_axes = ax.transAxes.inverted()
    y_axes = [
        float(to_axes.transform(ax.transData.transform((ax.get_xlim()[0], v)))[1])
        for v, _, _, _ in labels
    ]
    y_label = _fp_spread(y_axes, [h / ax_h for h in heights], 0.0, 1.0)
    texts = []
    for (value, lines, here, dead), ya, yl in zip(labels, y_axes, y_label):
        st = _FP_W0_STYLE if dead else styles[here[0]]
        ax.axhline(
            value,
            color=st["color"],
            ls=st["ls"],
            lw=1.7 if value == 0 else 1.2,
            zorder=2,
            gid="fp-level",
        )
        ax.plot(
            [1.0, x_right(5), x_right(14), x_right(17)],
            [ya, ya, yl, yl],
            transform=ax.transAxes,
            clip_on=False,
            lw=0.6,
            color="0.55",
            zorder=3,
            gid="fp-leader",
        )
        marks = ([("w0", _FP_W0_STYLE)] if dead else []) + [(c, styles[c]) for c in here]
        for j, (c, s) in enumerate(marks):
            ax.plot(
                [x_right(22 + 9 * j)],
                [yl],
                transform=ax.transAxes,
                clip_on=False,
                ls="none",
                marker=s["marker"],
                ms=5.5,
                color=s["color"],
                mfc=s.get("mfc", s["color"]),
                mew=1.0,
                zorder=5,
                gid="fp-marker:w0" if c == "w0" else f"fp-marker:{c[0]}:{c[1]}",
            )
        texts.append(
            ax.text(
                x_right(22 + 9 * len(marks)),
                yl,
                "\n".join(lines),
                transform=ax.transAxes,
                fontsize=_FP_FONT,
                va="center",
                ha="left",
                linespacing=_FP_LINE_H,
                clip_on=False,
                gid="fp-label",
            )
        )
    if dead_mask.any():
        handles.append(
            Line2D(
                [],
                [],
                color=_FP_W0_STYLE["color"],
                ls=_FP_W0_STYLE["ls"],
                marker=_FP_W0_STYLE["marker"],
                mfc=_FP_W0_STYLE["mfc"],
                lw=1.2,
                label="$w = 0$ (all units dead; kind by sign of $v$)",
            )
        )
    for c in classes:
        s = styles[c]
        handles.append(
            Line2D(
                [],
                [],
                color=s["color"],
                ls=s["ls"],
                marker=s["marker"],
                lw=1.2,
                ms=5.5,
                label=_fp_class_name(c),
            )
        )
    ax.set_title(
        f"fixed points of the order-parameter flow on the loss\n{activation_phrase(*pair)}",
        loc="center" if curves else "left",
    )
    ax.grid(True, which="major", alpha=0.25)

    # measure: the label column's width, then a legend under the axes as wide as allowed
    get = getattr(fig.canvas, "get_renderer", None)
    renderer = get() if get is not None else fig._get_renderer()
    dpi = fig.dpi
    ax_right = ax.get_window_extent(renderer).x1
    col_w = max([0.3] + [(t.get_window_extent(renderer).x1 - ax_right) / dpi for t in texts])
    width = left + ax_w + col_w + 0.15
    legend_h = 0.0
    if handles:
        below = (xlab + 0.12) / ax_h
        for ncol in range(min(len(handles), 4), 0, -1):
            leg = ax.legend(
                handles=handles,
                loc="upper left",
                bbox_to_anchor=(0.0, -below),
                ncol=ncol,
                fontsize=_FP_FONT,
                frameon=False,
                handlelength=3.2,
                columnspacing=1.5,
                borderaxespad=0.0,
            )
            box = leg.get_window_extent(renderer)
            if box.width / dpi <= ax_w + col_w or ncol == 1:
                break
        legend_h = box.height / dpi + 0.12
        width = max(width, left + box.width / dpi + 0.15)
    height = top_m + ax_h + xlab + legend_h + 0.15
    fig.set_size_inches(width, height)
    ax.set_position([left / width, (height - top_m - ax_h) / height, ax_w / width, ax_h / height])
    return fig


def plot_conserved_phase(v0, Q0, learnt, v_teacher=1.0):
    """Success and failure over the initialisation (K = M = 1, v0 of the wrong sign): each run
    at (v0, sqrt(Q0)), coloured by whether it learnt; the line C = Q0 - 2 v0^2 = 0 is the
    predicted boundary (above it v can cross zero and learning succeeds). The runs are those
    of quadratic networks (the boundary is theirs), as the title says."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 4.6))
    v0 = np.asarray(v0)
    q = np.sqrt(np.asarray(Q0))
    learnt = np.asarray(learnt, dtype=bool)
    ax.scatter(v0[learnt], q[learnt], marker="o", color="tab:green", label="learnt")
    ax.scatter(v0[~learnt], q[~learnt], marker="x", color="tab:red", label="failed")
    vv = np.linspace(min(v0.min(), 0) * 1.05, max(v0.max(), 0) * 1.05 + 1e-9, 200)
    ax.plot(vv, np.sqrt(2) * np.abs(vv), "k--", label=r"predicted boundary $C = Q - 2v^2 = 0$")
    ax.set_xlabel(r"initial second layer $v_0$" + f"  (teacher $v^* = {float(v_teacher):g}$)")
    ax.set_ylabel(r"initial norm $\sqrt{Q_0} = |w_0| / \sqrt{d}$")
    ax.set_title(
        "failure by the conserved quantity (K = M = 1)\n"
        + activation_phrase("quadratic", "quadratic")
    )
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.25)
    return fig
