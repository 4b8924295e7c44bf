"""Online SGD: one fresh sample (or mini-batch) per step, t = step / d."""

from dataclasses import dataclass

import numpy as np

from .. import _validate
from ..errors import InputError
from .base import BYTES, SEC_PER_FMA, SEC_PER_NORMAL, Method
from .options import Options, Rule, choice

#: How online SGD draws its samples, and the precisions of the direct kernel.
SAMPLERS = ("direct", "exact", "auto")
DTYPES = ("float64", "float32")


def _dtype(name, value):
    """A precision by name, or as NumPy's float64 / float32 -> its name."""
    if isinstance(value, str) and value in DTYPES:
        return value
    if (isinstance(value, type) and value in (np.float64, np.float32)) or (
        isinstance(value, np.dtype) and value.name in DTYPES
    ):
        return np.dtype(value).name
    raise InputError(f"{name} must be one of {', '.join(DTYPES)}; got {value!r}")


BATCH_SIZE = Rule(
    1,
    lambda n, x: _validate.integer(n, x, low=1, high=_validate.MAX_COUNT),
    "samples per step (sgd, gd: 1 means the full dataset; ode: the batch of its noise term)",
)


@dataclass(frozen=True)
class SGDOptions(Options):
    """Options of online SGD (checked when made; see :mod:`fastquad.methods.options`)."""

    batch_size: int = BATCH_SIZE.field()
    sampler: str = Rule(
        "direct",
        choice(lambda: SAMPLERS),
        "how samples are drawn: direct (d-dimensional weights), exact (dimension-free "
        "Gram-matrix sampler, same law, cost independent of d) or auto",
    ).field()
    dtype: str = Rule(
        "float64",
        _dtype,
        "direct sampler: precision of weights, samples and arithmetic",
    ).field()


def sampler_used(sampler, d, K, M, *, dtype="float64", explicit_samples=False):
    """The sampler a run uses: ``"auto"`` takes the exact dimension-free one where it applies
    (float64, no explicit samples, d >= K + M) and pays (d > 4 (K + M)^2), else the direct one.
    The one rule for running and for estimating the cost."""
    if sampler != "auto":
        return sampler
    r = K + M
    fits = not explicit_samples and str(dtype) == "float64" and d >= r
    return "exact" if fits and d > 4 * r * r else "direct"


def _run(c, W0, v0, Wt, vt, lr, sigma, seeds, ids, common):
    o = c.options
    from ..simulate import simulate_sgd

    return simulate_sgd(
        W0,
        v0,
        Wt,
        vt,
        lr,
        c.t_max,
        seeds=seeds,
        run_ids=ids,
        batch_size=o.batch_size,
        label_noise=sigma,
        sampler=o.sampler,
        dtype=o.dtype,
        **common,
    )


def steps(c):
    return c.t_max * c.d, "t_max"


def _seconds(c):
    K, M, d = float(c.K), float(c.M), float(c.d)
    n, _ = steps(c)
    if sampler_used(c.sampler, c.d, c.K, c.M, dtype=c.dtype) == "exact":
        r = K + M
        return n * c.batch_size * (r * SEC_PER_NORMAL + 4 * r * r * SEC_PER_FMA)
    if c.batch_size == 1:  # fused single-sample steps, the teacher in its frame
        return n * ((d + 1) * SEC_PER_NORMAL + (2 * K * d + M * M) * SEC_PER_FMA)
    return n * c.batch_size * ((d + 1) * SEC_PER_NORMAL + d * (2 * K + M) * SEC_PER_FMA)


def _memory(c, n_runs, threads):
    terms = [weights_memory(c, n_runs)]
    if c.batch_size > 1:
        terms.append(
            (
                2.0 * threads * c.batch_size * (float(c.d) + 1) * BYTES,
                "batch_size, d",
                "2 x threads x batch_size x (d + 1) numbers",
            )
        )
    return terms


def weights_memory(c, n_runs):
    """Initial and final student, teacher, and the copies the inputs' frame needs."""
    return (
        4 * float(n_runs) * (float(c.K) + c.M) * float(c.d) * BYTES,
        "n_runs, d, K, M",
        "4 x n_runs x (K + M) x d numbers",
    )


def check_steps(c, p, prefix):
    """A method that advances in steps of 1/d: the step-count rule of :mod:`fastquad.times`."""
    from ..times import check_steps as rule

    p.check(rule, c["t_max"], c["d"], f"{prefix}t_max")


def _kernel_options(c):
    """The sampler (as ``auto`` resolves it), the precision, and single-sample or mini-batch
    steps: each combination is its own compiled kernel. The activations are not among them:
    their codes are runtime arguments, one compiled kernel serves every activation."""
    return {
        "sampler": sampler_used(c.sampler, c.d, c.K, c.M, dtype=c.dtype),
        "dtype": c.dtype,
        "batch_size": min(c.batch_size, 2),
    }


METHOD = Method(
    name="sgd",
    summary="online SGD",
    options=SGDOptions,
    run=_run,
    steps=steps,
    seconds_per_run=_seconds,
    memory_terms=_memory,
    check=check_steps,
    discrete=True,
    kernel_options=_kernel_options,
)
