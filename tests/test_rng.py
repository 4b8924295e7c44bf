"""Tests of fastquad.rng: bit-exactness against the pure-Python reference, the normal law
(with mutant samplers showing that the statistical checks can fail), reproducibility under
batching and threading, stream independence, uniform integers and input validation."""

import math

import naive_rng as N
import numba
import numpy as np
import pytest
from numba import njit, prange
from scipy import special, stats

from fastquad import rng
from fastquad.rng import (
    STATE_WORDS,
    next_double,
    next_uint64,
    normal_fill,
    normal_fill32,
    randbelow,
    run_states,
)

R = 3.6541528853610088
P_BEYOND_R = 2.0 * stats.norm.sf(R)  # 2.59e-4
P_BEYOND_45 = 2.0 * stats.norm.sf(4.5)  # 6.80e-6


# ---------------------------------------------------------------------------------------------
# compiled helpers
# ---------------------------------------------------------------------------------------------


@njit
def _fill64(state, n, chunk):
    out = np.empty(n)
    for a in range(0, n, chunk):
        normal_fill(state, out[a : min(a + chunk, n)])
    return out


@njit
def _fill32(state, n, chunk):
    out = np.empty(n, dtype=np.float32)
    for a in range(0, n, chunk):
        normal_fill32(state, out[a : min(a + chunk, n)])
    return out


