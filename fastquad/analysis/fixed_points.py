"""Fixed points of the order-parameter ODE: found, polished, deduplicated up to symmetry and
classified by the eigenvalues of the Jacobian; and the Hessian of eps_g in parameter space.

Coordinates
-----------
A state ``(Q, R, v)`` is the flat vector ``x = [Q[triu], R.ravel(), v]`` of length
``K (K + 1) / 2 + K M (+ K)``: the upper triangle of Q (row-major, diagonal included), then R,
then v only if the second layer is trained. Eigenvalues and eigenvectors of a
:class:`FixedPoint` refer to these coordinates.

Symmetries
----------
The ODE is unchanged by a permutation of the student units (rows and columns of Q, rows of R
and entries of v together), by the sign of each student vector ``w_j`` (row j of R and the
off-diagonal row/column j of Q flip) and by those permutations and sign flips of the teacher
units that leave ``v*`` and T unchanged (an orthogonal map of input space then carries the
teacher onto itself). With a trained second layer and no SGD-noise term, every fixed point
also lies on the rescaling orbit ``w_j -> a_j w_j``, ``v_j -> v_j / a_j^2`` (same network
function, so critical points map to critical points): points are compared through the
rescaling invariants ``sign(v_j)``, ``sqrt|v_i v_j| Q_ij`` and ``sqrt|v_j| R_jn``, and each
class is reported at the member whose conserved quantities ``C_j = Q_jj - 2 v_j^2`` equal
``conserved`` (0 by default: where a small initialisation lives). A unit with ``w_j = 0`` is a
line of fixed points in v_j; it is reported at ``|v_j| = sqrt(-conserved_j / 2)`` if
``conserved_j < 0``, else at ``|v_j| = max|v*|``, with its sign kept (the kind and eps_g are the
same along each half-line).
"""

import itertools
from dataclasses import dataclass, replace

import numpy as np
from scipy import optimize

from .. import _validate as V
from ..closed_form import generalization_error, population_gradients
from ..kernels import ode as _k

KINDS = ("stable", "saddle", "unstable", "degenerate")

# Scaled residual accepted from the first polish (before rescaling to the reported member):
# tol * max(1, max|x|)^3, since the right-hand side is cubic in the overlaps.
_RES_POWER = 3
# Gram matrix [[Q, R], [R^T, T]] eigenvalues above -_PSD_RTOL * max(1, |G|): physical.
_PSD_RTOL = 1e-8
# Q_jj below this (times the scale) is a dead unit (w_j = 0); |v_j| Q_jj below it: v_j = 0.
_DEAD_RTOL = 1e-8
# Entries below this (times the scale) do not fix a sign in the canonical form: far above
# the polishing error, far below any overlap that means something.
_SIGN_RTOL = 1e-4
# Cap on (student x teacher) orderings tried by the canonical form; beyond it only the sort
# by the invariant key orders units (K, M of a dozen or more).
_MAX_ORDERINGS = 20000


# ----------------------------------------------------------------------------- coordinates

def _n_coords(K, M, train_v):
    return K * (K + 1) // 2 + K * M + (K if train_v else 0)


def pack(Q, R, v, train_second_layer=True):
    """State -> coordinate vector ``[Q[triu], R.ravel(), v (if trained)]``.

    Parameters
    ----------
    Q : array, shape (K, K)
    R : array, shape (K, M)
    v : array, shape (K,)
    train_second_layer : bool

    Returns
    -------
    ndarray, shape (K (K + 1) / 2 + K M (+ K),)
    """
    Q, R, v = np.asarray(Q, float), np.asarray(R, float), np.asarray(v, float)
    iu = np.triu_indices(Q.shape[0])
    parts = [Q[iu], R.ravel()] + ([v] if train_second_layer else [])
    return np.concatenate(parts)


def unpack(x, K, M, v_fixed=None):
    """Coordinate vector -> ``(Q (K, K), R (K, M), v (K,))``; ``v_fixed`` when v is frozen."""
    x = np.asarray(x, float)
    nq = K * (K + 1) // 2
    Q = np.zeros((K, K))
    iu = np.triu_indices(K)
    Q[iu] = x[:nq]
    Q = Q + np.triu(Q, 1).T
    R = x[nq:nq + K * M].reshape(K, M).copy()
    v = np.array(v_fixed, float) if v_fixed is not None else x[nq + K * M:].copy()
    return Q, R, v


class _System:
    """The right-hand side in coordinates, for one (T, v*, lr, switches).

    Inputs are validated once here; each evaluation then calls the kernel behind
    :func:`fastquad.ode_rhs` directly (its wrapper re-validates every call, 40x the cost of the
    arithmetic, and polishing needs thousands of calls). Tests check both agree.
    """

    def __init__(self, K, M, T, vt, lr, train_v, sgd_noise, label_noise, v_fixed=None):
        self.K, self.M = K, M
        self.T = np.ascontiguousarray(T, dtype=float)
        self.vt = np.ascontiguousarray(vt, dtype=float)
        self.lr = float(lr)
        self.train_v = bool(train_v)
        self.sgd_noise = bool(sgd_noise)
        self.sigma2 = float(label_noise) ** 2
        self.v_fixed = None if train_v else np.ascontiguousarray(v_fixed, dtype=float)
        self.n = _n_coords(K, M, train_v)
        self.rescale = self.train_v and not self.sgd_noise
        self._dQ = np.empty((K, K))
        self._dR = np.empty((K, M))
        self._dv = np.empty(K)

    def state(self, x):
        return unpack(x, self.K, self.M, self.v_fixed)

    def pack(self, Q, R, v):
        return pack(Q, R, v, self.train_v)

    def rhs(self, x):
        Q, R, v = self.state(x)
        _k.ode_rhs_into(np.ascontiguousarray(Q), np.ascontiguousarray(R),
                        np.ascontiguousarray(v), self.T, self.vt, self.lr, self.sigma2, 1.0,
                        self.train_v, self.sgd_noise, self._dQ, self._dR, self._dv)
        return self.pack(self._dQ, self._dR, self._dv)

    def residual(self, x):
        """max |rhs| / lr: the size of the velocity at x in units of lr."""
        return float(np.abs(self.rhs(x)).max()) / self.lr

    def jacobian(self, x):
        """Central finite differences, step ~ eps^(1/3) relative (the rhs is a polynomial)."""
        x = np.asarray(x, float)
        h = 6e-6 * np.maximum(1.0, np.abs(x))
        J = np.empty((self.n, self.n))
        for i in range(self.n):
            e = np.zeros(self.n)
            e[i] = h[i]
            J[:, i] = (self.rhs(x + e) - self.rhs(x - e)) / (2 * h[i])
        return J

    def eps_g(self, x):
        Q, R, v = self.state(x)
        return generalization_error(Q, R, self.T, v, self.vt)

    def physical(self, x, max_abs):
        """Finite, within max_abs and a Gram matrix of real vectors (PSD within round-off)."""
        if not np.all(np.isfinite(x)) or np.abs(x).max(initial=0.0) > max_abs:
            return False
        Q, R, _ = self.state(x)
        G = np.block([[Q, R], [R.T, self.T]])
        lam = np.linalg.eigvalsh(G)
        return lam[0] >= -_PSD_RTOL * max(1.0, np.abs(G).max())


