"""Stages of a learning curve: plateaus and the drops between them.

Curves of networks learnt from a small initialisation alternate between plateaus (near saddles
of the order-parameter flow) and fast drops, on every time scale; recordings are log-spaced or
linear and, for SGD, noisy. The detector reads the curve alone -- any method, any activation;
only :func:`plateau_levels`, the closed form of the levels, is for quadratic networks (the
levels of other activations are the eps_g of :func:`fastquad.analysis.find_fixed_points`).
Everything here works in ``y = ln eps_g`` against ``ln t``:

- a flat plateau is a maximal stretch whose (median-filtered) ``y`` stays within a band of
  half-width ``b`` (``band``, widened to three standard errors of the filtered noise there),
  whose fitted slope ``d ln eps / d ln t`` is below ``flat`` (plus three standard errors),
  and which lasts at least ``min_duration`` times its onset time. Maximal under all three
  tests: from each start, the longest stretch that passes them all (the longest one inside
  the band may end on the tail of the next drop, whose steep records alone tilt the fitted
  line);
- a tilted plateau (a ledge) is a stretch between two drops that falls along it, by at most
  a drop, but ``contrast`` times less steeply than the curve falls into it and out of it,
  and whose records stay within ``b`` of its fitted line. This is the plateau a person sees
  on a linear time axis. The flat test alone misses it late in a record: a plateau at
  t = 450 that lasts 100 spans only 0.2 in ln t, so a tilt of 7% over it (online SGD's noise
  term sags the plateaus of a small start) is a slope of 0.35 in ln t, past any fixed
  ``flat``, however level it looks next to drops a tenth as long. The ratio of slopes is the
  same in ln t and in t, so the rule does not depend on the axis;
- consecutive plateaus whose levels differ by less than ``min_drop`` (in ln eps) are one;
- a plateau starts and ends at the first and last record within ``b`` of its level, or of
  its line when it is tilted;
- a drop is what lies between two plateaus (or before the first / after the last one) and
  falls by at least ``min_drop`` in ln eps.

The noise is estimated near each record (the noise of online SGD grows along a curve from a
small start: none on the first plateau, most at a label-noise floor), from residuals that are
zero along any monotone stretch, so neither the drops nor a plateau's tilt count as noise.
The median filter, with a window fixed in ln t, keeps the steps sharp while it removes noise,
and a window in ln t rather than in samples respects any spacing of the record.
"""

from dataclasses import dataclass

import numpy as np

from .. import _validate
from ..activations import check_activation
from ..errors import InputError

# Rows of the (start x extent) matrix processed at once by _max_extent (memory ~ rows * n).
_ROWS = 256
# Largest running-median window (records) chosen automatically for a noisy curve.
_MAX_WINDOW = 9
# Fewest records on either side whose residuals give the noise near a record (_local_noise).
_NOISE_REACH = 15