@njit
def _tail_scan(state, nbuf, d, use32):
    """Draw nbuf buffers of length d; count |x| > R and > 4.5 and keep the |x| > R values."""
    b64 = np.empty(d)
    b32 = np.empty(d, dtype=np.float32)
    tail = np.empty(nbuf * d // 1000 + 1000)
    nt = 0
    n45 = 0
    for _ in range(nbuf):
        if use32:
            normal_fill32(state, b32)
            for k in range(d):
                b64[k] = b32[k]
        else:
            normal_fill(state, b64)
        for k in range(d):
            a = abs(b64[k])
            if a > R:
                if nt < tail.shape[0]:
                    tail[nt] = a
                nt += 1
                if a > 4.5:
                    n45 += 1
    return nt, n45, tail[: min(nt, tail.shape[0])]


@njit(parallel=True)
def _batch(states, d, steps, out64, out32, outk):
    """Each run alone in its prange iteration: mixed calls on its own state row."""
    for i in prange(states.shape[0]):
        st = states[i]
        for t in range(steps):
            normal_fill(st, out64[i, t * d : (t + 1) * d])
            normal_fill32(st, out32[i, t * d : (t + 1) * d])
            outk[i, t] = randbelow(st, 1000003)


def _run_batch(states, d=37, steps=5):
    n = states.shape[0]
    out64 = np.empty((n, d * steps))
    out32 = np.empty((n, d * steps), dtype=np.float32)
    outk = np.empty((n, steps), dtype=np.int64)
    _batch(states, d, steps, out64, out32, outk)
    return out64, out32, outk


# ---------------------------------------------------------------------------------------------
# statistical checks and mutant samplers (NumPy, vectorised)
# ---------------------------------------------------------------------------------------------


def law_failures(x):
    """Names of the failed checks of x (10^6 draws or more) against N(0, 1); empty if all pass."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    fails = []
    x2 = x * x
    if abs(x.mean()) > 5.0 / math.sqrt(n):
        fails.append("mean")
    if abs(x2.mean() - 1.0) > 5.0 * math.sqrt(2.0 / n):
        fails.append("variance")
    x2 *= x2
    if abs(x2.mean() - 3.0) > 5.0 * math.sqrt(96.0 / n):
        fails.append("4th moment")
    if stats.kstest(x[: 10**6], "norm").pvalue < 1e-4:  # sorting more costs seconds
        fails.append("KS")
    # counts of |x| in the x-ranges of the ziggurat's layers, where table and wedge errors show
    edges = np.concatenate([[0.0], N.X[1:], [np.inf]])
    p = np.diff(2.0 * special.ndtr(edges) - 1.0)
    counts = np.bincount(np.searchsorted(edges, np.abs(x), side="right") - 1, minlength=p.size)
    if stats.chisquare(counts[: p.size], p * n).pvalue < 1e-4:
        fails.append("layer chi2")
    return fails


def tail_failures(nt, n45, tail, ndraws):
    """Checks of the tail |x| > R: its mass, the mass beyond 4.5, and its conditional law."""
    fails = []
    for count, p, name in ((nt, P_BEYOND_R, "P(|x|>r)"), (n45, P_BEYOND_45, "P(|x|>4.5)")):
        if abs(count - ndraws * p) > 4.0 * math.sqrt(ndraws * p):
            fails.append(name)
    # |x| given |x| > R has survival function sf(t) / sf(R)
    sf_r = stats.norm.sf(R)
    cdf = lambda t: 1.0 - stats.norm.sf(t) / sf_r  # noqa: E731
    if stats.kstest(tail, cdf).pvalue < 1e-4:
        fails.append("tail law")
    return fails


def _tables():
    return np.array(N.X), np.array(N.F), np.array(N.K52)


def exact_tail(gen, k):
    out = np.empty(0)
    while out.size < k:
        xx = -np.log1p(-gen.random(2 * k + 10)) / R
        yy = -np.log1p(-gen.random(2 * k + 10))
        out = np.concatenate([out, R + xx[yy + yy > xx * xx]])
    return out[:k]


def mutant_tail(gen, k):
    return R + gen.exponential(size=k) / R  # Marsaglia's proposal without the rejection step


def zig_numpy(n, gen, slow=True, wedge_curve=None, tail=exact_tail):
    """Vectorised ziggurat on the fastquad tables, with switches that break it."""
    X, F, K = _tables()
    curve = wedge_curve or (lambda x: np.exp(-0.5 * x * x))
    out = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        w = gen.integers(0, 2**64 - 1, size=todo.size, dtype=np.uint64, endpoint=True)
        idx = ((w >> np.uint64(4)) & np.uint64(255)).astype(np.intp)
        m = (w >> np.uint64(12)).astype(np.int64)
        sign = np.where((w >> np.uint64(3)) & np.uint64(1), -1.0, 1.0)
        x = m * 2.0**-52 * X[idx]
        if not slow:
            out[todo] = sign * x
            break
        fast = m < K[idx]
        in_tail = ~fast & (idx == 0)
        wedge = ~fast & (idx > 0)
        y = F[idx] + gen.random(todo.size) * (F[idx - 1] - F[idx])
        wedge_ok = wedge & (y < curve(x))
        res = sign * x
        res[in_tail] = sign[in_tail] * tail(gen, int(in_tail.sum()))
        done = fast | wedge_ok | in_tail
        out[todo[done]] = res[done]
        todo = todo[~done]
    return out


# ---------------------------------------------------------------------------------------------
# bit-exactness against the pure-Python reference
# ---------------------------------------------------------------------------------------------

SEED_RUNS = [(0, 0), (1, 5), (12345, 2**40 + 7), (2**63 - 1, 2**63 - 1)]


def test_reference_generators_match_published_outputs():
    # SplitMix64 seeded with 1234567: the test vector used by ports of Vigna's splitmix64.c
    sm = N.SplitMix64(1234567)
    assert [sm.next() for _ in range(5)] == [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
        4593380528125082431,
        16408922859458223821,
    ]
    # xoshiro256+ from (1, 2, 3, 4), worked by hand: s0 + s3 = 5, then the state becomes
    # (1 ^ 6, 2 ^ 2, 3 ^ 1 ^ 2 << 17, rotl(4 ^ 2, 45)) = (7, 0, 262146, 6 << 45)
    x = N.Xoshiro256Plus([1, 2, 3, 4])
    assert x.next() == 5
    assert x.s == [7, 0, 262146, 6 << 45]
    assert x.next() == 7 + (6 << 45)


@pytest.mark.parametrize("seed,run_id", SEED_RUNS)
def test_state_rows_match_reference(seed, run_id):
    row = run_states(seed, [run_id])[0]
    assert row.dtype == np.uint64 and row.shape == (STATE_WORDS,)
    assert row.tolist() == N.state_row(seed, run_id)
    # a row does not depend on the other ids of the batch
    batch = run_states(seed, [3, run_id, 0])
    assert np.array_equal(batch[1], row)


@pytest.mark.parametrize("seed,run_id", SEED_RUNS)
def test_raw_outputs_match_reference(seed, run_id):
    st = run_states(seed, [run_id])[0]
    ref = N.NaiveStream(seed, run_id)
    got = [int(next_uint64(st)) for _ in range(100)]
    assert got == [ref.next_word() for _ in range(100)]
    assert [next_double(st) for _ in range(20)] == [ref.next_double() for _ in range(20)]
    for n in (1, 2, 3, 10, 1000003, 2**62 + 1, 2**63 - 1):
        assert [randbelow(st, n) for _ in range(5)] == [ref.randbelow(n) for _ in range(5)]


@pytest.mark.parametrize("seed,run_id", SEED_RUNS[:3])
def test_normals_match_reference_bit_for_bit(seed, run_id):
    # 20000 draws hit about 300 wedges and 6 tails; odd lengths leave partial buffers behind
    st = run_states(seed, [run_id])[0]
    ref = N.NaiveStream(seed, run_id)
    a = np.empty(20001)
    normal_fill(st, a)
    b = np.array([ref.normal() for _ in range(a.size)])
    assert np.sum(np.abs(b) > R) >= 1  # the tail path was exercised
    assert np.array_equal(a.view(np.uint64), b.view(np.uint64))
    a32 = np.empty(20001, dtype=np.float32)
    normal_fill32(st, a32)
    b32 = np.array([ref.normal32() for _ in range(a32.size)], dtype=np.float32)
    assert np.array_equal(a32.view(np.uint32), b32.view(np.uint32))
    # and the streams carry on in step afterwards
    assert int(next_uint64(st)) == ref.next_word()


def test_mixed_call_sequence_matches_reference():
    st = run_states(99, [4])[0]
    ref = N.NaiveStream(99, 4)
    gen = np.random.default_rng(0)
    for _ in range(300):
        kind = gen.integers(5)
        if kind == 0:
            n = int(gen.integers(0, 40))
            a = np.empty(n)
            normal_fill(st, a)
            assert a.tolist() == [ref.normal() for _ in range(n)]
        elif kind == 1:
            n = int(gen.integers(0, 40))
            a = np.empty(n, dtype=np.float32)
            normal_fill32(st, a)
            assert a.tolist() == [float(ref.normal32()) for _ in range(n)]
        elif kind == 2:
            assert int(next_uint64(st)) == ref.next_word()
        elif kind == 3:
            assert next_double(st) == ref.next_double()
        else:
            n = int(gen.integers(1, 100))
            assert randbelow(st, n) == ref.randbelow(n)


def test_tables_are_the_ziggurat():
    x, f = rng._X, rng._F
    assert np.array_equal(x, N.X) and np.array_equal(f, N.F)
    assert rng._K52.tolist() == N.K52 and rng._K23.tolist() == N.K23
    # every layer has the same area v under exp(-x^2/2), the top one included
    v = N.V
    assert abs(v - 4.92867323399e-3) < 1e-13
    areas = x[2:] * (f[1:-1] - f[2:])
    assert np.allclose(areas, v, rtol=1e-12, atol=0)
    assert abs(x[1] * (1.0 - f[1]) - v) < 1e-12 * v
    assert abs(x[0] * f[255] - v) < 1e-15  # the base strip with its tail
    assert np.all(np.diff(x[1:]) > 0) and x[255] == R
    assert rng._K52[1] == 0 and np.all(rng._K52 < 2**52) and np.all(rng._K23 < 2**23)
    # two entries of NumPy's ki table (ziggurat_constants.h), computed there more precisely;
    # with the 12-digit v they would be 3e-12 away
    assert abs(int(rng._K52[0]) - 0x000EF33D8025EF6A) < 2**52 * 1e-13
    assert abs(int(rng._K52[2]) - 0x000C08BE98FBC6A8) < 2**52 * 1e-13


def test_wedge_squeeze_decides_as_the_exact_test():
    # the chord bounds must hold on a grid 7x finer than the one that built them and at random
    # abscissae; shrinking the bounds' safety factor below 1 makes this fail
    lo, slope, below, above = rng._LO, rng._SLOPE, rng._BELOW, rng._ABOVE
    x, f = rng._X, rng._F
    gen = np.random.default_rng(5)
    for i in range(1, 256):
        a, b = (0.0 if i == 1 else x[i - 1]), x[i]
        assert lo[i] == a
        t = np.sort(np.concatenate([np.linspace(a, b, 28001)[1:-1:2], gen.uniform(a, b, 4000)]))
        curve = np.exp(-0.5 * t * t)
        chord = f[i - 1] + (t - a) * slope[i]
        assert np.all(curve >= chord - below[i]) and np.all(curve <= chord + above[i])
        # heights at and beyond the bands' edges: wherever the squeeze decides, exp agrees
        y = np.concatenate(
            [chord - below[i] * (1 + 1e-9), chord + above[i], gen.uniform(f[i], f[i - 1], t.size)]
        )
        tt = np.tile(t, 3)
        ch = np.tile(chord, 3)
        exact = y < np.exp(-0.5 * tt * tt)
        accept = y < ch - below[i]
        reject = y >= ch + above[i]
        assert np.all(exact[accept]) and not np.any(exact[reject])
    # and on a typical layer it decides almost every point (89 % of wedge tests, weighted by
    # how often each wedge is hit; the top layer, all wedge and curved, is the exception)
    band = (below[1:] + above[1:]) / rng._DF[1:]
    assert band.mean() < 0.01


# ---------------------------------------------------------------------------------------------
# the normal law
# ---------------------------------------------------------------------------------------------


def test_checks_pass_exact_sampler_and_fail_mutants():
    gen = np.random.default_rng(2024)
    n = 10**6
    assert law_failures(zig_numpy(n, gen)) == []
    assert law_failures(zig_numpy(n, gen, slow=False)) != []  # wedges and tail not handled
    assert law_failures(zig_numpy(n, gen, wedge_curve=lambda x: np.exp(-x * x))) != []
    assert law_failures(gen.standard_t(30, size=n)) != []  # heavier tails, same variance scale
    # the tail checks: exact tail passes; the unrejected exponential and the fast path fail
    k = 10**4
    n45 = int(k * P_BEYOND_45 / P_BEYOND_R)
    assert tail_failures(k, n45, exact_tail(gen, k), k / P_BEYOND_R) == []
    bad = mutant_tail(gen, k)
    assert "tail law" in tail_failures(k, int(np.sum(bad > 4.5)), bad, k / P_BEYOND_R)
    fast_only = zig_numpy(2 * 10**6, gen, slow=False)
    beyond = np.abs(fast_only)[np.abs(fast_only) > R]
    assert tail_failures(beyond.size, int(np.sum(beyond > 4.5)), beyond, fast_only.size) != []


# 10^7 draws: a variance off by 0.4 % (layer widths off by one index in half the table) is 9 se
LAW_DRAWS = 10**7


def test_float64_law():
    st = run_states(7, [0])[0]
    x = _fill64(st, LAW_DRAWS, 1000)
    assert law_failures(x) == []


def test_float32_law():
    st = run_states(7, [1])[0]
    x = _fill32(st, LAW_DRAWS, 1000)
    assert x.dtype == np.float32
    assert law_failures(x) == []


@pytest.mark.parametrize("use32", [False, True])
def test_tails(use32):
    st = run_states(11, [int(use32)])[0]
    nbuf, d = 40000, 1000  # 4e7 draws: ~10^4 beyond r, ~270 beyond 4.5
    nt, n45, tail = _tail_scan(st, nbuf, d, use32)
    assert tail.size == nt
    assert tail_failures(nt, n45, tail, nbuf * d) == []


def test_signs_are_symmetric_in_the_tail():
    st = run_states(13, [0])[0]
    x = _fill64(st, 4 * 10**6, 1000)
    t = x[np.abs(x) > R]
    assert abs(np.mean(t > 0) - 0.5) < 4.0 * 0.5 / math.sqrt(t.size)


# ---------------------------------------------------------------------------------------------
# reproducibility
# ---------------------------------------------------------------------------------------------


def test_same_seed_and_run_give_same_draws():
    a = _fill64(run_states(5, [3])[0], 5000, 100)
    b = _fill64(run_states(5, [3])[0], 5000, 100)
    c = _fill64(run_states(5, [4])[0], 5000, 100)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("splits", [[1000], [1, 99, 900], [16, 15, 17, 0, 1, 951], [333] * 3 + [1]])
def test_normal_fill_is_split_independent(splits):
    st = run_states(21, [2])[0]
    whole = np.empty(1000)
    normal_fill(st, whole)
    st = run_states(21, [2])[0]
    parts = []
    for k in splits:
        p = np.empty(k)
        normal_fill(st, p)
        parts.append(p)
    assert np.array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("splits", [[1, 2, 31, 33, 933], [7] * 142 + [6], [1000]])
def test_normal_fill32_is_split_independent(splits):
    st = run_states(21, [3])[0]
    whole = np.empty(1000, dtype=np.float32)
    normal_fill32(st, whole)
    st = run_states(21, [3])[0]
    parts = []
    for k in splits:
        p = np.empty(k, dtype=np.float32)
        normal_fill32(st, p)
        parts.append(p)
    assert np.array_equal(np.concatenate(parts), whole)


def test_strided_arrays_give_the_same_draws():
    states = run_states(8, [0, 1])
    a = np.empty(300)
    normal_fill(states[0].copy(), a)
    big = np.zeros(600)
    normal_fill(states[0].copy(), big[::2])  # non-contiguous output
    assert np.array_equal(big[::2], a) and not np.any(big[1::2])
    f = np.asfortranarray(states)  # rows of a Fortran array are strided
    a32 = np.empty(301, dtype=np.float32)
    normal_fill32(states[1].copy(), a32)
    b32 = np.empty(301, dtype=np.float32)
    normal_fill32(f[1], b32)
    assert np.array_equal(a32, b32)
    assert not np.array_equal(f[1], states[1])  # the strided row itself was advanced


def test_prange_batch_equals_runs_alone_and_ignores_thread_count():
    seed, ids = 77, np.arange(64) * 3 + 1
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _run_batch(run_states(seed, ids))
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = _run_batch(run_states(seed, ids))
    finally:
        numba.set_num_threads(saved)
    for a, b in zip(one, two):
        assert np.array_equal(a, b)
    for k in (0, 17, 63):
        alone = _run_batch(run_states(seed, [ids[k]]))
        for a, b in zip(alone, two):
            assert np.array_equal(a[0], b[k])
    # and the kernel-side draws equal plain calls from Python
    st = run_states(seed, [ids[5]])[0]
    x = np.empty(37)
    normal_fill(st, x)
    assert np.array_equal(x, two[0][5, :37])
    assert len({two[0][i, 0] for i in range(64)}) == 64  # the runs differ


# ---------------------------------------------------------------------------------------------
# independence of streams
# ---------------------------------------------------------------------------------------------


def test_streams_of_neighbouring_ids_and_seeds_are_uncorrelated():
    n = 10**5
    pairs = [((7, 0), (7, 1)), ((7, 0), (8, 0)), ((0, 0), (1, 1)), ((7, 2**40), (7, 2**40 + 1))]
    tol = 4.5 / math.sqrt(n)
    for (s1, r1), (s2, r2) in pairs:
        a = _fill64(run_states(s1, [r1])[0], n, 1000)
        b = _fill64(run_states(s2, [r2])[0], n, 1000)
        assert not np.any(a[:1000] == b[:1000])
        for lag in (-1, 0, 1):
            aa, bb = (a[lag:], b[: n - lag]) if lag >= 0 else (a[:lag], b[-lag:])
            assert abs(np.corrcoef(aa, bb)[0, 1]) < tol, ((s1, r1), (s2, r2), lag)
    # the check has power: a stream against itself shifted by a few draws plus noise fails
    c = a[:-3] + 0.3 * b[3:]
    assert abs(np.corrcoef(c, a[:-3])[0, 1]) > tol


def test_seeding_streams_do_not_overlap():
    # correlation tests cannot see runs seeded from shifted copies of one SplitMix64 stream
    # (their xoshiro states differ), so check directly that no seed word is shared
    words = np.concatenate([run_states(s, np.arange(2000))[:, :85] for s in (0, 1)])
    words = np.delete(words, 80, axis=1).ravel()  # drop the buffer-position word
    words = words[words != 0]  # the empty buffer
    assert np.unique(words).size == words.size


def test_lanes_of_one_run_are_uncorrelated():
    st = run_states(3, [0])[0]
    w = np.array([next_uint64(st) for _ in range(16 * 4000)], dtype=np.uint64)
    u = (w >> np.uint64(11)).astype(np.float64).reshape(-1, 16)  # [round, lane]
    c = np.corrcoef(u.T)
    off = c[~np.eye(16, dtype=bool)]
    assert np.max(np.abs(off)) < 4.5 / math.sqrt(u.shape[0]) * 1.3


# ---------------------------------------------------------------------------------------------
# uniforms
# ---------------------------------------------------------------------------------------------


def test_next_double_range_and_grid():
    st = run_states(4, [0])[0]
    u = np.array([next_double(st) for _ in range(10**5)])
    assert u.min() >= 0.0 and u.max() < 1.0
    assert np.all(u * 2.0**53 == np.floor(u * 2.0**53))
    assert stats.kstest(u, "uniform").pvalue > 1e-4


@pytest.mark.parametrize("n", [2, 3, 10, 1000])
def test_randbelow_uniform(n):
    st = run_states(4, [n])[0]
    k = np.array([randbelow(st, n) for _ in range(50 * n if n > 10 else 20000)])
    assert k.min() >= 0 and k.max() < n
    counts = np.bincount(k, minlength=n)
    assert stats.chisquare(counts).pvalue > 1e-4


def test_randbelow_large_and_edge_bounds():
    st = run_states(4, [1])[0]
    for n in (2**62 + 1, 2**63 - 1, 3 * 2**40):
        k = np.array([randbelow(st, n) for _ in range(4000)], dtype=np.float64)
        assert k.min() >= 0 and k.max() < n
        assert abs(k.mean() / n - 0.5) < 4.0 * math.sqrt(1.0 / 12 / k.size)
    before = st.copy()
    assert randbelow(st, 1) == 0
    assert np.array_equal(st, before)  # n == 1 draws nothing
    for bad in (0, -5):
        with pytest.raises(ValueError):
            randbelow(st, bad)


def test_randbelow_shuffle_is_reproducible():
    @njit
    def shuffle(state, a):
        for i in range(a.shape[0] - 1, 0, -1):
            j = randbelow(state, i + 1)
            a[i], a[j] = a[j], a[i]

    a = np.arange(100)
    b = np.arange(100)
    shuffle(run_states(1, [0])[0], a)
    shuffle(run_states(1, [0])[0], b)
    assert np.array_equal(a, b) and sorted(a) == list(range(100))
    assert not np.array_equal(a, np.arange(100))


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [-3, 2**63, 2**64 + 1, 1.5, 2.0, "1", None, True, np.float64(3)])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63-1\]"):
        run_states(seed, [0])


def test_bad_seed_message_shows_value():
    with pytest.raises(ValueError, match=r"got -3$"):
        run_states(-3, [0])


@pytest.mark.parametrize(
    "run_ids",
    [
        [-1],
        [0, 1, -2],
        np.array([-1], dtype=np.int8),
        [2**63],
        np.array([2**63], dtype=np.uint64),
        [2**64 + 5],
        [1.5],
        np.arange(3.0),
        [[0, 1]],
        5,
        ["a"],
        [True],
        [None],
    ],
)
def test_bad_run_ids(run_ids):
    msg = r"run_ids must be a 1-D array of integers in \[0, 2\*\*63-1\]"
    with pytest.raises(ValueError, match=msg):
        run_states(0, run_ids)


def test_accepted_inputs():
    assert run_states(np.int64(3), np.array([1], dtype=np.uint8)).shape == (1, STATE_WORDS)
    assert np.array_equal(run_states(3, range(4)), run_states(3, np.arange(4, dtype=np.uint64)))
    top = np.array(N.state_row(3, 2**63 - 1), dtype=np.uint64)
    assert np.array_equal(run_states(3, [2**63 - 1])[0], top)
    states = run_states(0, np.arange(5))
    assert states.flags.c_contiguous and states.ctypes.data % 64 == 0
    assert run_states(0, []).shape == (0, STATE_WORDS)
    assert run_states(2**63 - 1, [0]).shape == (1, STATE_WORDS)


def test_state_of_wrong_length_is_rejected():
    with pytest.raises(ValueError):
        normal_fill(np.zeros(10, dtype=np.uint64), np.empty(4))
