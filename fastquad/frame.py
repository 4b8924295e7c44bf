"""The teacher's frame: an orthogonal change of input coordinates in which the M teacher rows
span the first M coordinates.

Standard Gaussian inputs are invariant in law under any orthogonal map O, and SGD on
``(W, W*)`` with inputs ``x`` is the same process as SGD on ``(W O^T, W* O^T)`` with inputs
``O x``. Choosing O so that ``W* O^T`` is zero beyond its first M columns makes the teacher's
pre-activations cost M^2 multiply-adds per sample instead of M d, and changes nothing in the
law of the learning curves or the order parameters (Q, R, T are invariant). The direct SGD
kernel draws its inputs in this frame; explicit samples are used as given, in the original
frame.

O is the product of M Householder reflections (a QR factorisation of the teacher), stored as
their unit vectors, so applying it costs O(K M d) and no d x d matrix is ever formed. The
loops are plain Numba, one run per iteration and no BLAS, so a run's frame and rotated
weights are bit-identical alone or inside any batch.
"""

import math

import numpy as np
from numba import njit

from .kernels.options import FAST, JIT  # FAST: the reflections' dot products


@njit(**FAST)
def _reflect_rows(X, u):
    """X[r] <- X[r] (I - 2 u u^T) for every row r (X finite).

    The loops run over all columns although u_i is zero in its first i: a loop with a
    run-time start is not vectorised (9x slower), and the zeros change nothing (x - 0 = x).
    """
    d = X.shape[1]
    for r in range(X.shape[0]):
        s = 0.0
        for k in range(d):
            s += X[r, k] * u[k]
        s *= 2.0
        for k in range(d):
            X[r, k] -= s * u[k]


@njit(**JIT)
def _frame_one(B, U):
    """Householder QR of the rows of B (M, d) in place: B <- B O^T, U[i] the reflections."""
    M, d = B.shape
    for i in range(min(M, d - 1)):
        norm = 0.0
        for k in range(i, d):
            norm += B[i, k] * B[i, k]
        norm = math.sqrt(norm)
        # reflect B[i, i:] onto -sign(B[i, i]) |B[i, i:]| e_i: the sign avoids cancellation
        alpha = -norm if B[i, i] >= 0.0 else norm
        un = 0.0
        for k in range(i, d):
            U[i, k] = B[i, k]
        U[i, i] -= alpha
        for k in range(i, d):
            un += U[i, k] * U[i, k]
        un = math.sqrt(un)
        if un == 0.0:  # a zero row: nothing to reflect
            for k in range(i, d):
                U[i, k] = 0.0
            continue
        for k in range(i, d):
            U[i, k] /= un
        _reflect_rows(B, U[i])
        for k in range(i + 1, d):
            B[i, k] = 0.0  # exactly: the reflection cleared these entries
    for m in range(M):
        for k in range(M, d):
            B[m, k] = 0.0


# serial: O(M^2 d) per run, small beside any run; a parallel loop would cost seconds of
# compilation on a cold cache for nothing
@njit(**JIT)
def _frame_batch(B, U):
    for r in range(B.shape[0]):
        _frame_one(B[r], U[r])


@njit(**JIT)
def _apply_batch(X, U, forward):
    last = U.shape[0] - 1  # 0 for a shared frame
    for r in range(X.shape[0]):
        Ur = U[min(np.int64(r), last)]
        M = Ur.shape[0]
        for s in range(M):
            i = s if forward else M - 1 - s
            _reflect_rows(X[r], Ur[i])


def teacher_frame(W_teacher):
    """Householder vectors of the teacher's frame and the teacher in that frame.

    Parameters
    ----------
    W_teacher : float64 array, shape (n, M, d)
        One teacher per run (n = 1 for a teacher shared by all runs).

    Returns
    -------
    U : float64 array, shape (n, M, d)
        Unit vectors (or zero rows: no reflection) with ``O = H_{M-1} ... H_0``,
        ``H_i = I - 2 u_i u_i^T``; ``u_i`` is zero in its first i coordinates.
    W_teacher_rot : float64 array, shape (n, M, d)
        ``W_teacher O^T``: lower triangular in its first M columns and exactly zero beyond
        them, with the Gram matrix of ``W_teacher`` up to round-off.
    """
    B = np.array(W_teacher, dtype=np.float64, order="C", copy=True)
    U = np.zeros_like(B)
    _frame_batch(B, U)
    return U, B


def to_frame(W, U):
    """``W O^T`` for weights W (n, K, d) in the original coordinates (a new float64 array);
    U (n, M, d) or (1, M, d) (shared) from :func:`teacher_frame`."""
    X = np.array(W, dtype=np.float64, order="C", copy=True)
    _apply_batch(X, np.ascontiguousarray(U), True)
    return X


def from_frame(W, U):
    """``W O``: weights (n, K, d) in the teacher's frame back to the original coordinates."""
    X = np.array(W, dtype=np.float64, order="C", copy=True)
    _apply_batch(X, np.ascontiguousarray(U), False)
    return X
