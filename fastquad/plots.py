"""Figures (matplotlib) from results files or datasets: curves, order parameters, stages,
phase diagrams and fixed points.

Every function takes an :class:`xarray.Dataset` in the results layout (``fastquad.load(path)``
or ``Result.to_xarray()``), draws on a new figure and returns it; :func:`save` writes PNG and
PDF. Averages over replicas leave diverged runs out and say how many in the legend.
"""

import warnings
from pathlib import Path

import numpy as np

from .result import STATUS_DIVERGED, STATUS_DONE

KINDS = ("curves", "order", "stages", "phase", "fixed-points")
QUANTITIES = ("final_eps", "time_to_learn", "success_rate", "n_plateaus")
_NOT_GROUPING = {"replica", "seed", "run_id", "K", "M", "teacher_seed"}
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
        warnings.warn(f"{', '.join(map(str, again))}: already written by an earlier plot in this "
                      "run; overwritten by this one", RuntimeWarning, stacklevel=2)
    fig.savefig(paths[0], dpi=130, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    _WRITTEN.update(p.resolve() for p in paths)
    _plt().close(fig)
    return paths


def sweep_axes(ds):
    """Names of the per-run coordinates that define grid points (sweep axes)."""
    named = str(ds.attrs.get("sweep_axes", "")).split()
    if named:
        return [a if a in ds.coords else f"{a}_index" for a in named
                if a in ds.coords or f"{a}_index" in ds.coords and a not in _NOT_GROUPING]
    return [c for c in ds.coords if ds[c].dims == ("run",) and c not in _NOT_GROUPING
            and c != "run" and len(np.unique(ds[c].values)) > 1]


def groups(ds, axes=None):
    """Runs grouped by grid point: list of (label, run indices)."""
    axes = sweep_axes(ds) if axes is None else axes
    if not axes:
        return [("all runs", np.arange(ds.sizes["run"]))]
    keys = np.stack([ds[a].values.astype(str) for a in axes], axis=1)
    out = []
    for key in dict.fromkeys(map(tuple, keys)):
        idx = np.flatnonzero((keys == np.array(key)).all(axis=1))
        label = ", ".join(f"{a}={_fmt(ds[a].values[idx[0]])}" for a in axes)
        out.append((label, idx))
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
    from the sweep file's seeds (:meth:`Sweep.initial_order_parameters`).

    Returns eps_g (len(idx), n_times) or None when the records do not start at t = 0 or the
    parameters needed are not in the dataset.
    """
    from .ode import integrate_ode

    t = ds.time.values
    if t[0] != 0 or "lr" not in ds.coords and "lr" not in ds.attrs:
        return None
    sweep = None
    if "Q" not in ds:
        if "sweep_digest" not in ds.attrs:
            return None
        from .sweep import parse_sweep

        sweep = parse_sweep(str(ds.attrs["config"]))
    K, M = ds.sizes["student"], ds.sizes["teacher"]
    out = []
    for r in idx:
        k = int(ds.K.values[r]) if "K" in ds.coords else K
        m = int(ds.M.values[r]) if "M" in ds.coords else M
        lr = float(ds.lr.values[r]) if "lr" in ds.coords else float(ds.attrs["lr"])
        sigma = float(ds.label_noise.values[r]) if "label_noise" in ds.coords else float(
            ds.attrs.get("label_noise", 0.0))
        batch = int(ds.attrs.get("batch_size", 1))
        train_v = bool(ds.attrs.get("train_second_layer", True))
        if "Q" in ds:
            Q0, R0, v0 = ds.Q.values[r, 0, :k, :k], ds.R.values[r, 0, :k, :m], ds.v.values[r, 0, :k]
        else:  # a sweep that stored curves only: rebuild each run's start from its seeds
            Q0, R0, v0 = sweep.initial_order_parameters(int(ds.run.values[r]))
        res = integrate_ode(Q0, R0, v0, ds.T.values[r, :m, :m], ds.v_teacher.values[r, :m], lr,
                            float(t[-1]), times=t, label_noise=sigma, batch_size=batch,
                            train_second_layer=train_v)
        out.append(res.eps_g[0])
    return np.array(out)


def plot_learning_curves(ds, *, theory=True, max_groups=8, title=None):
    """Mean learning curve with a 10-90% band over replicas per grid point, and the ODE
    theory from the same initial conditions (dashed)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    t = ds.time.values
    tt = np.where(t > 0, t, np.nan)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    is_sim = str(ds.attrs.get("method", "")) in ("sgd", "gd")
    for i, (label, idx) in enumerate(groups(ds)[:max_groups]):
        keep, n_div, n_out = _kept(ds, idx)
        c = colors[i % len(colors)]
        if len(keep):
            eps = ds.eps_g.values[keep]
            mean = eps.mean(axis=0)
            note = f" ({n_out} of {len(idx)} left out: diverged)" if n_out else ""
            ax.plot(tt, mean, color=c, lw=1.6, label=f"{label}{note}" if len(groups(ds)) > 1
                    else f"mean over {len(keep)} runs{note}")
            if len(keep) > 1:
                lo, hi = np.percentile(eps, [10, 90], axis=0)
                ax.fill_between(tt, lo, hi, color=c, alpha=0.2, lw=0)
        if theory and is_sim and len(keep):
            th = theory_curves(ds, keep[:8])
            if th is not None:
                ax.plot(tt, th.mean(axis=0), color=c, ls="--", lw=1.2,
                        label="ODE theory (same starts)" if i == 0 else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("time t = step / d")
    ax.set_ylabel(r"generalisation error $\epsilon_g$")
    ax.set_title(title or f"learning curves ({ds.attrs.get('method', '')}), band: 10-90% of runs")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(True, which="both", alpha=0.25)
    return fig


def plot_order_parameters(ds, run=0):
    """Q_jj, R_jn and v_j of one run against time."""
    if "Q" not in ds:
        raise ValueError("kind order: this file has no order parameters over time (a sweep "
                         "stores them with the setting order_parameters = true)")
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
    for ax, name in zip(axes, ("student norms $Q_{jj}$", "overlaps $R_{jn}$",
                               "second layer $v_j$")):
        ax.set_xscale("log")
        ax.set_xlabel("time t = step / d")
        ax.set_title(name)
        ax.legend(fontsize=7, ncol=2)
        ax.grid(True, alpha=0.25)
    fig.suptitle(f"order parameters, run {run} ({ds.attrs.get('method', '')})")
    fig.tight_layout()
    return fig


def plot_stages(ds, run=0, stages=None):
    """One learning curve with its detected plateaus shaded and labelled, and the plateau
    levels predicted for an orthonormal teacher (dashed).

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
        bands.append((on, hi, colors[(k + 1) % 10],
                      f"plateau {k + 1}: $\\epsilon_g$ = {lev:.4g}, t = {on:.4g} to {till}"))
    predicted = None
    T = ds.T.values[run]
    if np.allclose(T, np.eye(len(T)), atol=1e-8):
        predicted = plateau_levels(ds.v_teacher.values[run])
        predicted = predicted[predicted > 0]

    def draw(a, log_time):
        a.plot(t[ok], eps[ok], color="k", lw=1.3, label=None if log_time else r"$\epsilon_g$",
               zorder=3)
        for lo, hi, c, label in bands:
            a.axvspan(max(lo, t[ok][0]) if log_time else lo, hi, color=c, alpha=0.22, lw=0,
                      label=None if log_time else label)
        for i, lev in enumerate(predicted if predicted is not None else []):
            a.axhline(lev, color="tab:red", lw=0.7, ls="--",
                      label="plateau levels of the lr^1 theory (T = I)"
                      if i == 0 and not log_time else None)
        a.set_yscale("log")
        if log_time:
            a.set_xscale("log")

    draw(ax, False)
    ax.set_xlim(0, t_last)
    ax.set_xlabel("time t = step / d")
    ax.set_ylabel(r"generalisation error $\epsilon_g$")
    ax.set_title(f"learning stages, run {run}: {st.n_plateaus} plateau(s), "
                 f"{st.n_drops} drop(s)")
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
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1,
              frameon=False)
    return fig


def _empty_corner(ax, x, y, size=(0.4, 0.36)):
    """Bounds (axes fraction) of the corner of ax the curve (x, y) least passes through,
    with room on the left and below for the inset's own tick labels."""
    fig = ax.figure
    fig.canvas.draw()   # the limits and scales as they will be drawn
    fx, fy = ax.transAxes.inverted().transform(ax.transData.transform(np.c_[x, y])).T
    w, h = size
    left, right, low, high = 0.1, 1 - 0.03 - w, 0.1, 1 - 0.07 - h
    corners = [(right, high), (left, high), (right, low), (left, low)]
    inside = [np.count_nonzero((fx >= x0) & (fx <= x0 + w) & (fy >= y0) & (fy <= y0 + h))
              for x0, y0 in corners]
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
        raise ValueError(f"quantity must be one of {', '.join(QUANTITIES)}, got {quantity!r}")
    eps = ds.eps_g.values
    t = ds.time.values
    diverged = ds.status.values == STATUS_DIVERGED
    if quantity == "final_eps":
        return np.where(diverged, np.nan, eps[:, -1])
    if quantity == "n_plateaus":
        from .analysis.stages import detect_stages

        return np.array([np.nan if dv else detect_stages(t, e).n_plateaus
                         for e, dv in zip(eps, diverged)], dtype=float)
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
            raise ValueError(f"{flag} must name a per-run coordinate of the file "
                             f"({', '.join(sweep_axes(ds)) or 'none'}), got {name!r}")
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
    label = {"final_eps": r"final $\epsilon_g$ (median)",
             "time_to_learn": f"time to reach {threshold:g} x initial error (median)",
             "success_rate": f"fraction of runs reaching {threshold:g} x initial error",
             "n_plateaus": "plateaus (median)"}[quantity]
    cb = fig.colorbar(im, ax=ax)
    cb.set_label(("log10 " if log else "") + label)
    for i in range(len(ys)):
        for j in range(len(xs)):
            if np.isfinite(grid[i, j]):
                # dark text on the bright end of viridis, light text elsewhere
                light = im.norm(data[i, j]) < 0.6
                ax.text(j, i, f"{grid[i, j]:.2g}", ha="center", va="center", fontsize=7,
                        color="w" if light else "k")
    ax.set_title(f"phase diagram: {quantity}")
    fig.tight_layout()
    return fig


def plot_fixed_points(points, ds=None, runs=(0,)):
    """Fixed points on the loss: their eps_g by kind (stable, saddle with its number of unstable
    directions, unstable) as horizontal levels over learning curves, so plateaus can be read
    off against saddles."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    styles = {"stable": ("tab:green", "-"), "saddle": ("tab:red", "--"),
              "unstable": ("tab:purple", ":"), "degenerate": ("tab:gray", "-.")}
    seen = set()
    for p in points:
        c, ls = styles.get(p.kind, ("k", "-"))
        lab = p.kind if p.kind != "saddle" else f"saddle ({p.n_unstable} unstable)"
        ax.axhline(max(p.eps_g, 1e-12), color=c, ls=ls, lw=1.0,
                   label=lab if lab not in seen else None)
        seen.add(lab)
    if ds is not None:
        t = ds.time.values
        ok = t > 0
        for r in runs:
            ax.plot(t[ok], ds.eps_g.values[r, ok], color="k", lw=1.3,
                    label="learning curve" if r == runs[0] else None)
        ax.set_xscale("log")
        ax.set_xlabel("time t = step / d")
    else:
        ax.set_xticks([])
    ax.set_yscale("log")
    ax.set_ylabel(r"$\epsilon_g$")
    ax.set_title("fixed points of the order-parameter flow on the loss")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.25)
    return fig


def plot_conserved_phase(v0, Q0, learnt, v_teacher=1.0):
    """Success and failure over the initialisation (K = M = 1, v0 of the wrong sign): each run
    at (v0, sqrt(Q0)), coloured by whether it learnt; the line C = Q0 - 2 v0^2 = 0 is the
    predicted boundary (above it v can cross zero and learning succeeds)."""
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
    ax.set_title("failure by the conserved quantity (K = M = 1)")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.25)
    return fig
