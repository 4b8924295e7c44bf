"""fastquad: learning dynamics of two-layer networks (quadratic, linear, ReLU, erf), fast and exact.

Public API (re-exported here; each lives in a small module of its own):

- closed forms: :func:`order_parameters`, :func:`generalization_error`,
  :func:`population_gradients`, :func:`ode_rhs`
- methods, all returning a :class:`Result` on the time axis ``t = step / d``:
  :func:`simulate_sgd`, :func:`simulate_gd`, :func:`integrate_flow`, :func:`integrate_ode`
- networks: :func:`make_teacher`, :func:`make_student`; grids: :func:`log_times`
- activations: :data:`ACTIVATIONS`, :func:`activation_degree`, :func:`is_even`
- files: :func:`save`, :func:`read`, :func:`load` (xarray)
"""

__version__ = "0.2.0"

from .activations import ACTIVATIONS, activation_degree, is_even
from .closed_form import generalization_error, order_parameters, population_gradients
from .model import make_student, make_teacher
from .ode import integrate_ode, ode_rhs
from .result import STATUS_DIVERGED, STATUS_DONE, STATUS_FAILED, STATUS_PENDING, Result
from .simulate import integrate_flow, simulate_gd, simulate_sgd
from .store import load, read, save
from .times import log_times

__all__ = [
    "ACTIVATIONS",
    "activation_degree",
    "is_even",
    "order_parameters",
    "generalization_error",
    "population_gradients",
    "ode_rhs",
    "simulate_sgd",
    "simulate_gd",
    "integrate_flow",
    "integrate_ode",
    "make_teacher",
    "make_student",
    "log_times",
    "Result",
    "save",
    "read",
    "load",
    "STATUS_DONE",
    "STATUS_DIVERGED",
    "STATUS_FAILED",
    "STATUS_PENDING",
]