# ----------------------------------------------------------------------------- polishing

def _polish(system, x0, tol, max_abs, scaled=True):
    """scipy.optimize.root from x0 ("hybr", then "lm"); the root or None."""
    f = system.rhs
    n = system.n
    for method, options in (("hybr", dict(xtol=1e-14, maxfev=400 * (n + 1))),
                            ("lm", dict(xtol=1e-15, ftol=1e-15, gtol=0.0,
                                        maxiter=400 * (n + 1)))):
        try:
            with np.errstate(all="ignore"):
                sol = optimize.root(f, x0, method=method, options=options)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
        x = sol.x
        if not np.all(np.isfinite(x)) or np.abs(x).max() > max_abs:
            continue
        res = system.residual(x)
        limit = tol * (max(1.0, np.abs(x).max()) ** _RES_POWER if scaled else 1.0)
        if res <= limit:
            return x
    return None


# ----------------------------------------------------------------------------- symmetry

class _UnionFind:
    """Sign variables with parities: s_a = parity(a, root) * s_root."""

    def __init__(self, n):
        self.parent = list(range(n))
        self.parity = [1] * n

    def find(self, a):
        p = 1
        while self.parent[a] != a:
            p *= self.parity[a]
            a = self.parent[a]
        return a, p

    def union(self, a, b, rel):
        """Impose s_a s_b = rel; False if it contradicts what is already imposed."""
        ra, pa = self.find(a)
        rb, pb = self.find(b)
        if ra == rb:
            return pa * pb == rel
        self.parent[rb] = ra
        self.parity[rb] = pa * pb * rel
        return True

    def signs(self):
        return np.array([self.find(a)[1] for a in range(len(self.parent))], dtype=float)


def _tie_groups(keys, tol):
    """Indices sorted by decreasing keys (tuples), grouped where every component ties."""
    order = sorted(range(len(keys)), key=lambda i: tuple(-k for k in keys[i]))
    groups = []
    for i in order:
        if groups and all(abs(a - b) <= tol for a, b in zip(keys[groups[-1][-1]], keys[i])):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _orderings(groups):
    """Every order that keeps the groups in place and permutes within each."""
    for combo in itertools.product(*(itertools.permutations(g) for g in groups)):
        yield [i for part in combo for i in part]


def _n_orderings(groups):
    n = 1
    for g in groups:
        n *= int(np.prod(np.arange(1, len(g) + 1)))
    return n


