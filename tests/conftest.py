import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

# tests import the slow references as `naive`
sys.path.insert(0, os.path.dirname(__file__))

ROOT = Path(__file__).resolve().parent.parent


def runner_module(name):
    """The script ``runners/<name>.py`` imported as a module (the runners are no package)."""
    spec = importlib.util.spec_from_file_location(
        f"fastquad_runner_{name}", ROOT / "runners" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def random_networks(rng, K=3, M=2, d=20, runs=None):
    """Random student and teacher with O(1) order parameters (signs of v mixed)."""
    shape = (K, d) if runs is None else (runs, K, d)
    W = rng.standard_normal(shape)
    v = rng.standard_normal(shape[:-1])
    Wt = rng.standard_normal((M, d))
    vt = rng.uniform(0.5, 1.5, M)
    return W, v, Wt, vt
