"""Fixed points of the order-parameter ODE: found, polished, deduplicated up to symmetry and
classified by the eigenvalues of the Jacobian; and the Hessian of eps_g in parameter space.

Coordinates
-----------
A state ``(Q, R, v)`` is the flat vector ``x = [Q[triu], R.ravel(), v]`` of length
``K (K + 1) / 2 + K M (+ K)``: the upper triangle of Q (row-major, diagonal included), then R,
then v only if the second layer is trained. Eigenvalues and eigenvectors of a
:class:`FixedPoint` refer to these coordinates.

Activations
-----------
Student and teacher each have an activation g (:mod:`fastquad.activations`: quadratic, the
default, linear, relu, erf; ``activation`` and ``teacher_activation``). Which symmetries below
exist depends on them: the sign of a unit only for an even activation (quadratic), the sign of
a unit together with its second-layer weight for an odd one (linear, erf), the rescaling orbit
only for a homogeneous one (degree a: quadratic 2, linear and relu 1; erf has none).

Symmetries
----------
The ODE is unchanged by a permutation of the student units (rows and columns of Q, rows of R
and entries of v together; with a frozen second layer only among units of equal v); for an even
student activation by the sign of each student vector ``w_j`` (row j of R and the off-diagonal
row/column j of Q flip), for an odd one with a trained second layer by ``(w_j, v_j) -> (-w_j,
-v_j)`` (and by the sign of ``w_j`` alone where ``v_j = 0``); and by those permutations (and,
for an even teacher activation, sign flips) of the teacher units that leave ``v*`` and T
unchanged (an orthogonal map of input space then carries the teacher onto itself): a
permutation ``sigma`` maps R to ``R[:, sigma]`` and must satisfy ``v*[sigma] = v*``, so only
units with equal ``v*`` (and ``T_nn``) trade places. A ReLU unit has no sign symmetry at all.
Relabelling the teacher -- another order (or, for an even teacher, signs) of its units -- is no
symmetry of one problem but a map between two problems; the finder works in a labelling that
does not depend on the given one (``_teacher_labelling``) and reports in the given one. With a
trained second layer, a homogeneous student activation of degree a and no SGD-noise term,
every fixed point also lies on the rescaling orbit ``w_j -> c_j w_j``, ``v_j -> v_j / c_j^a``
(same network function, so critical points map to critical points): points are compared
through the rescaling invariants ``sign(v_j)``, ``|v_i v_j|^(1/a) Q_ij`` and ``|v_j|^(1/a)
R_jn``, and each class is reported at the member whose conserved quantities ``C_j = Q_jj - a
v_j^2`` equal ``conserved`` (0 by default: where a small initialisation lives). A unit with
``w_j = 0`` is a line of fixed points in v_j; it is reported at ``|v_j| = sqrt(-conserved_j /
a)`` if ``conserved_j < 0``, else at ``|v_j| = max|v*|``, with its sign kept (eps_g is the same
along each half-line; for K > 1 the kind may not be, as the rates of the ``Q_jk`` carry ``v_j
+ v_k``). Continuous symmetries (rotations among teacher units with equal ``v*`` and
orthonormal, T = I) are not quotiented: members of such an orbit are listed as separate
points.

Smoothness
----------
The right-hand side is a polynomial for quadratic and linear networks and analytic for erf
ones; the Jacobian is taken by central differences. A ReLU student's right-hand side is not
differentiable where two units (student or teacher) are parallel -- the boundary of the
physical states, where the global minimum of a matched teacher lies -- nor where a unit is zero:
near parallel units the error of a difference quotient falls only as the square root of the
step, and a Richardson step removes that term (``_System.jacobian``); and the kernel's square
roots turn a rounding of such a state by one ulp into an error of ~1e-8, so states within
rounding of parallel are evaluated and reported exactly on the kink (``_snap_relu``, a few
ulps). A ReLU unit with ``w_j = 0`` is a fixed point only by the convention ``relu'(0) = 0``:
next to it the unit's gradient does not vanish (it is homogeneous of degree 0 in ``w_j``), so
the right-hand side jumps there and the Jacobian is meaningless. Such points are reported with
kind ``"degenerate"``: linear stability does not decide them (a small unit grows or dies
depending on its direction).

Verification
------------
Every reported point is checked at the state reported, in the caller's labelling:
``max|rhs| / lr <= tol * max(1, max|x|)^3`` (``tol`` itself for an erf student, whose
right-hand side flattens out for large weights) and a positive semi-definite Gram matrix
``[[Q, R], [R^T, T]]``; candidates that fail are dropped and counted
(``FixedPointList.n_dropped``).
"""

import functools
import itertools
from dataclasses import dataclass, replace

import numpy as np
from scipy import optimize

from .. import _validate
from ..activations import (
    ACTIVATIONS,
    activation_code,
    activation_degree,
    activation_pair,
    is_even,
)
from ..closed_form import generalization_error, population_gradients
from ..errors import InputError
from ..kernels import ode as _k
from ..kernels.activation import RELU
from ..kernels.activation import pair_k as _pair_k

KINDS = ("stable", "saddle", "unstable", "degenerate")

# Scaled residual accepted from the first polish (before rescaling to the reported member):
# tol * max(1, max|x|)^3, since the right-hand side is cubic in the overlaps (quadratic,
# linear and ReLU networks alike). An erf network's right-hand side flattens out as weights
# grow, so that a scaled tolerance would accept slow drifts towards saturation (residuals of
# 1e-5 at |x| ~ 100): it takes tol itself (_System.res_power).
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
    R = x[nq : nq + K * M].reshape(K, M).copy()
    v = np.array(v_fixed, float) if v_fixed is not None else x[nq + K * M :].copy()
    return Q, R, v


# Two ReLU units closer to parallel (or antiparallel) than this, |cos| >= 1 - _KINK_RTOL, are
# put exactly on the kink by _snap_relu: the right-hand side moves by O(_KINK_RTOL) there.
_KINK_RTOL = 1e-12


def _on_kink(A, B, c):
    """Whether the ReLU kernel evaluates the pair (variances A, B, covariance c) exactly at
    cos = +-1: every square root and arc-cosine of its formulas at its end point."""
    return (
        abs(c) / np.sqrt(A * B) >= 1.0
        and A * B - c * c <= 0.0
        and B - c * c / A <= 0.0
        and A - c * c / B <= 0.0
    )


def _snap_relu(Q, R, T, teacher_relu):
    """Put a ReLU student's units that are (anti)parallel to rounding exactly on the kernel's
    kink, moving entries by a few ulps; in place.

    The ReLU kernel takes square roots of ``1 - cos^2`` (``sqrt((A B - c^2) / A)``,
    ``arccos``), infinitely steep at cos = +-1: where two units are parallel -- two students
    sharing a direction, a student on a teacher unit, as at the global minimum -- rounding of
    the inputs by one ulp gives an error of ~1e-8 (``sqrt(eps)``), and which way it rounds
    changes with the last bits of the state (half of the rescaled copies of the global minimum
    of a teacher with ``T != I``). That is a 1e-9 residual at exact fixed points, and a
    difference quotient of step 1e-6 turns it into 1e-3 in the Jacobian (a zero mode into a
    stable or unstable one). Here each pair within ``_KINK_RTOL`` of cos = +-1 (on either
    side) gets ``|c| = sqrt(A B)`` rounded outwards until its terms are those of the exact
    kink; and each Q_jj is moved to the nearest value with ``Q_jj^2 / Q_jj == Q_jj``, so that a
    unit's terms with itself are exact whichever way ``1 - cos^2`` is formed for it.
    """
    K = Q.shape[0]
    for j in range(K):
        a = float(Q[j, j])
        if a <= 0.0 or a * a / a == a:
            continue
        up = down = a
        for _ in range(16):
            up, down = np.nextafter(up, np.inf), np.nextafter(down, 0.0)
            if up * up / up == up:
                Q[j, j] = up
                break
            if down > 0.0 and down * down / down == down:
                Q[j, j] = down
                break
    pairs = [(Q, i, k, Q[k, k]) for i in range(K) for k in range(i + 1, K)]
    if teacher_relu:
        pairs += [(R, i, n, T[n, n]) for i in range(K) for n in range(R.shape[1])]
    for X, i, k, B in pairs:
        A, c = float(Q[i, i]), float(X[i, k])
        if A <= 0.0 or B <= 0.0:
            continue
        s = np.sqrt(A * B)
        # only rounding away from the kink: an iterate beyond it (unphysical) stays as it is
        if abs(abs(c) - s) > _KINK_RTOL * s:
            continue
        new = np.copysign(s, c)
        for _ in range(16):
            if _on_kink(A, B, new):
                X[i, k] = new
                if X is Q:
                    Q[k, i] = new
                break
            new = np.nextafter(new, np.copysign(np.inf, c))


#: Activation name of each kernel code.
_NAMES = {activation_code(name): name for name in ACTIVATIONS}


def _activation_names(p, activation, teacher_activation):
    """Validated ``(student, teacher)`` activation names, a problem added to p if invalid."""
    pair = p.check(activation_pair, activation, teacher_activation)
    return pair if pair is not None else ("quadratic", "quadratic")


