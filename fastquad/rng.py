"""Fast, reproducible per-run random streams for Numba kernels.

Every simulated run owns one row of a ``uint64`` state array made by :func:`run_states`; the
``@njit`` functions below draw from such a row and advance it in place. Rows are independent, so
``normal_fill(states[i], x)`` inside a ``numba.prange`` loop gives each run its own stream whatever
the batch, the scheduling or the number of threads.

Determinism contract
--------------------
The values produced from a row depend only on ``(seed, run_id)`` and on the sequence of calls made
on that row (function, output length, ``n`` for :func:`randbelow`). They do not depend on the
other rows, the batch, the scheduling, the thread count, or the memory layout of ``out``. All
arithmetic is integer or IEEE-754 without fast-math, so results are bit-identical on every
little-endian machine with the same libm; the only libm calls (``exp`` in the wedges, ``log1p``
in the tail) are on the rare rejection path, and a different libm could change the last bit of
a tail draw (|x| > 3.65, 2.6e-4 of the draws). The derivation of the state from
``(seed, run_id)``, the layout and the bit usage below are part of this contract: changing any
of them changes every stream and needs a new major version.

Split independence holds: the concatenation of the outputs of successive :func:`normal_fill`
calls does not depend on how the total length is split into calls (one call of 1000 gives the
same numbers as calls of 1, 99 and 900). The same holds for successive :func:`normal_fill32`
calls. When the two are interleaved, or mixed with :func:`next_uint64`, :func:`next_double` or
:func:`randbelow`, each call starts at the next unused 64-bit word (a half-used word left by
``normal_fill32`` is skipped), so the result is still a deterministic function of the call
sequence but no longer split-independent across the kinds of calls.

Generator
---------
The main stream interleaves 16 independent xoshiro256+ lanes (Blackman and Vigna): raw word ``k``
of the stream is the output of lane ``k % 16`` at its step ``k // 16``. Sixteen lanes are
advanced together in one loop that LLVM turns into AVX2 vector code, which is what makes the
generator fast; a one-lane generator is latency-bound. A 17th xoshiro256+ generator, the *fixup
stream*, serves only the rare ziggurat rejections (1.5 % of normals). Because every output
position consumes exactly one main-stream word (float64) or half-word (float32) and the fixups
are drawn in output order from their own stream, the output at position ``k`` does not depend on
where a call boundary falls; this is where split independence comes from.

xoshiro256+'s lowest bits are weak (low linear complexity), so they are only ever used as the
least significant bits of a mantissa (float32) or not at all (float64 and uniforms).

Seeding (stable, part of the contract)
--------------------------------------
With ``mix64`` the SplitMix64 finaliser (Stafford's variant 13, a bijection of 64-bit words),
``GAMMA = 0x9E3779B97F4A7C15`` and ``DOMAIN = 0x6661737471756164`` (ASCII "fastquad"), all
arithmetic modulo 2**64::

    z0   = mix64(mix64(seed ^ DOMAIN) ^ run_id)
    w[j] = mix64(z0 + (j + 1) * GAMMA),            j = 0 .. 67   (a SplitMix64 stream from z0)
    lane l (0..15) state = (w[4l], w[4l+1], w[4l+2], w[4l+3])
    fixup state          = (w[64], w[65], w[66], w[67])

For a fixed seed, distinct run ids give distinct ``z0``, and for a fixed run id distinct seeds
do (compositions of bijections); other distinct pairs collide with probability 2**-64, and
mix64's avalanche separates even neighbouring ids and seeds, so the streams are unrelated.
At most one of the 68 words can be zero (mix64 maps only 0 to 0), so no xoshiro state is
all-zero.

State layout (``STATE_WORDS = 88`` uint64 words per run)
-------------------------------------------------------
====== ================================================================================
words  content
====== ================================================================================
0-63   the 16 lanes, structure-of-arrays: word ``16*j + l`` is word ``s[j]`` of lane ``l``
64-79  the last 16 raw words drawn from the lanes (one per lane)
80     how many 32-bit halves of words 64-79 are used (0..32; 32 = all used)
81-84  the fixup generator ``s[0..3]``
85-87  reserved, zero (pads a row to 704 bytes = 11 cache lines; run_states aligns row 0 to
       64 bytes, so rows advanced by different threads never share a cache line)
====== ================================================================================

Normal variates
---------------
A 256-layer ziggurat (Marsaglia and Tsang 2000, in NumPy's variant) with tables derived at import
from ``r = 3.6541528853610088`` and the layer area ``v = r f(r) + int_r^inf f = 4.928673233975e-3``
(the published ``v = 4.92867323399e-3`` rounded to 12 digits would leave the top layer 1e-9 too
small; the exact one closes it to 1e-13). Float64: a word ``w`` gives the layer
``(w >> 4) & 255``, the sign bit 3 and a 52-bit mantissa ``w >> 12``. Float32: each 32-bit half
``h`` (low half first) gives a 23-bit mantissa ``h & 0x7FFFFF``, the layer ``(h >> 23) & 255`` and
the sign bit 31. The wedges (exact test against ``exp(-x**2/2)``; a chord squeeze settles 89 % of
wedge points without ``exp``, always as ``exp`` would) and Marsaglia's exponential
rejection sampler for the tail ``|x| > r`` are exact, so the law is the normal law restricted to
the mantissa grid (spacing ``x_i / 2**52`` in layer ``i``), as in NumPy. The float32 fast path
(98.5 % of draws) multiplies in float32 by the layer widths rounded to float32: its outputs are
within one float32 ulp of an exact draw on a grid of spacing ``x_i / 2**23``; its wedges and tail
run in float64 and are rounded once.

All ``@njit`` functions are compiled with ``cache=True, nogil=True`` and can be called from other
``@njit`` kernels, including inside ``prange`` with a row ``states[i]`` of a C-contiguous array.
"""

