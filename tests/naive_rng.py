"""Slow, obviously correct pure-Python reference of fastquad.rng.

Python integers masked to 64 bits and one generator object per lane, written straight from the
published algorithms (SplitMix64, xoshiro256+, Marsaglia and Tsang's ziggurat) and from the
seeding, layout and bit-usage contract in the docstring of :mod:`fastquad.rng`. Never used by
the package; the tests compare the Numba kernels with it bit for bit.
"""

import math

import numpy as np

MASK = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
DOMAIN = int.from_bytes(b"fastquad", "big")
LANES = 16


def rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & MASK


def mix64(z):
    """SplitMix64 output function (Stafford variant 13)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


class SplitMix64:
    """Vigna's SplitMix64: add GAMMA to the state, output mix64 of it."""

    def __init__(self, state):
        self.state = state & MASK

    def next(self):
        self.state = (self.state + GAMMA) & MASK
        return mix64(self.state)


class Xoshiro256Plus:
    """Blackman and Vigna's xoshiro256+ (the reference C code, line by line)."""

    def __init__(self, s):
        self.s = [w & MASK for w in s]

    def next(self):
        s = self.s
        result = (s[0] + s[3]) & MASK
        t = (s[1] << 17) & MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result


def seed_words(seed, run_id):
    """The 68 SplitMix64 words of run ``run_id`` under ``seed``: 16 lanes x 4, then the fixup."""
    z0 = mix64(mix64(seed ^ DOMAIN) ^ run_id)
    sm = SplitMix64(z0)
    return [sm.next() for _ in range(68)]


def state_row(seed, run_id):
    """The documented initial state row (STATE_WORDS = 88 words) as a list of ints."""
    w = seed_words(seed, run_id)
    row = [0] * 88
    for lane in range(LANES):
        for j in range(4):
            row[16 * j + lane] = w[4 * lane + j]
    row[80] = 32
    row[81:85] = w[64:68]
    return row


def ziggurat_tables(r=3.6541528853610088):
    """Marsaglia and Tsang's 256-layer tables; v is the exact layer area for r."""
    f = lambda x: math.exp(-0.5 * x * x)  # noqa: E731
    v = r * f(r) + math.sqrt(math.pi / 2) * math.erfc(r / math.sqrt(2))
    x = [0.0] * 256
    fx = [0.0] * 256
    x[0], x[255] = v / f(r), r
    fx[0], fx[255] = 1.0, f(r)
    for i in range(254, 0, -1):
        x[i] = math.sqrt(-2.0 * math.log(v / x[i + 1] + fx[i + 1]))
        fx[i] = f(x[i])
    ratio = [r / x[0], 0.0] + [x[i - 1] / x[i] for i in range(2, 256)]
    k52 = [math.floor(t * 2.0**52) for t in ratio]
    k23 = [math.floor(t * 2.0**23) for t in ratio]
    return x, fx, k52, k23, v


X, F, K52, K23, V = ziggurat_tables()
R = X[255]


class NaiveStream:
    """One run's streams, in the documented order, with the reference samplers."""

    def __init__(self, seed, run_id):
        w = seed_words(seed, run_id)
        self.lanes = [Xoshiro256Plus(w[4 * i : 4 * i + 4]) for i in range(LANES)]
        self.fix = Xoshiro256Plus(w[64:68])
        self.buf = []
        self.halves_used = 32  # of the current round of 16 words

    def _round(self):
        self.buf = [lane.next() for lane in self.lanes]
        self.halves_used = 0

    def next_word(self):
        """Next whole main-stream word (a word half-used by normal32 is skipped)."""
        j = (self.halves_used + 1) // 2
        if j >= LANES:
            self._round()
            j = 0
        self.halves_used = 2 * (j + 1)
        return self.buf[j]

    def next_half(self):
        if self.halves_used >= 2 * LANES:
            self._round()
        c = self.halves_used
        self.halves_used += 1
        word = self.buf[c // 2]
        return (word >> 32) if c % 2 else (word & 0xFFFFFFFF)

    def next_double(self):
        return (self.next_word() >> 11) * 2.0**-53

    def randbelow(self, n):
        if n == 1:
            return 0
        k = (n - 1).bit_length()
        while True:
            r = self.next_word() >> (64 - k)
            if r < n:
                return r

    def _fix_double(self):
        return (self.fix.next() >> 11) * 2.0**-53

    def _tail(self):
        while True:
            xx = -math.log1p(-self._fix_double()) * (1.0 / R)
            yy = -math.log1p(-self._fix_double())
            if yy + yy > xx * xx:
                return R + xx

    def _wedge(self, idx, x):
        y = F[idx] + self._fix_double() * (F[idx - 1] - F[idx])
        return y < math.exp(-0.5 * x * x)

    def normal(self):
        """One float64 N(0,1): a main-stream word, then fixup words for any retries."""
        w = self.next_word()
        while True:
            idx = (w >> 4) & 255
            m = w >> 12
            sign = -1.0 if (w >> 3) & 1 else 1.0
            x = (m * 2.0**-52) * X[idx]
            if m < K52[idx]:
                return sign * x
            if idx == 0:
                return sign * self._tail()
            if self._wedge(idx, x):
                return sign * x
            w = self.fix.next()

    def normal32(self):
        """One float32 N(0,1) from a 32-bit half-word; float32 fast path, float64 rare paths."""
        h = self.next_half()
        while True:
            idx = (h >> 23) & 255
            m = h & 0x7FFFFF
            sign = np.float32(-1.0) if h >> 31 else np.float32(1.0)
            if m < K23[idx]:
                return sign * (np.float32(m * 2.0**-23) * np.float32(X[idx]))
            if idx == 0:
                return sign * np.float32(self._tail())
            x = m * 2.0**-23 * X[idx]
            if self._wedge(idx, x):
                return sign * np.float32(x)
            h = self.fix.next() >> 32
