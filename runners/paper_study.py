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
from fastquad.analysis import (detect_stages, find_fixed_points, fixed_point_table, plateau_levels,
                               predict_failure)
from fastquad.sweep import load_sweep, run_sweep

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = ("fixed_points", "conserved", "stages", "sgd_vs_ode")


def run_all_sweeps(out, workers, progress):
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, env={"NUMBA_NUM_THREADS": "1"}) as cluster, \
            Client(cluster) as client:
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
    lines = ["## 1. Fixed points that are not global optima, and saddles", "",
             "Fixed points of the order-parameter flow (eta^1 part), found from many starts and "
             "from the plateaus of the trajectories in `fixed_points.h5`, polished by Newton's "
             "method, deduplicated up to unit permutations, signs and the rescaling "
             "w -> a w, v -> v / a^2 (reported at C_j = Q_jj - 2 v_j^2 = 0), classified by the "
             "eigenvalues of the Jacobian (n_zero: zero modes along lines of fixed points).", ""]
    case = ds.teacher_v_index.values
    for c in np.unique(case):
        runs = np.flatnonzero(case == c)
        r0 = int(runs[0])
        K, M = int(ds.K.values[r0]), int(ds.M.values[r0])
        vt = ds.v_teacher.values[r0, :M]
        T = ds.T.values[r0, :M, :M]
        traj = fq.integrate_ode(ds.Q.values[runs, 0, :K, :K], ds.R.values[runs, 0, :K, :M],
                                ds.v.values[runs, 0, :K], T, vt, 0.1,
                                float(ds.time.values[-1]), times=ds.time.values, sgd_noise=False)
        pts = find_fixed_points(K, M, T, vt, 0.1, n_starts=120, seed=1, trajectories=traj)
        lines += [f"### K = {K}, M = {M}, v* = {np.round(vt, 3).tolist()}, T = I, "
                  f"student v0 = {ds.v.values[r0, 0, 0]:g}", "", "```",
                  fixed_point_table(pts), "```", ""]
        best = min(p.eps_g for p in pts)  # the global minimum (> 0 when K < M)
        stable_bad = [p for p in pts if p.kind == "stable" and p.eps_g > best + 1e-9]
        saddles = [p for p in pts if p.kind == "saddle"]
        lines.append(f"- {len(pts)} distinct fixed points: {len(saddles)} saddle(s), "
                     f"{len(stable_bad)} stable point(s) that are not global minima "
                     f"(global minimum eps_g = {best:.4g})"
                     + (" (eps_g = " + ", ".join(f"{p.eps_g:.4g}" for p in stable_bad) + ")"
                        if stable_bad else "") + ".")
        final = ds.eps_g.values[runs, -1]
        lines.append(f"- the trajectories from init scale 1e-3 end at eps_g = "
                     f"{', '.join(_loss(e) for e in final)}"
                     + ("" if final.min() > 1e-6 else " (the global minimum)") + ".")
        lines.append("")
        fig = plots.plot_fixed_points(pts, ds, runs=(r0,))
        fig.axes[0].set_title(f"fixed points on the loss: K={K}, M={M}, "
                              f"v*={np.round(vt, 2).tolist()}")
        plots.save(fig, figs, f"fixed_points_{c}_K{K}_M{M}")
    lines += ["Figures: `figures/fixed_points_*.png` (horizontal lines: fixed points by "
              "stability; black: a learning curve, whose plateaus sit at fixed points of the "
              "flow, the first at w = 0).", ""]
    return lines


# ------------------------------------------------------------------ finding 2
def finding_conserved(out, figs):
    ds = fq.load(out / "conserved.h5")
    ok = _ok(ds)
    Q0 = ds.Q.values[:, 0, 0, 0]
    v0 = ds.v.values[:, 0, 0]
    C0 = Q0 - 2 * v0**2
    vt = ds.v_teacher.values[:, 0]
    predicted = predict_failure(ds.v.values[:, 0], ds.v_teacher.values, Q0=ds.Q.values[:, 0],
                                T=ds.T.values).success
    eps0 = ds.eps_g.values[:, 0]
    learnt = ds.eps_g.values[:, -1] <= 1e-3 * eps0
    agree = (predicted == learnt)[ok]
    C = ds.Q.values[:, :, 0, 0] - 2 * ds.v.values[:, :, 0] ** 2
    drift = np.nanmax(np.abs(C - C[:, :1]), axis=1)[ok]
    margin = np.abs(C0) > 0.02
    fig = plots.plot_conserved_phase(v0[ok], Q0[ok], learnt[ok], vt[ok][0])
    plots.save(fig, figs, "conserved_phase")
    return ["## 2. Failure decided by the conserved quantity", "",
            "K = M = 1, v* = 1, every start has v0 < 0 (the wrong sign). Under the gradient flow "
            "C = Q - 2 v^2 is conserved, so v can cross zero only if C > 0. Prediction "
            "(`fastquad.analysis.predict_failure`): learns iff C0 > 0. Simulation: population gradient flow in parameter space (d = 100), "
            "learnt = eps_g(t_max) <= 1e-3 eps_g(0).", "",
            f"- runs: {int(ok.sum())} (left out: {int((~ok).sum())} diverged or failed)",
            f"- prediction agrees with simulation in {agree.mean() * 100:.1f}% of runs "
            f"({int(agree.sum())}/{agree.size}); away from the boundary (|C0| > 0.02): "
            f"{(predicted == learnt)[ok & margin].mean() * 100:.1f}%",
            f"- learnt: {int(learnt[ok].sum())}, failed: {int((~learnt[ok]).sum())}",
            f"- conservation of C along the flow: max |C(t) - C(0)| = {drift.max():.2e}",
            "", "Figure: `figures/conserved_phase.png`.", ""]