class _System:
    """The right-hand side in coordinates, for one (T, v*, lr, switches, batch size,
    activations).

    Inputs are validated once here; each evaluation then calls the kernel behind
    :func:`fastquad.ode_rhs` directly (its wrapper re-validates every call, 40x the cost of the
    arithmetic, and polishing needs thousands of calls). Tests check both agree. ``act_s``,
    ``act_t`` are the kernel codes of the student's and the teacher's activations.

    Attributes derived from the activations: ``degree`` (a of the student's, None for erf),
    ``has_orbit`` (trained second layer and a homogeneous student: the rescaling orbits exist),
    ``rescale`` (``has_orbit`` without the SGD-noise term, which moves along them), ``kinked``
    (a ReLU student: the right-hand side is not differentiable at parallel or zero units).
    """

    def __init__(
        self,
        K,
        M,
        T,
        vt,
        lr,
        train_v,
        sgd_noise,
        label_noise,
        v_fixed=None,
        batch_size=1,
        act_s=0,
        act_t=0,
    ):
        self.K, self.M = K, M
        self.act_s, self.act_t = int(act_s), int(act_t)
        self.activation, self.teacher_activation = _NAMES[self.act_s], _NAMES[self.act_t]
        self.degree = activation_degree(self.activation)
        self.T = np.ascontiguousarray(T, dtype=float)
        self.vt = np.ascontiguousarray(vt, dtype=float)
        self.lr = float(lr)
        self.train_v = bool(train_v)
        self.sgd_noise = bool(sgd_noise)
        self.sigma2 = float(label_noise) ** 2
        self.inv_batch = 1.0 / float(batch_size)
        self.v_fixed = None if train_v else np.ascontiguousarray(v_fixed, dtype=float)
        self.n = _n_coords(K, M, train_v)
        self.has_orbit = self.train_v and self.degree is not None
        self.rescale = self.has_orbit and not self.sgd_noise
        self.kinked = self.act_s == RELU
        self.res_power = 0 if self.degree is None else _RES_POWER
        self._dQ = np.empty((K, K))
        self._dR = np.empty((K, M))
        self._dv = np.empty(K)
        # the same layout as pack/unpack, with the index arrays made once: building them
        # (np.triu_indices) on every call was most of the cost of a polish
        self._iu = np.triu_indices(K)
        self._nq = K * (K + 1) // 2

    def state(self, x):
        """Coordinates -> (Q (K, K), R (K, M), v (K,)), new arrays (as :func:`unpack`)."""
        x = np.asarray(x, float)
        K, M, nq = self.K, self.M, self._nq
        Q = np.empty((K, K))
        Q[self._iu] = x[:nq]
        Q[self._iu[1], self._iu[0]] = x[:nq]
        R = x[nq : nq + K * M].reshape(K, M).copy()
        v = self.v_fixed.copy() if self.v_fixed is not None else x[nq + K * M :].copy()
        return Q, R, v

    def pack(self, Q, R, v):
        """(Q, R, v) -> coordinates (as :func:`pack`)."""
        parts = [np.asarray(Q, float)[self._iu], np.asarray(R, float).ravel()]
        if self.train_v:
            parts.append(np.asarray(v, float))
        return np.concatenate(parts)

    def rhs(self, x):
        Q, R, v = self.state(x)
        if self.kinked:
            _snap_relu(Q, R, self.T, self.act_t == RELU)
        _k.ode_rhs_into(
            Q,
            R,
            np.ascontiguousarray(v),
            self.T,
            self.vt,
            self.act_s,
            self.act_t,
            self.lr,
            self.sigma2,
            self.inv_batch,
            self.train_v,
            self.sgd_noise,
            self._dQ,
            self._dR,
            self._dv,
        )
        return self.pack(self._dQ, self._dR, self._dv)

    def snapped(self, x):
        """x with a ReLU student's (anti)parallel units exactly on the kernel's kink (the state
        :meth:`rhs` evaluates; see :func:`_snap_relu`), so that the public right-hand side
        sees at a reported point what the finder saw; x itself otherwise."""
        if not self.kinked:
            return x
        Q, R, v = self.state(x)
        _snap_relu(Q, R, self.T, self.act_t == RELU)
        return self.pack(Q, R, v)

    def residual(self, x):
        """max |rhs| / lr: the size of the velocity at x in units of lr."""
        return float(np.abs(self.rhs(x)).max()) / self.lr

    def _differences(self, x, rel):
        h = rel * np.maximum(1.0, np.abs(x))
        J = np.empty((self.n, self.n))
        for i in range(self.n):
            e = np.zeros(self.n)
            e[i] = h[i]
            J[:, i] = (self.rhs(x + e) - self.rhs(x - e)) / (2 * h[i])
        return J

    def jacobian(self, x):
        """Central finite differences, step ~ eps^(1/3) relative: error O(h^2) for a smooth
        right-hand side (quadratic, linear: polynomials; erf: analytic).

        A ReLU student's right-hand side has terms ``(1 - rho^2)^(1/2)`` in the cosine rho of
        two units, whose coefficients vanish at a fixed point with parallel units: the
        right-hand side is differentiable there from the physical side, but a difference
        quotient errs by O(h^(1/2)) (1e-3 of the entries at this step). Richardson's step
        ``2 J(h / 4) - J(h)`` cancels that term, leaving O(h).
        """
        x = np.asarray(x, float)
        if not self.kinked:
            return self._differences(x, 6e-6)
        return 2.0 * self._differences(x, 1.5e-6) - self._differences(x, 6e-6)

    def eps_g(self, x):
        Q, R, v = self.state(x)
        return generalization_error(
            Q,
            R,
            self.T,
            v,
            self.vt,
            activation=self.activation,
            teacher_activation=self.teacher_activation,
        )

    def physical(self, x, max_abs):
        """Finite, within max_abs and a Gram matrix of real vectors (PSD within round-off)."""
        if not np.all(np.isfinite(x)) or np.abs(x).max(initial=0.0) > max_abs:
            return False
        Q, R, _ = self.state(x)
        G = np.block([[Q, R], [R.T, self.T]])
        lam = np.linalg.eigvalsh(G)
        return lam[0] >= -_PSD_RTOL * max(1.0, np.abs(G).max())


# ----------------------------------------------------------------------------- polishing


def _least_squares(fun, x0, max_nfev):
    """Levenberg-Marquardt minimisation of ``|fun(x)|^2`` from x0 (Marquardt's diagonal
    scaling, forward-difference Jacobian); returns the last accepted x.

    Written out rather than scipy's MINPACK ``lmdif``, which returned different results for
    the same input in different processes (and after other calls in one process) on the
    singular problems met here -- continua of fixed points -- and so made the finder's output
    irreproducible. The dense solves below give the same result every time.

    Parameters
    ----------
    fun : callable, x (n,) -> residuals (m,), m >= n
    x0 : ndarray, shape (n,)
    max_nfev : int
        Budget of evaluations of fun.

    Returns
    -------
    ndarray, shape (n,)
    """
    x = np.array(x0, dtype=float)
    with np.errstate(all="ignore"):
        f = fun(x)
    nfev = 1
    cost = float(f @ f)
    if not np.isfinite(cost):
        return x
    lam = 1e-3
    h0 = np.sqrt(np.finfo(float).eps)
    n = x.size
    while nfev + n < max_nfev and cost > 0.0:
        h = h0 * np.maximum(1.0, np.abs(x))
        J = np.empty((f.size, n))
        with np.errstate(all="ignore"):
            for i in range(n):
                e = x.copy()
                e[i] += h[i]
                J[:, i] = (fun(e) - f) / h[i]
        nfev += n
        if not np.all(np.isfinite(J)):
            break
        A = J.T @ J
        g = J.T @ f
        d = np.diag(A).copy()
        d = np.maximum(d, 1e-12 * max(d.max(initial=0.0), 1e-300))
        improved = False
        while nfev < max_nfev and lam < 1e16:
            try:
                step = np.linalg.solve(A + lam * np.diag(d), -g)
            except np.linalg.LinAlgError:
                lam *= 10.0
                continue
            with np.errstate(all="ignore"):
                fn = fun(x + step)
            nfev += 1
            cn = float(fn @ fn)
            if np.isfinite(cn) and cn < cost:
                x, f, cost = x + step, fn, cn
                lam = max(lam / 10.0, 1e-12)
                improved = True
                break
            lam *= 10.0
        if not improved or np.abs(step).max() <= 1e-15 * max(1.0, np.abs(x).max()):
            break
    return x


def _polish(system, x0, tol, max_abs, scaled=True):
    """A root of the right-hand side from x0 (scipy.optimize.root "hybr", then
    :func:`_least_squares`); the root or None."""
    n = system.n
    for method in ("hybr", "lm"):
        try:
            with np.errstate(all="ignore"):
                if method == "hybr":
                    x = optimize.root(
                        system.rhs,
                        x0,
                        method="hybr",
                        options=dict(xtol=1e-14, maxfev=400 * (n + 1)),
                    ).x
                else:
                    x = _least_squares(system.rhs, x0, 400 * (n + 1))
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
        if not np.all(np.isfinite(x)) or np.abs(x).max() > max_abs:
            continue
        res = system.residual(x)
        limit = _verify_limit(tol, x, system.res_power) if scaled else tol
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


def _teacher_permutations(groups, M):
    """Permutations ``sigma`` of the M teacher units that move units only within their group.

    ``sigma[n]`` is the unit put in place n. Each group's own places receive a permutation of
    its members, so units of different groups never trade places (the identity comes first).
    These are the candidate maps of the teacher onto itself; a sort of the teacher, which moves
    units between groups, is not one unless v* and T are unchanged by it.
    """
    slots = [sorted(g) for g in groups]
    for combo in itertools.product(*(itertools.permutations(s) for s in slots)):
        sigma = np.arange(M)
        for s, perm in zip(slots, combo):
            sigma[s] = perm
        yield sigma


def _teacher_labelling(T, vt, tol, even=True):
    """An order and signs of the teacher units that do not depend on how they were given.

    Units are sorted by decreasing ``v*_n``, then ``T_nn``, then their off-diagonal overlap
    magnitudes ``|T_nm|`` (the overlaps themselves for a teacher activation that is not even;
    sorted, largest first); units tied on all of these keep their given order (when v* and T
    are unchanged by swapping them, the usual case, any order gives the same problem). Then,
    for an even teacher activation only, in that order, each unit's sign is chosen so that its
    overlap with the first earlier unit it overlaps with is positive (a reflection ``w*_n ->
    -w*_n`` of a unit with an even activation is a symmetry: it flips column n of R and row and
    column n of T; of any other unit it changes the teacher's function).

    Parameters
    ----------
    T : ndarray, shape (M, M)
    vt : ndarray, shape (M,)
    tol : float
        Absolute tolerance of ties and of overlaps counted as nonzero.
    even : bool
        Whether the teacher's activation is even (else all signs are 1).

    Returns
    -------
    order : ndarray of int, shape (M,)
        ``order[k]`` is the given unit put in place k.
    signs : ndarray, shape (M,)
        The relabelled teacher is ``T' = D T[order][:, order] D``, ``v*' = v*[order]`` with
        ``D = diag(signs)``; a state's R becomes ``R[:, order] D``.
    """
    M = vt.shape[0]
    keys = []
    for n in range(M):
        off = sorted(((abs if even else float)(T[n, m]) for m in range(M) if m != n), reverse=True)
        keys.append((vt[n], T[n, n], *off))
    order = np.array([i for g in _tie_groups(keys, tol) for i in g], dtype=int)
    To = T[np.ix_(order, order)]
    signs = np.ones(M)
    for k in range(1, M if even else 1):
        for m in range(k):
            if abs(To[m, k]) > tol:
                signs[k] = signs[m] * np.sign(To[m, k])
                break
    return order, signs


def _student_orderings(slots, K):
    """Student permutations ``pi`` (unit pi[j] put in place j): for each (places, groups) of
    ``slots``, the places receive the groups' units in order, permuted within each group."""
    per_slot = [list(_orderings(groups)) for _, groups in slots]
    for combo in itertools.product(*per_slot):
        pi = np.empty(K, dtype=int)
        for (places, _), order in zip(slots, combo):
            pi[places] = order
        yield pi


def _n_orderings(groups):
    n = 1
    for g in groups:
        n *= int(np.prod(np.arange(1, len(g) + 1)))
    return n


