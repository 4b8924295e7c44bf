"""A method's options: one frozen dataclass per method, checked when it is made.

Each option is declared once, as a :class:`Rule` (default, checker, help), by the method that
introduces it; a method that shares it (``batch_size``, ``dt``) reuses the same rule. The
options class is the only validator of those options: the Python API builds one from its
keywords, a configuration (TOML file, sweep, CLI flags) from its table, and both report a bad
value in the same words.

>>> from fastquad.methods.sgd import SGDOptions
>>> SGDOptions(batch_size=4)
SGDOptions(batch_size=4, sampler='direct', dtype='float64')
>>> SGDOptions(sampler="fast")
Traceback (most recent call last):
...
fastquad.errors.InputError: sampler must be one of direct, exact, auto; got 'fast'
"""

import dataclasses
from typing import NamedTuple

from .._validate import Problems
from ..errors import InputError


class Rule(NamedTuple):
    """How one parameter is checked and described.

    ``check(name, value)`` returns the cleaned value or raises :class:`InputError` naming
    ``name`` and the allowed range.
    """

    default: object
    check: object
    help: str

    def field(self):
        """A dataclass field with this rule's default, carrying the rule."""
        return dataclasses.field(default=self.default, metadata={"rule": self})


def choice(allowed):
    """The checker of a parameter that takes one of the names ``allowed()``."""

    def check(name, value):
        names = allowed()
        if not isinstance(value, str) or value not in names:
            raise InputError(f"{name} must be one of {', '.join(names)}; got {value!r}")
        return value

    return check


@dataclasses.dataclass(frozen=True)
class Options:
    """Base of the methods' options classes: every field carries its :class:`Rule`, and a new
    instance holds the cleaned values or raises one :class:`InputError` listing every
    problem."""

    def __post_init__(self):
        problems = Problems()
        clean = self.validate(dataclasses.asdict(self), problems)
        problems.raise_if_any()
        for name, value in clean.items():
            object.__setattr__(self, name, value)

    @classmethod
    def rules(cls):
        """``{option name: Rule}`` in declaration order."""
        return {f.name: f.metadata["rule"] for f in dataclasses.fields(cls)}

    @classmethod
    def validate(cls, values, problems, prefix="", names=None):
        """Check the options in ``values`` (the defaults for those missing), adding each
        problem to ``problems``; returns the cleaned values (None for a bad one).
        ``names`` renames options in messages (a keyword of the Python API)."""
        names = names or {}
        return {
            key: problems.check(
                rule.check, prefix + names.get(key, key), values.get(key, rule.default)
            )
            for key, rule in cls.rules().items()
        }

    @classmethod
    def make(cls, problems, *, names=None, **values):
        """The options from keywords, or None with the problems added to ``problems`` (so
        that a public function reports them together with its other checks)."""
        before = len(problems.messages)
        clean = cls.validate(values, problems, names=names)
        return None if len(problems.messages) > before else cls(**clean)


__all__ = ["Rule", "Options", "choice"]