class Symmetry:
    """Canonical forms of states of one problem (K, M, T, v*) up to its symmetries.

    Parameters
    ----------
    T : array, shape (M, M)
    v_teacher : array, shape (M,)
    rescale : bool
        Also quotient by the rescaling ``w_j -> a w_j, v_j -> v_j / a^2`` (trained second
        layer, flow without SGD noise): compare the invariants ``sign(v_j)``,
        ``sqrt|v_i v_j| Q_ij``, ``sqrt|v_j| R_jn``.
    tol : float
        Relative tolerance of ties and of :meth:`same`.
    """

    def __init__(self, T, v_teacher, *, rescale, tol=1e-6):
        self.T = np.asarray(T, float)
        self.vt = np.asarray(v_teacher, float)
        self.M = self.vt.shape[0]
        self.rescale = bool(rescale)
        self.tol = float(tol)
        self.teacher_maps = self._teacher_maps()

    def _teacher_maps(self):
        """(sigma, forced sign relations) of teacher permutations keeping v* and T."""
        M, T, vt = self.M, self.T, self.vt
        scale = max(1.0, np.abs(T).max(), np.abs(vt).max())
        tol = self.tol * scale
        groups = _tie_groups([(vt[n], T[n, n]) for n in range(M)], tol)
        if _n_orderings(groups) > _MAX_ORDERINGS:
            groups = [[i] for g in groups for i in g]
        maps = []
        for sigma in _orderings(groups):
            sigma = np.array(sigma)
            Ts = T[np.ix_(sigma, sigma)]
            if np.abs(np.abs(Ts) - np.abs(T)).max(initial=0.0) > tol:
                continue
            forced = [(n, m, float(np.sign(T[n, m] * Ts[n, m])))
                      for n in range(M) for m in range(n + 1, M) if abs(T[n, m]) > tol]
            uf = _UnionFind(M)
            if all(uf.union(n, m, rel) for n, m, rel in forced):
                maps.append((sigma, forced))
        return maps

    def invariants(self, Q, R, v):
        """(labels (K,), Qe (K, K), Re (K, M)): what is compared; labels = v if not rescale."""
        Q, R, v = np.asarray(Q, float), np.asarray(R, float), np.asarray(v, float)
        if not self.rescale:
            return v.copy(), Q.copy(), R.copy()
        a = np.sqrt(np.abs(v))
        return np.sign(v), Q * np.outer(a, a), R * a[:, None]

    def canonical(self, Q, R, v):
        """The canonical member of the symmetry class of (Q, R, v).

        Units are sorted by decreasing label (v, or sign(v) with rescaling) then decreasing
        (effective) norm; ties are broken by trying their orderings (and those of equivalent
        teacher units) and keeping the lexicographically largest invariant vector; signs are
        fixed greedily, making the first significant R entry of each unit (in that order)
        positive, then its first significant Q entry with an earlier unit.

        Returns
        -------
        Q : ndarray, shape (K, K)
        R : ndarray, shape (K, M)
        v : ndarray, shape (K,)
            The same state, permuted and sign-flipped (a fixed point stays a fixed point).
        key : ndarray
            The invariant vector of the canonical member, for :meth:`same`.
        """
        Q, R, v = np.asarray(Q, float), np.asarray(R, float), np.asarray(v, float)
        K, M = R.shape
        lab, Qe, Re = self.invariants(Q, R, v)
        scale = max(1.0, np.abs(Qe).max(initial=0), np.abs(Re).max(initial=0),
                    np.abs(lab).max(initial=0))
        tol = self.tol * scale
        sig = _SIGN_RTOL * scale
        groups = _tie_groups([(lab[j], Qe[j, j]) for j in range(K)], tol)
        if _n_orderings(groups) * len(self.teacher_maps) > _MAX_ORDERINGS:
            groups = [[i] for g in groups for i in g]
        best = None
        for pi in _orderings(groups):
            pi = np.array(pi)
            for sigma, forced in self.teacher_maps:
                cand = self._signed(Qe, Re, lab, pi, sigma, forced, sig)
                if cand is None:
                    continue
                if best is None or _lex_greater(cand[0], best[0], tol):
                    best = (cand[0], pi, sigma, cand[1])
        key, pi, sigma, signs = best
        s, c = signs[:K], signs[K:]
        Qc = Q[np.ix_(pi, pi)] * np.outer(s, s)
        Rc = R[np.ix_(pi, sigma)] * np.outer(s, c)
        return Qc, Rc, v[pi].copy(), key

    @staticmethod
    def _signed(Qe, Re, lab, pi, sigma, forced, sig):
        K, M = Re.shape
        Qp = Qe[np.ix_(pi, pi)]
        Rp = Re[np.ix_(pi, sigma)]
        uf = _UnionFind(K + M)
        for n, m, rel in forced:
            if not uf.union(K + n, K + m, rel):
                return None
        for j in range(K):
            for n in range(M):
                x = Rp[j, n]
                if abs(x) > sig and uf.find(j)[0] != uf.find(K + n)[0]:
                    uf.union(j, K + n, float(np.sign(x)))
            for i in range(j):
                x = Qp[i, j]
                if abs(x) > sig and uf.find(j)[0] != uf.find(i)[0]:
                    uf.union(i, j, float(np.sign(x)))
        signs = uf.signs()
        s, c = signs[:K], signs[K:]
        Qs = Qp * np.outer(s, s)
        Rs = Rp * np.outer(s, c)
        iu = np.triu_indices(K)
        key = np.concatenate([lab[pi], Qs[iu], Rs.ravel()])
        return key, signs

    def function_keys(self, Q, R, v):
        """Invariants of the network function up to the symmetries, one vector per teacher map.

        With ``Vq = diag(v) Q``: ``tr(Vq^k)`` for k = 1..K (the spectrum of
        ``A = W^T diag(v) W / d``) and ``R^T diag(v) (Q diag(v))^k R`` for k = 0..K-1 (the
        teacher vectors seen through A): equal for states that are the same function, e.g.
        two parallel units sharing one direction in any proportion. Off-diagonal teacher
        entries enter by magnitude, so teacher sign flips need not be searched.
        """
        Q, R, v = np.asarray(Q, float), np.asarray(R, float), np.asarray(v, float)
        K, M = R.shape
        Vq = v[:, None] * Q
        moments, P = [], np.eye(K)
        for _ in range(K):
            P = P @ Vq
            moments.append(np.trace(P))
        Bs, P = [], np.eye(K)
        for _ in range(K):
            Bs.append(R.T @ (v[:, None] * P) @ R)
            P = (Q * v[None, :]) @ P
        keys = []
        off = ~np.eye(M, dtype=bool)
        for sigma, _ in self.teacher_maps:
            parts = [np.array(moments)]
            for B in Bs:
                Bp = B[np.ix_(sigma, sigma)]
                parts += [np.diag(Bp), np.abs(Bp[off])]
            keys.append(np.concatenate(parts))
        return keys

    def same(self, key_a, key_b):
        """Whether two canonical keys are the same point within the tolerance."""
        scale = max(1.0, np.abs(key_a).max(), np.abs(key_b).max())
        return bool(np.abs(key_a - key_b).max() <= 10 * self.tol * scale)


def _lex_greater(a, b, tol):
    for x, y in zip(a, b):
        if x > y + tol:
            return True
        if x < y - tol:
            return False
    return False


# ----------------------------------------------------------------------------- rescaling

def _rescale_to(system, x, conserved):
    """The member of x's rescaling orbit with C_j = conserved_j (dead units: see the module)."""
    Q, R, v = system.state(x)
    K = Q.shape[0]
    scale = max(1.0, np.abs(x).max())
    a = np.ones(K)
    v_new = v.copy()
    vt_max = max(np.abs(system.vt).max(), 1e-300)
    dead = _DEAD_RTOL * scale
    for j in range(K):
        if Q[j, j] <= dead:
            # w_j = 0: v_j is free on its half-line; exactly zero overlaps
            Q[j, :] = 0.0
            Q[:, j] = 0.0
            R[j, :] = 0.0
            if v[j] != 0.0:
                # on the C_j = conserved_j member when there is one (C_j = -2 v_j^2 here)
                size = np.sqrt(-conserved[j] / 2) if conserved[j] < 0 else vt_max
                v_new[j] = np.sign(v[j]) * size
            continue
        if abs(v[j]) * Q[j, j] <= dead:
            continue    # v_j = 0 with w_j != 0: its orbit does not reach other values of C_j
        # Q_jj b - 2 v_j^2 / b^2 = C (b = a^2) is increasing in b > 0: one root
        C = conserved[j]
        roots = np.roots([Q[j, j], -C, 0.0, -2.0 * v[j] ** 2])
        b = [r.real for r in roots if abs(r.imag) <= 1e-9 * abs(r) and r.real > 0]
        if not b:
            continue
        a[j] = np.sqrt(max(b))
        v_new[j] = v[j] / a[j] ** 2
    Q = Q * np.outer(a, a)
    R = R * a[:, None]
    return system.pack(Q, R, v_new)


