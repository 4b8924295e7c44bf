"""The activation functions a student or a teacher network may use.

=============  =====================  ================  =======================
name           g(h)                   degree a          parity
=============  =====================  ================  =======================
``quadratic``  h^2 (the default)      2                 even
``linear``     h                      1                 odd
``relu``       max(h, 0)              1                 neither
``erf``        erf(h / sqrt 2)        none              odd
=============  =====================  ================  =======================

A homogeneous activation of degree a (``g(c h) = c^a g(h)`` for ``c > 0``) gives each student
unit the rescaling symmetry ``w -> c w, v -> c^-a v``, hence the conserved quantity
``Q_jj - a v_j^2`` of the gradient flow; erf has none. Only an even activation has the sign
symmetry ``w -> -w``. The student's and the teacher's activations are chosen independently
(``activation`` and ``teacher_activation``; the teacher's defaults to the student's).

Examples
--------
>>> import fastquad as fq
>>> fq.ACTIVATIONS
('quadratic', 'linear', 'relu', 'erf')
>>> fq.activation_degree("relu"), fq.activation_degree("erf")
(1, None)
"""

import math

import numpy as np

from .errors import InputError
from .kernels.activation import ERF, LINEAR, QUADRATIC, RELU

#: Every activation, the default first.
ACTIVATIONS = ("quadratic", "linear", "relu", "erf")
#: ``teacher_activation = "same"`` (or None): the teacher uses the student's activation.
SAME = "same"

_CODES = {"quadratic": QUADRATIC, "linear": LINEAR, "relu": RELU, "erf": ERF}
_DEGREE = {"quadratic": 2, "linear": 1, "relu": 1, "erf": None}
_EVEN = {"quadratic": True, "linear": False, "relu": False, "erf": False}


def check_activation(name, param="activation"):
    """The activation's name, or InputError naming ``param`` and the allowed values."""
    if not isinstance(name, str) or name not in _CODES:
        raise InputError(f"{param} must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return name


def activation_pair(activation="quadratic", teacher_activation=None):
    """Validated ``(student, teacher)`` names; the teacher's defaults to the student's
    (``teacher_activation`` None or ``"same"``)."""
    s = check_activation(activation, "activation")
    if teacher_activation is None or teacher_activation == SAME:
        return s, s
    t = check_activation(teacher_activation, "teacher_activation")
    return s, t


def activation_code(name):
    """The integer a kernel receives for activation ``name``."""
    return _CODES[check_activation(name)]


def activation_codes(pair):
    """The kernels' integer codes of a validated ``(student, teacher)`` pair of names."""
    return _CODES[pair[0]], _CODES[pair[1]]


def activation_degree(name):
    """a such that g(c h) = c^a g(h) for c > 0, or None when g is not homogeneous (erf)."""
    return _DEGREE[check_activation(name)]


def is_even(name):
    """Whether g(-h) = g(h), i.e. whether w -> -w leaves a unit unchanged."""
    return _EVEN[check_activation(name)]


_erf = np.vectorize(math.erf, otypes=[float])


def activation_function(name, h):
    """g(h), elementwise, in plain NumPy (a reference for the kernels)."""
    h = np.asarray(h, dtype=float)
    name = check_activation(name)
    if name == "quadratic":
        return h * h
    if name == "linear":
        return h.copy()
    if name == "relu":
        return np.maximum(h, 0.0)
    return _erf(h / math.sqrt(2.0))


def activation_derivative(name, h):
    """g'(h), elementwise, in plain NumPy (``relu'(0) = 0``)."""
    h = np.asarray(h, dtype=float)
    name = check_activation(name)
    if name == "quadratic":
        return 2.0 * h
    if name == "linear":
        return np.ones_like(h)
    if name == "relu":
        return (h > 0).astype(float)
    return math.sqrt(2.0 / math.pi) * np.exp(-0.5 * h * h)
