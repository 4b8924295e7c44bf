"""The method registry: ``sgd``, ``gd``, ``flow`` and ``ode``, each owned by one module.

>>> from fastquad import methods
>>> methods.names()
('sgd', 'gd', 'flow', 'ode')
>>> methods.get("ode").discrete
False
"""

from ..errors import InputError
from . import flow, gd, ode, sgd
from .base import Method

_REGISTRY = {}


def register(method):
    """Add a :class:`Method` to the registry (its name must be new)."""
    if method.name in _REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def get(name):
    """The registered method called ``name``; :class:`InputError` naming the choices if none."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise InputError(f"method must be one of {', '.join(_REGISTRY)}; got {name!r}") from None


def names():
    """Names of the registered methods, in registration order."""
    return tuple(_REGISTRY)


for _module in (sgd, gd, flow, ode):
    register(_module.METHOD)

__all__ = ["Method", "register", "get", "names"]