# ----------------------------------------------------------------------------- classification

@dataclass(frozen=True, eq=False)
class FixedPoint:
    """A fixed point of the order-parameter ODE and its linear stability.

    Attributes
    ----------
    Q : ndarray, shape (K, K)
    R : ndarray, shape (K, M)
    v : ndarray, shape (K,)
    eps_g : float
        Generalisation error at the point.
    eigenvalues : ndarray of complex, shape (n,)
        Of the Jacobian of the ODE's right-hand side (at the lr it was found with) in the
        coordinates ``[Q[triu], R.ravel(), v (if trained)]``, sorted by decreasing real part.
    eigenvectors : ndarray of complex, shape (n, n)
        Matching right eigenvectors (columns).
    kind : str
        ``"stable"`` (no eigenvalue with positive real part, and every zero eigenvalue is a
        direction along a set of fixed points), ``"saddle"`` (both signs), ``"unstable"``
        (every nonzero eigenvalue positive) or ``"degenerate"`` (no positive eigenvalue, but a
        zero eigenvalue whose direction is not one of fixed points: linear stability cannot
        decide).
    n_unstable : int
        Eigenvalues with real part > the zero tolerance.
    n_zero : int
        Eigenvalues within ``zero_tol * max|eigenvalue|`` of 0 (symmetries, lines of fixed
        points such as the rescaling orbit or w_j = 0 with any v_j).
    residual : float
        ``max |rhs| / lr`` at the point.
    multiplicity : int
        How many starts converged to its symmetry class.
    T : ndarray, shape (M, M)
    v_teacher : ndarray, shape (M,)
    train_second_layer : bool
    n_variants : int
        How many distinct points (not related by a symmetry) were merged into this one because
        they are the same network function with the same stability: samples of a continuum of
        fixed points, such as two parallel units sharing one teacher direction in any
        proportion. 1 when nothing was merged.
    """

    Q: np.ndarray
    R: np.ndarray
    v: np.ndarray
    eps_g: float
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    kind: str
    n_unstable: int
    n_zero: int
    residual: float
    multiplicity: int
    T: np.ndarray
    v_teacher: np.ndarray
    train_second_layer: bool
    n_variants: int = 1

    @property
    def K(self):
        return self.v.shape[0]

    @property
    def M(self):
        return self.v_teacher.shape[0]

    def direction(self, mode=0):
        """Eigenvector ``mode`` (0: the most unstable) as a state change.

        Returns
        -------
        dQ : ndarray, shape (K, K)
        dR : ndarray, shape (K, M)
        dv : ndarray, shape (K,)
            Real part, scaled to max-norm 1 (zero dv if the second layer is frozen).
        """
        vec = np.real(self.eigenvectors[:, mode])
        vec = vec / np.abs(vec).max()
        dQ, dR, dv = unpack(vec, self.K, self.M,
                            None if self.train_second_layer else np.zeros(self.K))
        return dQ, dR, dv

    def perturbed(self, size, mode=0):
        """The state displaced by ``size`` (signed, max-norm) along eigenvector ``mode``.

        Where the point lies on the boundary of the physical states (a singular Gram matrix
        ``[[Q, R], [R^T, T]]``, e.g. a unit inside the teacher span), the displaced state may
        leave it at second order in ``size``; raise the diagonal of Q by that much to start a
        simulation from it.

        Returns
        -------
        Q : ndarray, shape (K, K)
        R : ndarray, shape (K, M)
        v : ndarray, shape (K,)
        """
        dQ, dR, dv = self.direction(mode)
        return self.Q + size * dQ, self.R + size * dR, self.v + size * dv


def _classify(system, x, zero_tol, tol):
    """Eigen-decomposition of the Jacobian at x and the kind, n_unstable, n_zero."""
    J = system.jacobian(x)
    lam, vec = np.linalg.eig(J)
    order = np.lexsort((-np.abs(lam), -lam.real))
    lam, vec = lam[order], vec[:, order]
    top = np.abs(lam).max(initial=0.0)
    zero = np.abs(lam) <= zero_tol * top if top > 0 else np.ones(lam.shape, bool)
    n_zero = int(zero.sum())
    n_unstable = int(np.count_nonzero(~zero & (lam.real > 0)))
    n_stable = int(np.count_nonzero(~zero & (lam.real < 0)))
    if n_zero == lam.size:
        kind = "degenerate"
    elif n_unstable and n_stable:
        kind = "saddle"
    elif n_unstable:
        kind = "unstable"
    elif n_zero and not _zero_modes_are_flat(system, x, J, n_zero, tol):
        kind = "degenerate"
    else:
        kind = "stable"
    return lam, vec, kind, n_unstable, n_zero


def _zero_modes_are_flat(system, x, J, n_zero, tol):
    """Whether each near-null direction of J is a direction along a set of fixed points.

    Displace x by delta along each right null vector and polish: on a manifold of fixed points
    the polish stays about delta away (it lands on a neighbouring fixed point); at an isolated
    degenerate point it falls back towards x. A Jordan block (fewer null vectors than zero
    eigenvalues) is never flat.
    """
    _, sv, Vt = np.linalg.svd(J)
    null = Vt[sv <= max(sv[0], 1e-300) * 1e-6]
    if null.shape[0] < n_zero:
        return False
    delta = 1e-3 * max(1.0, np.abs(x).max())
    for n in null:
        for sign in (1.0, -1.0):
            y = _polish(system, x + sign * delta * n, tol, np.inf)
            if y is None or np.linalg.norm(y - x) < 0.5 * delta:
                return False
    return True


