"""Slow NumPy references for the exact dimension-free sampler (fastquad.kernels.gram).

Written from the formulas of docs/theory.md ('The exact dimension-free sampler') with dense
matrices and library factorisations (QR, Cholesky) instead of Givens rotations, so that they
share no code path with the kernel.
Rows are ordered teacher first: A = [W*; W] / sqrt(d), r = M + K. The steps take the
student's and the teacher's activations by name (None: the student's).
"""

import numpy as np

from fastquad.activations import activation_derivative, activation_function


def stacked(W, Wt):
    """A = [Wt; W] / sqrt(d), shape (M + K, d)."""
    return np.vstack([Wt, W]) / np.sqrt(W.shape[1])


def factor_and_basis(W, Wt):
    """(F, V): lower-triangular F (r, r) with non-negative diagonal and V (d, r) orthonormal,
    such that A = F V^T, i.e. A^T = V F^T (a QR decomposition of A^T)."""
    V, R0 = np.linalg.qr(stacked(W, Wt).T)
    s = np.where(np.diag(R0) < 0, -1.0, 1.0)
    return (R0 * s[:, None]).T, V * s[None, :]


def split_inputs(X, V):
    """Coordinates z (B, r) of inputs X (B, d) in the span of V and a factor L (B, n_L) of the
    Gram matrix of their orthogonal parts, n_L = min(B, d - r): P^T P = L L^T.

    L comes from a QR of the orthogonal parts written in an orthonormal basis of the
    complement, so it also exists when the Gram matrix is singular (d - r < B).
    """
    d, r = V.shape
    z = X @ V
    P = X - z @ V.T  # (B, d)
    full, _ = np.linalg.qr(np.hstack([V, np.eye(d)]))  # first r columns span V's range
    G = P @ full[:, r:d]  # (B, d - r)
    if d == r:
        return z, np.zeros((X.shape[0], 0))
    _, Rg = np.linalg.qr(G.T)  # G^T = q Rg, G G^T = Rg^T Rg
    L = Rg.T[:, : min(X.shape[0], d - r)]
    return z, L


def step_gram(
    F, v, vt, K, d, lr, sigma, train_v, z, xi, L, activation="quadratic", teacher_activation=None
):
    """One sampler step from explicit z (B, r), xi (B,), L (B, n_L).

    Returns (Gram', v', e): Gram' = (F - a Z^T)(F - a Z^T)^T + (a L)(a L)^T with the columns a_b
    = lr / (d B) (0, e_b v_j g'(h_bj)), the updated v and the per-sample errors.
    """
    g = activation
    gt = activation if teacher_activation is None else teacher_activation
    r = F.shape[0]
    M = r - K
    B = z.shape[0]
    U = z @ F.T  # (B, r): row b = (h*_b, h_b)
    hs, h = U[:, :M], U[:, M:]
    e = activation_function(g, h) @ v - (activation_function(gt, hs) @ vt + sigma * xi)
    a = np.zeros((r, B))
    a[M:, :] = (lr / (d * B)) * (e[None, :] * v[:, None] * activation_derivative(g, h.T))
    G = F - a @ z
    C = a @ L
    gram = G @ G.T + C @ C.T
    v_new = v - lr / (d * B) * activation_function(g, h).T @ e if train_v else v.copy()
    return gram, v_new, e


def step_factor(
    F, v, vt, K, d, lr, sigma, train_v, z, xi, L, activation="quadratic", teacher_activation=None
):
    """As :func:`step_gram`, with the unique lower-triangular factor (positive diagonal) of the
    new Gram matrix: (F', v')."""
    gram, v_new, _ = step_gram(
        F, v, vt, K, d, lr, sigma, train_v, z, xi, L, activation, teacher_activation
    )
    return np.linalg.cholesky(gram), v_new


def order_parameters(F, K):
    """(Q, R, T) from F F^T with teacher rows first."""
    G = F @ F.T
    M = F.shape[0] - K
    return G[M:, M:], G[M:, :M], G[:M, :M]


def bartlett(rng, B, n):
    """A Bartlett factor of Wishart(n, I_B) with NumPy's generators: (B, min(B, n))."""
    nL = min(B, n)
    L = np.zeros((B, nL))
    for j in range(nL):
        L[j, j] = np.sqrt(rng.chisquare(n - j))
        L[j + 1 :, j] = rng.standard_normal(B - 1 - j)
    return L
