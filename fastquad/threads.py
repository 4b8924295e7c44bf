"""Numba thread count, set and restored around a kernel call."""

from contextlib import contextmanager

import numba

from . import _validate as V


@contextmanager
def numba_threads(num_threads=None):
    """Run the body with ``num_threads`` Numba threads (None: leave as is), then restore.

    Results never depend on the thread count (each run owns its slice and its stream); only
    the speed does.
    """
    if num_threads is None:
        yield
        return
    n = V.integer("num_threads", num_threads, low=1, high=numba.config.NUMBA_NUM_THREADS)
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(old)
