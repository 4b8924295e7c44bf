"""The one result type every method returns, and its conversion to xarray.

Every method (online SGD, finite-data GD, parameter flow, order-parameter ODE) records on the
same time axis ``t = step / d``, with a leading run axis, so everything downstream (stores,
figures, analysis) is written once.
"""

from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np

from . import schema
from .activations import activation_degree, check_activation
from .errors import InputError
from .kernels.status import STATUS_DIVERGED, STATUS_DONE, STATUS_FAILED

#: Per-run status codes (stored as int8; ``flag_values``/``flag_meanings`` in files): what the
#: kernels record, and ``pending`` for a run of a sweep not yet stored.
STATUS_PENDING = -1
STATUS_NAMES = {
    STATUS_PENDING: "pending",
    STATUS_DONE: "done",
    STATUS_DIVERGED: "diverged",
    STATUS_FAILED: "failed",
}


def split_params(params, n_runs):
    """Split a dict of parameters into per-run coordinates (1-D arrays of length ``n_runs``)
    and scalar attributes (numbers, strings, booleans); anything else is not kept.

    Returns
    -------
    coords : dict of name -> ndarray (n_runs,)
    attrs : dict of name -> scalar
    """
    coords, attrs = {}, {}
    for k, val in params.items():
        if np.ndim(val) == 1 and np.shape(val)[0] == n_runs:
            coords[k] = np.asarray(val)
        elif np.ndim(val) == 0 and isinstance(val, (int, float, str, bool, np.number, np.bool_)):
            attrs[k] = val.item() if isinstance(val, np.generic) else val
    return coords, attrs


def conserved_degree(attrs, what):
    """The degree a of ``C_j = Q_jj - a v_j^2`` for runs with these attributes (the student's
    activation, quadratic if not recorded); InputError naming ``what`` for erf."""
    name = check_activation(attrs.get("activation", "quadratic"), "activation")
    a = activation_degree(name)
    if a is None:
        raise InputError(
            f"{what}: erf has no conserved quantity (erf is not homogeneous, so no rescaling "
            "w_j -> c w_j, v_j -> v_j / c^a leaves the network unchanged); Q_jj - a v_j^2 "
            "is conserved only for quadratic (a = 2), linear and relu (a = 1) students"
        )
    return a