import math
import operator

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .errors import InputError
from .kernels.options import JIT

__all__ = [
    "STATE_WORDS",
    "run_states",
    "normal_fill",
    "normal_fill32",
    "next_uint64",
    "next_double",
    "randbelow",
]


STATE_WORDS = 88

_NLANES = 16
_BUF = 64  # first word of the raw-word buffer
_POS = 80  # halves of the buffer already used
_FIX = 81  # fixup generator
_FULL = 32  # _POS value of an exhausted buffer

_ZIG_R = 3.6541528853610088
_ZIG_V = 4.92867323399e-3

_GAMMA = 0x9E3779B97F4A7C15
_DOMAIN = 0x6661737471756164  # b"fastquad" read as a big-endian integer
_MAX_SEED = 2**63 - 1
_MAX_RUN_ID = 2**63 - 1

# Numba types a mix of uint64 and int64 as int64 or float64, so every constant that meets a
# uint64 is itself a uint64 (or uint32 on the float32 path).
_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U3 = np.uint64(3)
_U4 = np.uint64(4)
_U11 = np.uint64(11)
_U12 = np.uint64(12)
_U17 = np.uint64(17)
_U19 = np.uint64(19)
_U32 = np.uint64(32)
_U45 = np.uint64(45)
_U60 = np.uint64(60)
_U64 = np.uint64(64)
_U255 = np.uint64(255)
_ONE_BITS = np.uint64(0x3FF0000000000000)  # 1.0: OR-ing 52 bits in gives 1 + m / 2**52 exactly
_SIGN64 = np.uint64(0x8000000000000000)

_V23 = np.uint32(23)
_V255 = np.uint32(255)
_MANT32 = np.uint32(0x7FFFFF)
_ONE_BITS32 = np.uint32(0x3F800000)
_SIGN32 = np.uint32(0x80000000)
_F32_ONE = np.float32(1.0)

_TWO_M53 = 2.0**-53
_TWO_M23 = 2.0**-23


# ---------------------------------------------------------------------------------------------
# Bit casts. Numba has no scalar reinterpretation; these lower to a single LLVM bitcast (free
# in registers), which the loop vectoriser handles like any other arithmetic.
# ---------------------------------------------------------------------------------------------


@intrinsic
def _as_f64(typingctx, bits):
    if bits != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.uint64), codegen


