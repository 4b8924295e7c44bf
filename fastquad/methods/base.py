"""What a method is: the one place that knows how to run, cost, check and warm up a method.

A :class:`Method` is registered once (:func:`fastquad.methods.register`) and everything that
dispatches on ``method`` -- configurations and their checks, ``run_many``, the time grid, the
budget estimates, sweep planning and the workers' warm-up -- asks the registry instead of
testing names. Adding a method means one module here plus its kernel.
"""

from dataclasses import dataclass, field

from .options import Options

# rough single-core costs measured on the reference machine (see fastquad.budget)
SEC_PER_NORMAL = 4e-9
SEC_PER_FMA = 1.5e-10
BYTES = 8


@dataclass(frozen=True)
class Method:
    """A way of producing learning curves from a configuration.

    Attributes
    ----------
    name : str
        The ``method`` value that selects it (configs, sweeps, ``--method``).
    summary : str
        One phrase for help texts.
    options : type
        Its :class:`fastquad.methods.options.Options` subclass: the options it owns, each
        with its default, its check and its help (the only validator of them).
    run : callable
        ``run(c, W0, v0, Wt, vt, lr, sigma, seeds, ids, common) -> Result`` for runs that share
        the kernel shape of configuration ``c`` (its options are ``c.options``): initial
        weights (n, K, d), (n, K), teachers
        (n, M, d), (n, M), per-run lr, label noise, seeds and replica ids, and ``common``
        (``times``, ``train_second_layer``, ``activation``, ``teacher_activation``,
        ``max_error``, ``num_threads``, ``progress``).
    steps : callable
        ``steps(c) -> (number of steps of one run, the parameter that sets it)``.
    seconds_per_run : callable
        ``seconds_per_run(c)``: a rough estimate of one run on one core.
    memory_terms : callable
        ``memory_terms(c, n_runs, threads) -> list of (bytes, parameters, formula)``: what the
        method allocates beyond the recorded curves.
    check : callable
        ``check(c, problems, prefix)``: cross-checks of a whole configuration that only this
        method needs (each problem added to ``problems``, naming its key).
    discrete : bool
        Whether a run advances in whole steps of 1/d (online SGD, GD): it can record only at
        whole steps, so a shared time grid must be made of them.
    records_train_error : bool
        Whether its results carry the training loss on a fixed dataset.
    warm_up : dict
        Parameters of the smallest configuration that compiles its kernels.
    kernel_options : callable
        ``kernel_options(c) -> dict``: the options of configuration ``c`` that select which
        compiled kernel its runs call (beyond the method), as a warm-up run must set them
        (:mod:`fastquad.warmup`).
    """

    name: str
    summary: str
    run: object
    steps: object
    seconds_per_run: object
    memory_terms: object = field(default=lambda c, n_runs, threads: [])
    check: object = field(default=lambda c, problems, prefix: None)
    discrete: bool = False
    records_train_error: bool = False
    warm_up: dict = field(default_factory=dict)
    options: type = Options
    kernel_options: object = field(default=lambda c: {})