# ------------------------------------------------------------------ finding 3
def finding_stages(out, figs):
    ds = fq.load(out / "stages.h5")
    vt = ds.v_teacher.values[0]
    levels = plateau_levels(vt)
    t = ds.time.values
    lines = ["## 3. Plateaus and fast drops take turns", "",
             f"K = M = 3, T = I, v* = {vt.tolist()}, init scale 1e-3, v0 = 0.05, lr = 0.05. "
             "Predicted "
             "plateau levels eps = s^2/(2 + L) + q: "
             + ", ".join(f"{lv:.4g}" for lv in levels) + ".", "",
             "Every plateau detected in every run is matched with the nearest level of the "
             "formula (L = directions learnt); the table gives, per level, in how many runs it "
             "was seen, its median measured value, the largest relative deviation from the "
             "formula, and the median escape time.", "",
             "| method | runs | plateaus per run | level L: seen in, median, max rel. error, "
             "escape |", "|---|---|---|---|"]
    methods = ds.method.values.astype(str)
    noise = ds.sgd_noise.values.astype(bool)
    pos = levels[levels > 0]
    seen = {}  # method -> the levels seen in every one of its runs
    for label, sel in (("online SGD, d = 1000", methods == "sgd"),
                       ("ODE with SGD noise", (methods == "ode") & noise),
                       ("ODE, eta^1 flow", (methods == "ode") & ~noise)):
        idx = np.flatnonzero(sel & _ok(ds))
        n_left = int(sel.sum() - len(idx))
        found = [detect_stages(t, ds.eps_g.values[r]) for r in idx]
        per_level = {}
        for st in found:
            for lev, esc in zip(st.levels, st.escapes):
                L = int(np.argmin(np.abs(np.log(lev / pos))))
                per_level.setdefault(L, []).append((lev, esc))
        cells = []
        for L in sorted(per_level):
            vals = np.array([v for v, _ in per_level[L]])
            escs = np.array([e for _, e in per_level[L]])
            esc_txt = f"{np.nanmedian(escs):.0f}" if np.isfinite(escs).any() else "not left"
            cells.append(f"L={L}: {len(vals)}/{len(idx)}, {np.median(vals):.4g}, "
                         f"{np.max(np.abs(vals - pos[L]) / pos[L]) * 100:.1f}%, {esc_txt}")
        counts = [st.n_plateaus for st in found]
        seen[label] = {L for L, v in per_level.items() if len(v) == len(idx) and len(idx)}
        lines.append(f"| {label} | {len(idx)}" + (f" ({n_left} left out)" if n_left else "")
                     + f" | {', '.join(map(str, counts))} | " + "; ".join(cells) + " |")
        if len(idx):
            fig = plots.plot_stages(ds, run=int(idx[0]), stages=found[0])
            fig.axes[0].set_title(f"stages: {label} (run {int(idx[0])})")
            plots.save(fig, figs, "stages_" + label.split(",")[0].replace(" ", "_").lower())
    flow_levels = seen.get("ODE, eta^1 flow", set())
    sentences = []
    for label in ("online SGD, d = 1000", "ODE with SGD noise"):
        missing = sorted(flow_levels - seen.get(label, set()))
        sentences.append(f"{label}: every level the eta^1 flow shows in all its runs is seen in "
                         "all runs" if not missing else
                         f"{label}: level(s) L = {', '.join(map(str, missing))} of the eta^1 "
                         "flow are not detected in every run")
    lines += ["", "The first plateau sits at the w = 0 fixed point (level for L = 0); each drop "
              "learns the next teacher direction, largest v* first. From the table: "
              + "; ".join(sentences) + ". Figures: `figures/stages_*.png`.", ""]
    return lines


