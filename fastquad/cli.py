"""The ``fastquad`` command line.

Bad input gets one line naming the parameter (exit code 2), never a traceback.
"""

import argparse
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from . import config
from .errors import InputError, StorageError

EXIT_BAD_INPUT = 2
EXIT_STORAGE = 1
EXIT_INTERRUPTED = 130


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default once, and only where there is one (not for flags and unset options)."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"fastquad: error: {message}\n")


def _flag_type(default):
    if isinstance(default, bool):
        return _bool
    if isinstance(default, int):
        return _int_or_text
    if isinstance(default, float):
        return _float_list
    return str


def _bool(text):
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _int_or_text(text):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)  # validation then says "must be an integer"
        except ValueError:
            return text


def _float_list(text):
    """A number, or comma-separated numbers (per-unit second layers)."""
    parts = text.split(",")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        return text  # validation names the parameter
    return vals[0] if len(vals) == 1 else vals


def _metavar(name, default):
    if name in config.CHOICES:
        return "{" + ",".join(config.CHOICES[name]()) + "}"
    if isinstance(default, bool):
        return "{true,false}"
    return None


def _shown(default):
    return str(default).lower() if isinstance(default, bool) else default


def _add_simulate(sub):
    p = sub.add_parser(
        "simulate",
        help="run one configuration (several seeds) and write an HDF5 file",
        description="Run one configuration of teacher-student runs with one method and write "
        "the learning curves and order parameters to an HDF5 file (layout: "
        "docs/file-format.md). Parameters come from --config FILE.toml, then flags override. "
        "The student's activation is --activation, the teacher's --teacher-activation (by "
        "default the student's); the file records both.",
        formatter_class=_Help,
    )
    p.add_argument(
        "--config", type=Path, help="TOML file of parameters (keys as the flags, with underscores)"
    )
    p.add_argument("--out", type=Path, default=Path("fastquad-run.h5"), help="results file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="Numba threads (default: all cores); results do not depend on it",
    )
    p.add_argument("--save-weights", action="store_true", help="store the final weights")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (shown on stderr once a run has taken 5 s)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="run even when the runs are estimated to take more than a day",
    )
    for name, (default, _, help_) in config.PARAMETERS.items():
        flag = "--" + name.replace("_", "-")
        p.add_argument(
            flag,
            dest=name,
            type=_flag_type(default),
            default=None,
            metavar=_metavar(name, default),
            help=f"{help_} (default: {_shown(default)})",
        )
    p.set_defaults(func=_simulate)


def _simulate(args):
    from . import store

    values = {}
    if args.config is not None:
        values.update(_read_config(args.config))
    for name in config.PARAMETERS:
        val = getattr(args, name)
        if val is not None:
            values[name] = val
    cfg = config.make_config(values)
    from .files import check_output

    # every check that can fail comes before the computation, not after it
    check_output(args.out, overwrite=args.overwrite)
    _check_threads(args.threads)
    t0 = time.perf_counter()
    try:
        res = config.run(
            cfg, num_threads=args.threads, force=args.force, progress=not args.no_progress
        )
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; nothing was written"
            f"{' (' + str(args.out) + ' is unchanged)' if args.out.exists() else ''}"
        ) from None
    elapsed = time.perf_counter() - t0
    # the activations the configuration asked for, resolved: what the file must say whatever
    # the result's own attributes hold
    acts = store.activation_attrs(cfg.activation, cfg.teacher_activation)
    store.save(
        args.out,
        res,
        attrs={"config": cfg.to_toml(), **acts},
        weights=args.save_weights,
        overwrite=args.overwrite,
    )
    print(res.summary())
    print(f"activations: {store.activation_phrase(*acts.values())}")
    print(f"wrote {args.out} in {elapsed:.2f} s")
    return 0


class Interrupted(Exception):
    """Ctrl-C: the one line to print (exit code 130)."""


def _read_config(path):
    """The parameters of a ``--config`` TOML file."""
    if not path.is_file():
        raise InputError(f"--config: no such file {path}")
    return config.load_toml(path)


def _check_threads(threads):
    from .threads import thread_count

    if threads is not None:
        thread_count(threads, name="--threads")