class Symmetry:
    """Canonical forms of states of one problem (K, M, T, v*, activations) up to its symmetries.

    Parameters
    ----------
    T : array, shape (M, M)
    v_teacher : array, shape (M,)
    rescale : bool
        Also quotient by the rescaling ``w_j -> c w_j, v_j -> v_j / c^a`` (trained second
        layer, flow without SGD noise, a homogeneous student activation of degree a): compare
        the invariants ``sign(v_j)``, ``|v_i v_j|^(1/a) Q_ij``, ``|v_j|^(1/a) R_jn``. An erf
        student has no such orbit: True is refused.
    tol : float
        Relative tolerance of ties and of :meth:`same`.
    fixed_v : bool
        The second layer is frozen, a parameter of the problem rather than part of the state:
        student units trade places only with units of equal v (each group of equal v keeps
        its places), since moving Q and R without v is no symmetry.
    activation, teacher_activation : str
        The student's and the teacher's activations (:mod:`fastquad.activations`; the
        teacher's defaults to the student's). They decide the sign symmetries: a student
        unit's sign is free for an even activation, flips with its v for an odd one (trained
        second layer), and is fixed otherwise (a unit with ``v_j = 0`` that no gradient moves
        is free whenever flipping it changes nothing); teacher units are reflected only for an
        even teacher activation.
    """

    def __init__(
        self,
        T,
        v_teacher,
        *,
        rescale,
        tol=1e-6,
        fixed_v=False,
        activation="quadratic",
        teacher_activation=None,
    ):
        self.activation, self.teacher_activation = activation_pair(activation, teacher_activation)
        self.T = np.asarray(T, float)
        self.vt = np.asarray(v_teacher, float)
        self.M = self.vt.shape[0]
        self.rescale = bool(rescale)
        self.degree = activation_degree(self.activation)
        if self.rescale and self.degree is None:
            raise InputError(
                f"rescale: a {self.activation} student has no rescaling symmetry "
                "(its activation is not homogeneous); use rescale=False"
            )
        self.tol = float(tol)
        self.fixed_v = bool(fixed_v)
        self.even_s = is_even(self.activation)
        # odd: g(-h) = -g(h), so (w_j, v_j) -> (-w_j, -v_j) leaves the network unchanged
        self.odd_s = self.activation in ("linear", "erf")
        self.even_t = is_even(self.teacher_activation)
        self.teacher_maps = self._teacher_maps()

    def _teacher_maps(self):
        """(sigma, forced sign relations) of the teacher permutations that keep v* and T.

        ``sigma`` only moves units within groups of equal ``(v*_n, T_nn)``, and is kept when
        ``|T[sigma][:, sigma]| = |T|`` with a consistent choice of reflections; the forced
        relations ``c_n c_m = sign(T_nm T[sigma_n, sigma_m])`` fix those reflections. Without
        reflections (a teacher activation that is not even) ``T[sigma][:, sigma] = T`` is
        needed.
        """
        M, T, vt = self.M, self.T, self.vt
        scale = max(1.0, np.abs(T).max(), np.abs(vt).max())
        tol = self.tol * scale
        groups = _tie_groups([(vt[n], T[n, n]) for n in range(M)], tol)
        if _n_orderings(groups) > _MAX_ORDERINGS:
            groups = [[i] for g in groups for i in g]
        maps = []
        for sigma in _teacher_permutations(groups, M):
            Ts = T[np.ix_(sigma, sigma)]
            if not self.even_t:
                if np.abs(Ts - T).max(initial=0.0) <= tol:
                    maps.append((sigma, []))
                continue
            if np.abs(np.abs(Ts) - np.abs(T)).max(initial=0.0) > tol:
                continue
            forced = [
                (n, m, float(np.sign(T[n, m] * Ts[n, m])))
                for n in range(M)
                for m in range(n + 1, M)
                if abs(T[n, m]) > tol
            ]
            uf = _UnionFind(M)
            if all(uf.union(n, m, rel) for n, m, rel in forced):
                maps.append((sigma, forced))
        return maps

    def invariants(self, Q, R, v):
        """(labels (K,), Qe (K, K), Re (K, M)): what is compared; labels = v if not rescale."""
        Q, R, v = np.asarray(Q, float), np.asarray(R, float), np.asarray(v, float)
        if not self.rescale:
            return v.copy(), Q.copy(), R.copy()
        a = np.abs(v) ** (1.0 / self.degree)
        return np.sign(v), Q * np.outer(a, a), R * a[:, None]

    def _free_signs(self, v, sig):
        """Which student units' signs are free (a symmetry flips w_j alone)."""
        if self.even_s:
            return np.ones(v.shape, bool)
        # a unit with v_j = 0 is no part of the function; flipping w_j alone changes no rate
        # when g is odd, or when v is frozen (then nothing moves w_j)
        if self.odd_s or self.fixed_v:
            return np.abs(v) <= sig
        return np.zeros(v.shape, bool)

    def canonical(self, Q, R, v):
        """The canonical member of the symmetry class of (Q, R, v).

        For an odd student activation with a trained second layer, units are first flipped
        (``(w_j, v_j) -> (-w_j, -v_j)``) to ``v_j >= 0``. Units are sorted by decreasing label
        (v, or sign(v) with rescaling) then decreasing (effective) norm; ties are broken by
        trying their orderings (and those of equivalent teacher units) and keeping the
        lexicographically largest invariant vector; where signs are free they are fixed
        greedily, making the first significant R entry of each unit (in that order) positive,
        then its first significant Q entry with an earlier unit; entries whose sign no
        significant entry fixes enter the key by magnitude.

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
        if self.odd_s and not self.fixed_v:
            f = np.where(v < 0, -1.0, 1.0)
            Q, R, v = Q * np.outer(f, f), R * f[:, None], v * f
        lab, Qe, Re = self.invariants(Q, R, v)
        scale = max(
            1.0, np.abs(Qe).max(initial=0), np.abs(Re).max(initial=0), np.abs(lab).max(initial=0)
        )
        tol = self.tol * scale
        sig = _SIGN_RTOL * scale
        free = self._free_signs(v, _SIGN_RTOL * max(1.0, np.abs(v).max(initial=0)))
        if self.fixed_v:
            classes = [sorted(c) for c in _tie_groups([(v[j],) for j in range(K)], tol)]
        else:
            classes = [list(range(K))]
        # (places, tie groups of the units that fill them, in order)
        slots = [
            (c, [[c[i] for i in g] for g in _tie_groups([(lab[j], Qe[j, j]) for j in c], tol)])
            for c in classes
        ]
        if np.prod([_n_orderings(g) for _, g in slots]) * len(self.teacher_maps) > _MAX_ORDERINGS:
            slots = [(c, [[i] for g in groups for i in g]) for c, groups in slots]
        best = None
        for pi in _student_orderings(slots, K):
            for sigma, forced in self.teacher_maps:
                cand = self._signed(Qe, Re, lab, pi, sigma, forced, sig, free[pi], self.even_t)
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
    def _signed(Qe, Re, lab, pi, sigma, forced, sig, free=None, free_teacher=True):
        """(key, signs (K + M,)) of the ordering (pi, sigma), or None if its forced relations
        contradict each other. ``free`` (K,) (in the order pi) and ``free_teacher`` say which
        signs a symmetry may flip; the others stay 1."""
        K, M = Re.shape
        Qp = Qe[np.ix_(pi, pi)]
        Rp = Re[np.ix_(pi, sigma)]
        anchor = K + M  # a sign variable held at +1: units whose sign is not free join it
        uf = _UnionFind(K + M + 1)
        for n, m, rel in forced:
            if not uf.union(K + n, K + m, rel):
                return None
        fixed = [j for j in range(K) if free is not None and not free[j]]
        fixed += [] if free_teacher else [K + n for n in range(M)]
        for a in fixed:
            if not uf.union(a, anchor, 1.0):
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
        # the anchor's whole class flips with it, so that it (and every fixed sign) is +1
        ra = uf.find(anchor)[0]
        root = [uf.find(a)[0] for a in range(K + M + 1)]
        signs[[a for a in range(K + M + 1) if root[a] == ra]] *= signs[anchor]
        signs = signs[: K + M]
        s, c = signs[:K], signs[K:]
        Qs = Qp * np.outer(s, s)
        Rs = Rp * np.outer(s, c)
        # an entry too small to fix a sign, between units whose relative sign nothing else
        # fixes, may have either sign in equivalent states: the key holds its magnitude
        for j in range(K):
            for n in range(M):
                if root[j] != root[K + n]:
                    Rs[j, n] = abs(Rs[j, n])
            for i in range(j):
                if root[i] != root[j]:
                    Qs[i, j] = Qs[j, i] = abs(Qs[i, j])
        iu = np.triu_indices(K)
        key = np.concatenate([lab[pi], Qs[iu], Rs.ravel()])
        return key, signs

    def function_keys(self, Q, R, v):
        """Invariants of the network function up to the symmetries, one vector per teacher map.

        Quadratic student: with ``Vq = diag(v) Q``, ``tr(Vq^k)`` for k = 1..K (the spectrum
        of ``A = W^T diag(v) W / d``) and ``R^T diag(v) (Q diag(v))^k R`` for k = 0..K-1 (the
        teacher vectors seen through A): equal for states that are the same function, e.g.
        two parallel units sharing one direction in any proportion. Off-diagonal teacher
        entries enter by magnitude, so teacher sign flips need not be searched.

        Other students (:meth:`_probe_keys`): ``E[f^2]`` and the correlations ``E[f(x)
        phi(u.x)]`` of the student's function f with probes phi (linear, ReLU, quadratic,
        erf at two scales) along each teacher vector and the sums and differences of two:
        functions of f alone, so equal for the same function (a necessary condition: two
        functions that differ only off the teacher's span with equal ``E[f^2]`` share them).
        """
        Q, R, v = np.asarray(Q, float), np.asarray(R, float), np.asarray(v, float)
        if self.activation != "quadratic":
            return self._probe_keys(Q, R, v)
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

    def _probe_keys(self, Q, R, v):
        """:meth:`function_keys` of a student that is not quadratic.

        For an even teacher activation a teacher unit may be reflected: each probe enters as
        the sum and product of its values at u and -u, and a pair's sum and difference
        directions likewise by the sum and product of their entries.
        """
        K, M = R.shape
        s = activation_code(self.activation)
        probes = [(activation_code(p), 1.0) for p in ("linear", "relu", "quadratic", "erf")]
        probes.append((activation_code("erf"), 3.0))
        qd = np.diag(Q)
        ff = sum(
            v[j] * v[k] * _pair_k(s, s, qd[j], qd[k], Q[j, k]) for j in range(K) for k in range(K)
        )

        def probe(alpha, sigma):
            """Probe values (n_probes,) along u = sum_n alpha_n w*_sigma(n), and along -u."""
            Ts = self.T[np.ix_(sigma, sigma)]
            var = float(alpha @ Ts @ alpha)
            cov = R[:, sigma] @ alpha
            out = []
            for sign in (1.0, -1.0):
                out.append(
                    [
                        sum(
                            v[j] * _pair_k(s, p, qd[j], lam * lam * var, sign * lam * cov[j])
                            for j in range(K)
                        )
                        for p, lam in probes
                    ]
                )
            return np.array(out)

        def sym(a, b):
            return np.concatenate([a + b, a * b])

        keys = []
        for sigma, _ in self.teacher_maps:
            parts = [np.array([ff])]
            for n in range(M):
                e = np.zeros(M)
                e[n] = 1.0
                vals = probe(e, sigma)
                parts.append(sym(vals[0], vals[1]) if self.even_t else vals[0])
            for n in range(M):
                for m in range(n + 1, M):
                    e = np.zeros(M)
                    e[n] = 1.0
                    e[m] = 1.0
                    plus = probe(e, sigma)
                    e[m] = -1.0
                    minus = probe(e, sigma)
                    if self.even_t:
                        a, b = sym(plus[0], plus[1]), sym(minus[0], minus[1])
                        parts.append(sym(a, b))
                    else:
                        parts += [plus[0], minus[0]]
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
    """The member of x's rescaling orbit with ``C_j = Q_jj - a v_j^2 = conserved_j`` (a the
    degree of the student's activation; dead units: see the module)."""
    Q, R, v = system.state(x)
    K = Q.shape[0]
    deg = system.degree
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
                # on the C_j = conserved_j member when there is one (C_j = -a v_j^2 here)
                size = np.sqrt(-conserved[j] / deg) if conserved[j] < 0 else vt_max
                v_new[j] = np.sign(v[j]) * size
            continue
        if abs(v[j]) * Q[j, j] <= dead:
            continue  # v_j = 0 with w_j != 0: its orbit does not reach other values of C_j
        # Q_jj b - deg v_j^2 / b^deg = C (b = a^2) is increasing in b > 0: one root, of
        # Q_jj b^(deg + 1) - C b^deg - deg v_j^2 = 0
        C = conserved[j]
        coef = np.zeros(deg + 2)
        coef[0], coef[1], coef[-1] = Q[j, j], -C, -deg * v[j] ** 2
        roots = np.roots(coef)
        b = [r.real for r in roots if abs(r.imag) <= 1e-9 * abs(r) and r.real > 0]
        if not b:
            continue
        a[j] = np.sqrt(max(b))
        v_new[j] = v[j] / a[j] ** deg
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
        decide; also every point of a ReLU student with a zero unit, where the right-hand
        side is not continuous).
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
    activation, teacher_activation : str
        The student's and the teacher's activations of the problem.
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
    activation: str = "quadratic"
    teacher_activation: str = "quadratic"

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
        dQ, dR, dv = unpack(
            vec, self.K, self.M, None if self.train_second_layer else np.zeros(self.K)
        )
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


def _has_dead_relu_unit(system, x):
    """Whether a ReLU student unit is zero at x: the right-hand side jumps there."""
    if not system.kinked:
        return False
    Q, _, _ = system.state(x)
    return bool(np.any(np.diag(Q) <= _DEAD_RTOL * max(1.0, np.abs(x).max())))


