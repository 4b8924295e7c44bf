"""Quadratic, ReLU, erf and linear networks side by side: is the quadratic network a faithful
proxy for ReLU?

    python runners/activation_study.py --out results/activations   # about 10 minutes on 2 cores

Tan & Chen (2022) study quadratic networks because the quadratic activation "shares convexity
with the widely used ReLU, thus producing similar dynamics". This study puts the four
activations on matched problems (the same teacher rows, teacher weights v*, K, M,
initialisation scale and learning rate) and compares, with numbers:

1. learning curves of online SGD and of the order-parameter ODE, for students learning a
   teacher of their own activation and the quadratic teacher;
2. plateaus and drops from a small initialisation (levels, counts, escape times);
3. fixed points of the order-parameter flow: saddles and stable points that are not global minima;
4. failure from a wrong-sign initialisation, against the conserved quantity C = Q - a v^2;
5. the agreement of online SGD with its ODE as the input dimension grows;

and states, from these numbers, where the quadratic network is and is not a faithful proxy for
ReLU. The sweeps of ``data/activations/`` run on one embedded Dask cluster (resumable: running
the command again skips what is stored); ``--out`` receives ``report.md``, ``figures/`` and the
results files.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import fastquad as fq
from fastquad import plots
from fastquad.activations import activation_degree
from fastquad.analysis import detect_stages, find_fixed_points
from fastquad.sweep import embedded_cluster, load_sweep, parse_sweep, run_sweep

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_study import _agrees, _deviation, _log_log, _loss, _ok  # noqa: E402

SWEEPS = ("curves", "stages", "failure", "finite_d")
ACTS = ("quadratic", "relu", "erf", "linear")
#: A run has learnt when eps_g(t_max) <= LEARNT * eps_g(0).
LEARNT = 1e-3
#: The learning curves are compared by the time they take to fall to CURVE_LEVEL * eps_g(0).
CURVE_LEVEL = 1e-2


def run_all_sweeps(out, workers, progress):
    with embedded_cluster(workers) as client:
        for name in SWEEPS:
            sweep = load_sweep(ROOT / "data" / "activations" / f"{name}.toml")
            t0 = time.perf_counter()
            summary = run_sweep(sweep, out / f"{name}.h5", client=client, progress=progress)
            print(f"[{name}] {summary.text()} ({time.perf_counter() - t0:.1f} s)")
            if not summary.ok:
                raise SystemExit(f"sweep {name} had failed runs; rerun to retry them")


def _param(ds, name):
    """A parameter of a sweep's runs: per run if it varies, else the sweep's fixed value."""
    if name in ds.coords:
        return ds[name].values
    if name in ds.attrs:
        return ds.attrs[name]
    return parse_sweep(str(ds.attrs["config"])).fixed[name]


def _pair(s, t):
    return f"{s} / {t}"


def _ode_from_start(ds, runs, lr, t, s, teacher):
    """The ODE (with its SGD-noise term) of each run from its own t = 0 order parameters."""
    K = int(np.ravel(_param(ds, "K"))[0])
    M = int(np.ravel(_param(ds, "M"))[0])
    res = fq.integrate_ode(
        ds.Q.values[runs, 0, :K, :K],
        ds.R.values[runs, 0, :K, :M],
        ds.v.values[runs, 0, :K],
        ds.T.values[runs, :M, :M],
        ds.v_teacher.values[runs, :M],
        lr,
        float(t[-1]),
        times=t,
        activation=s,
        teacher_activation=teacher,
    )
    return res


def _when(x):
    return f"{x:g}" if np.isfinite(x) else "not reached"


def _time_to(t, eps, frac=LEARNT):
    """First recorded time with eps <= frac * eps(0), or inf."""
    hit = np.flatnonzero(eps <= frac * eps[0])
    return float(t[hit[0]]) if hit.size else np.inf


# ------------------------------------------------------------------ 1. learning curves
def section_curves(out, figs, facts):
    ds = fq.load(out / "curves.h5")
    t = ds.time.values
    lr = float(_param(ds, "lr"))
    s_all, t_all = plots.activations(ds)
    ok = _ok(ds)
    lines = [
        "## 1. Learning curves on matched problems",
        "",
        f"K = M = 2, T = I, v* = (1, 0.5), student init scale 0.3, v0 = 0.5, lr = {lr:g}; "
        f"online SGD at d = {int(_param(ds, 'd'))} ({int(_param(ds, 'n_replicas'))} runs per "
        "pair), and the ODE of each run from the order parameters of its own initial weights "
        "(with its SGD-noise term). Times are the first recorded time at "
        f"which the mean curve reaches eps_g(0) x {CURVE_LEVEL:g}; plateaus are those of the mean "
        "ODE curve. From a random start the escape from a plateau fluctuates from run to run "
        "at finite d, so the curves are compared by these times and levels here; section 5 "
        "tests the agreement of SGD with its ODE curve by curve.",
        "",
        "| student / teacher | SGD runs used (left out) | eps_g(0) | final eps_g SGD / ODE | "
        "time to learn SGD / ODE | ODE plateaus |",
        "|---|---|---|---|---|---|",
    ]
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colors = dict(zip(ACTS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for p, same in enumerate((True, False)):
        ax = axes[p]
        for s in ACTS:
            teacher = s if same else "quadratic"
            if not same and s == "quadratic":
                continue
            sel = np.flatnonzero((s_all == s) & (t_all == teacher))
            used = sel[ok[sel]]
            ode = _ode_from_start(ds, used, lr, t, s, teacher)
            sgd = ds.eps_g.values[used]
            mean_sgd = sgd.mean(axis=0)
            mean_ode = ode.eps_g.mean(axis=0)
            st = detect_stages(t, mean_ode)
            t_learn = _time_to(t, mean_ode, CURVE_LEVEL)
            t_sgd = _time_to(t, mean_sgd, CURVE_LEVEL)
            facts.setdefault("curves", {})[(s, teacher)] = dict(
                final_sgd=float(mean_sgd[-1]),
                final_ode=float(mean_ode[-1]),
                eps0=float(mean_ode[0]),
                t_learn=t_learn,
                t_learn_sgd=t_sgd,
                n_plateaus=st.n_plateaus,
            )
            lines.append(
                f"| {_pair(s, teacher)} | {len(used)} ({len(sel) - len(used)} diverged) | "
                f"{mean_ode[0]:.4g} | {_loss(mean_sgd[-1])} / {_loss(mean_ode[-1])}"
                + f" | {_when(t_sgd)} / {_when(t_learn)} | "
                f"{', '.join(f'{x:.3g}' for x in st.levels) or 'none'} |"
            )
            pos = t > 0
            ax.plot(t[pos], mean_sgd[pos], color=colors[s], label=f"{s} student, SGD")
            ax.plot(t[pos], mean_ode[pos], color=colors[s], ls="--")
        _log_log(
            ax,
            "time t = step / d",
            "teachers of the student's activation" if same else "quadratic teacher",
        )
    axes[0].set_ylabel(r"generalisation error $\epsilon_g$ (SGD solid, ODE dashed)")
    fig.tight_layout()
    plots.save(fig, figs, "curves")
    lines += ["", "Figure: `figures/curves.png`.", ""]
    return lines


# ------------------------------------------------------------------ 2. stages
def section_stages(out, figs, facts):
    ds = fq.load(out / "stages.h5")
    t = ds.time.values
    s_all, t_all = plots.activations(ds)
    ok = _ok(ds)
    lines = [
        "## 2. Plateaus and drops from a small initialisation",
        "",
        "K = M = 3, T = I, v* = (1, 0.6, 0.3), init scale 1e-3, v0 = 0.05, lr = 0.05: the "
        "eta^1 flow of the order-parameter ODE (4 starts per pair). Plateaus detected by "
        "`fastquad.analysis.detect_stages`; median over the starts.",
        "",
        "| student / teacher | plateaus per run | plateau levels (run 0) | escape times "
        "(run 0) | final eps_g / eps_g(0) |",
        "|---|---|---|---|---|",
    ]
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.4))
    for s in ACTS:
        for teacher in (s, "quadratic") if s != "quadratic" else (s,):
            sel = np.flatnonzero((s_all == s) & (t_all == teacher) & ok)
            found = [detect_stages(t, ds.eps_g.values[r]) for r in sel]
            st = found[0]
            eps = ds.eps_g.values[sel[0]]
            facts.setdefault("stages", {})[(s, teacher)] = dict(
                counts=[f.n_plateaus for f in found],
                levels=st.levels,
                escapes=st.escapes,
                final=float(eps[-1] / eps[0]),
            )
            lines.append(
                f"| {_pair(s, teacher)} | {', '.join(str(f.n_plateaus) for f in found)} | "
                f"{', '.join(f'{x:.3g}' for x in st.levels) or 'none'} | "
                + (
                    ", ".join("not left" if not np.isfinite(e) else f"{e:.0f}" for e in st.escapes)
                    or "-"
                )
                + f" | {eps[-1] / eps[0]:.2e} |"
            )
            if teacher == s:
                pos = t > 0
                ax.plot(t[pos], eps[pos] / eps[0], label=f"{s}")
    _log_log(ax, "time t = step / d", "eta^1 flow from init scale 1e-3, own teacher")
    ax.set_ylabel(r"$\epsilon_g / \epsilon_g(0)$")
    fig.tight_layout()
    plots.save(fig, figs, "stages")
    lines += ["", "Figure: `figures/stages.png`.", ""]
    return lines


# ------------------------------------------------------------------ 3. fixed points
FP_CASES = ((1, 2, (1.0, 0.5)), (2, 2, (1.0, 0.6)), (2, 3, (1.0, 0.6, 0.3)))
FP_STARTS = 200


def section_fixed_points(out, figs, facts):
    lines = [
        "## 3. Fixed points of the order-parameter flow",
        "",
        "Fixed points of the eta^1 flow (lr = 0.1; the flow's fixed points do not depend on "
        "lr), T = I, each activation against its own teacher, found by "
        f"`fastquad.analysis.find_fixed_points` from {FP_STARTS} starts (seed 1), polished, "
        "deduplicated up to the symmetries of the activation, classified by the Jacobian.",
        "",
        "| K, M, v* | student / teacher | fixed points | saddles | stable, not global | "
        "global minimum eps_g |",
        "|---|---|---|---|---|---|",
    ]
    for K, M, vt in FP_CASES:
        T = np.eye(M)
        for s in ACTS:
            t0 = time.perf_counter()
            pts = find_fixed_points(
                K, M, T, np.array(vt), 0.1, n_starts=FP_STARTS, seed=1, activation=s
            )
            best = min(p.eps_g for p in pts)
            bad = [p for p in pts if p.kind == "stable" and p.eps_g > best + 1e-9]
            saddles = [p for p in pts if p.kind == "saddle"]
            facts.setdefault("fixed_points", {})[(K, M, s)] = dict(
                n=len(pts), saddles=len(saddles), stable_bad=len(bad), best=best
            )
            lines.append(
                f"| {K}, {M}, {list(vt)} | {_pair(s, s)} | {len(pts)} | {len(saddles)} | "
                f"{len(bad)}"
                + (f" (eps_g {', '.join(f'{p.eps_g:.3g}' for p in bad)})" if bad else "")
                + f" | {_loss(best)} |"
            )
            print(f"[fixed points] K={K} M={M} {s}: {len(pts)} ({time.perf_counter() - t0:.1f} s)")
    lines.append("")
    return lines


# ------------------------------------------------------------------ 4. failure
def section_failure(out, figs, facts):
    ds = fq.load(out / "failure.h5")
    ok = _ok(ds)
    s_all = plots.activations(ds)[0]
    Q0 = ds.Q.values[:, 0, 0, 0]
    v0 = ds.v.values[:, 0, 0]
    learnt = ds.eps_g.values[:, -1] <= LEARNT * ds.eps_g.values[:, 0]
    lines = [
        "## 4. Failure from a wrong-sign start",
        "",
        "K = M = 1, v* = 1, v0 < 0 in every run; population gradient flow in parameter space "
        f"(d = 100, lr = 0.5); learnt = eps_g(t_max) <= {LEARNT:g} eps_g(0). For a "
        "homogeneous activation of degree a the flow conserves C = Q - a v^2, so v can cross "
        "zero only if C > 0: the prediction is 'learns iff C0 > 0' (boundary Q0 = a v0^2). "
        "An odd activation (linear, erf) has the symmetry (w, v) -> (-w, -v): a wrong sign "
        "alone does not stop it, and the prediction there is 'learns'.",
        "",
        "| student | runs (left out) | learnt | prediction agrees | away from the boundary "
        "(|C0| > 0.02) | max drift of C along the flow |",
        "|---|---|---|---|---|---|",
    ]
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6), sharey=True)
    for ax, s in zip(axes, ACTS):
        sel = (s_all == s) & ok
        a = activation_degree(s)
        odd = s in ("linear", "erf")
        C0 = Q0 - (a or 0) * v0**2
        predicted = np.ones_like(learnt) if odd else C0 > 0
        agree = (predicted == learnt)[sel]
        margin = sel & ((np.abs(C0) > 0.02) | odd)
        if a is not None:
            C = ds.Q.values[:, :, 0, 0] - a * ds.v.values[:, :, 0] ** 2
            drift = f"{np.nanmax(np.abs(C - C[:, :1])[sel]):.1e}"
        else:
            drift = "(no conserved quantity)"
        # runs the conserved quantity does not stop but that fail all the same, and where
        # they end: v near 0 with the unit anti-aligned to the teacher (R < 0)
        extra = sel & (C0 > 0) & ~learnt & (not odd)
        v_end = ds.v.values[:, -1, 0]
        R_end = ds.R.values[:, -1, 0, 0]
        stuck = extra & (np.abs(v_end) < 0.05) & (R_end < 0)
        facts.setdefault("failure", {})[s] = dict(
            agree=float(agree.mean()),
            learnt=float(learnt[sel].mean()),
            fails=int((~learnt[sel]).sum()),
            n=int(sel.sum()),
            extra=int(extra.sum()),
            stuck=int(stuck.sum()),
            eps_stuck=float(np.median(ds.eps_g.values[stuck, -1])) if stuck.any() else np.nan,
        )
        lines.append(
            f"| {s} | {int(sel.sum())} ({int(((s_all == s) & ~ok).sum())}) | "
            f"{int(learnt[sel].sum())}/{int(sel.sum())} | {agree.mean() * 100:.1f}% | "
            f"{(predicted == learnt)[margin].mean() * 100:.1f}% | {drift} |"
        )
        ax.scatter(-v0[sel], Q0[sel], c=np.where(learnt[sel], "tab:green", "tab:red"), s=12)
        if a is not None:
            x = np.linspace(0, max(-v0.min(), 1e-3), 50)
            ax.plot(x, a * x**2, "k--", lw=1, label=f"Q0 = {a} v0^2")
            ax.legend(fontsize=7)
        ax.set_xlabel("|v0| (v0 < 0)")
        ax.set_title(f"{s} student (green: learns)")
    axes[0].set_ylabel("Q0")
    fig.tight_layout()
    plots.save(fig, figs, "failure")
    lines.append("")
    for s in ACTS:
        f = facts["failure"][s]
        if f["extra"]:
            lines.append(
                f"- {s}: {f['extra']} run(s) with C0 > 0 fail all the same; {f['stuck']} of "
                "them end with v near 0 (|v| < 0.05) and the unit anti-aligned with the teacher "
                f"(R < 0), at eps_g = {f['eps_stuck']:.3g}: the wrong-sign phase turns w away "
                "from the teacher, and once v reaches 0 no gradient turns it back."
            )
    lines += ["", "Figure: `figures/failure.png`.", ""]
    return lines


# ------------------------------------------------------------------ 5. finite d
def section_finite_d(out, figs, facts):
    ds = fq.load(out / "finite_d.h5")
    t = ds.time.values
    lr = float(_param(ds, "lr"))
    s_all = plots.activations(ds)[0]
    ok = _ok(ds)
    dims = np.unique(_param(ds, "d"))
    lines = [
        "## 5. Online SGD converges to its ODE as d grows",
        "",
        "K = M = 2, v* = (1, 0.5), warm start (init overlap 0.7), lr = "
        f"{lr:g}, 16 runs per point drawn with the exact sampler; each run against the ODE "
        "(with its SGD-noise term) from its own initial order parameters. Max over t > 0 of "
        "|mean(SGD - ODE)| / ODE.",
        "",
        "| student | " + " | ".join(f"d = {d}" for d in dims) + " | agree at the largest d |",
        "|---|" + "---|" * len(dims) + "---|",
    ]
    for s in ACTS:
        cells = []
        rels = []
        agree = False
        for d in dims:
            sel = np.flatnonzero((s_all == s) & (_param(ds, "d") == d) & ok)
            ode = _ode_from_start(ds, sel, lr, t, s, s)
            rel, z, _ = _deviation(ds.eps_g.values[sel], ode.eps_g)
            rels.append(rel)
            agree = _agrees(rel, z, len(sel), len(t) - 1)
            cells.append(f"{rel * 100:.2f}%")
        facts.setdefault("finite_d", {})[s] = dict(rels=rels, agree=agree, dims=list(dims))
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {'yes' if agree else 'no'} |")
    lines.append("")
    return lines


# ------------------------------------------------------------------ verdict
def verdict(facts):
    """Where the quadratic network is and is not a faithful proxy for ReLU, from the numbers
    gathered by the sections (each sentence cites the numbers it rests on)."""
    yes, no = [], []
    cq, cr = facts["curves"][("quadratic", "quadratic")], facts["curves"][("relu", "relu")]
    ratio = cr["t_learn"] / cq["t_learn"] if np.isfinite(cq["t_learn"]) else np.nan
    (yes if np.isfinite(ratio) and 0.5 <= ratio <= 2 else no).append(
        f"time to learn (section 1): quadratic reaches eps_g(0) x {CURVE_LEVEL:g} at t = "
        f"{cq['t_learn']:g}, ReLU "
        + (f"at t = {cr['t_learn']:g}" if np.isfinite(cr["t_learn"]) else "not by t_max")
        + (f" ({ratio:.2g}x)" if np.isfinite(ratio) else "")
    )
    sq, sr = facts["stages"][("quadratic", "quadratic")], facts["stages"][("relu", "relu")]
    nq, nr = int(np.median(sq["counts"])), int(np.median(sr["counts"]))
    (yes if nq == nr else no).append(
        f"plateaus from a small start (section 2): {nq} for the quadratic network, {nr} for ReLU"
    )
    for K, M, _ in FP_CASES:
        fq_, fr = facts["fixed_points"][(K, M, "quadratic")], facts["fixed_points"][(K, M, "relu")]
        same = (fq_["stable_bad"] > 0) == (fr["stable_bad"] > 0)
        (yes if same else no).append(
            f"stable fixed points that are not global minima, K = {K}, M = {M} (section 3): "
            f"{fq_['stable_bad']} for the quadratic network, {fr['stable_bad']} for ReLU"
        )
    fq_, fr = facts["failure"]["quadratic"], facts["failure"]["relu"]
    both = fq_["fails"] > 0 and fr["fails"] > 0
    (yes if both else no).append(
        "failure from a wrong-sign start when the conserved quantity is negative (section 4): "
        f"{fq_['fails']}/{fq_['n']} quadratic and {fr['fails']}/{fr['n']} ReLU runs fail; the "
        f"prediction 'learns iff C0 = Q0 - a v0^2 > 0' agrees in {fq_['agree'] * 100:.1f}% "
        f"and {fr['agree'] * 100:.1f}% of runs (boundary Q0 = 2 v0^2 vs Q0 = v0^2)"
    )
    if fr["extra"] != fq_["extra"]:
        no.append(
            f"failure with C0 > 0 (section 4): {fr['extra']} ReLU run(s) fail although their "
            f"conserved quantity is positive ({fr['stuck']} stuck with v near 0 and the unit "
            f"anti-aligned with the teacher), against {fq_['extra']} quadratic run(s): an "
            "even activation has no anti-aligned trap, since w -> -w leaves it unchanged"
        )
    rq = facts["curves"].get(("relu", "quadratic"))
    if rq is not None:
        frac = rq["final_ode"] / rq["eps0"]
        no.append(
            "what a ReLU student can learn of a quadratic teacher (section 1): eps_g falls "
            f"only to {frac * 100:.0f}% of its start (a quadratic student learns it to 0)"
        )
    fd = facts["finite_d"]
    all_conv = all(f["rels"][-1] < f["rels"][0] for f in (fd["quadratic"], fd["relu"]))
    (yes if all_conv else no).append(
        "online SGD approaches its ODE as d grows (section 5): max deviation from d = "
        f"{fd['quadratic']['dims'][0]} to {fd['quadratic']['dims'][-1]}: "
        f"{fd['quadratic']['rels'][0] * 100:.2f}% -> "
        f"{fd['quadratic']['rels'][-1] * 100:.2f}% (quadratic), "
        f"{fd['relu']['rels'][0] * 100:.2f}% -> {fd['relu']['rels'][-1] * 100:.2f}% (ReLU)"
    )
    lines = [
        "## Is the quadratic network a faithful proxy for ReLU?",
        "",
        "Each statement below is computed from the numbers in the sections that follow.",
        "",
        f"**Faithful** ({len(yes)}):",
        "",
        *[f"- {x}." for x in yes],
        "",
        f"**Not faithful** ({len(no)}):",
        "",
        *[f"- {x}." for x in no],
        "",
    ]
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("results/activations"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = args.out
    figs = out / "figures"
    out.mkdir(parents=True, exist_ok=True)
    run_all_sweeps(out, args.workers, not args.no_progress)
    facts = {}
    body = []
    for section in (
        section_curves,
        section_stages,
        section_fixed_points,
        section_failure,
        section_finite_d,
    ):
        t1 = time.perf_counter()
        body += section(out, figs, facts)
        print(f"[{section.__name__}] {time.perf_counter() - t1:.1f} s")
    report = [
        "# fastquad: quadratic, ReLU, erf and linear networks side by side",
        "",
        f"Made by `python runners/activation_study.py` with fastquad {fq.__version__}. "
        "Students learn teachers of their own activation and the quadratic teacher on matched "
        "problems.",
        "",
        *verdict(facts),
        *body,
        f"Total time: {time.perf_counter() - t0:.0f} s.",
    ]
    (out / "report.md").write_text("\n".join(report) + "\n")
    print(f"\nreport: {out / 'report.md'}\nfigures: {figs}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