# ------------------------------------------------------------------ finding 4
#: What the report calls agreement of SGD with its ODE: both, at every recorded time.
AGREE_REL = 0.05
AGREE_Z = 3.0
#: eps_g below this is float rounding of an exact zero (eps_g is a sum of squares ~ 1).
LOSS_FLOOR = 1e-12


def _loss(x):
    """A loss for the report: clamped at 0, rounding below LOSS_FLOOR printed as 0."""
    return "0" if x < LOSS_FLOOR else f"{x:.4g}"


def finding_sgd_vs_ode(out, figs):
    ds = fq.load(out / "sgd_vs_ode.h5")
    t = ds.time.values
    methods = ds.method.values.astype(str)
    lines = ["## 4. Numerical learning curves match the theory", "",
             "Online SGD (d = 1000, 16 replicas, label noise 0.1) against the order-parameter "
             "ODE with its SGD-noise term, integrated from the order parameters of the very same "
             "initial weights. Deviation of the SGD mean from the ODE, over all recorded times.",
             "", "| start | lr | SGD runs used (left out) | max rel. deviation | "
             "max deviation / std. error | final eps_g SGD / ODE |", "|---|---|---|---|---|---|"]
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    agree = {}  # start -> [(lr, within both thresholds)]
    for a, (overlap, name) in enumerate(((0.7, "warm start"), (0.0, "random start"))):
        ax = axes[a]
        for i, lr in enumerate(np.unique(ds.lr.values)):
            base = (ds.lr.values == lr) & (ds.init_overlap.values == overlap)
            s_all = np.flatnonzero(base & (methods == "sgd"))
            s = s_all[_ok(ds)[s_all]]
            o = np.flatnonzero(base & (methods == "ode") & _ok(ds))
            sgd = ds.eps_g.values[s]
            ode = ds.eps_g.values[o].mean(axis=0)
            mean = sgd.mean(axis=0)
            se = sgd.std(axis=0, ddof=1) / np.sqrt(len(s))
            rel = np.max(np.abs(mean - ode) / ode)
            z = np.max(np.abs(mean - ode)[1:] / se[1:])
            lines.append(f"| {name} | {lr:g} | {len(s)} ({len(s_all) - len(s)} diverged) | "
                         f"{rel * 100:.1f}% | {z:.1f} | {_loss(mean[-1])} / {_loss(ode[-1])} |")
            agree.setdefault(name, []).append((lr, rel <= AGREE_REL and z <= AGREE_Z))
            c = colors[i]
            ok = t > 0
            ax.plot(t[ok], mean[ok], color=c, label=f"SGD lr={lr:g} (mean of {len(s)})")
            lo, hi = np.percentile(sgd, [10, 90], axis=0)
            ax.fill_between(t[ok], lo[ok], hi[ok], color=c, alpha=0.2, lw=0)
            ax.plot(t[ok], ode[ok], color=c, ls="--", label="ODE theory" if i == 0 else None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("time t = step / d")
        ax.set_title(f"online SGD vs ODE, {name}")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(r"generalisation error $\epsilon_g$")
    fig.tight_layout()
    plots.save(fig, figs, "sgd_vs_ode")
    verdicts = []
    for name, rows in agree.items():
        good = [f"{lr:g}" for lr, ok in rows if ok]
        bad = [f"{lr:g}" for lr, ok in rows if not ok]
        within = f"within {AGREE_REL:.0%} and {AGREE_Z:g} standard errors at every recorded time"
        if good:
            verdicts.append(f"from the {name}, SGD and the ODE agree {within} for lr = "
                            f"{', '.join(good)}" + (f", not for lr = {', '.join(bad)}" if bad
                                                     else ""))
        else:
            verdicts.append(f"from the {name}, SGD and the ODE do not agree {within} at any lr "
                            f"({', '.join(bad)})")
    text = "; ".join(verdicts)
    lines += ["", "Bands: 10-90% of runs. " + text[:1].upper() + text[1:] + ". Losses are "
              f"shown clamped at 0; values below {LOSS_FLOOR:g} are rounding (printed as 0). "
              "Figure: `figures/sgd_vs_ode.png`.", ""]
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
    report = ["# fastquad: the learning dynamics of two-layer quadratic networks", "",
              "Reproduces the four findings of Tan & Chen (Frontiers of Computer Science, 2022) "
              f"with fastquad {fq.__version__}. Made by `python runners/paper_study.py`.", ""]
    for finding in (finding_fixed_points, finding_conserved, finding_stages, finding_sgd_vs_ode):
        report += finding(out, figs)
    report.append(f"Total time: {time.perf_counter() - t0:.0f} s.")
    (out / "report.md").write_text("\n".join(report) + "\n")
    print(f"\nreport: {out / 'report.md'}\nfigures: {figs}/ "
          f"({len(list(figs.glob('*.png')))} PNG, same names as PDF)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