def _add_sweep(sub):
    p = sub.add_parser(
        "sweep",
        help="run a parameter grid on Dask into one crash-safe HDF5 file",
        description="Run every run of a sweep file (fixed parameters plus axes: docs/sweeps.md) "
        "on an embedded Dask LocalCluster (default) or an existing cluster, storing "
        "results in one HDF5 file as they complete. Running the same command again "
        "resumes: every run is computed and stored exactly once. The file holds "
        "the learning curves; the sweep file's [sweep] order_parameters = true and "
        "final_weights = true store the order parameters over time and the final "
        "weights too.",
    )
    p.add_argument("sweep_file", type=Path, metavar="SWEEP.toml", help="the sweep file")
    p.add_argument("--out", type=Path, required=True, help="results file (HDF5)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes of the embedded cluster (default: one per core)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="address of an existing Dask scheduler (tcp://host:port)",
    )
    p.add_argument(
        "--scheduler-file",
        default=None,
        type=Path,
        help="scheduler file of an existing Dask cluster (e.g. from runners/jobqueue.py)",
    )
    p.add_argument(
        "--chunk-runs",
        type=int,
        default=None,
        help="runs per Dask task (default: sized to a few seconds of work)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an --out file made by a different sweep"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--force",
        action="store_true",
        help="run even when the sweep is estimated to take more than a day",
    )
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up (exit 1, the file resumable) when no run finishes for this long "
        "(default: wait as long as it takes)",
    )
    p.set_defaults(func=_sweep)


def _sweep(args):
    from .budget import check_sweep
    from .files import check_output
    from .sweep import load_sweep, run_sweep
    from .sweep.run import SweepStalled

    sweep = load_sweep(args.sweep_file)
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be an integer >= 1, got {args.workers}")
    if args.chunk_runs is not None and args.chunk_runs < 1:
        raise InputError(f"--chunk-runs must be an integer >= 1, got {args.chunk_runs}")
    if args.stall_timeout is not None and not (0 < args.stall_timeout < math.inf):
        raise InputError(
            f"--stall-timeout must be a number of seconds > 0, got {args.stall_timeout}"
        )
    if args.scheduler and args.scheduler_file:
        raise InputError("--scheduler and --scheduler-file: give one, not both")
    if args.scheduler_file is not None and not args.scheduler_file.is_file():
        raise InputError(f"--scheduler-file: no such file {args.scheduler_file}")
    check_output(args.out, overwrite=True)  # an existing file is resumed, or refused later
    external = args.scheduler or args.scheduler_file
    check_sweep(
        sweep.points,
        sweep.n_runs,
        len(sweep.times),
        None if external else (args.workers or os.cpu_count() or 1),
        force=args.force,
    )
    print(
        f"sweep {args.sweep_file}: {sweep.total_runs} runs "
        f"({len(sweep.points)} points x {sweep.n_runs} replicas) -> {args.out}"
    )
    try:
        summary = run_sweep(
            sweep,
            args.out,
            workers=args.workers,
            scheduler=args.scheduler,
            scheduler_file=args.scheduler_file and str(args.scheduler_file),
            overwrite=args.overwrite,
            chunk_runs=args.chunk_runs,
            progress=not args.no_progress,
            stall_timeout=args.stall_timeout,
        )
    except SweepStalled as exc:
        print(f"fastquad: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        raise Interrupted(
            str(exc)
            or f"interrupted; the runs finished so far are stored in "
            f"{args.out}, and the same command resumes the sweep"
        ) from None
    print(summary.text())
    return 0 if summary.ok else 1


def _add_warm_up(sub):
    from . import methods

    p = sub.add_parser(
        "warm-up",
        help="compile ahead the kernels a job will need",
        description="Compile (or load from Numba's on-disk cache) every kernel a job will "
        "call, by a tiny run of each: the methods named (their default options), a "
        "configuration, or every point of a sweep file. Later runs, on this machine or any "
        "node that shares the cache folder, then start at once. The cache folder is "
        "NUMBA_CACHE_DIR when set (printed at the end); a node with another kind of CPU "
        "compiles its own entries there once.",
    )
    p.add_argument(
        "--method",
        nargs="+",
        choices=methods.names(),
        default=None,
        help="methods to warm up with their default options (default: all, unless --config "
        "or --sweep)",
    )
    p.add_argument("--config", type=Path, default=None, help="a configuration (TOML) file")
    p.add_argument("--sweep", type=Path, default=None, help="a sweep file: each of its points")
    p.add_argument("--threads", type=int, default=None, help="Numba threads of the warm-up runs")
    p.set_defaults(func=_warm_up)