def _classify(system, x, zero_tol, tol):
    """Eigen-decomposition of the Jacobian at x and the kind, n_unstable, n_zero.

    A ReLU student with a zero unit is ``"degenerate"`` whatever the eigenvalues (see the
    module: the right-hand side is not continuous there).
    """
    J = system.jacobian(x)
    lam, vec = np.linalg.eig(J)
    top = np.abs(J).max(initial=0.0)
    if np.abs(J @ vec - vec * lam).max(initial=0.0) > 1e-9 * max(top, 1e-300):
        # entries at round-off level (e.g. 1e-33 next to 1e1, derivatives of a dead unit's
        # exact zeros) make LAPACK's balancing scale rows by huge powers of 2, and the
        # eigenvectors it returns then fail J v = lambda v by percents: they are exact zeros
        J[np.abs(J) <= 1e-14 * top] = 0.0
        lam, vec = np.linalg.eig(J)
    order = np.lexsort((-np.abs(lam), -lam.real))
    lam, vec = lam[order], vec[:, order]
    top = np.abs(lam).max(initial=0.0)
    zero = np.abs(lam) <= zero_tol * top if top > 0 else np.ones(lam.shape, bool)
    n_zero = int(zero.sum())
    n_unstable = int(np.count_nonzero(~zero & (lam.real > 0)))
    n_stable = int(np.count_nonzero(~zero & (lam.real < 0)))
    if n_zero == lam.size or _has_dead_relu_unit(system, x):
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

    For each right null vector n (both signs) look for a fixed point y whose component in the
    null space N is exactly ``delta n`` (least squares on ``rhs(y) = 0`` together with
    ``N (y - x) = delta n``): on a manifold of fixed points tangent to N there is one, at an
    isolated or degenerate point there is none. Pinning the whole null-space component keeps
    the answer independent of the basis of N (a free polish may slide along the set, or fall
    back, depending on round-off). A Jordan block (fewer null vectors than zero eigenvalues)
    is never flat.
    """
    _, sv, Vt = np.linalg.svd(J)
    null = Vt[sv <= max(sv[0], 1e-300) * 1e-6]
    if null.shape[0] < n_zero:
        return False
    delta = 1e-3 * max(1.0, np.abs(x).max())
    n = system.n
    for i in range(null.shape[0]):
        for sign in (1.0, -1.0):
            target = np.zeros(null.shape[0])
            target[i] = sign * delta

            def pinned(y, target=target):
                return np.concatenate([system.rhs(y) / system.lr, null @ (y - x) - target])

            y = _least_squares(pinned, x + sign * delta * null[i], 400 * (n + 1))
            if not np.all(np.isfinite(y)):
                return False
            if (
                system.residual(y) > _verify_limit(tol, y, system.res_power)
                or np.abs(null @ (y - x) - target).max() > 1e-6 * delta
            ):
                return False
    return True


# ----------------------------------------------------------------------------- starts


def _teacher_factor(T, r):
    """L (M, r) with L L^T = T, zero-padded to r columns (T PSD)."""
    lam, U = np.linalg.eigh(T)
    L = U * np.sqrt(np.clip(lam, 0.0, None))
    out = np.zeros((T.shape[0], r))
    out[:, : T.shape[0]] = L
    return out


def _teacher_subsets(K, M, rng, cap=4096):
    """An endless stream of (subset of the teacher units with at most K members, pass).

    Every such subset in a random order, again and again (``pass`` counting the rounds from
    0), when there are at most ``cap`` of them; else random ones (size uniform in
    0..min(K, M), then members uniform; ``pass`` None).
    """
    top = min(K, M)
    count = sum(
        int(np.prod(np.arange(M - L + 1, M + 1)) // np.prod(np.arange(1, L + 1)))
        for L in range(top + 1)
    )
    if count <= cap:
        subsets = [list(S) for L in range(top + 1) for S in itertools.combinations(range(M), L)]
        for round_ in itertools.count():
            for i in rng.permutation(len(subsets)):
                yield subsets[i], round_
    while True:
        L = int(rng.integers(0, top + 1))
        yield sorted(rng.choice(M, size=L, replace=False).tolist()), None


def _random_starts(system, n, rng):
    """Physical starts of several kinds and scales, as coordinate vectors.

    Cycles through: random students at log-uniform scales (1e-2 to 3 times the teacher's),
    students near w = 0, structured students whose units each either copy a random
    teacher unit (mostly with the teacher's sign of v and about its weight, on the balanced
    member C_j = 0), sit near 0 or point at random; every 4th start, for two rounds of the
    subsets of up to K teacher units (each in a random order), a student that learns the
    subset: one distinct unit copying each member with about the weight of the plateau
    formula (docs/theory.md, 'Fixed points, plateaus and stages'), the others near 0 with a
    small v (first round: close to the formula, with its signs of v; second: looser, some
    signs flipped, some idle units active at random) -- the neighbourhoods of the saddles
    and minima where some directions are learnt and others not, which random students of
    several units rarely come near.
    """
    K, M = system.K, system.M
    r = K + M
    Lt = _teacher_factor(system.T, r)
    t_diag = np.maximum(np.diag(system.T), 1e-12)
    t_scale = np.sqrt(t_diag.mean())
    vt_scale = max(np.abs(system.vt).max(), 1e-12)
    subsets = _teacher_subsets(K, M, rng)

    quadratic = system.activation == "quadratic"
    deg = system.degree

    def copy(j, m, v, W, flip=0.2, weight=None, spread=0.3):
        """Unit j copies teacher unit m on the balanced member C_j = 0, with ``v_j Q_jj``
        within ``spread`` decades of ``weight`` (default v*_m) and its sign but with
        probability ``flip``. Other activations: ``w_j = alpha w*_m`` with ``v_j alpha^a``
        (``v_j`` for erf, with alpha about 1) about ``weight``, on C_j = 0 when the
        activation is homogeneous (degree a)."""
        weight = system.vt[m] if weight is None else weight
        c = max(abs(weight), 1e-3 * vt_scale) * 10 ** rng.uniform(-spread, spread)
        if not quadratic:
            sign = np.sign(weight) or 1.0
            sign = -sign if rng.random() < flip else sign
            if deg is None:
                a = 10 ** rng.uniform(-spread, spread)
                size = c
            else:
                size = (c * (t_diag[m] / deg) ** (deg / 2)) ** (1 / (deg + 1))
                a = size * np.sqrt(deg / t_diag[m])
            if system.train_v:
                v[j] = sign * size
            # a unit that is not even points along its teacher unit (mostly: the reflected
            # unit is another function, a start near other points)
            W[j] = (1.0 if rng.random() < 0.8 else -1.0) * a * Lt[m]
            W[j] += 0.03 * a * np.sqrt(t_diag[m] / r) * rng.standard_normal(r)
            return
        if system.train_v:
            sign = np.sign(weight) or 1.0
            v[j] = (-sign if rng.random() < flip else sign) * (c / 2) ** (1 / 3)
        a = np.sqrt(c / max(abs(v[j]), 1e-12) / t_diag[m])
        W[j] = rng.choice([-1, 1]) * a * Lt[m]
        W[j] += 0.03 * a * np.sqrt(t_diag[m] / r) * rng.standard_normal(r)

    starts = []
    pending = next(subsets)
    j = 0
    for i in range(n):
        # every 4th start learns a subset, for two rounds of the subsets (or for good when
        # there are too many to enumerate); the others cycle through the first three kinds
        if i % 4 == 3 and (pending[1] is None or pending[1] < 2):
            mode = 3
        else:
            mode = j % 3
            j += 1
        v = (
            rng.choice([-1.0, 1.0], K) * vt_scale * 10 ** rng.uniform(-1, 0.5, K)
            if system.train_v
            else system.v_fixed.copy()
        )
        if mode == 0:
            W = rng.standard_normal((K, r)) * t_scale * 10 ** rng.uniform(-2, 0.5) / np.sqrt(r)
        elif mode == 1:
            W = rng.standard_normal((K, r)) * t_scale * 10 ** rng.uniform(-4, -2)
        elif mode == 2:
            W = np.empty((K, r))
            for j in range(K):
                u = rng.choice(3, p=[0.5, 0.2, 0.3])
                if u == 0:
                    copy(j, int(rng.integers(0, M)), v, W)
                elif u == 1:
                    W[j] = 1e-3 * t_scale * rng.standard_normal(r)
                else:
                    W[j] = t_scale * rng.standard_normal(r) / np.sqrt(r)
        else:
            S, round_ = pending
            pending = next(subsets)
            first = round_ == 0
            W = 1e-3 * t_scale * rng.standard_normal((K, r))
            if system.train_v:
                # idle units: small v too, or the polish pulls them off w = 0
                v *= 10 ** rng.uniform(-3, -1, K)
            # the plateau of docs/theory.md, 'Fixed points, plateaus and stages' (exact for
            # a diagonal T): each learnt unit's weight is
            # lambda_m + s / (2 + L), s the sum of the unlearnt lambda_n = v*_n T_nn
            # (other activations: about the teacher unit's own weight)
            lam = system.vt * np.diag(system.T)
            rest = lam.sum() - lam[S].sum()
            units = rng.permutation(K)
            for j, m in zip(units, rng.permutation(S)):
                copy(
                    j,
                    int(m),
                    v,
                    W,
                    flip=0.0 if first else 0.2,
                    weight=(
                        lam[m] / t_diag[m] + rest / (2 + len(S)) / t_diag[m]
                        if quadratic
                        else system.vt[m]
                    ),
                    spread=0.05 if first else 0.3,
                )
            if not first:
                # later passes: some idle units active in a random direction instead (the
                # saddles where units work without learning a teacher direction)
                for j in units[len(S) :]:
                    if rng.random() < 0.3:
                        W[j] = t_scale * rng.standard_normal(r) / np.sqrt(r)
                        if system.train_v:
                            v[j] = rng.choice([-1.0, 1.0]) * vt_scale * 10 ** rng.uniform(-1, 0)
        starts.append(system.pack(W @ W.T, W @ Lt.T, v))
    return starts


def _trajectory_starts(system, trajectories, order=None, signs=None, max_per_run=6, rate=0.05):
    """States where recorded curves plateau: local minima of |d ln eps / d ln t| below rate,
    plus the last record of each run (plateaus sit near saddles, the end near an attractor).
    ``order`` and ``signs`` relabel the recorded teacher units as the system's
    (``R[..., order] * signs``, see :func:`_teacher_labelling`). Curves recorded with other
    activations than the system's are refused."""
    attrs = getattr(trajectories, "attrs", None) or {}
    for key, want in (
        ("activation", system.activation),
        ("teacher_activation", system.teacher_activation),
    ):
        got = attrs.get(key, "quadratic")
        if got != want:
            raise InputError(
                f"trajectories were recorded with {key}={got!r}, but the fixed points are "
                f"sought with {key}={want!r}"
            )
    t, eps, Q, R, v = _trajectory_arrays(trajectories, system.K, system.M)
    if order is not None:
        R = R[..., order] * signs
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
        loc = [
            k
            for k in range(1, idx.size - 1)
            if g[k] <= g[k - 1] and g[k] <= g[k + 1] and g[k] < rate
        ]
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
        raise InputError(
            "trajectories must be a fastquad Result (or a dataset with time, "
            f"eps_g, Q, R, v), got {type(traj).__name__}"
        ) from exc
    if eps.ndim == 1:
        eps, Q, R, v = eps[None], Q[None], R[None], v[None]
    n, nt = eps.shape
    if (
        t.shape != (nt,)
        or Q.shape != (n, nt, K, K)
        or R.shape != (n, nt, K, M)
        or v.shape != (n, nt, K)
    ):
        raise InputError(
            f"trajectories must have K={K} student and M={M} teacher units and "
            f"matching time axes, got Q {Q.shape}, R {R.shape}, v {v.shape}"
        )
    return t, eps, Q, R, v


# ----------------------------------------------------------------------------- public


def _frozen_v(K, train_v, v_student):
    """The frozen second layer (K,) when v is not trained (default all ones), else None."""
    if train_v:
        if v_student is not None:
            raise InputError("v_student is only used with train_second_layer=False")
        return None
    return (
        np.ones(K)
        if v_student is None
        else _validate.finite_array("v_student", v_student, shape=(K,))
    )


def _check_teacher(T, v_teacher, M):
    p = _validate.Problems()
    vt = p.check(_validate.finite_array, "v_teacher", v_teacher, shape=(M,))
    if T is None:
        T = np.eye(M)
    T = p.check(_validate.finite_array, "T", T, shape=(M, M))
    p.raise_if_any()
    if np.abs(T - T.T).max() > 1e-10 * max(1.0, np.abs(T).max()):
        raise InputError("T must be symmetric")
    T = 0.5 * (T + T.T)
    if np.linalg.eigvalsh(T)[0] < -1e-10 * max(1.0, np.abs(T).max()):
        raise InputError("T must be positive semi-definite (a Gram matrix of teacher vectors)")
    return T, vt


class FixedPointList(list):
    """The fixed points found by :func:`find_fixed_points` (a list of :class:`FixedPoint`),
    with the search's bookkeeping as attributes.

    Attributes
    ----------
    n_dropped : int
        Candidate points (distinct up to symmetry) that failed the final verification -- the
        right-hand side at the state to be reported above the verification tolerance, or a
        state that is not a Gram matrix of real vectors -- and were therefore not reported.
    n_starts : int
        Starts polished (random ones plus those taken from ``trajectories``).
    n_converged : int
        Starts whose polish reached a physical point within the tolerance.
    """

    n_dropped = 0
    n_starts = 0
    n_converged = 0


def _verify_limit(tol, x, power=_RES_POWER):
    """Largest accepted ``max|rhs| / lr`` at x: ``tol * max(1, max|x|)^power`` (3: cubic
    right-hand side; 0 for erf), the acceptance of the polish."""
    return tol * max(1.0, float(np.abs(x).max(initial=0.0))) ** power


def _verified(system, x, tol, max_abs):
    """Whether x is a physical state at which the right-hand side is within the tolerance."""
    return system.physical(x, max_abs) and system.residual(x) <= _verify_limit(
        tol, x, system.res_power
    )


def _teacher_relabelling(K, M, order, signs, train_v):
    """(index, sign) arrays with ``x_given = sign * x_internal[index]`` for the teacher
    labelling of :func:`_teacher_labelling` (only R's coordinates move)."""
    nq = K * (K + 1) // 2
    inv = np.argsort(order)
    # R_given[:, n] = signs[k] R_internal[:, k] with k = inv[n]
    r = nq + (np.arange(K)[:, None] * M + inv[None, :]).ravel()
    index = np.concatenate([np.arange(nq), r] + ([nq + K * M + np.arange(K)] if train_v else []))
    sign = np.ones(index.size)
    sign[nq : nq + K * M] = np.tile(signs[inv], K)
    return index, sign


def _relabel_teacher(fp, order, signs, T, vt):
    """The same point in the given teacher labelling: R's columns (and the eigenvectors' R
    rows) back in the given order and signs."""
    index, sign = _teacher_relabelling(fp.K, fp.M, order, signs, fp.train_second_layer)
    inv = np.argsort(order)
    return replace(
        fp,
        R=(fp.R * signs)[:, inv],
        eigenvectors=fp.eigenvectors[index] * sign[:, None],
        T=T.copy(),
        v_teacher=vt.copy(),
    )


def find_fixed_points(
    K,
    M,
    T,
    v_teacher,
    lr=1.0,
    *,
    train_second_layer=True,
    sgd_noise=False,
    label_noise=0.0,
    n_starts=200,
    seed=0,
    trajectories=None,
    tol=1e-10,
    max_abs=1e3,
    v_student=None,
    conserved=0.0,
    zero_tol=1e-6,
    dedup_tol=1e-6,
    merge_same_function=True,
    batch_size=1,
    activation="quadratic",
    teacher_activation=None,
):
    """Fixed points of the order-parameter ODE, deduplicated up to symmetry and classified.

    The result does not depend on how the teacher units are given: the search runs on the
    teacher relabelled by decreasing ``v*`` (then ``T_nn``, then the sorted ``|T_nm|``) with
    signs fixed by the overlaps (see ``_teacher_labelling``), and the points are reported with
    R's columns back in the given order and signs. Any reordering of the teacher units gives
    the same table up to the matching permutation of R's columns, multiplicities included,
    unless units tied on all those keys are not interchangeable (then the same points are
    expected, but the starts differ). For an even teacher activation (quadratic), reflected
    units give the same points up to a symmetry (a reflection of a unit that overlaps no other
    one does not show in T and v*); for any other, a reflected unit is another teacher.

    Every reported point is verified at the very state reported, in the given labelling:
    ``max|rhs| / lr <= tol * max(1, max|x|)^3`` (x the coordinate vector; the right-hand side is
    cubic in the overlaps; for an erf student ``tol`` itself) and a positive semi-definite Gram
    matrix ``[[Q, R], [R^T, T]]``.
    Candidates that fail are dropped and counted in ``n_dropped`` of the returned list.

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
        population gradient flow. With a trained second layer the term raises every
        ``C_j = Q_jj - a v_j^2`` wherever the error is nonzero, so only points with zero error
        or idle units survive it; :func:`plateau_levels_with_noise` gives the plateau levels
        of the full ODE.
    label_noise : float, >= 0
        Enters only with ``sgd_noise=True``.
    n_starts : int, >= 1
        Random physical starts, polished by ``scipy.optimize.root``: random students at
        several scales, students near w = 0, and students whose units copy teacher units,
        sit near 0 or point at random (the neighbourhoods of the partly learnt saddles).
    seed : int, >= 0
        Seed of the starts.
    trajectories : Result, optional
        Recorded curves (e.g. of :func:`fastquad.integrate_ode`) with the same K, M and the
        teacher in the given order: their plateau states and final states are extra starts.
    tol : float, > 0
        Residual ``max|rhs| / lr`` a point must reach (times ``max(1, max|x|)^3``; see above).
    max_abs : float, > 0
        Points with a coordinate beyond this are dropped (runaway solutions).
    v_student : array, shape (K,), optional
        The frozen second layer (only with ``train_second_layer=False``; default all ones).
    conserved : float or array of shape (K,)
        With a trained v, no SGD noise and a homogeneous student activation of degree a, each
        class is reported at the member of its rescaling orbit with ``Q_jj - a v_j^2 =
        conserved_j``; None keeps the member found. Unused for an erf student (no orbit).
    zero_tol : float, in (0, 1)
        Eigenvalues below ``zero_tol * max|eigenvalue|`` count as zero.
    dedup_tol : float, > 0
        Relative tolerance of the comparison of canonical forms (and of ties between teacher
        units).
    merge_same_function : bool
        Report points that are the same network function with the same kind, n_unstable and
        n_zero once (continua of fixed points beyond the symmetries; see
        ``FixedPoint.n_variants``).
    batch_size : int, >= 1
        Mini-batch size: the eta^2 term scales as ``1 / batch_size`` (only with
        ``sgd_noise=True``).
    activation : {"quadratic", "linear", "relu", "erf"}
        The student's activation (see the module docstring for the symmetries each has, and
        for the points of a ReLU student where a unit is zero: kind ``"degenerate"``).
    teacher_activation : str or None
        The teacher's; None means the student's.

    Returns
    -------
    FixedPointList
        A list of :class:`FixedPoint` sorted by increasing eps_g (values equal up to a relative
        1e-9 count as equal), then n_unstable, n_zero, kind and canonical key; each is the
        canonical form of :class:`Symmetry` for the relabelled teacher, with R's columns put
        back in the given order. Its attributes count the dropped candidates, the starts and
        the converged starts.

    Examples
    --------
    K = M = 1 (docs/theory.md, 'Fixed points, plateaus and stages'): the global minimum, the
    ``R = 0`` saddle at 4/3, and the ``w = 0`` line at 3/2, stable for ``v < 0`` and unstable
    for ``v > 0``:

    >>> from fastquad.analysis import find_fixed_points
    >>> points = find_fixed_points(1, 1, None, [1.0], n_starts=50)
    >>> [(round(abs(fp.eps_g), 4), fp.kind) for fp in points]
    [(0.0, 'stable'), (1.3333, 'saddle'), (1.5, 'stable'), (1.5, 'unstable')]
    >>> minimum, saddle = points[0], points[1]
    >>> round(float(minimum.v[0] * minimum.Q[0, 0]), 6), round(abs(float(saddle.R[0, 0])), 6)
    (1.0, 0.0)
    """
    p = _validate.Problems()
    K = p.check(_validate.integer, "K", K, low=1)
    M = p.check(_validate.integer, "M", M, low=1)
    lr = p.check(_validate.real, "lr", lr, low=0.0, low_open=True)
    train_v = p.check(_validate.boolean, "train_second_layer", train_second_layer)
    noise = p.check(_validate.boolean, "sgd_noise", sgd_noise)
    sigma = p.check(_validate.real, "label_noise", label_noise, low=0.0)
    n_starts = p.check(_validate.integer, "n_starts", n_starts, low=1)
    seed = p.check(_validate.integer, "seed", seed, low=0)
    tol = p.check(_validate.real, "tol", tol, low=0.0, low_open=True)
    max_abs = p.check(_validate.real, "max_abs", max_abs, low=0.0, low_open=True)
    zero_tol = p.check(
        _validate.real, "zero_tol", zero_tol, low=0.0, high=1.0, low_open=True, high_open=True
    )
    dedup_tol = p.check(_validate.real, "dedup_tol", dedup_tol, low=0.0, low_open=True)
    merge = p.check(_validate.boolean, "merge_same_function", merge_same_function)
    batch = p.check(_validate.integer, "batch_size", batch_size, low=1)
    act_s, act_t = _activation_names(p, activation, teacher_activation)
    p.raise_if_any()
    T, vt = _check_teacher(T, v_teacher, M)
    v_fixed = _frozen_v(K, train_v, v_student)
    if conserved is not None:
        conserved = (
            np.full(K, _validate.real("conserved", conserved))
            if np.ndim(conserved) == 0
            else _validate.finite_array("conserved", conserved, shape=(K,))
        )

    # The starts, the tie-breaking of the canonical form and the order of the search all see
    # the teacher's labelling; relabelling it canonically makes the whole result independent
    # of the order the units were given in.
    order, signs = _teacher_labelling(
        T, vt, dedup_tol * max(1.0, np.abs(T).max(), np.abs(vt).max()), even=is_even(act_t)
    )
    Ti, vti = T[np.ix_(order, order)] * np.outer(signs, signs), vt[order]
    codes = activation_code(act_s), activation_code(act_t)
    system = _System(K, M, Ti, vti, lr, train_v, noise, sigma, v_fixed, batch, *codes)
    starts = _random_starts(system, n_starts, np.random.default_rng(seed))
    if trajectories is not None:
        starts += _trajectory_starts(system, trajectories, order, signs)

    sym = Symmetry(
        Ti,
        vti,
        rescale=system.rescale,
        tol=dedup_tol,
        fixed_v=not train_v,
        activation=act_s,
        teacher_activation=act_t,
    )
    classes = []  # [key, x, count]
    n_converged = 0
    for x0 in starts:
        x = _polish(system, x0, tol, max_abs)
        if x is None or not system.physical(x, max_abs):
            continue
        if system.rescale and conserved is not None:
            x = _polish(system, _rescale_to(system, x, conserved), tol, max_abs, scaled=False)
            if x is None or not system.physical(x, max_abs):
                continue
        n_converged += 1
        Q, R, v = system.state(system.snapped(x))
        Qc, Rc, vc, key = sym.canonical(Q, R, v)
        xc = system.pack(Qc, Rc, vc)
        for c in classes:
            if sym.same(c[0], key):
                c[2] += 1
                if system.residual(xc) < system.residual(c[1]):
                    c[1] = xc
                break
        else:
            classes.append([key, xc, 1])

    # verified before classification, so that merging only chooses among verified points
    n_dropped = 0
    points = []
    for _, x, count in classes:
        if not _verified(system, x, tol, max_abs):
            n_dropped += 1
            continue
        lam, vec, kind, n_unstable, n_zero = _classify(system, x, zero_tol, tol)
        Q, R, v = system.state(x)
        points.append(
            FixedPoint(
                Q=Q,
                R=R,
                v=v,
                eps_g=system.eps_g(x),
                eigenvalues=lam,
                eigenvectors=vec,
                kind=kind,
                n_unstable=n_unstable,
                n_zero=n_zero,
                residual=system.residual(x),
                multiplicity=count,
                T=Ti.copy(),
                v_teacher=vti.copy(),
                train_second_layer=train_v,
                activation=act_s,
                teacher_activation=act_t,
            )
        )
    if merge:
        points = _merge_same_function(points, sym)
    points = _sorted_for_report(points, sym)

    # verified again as reported: the given labelling, the caller's T and v*
    given = _System(K, M, T, vt, lr, train_v, noise, sigma, v_fixed, batch, *codes)
    out = FixedPointList()
    for fp in points:
        fp = _relabel_teacher(fp, order, signs, T, vt)
        x = given.pack(fp.Q, fp.R, fp.v)
        if not _verified(given, x, tol, max_abs):
            n_dropped += 1
            continue
        # eps_g stays the one computed in the canonical labelling: the same number for every
        # order of the teacher, not one differing in the last bits with the summation order
        out.append(replace(fp, residual=given.residual(x)))
    out.n_dropped, out.n_starts, out.n_converged = n_dropped, len(starts), n_converged
    return out


def _merge_same_function(points, sym):
    """One point per (network function, kind, n_unstable, n_zero); see FixedPoint.n_variants."""
    groups = []  # [points, keys of the first]
    for fp in points:
        keys = sym.function_keys(fp.Q, fp.R, fp.v)
        for g in groups:
            first = g[0][0]
            if (fp.kind, fp.n_unstable, fp.n_zero) == (
                first.kind,
                first.n_unstable,
                first.n_zero,
            ) and any(sym.same(k, g[1][0]) for k in keys):
                g[0].append(fp)
                break
        else:
            groups.append([[fp], keys])
    merged = []
    for members, _ in groups:
        # the most visited member; among equals the one with the largest canonical key -- not
        # the smallest residual, which is round-off and would make the choice irreproducible
        top = max(fp.multiplicity for fp in members)
        best, best_key = None, None
        for fp in members:
            if fp.multiplicity != top:
                continue
            key = sym.canonical(fp.Q, fp.R, fp.v)[3]
            if best is None or _lex_greater(key, best_key, _key_tol(sym, key, best_key)):
                best, best_key = fp, key
        merged.append(
            replace(
                best, multiplicity=sum(fp.multiplicity for fp in members), n_variants=len(members)
            )
        )
    return merged


def _key_tol(sym, a, b):
    return sym.tol * max(1.0, np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0))


