"""How many cores' worth of throughput the machine gives right now (shared hosts vary).

On a virtual machine the cores a benchmark gets can be shared with other guests: two vCPUs may
together do anything between one and two cores' work, and that changes from minute to minute.
A multi-core rate means little without it, so the benchmarks print this probe beside their
multi-core numbers: the same fixed CPU-bound loop, timed in one process alone and then in one
process per core at once.

    python benchmarks/machine.py      # the probe on its own
"""

import os
import subprocess
import sys

# A pure-Python integer loop: it needs no library and no memory bandwidth, so it measures the
# cores themselves (a SIMD kernel may share less well between the siblings of a physical core).
_LOOP = """
import time
t = time.perf_counter()
s = 0
for i in range({n}):
    s += i ^ (i >> 3)
print(time.perf_counter() - t)
"""


def _timed(n_procs, n_iter):
    code = _LOOP.format(n=n_iter)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
             for _ in range(n_procs)]
    return [float(p.communicate()[0]) for p in procs]


def parallel_capacity(repeats=3, n_iter=3_000_000):
    """All cores' throughput at once, in units of one core alone, measured now.

    Returns
    -------
    ratios : list of float
        One per repeat (one loop alone, then one per core at once): close to
        ``os.cpu_count()`` on dedicated cores, close to 1 when the cores share one physical
        core's time.
    cores : int
    """
    cores = os.cpu_count() or 1
    ratios = []
    for _ in range(repeats):
        alone = _timed(1, n_iter)[0]
        # the aggregate rate of all processes, expressed as the time of one loop
        together = 1.0 / sum(1.0 / t for t in _timed(cores, n_iter))
        ratios.append(alone / together)
    return ratios, cores


def capacity_line():
    """One line for a benchmark's output."""
    ratios, cores = parallel_capacity()
    r = sorted(ratios)
    return (f"machine check: {cores} cores at once gave {r[len(r) // 2]:.2f}x the throughput of "
            f"one core alone (median; {r[0]:.2f}-{r[-1]:.2f}x over {len(r)} tries of a CPU-bound "
            f"probe; {cores}.00x on dedicated cores)")


if __name__ == "__main__":
    print(capacity_line())
