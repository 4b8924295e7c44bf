"""Sweeps over parameter grids: TOML spec -> runs -> chunks -> Dask -> one crash-safe HDF5 file.

The sweep layer knows nothing of physics: it expands a grid into runs of
:mod:`fastquad.config`, groups them into batched kernel calls and stores what comes back.
"""

from .plan import plan_chunks
from .run import embedded_cluster, run_sweep
from .spec import Sweep, load_sweep, parse_sweep
from .store import SweepStore, info

__all__ = [
    "Sweep",
    "load_sweep",
    "parse_sweep",
    "plan_chunks",
    "run_sweep",
    "embedded_cluster",
    "SweepStore",
    "info",
]
