"""Kernel calls: the runs of a batch shared among threads, Ctrl-C, a notice while compiling.

Each batched kernel takes ``first, step`` before its arrays and advances the runs ``first,
first + step, ...``, writing only their slices. :func:`call_kernel` starts one such call per
thread. The kernels release the GIL, so the threads run in parallel; the threads are plain
Python threads rather than a Numba ``parallel=True`` loop, whose compilation costs seconds per
kernel on every cold cache. A run's numbers do not depend on the thread that runs it.
"""

import sys
import threading
import time

import numba

from . import _validate
from .errors import InputError


def thread_count(num_threads=None, name="num_threads"):
    """The threads of a kernel call: ``num_threads`` checked (1 to ``NUMBA_NUM_THREADS``, the
    error naming ``name``), or by default ``NUMBA_NUM_THREADS`` (all cores unless the
    environment says otherwise, as on a Dask worker)."""
    limit = numba.config.NUMBA_NUM_THREADS
    if num_threads is None:
        return limit
    try:
        return _validate.integer(name, num_threads, low=1, high=limit)
    except InputError as exc:
        raise InputError(f"{exc} (the cores Numba may use, NUMBA_NUM_THREADS)") from None


#: A first call still compiling after this many seconds says so on stderr (once per kernel).
COMPILE_NOTICE_SECONDS = 3.0


def _pending_signature(kernel, args):
    """The argument types of this call if the kernel has no machine code for them yet (it
    will compile them, or load them from Numba's cache), else None."""
    try:
        sig = tuple(kernel.typeof_pyval(a) for a in args)
        return None if sig in kernel.overloads else sig
    except Exception:  # not a Numba dispatcher: nothing to say
        return None


def _compile_notice(kernel):
    name = getattr(kernel, "__name__", "kernel")
    print(
        f"fastquad: compiling {name} for this machine (once: Numba caches it, see "
        "NUMBA_CACHE_DIR; later runs start at once)",
        file=sys.stderr,
        flush=True,
    )


def call_kernel(kernel, *args, num_threads=None, progress=None):
    """``kernel(first, step, *args)`` for ``first`` in ``range(step)``, one call per thread,
    ``step = thread_count(num_threads)``; interruptible by Ctrl-C.

    A Numba kernel holds its thread until it returns, so a Ctrl-C in the thread that runs it
    would wait for the whole run. Called from the main thread, every part runs in a helper
    thread while the main thread waits and stays free to take Ctrl-C: ``KeyboardInterrupt``
    is raised at once, and the abandoned call's outputs are never returned (in an interactive
    session the kernel finishes in the background; a command-line run exits). From any other
    thread (a Dask worker's task) with one thread, the kernel is called directly.

    A call that is still compiling its kernel after ``COMPILE_NOTICE_SECONDS`` says so in one
    line on stderr, so that a first run on a fresh machine is not silent. ``progress`` (a
    :class:`fastquad.progress.RecordProgress`, optional) is updated while the main thread
    waits.
    """
    step = thread_count(num_threads)
    main = threading.current_thread() is threading.main_thread()
    if step == 1 and not main:
        return kernel(0, 1, *args)
    errors = []

    def part(first):
        try:
            kernel(first, step, *args)
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)

    pending = _pending_signature(kernel, (0, step) + args)
    workers = [
        threading.Thread(target=part, args=(i,), name=f"fastquad-kernel-{i}", daemon=True)
        for i in range(step)
    ]
    start = time.monotonic()
    workers[0].start()  # the first compiles (if it must); the others then find the code
    for w in workers[1:]:
        w.start()
    notice_due = pending is not None and main
    try:
        for w in workers:
            while w.is_alive():
                w.join(0.05)
                if pending is not None and pending not in kernel.overloads:  # compiling
                    if notice_due and time.monotonic() - start > COMPILE_NOTICE_SECONDS:
                        _compile_notice(kernel)
                        notice_due = False
                elif progress and main:
                    progress.update()
    finally:
        if progress and main:
            progress.close()
    if errors:
        raise errors[0]