# ----------------------------------------------------------------------------- starts

def _teacher_factor(T, r):
    """L (M, r) with L L^T = T, zero-padded to r columns (T PSD)."""
    lam, U = np.linalg.eigh(T)
    L = U * np.sqrt(np.clip(lam, 0.0, None))
    out = np.zeros((T.shape[0], r))
    out[:, :T.shape[0]] = L
    return out


def _random_starts(system, n, rng):
    """Physical starts of several kinds and scales, as coordinate vectors.

    Cycles through: random students at log-uniform scales (1e-2 to 3 times the teacher's),
    students near w = 0, and structured students whose units each either copy a random
    teacher unit (mostly with the teacher's sign of v and about its weight, on the balanced
    member C_j = 0), sit near 0 or point at random -- the neighbourhoods of the saddles and
    minima where some directions are learnt and others not, which random students of
    several units rarely come near.
    """
    K, M = system.K, system.M
    r = K + M
    Lt = _teacher_factor(system.T, r)
    t_diag = np.maximum(np.diag(system.T), 1e-12)
    t_scale = np.sqrt(t_diag.mean())
    vt_scale = max(np.abs(system.vt).max(), 1e-12)
    starts = []
    for i in range(n):
        mode = i % 3
        v = (rng.choice([-1.0, 1.0], K) * vt_scale * 10 ** rng.uniform(-1, 0.5, K)
             if system.train_v else system.v_fixed.copy())
        if mode == 0:
            W = rng.standard_normal((K, r)) * t_scale * 10 ** rng.uniform(-2, 0.5) / np.sqrt(r)
        elif mode == 1:
            W = rng.standard_normal((K, r)) * t_scale * 10 ** rng.uniform(-4, -2)
        else:
            W = np.empty((K, r))
            for j in range(K):
                u = rng.choice(3, p=[0.5, 0.2, 0.3])
                if u == 0:
                    m = rng.integers(0, M)
                    c = max(abs(system.vt[m]), 1e-3 * vt_scale) * 10 ** rng.uniform(-0.3, 0.3)
                    if system.train_v:
                        sign = np.sign(system.vt[m]) or 1.0
                        v[j] = (sign if rng.random() < 0.8 else -sign) * (c / 2) ** (1 / 3)
                    a = np.sqrt(c / max(abs(v[j]), 1e-12) / t_diag[m])
                    W[j] = rng.choice([-1, 1]) * a * Lt[m]
                    W[j] += 0.03 * a * np.sqrt(t_diag[m] / r) * rng.standard_normal(r)
                elif u == 1:
                    W[j] = 1e-3 * t_scale * rng.standard_normal(r)
                else:
                    W[j] = t_scale * rng.standard_normal(r) / np.sqrt(r)
        starts.append(system.pack(W @ W.T, W @ Lt.T, v))
    return starts


def _trajectory_starts(system, trajectories, max_per_run=6, rate=0.05):
    """States where recorded curves plateau: local minima of |d ln eps / d ln t| below rate,
    plus the last record of each run (plateaus sit near saddles, the end near an attractor)."""
    t, eps, Q, R, v = _trajectory_arrays(trajectories, system.K, system.M)
    starts = []
    for r in range(eps.shape[0]):
        ok = np.isfinite(eps[r]) & (t > 0) & (eps[r] > 0)
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            continue
        starts.append(system.pack(Q[r, idx[-1]], R[r, idx[-1]], v[r, idx[-1]]))
        if idx.size < 3:
            continue
        g = np.abs(np.gradient(np.log(eps[r, idx]), np.log(t[idx])))
        loc = [k for k in range(1, idx.size - 1)
               if g[k] <= g[k - 1] and g[k] <= g[k + 1] and g[k] < rate]
        loc = sorted(loc, key=lambda k: g[k])[:max_per_run]
        for k in loc:
            starts.append(system.pack(Q[r, idx[k]], R[r, idx[k]], v[r, idx[k]]))
    return starts


def _trajectory_arrays(traj, K, M):
    """(t, eps (runs, times), Q, R, v) from a Result-like object or an xarray Dataset."""
    try:
        if hasattr(traj, "data_vars"):
            t = np.asarray(traj["time"].values, float)
            eps, Q, R, v = (np.asarray(traj[k].values, float) for k in ("eps_g", "Q", "R", "v"))
        else:
            t = np.asarray(traj.t, float)
            eps, Q, R, v = (np.asarray(getattr(traj, k), float) for k in ("eps_g", "Q", "R", "v"))
    except (AttributeError, KeyError, TypeError) as exc:
        raise ValueError("trajectories must be a fastquad Result (or a dataset with time, "
                         f"eps_g, Q, R, v), got {type(traj).__name__}") from exc
    if eps.ndim == 1:
        eps, Q, R, v = eps[None], Q[None], R[None], v[None]
    n, nt = eps.shape
    if (t.shape != (nt,) or Q.shape != (n, nt, K, K) or R.shape != (n, nt, K, M)
            or v.shape != (n, nt, K)):
        raise ValueError(f"trajectories must have K={K} student and M={M} teacher units and "
                         f"matching time axes, got Q {Q.shape}, R {R.shape}, v {v.shape}")
    return t, eps, Q, R, v


# ----------------------------------------------------------------------------- public

def _check_teacher(T, v_teacher, M):
    p = V.Problems()
    vt = p.check(V.finite_array, "v_teacher", v_teacher, shape=(M,))
    if T is None:
        T = np.eye(M)
    T = p.check(V.finite_array, "T", T, shape=(M, M))
    p.raise_if_any()
    if np.abs(T - T.T).max() > 1e-10 * max(1.0, np.abs(T).max()):
        raise ValueError("T must be symmetric")
    T = 0.5 * (T + T.T)
    if np.linalg.eigvalsh(T)[0] < -1e-10 * max(1.0, np.abs(T).max()):
        raise ValueError("T must be positive semi-definite (a Gram matrix of teacher vectors)")
    return T, vt