@intrinsic
def _as_u64(typingctx, x):
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.uint64(types.float64), codegen


@intrinsic
def _as_f32(typingctx, bits):
    # Numba widens uint32 arithmetic to uint64; the low 32 bits are the float's bits
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _cttz(typingctx, x):
    """Count of trailing zero bits of a nonzero uint64 (one ``tzcnt``)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(i64, [i64, ir.IntType(1)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.cttz.i64")
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 1)])

    return types.uint64(types.uint64), codegen


@intrinsic
def _as_u32(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


# ---------------------------------------------------------------------------------------------
# Ziggurat tables, derived here rather than copied so that the construction is checkable.
# ---------------------------------------------------------------------------------------------


def _ziggurat_tables(r=_ZIG_R, v=_ZIG_V):
    """Layer edges of the 256-layer normal ziggurat (Marsaglia and Tsang's recursion).

    Every layer has area ``v`` under ``f(x) = exp(-x**2 / 2)``: layer ``i`` (1..255, 255 at the
    bottom) is the rectangle ``[0, x_i] x [f(x_i), f(x_{i-1})]`` with ``f(x_0) = 1``; layer 0 is
    the base strip ``[0, r] x [0, f(r)]`` plus the tail beyond ``r``, drawn as a rectangle of
    width ``q = v / f(r)``.

    Returns
    -------
    x : (256,) float64
        ``x[i]`` is the width of layer ``i`` (``x[0] = q``, ``x[255] = r``).
    f : (256,) float64
        ``f[i] = exp(-x_i**2 / 2)`` for ``i >= 1``, ``f[0] = 1`` (the top of layer 1).
    k52, k23 : (256,) int64
        Acceptance thresholds on 52- and 23-bit mantissas: a point of layer ``i >= 1`` with
        mantissa ``m < k[i]`` lies left of ``x_{i-1}``, inside the curve; ``k[1] = 0`` (the top
        layer is all wedge); ``k[0]`` accepts the strip left of ``r``.
    """
    fr = math.exp(-0.5 * r * r)
    q = v / fr
    x = np.empty(256)
    f = np.empty(256)
    x[0], x[255] = q, r
    f[0], f[255] = 1.0, fr
    for i in range(254, 0, -1):
        # area of layer i + 1: x_{i+1} (f(x_i) - f(x_{i+1})) = v, solved for x_i
        x[i] = math.sqrt(-2.0 * math.log(v / x[i + 1] + f[i + 1]))
        f[i] = math.exp(-0.5 * x[i] * x[i])
    ratio = np.empty(256)
    ratio[0] = r / q
    ratio[1] = 0.0
    ratio[2:] = x[1:255] / x[2:]
    k52 = np.array([math.floor(t * 2.0**52) for t in ratio], dtype=np.int64)
    k23 = np.array([math.floor(t * 2.0**23) for t in ratio], dtype=np.int64)
    return x, f, k52, k23


# v is Marsaglia and Tsang's 12-digit value of the layer area for this r. The exact area,
# r f(r) + int_r^inf f, makes the 256 layers close (the top one to 1e-13 instead of 1e-9) and
# the tail mass exact; it agrees with the published v to 3e-12, and NumPy's tables agree with
# the tables it gives to 2e-14 (with the 12-digit v they would differ by 3e-12).
_ZIG_V_EXACT = _ZIG_R * math.exp(-0.5 * _ZIG_R**2) + math.sqrt(0.5 * math.pi) * math.erfc(
    _ZIG_R / math.sqrt(2.0)
)
assert abs(_ZIG_V_EXACT - _ZIG_V) < 1e-11 * _ZIG_V
_X, _F, _K52, _K23 = _ziggurat_tables(_ZIG_R, _ZIG_V_EXACT)
_W64 = _X.copy()  # the fast path scales u = m / 2**52 in [0, 1) by the layer width
_W32 = _X.astype(np.float32)
_K32 = _K23.astype(np.int32)  # int32 so the float32 path compares in 8-wide vectors
_DF = np.empty(256)  # f[i-1] - f[i]: height of the wedge of layer i (unused for i = 0)
_DF[0] = 0.0
_DF[1:] = _F[:-1] - _F[1:]
_INV_R = 1.0 / _ZIG_R


def _wedge_squeeze(x, f, slack=1e-14, points=4001):
    """Chords of the wedges and how far the curve strays from them.

    The wedge of layer ``i >= 1`` spans ``[x_{i-1}, x_i]`` (``x_0 = 0`` here: the top layer is
    all wedge) and the heights ``[f_i, f_{i-1}]``; its chord is the line through
    ``(x_{i-1}, f_{i-1})`` and ``(x_i, f_i)``. On the wedge the curve lies within
    ``[chord - below_i, chord + above_i]``; the bounds are the largest deviations on a grid of
    ``points`` abscissae, widened by half and by ``slack``, which exceeds the rounding of
    ``exp(-x**2/2)`` and of the chord in float64 (< 3e-15 for |x| <= r). A height below
    ``chord - below`` is therefore under the computed curve and one above ``chord + above``
    over it: these decide the exact test without ``exp`` and never differ from it. (A point a
    rounded-down threshold lets slightly left of ``x_{i-1}`` is under the curve whatever its
    height; there the chord rises above ``f_{i-1}``, so the squeeze can only accept it.)

    Returns
    -------
    lo, slope, below, above : (256,) float64
        Left edge and slope of each wedge's chord, and the two bounds (zeros for layer 0, which
        has no wedge).
    """
    lo = np.zeros(256)
    slope = np.zeros(256)
    below = np.zeros(256)
    above = np.zeros(256)
    for i in range(1, 256):
        a = 0.0 if i == 1 else x[i - 1]
        b = x[i]
        lo[i] = a
        slope[i] = (f[i] - f[i - 1]) / (b - a)
        t = np.linspace(a, b, points)
        gap = np.exp(-0.5 * t * t) - (f[i - 1] + (t - a) * slope[i])
        below[i] = 1.5 * max(0.0, -gap.min()) + slack
        above[i] = 1.5 * max(0.0, gap.max()) + slack
    return lo, slope, below, above


_LO, _SLOPE, _BELOW, _ABOVE = _wedge_squeeze(_X, _F)


# ---------------------------------------------------------------------------------------------
# Seeding (Python layer).
# ---------------------------------------------------------------------------------------------


def _mix64(z):
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _check_seed(seed):
    if isinstance(seed, (bool, np.bool_)):
        raise InputError(f"seed must be an integer in [0, 2**63-1], got {seed!r}")
    try:
        s = operator.index(seed)
    except TypeError:
        raise InputError(f"seed must be an integer in [0, 2**63-1], got {seed!r}") from None
    if not 0 <= s <= _MAX_SEED:
        raise InputError(f"seed must be an integer in [0, 2**63-1], got {s}")
    return s


def _check_run_ids(run_ids):
    msg = "run_ids must be a 1-D array of integers in [0, 2**63-1]"
    try:
        arr = np.asarray(run_ids)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{msg}, got {run_ids!r}") from None
    if arr.ndim != 1:
        raise InputError(f"{msg}, got an array of shape {arr.shape}")
    if arr.dtype == object:
        vals = []
        for v in arr:
            if isinstance(v, (bool, np.bool_)):
                raise InputError(f"{msg}, got the non-integer {v!r}")
            try:
                vals.append(operator.index(v))
            except TypeError:
                raise InputError(f"{msg}, got the non-integer {v!r}") from None
        bad = [v for v in vals if not 0 <= v <= _MAX_RUN_ID]
        if bad:
            raise InputError(f"{msg}, got {bad[0]}")
        return np.array(vals, dtype=np.uint64)
    if arr.size == 0 and arr.dtype.kind in "iuf":
        return np.zeros(0, dtype=np.uint64)
    if arr.dtype.kind not in "iu":
        raise InputError(f"{msg}, got dtype {arr.dtype}")
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise InputError(f"{msg}, got {int(arr.min())}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > _MAX_RUN_ID:
        raise InputError(f"{msg}, got {int(arr.max())}")
    return arr.astype(np.uint64)


def run_states(seed, run_ids):
    """Initial generator states of runs ``run_ids`` under ``seed``.

    Parameters
    ----------
    seed : int
        Integer in ``[0, 2**63 - 1]``, shared by a family of runs.
    run_ids : array_like of int, shape (n,)
        Non-negative integers ``<= 2**63 - 1``; one row is made per entry (repeats give equal
        rows).

    Returns
    -------
    states : ndarray of uint64, shape (n, STATE_WORDS)
        C-contiguous, 64-byte aligned; row ``i`` is the state of run ``run_ids[i]``, to be
        advanced in place by :func:`normal_fill` and the other generators. The derivation
        (module docstring) is stable across versions: the same ``(seed, run_id)`` always gives
        the same row.

    Raises
    ------
    ValueError
        If ``seed`` or an entry of ``run_ids`` is not an integer in ``[0, 2**63 - 1]``, or
        ``run_ids`` is not one-dimensional; the message names the parameter.
    """
    s = _check_seed(seed)
    ids = _check_run_ids(run_ids)
    n = ids.shape[0]
    # over-allocate by one cache line and start at a 64-byte boundary (see the layout notes)
    raw = np.zeros(n * STATE_WORDS + 8, dtype=np.uint64)
    start = (-raw.ctypes.data % 64) // 8
    states = raw[start : start + n * STATE_WORDS].reshape(n, STATE_WORDS)
    if n == 0:
        return states
    # numpy wraps uint64 arrays silently (no overflow warnings, unlike numpy scalars)
    key = _mix64(np.full(1, s ^ _DOMAIN, dtype=np.uint64))
    z0 = _mix64(key ^ ids)
    words = np.empty((n, 68), dtype=np.uint64)
    gamma = np.full(1, _GAMMA, dtype=np.uint64)
    for j in range(68):
        words[:, j] = _mix64(z0 + np.uint64(j + 1) * gamma)
    lanes = words[:, :64].reshape(n, _NLANES, 4)  # [run, lane, word]
    states[:, :_BUF] = lanes.transpose(0, 2, 1).reshape(n, 64)  # -> [run, word * 16 + lane]
    states[:, _POS] = _FULL
    states[:, _FIX : _FIX + 4] = words[:, 64:68]
    return states


# ---------------------------------------------------------------------------------------------
# Raw generators.
# ---------------------------------------------------------------------------------------------


@njit(inline="always", **JIT)
def _check_state(state):
    if state.shape[0] != STATE_WORDS:
        raise InputError("state must be one row of run_states(...) (STATE_WORDS uint64 words)")


@njit(inline="always", **JIT)
def _refill(state):
    """Advance the 16 lanes one step, writing their outputs to the buffer (vectorised)."""
    for l in range(_NLANES):
        s0 = state[l]
        s1 = state[16 + l]
        s2 = state[32 + l]
        s3 = state[48 + l]
        state[_BUF + l] = s0 + s3
        t = s1 << _U17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = (s3 << _U45) | (s3 >> _U19)
        state[l] = s0
        state[16 + l] = s1
        state[32 + l] = s2
        state[48 + l] = s3


# The fixup generator is passed around as four scalars (f0..f3) rather than as the state array:
# calls that take arrays pay atomic reference-count updates, which cost more than the rejection
# itself.


@njit(inline="always", **JIT)
def _fix_next(f0, f1, f2, f3):
    """One xoshiro256+ step of the fixup generator: (word, f0, f1, f2, f3)."""
    result = f0 + f3
    t = f1 << _U17
    f2 ^= f0
    f3 ^= f1
    f1 ^= f2
    f0 ^= f3
    f2 ^= t
    f3 = (f3 << _U45) | (f3 >> _U19)
    return result, f0, f1, f2, f3


@njit(**JIT)
def next_uint64(state):
    """Next 64-bit word of the run's main stream.

    Parameters
    ----------
    state : uint64 array, shape (STATE_WORDS,)
        One row of :func:`run_states`; advanced in place.

    Returns
    -------
    uint64
        Uniform on ``[0, 2**64)``. Its lowest 3-4 bits are weak (xoshiro256+); take high bits
        (``w >> k``) when fewer than 64 are needed.
    """
    _check_state(state)
    j = (np.int64(state[_POS]) + 1) >> 1  # skip a word half-used by normal_fill32
    if j >= _NLANES:
        _refill(state)
        j = 0
    state[_POS] = np.uint64(2 * (j + 1))
    return state[_BUF + j]


@njit(**JIT)
def next_double(state):
    """Uniform double in ``[0, 1)`` on the grid ``k / 2**53`` (top 53 bits of one word).

    Parameters
    ----------
    state : uint64 array, shape (STATE_WORDS,)
        One row of :func:`run_states`; advanced in place.

    Returns
    -------
    float64
    """
    return np.float64(next_uint64(state) >> _U11) * _TWO_M53


@njit(**JIT)
def randbelow(state, n):
    """Uniform integer in ``[0, n)`` without modulo bias.

    Takes the top ``bit_length(n - 1)`` bits of a word and rejects values ``>= n`` (fewer than 2
    words on average; the high bits avoid xoshiro256+'s weak low bits). ``n == 1`` returns 0
    without drawing.

    Parameters
    ----------
    state : uint64 array, shape (STATE_WORDS,)
        One row of :func:`run_states`; advanced in place.
    n : int64
        Positive bound.

    Returns
    -------
    int64
        In ``[0, n)``.

    Raises
    ------
    ValueError
        If ``n < 1``.
    """
    if n < 1:
        raise ValueError("randbelow: n must be >= 1")
    if n == 1:
        return 0
    m = np.uint64(n - 1)
    bits = 0
    while m != np.uint64(0):
        m >>= _U1
        bits += 1
    shift = _U64 - np.uint64(bits)
    limit = np.uint64(n)
    while True:
        r = next_uint64(state) >> shift
        if r < limit:
            return np.int64(r)


# ---------------------------------------------------------------------------------------------
# Ziggurat: rare paths (scalar, fixup stream).
# ---------------------------------------------------------------------------------------------


@njit(**JIT)
def _tail(f0, f1, f2, f3):
    """A draw of |x| beyond r, exact (Marsaglia's exponential rejection): (x, f0..f3)."""
    while True:
        u1, f0, f1, f2, f3 = _fix_next(f0, f1, f2, f3)
        u2, f0, f1, f2, f3 = _fix_next(f0, f1, f2, f3)
        # 1 - u is in (0, 1], so the logarithms are finite
        xx = -math.log1p(-np.float64(u1 >> _U11) * _TWO_M53) * _INV_R
        yy = -math.log1p(-np.float64(u2 >> _U11) * _TWO_M53)
        if yy + yy > xx * xx:
            return _ZIG_R + xx, f0, f1, f2, f3


@njit(**JIT)
def _wedge(idx, x, f0, f1, f2, f3):
    """Accept the point at abscissa x of layer idx's wedge? A uniform height in the wedge's
    bounding box is tested against the curve: (accepted, f0..f3)."""
    u, f0, f1, f2, f3 = _fix_next(f0, f1, f2, f3)
    y = _F[idx] + np.float64(u >> _U11) * _TWO_M53 * _DF[idx]
    # the curve is nearly straight across a thin wedge: its chord decides all but a sliver of
    # the heights without exp, always as exp would (_wedge_squeeze)
    chord = _F[idx - 1] + (x - _LO[idx]) * _SLOPE[idx]
    if y < chord - _BELOW[idx]:
        return True, f0, f1, f2, f3
    if y >= chord + _ABOVE[idx]:
        return False, f0, f1, f2, f3
    return y < math.exp(-0.5 * x * x), f0, f1, f2, f3


# The rare paths are inlined into the fills, though they run for 1.5 % of the draws only: as
# calls they cost the direct SGD kernel 6-11 % per step at d=1000 (interleaved A/B, one thread).
@njit(inline="always", **JIT)
def _slow64(w, f0, f1, f2, f3):
    """Exact float64 draw whose first trial is the rejected word w; retries use the fixup
    generator: (x, f0..f3)."""
    while True:
        idx = np.intp((w >> _U4) & _U255)
        m = np.int64(w >> _U12)
        neg = ((w >> _U3) & _U1) != np.uint64(0)
        x = (_as_f64(np.uint64(m) | _ONE_BITS) - 1.0) * _W64[idx]
        if m < _K52[idx]:
            return (-x if neg else x), f0, f1, f2, f3
        if idx == 0:
            t, f0, f1, f2, f3 = _tail(f0, f1, f2, f3)
            return (-t if neg else t), f0, f1, f2, f3
        ok, f0, f1, f2, f3 = _wedge(idx, x, f0, f1, f2, f3)
        if ok:
            return (-x if neg else x), f0, f1, f2, f3
        w, f0, f1, f2, f3 = _fix_next(f0, f1, f2, f3)


@njit(inline="always", **JIT)
def _slow32(h, f0, f1, f2, f3):
    """Float32 counterpart of _slow64 for the 32-bit half h; wedge and tail in float64."""
    while True:
        idx = np.intp((h >> _V23) & _V255)
        m = np.int64(h & _MANT32)
        neg = (h & _SIGN32) != np.uint32(0)
        if m < _K23[idx]:
            x32 = (_as_f32(np.uint32(m) | _ONE_BITS32) - _F32_ONE) * _W32[idx]
            return (-x32 if neg else x32), f0, f1, f2, f3
        if idx == 0:
            t, f0, f1, f2, f3 = _tail(f0, f1, f2, f3)
            t32 = np.float32(t)
            return (-t32 if neg else t32), f0, f1, f2, f3
        x = np.float64(m) * _TWO_M23 * _W64[idx]
        ok, f0, f1, f2, f3 = _wedge(idx, x, f0, f1, f2, f3)
        if ok:
            xr = np.float32(x)
            return (-xr if neg else xr), f0, f1, f2, f3
        w, f0, f1, f2, f3 = _fix_next(f0, f1, f2, f3)
        h = np.uint32(w >> _U32)  # the high half: xoshiro256+'s strong bits


# ---------------------------------------------------------------------------------------------
# Ziggurat: vectorised fast paths and the public fills.
# ---------------------------------------------------------------------------------------------


@njit(inline="always", **JIT)
def _fast64(buf, dst, cnt):
    """dst[k] from word buf[k], k < cnt <= 64, by the fast path; returns the bit mask of the
    positions whose word needs the slow path.

    Branch-free so that LLVM vectorises it; a rejected word leaves a wrong value in dst, which
    the caller overwrites. Inlined, so a literal cnt gives a fixed-length, fully unrolled loop.
    The mask lets the caller visit only the rejected positions (1.5 % of the draws) instead of
    re-testing every word of a chunk that has one (7-17 % faster fills in an interleaved
    A/B on one thread).
    """
    bad = _U0
    for k in range(cnt):
        w = buf[k]
        idx = np.intp((w >> _U4) & _U255)
        m = w >> _U12
        x = (_as_f64(m | _ONE_BITS) - 1.0) * _W64[idx]
        dst[k] = _as_f64(_as_u64(x) | ((w << _U60) & _SIGN64))  # sign from bit 3
        bad |= np.uint64(np.int64(m) >= _K52[idx]) << np.uint64(k)
    return bad


@njit(inline="always", **JIT)
def _fast32(halves, dst, cnt):
    """Float32 counterpart of _fast64, one 32-bit half-word per output (cnt <= 64)."""
    bad = _U0
    for k in range(cnt):
        h = halves[k]
        idx = np.intp((h >> _V23) & _V255)
        m = h & _MANT32
        x = (_as_f32(m | _ONE_BITS32) - _F32_ONE) * _W32[idx]
        dst[k] = _as_f32(_as_u32(x) | (h & _SIGN32))
        bad |= np.uint64(np.int32(m) >= _K32[idx]) << np.uint64(k)
    return bad


@njit(**JIT)
def normal_fill(state, out):
    """Fill ``out`` with independent N(0, 1) draws from the run's stream.

    Parameters
    ----------
    state : uint64 array, shape (STATE_WORDS,)
        One row of :func:`run_states` (e.g. ``states[i]``); advanced in place.
    out : float64 array, shape (n,)
        Overwritten. Contiguous arrays take the fast (vectorised) path.

    Notes
    -----
    Uses exactly one main-stream word per output, so the concatenation of successive calls does
    not depend on their lengths (module docstring).
    """
    _check_state(state)
    n = out.shape[0]
    if n == 0:
        return
    f0 = state[_FIX]
    f1 = state[_FIX + 1]
    f2 = state[_FIX + 2]
    f3 = state[_FIX + 3]
    j = (np.int64(state[_POS]) + 1) >> 1  # a word half-used by normal_fill32 is skipped
    i = 0
    while i < n:
        if j >= _NLANES:
            _refill(state)
            j = 0
        cnt = min(_NLANES - j, n - i)
        buf = state[_BUF + j : _BUF + j + cnt]
        dst = out[i : i + cnt]
        # the full-round case gets its own fixed-length copy of the loop (about 15 % faster)
        bad = _fast64(buf, dst, _NLANES) if cnt == _NLANES else _fast64(buf, dst, cnt)
        # lowest set bit first: output order, so the fixup stream is consumed deterministically
        while bad != _U0:
            k = np.intp(_cttz(bad))
            dst[k], f0, f1, f2, f3 = _slow64(buf[k], f0, f1, f2, f3)
            bad &= bad - _U1
        i += cnt
        j += cnt
    state[_POS] = np.uint64(2 * j)
    state[_FIX] = f0
    state[_FIX + 1] = f1
    state[_FIX + 2] = f2
    state[_FIX + 3] = f3


@njit(**JIT)
def normal_fill32(state, out):
    """Fill ``out`` with independent N(0, 1) draws in float32 from the run's stream.

    Parameters
    ----------
    state : uint64 array, shape (STATE_WORDS,)
        One row of :func:`run_states`; advanced in place.
    out : float32 array, shape (n,)
        Overwritten. Contiguous arrays take the fast (vectorised) path.

    Notes
    -----
    Uses one 32-bit half-word per output (two per main-stream word), so it needs half the raw
    numbers of :func:`normal_fill`; successive calls are split-independent (a half-word left
    over by a call of odd length is used by the next ``normal_fill32`` call). The numbers are
    not the float32 rounding of :func:`normal_fill`'s: it is a separate stream of the same law.
    """
    _check_state(state)
    n = out.shape[0]
    if n == 0:
        return
    f0 = state[_FIX]
    f1 = state[_FIX + 1]
    f2 = state[_FIX + 2]
    f3 = state[_FIX + 3]
    c = np.int64(state[_POS])
    words = state[_BUF : _BUF + _NLANES]
    strided = words.strides[0] != 8  # a row of a non-C-ordered array: view needs contiguity
    if strided:
        words = np.ascontiguousarray(words)
    # little-endian: half 2k is the low half of word k. The view is made once per call (a
    # view per round cost about 8 % of the fill); refills rewrite the words it shows in place.
    all_halves = words.view(np.uint32)
    i = 0
    while i < n:
        if c >= _FULL:
            _refill(state)
            c = 0
            if strided:  # the copy is not a view of the state: refresh it
                for k in range(_NLANES):  # a loop: no array assignment's error path to compile
                    words[k] = state[_BUF + k]
        cnt = min(_FULL - c, n - i)
        halves = all_halves[c : c + cnt]
        dst = out[i : i + cnt]
        bad = _fast32(halves, dst, _FULL) if cnt == _FULL else _fast32(halves, dst, cnt)
        while bad != _U0:
            k = np.intp(_cttz(bad))
            dst[k], f0, f1, f2, f3 = _slow32(halves[k], f0, f1, f2, f3)
            bad &= bad - _U1
        i += cnt
        c += cnt
    state[_POS] = np.uint64(c)
    state[_FIX] = f0
    state[_FIX + 1] = f1
    state[_FIX + 2] = f2
    state[_FIX + 3] = f3
