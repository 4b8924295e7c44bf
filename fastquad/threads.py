"""Numba thread count, set and restored around a kernel call."""

import sys
import threading
import time
from contextlib import contextmanager

import numba

from . import _validate


@contextmanager
def numba_threads(num_threads=None):
    """Run the body with ``num_threads`` Numba threads (None: leave as is), then restore.

    Results never depend on the thread count (each run owns its slice and its stream); only
    the speed does.
    """
    if num_threads is None:
        yield
        return
    n = _validate.integer("num_threads", num_threads, low=1, high=numba.config.NUMBA_NUM_THREADS)
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(old)


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
    """Call a compiled kernel with ``num_threads`` Numba threads, interruptible by Ctrl-C.

    A Numba kernel holds the interpreter until it returns, so a Ctrl-C in the thread that runs
    it would wait for the whole run. Called from the main thread, the kernel (compiled with
    ``nogil=True``) runs in a helper thread while the main thread waits and stays free to take
    Ctrl-C: ``KeyboardInterrupt`` is raised at once, and the abandoned call's outputs are never
    returned (in an interactive session the kernel finishes in the background; a command-line
    run exits). From any other thread (a Dask worker's task) the kernel is called directly.

    A call that is still compiling its kernel after ``COMPILE_NOTICE_SECONDS`` says so in one
    line on stderr, so that a first run on a fresh machine is not silent. ``progress`` (a
    :class:`fastquad.progress.RecordProgress`, optional) is updated while the main thread
    waits.
    """
    if threading.current_thread() is not threading.main_thread():
        with numba_threads(num_threads):
            return kernel(*args)
    outcome = {}

    def target():
        try:
            with numba_threads(num_threads):
                outcome["value"] = kernel(*args)
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    pending = _pending_signature(kernel, args)
    worker = threading.Thread(target=target, name="fastquad-kernel", daemon=True)
    start = time.monotonic()
    worker.start()
    notice_due = pending is not None
    try:
        while worker.is_alive():
            worker.join(0.05)
            if pending is not None and pending not in kernel.overloads:  # still compiling
                if notice_due and time.monotonic() - start > COMPILE_NOTICE_SECONDS:
                    _compile_notice(kernel)
                    notice_due = False
            elif progress:
                progress.update()
    finally:
        if progress:
            progress.close()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