def find_fixed_points(K, M, T, v_teacher, lr=1.0, *, train_second_layer=True, sgd_noise=False,
                      label_noise=0.0, n_starts=200, seed=0, trajectories=None, tol=1e-10,
                      max_abs=1e3, v_student=None, conserved=0.0, zero_tol=1e-6,
                      dedup_tol=1e-6, merge_same_function=True):
    """Fixed points of the order-parameter ODE, deduplicated up to symmetry and classified.

    Parameters
    ----------
    K, M : int, >= 1
        Student and teacher units.
    T : array, shape (M, M), or None
        Teacher overlaps (symmetric PSD); None is the identity (orthonormal teacher).
    v_teacher : array, shape (M,)
    lr : float, > 0
        Learning rate: scales the eta^1 flow (so its eigenvalues) without moving its fixed
        points; moves them only with ``sgd_noise=True``.
    train_second_layer : bool
        False freezes v at ``v_student``.
    sgd_noise : bool
        Include the eta^2 online-SGD term (its fixed points depend on lr). Default False: the
        population gradient flow.
    label_noise : float, >= 0
        Enters only with ``sgd_noise=True``.
    n_starts : int, >= 1
        Random physical starts, polished by ``scipy.optimize.root``: random students at
        several scales, students near w = 0, and students whose units copy teacher units,
        sit near 0 or point at random (the neighbourhoods of the partly learnt saddles).
    seed : int, >= 0
        Seed of the starts.
    trajectories : Result, optional
        Recorded curves (e.g. of :func:`fastquad.integrate_ode`) with the same K, M: their
        plateau states and final states are extra starts.
    tol : float, > 0
        Residual ``max|rhs| / lr`` a point must reach.
    max_abs : float, > 0
        Points with a coordinate beyond this are dropped (runaway solutions).
    v_student : array, shape (K,), optional
        The frozen second layer (only with ``train_second_layer=False``; default all ones).
    conserved : float or array of shape (K,)
        With a trained v and no SGD noise, each class is reported at the member of its
        rescaling orbit with ``Q_jj - 2 v_j^2 = conserved_j``; None keeps the member found.
    zero_tol : float, in (0, 1)
        Eigenvalues below ``zero_tol * max|eigenvalue|`` count as zero.
    dedup_tol : float, > 0
        Relative tolerance of the comparison of canonical forms.
    merge_same_function : bool
        Report points that are the same network function with the same kind, n_unstable and
        n_zero once (continua of fixed points beyond the symmetries; see
        ``FixedPoint.n_variants``).

    Returns
    -------
    list of FixedPoint
        Sorted by increasing eps_g, each in the canonical form of :class:`Symmetry`.
    """
    p = V.Problems()
    K = p.check(V.integer, "K", K, low=1)
    M = p.check(V.integer, "M", M, low=1)
    lr = p.check(V.real, "lr", lr, low=0.0, low_open=True)
    train_v = p.check(V.boolean, "train_second_layer", train_second_layer)
    noise = p.check(V.boolean, "sgd_noise", sgd_noise)
    sigma = p.check(V.real, "label_noise", label_noise, low=0.0)
    n_starts = p.check(V.integer, "n_starts", n_starts, low=1)
    seed = p.check(V.integer, "seed", seed, low=0)
    tol = p.check(V.real, "tol", tol, low=0.0, low_open=True)
    max_abs = p.check(V.real, "max_abs", max_abs, low=0.0, low_open=True)
    zero_tol = p.check(V.real, "zero_tol", zero_tol, low=0.0, high=1.0, low_open=True,
                       high_open=True)
    dedup_tol = p.check(V.real, "dedup_tol", dedup_tol, low=0.0, low_open=True)
    merge = p.check(V.boolean, "merge_same_function", merge_same_function)
    p.raise_if_any()
    T, vt = _check_teacher(T, v_teacher, M)
    v_fixed = None
    if not train_v:
        v_fixed = (np.ones(K) if v_student is None
                   else V.finite_array("v_student", v_student, shape=(K,)))
    elif v_student is not None:
        raise ValueError("v_student is only used with train_second_layer=False")
    if conserved is not None:
        conserved = (np.full(K, V.real("conserved", conserved)) if np.ndim(conserved) == 0
                     else V.finite_array("conserved", conserved, shape=(K,)))
    system = _System(K, M, T, vt, lr, train_v, noise, sigma, v_fixed)
    starts = _random_starts(system, n_starts, np.random.default_rng(seed))
    if trajectories is not None:
        starts += _trajectory_starts(system, trajectories)

    sym = Symmetry(T, vt, rescale=system.rescale, tol=dedup_tol)
    classes = []  # [key, x, count]
    for x0 in starts:
        x = _polish(system, x0, tol, max_abs)
        if x is None or not system.physical(x, max_abs):
            continue
        if system.rescale and conserved is not None:
            x = _polish(system, _rescale_to(system, x, conserved), tol, max_abs, scaled=False)
            if x is None or not system.physical(x, max_abs):
                continue
        Q, R, v = system.state(x)
        Qc, Rc, vc, key = sym.canonical(Q, R, v)
        for c in classes:
            if sym.same(c[0], key):
                c[2] += 1
                if system.residual(x) < system.residual(c[1]):
                    c[1] = system.pack(Qc, Rc, vc)
                break
        else:
            classes.append([key, system.pack(Qc, Rc, vc), 1])

    points = []
    for _, x, count in classes:
        lam, vec, kind, n_unstable, n_zero = _classify(system, x, zero_tol, tol)
        Q, R, v = system.state(x)
        points.append(FixedPoint(Q=Q, R=R, v=v, eps_g=system.eps_g(x), eigenvalues=lam,
                                 eigenvectors=vec, kind=kind, n_unstable=n_unstable,
                                 n_zero=n_zero, residual=system.residual(x),
                                 multiplicity=count, T=T.copy(), v_teacher=vt.copy(),
                                 train_second_layer=train_v))
    if merge:
        points = _merge_same_function(points, sym)
    points.sort(key=lambda fp: (fp.eps_g, fp.n_unstable))
    return points