@dataclass(frozen=True, eq=False)
class Stages:
    """Plateaus and drops of one learning curve, in time order.

    Attributes
    ----------
    levels : ndarray, shape (n_plateaus,)
        eps_g on each plateau (median of the recorded values on it).
    onsets, escapes : ndarray, shape (n_plateaus,)
        First and last recorded time on each plateau (within the band of its level, or of its
        fitted line when it is tilted); ``onset`` is 0 for a plateau the curve starts on;
        ``escape`` is NaN for a plateau the curve has not left by its last record.
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
        Half-width of the band used, in ln eps (after widening for noise): the widest of the
        plateaus' bands, or, with no plateau, the widest near any record.
    noise : float
        Estimated standard deviation of the recorded ln eps about a smooth curve: the
        largest of the plateaus' (each the median of the estimates near its records), or,
        with no plateau, the median over the record.
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
        ev = [
            dict(
                stage="plateau", level=float(l), onset=float(o), escape=float(e), duration=float(d)
            )
            for l, o, e, d in zip(self.levels, self.onsets, self.escapes, self.durations)
        ]
        ev += [
            dict(stage="drop", start=float(s), end=float(e), depth=float(d))
            for s, e, d in zip(self.drop_starts, self.drop_ends, self.drop_depths)
        ]
        return sorted(ev, key=lambda e: (e.get("onset", e.get("start")), e["stage"] == "plateau"))

    def table(self):
        """The stages as an aligned text table."""
        lines = [f"{'stage':8} {'from':>11} {'to':>11} {'eps_g / depth':>14}"]
        for e in self.events():
            if e["stage"] == "plateau":
                lines.append(
                    f"{'plateau':8} {e['onset']:11.4g} {e['escape']:11.4g} {e['level']:14.6g}"
                )
            else:
                lines.append(
                    f"{'drop':8} {e['start']:11.4g} {e['end']:11.4g} "
                    f"{'x' + format(np.exp(e['depth']), '.4g'):>14}"
                )
        tail = "converged (to the floor)" if self.converged else f"final eps_g {self.final_eps:.6g}"
        return "\n".join(lines + [tail])


def _local_noise(x, y, live, reach):
    """Standard deviation of the noise of y about a smooth curve, near each record.

    The noise of online SGD changes along a curve -- none on the first plateau of a small
    start, more on later ones, most at a label-noise floor -- and each plateau is judged
    against its own noise, not against the median of the whole record (which a long quiet
    first plateau sets to zero). The residual of a record about the median of a window
    centred on it (as many records on either side) is zero along any monotone stretch,
    however curved, so the drops and the tilt of a plateau do not count as noise; the window
    spans ``reach`` in x (at least one record on either side), so that on a dense record
    noise that wanders over many records counts, while anything slower than the shortest
    plateau does not. The residuals' root mean square is taken over ``reach`` (and at least
    ``_NOISE_REACH`` records) before a record and after it, and the larger kept: at a
    plateau's edge one side is the plateau, the other a (noiseless) drop. Residuals that
    involve a record off ``live`` (at the floor) take no part.
    """
    n = y.size
    k = np.arange(n)
    lo = np.searchsorted(x, x - reach / 2, side="left")
    hi = np.searchsorted(x, x + reach / 2, side="right") - 1
    half = np.minimum(np.maximum(1, np.minimum(k - lo, hi - k)), np.minimum(k, n - 1 - k))
    dead = np.concatenate([[0], np.cumsum(~live)])
    r2 = np.zeros(n)
    ok = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(half >= 1):
        m = half[i]
        if dead[i + m + 1] - dead[i - m] == 0:
            # for white noise E[r^2] = (1 - 0.6 / (2m + 1)) sigma^2 to within 1%
            r2[i] = (y[i] - np.median(y[i - m : i + m + 1])) ** 2 / (1 - 0.6 / (2 * m + 1))
            ok[i] = True
    total = np.concatenate([[0.0], np.cumsum(r2)])
    count = np.concatenate([[0], np.cumsum(ok)])
    start = np.clip(np.minimum(np.searchsorted(x, x - reach, side="left"), k - _NOISE_REACH), 0, n)
    stop = np.clip(
        np.maximum(np.searchsorted(x, x + reach, side="right"), k + _NOISE_REACH + 1), 0, n
    )

    def rms(a, b):
        c = count[b] - count[a]
        return np.where(c > 0, np.sqrt((total[b] - total[a]) / np.maximum(c, 1)), 0.0)

    return np.maximum(rms(start, k + 1), rms(k, stop))


def _median_filter(x, y, half_width):
    """Running median of y over the window |x_k - x_i| <= half_width[i] (any spacing of x)."""
    half = np.broadcast_to(np.asarray(half_width, dtype=np.float64), x.shape)
    if not np.any(half > 0):
        return y.copy()
    lo = np.searchsorted(x, x - half, side="left")
    hi = np.searchsorted(x, x + half, side="right")
    return np.array([y[a] if b - a == 1 else np.median(y[a:b]) for a, b in zip(lo, hi)])


def _med3(y):
    """Running median of three neighbouring records (the ends kept): it leaves any monotone
    stretch as it is, so the corners of a clean curve stay sharp, and removes single outliers."""
    out = y.copy()
    if y.size >= 3:
        out[1:-1] = np.median(np.stack([y[:-2], y[1:-1], y[2:]]), axis=0)
    return out


def _max_extent(y, width):
    """For each i, the largest j with max(y[i..j]) - min(y[i..j]) <= max(width[i..j]) (NaN
    breaks); ``width`` is one number or one per record."""
    n = y.size
    width = np.broadcast_to(np.asarray(width, dtype=np.float64), (n,))
    ext = np.empty(n, dtype=np.int64)
    todo = np.arange(n)
    horizon = 64
    # look ahead a short horizon first, and further only for the starts that reach it: the
    # cost is then set by the extents, not by the length of the record
    while todo.size:
        horizon = min(4 * horizon, n)
        k = np.arange(horizon)
        more = []
        for first in range(0, todo.size, _ROWS):
            rows = todo[first : first + _ROWS]
            idx = rows[:, None] + k[None, :]
            inside = idx < n
            idx = np.minimum(idx, n - 1)
            Y = np.where(inside, y[idx], np.nan)
            W = np.maximum.accumulate(width[idx], axis=1)
            with np.errstate(invalid="ignore"):
                ok = np.maximum.accumulate(Y, axis=1) - np.minimum.accumulate(Y, axis=1) <= W
            count = np.logical_and.accumulate(ok, axis=1).sum(axis=1)
            ext[rows] = rows + count - 1
            more.append(rows[(count == horizon) & (rows + horizon < n)])
        todo = np.concatenate(more)
    return ext


def _slopes(x, y, means=False):
    """Least-squares slopes of y on x over x[:m], for every m = 1..len(x) (x increasing), and
    their standard errors for unit noise (slope 0 and error inf for the single point m = 1);
    with ``means``, also the means of x and y over x[:m] (each line passes through them)."""
    sums = np.empty((4, x.size))
    xc = np.subtract(x, x[0], out=sums[0])  # shifted: no cancellation in the running sums
    yc = np.subtract(y, y[0], out=sums[1])
    np.multiply(xc, xc, out=sums[2])
    np.multiply(xc, yc, out=sums[3])
    sx, sy, sxx, sxy = np.cumsum(sums, axis=1, out=sums)
    m = np.arange(1.0, x.size + 1.0)
    vxx = np.maximum(sxx - sx * sx / m, np.finfo(float).tiny)
    slope = (sxy - sx * sy / m) / vxx
    se = 1.0 / np.sqrt(vxx)
    slope[0], se[0] = 0.0, np.inf
    if means:
        return slope, se, x[0] + sx / m, y[0] + sy / m
    return slope, se


def _ledges(x, y, yr, a, ya, c, yc, *, bk, n_win, min_drop, contrast, min_points, min_duration):
    """Tilted plateaus strictly between record ``a`` (at level ``ya``) and record ``c`` (at
    ``yc``).

    A ledge is a stretch of records whose least-squares line (fitted to ``y``) holds ``yr``
    within +-b, which falls by at most a drop along it, and which lies at least a drop below
    ``ya`` and above ``yc``, where the curve falls into it and out of it on average (from
    record a, to record c) ``contrast`` times as steeply as along it, in ln eps per ln t (the
    same ratio as in linear time, where a person sees it). The longest is taken, and the
    search repeated on either side of it.

    Returns a list of (i, j, slope, x_mean, y_mean).
    """
    if c - a - 1 < min_points or ya - yc < 2 * min_drop:
        return []
    best, best_dur = None, 0.0
    inner = slice(a + 1, c)
    # the records of a ledge span at most its fall plus the band on either side
    ext = a + 1 + _max_extent(yr[inner], np.maximum(min_drop, 2 * bk[inner]) + 2 * bk[inner])
    # the line holds each record within b: a start too close below ya, or an end too close
    # above yc, cannot leave a drop on either side
    b_gap = float(np.max(bk[inner]))
    high = np.fmax.accumulate(np.where(np.isfinite(yr[inner]), yr[inner], -np.inf)[::-1])[::-1]
    for i in range(a + 1, c - min_points + 1):
        j_max = int(ext[i - a - 1])
        if (
            j_max - i + 1 < min_points
            or x[j_max] - x[i] <= best_dur
            or not np.isfinite(yr[i])
            or ya - yr[i] + b_gap < min_drop
            or high[i - a - 1] + b_gap - yc < min_drop
        ):
            continue
        part = slice(i, j_max + 1)
        xs = x[part]
        s, _, xm, ym = _slopes(xs, y[part], means=True)
        b = np.maximum.accumulate(bk[part])
        drop = np.maximum(min_drop, 2 * b)
        need = np.maximum(min_points, np.ceil(np.maximum.accumulate(n_win[part])))
        dur = xs - xs[0]
        fall_in = ya - (ym + s * (xs[0] - xm))  # to the line at the stretch's first record
        fall_out = ym + s * (xs - xm) - yc  # from the line at its last
        with np.errstate(divide="ignore", invalid="ignore"):
            steep = np.minimum(fall_in / (xs[0] - x[a]), fall_out / (x[c] - xs))
        # no allowance for the noise of the fitted slope (unlike the flat test): the search
        # over every stretch would pick the one whose noise flattens it most, and a noisy
        # piece of a steady descent would pass for a ledge
        ok = (
            (np.arange(1, xs.size + 1) >= need)
            & (dur >= np.log1p(min_duration))
            & (dur > best_dur)
            & (np.abs(s) * dur <= drop)
            & (fall_in >= drop)
            & (fall_out >= drop)
            & (contrast * np.abs(s) <= steep)
        )
        cand = np.flatnonzero(ok)[::-1]  # the longest first
        for first in range(0, cand.size, _ROWS):
            kk = cand[first : first + _ROWS]
            m = kk[0] + 1
            dev = np.abs(yr[i : i + m] - (ym[kk, None] + s[kk, None] * (xs[:m] - xm[kk, None])))
            with np.errstate(invalid="ignore"):  # NaN (the floor) fails the band
                fits = np.all((dev <= b[kk, None]) | (np.arange(m) > kk[:, None]), axis=1)
            if fits.any():
                k = kk[int(np.argmax(fits))]
                best, best_dur = (i, i + k, s[k], xm[k], ym[k]), dur[k]
                break
    if best is None:
        return []
    i, j, s, xm, ym = best
    opts = dict(
        bk=bk,
        n_win=n_win,
        min_drop=min_drop,
        contrast=contrast,
        min_points=min_points,
        min_duration=min_duration,
    )
    return (
        _ledges(x, y, yr, a, ya, i, ym + s * (x[i] - xm), **opts)
        + [best]
        + _ledges(x, y, yr, j, ym + s * (x[j] - xm), c, yc, **opts)
    )


def _check(t, eps_g, two_d):
    t = _validate.finite_array("t", t, ndim=1)
    if t.size < 2:
        raise InputError(f"t must have at least 2 times, got {t.size}")
    if np.any(np.diff(t) <= 0) or t[0] < 0:
        raise InputError("t must be non-negative and strictly increasing")
    try:
        eps = np.asarray(eps_g, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("eps_g must be an array of real numbers") from None
    want = 2 if two_d else 1
    if eps.ndim != want or eps.shape[-1] != t.size:
        shape = "(n_runs, n_times)" if two_d else "(n_times,)"
        raise InputError(
            f"eps_g must have shape {shape} with n_times={t.size} (as t), got {eps.shape}"
        )
    return t, eps


def _options(band, flat, min_duration, min_drop, floor, smooth, min_points, contrast):
    p = _validate.Problems()
    out = dict(
        band=p.check(_validate.real, "band", band, low=0.0, low_open=True),
        flat=p.check(_validate.real, "flat", flat, low=0.0, low_open=True),
        min_duration=p.check(_validate.real, "min_duration", min_duration, low=0.0),
        min_drop=p.check(_validate.real, "min_drop", min_drop, low=0.0, low_open=True),
        floor=p.check(
            _validate.real, "floor", floor, low=0.0, high=1.0, low_open=True, high_open=True
        ),
        smooth=None if smooth is None else p.check(_validate.real, "smooth", smooth, low=0.0),
        min_points=p.check(_validate.integer, "min_points", min_points, low=2),
        contrast=p.check(_validate.real, "contrast", contrast, low=1.0),
    )
    p.raise_if_any()
    return out


def detect_stages(
    t,
    eps_g,
    *,
    band=0.03,
    flat=0.1,
    min_duration=0.1,
    min_drop=0.15,
    floor=1e-10,
    smooth=None,
    min_points=3,
    contrast=10.0,
):
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
        Half-width, in ln eps, of the band a plateau stays in (0.03: 3%), about its level or
        its fitted line; widened to three standard errors of the filtered noise where the
        curve is noisy.
    flat : float, > 0
        Largest |d ln eps / d ln t| of the fitted line of a plateau that is not a ledge
        (widened by three standard errors of the fit).
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
    contrast : float, >= 1
        A stretch between two drops that is not flat is a plateau (a ledge) when the curve
        falls into it and out of it, on average, at least ``contrast`` times as steeply as
        along it, falls along it by less than a drop, and holds its fitted line to the band.

    Returns
    -------
    Stages

    Examples
    --------
    A clean synthetic staircase through the levels of :func:`plateau_levels`, log-spaced in t:

    >>> import numpy as np
    >>> from fastquad.analysis import detect_stages, plateau_levels
    >>> L = plateau_levels([1.0, 0.6, 0.3])
    >>> t = np.logspace(-1, 3, 201)
    >>> step = lambda t_drop: 1 / (1 + (t / t_drop) ** 8)
    >>> eps_g = L[2] + (L[1] - L[2]) * step(30.0) + (L[0] - L[1]) * step(1.0)
    >>> stages = detect_stages(t, eps_g)
    >>> stages.n_plateaus, stages.n_drops
    (3, 2)
    >>> print(np.round(stages.levels, 4))
    [3.2549 0.72   0.1125]
    >>> print(stages.table())
    stage           from          to  eps_g / depth
    plateau          0.1      0.6918        3.25493
    drop          0.6918       1.738         x4.521
    plateau        1.738       19.95           0.72
    drop           19.95       57.54           x6.4
    plateau        57.54         nan         0.1125
    final eps_g 0.1125
    """
    t, eps = _check(t, eps_g, two_d=False)
    opts = _options(band, flat, min_duration, min_drop, floor, smooth, min_points, contrast)
    return _detect(t, eps, **opts)


