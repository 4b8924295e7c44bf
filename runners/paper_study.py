"""The study of Tan & Chen (2022) in one command: four findings, each with figures and numbers.

    python runners/paper_study.py --out results/paper          # about 5 minutes on 2 cores

Runs the four sweeps of ``data/paper/`` on one embedded Dask cluster (resumable: running the
command again skips what is stored), then analyses them and writes into ``--out``:

- ``report.md``: the numbers of the four findings;
- ``figures/``: PNG and PDF figures;
- ``*.h5``: the results files (open with ``fastquad.load`` or ``fastquad plot``).

Findings: (1) the order-parameter flow has stable fixed points that are not global optima, and
saddles; (2) the conserved quantity C = Q - 2 v^2 decides whether a start with the wrong sign of
v learns; (3) learning alternates plateaus and fast drops, at the levels of the plateau formula;
(4) online SGD follows the ODE theory from the same initial weights.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import fastquad as fq
from fastquad import plots
from fastquad.analysis import (
    detect_stages,
    find_fixed_points,
    fixed_point_table,
    plateau_levels,
    plateau_levels_with_noise,
    predict_failure,
)
from fastquad.sweep import embedded_cluster, load_sweep, parse_sweep, run_sweep

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = ("fixed_points", "conserved", "stages", "sgd_vs_ode", "finite_d")
#: The two starts of findings 4 (init_overlap, name).
STARTS = ((0.7, "warm start"), (0.0, "random start"))


def run_all_sweeps(out, workers, progress):
    with embedded_cluster(workers) as client:  # one cluster for all five sweeps
        for name in SWEEPS:
            sweep = load_sweep(ROOT / "data" / "paper" / f"{name}.toml")
            t0 = time.perf_counter()
            summary = run_sweep(sweep, out / f"{name}.h5", client=client, progress=progress)
            print(f"[{name}] {summary.text()} ({time.perf_counter() - t0:.1f} s)")
            if not summary.ok:
                raise SystemExit(f"sweep {name} had failed runs; rerun to retry them")


def _ok(ds):
    return ds.status.values == fq.STATUS_DONE


# ------------------------------------------------------------------ finding 1
def finding_fixed_points(out, figs):
    ds = fq.load(out / "fixed_points.h5")
    lines = [
        "## 1. Fixed points that are not global optima, and saddles",
        "",
        "Fixed points of the order-parameter flow (eta^1 part), found from many starts and "
        "from the plateaus of the trajectories in `fixed_points.h5`, polished by Newton's "
        "method, deduplicated up to unit permutations, signs and the rescaling "
        "w -> a w, v -> v / a^2 (reported at C_j = Q_jj - 2 v_j^2 = 0), classified by the "
        "eigenvalues of the Jacobian (n_zero: zero modes along lines of fixed points).",
        "",
    ]
    case = ds.teacher_v_index.values
    for c in np.unique(case):
        runs = np.flatnonzero(case == c)
        r0 = int(runs[0])
        K, M = int(ds.K.values[r0]), int(ds.M.values[r0])
        vt = ds.v_teacher.values[r0, :M]
        T = ds.T.values[r0, :M, :M]
        traj = fq.integrate_ode(
            ds.Q.values[runs, 0, :K, :K],
            ds.R.values[runs, 0, :K, :M],
            ds.v.values[runs, 0, :K],
            T,
            vt,
            0.1,
            float(ds.time.values[-1]),
            times=ds.time.values,
            sgd_noise=False,
        )
        pts = find_fixed_points(K, M, T, vt, 0.1, n_starts=120, seed=1, trajectories=traj)
        lines += [
            f"### K = {K}, M = {M}, v* = {np.round(vt, 3).tolist()}, T = I, "
            f"student v0 = {ds.v.values[r0, 0, 0]:g}",
            "",
            "```",
            fixed_point_table(pts),
            "```",
            "",
        ]
        best = min(p.eps_g for p in pts)  # the global minimum (> 0 when K < M)
        stable_bad = [p for p in pts if p.kind == "stable" and p.eps_g > best + 1e-9]
        saddles = [p for p in pts if p.kind == "saddle"]
        lines.append(
            f"- {len(pts)} distinct fixed points: {len(saddles)} saddle(s), "
            f"{len(stable_bad)} stable point(s) that are not global minima "
            f"(global minimum eps_g = {best:.4g})"
            + (
                " (eps_g = " + ", ".join(f"{p.eps_g:.4g}" for p in stable_bad) + ")"
                if stable_bad
                else ""
            )
            + "."
        )
        st = detect_stages(ds.time.values, ds.eps_g.values[r0])
        near = []
        for lev in st.levels:
            best = min(pts, key=lambda q: abs(q.eps_g - lev)).eps_g
            there = [q for q in pts if abs(q.eps_g - best) <= 1e-9 * max(1.0, best)]
            what = (
                "the w = 0 point"
                if all(not q.Q.any() for q in there)
                else f"the fixed point(s) at {best:.4g} ("
                + ", ".join(sorted({q.kind for q in there}))
                + ")"
            )
            near.append(f"{lev:.4g} ({_rel(lev, best) * 100:.2g}% from {what})")
        lines.append(
            f"- the plateaus of the learning curve in the figure (run {r0}, detected by "
            f"`detect_stages`): " + ", ".join(near) + "."
        )
        final = ds.eps_g.values[runs, -1]
        lines.append(
            f"- the trajectories from init scale 1e-3 end at eps_g = "
            f"{', '.join(_loss(e) for e in final)}"
            + ("" if final.min() > 1e-6 else " (the global minimum)")
            + "."
        )
        lines.append("")
        fig = plots.plot_fixed_points(pts, ds, runs=(r0,))
        fig.axes[0].set_title(
            f"fixed points on the loss: K={K}, M={M}, v*={np.round(vt, 2).tolist()}"
        )
        plots.save(fig, figs, f"fixed_points_{c}_K{K}_M{M}")
    lines += [
        "Figures: `figures/fixed_points_*.png` (horizontal lines: fixed points, styled by "
        "kind and number of unstable directions; black: the learning curve whose plateaus "
        "are listed above).",
        "",
    ]
    return lines


# ------------------------------------------------------------------ finding 2
def finding_conserved(out, figs):
    ds = fq.load(out / "conserved.h5")
    ok = _ok(ds)
    Q0 = ds.Q.values[:, 0, 0, 0]
    v0 = ds.v.values[:, 0, 0]
    C0 = Q0 - 2 * v0**2
    vt = ds.v_teacher.values[:, 0]
    predicted = predict_failure(
        ds.v.values[:, 0], ds.v_teacher.values, Q0=ds.Q.values[:, 0], T=ds.T.values
    ).success
    eps0 = ds.eps_g.values[:, 0]
    learnt = ds.eps_g.values[:, -1] <= 1e-3 * eps0
    agree = (predicted == learnt)[ok]
    C = ds.Q.values[:, :, 0, 0] - 2 * ds.v.values[:, :, 0] ** 2
    drift = np.nanmax(np.abs(C - C[:, :1]), axis=1)[ok]
    margin = np.abs(C0) > 0.02
    fig = plots.plot_conserved_phase(v0[ok], Q0[ok], learnt[ok], vt[ok][0])
    plots.save(fig, figs, "conserved_phase")
    return [
        "## 2. Failure decided by the conserved quantity",
        "",
        "K = M = 1, v* = 1, every start has v0 < 0 (the wrong sign). Under the gradient flow "
        "C = Q - 2 v^2 is conserved, so v can cross zero only if C > 0. Prediction "
        "(`fastquad.analysis.predict_failure`): learns iff C0 > 0. Simulation: population "
        "gradient flow in parameter space (d = 100), "
        "learnt = eps_g(t_max) <= 1e-3 eps_g(0).",
        "",
        f"- runs: {int(ok.sum())} (left out: {int((~ok).sum())} diverged or failed)",
        f"- prediction agrees with simulation in {agree.mean() * 100:.1f}% of runs "
        f"({int(agree.sum())}/{agree.size}); away from the boundary (|C0| > 0.02): "
        f"{(predicted == learnt)[ok & margin].mean() * 100:.1f}%",
        f"- learnt: {int(learnt[ok].sum())}, failed: {int((~learnt[ok]).sum())}",
        f"- conservation of C along the flow: max |C(t) - C(0)| = {drift.max():.2e}",
        "",
        "Figure: `figures/conserved_phase.png`.",
        "",
    ]


# ------------------------------------------------------------------ finding 3
def _plateau_states(ds, run, stages):
    """(Q, R, v) of a run at the middle of each detected plateau (its end: the escape, or the
    last recorded time for a plateau never left)."""
    t = ds.time.values
    ends = np.where(np.isfinite(stages.escapes), stages.escapes, t[-1])
    mid = [int(np.argmin(np.abs(t - 0.5 * (a + b)))) for a, b in zip(stages.onsets, ends)]
    return ds.Q.values[run, mid], ds.R.values[run, mid], ds.v.values[run, mid]


def _rel(a, b):
    return np.abs(np.asarray(a) - b) / np.abs(b)


def finding_stages(out, figs):
    ds = fq.load(out / "stages.h5")
    vt = ds.v_teacher.values[0]
    T = ds.T.values[0]
    K, M = int(ds.K.values[0]), int(ds.M.values[0])
    lr = float(parse_sweep(str(ds.attrs["config"])).fixed["lr"])
    levels = plateau_levels(vt)
    t = ds.time.values
    lines = [
        "## 3. Plateaus and fast drops take turns",
        "",
        f"K = M = {K}, T = I, v* = {vt.tolist()}, init scale 1e-3, v0 = 0.05, lr = {lr:g}. "
        "Plateau levels of the eta^1 flow, eps = s^2/(2 + L) + q (L = teacher directions "
        "learnt): " + ", ".join(f"{lv:.4g}" for lv in levels) + ".",
        "",
        "With its SGD-noise term the ODE has no plateau exactly at those levels: the eta^2 "
        "term moves each one by O(lr). The predicted level with the noise term "
        "(`fastquad.analysis.plateau_levels_with_noise`) is computed for each plateau from "
        "the run's own state at the plateau's middle. Every plateau detected in every run "
        "is matched with the nearest eta^1 level; per level the table gives in how many "
        "runs it was seen, the median measured level, the largest relative deviation of "
        "the measured level from the eta^1 level and from the noise-term prediction, and "
        "the median escape time.",
        "",
        "| method | runs | plateaus per run | level L: seen in, median level, max deviation "
        "from eta^1 level / from noise-term level, escape |",
        "|---|---|---|---|",
    ]
    methods = ds.method.values.astype(str)
    noise = ds.sgd_noise.values.astype(bool)
    pos = levels[levels > 0]
    seen = {}  # method -> the levels seen in every one of its runs
    worst = {}  # method -> (largest deviation from eta^1, from the noise-term prediction)
    for label, sel, noisy in (
        ("online SGD, d = 1000", methods == "sgd", True),
        ("ODE with SGD noise", (methods == "ode") & noise, True),
        ("ODE, eta^1 flow", (methods == "ode") & ~noise, False),
    ):
        idx = np.flatnonzero(sel & _ok(ds))
        n_left = int(sel.sum() - len(idx))
        found = [detect_stages(t, ds.eps_g.values[r]) for r in idx]
        per_level = {}
        predicted = []
        for r, st in zip(idx, found):
            full = (
                plateau_levels_with_noise(
                    K, M, T, vt, lr, states=_plateau_states(ds, r, st)
                ).eps_full
                if noisy and st.n_plateaus
                else np.full(st.n_plateaus, np.nan)
            )
            predicted.append(full)
            for lev, esc, pred in zip(st.levels, st.escapes, full):
                L = int(np.argmin(np.abs(np.log(lev / pos))))
                per_level.setdefault(L, []).append((lev, esc, pred))
        cells = []
        dev_flow, dev_full = [], []
        for L in sorted(per_level):
            vals, escs, preds = (np.array(c) for c in zip(*per_level[L]))
            esc_txt = f"{np.nanmedian(escs):.0f}" if np.isfinite(escs).any() else "not left"
            d1 = _rel(vals, pos[L]).max()
            dev_flow.append(d1)
            cell = f"L={L}: {len(vals)}/{len(idx)}, {np.median(vals):.4g}, {d1 * 100:.1f}%"
            if noisy:
                d2 = np.max(_rel(vals, preds)) if np.isfinite(preds).all() else np.nan
                dev_full.append(d2)
                cell += (
                    f" / {d2 * 100:.1f}%"
                    if np.isfinite(d2)
                    else f" / {int(np.isnan(preds).sum())} not predicted"
                )
            cells.append(cell + f", {esc_txt}")
        counts = [st.n_plateaus for st in found]
        seen[label] = {L for L, v in per_level.items() if len(v) == len(idx) and len(idx)}
        worst[label] = (max(dev_flow, default=np.nan), max(dev_full, default=np.nan))
        lines.append(
            f"| {label} | {len(idx)}"
            + (f" ({n_left} left out)" if n_left else "")
            + f" | {', '.join(map(str, counts))} | "
            + "; ".join(cells)
            + " |"
        )
        if len(idx):
            fig = plots.plot_stages(
                ds,
                run=int(idx[0]),
                stages=found[0],
                levels_with_noise=predicted[0] if noisy else None,
            )
            fig.axes[0].set_title(f"stages: {label} (run {int(idx[0])})")
            plots.save(fig, figs, "stages_" + label.split(",")[0].replace(" ", "_").lower())
    flow_levels = seen.get("ODE, eta^1 flow", set())
    sentences = []
    for label in ("online SGD, d = 1000", "ODE with SGD noise"):
        missing = sorted(flow_levels - seen.get(label, set()))
        d1, d2 = worst[label]
        sentences.append(
            (
                f"{label}: every level the eta^1 flow shows in all its runs is seen in all runs"
                if not missing
                else f"{label}: level(s) L = {', '.join(map(str, missing))} of the "
                "eta^1 flow are not detected in every run"
            )
            + f"; its plateaus lie up to {d1 * 100:.1f}% from the eta^1 levels and up to "
            + (f"{d2 * 100:.1f}%" if np.isfinite(d2) else "(not all predicted)")
            + " from the levels predicted with the noise term"
        )
    d1 = worst["ODE, eta^1 flow"][0]
    sentences.append(f"the eta^1 flow's plateaus lie up to {d1 * 100:.1f}% from its levels")
    lines += [
        "",
        "The first plateau sits at the w = 0 fixed point (level for L = 0); each drop "
        "learns the next teacher direction, largest v* first. From the table: "
        + "; ".join(sentences)
        + ". Figures: `figures/stages_*.png`.",
        "",
    ]
    return lines


# ------------------------------------------------------------------ finding 4
#: What the report calls agreement of SGD with its ODE, at every recorded time t > 0: the mean
#: deviation is at most AGREE_REL of the ODE, and it is not significant in a two-sided Student t
#: test of the paired differences at family-wise level AGREE_LEVEL over all recorded times
#: (Bonferroni; the maximum over ~80 times of |t| with 15 degrees of freedom often exceeds 3 by
#: chance alone).
AGREE_REL = 0.05
AGREE_LEVEL = 0.01
#: eps_g below this is float rounding of an exact zero (eps_g is a sum of squares ~ 1).
LOSS_FLOOR = 1e-12


def _loss(x):
    """A loss for the report: clamped at 0, rounding below LOSS_FLOOR printed as 0."""
    return "0" if x < LOSS_FLOOR else f"{x:.4g}"


def _log_log(ax, xlabel, title):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7)


def _paired(ds, base):
    """eps_g of the SGD runs selected by ``base`` and of the ODE runs from the same initial
    weights (the same replica), both shape (n, n_times); runs whose SGD diverged or failed are
    left out with their ODE partner.

    Returns
    -------
    sgd, ode : ndarray, shape (n, n_times)
    n_left : int
    """
    methods = ds.method.values.astype(str)
    ok = _ok(ds)
    rep = ds.replica.values
    ode_of = {int(rep[i]): i for i in np.flatnonzero(base & (methods == "ode") & ok)}
    s_all = np.flatnonzero(base & (methods == "sgd"))
    s = [i for i in s_all if ok[i] and int(rep[i]) in ode_of]
    o = [ode_of[int(rep[i])] for i in s]
    return ds.eps_g.values[s], ds.eps_g.values[o], len(s_all) - len(s)


def _deviation(sgd, ode):
    """Over the recorded times t > 0: the largest |mean(SGD - ODE)| relative to the mean ODE
    curve, the same in standard errors of the paired differences, and the root-mean-square
    deviation of single runs from their own ODE, relative to the mean ODE curve."""
    diff = (sgd - ode)[:, 1:]
    scale = ode.mean(axis=0)[1:]
    md = diff.mean(axis=0)
    se = diff.std(axis=0, ddof=1) / np.sqrt(diff.shape[0])
    z = np.abs(md) / np.where(se > 0, se, np.inf)
    return (np.max(np.abs(md) / scale), np.max(z), np.max(np.sqrt((diff**2).mean(axis=0)) / scale))


def _z_limit(n_runs, n_times):
    """Largest |mean| / std. error that is no significant deviation (see AGREE_LEVEL)."""
    from scipy import stats

    return float(stats.t.ppf(1.0 - AGREE_LEVEL / (2 * n_times), n_runs - 1))


def _agrees(rel, z, n_runs, n_times):
    return rel <= AGREE_REL and z <= _z_limit(n_runs, n_times)


AGREEMENT = (
    f"SGD and the ODE *agree* when at every recorded time the mean deviation is at most "
    f"{AGREE_REL:.0%} of the ODE and not significant (paired Student t test at "
    f"family-wise level {AGREE_LEVEL:g} over the recorded times, Bonferroni: the limit "
    "in the table)."
)


def finding_sgd_vs_ode(out, figs):
    ds = fq.load(out / "sgd_vs_ode.h5")
    t = ds.time.values
    lines = [
        "## 4. Numerical learning curves match the theory",
        "",
        "Online SGD (d = 1000, 16 replicas, label noise 0.1) against the order-parameter "
        "ODE with its SGD-noise term, each run's ODE integrated from the order parameters "
        "of that run's own initial weights. Deviation of the SGD mean from the ODE over "
        "all recorded times t > 0, in relative terms and in standard errors of the paired "
        "differences SGD - ODE. " + AGREEMENT,
        "",
        "| start | lr | SGD runs used (left out) | max rel. deviation | "
        "max deviation / std. error (limit of the test) | final eps_g SGD / ODE |",
        "|---|---|---|---|---|---|",
    ]
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    agree = {}  # start -> [(lr, within both thresholds)]
    for a, (overlap, name) in enumerate(STARTS):
        ax = axes[a]
        for i, lr in enumerate(np.unique(ds.lr.values)):
            sgd, ode_runs, n_left = _paired(
                ds, (ds.lr.values == lr) & (ds.init_overlap.values == overlap)
            )
            rel, z, _ = _deviation(sgd, ode_runs)
            mean, ode = sgd.mean(axis=0), ode_runs.mean(axis=0)
            lines.append(
                f"| {name} | {lr:g} | {len(sgd)} ({n_left} diverged) | "
                f"{rel * 100:.1f}% | {z:.1f} ({_z_limit(len(sgd), len(t) - 1):.2f}) | "
                f"{_loss(mean[-1])} / {_loss(ode[-1])} |"
            )
            agree.setdefault(name, []).append((lr, _agrees(rel, z, len(sgd), len(t) - 1)))
            c = colors[i]
            ok = t > 0
            ax.plot(t[ok], mean[ok], color=c, label=f"SGD lr={lr:g} (mean of {len(sgd)})")
            lo, hi = np.percentile(sgd, [10, 90], axis=0)
            ax.fill_between(t[ok], lo[ok], hi[ok], color=c, alpha=0.2, lw=0)
            ax.plot(t[ok], ode[ok], color=c, ls="--", label="ODE theory" if i == 0 else None)
        _log_log(ax, "time t = step / d", f"online SGD vs ODE, {name}")
    axes[0].set_ylabel(r"generalisation error $\epsilon_g$")
    fig.tight_layout()
    plots.save(fig, figs, "sgd_vs_ode")
    verdicts = []
    for name, rows in agree.items():
        good = [f"{lr:g}" for lr, ok in rows if ok]
        bad = [f"{lr:g}" for lr, ok in rows if not ok]
        if good:
            verdicts.append(
                f"from the {name}, SGD and the ODE agree for lr = "
                f"{', '.join(good)}" + (f", not for lr = {', '.join(bad)}" if bad else "")
            )
        else:
            verdicts.append(
                f"from the {name}, SGD and the ODE do not agree at any lr ({', '.join(bad)})"
            )
    text = "; ".join(verdicts)
    lines += [
        "",
        "Bands: 10-90% of runs. " + text[:1].upper() + text[1:] + ". Losses are "
        f"shown clamped at 0; values below {LOSS_FLOOR:g} are rounding (printed as 0). "
        "Figure: `figures/sgd_vs_ode.png`.",
        "",
    ]
    return lines + _finite_d(out, figs)


#: Per-run deviations "shrink with d" when they fall at least as fast as d^SHRINK_EXPONENT.
SHRINK_EXPONENT = -0.25


def _finite_d(out, figs):
    ds = fq.load(out / "finite_d.h5")
    dims = np.unique(ds.d.values)
    lrs = np.unique(ds.lr.values)
    head = "d = " + ", ".join(f"{d:.0e}".replace("e+0", "e") for d in dims)
    lines = [
        "### How the deviations shrink with d",
        "",
        f"The same comparison at d = {', '.join(f'{d:g}' for d in dims)} with the exact "
        "dimension-free sampler (`finite_d.h5`). Per start and lr: the largest relative "
        "deviation of the SGD mean from the ODE (with its size in standard errors; agreement "
        "as above), the "
        "root-mean-square deviation of single runs from their own ODE (relative to the "
        "mean ODE curve) and its exponent p in a least-squares fit rms ~ d^p, and the "
        "spread of the ODE curves between replicas (the largest standard deviation "
        "between their starts, relative to the mean): how much the outcome depends on "
        "the details of the initial weights.",
        "",
        f"| start | lr | mean deviation ({head}) | single-run rms ({head}) | p | "
        f"ODE spread between starts ({head}) | left out |",
        "|---|---|---|---|---|---|---|",
    ]
    exponents = {}
    at_top = {}
    curves, spreads = {}, {}
    for overlap, name in STARTS:
        for lr in lrs:
            mean_dev, rms, spread, left = [], [], [], 0
            for d in dims:
                sgd, ode, n_left = _paired(
                    ds,
                    (ds.lr.values == lr) & (ds.d.values == d) & (ds.init_overlap.values == overlap),
                )
                rel, z, r = _deviation(sgd, ode)
                mean_dev.append((rel, z, len(sgd), sgd.shape[1] - 1))
                rms.append(r)
                spread.append(np.max(ode.std(axis=0, ddof=1)[1:] / ode.mean(axis=0)[1:]))
                left += n_left
            p = np.polyfit(np.log(dims), np.log(rms), 1)[0]
            exponents.setdefault(name, []).append((lr, p))
            at_top.setdefault(name, []).append((lr, _agrees(*mean_dev[-1])))
            curves[(name, lr)] = rms
            spreads[(name, lr)] = spread
            lines.append(
                f"| {name} | {lr:g} | "
                + ", ".join(f"{r * 100:.2f}% ({z:.1f})" for r, z, _, _ in mean_dev)
                + " | "
                + ", ".join(f"{r:.3g}" for r in rms)
                + f" | {p:.2f} | "
                + ", ".join(f"{x:.3g}" for x in spread)
                + f" | {left} |"
            )
    sentences = []
    for name, rows in exponents.items():
        ps = np.array([p for _, p in rows])
        shrink = [f"{lr:g}" for lr, p in rows if p <= SHRINK_EXPONENT]
        stay = [f"{lr:g}" for lr, p in rows if p > SHRINK_EXPONENT]
        good = [f"{lr:g}" for lr, ok in at_top[name] if ok]
        sentences.append(
            f"from the {name}, single-run deviations "
            + (
                f"shrink with d for every lr (p from {ps.min():.2f} to {ps.max():.2f})"
                if not stay
                else f"do not shrink with d for lr = {', '.join(stay)}"
                + (f" (they do for lr = {', '.join(shrink)})" if shrink else "")
                + f" (p from {ps.min():.2f} to {ps.max():.2f})"
            )
            + f"; at d = {dims[-1]:g} SGD and the ODE agree for "
            + (f"lr = {', '.join(good)}" if good else "no lr")
        )
        for lr, p in rows:
            if p > SHRINK_EXPONENT:
                rms, spread = curves[(name, lr)][-1], spreads[(name, lr)][-1]
                same = 0.5 <= spread / rms <= 2.0
                sentences[-1] += (
                    f"; at lr = {lr:g} and d = {dims[-1]:g} the ODE curves of "
                    f"different starts differ by {spread:.2g} (relative standard "
                    f"deviation), single runs from their own ODE by {rms:.2g}"
                    + (
                        " (within a factor 2 of each other: the outcome depends on "
                        "the details of the start and of the noise alike)"
                        if same
                        else ""
                    )
                )
    text = ". ".join(x[:1].upper() + x[1:] for x in sentences)
    lines += [
        "",
        f"Shrinking means p <= {SHRINK_EXPONENT:g}. " + text + ". Figure: `figures/finite_d.png`.",
        "",
    ]

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(STARTS), figsize=(10, 3.8), sharey=True)
    for ax, (_, name) in zip(axes, STARTS):
        for lr in lrs:
            ax.plot(dims, curves[(name, lr)], marker="o", label=f"lr = {lr:g}")
        ref = curves[(name, lrs[0])][0] * np.sqrt(dims[0] / dims)
        ax.plot(dims, ref, color="k", ls=":", lw=1, label=r"$\propto d^{-1/2}$")
        _log_log(ax, "input dimension d", f"single runs vs their ODE, {name}")
    axes[0].set_ylabel("rms deviation / ODE (max over t)")
    fig.tight_layout()
    plots.save(fig, figs, "finite_d")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("results/paper"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = args.out
    figs = out / "figures"
    out.mkdir(parents=True, exist_ok=True)
    run_all_sweeps(out, args.workers, not args.no_progress)
    report = [
        "# fastquad: the learning dynamics of two-layer quadratic networks",
        "",
        "Reproduces the four findings of Tan & Chen (Frontiers of Computer Science, 2022) "
        f"with fastquad {fq.__version__}. Made by `python runners/paper_study.py`.",
        "",
    ]
    for finding in (finding_fixed_points, finding_conserved, finding_stages, finding_sgd_vs_ode):
        report += finding(out, figs)
    report.append(f"Total time: {time.perf_counter() - t0:.0f} s.")
    (out / "report.md").write_text("\n".join(report) + "\n")
    print(
        f"\nreport: {out / 'report.md'}\nfigures: {figs}/ "
        f"({len(list(figs.glob('*.png')))} PNG, same names as PDF)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
