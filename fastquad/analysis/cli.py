"""The ``fastquad fixed-points`` subcommand (registered by :mod:`fastquad.cli`).

Bad input raises ValueError naming the flag; the main command prints it as one line and exits
with code 2.
"""

import argparse
import re

import numpy as np

from ..errors import InputError

# argparse takes an argument starting with "-" for an option unless it looks like one negative
# number, so "--teacher-v -1,2" would fail with "expected one argument". The subcommand has no
# option that starts with a digit, so anything starting "-<digit>" or "-.<digit>" is a value
# here (and a malformed list then gets the flag's own message, not argparse's).
_NEGATIVE_LIST = re.compile(r"^-\.?\d")


def add_fixed_points_parser(subparsers):
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
        "learning an M-unit teacher (orthonormal teacher, T = I) from many random "
        "starts, deduplicated up to the symmetries and classified by the eigenvalues "
        "of the Jacobian; print them as a table.",
        epilog="Lists may start with a negative number: --teacher-v -1,2 and --teacher-v=-1,2 "
        "are the same. The table does not depend on the order of the teacher units "
        "(up to the order of R's columns, which follow --teacher-v); every point listed "
        "is verified (max|rhs|/lr <= 1e-10 max(1, max|x|)^3 at the state shown), and "
        "the number of candidates dropped by that check is printed under the table.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    from .fixed_points import find_fixed_points

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
    )


def run_fixed_points(args):
    """Run the subcommand: print the table of fixed points; returns the exit code 0."""
    from .fixed_points import fixed_point_table

    points = fixed_points_from_args(args)
    K = args.K
    mode = "frozen" if args.freeze_second_layer else "trained"
    print(
        f"fixed points: K={K}, teacher v*={args.teacher_v} (T = I), lr={args.lr}, "
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