def _sorted_for_report(points, sym):
    """By increasing eps_g, then n_unstable, n_zero, kind and decreasing canonical key.

    eps_g values equal up to round-off count as equal (relative 1e-9), so that the order of
    points at one level does not depend on the last bits of their eps_g.
    """
    keys = [sym.canonical(fp.Q, fp.R, fp.v)[3] for fp in points]
    scale = max([1.0] + [abs(fp.eps_g) for fp in points])

    def cmp(i, j):
        a, b = points[i], points[j]
        if abs(a.eps_g - b.eps_g) > 1e-9 * scale:
            return -1 if a.eps_g < b.eps_g else 1
        for x, y in ((a.n_unstable, b.n_unstable), (a.n_zero, b.n_zero), (a.kind, b.kind)):
            if x != y:
                return -1 if x < y else 1
        tol = _key_tol(sym, keys[i], keys[j])
        if _lex_greater(keys[i], keys[j], tol):
            return -1
        if _lex_greater(keys[j], keys[i], tol):
            return 1
        return 0

    return [points[i] for i in sorted(range(len(points)), key=functools.cmp_to_key(cmp))]


def canonical_form(
    Q,
    R,
    v,
    T,
    v_teacher,
    *,
    rescale=None,
    tol=1e-6,
    fixed_v=False,
    activation="quadratic",
    teacher_activation=None,
):
    """The canonical member of the symmetry class of a state (see :class:`Symmetry`).

    Parameters
    ----------
    Q : array, shape (K, K)
    R : array, shape (K, M)
    v : array, shape (K,)
    T : array, shape (M, M)
    v_teacher : array, shape (M,)
    rescale : bool or None
        Compare through the rescaling invariants (trained second layer, no SGD noise). None:
        whenever the student's activation is homogeneous (not for erf); True with erf is
        refused.
    tol : float, > 0
    fixed_v : bool
        v is a frozen second layer: units trade places only with units of equal v.
    activation, teacher_activation : str
        The student's and the teacher's activations (the teacher's defaults to the
        student's): they decide which sign flips are symmetries and the rescaling's degree.

    Returns
    -------
    Q, R, v, key : as :meth:`Symmetry.canonical`
    """
    p = _validate.Problems()
    act_s, act_t = _activation_names(p, activation, teacher_activation)
    if rescale is not None:
        rescale = p.check(_validate.boolean, "rescale", rescale)
    p.raise_if_any()
    if rescale is None:
        rescale = activation_degree(act_s) is not None
    v = _validate.finite_array("v", v, ndim=1)
    vt = _validate.finite_array("v_teacher", v_teacher, ndim=1)
    K, M = v.shape[0], vt.shape[0]
    Q = _validate.finite_array("Q", Q, shape=(K, K))
    R = _validate.finite_array("R", R, shape=(K, M))
    T, vt = _check_teacher(T, vt, M)
    tol = _validate.real("tol", tol, low=0.0, low_open=True)
    return Symmetry(
        T,
        vt,
        rescale=rescale,
        tol=tol,
        fixed_v=_validate.boolean("fixed_v", fixed_v),
        activation=act_s,
        teacher_activation=act_t,
    ).canonical(Q, R, v)


