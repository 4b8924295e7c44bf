"""Stages of a learning curve: plateaus and the drops between them.

Curves of quadratic networks learnt from a small initialisation alternate between plateaus
(near saddles of the order-parameter flow) and fast drops, on every time scale; recordings are
log-spaced and, for SGD, noisy. Everything here works in ``y = ln eps_g`` against ``ln t``:

- a plateau is a maximal stretch whose (median-filtered) ``y`` stays within a band of
  half-width ``b`` (``band``, widened to three standard errors of the filtered noise), whose
  fitted slope ``d ln eps / d ln t`` is below ``flat`` (plus three standard errors), and which
  lasts at least ``min_duration`` times its onset time: a stretch of fixed length in t counts
  less the later it comes, like everything on a log axis. Maximal under all three tests:
  from each start, the longest stretch that passes them all (the longest one inside the band
  may end on the tail of the next drop, whose steep records alone tilt the fitted line);
- consecutive plateaus whose levels differ by less than ``min_drop`` (in ln eps) are one;
- a drop is what lies between two plateaus (or before the first / after the last one) and
  falls by at least ``min_drop`` in ln eps.

The median filter, with a window fixed in ln t, keeps the steps sharp while it removes noise,
and a window in ln t rather than in samples respects any spacing of the record.
"""

from dataclasses import dataclass

import numpy as np

from .. import _validate as V

# Rows of the (start x extent) matrix processed at once by _max_extent (memory ~ rows * n).
_ROWS = 256
# Largest running-median window (records) chosen automatically for a noisy curve.
_MAX_WINDOW = 9


@dataclass(frozen=True, eq=False)
class Stages:
    """Plateaus and drops of one learning curve, in time order.

    Attributes
    ----------
    levels : ndarray, shape (n_plateaus,)
        eps_g on each plateau (median of the recorded values on it).
    onsets, escapes : ndarray, shape (n_plateaus,)
        First and last recorded time on each plateau (within the band of its level); ``onset``
        is 0 for a plateau the curve starts on; ``escape`` is NaN for a plateau the curve has
        not left by its last record.
    durations : ndarray, shape (n_plateaus,)
        ``escape - onset`` (to the last record when not escaped: a lower bound).
    drop_starts, drop_ends : ndarray, shape (n_drops,)
        Time a drop leaves the previous plateau (or the first record) and reaches the next
        plateau (or the level the curve settles at).
    drop_depths : ndarray, shape (n_drops,)
        ``ln(eps before / eps after)`` of each drop (natural log).
    converged : bool
        The curve ended at the floor (``floor`` times its largest value): learnt to round-off.
    final_eps : float
        Last finite recorded eps_g.
    band : float
        Half-width of the band used, in ln eps (after widening for noise).
    noise : float
        Estimated standard deviation of the recorded ln eps about a smooth curve.
    """

    levels: np.ndarray
    onsets: np.ndarray
    escapes: np.ndarray
    durations: np.ndarray
    drop_starts: np.ndarray
    drop_ends: np.ndarray
    drop_depths: np.ndarray
    converged: bool
    final_eps: float
    band: float
    noise: float

    @property
    def n_plateaus(self):
        return int(self.levels.shape[0])

    @property
    def n_drops(self):
        return int(self.drop_depths.shape[0])

    @property
    def count(self):
        """Number of stages (plateaus and drops)."""
        return self.n_plateaus + self.n_drops

    def events(self):
        """Plateaus and drops as one time-ordered list of dicts with a ``"stage"`` key."""
        ev = [dict(stage="plateau", level=float(l), onset=float(o), escape=float(e),
                   duration=float(d))
              for l, o, e, d in zip(self.levels, self.onsets, self.escapes, self.durations)]
        ev += [dict(stage="drop", start=float(s), end=float(e), depth=float(d))
               for s, e, d in zip(self.drop_starts, self.drop_ends, self.drop_depths)]
        return sorted(ev, key=lambda e: (e.get("onset", e.get("start")), e["stage"] == "plateau"))

    def table(self):
        """The stages as an aligned text table."""
        lines = [f"{'stage':8} {'from':>11} {'to':>11} {'eps_g / depth':>14}"]
        for e in self.events():
            if e["stage"] == "plateau":
                lines.append(f"{'plateau':8} {e['onset']:11.4g} {e['escape']:11.4g} "
                             f"{e['level']:14.6g}")
            else:
                lines.append(f"{'drop':8} {e['start']:11.4g} {e['end']:11.4g} "
                             f"{'x' + format(np.exp(e['depth']), '.4g'):>14}")
        tail = "converged (to the floor)" if self.converged else f"final eps_g {self.final_eps:.6g}"
        return "\n".join(lines + [tail])


