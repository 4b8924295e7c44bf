"""Slow, obviously correct NumPy references for every fast kernel of fastquad.

Written straight from the formulas of docs/theory.md, with dense d x d matrices where that is
the clearest way to say it. Never used by the package itself; only the tests compare against
them.

The per-sample functions take the student's and the teacher's activations by name
(``activation``, ``teacher_activation``; None is the student's), evaluated elementwise by
:func:`fastquad.activations.activation_function` and ``activation_derivative``.
"""

import numpy as np

from fastquad.activations import activation_derivative, activation_function


def _names(activation, teacher_activation):
    return activation, activation if teacher_activation is None else teacher_activation


def outputs(W, v, X, activation="quadratic"):
    """f(x_b) = sum_j v_j g(w_j . x_b / sqrt d) for inputs X (B, d) -> (B,)."""
    return activation_function(activation, X @ W.T / np.sqrt(W.shape[1])) @ v


def order_parameters(W, Wt):
    d = W.shape[1]
    return W @ W.T / d, W @ Wt.T / d, Wt @ Wt.T / d


def network_matrix(W, v):
    """A = W^T diag(v) W / d, so that f(x) = x^T A x."""
    return W.T @ np.diag(v) @ W / W.shape[1]


def generalization_error(W, v, Wt, vt):
    """eps_g = E[(x^T D x)^2] / 2 = ((tr D)^2 + 2 tr D^2) / 2, with D = A - A*, from d x d
    matrices."""
    D = network_matrix(W, v) - network_matrix(Wt, vt)
    return 0.5 * (np.trace(D) ** 2 + 2.0 * np.trace(D @ D))


def population_gradients(W, v, Wt, vt):
    """Gradients of eps_g through the dense matrix G = tr(D) I + 2 D."""
    d = W.shape[1]
    D = network_matrix(W, v) - network_matrix(Wt, vt)
    G = np.trace(D) * np.eye(d) + 2.0 * D
    gW = 2.0 / d * v[:, None] * (W @ G)
    gv = np.einsum("jk,kl,jl->j", W, G, W) / d
    return gW, gv


def per_sample_gradients(W, v, Wt, vt, x, noise, activation="quadratic", teacher_activation=None):
    """Per-sample loss gradients for one input x (d,) and label noise sigma*xi = noise:
    e = f - y, dl/dw_j = e v_j g'(h_j) x / sqrt d, dl/dv_j = e g(h_j)."""
    g, gt = _names(activation, teacher_activation)
    d = W.shape[1]
    h = W @ x / np.sqrt(d)
    hs = Wt @ x / np.sqrt(d)
    e = v @ activation_function(g, h) - (vt @ activation_function(gt, hs) + noise)
    gW = (e * v * activation_derivative(g, h))[:, None] * x[None, :] / np.sqrt(d)
    gv = e * activation_function(g, h)
    return gW, gv, e


def sgd(
    W, v, Wt, vt, X, xi, lr, sigma, train_v=True, activation="quadratic", teacher_activation=None
):
    """Mini-batch online SGD on explicit samples X (steps, B, d), xi (steps, B).

    Returns the weights after every step: Ws (steps + 1, K, d), vs (steps + 1, K).
    """
    d = W.shape[1]
    W = W.copy()
    v = v.copy()
    Ws, vs = [W.copy()], [v.copy()]
    for s in range(X.shape[0]):
        gW = np.zeros_like(W)
        gv = np.zeros_like(v)
        for b in range(X.shape[1]):
            a, c, _ = per_sample_gradients(
                W, v, Wt, vt, X[s, b], sigma * xi[s, b], activation, teacher_activation
            )
            gW += a / X.shape[1]
            gv += c / X.shape[1]
        W = W - lr * gW
        if train_v:
            v = v - lr / d * gv
        Ws.append(W.copy())
        vs.append(v.copy())
    return np.array(Ws), np.array(vs)


def train_error(W, v, Wt, vt, X, noise, activation="quadratic", teacher_activation=None):
    """Mean over the dataset X (n, d) of (f - y)^2 / 2, y = f* + noise."""
    g, gt = _names(activation, teacher_activation)
    f = outputs(W, v, X, g)
    y = outputs(Wt, vt, X, gt) + noise
    return 0.5 * np.mean((f - y) ** 2)


def flow_rhs(W, v, Wt, vt, lr, train_v=True):
    """Population gradient flow in time t = step/d: dW/dt = -lr d dL/dW, dv/dt = -lr dL/dv."""
    gW, gv = population_gradients(W, v, Wt, vt)
    d = W.shape[1]
    return -lr * d * gW, (-lr * gv if train_v else np.zeros_like(v))


def rk4(f, y, dt):
    k1 = f(y)
    k2 = f(y + 0.5 * dt * k1)
    k3 = f(y + 0.5 * dt * k2)
    k4 = f(y + dt * k3)
    return y + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


def ode_rhs(Q, R, v, T, vt, lr, sigma=0.0, train_v=True, sgd_noise=True, batch_size=1):
    """The order-parameter ODE (docs/theory.md, 'The ODEs'), term by term with dense matrix
    products."""
    Dv, Dt = np.diag(v), np.diag(vt)
    trD = v @ np.diag(Q) - vt @ np.diag(T)
    trD2 = (
        np.sum(np.outer(v, v) * Q**2)
        - 2 * np.sum(np.outer(v, vt) * R**2)
        + np.sum(np.outer(vt, vt) * T**2)
    )
    P = Q @ Dv @ Q - R @ Dt @ R.T
    S = Q @ Dv @ R - R @ Dt @ T
    U = Q @ Dv @ Q @ Dv @ Q - Q @ Dv @ R @ Dt @ R.T - R @ Dt @ R.T @ Dv @ Q + R @ Dt @ T @ Dt @ R.T
    vv = v[:, None] + v[None, :]
    dQ = -2 * lr * vv * (trD * Q + 2 * P)
    if sgd_noise:
        dQ = dQ + 4 * lr**2 / batch_size * np.outer(v, v) * (
            (trD**2 + 2 * trD2 + sigma**2) * Q + 4 * trD * P + 8 * U
        )
    dR = -2 * lr * v[:, None] * (trD * R + 2 * S)
    dv = -lr * (trD * np.diag(Q) + 2 * np.diag(P)) if train_v else np.zeros_like(v)
    return dQ, dR, dv