# ----------------------------------------------------------------------------- SGD-noise plateaus


@dataclass(frozen=True, eq=False)
class NoisyPlateauLevels:
    """Plateau levels of the full order-parameter ODE (with the eta^2 SGD-noise term) beside
    the fixed points of the eta^1 flow they continue.

    Entry i belongs to ``points[i]``, a fixed point of the gradient flow; NaN entries mark a
    point the noise term removes (its continuation from eta -> 0 to the given eta failed).

    Attributes
    ----------
    eps_flow : ndarray, shape (n,)
        eps_g at the fixed points of the eta^1 flow (increasing): the drift levels of
        docs/theory.md, 'Fixed points, plateaus and stages'.
    eps_full : ndarray, shape (n,)
        eps_g at the matching states of the full ODE at ``lr``, ``label_noise`` and
        ``batch_size`` (see :func:`plateau_levels_with_noise` for what those states are).
    kind : tuple of str, length n
        Kind of each flow fixed point (``FixedPoint.kind``).
    n_unstable : ndarray of int, shape (n,)
    points : list of FixedPoint, length n
        The flow's fixed points.
    Q : ndarray, shape (n, K, K)
    R : ndarray, shape (n, K, M)
    v : ndarray, shape (n, K)
        The full-ODE states (NaN where lost).
    conserved : ndarray, shape (n, K)
        ``C_j = Q_jj - a v_j^2`` at the full-ODE states (a the degree of the student's
        activation; NaN for erf).
    conserved_rate : ndarray, shape (n, K)
        ``dC_j/dt`` there: the rate at which the state slides along the rescaling orbits and
        so the level moves (zero with a frozen second layer, and for idle units; NaN for a
        trained erf student, which has no orbits).
    residual : ndarray, shape (n,)
        ``max|rhs / lr - sum_j mu_j g_j|``: the velocity not along the rescaling orbits, in
        units of lr (``max|rhs| / lr`` with a frozen second layer).
    lr, label_noise : float
    batch_size : int
    train_second_layer : bool
    """

    eps_flow: np.ndarray
    eps_full: np.ndarray
    kind: tuple
    n_unstable: np.ndarray
    points: list
    Q: np.ndarray
    R: np.ndarray
    v: np.ndarray
    conserved: np.ndarray
    conserved_rate: np.ndarray
    residual: np.ndarray
    lr: float
    label_noise: float
    batch_size: int
    train_second_layer: bool

    @property
    def n_lost(self):
        """Flow fixed points without a full-ODE counterpart at this lr."""
        return int(np.count_nonzero(np.isnan(self.eps_full)))

    def table(self):
        """Both levels side by side, one row per flow fixed point.

        Returns
        -------
        str
        """
        header = ["#", "eps (lr^1 flow)", "eps (full ODE)", "shift", "kind", "n_unst", "dC/dt"]
        rows = [header]
        for i in range(self.eps_flow.size):
            full = self.eps_full[i]
            rows.append(
                [
                    str(i),
                    f"{self.eps_flow[i]:.6g}",
                    "lost" if np.isnan(full) else f"{full:.6g}",
                    "" if np.isnan(full) else f"{full - self.eps_flow[i]:+.3g}",
                    self.kind[i],
                    str(self.n_unstable[i]),
                    _compact(self.conserved_rate[i]),
                ]
            )
        widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
        return "\n".join("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in rows)


def _orbit_tangents(system, x, live):
    """Columns g_j: d x / d a_j of the rescaling ``w_j -> (1 + a_j) w_j, v_j -> v_j / (1 +
    a_j)^deg`` at a_j = 0, for the live units (shape (n, n_live)); deg the degree of the
    student's activation (a homogeneous one: ``system.has_orbit``)."""
    Q, R, v = system.state(x)
    K = Q.shape[0]
    cols = []
    for j in np.flatnonzero(live):
        a = np.zeros(K)
        a[j] = 1.0
        cols.append(
            system.pack(Q * (a[:, None] + a[None, :]), R * a[:, None], -system.degree * v * a)
        )
    return np.array(cols).reshape(-1, system.n).T


def _conserved_of(system, x):
    """``C_j = Q_jj - a v_j^2`` (a the degree of the student's activation); NaN for erf, which
    conserves nothing."""
    Q, _, v = system.state(x)
    if system.degree is None:
        return np.full(system.K, np.nan)
    return np.diag(Q) - system.degree * v**2


def _noisy_state(system, x0, target, n_steps, tol, max_abs):
    """Continue the flow fixed point x0 to the full ODE of ``system`` (its lr) in n_steps
    steps of lr. Returns (x, mu, residual) or None.

    Unknowns are the coordinates of the live units (a dead unit, w_j = 0, has a zero
    right-hand side for any v_j and is held as it is) and, with a trained second layer and a
    homogeneous student activation (rescaling orbits), one rate mu_j per live unit with
    equations ``rhs / lr = sum_j mu_j g_j`` and ``C_j = target_j``; otherwise (frozen second
    layer, erf) the continued point is a fixed point of the full right-hand side.
    """
    K, M = system.K, system.M
    Q, _, _ = system.state(x0)
    scale = max(1.0, np.abs(x0).max())
    live = np.diag(Q) > _DEAD_RTOL * scale
    # a coordinate is free when every unit it involves is live (Q_jk = 0 stays with w_k = 0)
    free = pack(np.outer(live, live), np.repeat(live[:, None], M, axis=1), live, system.train_v)
    idx = np.flatnonzero(free)
    n_mu = int(live.sum()) if system.has_orbit else 0
    if idx.size == 0:
        return x0.copy(), np.zeros(K), system.residual(x0)
    base = x0.copy()
    stages = [
        _System(
            K,
            M,
            system.T,
            system.vt,
            system.lr * k / n_steps,
            system.train_v,
            True,
            np.sqrt(system.sigma2),
            system.v_fixed,
            1.0 / system.inv_batch,
            system.act_s,
            system.act_t,
        )
        for k in range(1, n_steps + 1)
    ]

    def full(z, sys_):
        x = base.copy()
        x[idx] = z[: idx.size]
        r = sys_.rhs(x) / sys_.lr
        if n_mu:
            r = r - _orbit_tangents(sys_, x, live) @ z[idx.size :]
            r = np.concatenate([r[idx], (_conserved_of(sys_, x) - target)[live]])
        else:
            r = r[idx]
        return x, r

    z = np.concatenate([x0[idx], np.zeros(n_mu)])
    for sys_ in stages:
        z_new = None
        for method in ("hybr", "lm"):

            def fun(zz, s=sys_):
                return full(zz, s)[1]

            try:
                with np.errstate(all="ignore"):
                    zz = (
                        optimize.root(
                            fun,
                            z,
                            method="hybr",
                            options=dict(xtol=1e-14, maxfev=200 * (z.size + 1)),
                        ).x
                        if method == "hybr"
                        else _least_squares(fun, z, 200 * (z.size + 1))
                    )
            except (ValueError, FloatingPointError, np.linalg.LinAlgError):
                continue
            if not np.all(np.isfinite(zz)) or np.abs(zz).max() > max_abs:
                continue
            x, r = full(zz, sys_)
            if np.abs(r).max() <= _verify_limit(tol, x, sys_.res_power) and sys_.physical(
                x, max_abs
            ):
                z_new = zz
                break
        if z_new is None:
            return None
        z = z_new
    x, r = full(z, stages[-1])
    mu = np.zeros(K)
    mu[live] = z[idx.size :] if n_mu else 0.0
    return x, mu, float(np.abs(r).max())


def _continue(flow, system, x0, target, n_steps, tol, max_abs):
    """:func:`_noisy_state` from the flow fixed point x0 (already at the wanted C_j)."""
    if flow.has_orbit:
        # units whose orbit does not reach C_j = target_j (v_j = 0) keep their own
        now = _conserved_of(flow, x0)
        stuck = np.abs(now - target) > 1e-9 * max(1.0, np.abs(target).max())
        target = np.where(stuck, now, target)
    return _noisy_state(system, x0, target, n_steps, tol, max_abs)


def _flow_point_of_state(flow, system, Q0, R0, v0, tol, max_abs, n_steps, zero_tol):
    """(FixedPoint, x, C) for the flow fixed point next to a run's state, or Nones.

    The state is polished by the flow and put back at its own C_j. On a plateau the units still
    to learn are small but not zero, and the polish may land on a continuum member (a small
    unit parallel to a learnt one) that the noise term does not keep; the smallest units (by
    ``|v_j| Q_jj``, their weight in the function) are then set to w_j = 0 one more at a time,
    as long as the flow level stays the same, until the continuation succeeds.
    """
    K = flow.K
    deg = flow.degree or 1
    target = np.diag(Q0) - deg * v0**2 if flow.has_orbit else np.full(K, np.nan)
    # a unit's weight in the function: |v_j| |w_j|^a (erf: |v_j| |w_j|)
    order = np.argsort(np.abs(v0) * np.diag(Q0) ** (deg / 2), kind="stable")
    level = None
    for n_idle in range(K):
        Q, R = Q0.copy(), R0.copy()
        idle = order[:n_idle]
        Q[idle, :] = 0.0
        Q[:, idle] = 0.0
        R[idle, :] = 0.0
        x = _polish(flow, flow.pack(Q, R, v0), tol, max_abs)
        if x is not None and flow.has_orbit:
            x = _polish(flow, _rescale_to(flow, x, target), tol, max_abs, scaled=False)
        if x is None or not flow.physical(x, max_abs):
            continue
        eps = flow.eps_g(x)
        if level is None:
            level = eps
        elif abs(eps - level) > 1e-6 * max(1.0, abs(level)):
            break  # another plateau: the units set to zero did carry the function
        if _continue(flow, system, x, target, n_steps, tol, max_abs) is None:
            continue
        lam, vec, kind, n_unstable, n_zero = _classify(flow, x, zero_tol, tol)
        Q, R, v = flow.state(x)
        fp = FixedPoint(
            Q=Q,
            R=R,
            v=v,
            eps_g=eps,
            eigenvalues=lam,
            eigenvectors=vec,
            kind=kind,
            n_unstable=n_unstable,
            n_zero=n_zero,
            residual=flow.residual(x),
            multiplicity=1,
            T=flow.T.copy(),
            v_teacher=flow.vt.copy(),
            train_second_layer=flow.train_v,
            activation=flow.activation,
            teacher_activation=flow.teacher_activation,
        )
        return fp, x, target
    return None, None, None


def _states_array(states, K, M):
    """(Q (n, K, K), R (n, K, M), v (n, K)) from one state or a stack of states."""
    try:
        Q, R, v = (np.asarray(a, float) for a in states)
    except (TypeError, ValueError) as exc:
        raise InputError("states must be a tuple (Q, R, v) of arrays") from exc
    if Q.ndim == 2:
        Q, R, v = Q[None], R[None], v[None]
    n = Q.shape[0]
    if Q.shape != (n, K, K) or R.shape != (n, K, M) or v.shape != (n, K):
        raise InputError(
            f"states must be (Q, R, v) with shapes (n, {K}, {K}), (n, {K}, {M}), "
            f"(n, {K}) (n optional), got {Q.shape}, {R.shape}, {v.shape}"
        )
    if not (np.all(np.isfinite(Q)) and np.all(np.isfinite(R)) and np.all(np.isfinite(v))):
        raise InputError("states must be finite")
    return Q, R, v


def plateau_levels_with_noise(
    K,
    M,
    T,
    v_teacher,
    lr,
    *,
    label_noise=0.0,
    batch_size=1,
    train_second_layer=True,
    v_student=None,
    conserved=0.0,
    points=None,
    states=None,
    n_starts=200,
    seed=0,
    trajectories=None,
    tol=1e-10,
    max_abs=1e3,
    n_steps=8,
    zero_tol=1e-6,
    activation="quadratic",
    teacher_activation=None,
):
    """Plateau levels of the full order-parameter ODE at a given lr, label noise and batch size,
    beside the eta^1 levels (fixed points of the gradient flow) they continue.

    The eta^2 term moves each fixed point of the flow by O(lr / batch_size) (or removes it);
    the levels the ODE (and online SGD at large d) actually plateau at are the moved ones.
    Each flow fixed point is continued from eta -> 0 to ``lr`` in ``n_steps`` steps of eta.

    - Frozen second layer: the continued point is a fixed point of the full right-hand side.
    - Trained second layer, homogeneous student activation of degree a (quadratic: 2, linear
      and relu: 1): the noise term raises every ``C_j = Q_jj - a v_j^2`` wherever the
      error is nonzero (docs/theory.md, 'Symmetries and conserved quantities'), so a
      plateau is no fixed point: the state slides slowly
      (at O(lr^2)) along the rescaling orbits ``w_j -> c_j w_j, v_j -> v_j / c_j^a``, which
      leave the network function, hence eps_g, unchanged. The continued point is the state
      with given ``C_j`` at which the velocity of the full ODE points along those orbits:
      ``rhs = lr sum_j mu_j g_j`` (g_j the orbit tangents), so eps_g is momentarily constant.
      Its level depends on the C_j at O(lr): use ``states`` to predict the level of a run at
      a time from its state then; ``conserved_rate`` says how fast the C_j, and so the level,
      move.
    - Trained second layer, erf student (no rescaling orbit, nothing conserved): the
      continued point is a fixed point of the full right-hand side, as for a frozen one
      (``conserved`` is unused, ``conserved`` and ``conserved_rate`` of the result are NaN).

    Members of a continuum of flow fixed points (``FixedPoint.n_variants > 1``, e.g. two
    units sharing one teacher direction in some proportion) are often lost: the noise term
    moves the state along the continuum, and only some members continue.

    Parameters
    ----------
    K, M : int, >= 1
    T : array, shape (M, M), or None
        Teacher overlaps; None is the identity.
    v_teacher : array, shape (M,)
    lr : float, > 0
        Learning rate of the run.
    label_noise : float, >= 0
        Label-noise standard deviation of the run.
    batch_size : int, >= 1
        Mini-batch size of the run (the eta^2 term scales as 1 / batch_size).
    train_second_layer : bool
    v_student : array, shape (K,), optional
        The frozen second layer (``train_second_layer=False`` only; default all ones).
    conserved : float or array of shape (K,)
        Trained second layer, without ``states``: the ``C_j`` at which the levels are wanted
        (0: a small initialisation before the noise has acted). An array refers to the units
        in the order of each point (the canonical order of :func:`find_fixed_points`). Units
        with ``w_j = 0`` do not move and ignore it; units with ``v_j = 0`` keep their own
        C_j (their orbit does not change it the same way).
    points : list of FixedPoint, optional
        Fixed points of the eta^1 flow for this problem (from :func:`find_fixed_points` with
        ``sgd_noise=False``); default: found here with ``n_starts``, ``seed``,
        ``trajectories``, ``tol`` and ``max_abs``. Not with ``states``.
    states : tuple (Q, R, v), optional
        States of a run on its plateaus, shapes (n, K, K), (n, K, M), (n, K) (or one state
        without the leading axis), e.g. ``(res.Q[r, k], res.R[r, k], res.v[r, k])``. Each is
        polished to the flow fixed point next to it, which is put at the state's own C_j and
        continued: entry i is the predicted level of state i (NaN if no flow fixed point is
        reached or the continuation fails), in the given order.
    n_starts, seed, trajectories
        Passed to :func:`find_fixed_points` when neither ``points`` nor ``states`` is given.
    tol : float, > 0
        Accepted residual at each step of the continuation: ``max|F| <= tol max(1,
        max|x|)^3`` for the equations F above (right-hand side over lr, and the C_j).
    max_abs : float, > 0
        Continuations that leave ``max|x| <= max_abs`` are lost.
    n_steps : int, >= 1
        Steps of the continuation in eta.
    zero_tol : float, in (0, 1)
        Classification of the flow fixed points reached from ``states``.

    Returns
    -------
    NoisyPlateauLevels
        One entry per flow fixed point, sorted by increasing eps_flow (per state, in the
        given order, with ``states``).

    Examples
    --------
    K = M = 1 at lr = 0.1: the noise term lifts the ``R = 0`` saddle's level from 4/3, and
    leaves the minimum and the ``w = 0`` level (3/2) in place:

    >>> import numpy as np
    >>> from fastquad.analysis import plateau_levels_with_noise
    >>> levels = plateau_levels_with_noise(1, 1, None, [1.0], lr=0.1, n_starts=50)
    >>> print(np.round(levels.eps_flow, 4), np.round(levels.eps_full, 4))
    [0.     1.3333 1.5    1.5   ] [0.     1.3353 1.5    1.5   ]
    >>> round(float(levels.conserved_rate[1, 0]), 3)  # dC/dt on the saddle's plateau
    0.024
    """
    p = _validate.Problems()
    K = p.check(_validate.integer, "K", K, low=1)
    M = p.check(_validate.integer, "M", M, low=1)
    lr = p.check(_validate.real, "lr", lr, low=0.0, low_open=True)
    sigma = p.check(_validate.real, "label_noise", label_noise, low=0.0)
    batch = p.check(_validate.integer, "batch_size", batch_size, low=1)
    train_v = p.check(_validate.boolean, "train_second_layer", train_second_layer)
    tol = p.check(_validate.real, "tol", tol, low=0.0, low_open=True)
    max_abs = p.check(_validate.real, "max_abs", max_abs, low=0.0, low_open=True)
    n_steps = p.check(_validate.integer, "n_steps", n_steps, low=1)
    zero_tol = p.check(
        _validate.real, "zero_tol", zero_tol, low=0.0, high=1.0, low_open=True, high_open=True
    )
    act_s, act_t = _activation_names(p, activation, teacher_activation)
    p.raise_if_any()
    T, vt = _check_teacher(T, v_teacher, M)
    c = (
        np.full(K, _validate.real("conserved", conserved))
        if np.ndim(conserved) == 0
        else _validate.finite_array("conserved", conserved, shape=(K,))
    )
    v_fixed = _frozen_v(K, train_v, v_student)
    if points is not None and states is not None:
        raise InputError("give points or states, not both")
    codes = activation_code(act_s), activation_code(act_t)
    flow = _System(K, M, T, vt, lr, train_v, False, sigma, v_fixed, batch, *codes)
    system = _System(K, M, T, vt, lr, train_v, True, sigma, v_fixed, batch, *codes)

    # (flow fixed point or None, its coordinates at the wanted C_j, the wanted C_j)
    entries = []
    if states is not None:
        Qs, Rs, vs = _states_array(states, K, M)
        for Q0, R0, v0 in zip(Qs, Rs, vs):
            if not train_v and not np.allclose(v0, v_fixed):
                raise InputError("states must have the frozen second layer v_student")
            entries.append(
                _flow_point_of_state(flow, system, Q0, R0, v0, tol, max_abs, n_steps, zero_tol)
            )
    else:
        if points is None:
            points = find_fixed_points(
                K,
                M,
                T,
                vt,
                lr,
                train_second_layer=train_v,
                v_student=v_student,
                n_starts=n_starts,
                seed=seed,
                trajectories=trajectories,
                tol=tol,
                max_abs=max_abs,
                conserved=c if train_v else 0.0,
                activation=act_s,
                teacher_activation=act_t,
            )
        points = sorted(points, key=lambda fp: (fp.eps_g, fp.n_unstable))
        for fp in points:
            if (fp.K, fp.M, fp.train_second_layer) != (K, M, train_v) or not (
                np.allclose(fp.T, T)
                and np.allclose(fp.v_teacher, vt)
                and (fp.activation, fp.teacher_activation) == (act_s, act_t)
            ):
                raise InputError(
                    f"points must be fixed points of this problem (K={K}, M={M}, "
                    f"T, v_teacher, train_second_layer={train_v}, activation={act_s!r}, "
                    f"teacher_activation={act_t!r})"
                )
            if not train_v and not np.allclose(fp.v, v_fixed):
                raise InputError("points must have the frozen second layer v_student")
            x = flow.pack(fp.Q, fp.R, fp.v)
            entries.append((fp, _rescale_to(flow, x, c) if flow.has_orbit else x, c.copy()))

    n = len(entries)
    Qo, Ro, vo = np.full((n, K, K), np.nan), np.full((n, K, M), np.nan), np.full((n, K), np.nan)
    eps_flow, eps_full, res = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    C, rate = np.full((n, K), np.nan), np.full((n, K), np.nan)
    for i, (fp, x0, target) in enumerate(entries):
        if fp is None:
            continue
        eps_flow[i] = fp.eps_g
        out = _continue(flow, system, x0, target, n_steps, tol, max_abs)
        if out is None:
            continue
        x, _, r = out
        Qo[i], Ro[i], vo[i] = system.state(x)
        eps_full[i], res[i] = system.eps_g(x), r
        C[i] = _conserved_of(system, x)
        dQ, _, dv = unpack(system.rhs(x), K, M, None if train_v else v_fixed)
        # the eta^1 part conserves C_j: what is left is the noise term's
        if flow.has_orbit:
            rate[i] = np.diag(dQ) - 2.0 * flow.degree * vo[i] * dv
        elif not train_v:
            rate[i] = 0.0
    return NoisyPlateauLevels(
        eps_flow=eps_flow,
        eps_full=eps_full,
        kind=tuple("" if fp is None else fp.kind for fp, _, _ in entries),
        n_unstable=np.array(
            [-1 if fp is None else fp.n_unstable for fp, _, _ in entries], dtype=int
        ),
        points=[fp for fp, _, _ in entries],
        Q=Qo,
        R=Ro,
        v=vo,
        conserved=C,
        conserved_rate=rate,
        residual=res,
        lr=lr,
        label_noise=sigma,
        batch_size=batch,
        train_second_layer=train_v,
    )


# ----------------------------------------------------------------------------- parameter space


def weights_from_order_parameters(
    Q, R, T, d, seed=0, *, activation="quadratic", teacher_activation=None
):
    """Weights with given overlaps: ``W W^T/d = Q``, ``W W*^T/d = R``, ``W* W*^T/d = T``.

    The Gram matrix of the K + M rows is factored (eigen-decomposition, so a semi-definite one
    works) and embedded in R^d along a random orthonormal frame. The weights do not depend on
    the activations; they are accepted (and checked) so that one set of keywords serves every
    function of this module.

    Parameters
    ----------
    Q : array, shape (K, K)
    R : array, shape (K, M)
    T : array, shape (M, M)
    d : int, >= K + M
    seed : int, >= 0
        The frame.
    activation, teacher_activation : str
        One of :data:`fastquad.ACTIVATIONS` each (the teacher's None: the student's).

    Returns
    -------
    W : ndarray, shape (K, d)
    W_teacher : ndarray, shape (M, d)
    """
    p = _validate.Problems()
    _activation_names(p, activation, teacher_activation)
    p.raise_if_any()
    Q = _validate.finite_array("Q", Q, ndim=2)
    K = Q.shape[0]
    R = _validate.finite_array("R", R, ndim=2)
    M = R.shape[1] if R.ndim == 2 else 0
    p = _validate.Problems()
    p.check(_validate.finite_array, "Q", Q, shape=(K, K))
    p.check(_validate.finite_array, "R", R, shape=(K, M))
    T = p.check(_validate.finite_array, "T", T, shape=(M, M))
    d = p.check(_validate.integer, "d", d, low=K + M)
    seed = p.check(_validate.integer, "seed", seed, low=0)
    p.raise_if_any()
    G = np.block([[T, R.T], [R, Q]])
    G = 0.5 * (G + G.T)
    lam, U = np.linalg.eigh(G)
    if lam[0] < -_PSD_RTOL * max(1.0, np.abs(G).max()):
        raise InputError(
            f"Q, R, T are not the overlaps of real vectors: the Gram matrix "
            f"[[T, R^T], [R, Q]] has an eigenvalue {lam[0]:.3g} < 0"
        )
    # eigenvalues at round-off level are exact zeros of a rank-deficient Gram matrix (e.g. a
    # student aligned with the teacher): their square roots (~1e-8) would be spurious directions
    lam = np.where(lam > 64 * np.finfo(float).eps * max(1.0, lam[-1]), lam, 0.0)
    F = U * np.sqrt(lam)  # (K + M, K + M), F F^T = G
    frame, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, K + M)))
    X = np.sqrt(d) * F @ frame.T  # rows: teacher, then student
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
        layer (``w_j -> c w_j, v_j -> v_j / c^a`` for a student activation of degree a; none
        for erf).
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