def _detect(t, eps, *, band, flat, min_duration, min_drop, floor, smooth, min_points, contrast):
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
    n = y.size

    # noise is what wanders faster than the shortest plateau lasts
    sig = _local_noise(x, y, ~at_floor, np.log1p(min_duration))
    dx = float(np.median(np.diff(x)))
    if smooth is None:
        # enough points in the window that 3 standard errors of its median fit in the band
        # (up to _MAX_WINDOW: wider windows would hide short plateaus; the band widens instead)
        need = (3.0 * 1.2533 * sig / band) ** 2
        half = np.where(need <= 1.0, 0.0, 0.5 * (np.minimum(need, _MAX_WINDOW) - 1) * dx)
    else:
        half = np.full(n, smooth)
    ys = _median_filter(x, y, half)
    n_win = np.where(half > 0, 2 * half / dx + 1, 1.0)
    bk = np.maximum(band, 3.0 * 1.2533 * sig / np.sqrt(n_win))  # the band near each record

    def drop_min(b):
        return max(min_drop, 2 * b)

    def run_max(a):
        return np.maximum.accumulate(a)

    yb = np.where(at_floor, np.nan, ys)
    ext = _max_extent(yb, 2 * bk)
    spans = []
    i = 0
    while i < n:
        j = ext[i]
        if at_floor[i] or j - i + 1 < min_points:
            i += 1
            continue
        onset = (
            0.0 if (i == 0 and y0 is not None and abs(y0 - ys[0]) <= 2 * bk[0]) else np.exp(x[i])
        )
        x_min = x[i] + np.log1p(min_duration) if onset > 0 else -np.inf  # earliest end
        if x[j] < x_min:
            i += 1
            continue
        # the longest stretch from i that passes every test, not just the longest in the band:
        # that one reaches up to 2b down the next drop, and those few steep records can tilt
        # the fitted line of a slowly drifting plateau past `flat`; rejecting it and moving
        # the start on only gives the tail more weight, until the rest is too short -- so a
        # clear plateau was lost or kept depending on where the grid fell on its edges
        part = slice(i, j + 1)
        s, se = _slopes(x[part], y[part])
        with np.errstate(invalid="ignore"):
            tol = flat + np.nan_to_num(3 * run_max(sig[part]) * se)
        # nothing shorter than the filter's window can be told from noise
        need = np.maximum(min_points, np.ceil(run_max(n_win[part])))
        ok = (np.arange(1, j - i + 2) >= need) & (np.abs(s) <= tol) & (x[part] >= x_min)
        if not ok.any():
            i += 1
            continue
        j = i + int(np.flatnonzero(ok)[-1])
        spans.append([i, j, onset, None])
        i = j + 1

    def core_of(i, j):
        # a plateau's ends may hold the tails of the drops (up to the band's full width away)
        # and the filter's reach
        trim = int(np.ceil(np.max(n_win[i : j + 1]) / 2))
        a, c = i + trim, (j if j == n - 1 else j - trim)
        return (a, c) if c - a + 1 >= 3 else (i, j)

    def level(i, j):
        a, c = core_of(i, j)
        return float(np.median(y[a : c + 1]))

    def tilted_line(i, j, b):
        """The least-squares line of a plateau's core, when it falls by more than half the
        band along the plateau, beyond three standard errors of its noise (else None: the
        level is its centre, and noise does not tilt it)."""
        a, c = core_of(i, j)
        s, se, xm, ym = (v[-1] for v in _slopes(x[a : c + 1], y[a : c + 1], means=True))
        tilted = abs(s) * (x[j] - x[i]) > b / 2 and abs(s) > 3 * np.max(sig[a : c + 1]) * se
        return (s, xm, ym) if tilted else None

    def b_of(i, j):
        return float(np.max(bk[i : j + 1]))

    # levels closer than a drop are one plateau broken by drift or noise
    merged = True
    while merged and len(spans) > 1:
        merged = False
        for k in range(len(spans) - 1):
            a, c = spans[k], spans[k + 1]
            if level(a[0], a[1]) - level(c[0], c[1]) < drop_min(b_of(a[0], c[1])):
                spans[k] = [a[0], c[1], a[2], None]
                del spans[k + 1]
                merged = True
                break

    # tilted plateaus (ledges, see the module's notes): between two plateaus, or a plateau
    # and the start or the end of the record, a stretch the curve falls into and out of far
    # faster than along it
    y_end = float(ys[-1])
    yr = np.where(at_floor, np.nan, _med3(ys))
    ledge_opts = dict(
        bk=bk,
        n_win=n_win,
        min_drop=min_drop,
        contrast=contrast,
        min_points=min_points,
        min_duration=min_duration,
    )

    def above(k):
        """The record and level a ledge after span k - 1 falls from (the start: k = 0)."""
        return (spans[k - 1][1], level(*spans[k - 1][:2])) if k else (0, float(ys[0]))

    def below(k):
        """The record and level a ledge before span k falls to; after the last span, where
        the curve reaches the level it ends at."""
        if k < len(spans):
            return spans[k][0], level(*spans[k][:2])
        start = spans[-1][1] + 1 if spans else 0
        if start >= n:
            return n - 1, y_end
        return start + int(np.argmax(ys[start:] <= y_end + bk[-1])), y_end

    # a plateau the flat test found only part of (its flattest, or its noisiest, stretch)
    # becomes the ledge that holds it, when that ledge is tilted past `flat`
    for k, (i, j, _, _) in enumerate(spans):
        (a, ya), (c, yc) = above(k), below(k + 1)
        if i == 0 or j >= c:
            continue
        for li, lj, s, xm, ym in _ledges(x, y, yr, a, ya, c, yc, **ledge_opts):
            if li <= j and lj >= i and abs(s) > flat and x[lj] - x[li] > x[j] - x[i]:
                spans[k] = [li, lj, float(np.exp(x[li])), (s, xm, ym)]
                break
    found = []
    for k in range(len(spans) + 1):
        if k == 0 and spans and spans[0][0] == 0:
            continue
        found += _ledges(x, y, yr, *above(k), *below(k), **ledge_opts)
    spans = sorted(spans + [[i, j, float(np.exp(x[i])), (s, xm, ym)] for i, j, s, xm, ym in found])

    # onset and escape: the first and last record within b of the level, or of the line of a
    # ledge (a band centred on it, not the band of the stretch found above, which hangs from
    # wherever the drop's tail entered it), along the run of records that stays within 2b --
    # so that the filtered noise poking out of the narrow band does not end a plateau early
    near = ~at_floor
    levels, onsets, escapes, bands, noises = [], [], [], [], []
    for k, (i, j, onset, line) in enumerate(spans):
        lv = level(i, j)
        b = b_of(i, j)
        if line is None:
            # a plateau the flat test found may still fall by more than its band along it
            line = tilted_line(i, j, b)
        dev = np.abs(ys - (lv if line is None else line[2] + line[0] * (x - line[1])))
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
            # the curve does not enter or leave a plateau at the first or last record: there
            # the run within 2b decides, not noise poking out of the narrow band
            while a > 0 and not inner[a]:
                a += 1
            while c < n - 1 and not inner[c]:
                c -= 1
        else:
            a, c = i, j
        levels.append(float(np.exp(lv)))
        onsets.append(0.0 if (onset == 0.0 and a == 0) else float(np.exp(x[a])))
        escapes.append(np.nan if c == n - 1 else float(np.exp(x[c])))
        bands.append(b)
        noises.append(float(np.median(sig[i : j + 1])))
        spans[k] = [a, c, onsets[-1], line]
    levels, onsets, escapes = map(np.array, (levels, onsets, escapes))
    t_last = float(np.exp(x[-1]))
    durations = np.where(np.isnan(escapes), t_last, escapes) - onsets

    d_start, d_end, d_depth = [], [], []
    first_t = 0.0 if starts_at_zero else float(np.exp(x[0]))
    y_first = y0 if starts_at_zero else float(ys[0])
    if spans:
        if spans[0][2] > first_t and y_first - np.log(levels[0]) >= drop_min(bands[0]):
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
        depth = y_from - y_end
        if depth >= drop_min(max(bands[-1] if bands else band, bk[-1])):
            reach = i_from + int(np.argmax(ys[i_from:] <= y_end + bk[-1]))
            d_start.append(t_from)
            d_end.append(float(np.exp(x[reach])))
            d_depth.append(depth)
    live = ~at_floor
    return Stages(
        levels=levels,
        onsets=onsets,
        escapes=escapes,
        durations=durations,
        drop_starts=np.array(d_start),
        drop_ends=np.array(d_end),
        drop_depths=np.array(d_depth),
        converged=bool(at_floor[-1]),
        final_eps=float(eps[-1]),
        band=max(bands) if bands else float(np.max(bk[live], initial=band)),
        noise=max(noises) if noises else float(np.median(sig[live])) if live.any() else 0.0,
    )


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
    p = _validate.Problems()
    if max_plateaus is not None:
        max_plateaus = p.check(_validate.integer, "max_plateaus", max_plateaus, low=1)
    if max_drops is not None:
        max_drops = p.check(_validate.integer, "max_drops", max_drops, low=1)
    p.raise_if_any()
    defaults = dict(
        band=0.03,
        flat=0.1,
        min_duration=0.1,
        min_drop=0.15,
        floor=1e-10,
        smooth=None,
        min_points=3,
        contrast=10.0,
    )
    unknown = set(options) - set(defaults)
    if unknown:
        raise InputError(f"unknown option(s) of detect_stages: {sorted(unknown)}")
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
        levels=pad([s.levels for s in found], P),
        onsets=pad([s.onsets for s in found], P),
        escapes=pad([s.escapes for s in found], P),
        durations=pad([s.durations for s in found], P),
        drop_starts=pad([s.drop_starts for s in found], D),
        drop_ends=pad([s.drop_ends for s in found], D),
        drop_depths=pad([s.drop_depths for s in found], D),
        converged=np.array([s.converged for s in found]),
        final_eps=np.array([s.final_eps for s in found]),
    )


