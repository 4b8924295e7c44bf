"""Teachers and students: generated from a seed or given explicitly.

Weights are drawn here, in the Python layer, with NumPy's PCG64 seeded from
``(seed, role, run_id)``; the kernels only ever receive arrays.
"""

import numpy as np

from . import _validate
from .errors import InputError

TEACHER_KINDS = ("gaussian", "orthonormal")
_ROLE_TEACHER, _ROLE_STUDENT = 1, 2


def _stream_ids(seed, run_id):
    return (
        _validate.integer("seed", seed, low=0, high=2**63 - 1),
        _validate.integer("run_id", run_id, low=0, high=2**63 - 1),
    )


def _generator(seed, role, run_id):
    seed, run_id = _stream_ids(seed, run_id)
    return _stream(seed, role, run_id)


def _stream(seed, role, run_id):
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, role, run_id])))


def student_weights(d, K, scale, seed, run_id):
    """The first layer of :func:`make_student`, from arguments already validated.

    For batches of many runs (``config.networks``): the checks are made once per configuration,
    not once per run. Same numbers as ``make_student(...)[0]``.
    """
    return scale * _stream(seed, _ROLE_STUDENT, run_id).standard_normal((K, d))


def _second_layer(name, v, n):
    if np.ndim(v) == 0:
        return np.full(n, _validate.real(name, v))
    return _validate.finite_array(name, v, shape=(n,))


def make_teacher(d, M, *, kind="orthonormal", v=1.0, seed=0, run_id=0):
    """A teacher ``(W*, v*)``.

    Parameters
    ----------
    d, M : int
        Input dimension and number of teacher units.
    kind : {"orthonormal", "gaussian"}
        ``"orthonormal"``: rows orthogonal with norm sqrt(d), so ``T = I`` exactly (needs M <= d).
        ``"gaussian"``: i.i.d. N(0, 1) entries, so ``T = I + O(1/sqrt(d))``.
    v : float or array of shape (M,)
        Second layer ``v*``.
    seed, run_id : int
        Random stream of the teacher.

    Returns
    -------
    W_teacher : ndarray, shape (M, d)
    v_teacher : ndarray, shape (M,)

    Examples
    --------
    >>> import numpy as np
    >>> import fastquad as fq
    >>> W_teacher, v_teacher = fq.make_teacher(50, 2, v=[1.0, 0.5])
    >>> W_teacher.shape, v_teacher
    ((2, 50), array([1. , 0.5]))
    >>> T = fq.order_parameters(W_teacher, W_teacher)[2]
    >>> bool(np.allclose(T, np.eye(2), rtol=0, atol=1e-12))  # orthonormal: T = I
    True
    """
    d = _validate.integer("d", d, low=1)
    M = _validate.integer("M", M, low=1)
    if kind not in TEACHER_KINDS:
        raise InputError(f"teacher kind must be one of {TEACHER_KINDS}, got {kind!r}")
    vt = _second_layer("v_teacher", v, M)
    rng = _generator(seed, _ROLE_TEACHER, run_id)
    G = rng.standard_normal((M, d))
    if kind == "orthonormal":
        if M > d:
            raise InputError(f"an orthonormal teacher needs M <= d, got M={M}, d={d}")
        q, r = np.linalg.qr(G.T)
        # fix the signs so the rows are a deterministic function of the draw
        q = q * np.sign(np.diag(r))[None, :]
        G = q.T * np.sqrt(d)
    return np.ascontiguousarray(G), vt


def make_student(d, K, *, scale=1.0, v=1.0, seed=0, run_id=0):
    """A student initialisation ``(W0, v0)`` with i.i.d. N(0, scale^2) first-layer entries.

    ``Q0 ~ scale^2 I``; very small scales (1e-6 and below) start next to the ``w = 0`` fixed
    point and show the long first plateau.

    Parameters
    ----------
    d, K : int
    scale : float, >= 0
    v : float or array of shape (K,)
        Initial second layer.
    seed, run_id : int

    Returns
    -------
    W0 : ndarray, shape (K, d)
    v0 : ndarray, shape (K,)

    Examples
    --------
    >>> import numpy as np
    >>> import fastquad as fq
    >>> W0, v0 = fq.make_student(1000, 2, scale=0.1, v=0.0, seed=3)
    >>> W0.shape, v0
    ((2, 1000), array([0., 0.]))
    >>> Q0 = fq.order_parameters(W0, W0)[0]
    >>> bool(np.allclose(Q0, 0.01 * np.eye(2), atol=0.002))  # Q0 ~ scale^2 I
    True
    >>> bool(np.array_equal(W0, fq.make_student(1000, 2, scale=0.1, seed=3)[0]))  # same stream
    True
    """
    d = _validate.integer("d", d, low=1)
    K = _validate.integer("K", K, low=1)
    scale = _validate.real("init_scale", scale, low=0.0)
    v0 = _second_layer("v0", v, K)
    seed, run_id = _stream_ids(seed, run_id)
    return student_weights(d, K, scale, seed, run_id), v0


def check_networks(W0, v0, W_teacher, v_teacher, *, allow_runs=True):
    """Validate a student batch and a teacher; give all a leading run axis.

    Returns
    -------
    W0 : (n, K, d), v0 : (n, K), Wt : (n, M, d), vt : (n, M), all float64 C-contiguous,
    with n the common number of runs (length-1 run axes broadcast).
    """
    nd = (2, 3) if allow_runs else 2
    p = _validate.Problems()
    W0 = p.check(_validate.finite_array, "W0", W0, ndim=nd)
    Wt = p.check(_validate.finite_array, "W_teacher", W_teacher, ndim=nd)
    v0 = p.check(_validate.finite_array, "v0", v0, ndim=(1, 2))
    vt = p.check(_validate.finite_array, "v_teacher", v_teacher, ndim=(1, 2))
    p.raise_if_any()
    W0 = _validate.with_run_axis("W0", W0, 2)
    Wt = _validate.with_run_axis("W_teacher", Wt, 2)
    v0 = _validate.with_run_axis("v0", v0, 1)
    vt = _validate.with_run_axis("v_teacher", vt, 1)
    K, d = W0.shape[1:]
    M = Wt.shape[1]
    for name, arr, size, what in (
        ("W0", W0, K, "student unit (row)"),
        ("W0", W0, d, "input (column)"),
        ("W_teacher", Wt, M, "teacher unit (row)"),
    ):
        if size < 1:
            raise InputError(f"{name} must have at least one {what}, got shape {arr.shape}")
    if Wt.shape[2] != d:
        raise InputError(f"W_teacher must have d={d} columns like W0, got shape {Wt.shape[1:]}")
    if v0.shape[1] != K:
        raise InputError(f"v0 must have K={K} entries (one per row of W0), got {v0.shape[1]}")
    if vt.shape[1] != M:
        raise InputError(
            f"v_teacher must have M={M} entries (one per row of W_teacher), got {vt.shape[1]}"
        )
    sizes = {a.shape[0] for a in (W0, v0, Wt, vt)} - {1}
    if len(sizes) > 1:
        raise InputError(
            f"the leading run axes of W0, v0, W_teacher, v_teacher disagree: "
            f"{W0.shape[0]}, {v0.shape[0]}, {Wt.shape[0]}, {vt.shape[0]}"
        )
    n = sizes.pop() if sizes else 1
    return tuple(
        _validate.broadcast_runs(nm, a, n)
        for nm, a in (("W0", W0), ("v0", v0), ("W_teacher", Wt), ("v_teacher", vt))
    )