def _symmetry_directions(W, v, Wt, train_v, degree=2):
    """Orthonormal basis (columns) of the exact symmetry directions at (W, v); ``degree`` of
    the student's activation (None: no rescaling)."""
    K, d = W.shape
    _, s, Vt = np.linalg.svd(Wt, full_matrices=True)
    m = int(np.count_nonzero(s > 1e-10 * max(1.0, s.max(initial=0.0))))
    P = Vt[m:]  # (d - m, d), complement of teacher span
    gens = []
    for a in range(P.shape[0]):
        for b in range(a + 1, P.shape[0]):
            Om = np.outer(P[a], P[b]) - np.outer(P[b], P[a])
            g = W @ Om
            gens.append(np.concatenate([g.ravel(), np.zeros(K)]) if train_v else g.ravel())
    if train_v and degree is not None:
        for j in range(K):
            g = np.zeros((K, d))
            g[j] = W[j]
            gv = np.zeros(K)
            gv[j] = -degree * v[j]
            gens.append(np.concatenate([g.ravel(), gv]))
    n = K * d + (K if train_v else 0)
    if not gens:
        return np.zeros((n, 0))
    G = np.array(gens).T
    U, s, _ = np.linalg.svd(G, full_matrices=False)
    keep = s > 1e-9 * max(1.0, s.max())
    return U[:, keep]