def plateau_levels(v_teacher, order=None, *, activation="quadratic"):
    """The plateau sequence of a quadratic network for an orthonormal teacher (T = I); see
    docs/theory.md, 'Fixed points, plateaus and stages'.

    With one student unit per learnt teacher direction and L directions learnt,
    ``eps_g = s^2 / (2 + L) + q`` with ``s`` and ``q`` the sum of the unlearnt ``v*_n`` and of
    their squares (the learnt units each absorb ``-tr(D)/2`` of the unexplained trace).

    Parameters
    ----------
    v_teacher : array, shape (M,)
    order : array of int, shape (M,), optional
        The order in which directions are learnt; default by decreasing |v*_n| (from a small
        initialisation the largest is learnt first).
    activation : str
        Only ``"quadratic"``: the formula is the quadratic network's. For another activation
        the plateau levels are the eps_g of the saddles that
        :func:`fastquad.analysis.find_fixed_points` finds (``activation=...``); asking here
        raises InputError.

    Returns
    -------
    ndarray, shape (M + 1,)
        Levels for L = 0, 1, ..., M (the last is 0).

    Examples
    --------
    >>> import numpy as np
    >>> from fastquad.analysis import plateau_levels
    >>> print(np.round(plateau_levels([1.0, 0.6, 0.3]), 4))
    [3.255  0.72   0.1125 0.    ]

    Learning the smallest direction first instead:

    >>> print(np.round(plateau_levels([1.0, 0.6, 0.3], order=[2, 0, 1]), 4))
    [3.255  2.2133 0.45   0.    ]
    """
    name = check_activation(activation, "activation")
    if name != "quadratic":
        raise InputError(
            f"activation: plateau_levels is the closed form of quadratic networks; the plateau "
            f"levels of a {name} network are the eps_g of the saddles of "
            f"find_fixed_points(..., activation={name!r})"
        )
    vt = _validate.finite_array("v_teacher", v_teacher, ndim=1)
    M = vt.shape[0]
    if M < 1:
        raise InputError("v_teacher must have at least one entry")
    if order is None:
        order = np.argsort(-np.abs(vt), kind="stable")
    else:
        arr = np.asarray(order)
        if (
            arr.shape != (M,)
            or not np.issubdtype(arr.dtype, np.integer)
            or sorted(arr.tolist()) != list(range(M))
        ):
            raise InputError(f"order must be a permutation of 0..{M - 1}, got {order!r}")
        order = arr
    out = np.empty(M + 1)
    for L in range(M + 1):
        rest = vt[order[L:]]
        out[L] = rest.sum() ** 2 / (2 + L) + (rest**2).sum()
    out[M] = 0.0
    return out