def _merge_same_function(points, sym):
    """One point per (network function, kind, n_unstable, n_zero); see FixedPoint.n_variants."""
    groups = []  # [points, keys of the first]
    for fp in points:
        keys = sym.function_keys(fp.Q, fp.R, fp.v)
        for g in groups:
            first = g[0][0]
            if ((fp.kind, fp.n_unstable, fp.n_zero) == (first.kind, first.n_unstable, first.n_zero)
                    and any(sym.same(k, g[1][0]) for k in keys)):
                g[0].append(fp)
                break
        else:
            groups.append([[fp], keys])
    merged = []
    for members, _ in groups:
        best = max(members, key=lambda fp: (fp.multiplicity, -fp.residual))
        merged.append(replace(best, multiplicity=sum(fp.multiplicity for fp in members),
                              n_variants=len(members)))
    return merged


def canonical_form(Q, R, v, T, v_teacher, *, rescale=True, tol=1e-6):
    """The canonical member of the symmetry class of a state (see :class:`Symmetry`).

    Parameters
    ----------
    Q : array, shape (K, K)
    R : array, shape (K, M)
    v : array, shape (K,)
    T : array, shape (M, M)
    v_teacher : array, shape (M,)
    rescale : bool
        Compare through the rescaling invariants (trained second layer, no SGD noise).
    tol : float, > 0

    Returns
    -------
    Q, R, v, key : as :meth:`Symmetry.canonical`
    """
    v = V.finite_array("v", v, ndim=1)
    vt = V.finite_array("v_teacher", v_teacher, ndim=1)
    K, M = v.shape[0], vt.shape[0]
    Q = V.finite_array("Q", Q, shape=(K, K))
    R = V.finite_array("R", R, shape=(K, M))
    T, vt = _check_teacher(T, vt, M)
    tol = V.real("tol", tol, low=0.0, low_open=True)
    return Symmetry(T, vt, rescale=V.boolean("rescale", rescale), tol=tol).canonical(Q, R, v)


# ----------------------------------------------------------------------------- parameter space

def weights_from_order_parameters(Q, R, T, d, seed=0):
    """Weights with given overlaps: ``W W^T/d = Q``, ``W W*^T/d = R``, ``W* W*^T/d = T``.

    The Gram matrix of the K + M rows is factored (eigen-decomposition, so a semi-definite one
    works) and embedded in R^d along a random orthonormal frame.

    Parameters
    ----------
    Q : array, shape (K, K)
    R : array, shape (K, M)
    T : array, shape (M, M)
    d : int, >= K + M
    seed : int, >= 0
        The frame.

    Returns
    -------
    W : ndarray, shape (K, d)
    W_teacher : ndarray, shape (M, d)
    """
    Q = V.finite_array("Q", Q, ndim=2)
    K = Q.shape[0]
    R = V.finite_array("R", R, ndim=2)
    M = R.shape[1] if R.ndim == 2 else 0
    p = V.Problems()
    p.check(V.finite_array, "Q", Q, shape=(K, K))
    p.check(V.finite_array, "R", R, shape=(K, M))
    T = p.check(V.finite_array, "T", T, shape=(M, M))
    d = p.check(V.integer, "d", d, low=K + M)
    seed = p.check(V.integer, "seed", seed, low=0)
    p.raise_if_any()
    G = np.block([[T, R.T], [R, Q]])
    G = 0.5 * (G + G.T)
    lam, U = np.linalg.eigh(G)
    if lam[0] < -_PSD_RTOL * max(1.0, np.abs(G).max()):
        raise ValueError(f"Q, R, T are not the overlaps of real vectors: the Gram matrix "
                         f"[[T, R^T], [R, Q]] has an eigenvalue {lam[0]:.3g} < 0")
    # eigenvalues at round-off level are exact zeros of a rank-deficient Gram matrix (e.g. a
    # student aligned with the teacher): their square roots (~1e-8) would be spurious directions
    lam = np.where(lam > 64 * np.finfo(float).eps * max(1.0, lam[-1]), lam, 0.0)
    F = U * np.sqrt(lam)                               # (K + M, K + M), F F^T = G
    frame, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, K + M)))
    X = np.sqrt(d) * F @ frame.T                      # rows: teacher, then student
    return np.ascontiguousarray(X[M:]), np.ascontiguousarray(X[:M])


@dataclass(frozen=True, eq=False)
class ParameterHessian:
    """Hessian of eps_g in parameter space ``(W.ravel(), v)`` at a point.

    Attributes
    ----------
    eigenvalues : ndarray, shape (n - n_symmetry,)
        Ascending; of the Hessian on the orthogonal complement of the exact symmetry directions
        (the informative ones).
    n_negative, n_positive, n_flat : int
        Informative eigenvalues below, above and within ``zero_tol * max|eigenvalue|`` of 0.
    n_symmetry : int
        Dimension of the exact symmetry directions: rotations ``W -> W exp(Omega)`` with Omega
        antisymmetric and zero on the teacher span (``(d-m)(d-m-1)/2`` generators, m the
        teacher rank, fewer where W does not move), and the K rescalings of a trained second
        layer.
    symmetry_leak : float
        ``max |H s| / max|H|`` over unit symmetry directions s: 0 at a critical point up to
        the finite-difference error; large means the point is not a critical point.
    gradient_norm : float
        ``max |grad eps_g|`` at the point.
    all_eigenvalues : ndarray, shape (n,)
        Of the full symmetrised Hessian, ascending.
    """

    eigenvalues: np.ndarray
    n_negative: int
    n_positive: int
    n_flat: int
    n_symmetry: int
    symmetry_leak: float
    gradient_norm: float
    all_eigenvalues: np.ndarray