def parameter_space_hessian(
    W,
    v,
    W_teacher,
    v_teacher,
    *,
    train_second_layer=True,
    zero_tol=1e-6,
    activation="quadratic",
    teacher_activation=None,
):
    """Hessian of eps_g in parameter space, informative eigenvalues apart from exact zero modes.

    Central finite differences of :func:`fastquad.population_gradients`; keep d small (the
    Hessian has ``(K d + K)^2`` entries). For a ReLU student eps_g is twice differentiable
    where units are parallel (its non-smooth term is ``|angle|^3``: central differences err
    by O(h) there instead of O(h^2)) but not where a unit is zero: there the gradient of
    ``relu'(0) = 0`` is no derivative, and the Hessian is meaningless.

    Parameters
    ----------
    W : array, shape (K, d)
    v : array, shape (K,)
    W_teacher : array, shape (M, d)
    v_teacher : array, shape (M,)
    train_second_layer : bool
        False: parameters are W only.
    zero_tol : float, in (0, 1)
    activation, teacher_activation : str
        The student's and the teacher's activations (the teacher's None: the student's).

    Returns
    -------
    ParameterHessian
    """
    p = _validate.Problems()
    W = p.check(_validate.finite_array, "W", W, ndim=2)
    Wt = p.check(_validate.finite_array, "W_teacher", W_teacher, ndim=2)
    p.raise_if_any()
    K, d = W.shape
    M = Wt.shape[0]
    v = p.check(_validate.finite_array, "v", v, shape=(K,))
    vt = p.check(_validate.finite_array, "v_teacher", v_teacher, shape=(M,))
    train_v = p.check(_validate.boolean, "train_second_layer", train_second_layer)
    zero_tol = p.check(
        _validate.real, "zero_tol", zero_tol, low=0.0, high=1.0, low_open=True, high_open=True
    )
    act_s, act_t = _activation_names(p, activation, teacher_activation)
    if Wt.shape[1] != d:
        p.add(f"W_teacher must have d={d} columns like W, got shape {Wt.shape}")
    p.raise_if_any()

    def grad(x):
        Wx = x[: K * d].reshape(K, d)
        vx = x[K * d :] if train_v else v
        gW, gv = population_gradients(Wx, vx, Wt, vt, activation=act_s, teacher_activation=act_t)
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
    S = _symmetry_directions(W, v, Wt, train_v, activation_degree(act_s))
    top = max(np.abs(H).max(), 1e-300)
    leak = float(np.abs(H @ S).max(initial=0.0) / top)
    if S.shape[1]:
        Qf, _ = np.linalg.qr(np.concatenate([S, np.eye(n)], axis=1))
        C = Qf[:, S.shape[1] : n]  # orthonormal complement of S
    else:
        C = np.eye(n)
    lam = np.linalg.eigvalsh(C.T @ H @ C)
    big = np.abs(lam).max(initial=0.0)
    flat = np.abs(lam) <= zero_tol * big if big > 0 else np.ones(lam.shape, bool)
    return ParameterHessian(
        eigenvalues=lam,
        n_negative=int(np.count_nonzero(~flat & (lam < 0))),
        n_positive=int(np.count_nonzero(~flat & (lam > 0))),
        n_flat=int(flat.sum()),
        n_symmetry=int(S.shape[1]),
        symmetry_leak=leak,
        gradient_norm=float(np.abs(grad(x0)).max()),
        all_eigenvalues=np.linalg.eigvalsh(H),
    )


# ----------------------------------------------------------------------------- table

# Table entries this small relative to their scale are round-off of exact zeros: printed as 0
# so that the digits shown do not depend on the last bits of the arithmetic.
_PRINT_ZERO = 1e-12


def _fmt(x, zero=0.0, digits=3):
    return "0" if abs(x) <= zero else f"{x:.{digits}g}"


def _compact(a, zero=0.0):
    a = np.atleast_1d(np.asarray(a))
    if a.ndim == 1:
        return "[" + " ".join(_fmt(x, zero) for x in a) + "]"
    return "[" + "; ".join(" ".join(_fmt(x, zero) for x in row) for row in a) + "]"


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
        compactly (rows of matrices separated by ";"). Values below 1e-12 times their scale
        (the largest eps_g of the table, the largest |eigenvalue| of the point, the largest
        overlap or |v| of the point, at least 1) are round-off of zeros and print as 0.
    """
    header = [
        "#",
        "eps_g",
        "kind",
        "n_unst",
        "n_zero",
        "mult",
        "var",
        "max Re",
        "min Re",
        "Q",
        "R",
        "v",
    ]
    rows = []
    eps_zero = _PRINT_ZERO * max([1.0] + [abs(fp.eps_g) for fp in points])
    for i, fp in enumerate(points):
        re = np.real(fp.eigenvalues)
        lam_zero = _PRINT_ZERO * max(1.0, np.abs(fp.eigenvalues).max(initial=0.0))
        zero = _PRINT_ZERO * max(
            1.0,
            np.abs(fp.Q).max(initial=0.0),
            np.abs(fp.R).max(initial=0.0),
            np.abs(fp.v).max(initial=0.0),
        )
        rows.append(
            [
                str(i),
                _fmt(fp.eps_g, eps_zero, 6),
                fp.kind,
                str(fp.n_unstable),
                str(fp.n_zero),
                str(fp.multiplicity),
                str(fp.n_variants),
                _fmt(re.max(), lam_zero),
                _fmt(re.min(), lam_zero),
                _compact(fp.Q, zero),
                _compact(fp.R, zero),
                _compact(fp.v, zero),
            ]
        )
    if not rows:
        return "no fixed points found"
    widths = [max(len(r[c]) for r in rows + [header]) for c in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)
