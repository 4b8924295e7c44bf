"""A progress bar for one long kernel call, read from the records the kernel has written.

A kernel fills its ``eps_g`` records in time order, run by run. Its output array starts out
holding ``UNWRITTEN`` (no record can: eps_g is >= 0, or NaN after a divergence), so the
thread that waits for the kernel (:func:`fastquad.threads.call_kernel`) can tell how far each
run has come without the kernel counting anything: the bar costs the kernels nothing and
cannot change a number they compute.
"""

import sys
import time

import numpy as np

#: The value of a record not yet written.
UNWRITTEN = -1.0
#: A call shows its bar only once it has run this long (short calls stay quiet).
DELAY_SECONDS = 5.0
#: Least time between two reads of the records.
POLL_SECONDS = 0.25


def records(shape):
    """An ``eps_g`` output array, every record marked unwritten."""
    return np.full(shape, UNWRITTEN)


class RecordProgress:
    """Progress of the runs of one call: the mean over runs of the time last recorded.

    Parameters
    ----------
    eps : array, shape (n_runs, n_times)
        The kernel's ``eps_g`` output, made by :func:`records`.
    times : array, shape (n_times,)
        The recording times.
    label : str
        Shown before the bar (the method).
    """

    def __init__(self, eps, times, label):
        self.eps, self.times, self.label = eps, np.asarray(times, dtype=float), label
        self.bar = None
        self.last = 0.0

    def _done(self):
        written = np.count_nonzero(self.eps != UNWRITTEN, axis=1)
        reached = np.where(written > 0, self.times[np.maximum(written - 1, 0)], 0.0)
        return float(reached.mean()) if reached.size else 0.0

    def _bar(self):
        if self.bar is None:
            from tqdm import tqdm

            n = self.eps.shape[0]
            self.bar = tqdm(
                total=float(self.times[-1]),
                desc=f"{self.label} ({n} run{'s' if n != 1 else ''})",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| t = {n:.4g}/{total:.4g} "
                "[{elapsed}<{remaining}]",
                delay=DELAY_SECONDS,
                file=sys.stderr,
            )
        return self.bar

    def update(self):
        """Read the records and move the bar (at most every ``POLL_SECONDS``)."""
        now = time.monotonic()
        if now - self.last >= POLL_SECONDS:
            self.last = now
            bar = self._bar()
            bar.update(self._done() - bar.n)

    def close(self):
        """The final state; nothing is shown for a call shorter than ``DELAY_SECONDS``."""
        bar = self._bar()
        bar.update(self._done() - bar.n)
        bar.close()


__all__ = ["UNWRITTEN", "records", "RecordProgress"]
