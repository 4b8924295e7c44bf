"""How many cores' worth of throughput the machine gives right now (shared hosts vary).

On a virtual machine the cores a benchmark gets can be shared with other guests: two vCPUs may
together do anything between one and two cores' work, and that changes from minute to minute.
A multi-core rate means little without it, so the benchmarks print this probe beside their
multi-core numbers: the same fixed CPU-bound loop, timed alone on the fastest core and then in
one process per core at once.

    python benchmarks/machine.py      # the probe on its own
"""

import os
import subprocess
import sys

# A pure-Python integer loop: it needs no library and no memory bandwidth, so it measures the
# cores themselves (a SIMD kernel may share less well between the siblings of a physical core).
_LOOP = """
import os, time
if {cpu} >= 0:
    os.sched_setaffinity(0, {{{cpu}}})
t = time.perf_counter()
s = 0
for i in range({n}):
    s += i ^ (i >> 3)
print(time.perf_counter() - t)
"""


def _timed(cpus, n_iter):
    """Times of the loop run at once in one process per entry of cpus (pinned there; -1: not
    pinned)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _LOOP.format(cpu=c, n=n_iter)], stdout=subprocess.PIPE, text=True
        )
        for c in cpus
    ]
    return [float(p.communicate()[0]) for p in procs]


def _cpus():
    """The cores this process may use (ids to pin to; -1 each where pinning is unavailable)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return [-1] * (os.cpu_count() or 1)


def _fastest_alone(cpus, n_iter):
    """The loop's time alone on the fastest core (each core's share of the host can differ)."""
    return min(_timed([c], n_iter)[0] for c in cpus)


def parallel_capacity(repeats=3, n_iter=3_000_000):
    """All cores' throughput at once, in units of one core alone, measured now.

    Returns
    -------
    ratios : list of float
        One per repeat (one loop pinned to each core at once, against one loop alone on the
        fastest core, timed just before and just after): close to
        ``os.cpu_count()`` on dedicated cores, close to 1 when the cores share one physical
        core's time.
    cores : int
    """
    cpus = _cpus()
    cores = len(cpus)
    ratios = []
    before = _fastest_alone(cpus, n_iter)
    for _ in range(repeats):
        # the aggregate rate of all processes, expressed as the time of one loop
        together = 1.0 / sum(1.0 / t for t in _timed(cpus, n_iter))
        after = _fastest_alone(cpus, n_iter)
        # the lone loop is timed on both sides of the shared one: the load may change between
        ratios.append(0.5 * (before + after) / together)
        before = after
    return ratios, cores


def capacity_line():
    """One line for a benchmark's output."""
    ratios, cores = parallel_capacity()
    r = sorted(ratios)
    return (
        f"machine check: {cores} cores at once gave {r[len(r) // 2]:.2f}x the throughput of "
        f"one core alone (median; {r[0]:.2f}-{r[-1]:.2f}x over {len(r)} tries of a CPU-bound "
        f"probe; {cores}.00x on dedicated cores)"
    )


if __name__ == "__main__":
    print(capacity_line())