def _noise(y):
    """Robust standard deviation of y about a smooth curve, from second differences."""
    if y.size < 5:
        return 0.0
    d2 = y[2:] - 2 * y[1:-1] + y[:-2]
    return float(1.4826 * np.median(np.abs(d2 - np.median(d2))) / np.sqrt(6.0))


def _median_filter(x, y, half_width):
    """Running median of y over the window |x_k - x_i| <= half_width (any spacing of x)."""
    if half_width <= 0:
        return y.copy()
    lo = np.searchsorted(x, x - half_width, side="left")
    hi = np.searchsorted(x, x + half_width, side="right")
    return np.array([np.median(y[a:b]) for a, b in zip(lo, hi)])


def _max_extent(y, width):
    """For each i, the largest j with max(y[i..j]) - min(y[i..j]) <= width (NaN breaks)."""
    n = y.size
    ext = np.empty(n, dtype=np.int64)
    k = np.arange(n)
    for start in range(0, n, _ROWS):
        rows = np.arange(start, min(n, start + _ROWS))
        idx = rows[:, None] + k[None, :]
        Y = np.where(idx < n, y[np.minimum(idx, n - 1)], np.nan)
        with np.errstate(invalid="ignore"):
            ok = np.maximum.accumulate(Y, axis=1) - np.minimum.accumulate(Y, axis=1) <= width
        ok = np.logical_and.accumulate(ok, axis=1)
        ext[rows] = rows + ok.sum(axis=1) - 1
    return ext


def _slopes(x, y):
    """Least-squares slopes of y on x over x[:m], for every m = 1..len(x) (x increasing), and
    their standard errors for unit noise (slope 0 and error inf for the single point m = 1)."""
    sums = np.empty((4, x.size))
    xc = np.subtract(x, x[0], out=sums[0])   # shifted: no cancellation in the running sums
    yc = np.subtract(y, y[0], out=sums[1])
    np.multiply(xc, xc, out=sums[2])
    np.multiply(xc, yc, out=sums[3])
    sx, sy, sxx, sxy = np.cumsum(sums, axis=1, out=sums)
    m = np.arange(1.0, x.size + 1.0)
    vxx = np.maximum(sxx - sx * sx / m, np.finfo(float).tiny)
    slope = (sxy - sx * sy / m) / vxx
    se = 1.0 / np.sqrt(vxx)
    slope[0], se[0] = 0.0, np.inf
    return slope, se


