"""Gradient descent on a fixed dataset of ``n_samples`` samples (full batch or mini-batches)."""

from dataclasses import dataclass

from .. import _validate
from ..errors import InputError
from .base import BYTES, SEC_PER_FMA, Method
from .options import Options, Rule
from .sgd import BATCH_SIZE, check_steps, steps, weights_memory


@dataclass(frozen=True)
class GDOptions(Options):
    """Options of gradient descent on a fixed dataset (checked when made)."""

    n_samples: int = Rule(
        0,
        lambda n, x: _validate.integer(n, x, low=0, high=_validate.MAX_COUNT),
        "dataset size for method gd (required there, >= 1)",
    ).field()
    batch_size: int = BATCH_SIZE.field()


def _run(c, W0, v0, Wt, vt, lr, sigma, seeds, ids, common):
    o = c.options
    from ..simulate import simulate_gd

    return simulate_gd(
        W0,
        v0,
        Wt,
        vt,
        lr,
        c.t_max,
        n_samples=o.n_samples,
        batch_size=o.batch_size if o.batch_size > 1 else None,
        seeds=seeds,
        run_ids=ids,
        label_noise=sigma,
        **common,
    )


def _seconds(c):
    K, M, d = float(c.K), float(c.M), float(c.d)
    n, _ = steps(c)
    return n * c.batch_size * d * (2 * K + M) * SEC_PER_FMA + c.n_samples * d * 5e-9


def _memory(c, n_runs, threads):
    return [
        weights_memory(c, n_runs),
        (
            min(float(n_runs), threads) * (c.n_samples + c.batch_size) * (float(c.d) + 2.0) * BYTES,
            "n_samples, d",
            "threads x (n_samples + batch_size) x (d + 2) numbers",
        ),
    ]


def check_batch(batch_size, n_samples, name="batch_size"):
    """The mini-batch rule of GD (the Python API and configurations alike): an integer in
    [1, n_samples]."""
    batch = _validate.integer(name, batch_size, low=1)
    if batch > n_samples:
        raise InputError(f"{name} must be <= n_samples={n_samples}, got {batch}")
    return batch


def check_dataset(n_samples, batch_size, p, prefix=""):
    """The dataset rules of GD (the Python API and configurations alike): ``n_samples`` >= 1
    and a mini-batch of at most ``n_samples``."""
    if n_samples < 1:
        p.add(f"{prefix}n_samples must be an integer >= 1 for method gd, got {n_samples}")
    else:
        p.check(check_batch, batch_size, n_samples, f"{prefix}batch_size")


def _check(c, p, prefix):
    check_dataset(c["n_samples"], c["batch_size"], p, prefix)
    check_steps(c, p, prefix)


METHOD = Method(
    name="gd",
    summary="gradient descent on a fixed dataset",
    options=GDOptions,
    run=_run,
    steps=steps,
    seconds_per_run=_seconds,
    memory_terms=_memory,
    check=_check,
    discrete=True,
    records_train_error=True,
    warm_up={"n_samples": 4},
)