def _warm_up(args):
    from .warmup import cache_location, describe, warm_up

    _check_threads(args.threads)
    what = list(args.method or [])
    if args.config is not None:
        what.append(config.make_config(_read_config(args.config)))
    if args.sweep is not None:
        from .sweep import load_sweep

        what.extend(load_sweep(args.sweep).points)
    start = time.perf_counter()

    def report(cfg, seconds):
        print(f"{describe(cfg):50s} {seconds:6.1f} s", flush=True)

    warm_up(what or None, num_threads=args.threads, report=report)
    print(f"ready in {time.perf_counter() - start:.1f} s; compiled kernels in {cache_location()}")
    return 0


def _add_info(sub):
    p = sub.add_parser(
        "info",
        help="what is in a results file",
        description="Axes, counts by status and provenance of a results file.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.set_defaults(func=lambda args: print(_info(args.file)) or 0)


def _info(path):
    from .sweep import info

    return info(path)


def _add_plot(sub):
    from .plots import KINDS, QUANTITIES

    p = sub.add_parser(
        "plot",
        help="figures from a results file (PNG and PDF)",
        description="Draw figures from a results file: curves (mean and 10-90%% band over "
        "replicas per grid point, with the ODE theory from the same starts), order "
        "(order parameters of one run), stages (plateaus and drops of one run), "
        "phase (heat map over two sweep axes), fixed-points (fixed points of the "
        "order-parameter flow on the loss, over a learning curve; quadratic networks "
        "only). Every figure names the activations of its runs.",
    )
    p.add_argument("file", type=Path, metavar="RESULTS.h5")
    p.add_argument(
        "--kind",
        action="append",
        choices=KINDS + ("all",),
        help="figure kind (repeatable; default: curves)",
    )
    p.add_argument("--out", type=Path, default=Path("figures"), help="output folder")
    p.add_argument("--run", type=int, default=0, help="run index for order/stages/fixed-points")
    p.add_argument("--x", default=None, help="phase: sweep axis on the x axis")
    p.add_argument("--y", default=None, help="phase: sweep axis on the y axis")
    p.add_argument(
        "--quantity", default="final_eps", choices=QUANTITIES, help="phase: what to show"
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=1e-3,
        help="phase: learnt means eps_g <= threshold x initial eps_g",
    )
    p.add_argument("--no-theory", action="store_true", help="curves: no ODE theory")
    p.set_defaults(func=_plot)


def _plot(args):
    from . import plots
    from .result import STATUS_DONE, STATUS_NAMES
    from .store import load

    if not args.file.is_file():
        raise InputError(f"RESULTS.h5: no such file {args.file}")
    if not (math.isfinite(args.threshold) and args.threshold > 0):
        raise InputError(f"--threshold must be a finite number > 0, got {args.threshold}")
    ds = load(args.file)  # a file that is not a complete fastquad file: InputError, one line
    kinds = args.kind or ["curves"]
    status = int(ds.status.values[args.run]) if 0 <= args.run < ds.sizes["run"] else 0
    if "all" in kinds:
        kinds = [
            k
            for k in plots.KINDS
            if not (k == "phase" and len(plots.sweep_axes(ds)) < 2)
            and not (k == "order" and "Q" not in ds)
        ]  # kinds that apply to this file
    if not 0 <= args.run < ds.sizes["run"]:
        raise InputError(f"--run must be in [0, {ds.sizes['run'] - 1}], got {args.run}")
    written = []
    stem = args.file.stem
    for kind in kinds:
        if kind == "curves":
            fig = plots.plot_learning_curves(ds, theory=not args.no_theory)
        elif kind == "order":
            fig = plots.plot_order_parameters(ds, run=args.run)
        elif kind == "stages":
            if status != STATUS_DONE:
                why = (
                    f"--run {args.run}: run {args.run} is {STATUS_NAMES.get(status, status)}, "
                    "and stages are found on a finished learning curve"
                )
                if "all" in (args.kind or []):
                    print(f"skipped stages: {why}", file=sys.stderr)
                    continue
                raise InputError(why)
            fig = plots.plot_stages(ds, run=args.run)
        elif kind == "phase":
            axes = plots.sweep_axes(ds)
            x = args.x or (axes[0] if axes else None)
            y = args.y or (axes[1] if len(axes) > 1 else None)
            if x is None or y is None:
                raise InputError(
                    f"--x/--y: phase needs two sweep axes; the file has {axes or 'none'}"
                )
            fig = plots.plot_phase_diagram(ds, x, y, args.quantity, args.threshold)
        else:
            s, t = (a[args.run] for a in plots.activations(ds))
            fig = plots.plot_fixed_points(
                _fixed_points_of(ds, args.run, s, t),
                ds,
                runs=(args.run,),
                activation=s,
                teacher_activation=t,
            )
        written += plots.save(fig, args.out, f"{stem}-{kind}")
    for path in written:
        print(f"wrote {path}")
    return 0


def _fixed_points_of(ds, run, activation, teacher_activation):
    from .analysis import find_fixed_points

    K = int(ds.K.values[run]) if "K" in ds.coords else ds.sizes["student"]
    M = int(ds.M.values[run]) if "M" in ds.coords else ds.sizes["teacher"]
    lr = float(ds.lr.values[run]) if "lr" in ds.coords else float(ds.attrs.get("lr", 1.0))
    return find_fixed_points(
        K,
        M,
        ds.T.values[run, :M, :M],
        ds.v_teacher.values[run, :M],
        lr,
        train_second_layer=bool(ds.attrs.get("train_second_layer", True)),
        n_starts=60,
        activation=activation,
        teacher_activation=teacher_activation,
    )


def build_parser():
    parser = _Parser(
        prog="fastquad",
        description="Learning dynamics of two-layer networks (quadratic, linear, ReLU or erf "
        "activations): simulations, theory and sweeps.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"fastquad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_simulate(sub)
    _add_sweep(sub)
    _add_warm_up(sub)
    _add_info(sub)
    _add_plot(sub)
    _add_fixed_points(sub)
    return parser


# ------------------------------------------------------------------ fixed-points
# argparse takes an argument starting with "-" for an option unless it looks like one negative
# number, so "--teacher-v -1,2" would fail with "expected one argument". The subcommand has no
# option that starts with a digit, so anything starting "-<digit>" or "-.<digit>" is a value
# here (and a malformed list then gets the flag's own message, not argparse's).
_NEGATIVE_LIST = re.compile(r"^-\.?\d")


def _add_fixed_points(subparsers):
    """Add the ``fixed-points`` subcommand to an argparse subparsers object.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``parser.add_subparsers()``.

    Returns
    -------
    argparse.ArgumentParser
        The subcommand's parser; its default ``func`` runs it and returns the exit code.
    """
    p = subparsers.add_parser(
        "fixed-points",
        help="find and classify the fixed points of the order-parameter ODE",
        description="Find the fixed points of the order-parameter flow of a K-unit student "
        "learning an M-unit teacher (quadratic unless --activation / --teacher-activation say "
        "otherwise; orthonormal teacher, T = I) from many "
        "random starts, deduplicated up to the symmetries and classified by the eigenvalues "
        "of the Jacobian; print them as a table.",
        epilog="Lists may start with a negative number: --teacher-v -1,2 and --teacher-v=-1,2 "
        "are the same. The table does not depend on the order of the teacher units "
        "(up to the order of R's columns, which follow --teacher-v); every point listed "
        "is verified (max|rhs|/lr <= 1e-10 max(1, max|x|)^3 at the state shown), and "
        "the number of candidates dropped by that check is printed under the table.",
        formatter_class=_Help,
    )
    # (a private attribute of ArgumentParser, present since Python 3.2; if it ever goes,
    # --teacher-v=-1,2 still works)
    p._negative_number_matcher = _NEGATIVE_LIST
    # every value is parsed here, not by argparse, so an error names its flag in one line
    p.add_argument("--K", default="2", help="student units")
    p.add_argument(
        "--M", default=None, help="teacher units (default: the number of --teacher-v values)"
    )
    p.add_argument(
        "--teacher-v",
        default="1",
        help="teacher second layer: one value for every unit or M comma-separated; "
        "negative values as --teacher-v -1,2 or --teacher-v=-1,2",
    )
    p.add_argument("--lr", default="1.0", help="learning rate (scales the eigenvalues)")
    p.add_argument(
        "--freeze-second-layer",
        action="store_true",
        help="keep the student's second layer fixed at --student-v",
    )
    p.add_argument(
        "--student-v",
        default="1",
        help="frozen student second layer: one value or K comma-separated "
        "(negative values as for --teacher-v)",
    )
    p.add_argument(
        "--sgd-noise",
        action="store_true",
        help="include the lr^2 online-SGD term (fixed points then depend on lr)",
    )
    p.add_argument("--n-starts", default="200", help="random starts")
    p.add_argument("--seed", default="0", help="seed of the starts")
    p.add_argument(
        "--activation",
        default="quadratic",
        help="student activation: quadratic, linear, relu or erf",
    )
    p.add_argument(
        "--teacher-activation",
        default="same",
        help="teacher activation: same (the student's), quadratic, linear, relu or erf",
    )
    p.set_defaults(func=run_fixed_points)
    return p


#: Largest K and M the finder takes: its cost grows like (K (K + M))^3 per start.
MAX_UNITS = 12
MAX_STARTS = 100_000


def _int(flag, text, low, high):
    try:
        val = int(text)
    except (TypeError, ValueError):
        raise InputError(f"{flag} must be an integer in [{low}, {high}], got {text!r}") from None
    if not low <= val <= high:
        raise InputError(f"{flag} must be an integer in [{low}, {high}], got {val}")
    return val


def _floats(flag, text):
    try:
        vals = np.array([float(x) for x in str(text).split(",")])
    except ValueError:
        raise InputError(
            f"{flag} must be a number or comma-separated numbers, got {text!r}"
        ) from None
    if not np.all(np.isfinite(vals)):
        raise InputError(f"{flag} must contain finite numbers, got {text!r}")
    return vals


def _per_unit(flag, vals, n, what):
    if vals.size == 1:
        return np.full(n, vals[0])
    if vals.size != n:
        raise InputError(f"{flag} must have 1 or {n} values ({what}), got {vals.size}")
    return vals


def fixed_points_from_args(args):
    """Parse the subcommand's arguments and find the fixed points.

    Returns
    -------
    FixedPointList
        A list of FixedPoint; ``n_dropped`` counts candidates that failed verification.
    """
    from .analysis.fixed_points import find_fixed_points

    K = _int("--K", args.K, 1, MAX_UNITS)
    tv = _floats("--teacher-v", args.teacher_v)
    M = tv.size if args.M is None else _int("--M", args.M, 1, MAX_UNITS)
    if M > MAX_UNITS:
        raise InputError(f"--teacher-v must have at most {MAX_UNITS} values, got {M}")
    tv = _per_unit("--teacher-v", tv, M, f"M={M} teacher units")
    lr_vals = _floats("--lr", args.lr)
    if lr_vals.size != 1 or lr_vals[0] <= 0:
        raise InputError(f"--lr must be one number > 0, got {args.lr!r}")
    n_starts = _int("--n-starts", args.n_starts, 1, MAX_STARTS)
    seed = _int("--seed", args.seed, 0, 2**63 - 1)
    v_student = None
    if args.freeze_second_layer:
        v_student = _per_unit(
            "--student-v", _floats("--student-v", args.student_v), K, f"K={K} student units"
        )
    return find_fixed_points(
        K,
        M,
        np.eye(M),
        tv,
        float(lr_vals[0]),
        train_second_layer=not args.freeze_second_layer,
        sgd_noise=bool(args.sgd_noise),
        n_starts=n_starts,
        seed=seed,
        v_student=v_student,
        activation=_activation_flag("--activation", args.activation),
        teacher_activation=_activation_flag("--teacher-activation", args.teacher_activation),
    )


def _activation_flag(flag, value):
    from .activations import ACTIVATIONS, SAME

    allowed = ACTIVATIONS if flag == "--activation" else (SAME, *ACTIVATIONS)
    if value not in allowed:
        raise InputError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def run_fixed_points(args):
    """Run the subcommand: print the table of fixed points; returns the exit code 0."""
    from .analysis.fixed_points import fixed_point_table

    points = fixed_points_from_args(args)
    K = args.K
    mode = "frozen" if args.freeze_second_layer else "trained"
    print(
        f"fixed points: {args.activation} student, {args.teacher_activation} teacher, "
        f"K={K}, teacher v*={args.teacher_v} (T = I), lr={args.lr}, "
        f"second layer {mode}; eigenvalues of the Jacobian in (Q[triu], R"
        f"{'' if args.freeze_second_layer else ', v'})"
    )
    print(fixed_point_table(points))
    print(
        f"{points.n_dropped} candidate point(s) failed verification (right-hand side not "
        f"zero at the state to be listed) and were dropped; {points.n_converged} of "
        f"{points.n_starts} starts converged"
    )
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        # only what the user can fix: any other exception is a bug and shows as one
        msg = str(exc).replace("\n", " ")
        print(f"fastquad: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FileExistsError as exc:
        print(f"fastquad: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StorageError as exc:
        print(f"fastquad: error: {exc}".replace("\n", " "), file=sys.stderr)
        return EXIT_STORAGE
    except (Interrupted, KeyboardInterrupt) as exc:
        print(f"fastquad: {exc or 'interrupted'}".replace("\n", " "), file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
