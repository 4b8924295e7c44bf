"""Compile ahead what a job will need, and say where the compiled code is kept.

Numba compiles each kernel for the argument types of its first call and keeps the machine code
in its on-disk cache (``NUMBA_CACHE_DIR``, or beside the package's sources), so only the first
run on a machine pays for it. :func:`warm_up` runs, for each kernel a job will call, a tiny
configuration that calls it with the same types (same method, sampler, precision and kind of
step): a sweep's workers, a cluster job and CI call it before the real work. The activations
are runtime arguments of the kernels, so one tiny run compiles the code of every activation.

A cache entry is keyed by the CPU it was compiled for: a node whose CPU differs from the one
that filled the cache compiles its own entry once, beside the others.
"""

import time

from . import methods
from .config import RunConfig, make_config, run

#: Sizes of a warm-up run: any size compiles the same code, the smallest is the quickest.
TINY = dict(d=4, K=1, M=1, t_max=0.5, n_times=3, n_runs=1, teacher_v=1.0, student_v=1.0)
TINY.update(batch_size=1, dt=0.0)


def warm_up_configs(what=None):
    """The tiny configurations whose runs compile every kernel that ``what`` needs.

    Parameters
    ----------
    what : list, optional
        Method names (their default options), configurations (:class:`RunConfig` or dicts
        of parameters), or both; default: every registered method.

    Returns
    -------
    list of RunConfig
        One per distinct kernel, in first-seen order.

    >>> from fastquad.warmup import warm_up_configs
    >>> [c.method for c in warm_up_configs(["sgd", "ode"])]
    ['sgd', 'ode']
    >>> big = {"method": "sgd", "d": 1000, "K": 4, "M": 4, "sampler": "auto", "batch_size": 8}
    >>> [(c.d, c.sampler, c.batch_size) for c in warm_up_configs([big])]
    [(4, 'exact', 2)]
    """
    items = methods.names() if what is None else what
    out = {}
    for item in items:
        if isinstance(item, str):
            m = methods.get(item)
            values = dict(method=item, **TINY, **m.warm_up)
        else:
            cfg = item if isinstance(item, RunConfig) else make_config(item)
            m = methods.get(cfg.method)
            values = dict(cfg.values, **TINY, **m.warm_up)
            values.update(m.kernel_options(cfg))
        cfg = make_config(values)
        out.setdefault(_kernel_key(cfg), cfg)
    return list(out.values())


def _kernel_key(cfg):
    """What selects the compiled code of a run (its method's kernel options)."""
    m = methods.get(cfg.method)
    return (cfg.method, tuple(sorted(m.kernel_options(cfg).items())))


def warm_up(what=None, *, num_threads=None, report=None):
    """Compile (or load from the cache) every kernel ``what`` needs (see
    :func:`warm_up_configs`). ``report(cfg, seconds)`` is called after each."""
    for cfg in warm_up_configs(what):
        start = time.perf_counter()
        run(cfg, num_threads=num_threads)
        if report is not None:
            report(cfg, time.perf_counter() - start)


def cache_location():
    """Where Numba keeps fastquad's compiled kernels on this machine: ``NUMBA_CACHE_DIR`` when
    set, else a folder beside the sources (or Numba's per-user cache when those are read-only).
    """
    import numba

    from .kernels import sgd

    return numba.config.CACHE_DIR or sgd.sgd_batch._cache._cache_path


def describe(cfg):
    """One phrase for the kernel a warm-up configuration compiles."""
    opts = methods.get(cfg.method).kernel_options(cfg)
    return cfg.method + (f" ({', '.join(f'{k}={v}' for k, v in opts.items())})" if opts else "")


__all__ = ["warm_up", "warm_up_configs", "cache_location", "describe", "TINY"]
