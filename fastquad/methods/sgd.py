"""Online SGD: one fresh sample (or mini-batch) per step, t = step / d."""

from .base import BYTES, SEC_PER_FMA, SEC_PER_NORMAL, Method


def _run(c, W0, v0, Wt, vt, lr, sigma, seeds, ids, common):
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
        batch_size=c.batch_size,
        label_noise=sigma,
        sampler=c.sampler,
        dtype=c.dtype,
        **common,
    )


def steps(c):
    return c.t_max * c.d, "t_max"


def _seconds(c):
    K, M, d = float(c.K), float(c.M), float(c.d)
    n, _ = steps(c)
    if c.sampler == "exact" or (c.sampler == "auto" and d > 4 * (K + M) ** 2):
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
    """A method that advances in steps of 1/d needs at least one, and an exact step count."""
    from ..times import check_steps as exact

    if c["t_max"] * c["d"] < 1:
        p.add(
            f"{prefix}t_max must be >= 1/d = {1 / c['d']:g} (at least one step), got {c['t_max']:g}"
        )
    else:
        p.check(exact, c["t_max"], c["d"], f"{prefix}t_max")


METHOD = Method(
    name="sgd",
    summary="online SGD",
    run=_run,
    steps=steps,
    seconds_per_run=_seconds,
    memory_terms=_memory,
    check=check_steps,
    discrete=True,
)
