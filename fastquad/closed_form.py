"""Exact Gaussian closed forms: order parameters, generalisation error, population gradients.

No Monte Carlo is ever needed to know the exact test error of a network: eps_g costs
O((K + M)^2 d) from the weights. These functions validate their inputs and call the same
@njit functions the kernels use (:mod:`fastquad.kernels.closed_form`).
"""

import numpy as np

from . import _validate
from .activations import activation_codes, activation_pair
from .errors import InputError
from .kernels import closed_form as _cf


def _weights(W, W_teacher):
    W = _validate.finite_array("W", W, ndim=2)
    Wt = _validate.finite_array("W_teacher", W_teacher, ndim=2)
    if Wt.shape[1] != W.shape[1]:
        raise InputError(f"W_teacher must have d={W.shape[1]} columns like W, got shape {Wt.shape}")
    if W.shape[1] < 1 or W.shape[0] < 1 or Wt.shape[0] < 1:
        raise InputError("W and W_teacher must have at least one row and one column")
    return W, Wt


def order_parameters(W, W_teacher):
    """Overlaps of the student and teacher first layers.

    Parameters
    ----------
    W : array, shape (K, d)
        Student first layer (rows w_j).
    W_teacher : array, shape (M, d)

    Returns
    -------
    Q : ndarray, shape (K, K)   -- W W^T / d
    R : ndarray, shape (K, M)   -- W W*^T / d
    T : ndarray, shape (M, M)   -- W* W*^T / d

    Examples
    --------
    >>> import fastquad as fq
    >>> W = [[1.0, 1.0, 0.0, 0.0]]  # K = 1 student unit, d = 4
    >>> W_teacher = [[2.0, 0.0, 0.0, 0.0]]
    >>> Q, R, T = fq.order_parameters(W, W_teacher)
    >>> float(Q[0, 0]), float(R[0, 0]), float(T[0, 0])
    (0.5, 0.5, 1.0)
    """
    W, Wt = _weights(W, W_teacher)
    K, M = W.shape[0], Wt.shape[0]
    Q, R, T = np.empty((K, K)), np.empty((K, M)), np.empty((M, M))
    _cf.gram_into(W, W, Q)
    _cf.gram_into(W, Wt, R)
    _cf.gram_into(Wt, Wt, T)
    return Q, R, T


def _order_state(Q, R, T, v, v_teacher):
    v = _validate.finite_array("v", v, ndim=1)
    vt = _validate.finite_array("v_teacher", v_teacher, ndim=1)
    K, M = v.shape[0], vt.shape[0]
    Q = _validate.finite_array("Q", Q, shape=(K, K))
    R = _validate.finite_array("R", R, shape=(K, M))
    T = _validate.finite_array("T", T, shape=(M, M))
    return Q, R, T, v, vt


def generalization_error(Q, R, T, v, v_teacher, *, activation="quadratic", teacher_activation=None):
    """Exact generalisation error ``eps_g = E[(f - f*)^2] / 2``.

    For quadratic networks ``eps_g = ((tr D)^2 + 2 tr D^2) / 2``; for the other activations
    ``eps_g = 1/2 sum_ab c_a c_b E[g(h_a) g(h_b)]`` over the K + M units with ``c = (v, -v*)``,
    each term in closed form (linear: covariances; erf: the arcsine formula; ReLU: the
    arc-cosine kernel). Label noise is excluded (the expected training loss is
    ``eps_g + sigma^2 / 2``).

    Parameters
    ----------
    Q : array, shape (K, K)
    R : array, shape (K, M)
    T : array, shape (M, M)
    v : array, shape (K,)
    v_teacher : array, shape (M,)
    activation : {"quadratic", "linear", "relu", "erf"}
        The student's activation.
    teacher_activation : str or None
        The teacher's; None means the student's.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> import fastquad as fq
    >>> I = np.eye(1)
    >>> round(fq.generalization_error(I, I, I, [1.0], [1.0]), 6)  # the student is the teacher
    0.0
    >>> round(fq.generalization_error(I, 0 * I, I, [0.0], [1.0]), 6)  # w = 0: 3/2 (v* T)^2
    1.5
    """
    s, t = activation_codes(activation_pair(activation, teacher_activation))
    Q, R, T, v, vt = _order_state(Q, R, T, v, v_teacher)
    return float(_cf.eps_g_act(Q, R, T, v, vt, s, t))


def population_gradients(
    W, v, W_teacher, v_teacher, *, activation="quadratic", teacher_activation=None
):
    """Gradients of eps_g with respect to the student weights (the population gradient).

    Quadratic networks: ``dL/dw_j = (2/d) v_j G w_j`` and ``dL/dv_j = w_j^T G w_j / d`` with
    ``G = tr(D) I + 2 D``, computed without ever forming a d x d matrix. Other activations:
    ``dL/dw_j = (v_j / d) sum_b coef_b w_b`` over the student and teacher rows, with the
    coefficients from Stein's lemma in closed form (docs/theory.md, 'Other activations').

    Parameters
    ----------
    W : array, shape (K, d)
    v : array, shape (K,)
    W_teacher : array, shape (M, d)
    v_teacher : array, shape (M,)
    activation, teacher_activation : str
        As in :func:`generalization_error`.

    Returns
    -------
    grad_W : ndarray, shape (K, d)
    grad_v : ndarray, shape (K,)

    Examples
    --------
    With d = 4, ``D = (w w^T - w* w*^T) / 4``, and ``G = [[-2, 0.5], [0.5, 0]]`` on the first two
    coordinates (where w lives):

    >>> import numpy as np
    >>> import fastquad as fq
    >>> grad_W, grad_v = fq.population_gradients([[1.0, 1.0, 0.0, 0.0]], [1.0],
    ...                                          [[2.0, 0.0, 0.0, 0.0]], [1.0])
    >>> print(np.round(grad_W, 6), np.round(grad_v, 6))
    [[-0.75  0.25  0.    0.  ]] [-0.25]

    The gradient vanishes at the teacher:

    >>> grad_W, grad_v = fq.population_gradients(np.eye(2), [1.0, 0.5], np.eye(2), [1.0, 0.5])
    >>> float(np.abs(grad_W).max() + np.abs(grad_v).max()) < 1e-12
    True
    """
    s, t = activation_codes(activation_pair(activation, teacher_activation))
    W, Wt = _weights(W, W_teacher)
    v = _validate.finite_array("v", v, shape=(W.shape[0],))
    vt = _validate.finite_array("v_teacher", v_teacher, shape=(Wt.shape[0],))
    Q, R, T = order_parameters(W, Wt)
    gW = np.empty_like(W)
    gv = np.empty_like(v)
    _cf.population_gradients_act_into(W, v, Wt, vt, Q, R, T, s, t, gW, gv)
    return gW, gv
