"""Input checks shared by every public function.

Each check names the parameter and the allowed range, and runs before any kernel does, so a
user never sees a NaN or a traceback from inside Numba. ``Problems`` collects several problems
and raises them together (a sweep reports everything wrong at once).
"""

import numbers

import numpy as np

from .errors import InputError

#: Largest count any size parameter may take (exact in float64); memory limits come first.
MAX_COUNT = 2**53


class Problems:
    """Collects validation messages; ``raise_if_any`` raises one ValueError listing them all."""

    def __init__(self):
        self.messages = []

    def add(self, message):
        self.messages.append(message)

    def check(self, fn, *args, **kwargs):
        """Run a checker; record its ValueError instead of raising. Returns its value or None."""
        try:
            return fn(*args, **kwargs)
        except ValueError as exc:
            self.add(str(exc))
            return None

    def raise_if_any(self):
        if len(self.messages) == 1:
            raise InputError(self.messages[0])
        if self.messages:
            raise InputError(f"{len(self.messages)} problems:\n  - " + "\n  - ".join(self.messages))


def _fmt(x):
    return repr(x) if not isinstance(x, np.ndarray) else f"array of shape {x.shape}"


def real(name, value, *, low=None, high=None, low_open=False, high_open=False):
    """A finite real number in the given range; returns it as float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a real number, got {_fmt(value)}")
    x = float(value)
    lo_txt = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
    hi_txt = "" if high is None else (f"< {high:g}" if high_open else f"<= {high:g}")
    rng = " and ".join(s for s in (lo_txt, hi_txt) if s)
    bad = (
        not np.isfinite(x)
        or (low is not None and (x <= low if low_open else x < low))
        or (high is not None and (x >= high if high_open else x > high))
    )
    if bad:
        raise InputError(f"{name} must be a finite number{' ' + rng if rng else ''}, got {value!r}")
    return x


def integer(name, value, *, low=None, high=None):
    """An integer in [low, high]; returns it as int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise InputError(f"{name} must be an integer, got {_fmt(value)}")
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        lo = "-inf" if low is None else _count(low)
        hi = "inf" if high is None else _count(high)
        raise InputError(f"{name} must be an integer in [{lo}, {hi}], got {_count(v)}")
    return v


def _count(v):
    """An integer for a message: powers of two by their exponent, huge ones in short."""
    for base in (63, 53):
        if v in (2**base, 2**base - 1):
            return f"2^{base}" + ("-1" if v % 2 else "")
    return str(v) if abs(v) < 10**15 else f"{float(v):.4g}"


def boolean(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be true or false, got {_fmt(value)}")
    return bool(value)


def finite_array(name, value, *, ndim=None, shape=None):
    """A finite float64 C-contiguous array with the given number of dimensions / shape.

    ``ndim`` may be a tuple of allowed values; ``shape`` entries of None match anything.
    """
    if np.iscomplexobj(value):  # a cast would drop the imaginary parts without a word
        raise InputError(f"{name} must be an array of real numbers, got complex numbers")
    try:
        arr = np.ascontiguousarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be an array of real numbers, got {_fmt(value)}") from None
    if ndim is not None:
        allowed = ndim if isinstance(ndim, tuple) else (ndim,)
        if arr.ndim not in allowed:
            txt = " or ".join(str(a) for a in allowed)
            raise InputError(f"{name} must have {txt} dimensions, got shape {arr.shape}")
    if shape is not None:
        if len(shape) != arr.ndim or any(
            s is not None and s != a for s, a in zip(shape, arr.shape)
        ):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise InputError(f"{name} must have shape {want}, got {arr.shape}")
    if arr.size and not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must contain only finite numbers (found NaN or inf)")
    return arr


def with_run_axis(name, arr, base_ndim, n_runs=None):
    """Give arr a leading run axis if it has none; check its length against n_runs."""
    if arr.ndim == base_ndim:
        arr = arr[None]
    elif arr.ndim != base_ndim + 1:
        raise InputError(
            f"{name} must have {base_ndim} dimensions, or {base_ndim + 1} with a "
            f"leading run axis; got shape {arr.shape}"
        )
    if n_runs is not None and arr.shape[0] not in (1, n_runs):
        raise InputError(
            f"{name} has {arr.shape[0]} runs on its leading axis but the batch has {n_runs}"
        )
    return arr


def broadcast_runs(name, arr, n_runs):
    """Repeat a run-axis array of length 1 to n_runs (contiguous copy)."""
    if arr.shape[0] == n_runs:
        return np.ascontiguousarray(arr)
    # contiguous and writeable: a read-only broadcast view would give the kernels another
    # Numba type, and so one more compilation
    return np.require(np.broadcast_to(arr, (n_runs,) + arr.shape[1:]), requirements=["C", "W"])


def per_run(name, value, n_runs, **range_kw):
    """A scalar or a 1-D array of length n_runs of real numbers in range -> float64 (n_runs,)."""
    arr = np.asarray(value, dtype=object if np.ndim(value) == 0 else None)
    if np.ndim(value) == 0:
        x = real(name, value, **range_kw)
        return np.full(n_runs, x)
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.shape[0] not in (1, n_runs):
        raise InputError(
            f"{name} must be a number or a 1-D array of length {n_runs} (one per run), "
            f"got shape {arr.shape}"
        )
    if arr.dtype.kind in "iuf":  # the common case, checked at once; a failure is told per run
        out = arr.astype(np.float64)
        if not _in_range(out, **range_kw).all():
            bad = int(np.flatnonzero(~_in_range(out, **range_kw))[0])
            real(f"{name}[{bad}]", float(out[bad]), **range_kw)
    else:
        out = np.array(
            [
                real(f"{name}[{i}]", float(x) if np.isreal(x) else x, **range_kw)
                for i, x in enumerate(arr)
            ]
        )
    return np.require(np.broadcast_to(out, (n_runs,)), requirements=["C", "W"])


def _in_range(x, *, low=None, high=None, low_open=False, high_open=False):
    """Elementwise: finite and within the range (the test of :func:`real`, on arrays)."""
    ok = np.isfinite(x)
    if low is not None:
        ok &= (x > low) if low_open else (x >= low)
    if high is not None:
        ok &= (x < high) if high_open else (x <= high)
    return ok


def times_grid(name, times, t_max):
    """Recording times: increasing, finite, within [0, t_max]; returns float64 (n,)."""
    arr = finite_array(name, times, ndim=1)
    if arr.size == 0:
        raise InputError(f"{name} must contain at least one time")
    if np.any(np.diff(arr) <= 0):
        raise InputError(f"{name} must be strictly increasing")
    if arr[0] < 0 or arr[-1] > t_max * (1 + 1e-12):
        raise InputError(f"{name} must lie in [0, t_max={t_max:g}], got [{arr[0]:g}, {arr[-1]:g}]")
    return arr