def _check(t, eps_g, two_d):
    t = V.finite_array("t", t, ndim=1)
    if t.size < 2:
        raise ValueError(f"t must have at least 2 times, got {t.size}")
    if np.any(np.diff(t) <= 0) or t[0] < 0:
        raise ValueError("t must be non-negative and strictly increasing")
    try:
        eps = np.asarray(eps_g, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("eps_g must be an array of real numbers") from None
    want = 2 if two_d else 1
    if eps.ndim != want or eps.shape[-1] != t.size:
        shape = "(n_runs, n_times)" if two_d else "(n_times,)"
        raise ValueError(f"eps_g must have shape {shape} with n_times={t.size} (as t), "
                         f"got {eps.shape}")
    return t, eps


def _options(band, flat, min_duration, min_drop, floor, smooth, min_points):
    p = V.Problems()
    out = dict(
        band=p.check(V.real, "band", band, low=0.0, low_open=True),
        flat=p.check(V.real, "flat", flat, low=0.0, low_open=True),
        min_duration=p.check(V.real, "min_duration", min_duration, low=0.0),
        min_drop=p.check(V.real, "min_drop", min_drop, low=0.0, low_open=True),
        floor=p.check(V.real, "floor", floor, low=0.0, high=1.0, low_open=True,
                      high_open=True),
        smooth=None if smooth is None else p.check(V.real, "smooth", smooth, low=0.0),
        min_points=p.check(V.integer, "min_points", min_points, low=2),
    )
    p.raise_if_any()
    return out


def detect_stages(t, eps_g, *, band=0.03, flat=0.1, min_duration=0.1, min_drop=0.15,
                  floor=1e-10, smooth=None, min_points=3):
    """Plateaus and drops of one learning curve.

    Parameters
    ----------
    t : array, shape (n_times,)
        Recording times, non-negative and increasing (any spacing; t = 0 is allowed and only
        tells whether the curve starts on its first plateau).
    eps_g : array, shape (n_times,)
        The curve. Values at or below ``floor * max(eps_g)`` (including round-off zeros and
        negatives) are the floor; the record stops at its first NaN or inf (a divergence).
    band : float, > 0
        Half-width, in ln eps, of the band a plateau stays in (0.03: 3%); widened to three
        standard errors of the filtered noise when the curve is noisy.
    flat : float, > 0
        Largest |d ln eps / d ln t| of a plateau's fitted line (widened by three standard
        errors of the fit).
    min_duration : float, >= 0
        A plateau lasts at least ``min_duration * onset`` (escape >= (1 + min_duration) onset).
    min_drop : float, > 0
        Smallest fall in ln eps that separates two plateaus, or counts as a drop (at least the
        band's full width).
    floor : float, in (0, 1)
        Relative level counted as "learnt to round-off" (never a plateau).
    smooth : float, >= 0, optional
        Half-width in ln t of the running median; default from the estimated noise (none for
        a clean curve).
    min_points : int, >= 2
        Fewest records on a plateau.

    Returns
    -------
    Stages
    """
    t, eps = _check(t, eps_g, two_d=False)
    opts = _options(band, flat, min_duration, min_drop, floor, smooth, min_points)
    return _detect(t, eps, **opts)


def _detect(t, eps, *, band, flat, min_duration, min_drop, floor, smooth, min_points):
    empty = np.empty(0)
    bad = ~np.isfinite(eps)
    n_ok = int(np.argmax(bad)) if bad.any() else eps.size
    t, eps = t[:n_ok], eps[:n_ok]
    starts_at_zero = t.size > 0 and t[0] == 0.0
    pos = t > 0
    if np.count_nonzero(pos) < 2 or not np.any(eps > 0):
        final = float(eps[-1]) if eps.size else np.nan
        return Stages(empty, empty, empty, empty, empty, empty, empty, False, final, band, 0.0)
    eps_floor = floor * float(np.max(eps))
    x = np.log(t[pos])
    y = np.log(np.maximum(eps[pos], eps_floor))
    at_floor = eps[pos] <= eps_floor * (1 + 1e-9)
    y0 = float(np.log(max(eps[0], eps_floor))) if starts_at_zero else None

    live = y[~at_floor]
    sigma = _noise(live)
    dx = float(np.median(np.diff(x)))
    if smooth is None:
        # enough points in the window that 3 standard errors of its median fit in the band
        # (up to _MAX_WINDOW: wider windows would hide short plateaus; the band widens instead)
        need = (3.0 * 1.2533 * sigma / band) ** 2
        half = 0.0 if need <= 1.0 else 0.5 * (min(need, _MAX_WINDOW) - 1) * dx
    else:
        half = smooth
    ys = _median_filter(x, y, half)
    n_win = 2 * half / dx + 1 if half > 0 else 1.0
    b = max(band, 3.0 * 1.2533 * sigma / np.sqrt(n_win))
    drop_min = max(min_drop, 2 * b)
    # nothing shorter than the filter's window can be told from noise
    min_points = max(min_points, int(np.ceil(n_win)))

    yb = np.where(at_floor, np.nan, ys)
    ext = _max_extent(yb, 2 * b)
    n = y.size
    spans = []
    i = 0
    while i < n:
        j = ext[i]
        if at_floor[i] or j - i + 1 < min_points:
            i += 1
            continue
        onset = 0.0 if (i == 0 and y0 is not None and abs(y0 - ys[0]) <= 2 * b) else np.exp(x[i])
        x_min = x[i] + np.log1p(min_duration) if onset > 0 else -np.inf   # earliest end
        if x[j] < x_min:
            i += 1
            continue
        # the longest stretch from i that passes every test, not just the longest in the band:
        # that one reaches up to 2b down the next drop, and those few steep records can tilt
        # the fitted line of a slowly drifting plateau past `flat`; rejecting it and moving
        # the start on only gives the tail more weight, until the rest is too short -- so a
        # clear plateau was lost or kept depending on where the grid fell on its edges
        s, se = _slopes(x[i:j + 1], y[i:j + 1])
        ends = np.arange(i, j + 1)
        tol = flat + 3 * sigma * se if sigma > 0 else flat
        ok = (ends - i + 1 >= min_points) & (np.abs(s) <= tol) & (x[i:j + 1] >= x_min)
        if not ok.any():
            i += 1
            continue
        j = int(ends[np.flatnonzero(ok)[-1]])
        spans.append([i, j, onset])
        i = j + 1

    # the level from the plateau's core: its ends may hold the tails of the drops (up to the
    # band's full width away) and the filter's reach
    trim = int(np.ceil(n_win / 2))

    def level(i, j):
        a, c = i + trim, (j if j == n - 1 else j - trim)
        if c - a + 1 < 3:
            a, c = i, j
        return float(np.median(y[a:c + 1]))

    # levels closer than a drop are one plateau broken by drift or noise
    merged = True
    while merged and len(spans) > 1:
        merged = False
        for k in range(len(spans) - 1):
            a, c = spans[k], spans[k + 1]
            la = level(a[0], a[1])
            lc = level(c[0], c[1])
            if la - lc < drop_min:
                spans[k] = [a[0], c[1], a[2]]
                del spans[k + 1]
                merged = True
                break

    # onset and escape: the first and last record within b of the level (a band centred on
    # it, not the band of the stretch found above, which hangs from wherever the drop's tail
    # entered it), along the run of records that stays within 2b -- so that the filtered
    # noise poking out of the narrow band does not end a plateau early
    near = ~at_floor
    levels, onsets, escapes = [], [], []
    for k, (i, j, onset) in enumerate(spans):
        lv = level(i, j)
        dev = np.abs(ys - lv)
        inner = near & (dev <= b)
        outer = near & (dev <= 2 * b)
        lo = spans[k - 1][1] + 1 if k else 0
        hi = spans[k + 1][0] - 1 if k + 1 < len(spans) else n - 1
        core = [m for m in range(i, j + 1) if inner[m]]
        if core:
            a, c = core[0], core[-1]
            while a - 1 >= lo and outer[a - 1]:
                a -= 1
            while c + 1 <= hi and outer[c + 1]:
                c += 1
            while not inner[a]:
                a += 1
            while not inner[c]:
                c -= 1
        else:
            a, c = i, j
        levels.append(float(np.exp(lv)))
        onsets.append(0.0 if (onset == 0.0 and a == 0) else float(np.exp(x[a])))
        escapes.append(np.nan if c == n - 1 else float(np.exp(x[c])))
        spans[k] = [a, c, onsets[-1]]
    levels, onsets, escapes = map(np.array, (levels, onsets, escapes))
    t_last = float(np.exp(x[-1]))
    durations = np.where(np.isnan(escapes), t_last, escapes) - onsets

    d_start, d_end, d_depth = [], [], []
    first_t = 0.0 if starts_at_zero else float(np.exp(x[0]))
    y_first = y0 if starts_at_zero else float(ys[0])
    if spans:
        if spans[0][2] > first_t and y_first - np.log(levels[0]) >= drop_min:
            d_start.append(first_t)
            d_end.append(onsets[0])
            d_depth.append(y_first - np.log(levels[0]))
        for k in range(len(spans) - 1):
            d_start.append(escapes[k])
            d_end.append(onsets[k + 1])
            d_depth.append(float(np.log(levels[k] / levels[k + 1])))
        y_from, i_from, t_from = np.log(levels[-1]), spans[-1][1] + 1, escapes[-1]
    else:
        y_from, i_from, t_from = y_first, 0, first_t
    if i_from < n:
        y_end = float(ys[-1])
        depth = y_from - y_end
        if depth >= drop_min:
            reach = i_from + int(np.argmax(ys[i_from:] <= y_end + b))
            d_start.append(t_from)
            d_end.append(float(np.exp(x[reach])))
            d_depth.append(depth)
    return Stages(levels=levels, onsets=onsets, escapes=escapes, durations=durations,
                  drop_starts=np.array(d_start), drop_ends=np.array(d_end),
                  drop_depths=np.array(d_depth), converged=bool(at_floor[-1]),
                  final_eps=float(eps[-1]), band=float(b), noise=sigma)


@dataclass(frozen=True, eq=False)
class StagesBatch:
    """Stages of many curves as fixed-size arrays (NaN-padded), e.g. to store with a sweep.

    Attributes
    ----------
    n_plateaus, n_drops : ndarray of int, shape (n_runs,)
        Counts found (they may exceed the padded size when it was capped).
    levels, onsets, escapes, durations : ndarray, shape (n_runs, max_plateaus)
    drop_starts, drop_ends, drop_depths : ndarray, shape (n_runs, max_drops)
    converged : ndarray of bool, shape (n_runs,)
    final_eps : ndarray, shape (n_runs,)
    """

    n_plateaus: np.ndarray
    n_drops: np.ndarray
    levels: np.ndarray
    onsets: np.ndarray
    escapes: np.ndarray
    durations: np.ndarray
    drop_starts: np.ndarray
    drop_ends: np.ndarray
    drop_depths: np.ndarray
    converged: np.ndarray
    final_eps: np.ndarray


def detect_stages_batch(t, eps_g, *, max_plateaus=None, max_drops=None, **options):
    """:func:`detect_stages` for every run, packed into NaN-padded arrays.

    Parameters
    ----------
    t : array, shape (n_times,)
    eps_g : array, shape (n_runs, n_times)
        E.g. ``Result.eps_g`` (NaN after a divergence ends a run's record).
    max_plateaus, max_drops : int, >= 1, optional
        Padded sizes; default the largest count found. Runs with more keep the first ones.
    **options
        As :func:`detect_stages`.

    Returns
    -------
    StagesBatch
    """
    t, eps = _check(t, eps_g, two_d=True)
    p = V.Problems()
    if max_plateaus is not None:
        max_plateaus = p.check(V.integer, "max_plateaus", max_plateaus, low=1)
    if max_drops is not None:
        max_drops = p.check(V.integer, "max_drops", max_drops, low=1)
    p.raise_if_any()
    defaults = dict(band=0.03, flat=0.1, min_duration=0.1, min_drop=0.15, floor=1e-10,
                    smooth=None, min_points=3)
    unknown = set(options) - set(defaults)
    if unknown:
        raise ValueError(f"unknown option(s) of detect_stages: {sorted(unknown)}")
    opts = _options(**{**defaults, **options})
    found = [_detect(t, e, **opts) for e in eps]
    n_runs = eps.shape[0]
    P = max_plateaus or max([s.n_plateaus for s in found] + [1])
    D = max_drops or max([s.n_drops for s in found] + [1])

    def pad(values, size):
        out = np.full((n_runs, size), np.nan)
        for r, v in enumerate(values):
            m = min(size, v.shape[0])
            out[r, :m] = v[:m]
        return out

    return StagesBatch(
        n_plateaus=np.array([s.n_plateaus for s in found], dtype=np.int64),
        n_drops=np.array([s.n_drops for s in found], dtype=np.int64),
        levels=pad([s.levels for s in found], P), onsets=pad([s.onsets for s in found], P),
        escapes=pad([s.escapes for s in found], P),
        durations=pad([s.durations for s in found], P),
        drop_starts=pad([s.drop_starts for s in found], D),
        drop_ends=pad([s.drop_ends for s in found], D),
        drop_depths=pad([s.drop_depths for s in found], D),
        converged=np.array([s.converged for s in found]),
        final_eps=np.array([s.final_eps for s in found]))


def plateau_levels(v_teacher, order=None):
    """The plateau sequence of MODEL.md for an orthonormal teacher (T = I).

    With one student unit per learnt teacher direction and L directions learnt,
    ``eps_g = s^2 / (2 + L) + q`` with ``s`` and ``q`` the sum of the unlearnt ``v*_n`` and of
    their squares (the learnt units each absorb ``-tr(D)/2`` of the unexplained trace).

    Parameters
    ----------
    v_teacher : array, shape (M,)
    order : array of int, shape (M,), optional
        The order in which directions are learnt; default by decreasing |v*_n| (from a small
        initialisation the largest is learnt first).

    Returns
    -------
    ndarray, shape (M + 1,)
        Levels for L = 0, 1, ..., M (the last is 0).
    """
    vt = V.finite_array("v_teacher", v_teacher, ndim=1)
    M = vt.shape[0]
    if M < 1:
        raise ValueError("v_teacher must have at least one entry")
    if order is None:
        order = np.argsort(-np.abs(vt), kind="stable")
    else:
        arr = np.asarray(order)
        if (arr.shape != (M,) or not np.issubdtype(arr.dtype, np.integer)
                or sorted(arr.tolist()) != list(range(M))):
            raise ValueError(f"order must be a permutation of 0..{M - 1}, got {order!r}")
        order = arr
    out = np.empty(M + 1)
    for L in range(M + 1):
        rest = vt[order[L:]]
        out[L] = rest.sum() ** 2 / (2 + L) + (rest ** 2).sum()
    out[M] = 0.0
    return out