def _symmetry_directions(W, v, Wt, train_v):
    """Orthonormal basis (columns) of the exact symmetry directions at (W, v)."""
    K, d = W.shape
    _, s, Vt = np.linalg.svd(Wt, full_matrices=True)
    m = int(np.count_nonzero(s > 1e-10 * max(1.0, s.max(initial=0.0))))
    P = Vt[m:]                                        # (d - m, d), complement of teacher span
    gens = []
    for a in range(P.shape[0]):
        for b in range(a + 1, P.shape[0]):
            Om = np.outer(P[a], P[b]) - np.outer(P[b], P[a])
            g = W @ Om
            gens.append(np.concatenate([g.ravel(), np.zeros(K)]) if train_v else g.ravel())
    if train_v:
        for j in range(K):
            g = np.zeros((K, d))
            g[j] = W[j]
            gv = np.zeros(K)
            gv[j] = -2.0 * v[j]
            gens.append(np.concatenate([g.ravel(), gv]))
    n = K * d + (K if train_v else 0)
    if not gens:
        return np.zeros((n, 0))
    G = np.array(gens).T
    U, s, _ = np.linalg.svd(G, full_matrices=False)
    keep = s > 1e-9 * max(1.0, s.max())
    return U[:, keep]


def parameter_space_hessian(W, v, W_teacher, v_teacher, *, train_second_layer=True,
                            zero_tol=1e-6):
    """Hessian of eps_g in parameter space, informative eigenvalues apart from exact zero modes.

    Central finite differences of :func:`fastquad.population_gradients`; keep d small (the
    Hessian has ``(K d + K)^2`` entries).

    Parameters
    ----------
    W : array, shape (K, d)
    v : array, shape (K,)
    W_teacher : array, shape (M, d)
    v_teacher : array, shape (M,)
    train_second_layer : bool
        False: parameters are W only.
    zero_tol : float, in (0, 1)

    Returns
    -------
    ParameterHessian
    """
    p = V.Problems()
    W = p.check(V.finite_array, "W", W, ndim=2)
    Wt = p.check(V.finite_array, "W_teacher", W_teacher, ndim=2)
    p.raise_if_any()
    K, d = W.shape
    M = Wt.shape[0]
    v = p.check(V.finite_array, "v", v, shape=(K,))
    vt = p.check(V.finite_array, "v_teacher", v_teacher, shape=(M,))
    train_v = p.check(V.boolean, "train_second_layer", train_second_layer)
    zero_tol = p.check(V.real, "zero_tol", zero_tol, low=0.0, high=1.0, low_open=True,
                       high_open=True)
    if Wt.shape[1] != d:
        p.add(f"W_teacher must have d={d} columns like W, got shape {Wt.shape}")
    p.raise_if_any()

    def grad(x):
        Wx = x[:K * d].reshape(K, d)
        vx = x[K * d:] if train_v else v
        gW, gv = population_gradients(Wx, vx, Wt, vt)
        return np.concatenate([gW.ravel(), gv]) if train_v else gW.ravel()

    x0 = np.concatenate([W.ravel(), v]) if train_v else W.ravel().copy()
    n = x0.size
    h = 6e-6 * np.maximum(1.0, np.abs(x0))
    H = np.empty((n, n))
    for i in range(n):
        e = np.zeros(n)
        e[i] = h[i]
        H[:, i] = (grad(x0 + e) - grad(x0 - e)) / (2 * h[i])
    H = 0.5 * (H + H.T)
    S = _symmetry_directions(W, v, Wt, train_v)
    top = max(np.abs(H).max(), 1e-300)
    leak = float(np.abs(H @ S).max(initial=0.0) / top)
    if S.shape[1]:
        Qf, _ = np.linalg.qr(np.concatenate([S, np.eye(n)], axis=1))
        C = Qf[:, S.shape[1]:n]                       # orthonormal complement of S
    else:
        C = np.eye(n)
    lam = np.linalg.eigvalsh(C.T @ H @ C)
    big = np.abs(lam).max(initial=0.0)
    flat = np.abs(lam) <= zero_tol * big if big > 0 else np.ones(lam.shape, bool)
    return ParameterHessian(eigenvalues=lam, n_negative=int(np.count_nonzero(~flat & (lam < 0))),
                            n_positive=int(np.count_nonzero(~flat & (lam > 0))),
                            n_flat=int(flat.sum()), n_symmetry=int(S.shape[1]),
                            symmetry_leak=leak, gradient_norm=float(np.abs(grad(x0)).max()),
                            all_eigenvalues=np.linalg.eigvalsh(H))


# ----------------------------------------------------------------------------- table

def _compact(a):
    a = np.atleast_1d(np.asarray(a))
    if a.ndim == 1:
        return "[" + " ".join(f"{x:.3g}" for x in a) + "]"
    return "[" + "; ".join(" ".join(f"{x:.3g}" for x in row) for row in a) + "]"


def fixed_point_table(points):
    """A readable aligned table of fixed points.

    Parameters
    ----------
    points : list of FixedPoint

    Returns
    -------
    str
        One row per point: index, eps_g, kind, n_unstable, n_zero, multiplicity, n_variants
        ("var"), the largest and smallest real parts of the eigenvalues, and Q, R, v
        compactly (rows of matrices separated by ";").
    """
    header = ["#", "eps_g", "kind", "n_unst", "n_zero", "mult", "var", "max Re", "min Re",
              "Q", "R", "v"]
    rows = []
    for i, fp in enumerate(points):
        re = np.real(fp.eigenvalues)
        rows.append([str(i), f"{fp.eps_g:.6g}", fp.kind, str(fp.n_unstable), str(fp.n_zero),
                     str(fp.multiplicity), str(fp.n_variants), f"{re.max():.3g}", f"{re.min():.3g}",
                     _compact(fp.Q), _compact(fp.R), _compact(fp.v)])
    if not rows:
        return "no fixed points found"
    widths = [max(len(r[c]) for r in rows + [header]) for c in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)