@dataclass(frozen=True)
class Result:
    """Learning curves and order parameters of a batch of runs.

    Attributes
    ----------
    method : str
        ``"sgd"``, ``"gd"``, ``"flow"`` or ``"ode"``.
    t : ndarray, shape (n_times,)
        Recording times, ``t = step / d``.
    eps_g : ndarray, shape (n_runs, n_times)
        Exact generalisation error (label noise excluded); NaN after a run diverged.
    Q : ndarray, shape (n_runs, n_times, K, K)
    R : ndarray, shape (n_runs, n_times, K, M)
    v : ndarray, shape (n_runs, n_times, K)
        Order parameters ``Q = W W^T / d``, ``R = W W*^T / d`` and the second layer. None when
        read from a sweep's file that stored the learning curves only.
    T : ndarray, shape (n_runs, M, M)
        Teacher overlaps ``W* W*^T / d`` (constant in time).
    v_teacher : ndarray, shape (n_runs, M)
    status : ndarray of int8, shape (n_runs,)
        ``STATUS_DONE`` (0) or ``STATUS_DIVERGED`` (1).
    t_stop : ndarray, shape (n_runs,)
        Time at which a diverged run was stopped; NaN for runs that finished.
    train_error : ndarray, shape (n_runs, n_times), optional
        Mean training loss on the fixed dataset (method ``"gd"`` only).
    W, v_final : ndarray, optional
        Final weights, shape (n_runs, K, d) and (n_runs, K) (not for ``"ode"``).
    coords : dict of name -> ndarray (n_runs,)
        Per-run parameters describing how each run was made (lr, label_noise, seed, ...).
    attrs : dict of name -> scalar
        Parameters shared by all runs (d, K, M, batch_size, ...).

    A Result is immutable: :meth:`replace` makes a changed copy. Its variables, their
    dimensions and their file names are those of :mod:`fastquad.schema`.
    """

    method: str
    t: np.ndarray
    eps_g: np.ndarray
    Q: np.ndarray | None
    R: np.ndarray | None
    v: np.ndarray | None
    T: np.ndarray
    v_teacher: np.ndarray
    status: np.ndarray
    t_stop: np.ndarray
    train_error: np.ndarray | None = None
    W: np.ndarray | None = None
    v_final: np.ndarray | None = None
    coords: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)

    @classmethod
    def from_params(cls, params, **fields):
        """A Result whose parameters are given as one dict (split by :func:`split_params`)."""
        coords, attrs = split_params(params, np.shape(fields["eps_g"])[0])
        return cls(coords=coords, attrs=attrs, **fields)

    def replace(self, *, params=None, **changes):
        """A copy with some fields changed; ``params`` adds or replaces parameters."""
        if params is not None:
            coords, attrs = split_params(params, self.n_runs)
            changes["coords"] = {**self.coords, **coords}
            changes["attrs"] = {**self.attrs, **attrs}
        return replace(self, **changes)

    @property
    def params(self):
        """All parameters, per-run and shared, in one read-only mapping."""
        return MappingProxyType({**self.attrs, **self.coords})

    @property
    def n_runs(self):
        return self.eps_g.shape[0]

    @property
    def diverged(self):
        """Boolean mask of runs that were stopped as diverged, shape (n_runs,)."""
        return self.status == STATUS_DIVERGED

    @property
    def conserved(self):
        """``C_j = Q_jj - a v_j^2``, shape (n_runs, n_times, K), a the degree of the student's
        activation (``attrs["activation"]``, quadratic if absent: a = 2; linear and relu:
        a = 1): exactly conserved by the eta^1 flow when the second layer is trained; SGD
        noise changes it at order eta^2 (the ODE's noise term only raises it). An erf network
        has no conserved quantity: InputError."""
        self._need_order_parameters("conserved")
        a = conserved_degree(self.attrs, "conserved")
        return np.einsum("rtjj->rtj", self.Q) - a * self.v**2

    def _need_order_parameters(self, what):
        if self.Q is None or self.v is None:
            raise InputError(
                f"{what}: these runs have no order parameters over time (a sweep "
                "stores them with the setting order_parameters = true)"
            )

    @property
    def K(self):
        """Student width (the widest, for a sweep over K)."""
        if self.v is not None:
            return self.v.shape[-1]
        return int(np.max(self.params["K"])) if "K" in self.params else self.W.shape[1]

    def mean_eps_g(self):
        """Mean learning curve over the runs that did not diverge.

        Returns
        -------
        mean : ndarray, shape (n_times,)
        n_left_out : int
            How many runs were left out because they diverged (heavy-tailed per-sample
            gradients make rare divergences of online SGD normal, even at small lr).
        """
        keep = ~self.diverged
        n_out = int(np.count_nonzero(~keep))
        if not keep.any():
            return np.full(self.t.shape, np.nan), n_out
        return self.eps_g[keep].mean(axis=0), n_out

    def summary(self):
        """A few lines that say what happened, for the CLI."""
        keep = ~self.diverged
        lines = [
            f"method={self.method}  runs={self.n_runs}  t_max={self.t[-1]:g}  "
            f"K={self.K}  M={self.v_teacher.shape[-1]}"
        ]
        n_div = int(np.count_nonzero(self.diverged))
        if n_div:
            lines.append(
                f"diverged: {n_div} run(s), first at t={np.nanmin(self.t_stop):.4g} "
                "(left out of the averages below)"
            )
        if keep.any():
            fin = self.eps_g[keep, -1]
            lines.append(
                f"eps_g(t=0) mean={self.eps_g[keep, 0].mean():.6g}   "
                f"eps_g(t_max) mean={fin.mean():.6g}  min={fin.min():.6g}  "
                f"max={fin.max():.6g}  over {int(keep.sum())} run(s)"
            )
        return "\n".join(lines)

    def to_xarray(self):
        """The result as a labelled :class:`xarray.Dataset`: the variables and dimensions of
        :mod:`fastquad.schema`, per-run parameters as coordinates along ``run``, shared ones as
        attributes."""
        import xarray as xr

        K = self.K
        M = self.v_teacher.shape[-1]
        data = {}
        for var in schema.variables():
            val = None if var.field is None else getattr(self, var.field)
            if val is not None:
                data[var.name] = (var.dims, val, {"long_name": var.doc})
        sizes = {"run": self.n_runs, "student": K, "student_b": K, "teacher": M, "teacher_b": M}
        if self.W is not None:
            sizes["input"] = self.W.shape[-1]
        coords = {name: np.arange(n) for name, n in sizes.items()}
        coords["time"] = self.t
        coords.update({k: ("run", val) for k, val in self.coords.items()})
        attrs = {**self.attrs, "method": self.method}
        return xr.Dataset(data, coords=coords, attrs=attrs)
