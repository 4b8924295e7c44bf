"""Simulations of the student network: online SGD, finite-data GD, population gradient flow.

Each public function validates and prepares (all checks before any kernel runs), then calls a
private batched kernel of :mod:`fastquad.kernels.sgd` and returns a :class:`~fastquad.Result`
on the common time axis ``t = step / d``.

The network is ``f(x) = sum_j v_j g(h_j)``, ``h_j = w_j . x / sqrt d``, and the teacher
``f*(x) = sum_n v*_n g*(h*_n)``; g and g* are chosen by name (:mod:`fastquad.activations`):

- ``"quadratic"``: ``g(h) = h^2`` (the default)
- ``"linear"``: ``g(h) = h``
- ``"relu"``: ``g(h) = max(h, 0)``, with ``g'(0) = 0``
- ``"erf"``: ``g(h) = erf(h / sqrt 2)``

Every activation goes through the same compiled kernels (its code is a runtime argument).
"""

import numbers

import numpy as np

from . import _validate
from .activations import activation_codes, activation_pair
from .budget import MEMORY_SHARE, machine_memory
from .config import check_option
from .errors import InputError
from .frame import from_frame, teacher_frame, to_frame
from .kernels import sgd as _k
from .methods.flow import FlowOptions, default_dt
from .methods.gd import GDOptions, check_dataset
from .methods.sgd import SGDOptions, sampler_used
from .model import check_networks
from .progress import RecordProgress, records
from .result import Result
from .rng import run_states
from .threads import call_kernel
from .times import check_steps, recording_times, steps_for_times


def _seed_keys(seeds, run_ids, n_other):
    """Per-run stream keys ``(seed, run_id)``.

    An int seed with n runs gives keys (seed, 0..n-1); a list of seeds gives (seed_r, 0), so a
    seed alone reproduces that seed inside a list. ``run_ids`` overrides the ids.
    """
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        seed_arr = None
        s = _validate.integer("seeds", seeds, low=0, high=2**63 - 1)
    else:
        arr = np.asarray(seeds)
        if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
            raise InputError(
                f"seeds must be an integer in [0, 2**63-1] or a 1-D list of them, got {seeds!r}"
            )
        seed_arr = np.array(
            [
                _validate.integer(f"seeds[{i}]", int(x), low=0, high=2**63 - 1)
                for i, x in enumerate(arr)
            ],
            dtype=np.int64,
        )
    ids = None
    if run_ids is not None:
        arr = np.asarray(run_ids)
        if (
            arr.ndim != 1
            or arr.size == 0
            or not np.issubdtype(arr.dtype, np.integer)
            or (arr < 0).any()
        ):
            raise InputError(f"run_ids must be a 1-D list of integers >= 0, got {run_ids!r}")
        ids = arr.astype(np.int64)
    sizes = {len(a) for a in (seed_arr, ids) if a is not None} | {n_other}
    sizes.discard(1)
    if len(sizes) > 1:
        raise InputError(
            f"the numbers of runs implied by seeds, run_ids and the per-run arrays "
            f"disagree: {sorted(sizes)}"
        )
    n = sizes.pop() if sizes else 1
    if seed_arr is None:
        seed_arr = np.full(n, s, dtype=np.int64)
        if ids is None:
            ids = np.arange(n, dtype=np.int64)
    if ids is None:
        ids = np.zeros(n, dtype=np.int64)
    return np.broadcast_to(seed_arr, (n,)).copy(), np.broadcast_to(ids, (n,)).copy()


def _streams(seeds, run_ids):
    states = None
    for s in np.unique(seeds):
        idx = np.flatnonzero(seeds == s)
        st = run_states(int(s), run_ids[idx])
        if states is None:
            states = np.empty((seeds.shape[0], st.shape[1]), dtype=np.uint64)
        states[idx] = st
    return states


def _common(W0, v0, W_teacher, v_teacher, lr, label_noise, n_hint=1):
    p = _validate.Problems()
    nets = p.check(check_networks, W0, v0, W_teacher, v_teacher)
    p.raise_if_any()
    n_net = nets[0].shape[0]
    n_lr = np.size(lr) if np.ndim(lr) else 1
    n_ln = np.size(label_noise) if np.ndim(label_noise) else 1
    sizes = {n_net, n_lr, n_ln, n_hint} - {1}
    if len(sizes) > 1:
        raise InputError(
            f"the run axes disagree: networks {n_net}, lr {n_lr}, "
            f"label_noise {n_ln}, seeds/run_ids {n_hint}"
        )
    n = sizes.pop() if sizes else 1
    lr = p.check(_validate.per_run, "lr", lr, n, low=0.0, low_open=True)
    sigma = p.check(_validate.per_run, "label_noise", label_noise, n, low=0.0)
    p.raise_if_any()
    nets = tuple(
        _validate.broadcast_runs(nm, a, n)
        for nm, a in zip(("W0", "v0", "W_teacher", "v_teacher"), nets)
    )
    return nets, lr, sigma, n


def _time_grid(t_max, times, d):
    t_max = _validate.real("t_max", t_max, low=0.0, low_open=True)
    if d is not None:
        check_steps(t_max, d)
    times = (
        recording_times(t_max, steps_per_unit=d)
        if times is None
        else _validate.times_grid("times", times, t_max)
    )
    return t_max, times


def _outputs(n, n_rec, K, M):
    need = 8 * n * n_rec * (1 + K * K + K * M + K)
    if need > MEMORY_SHARE * machine_memory():
        raise InputError(
            f"times: recording {n} runs at {n_rec} times needs about "
            f"{need / 2**30:.3g} GiB (runs x times x (1 + K^2 + K M + K) numbers), "
            f"more than this machine's memory can hold; record fewer times or runs"
        )
    return (
        records((n, n_rec)),
        np.empty((n, n_rec, K, K)),
        np.empty((n, n_rec, K, M)),
        np.empty((n, n_rec, K)),
        np.empty(n, dtype=np.int8),
        np.empty(n, dtype=np.int64),
    )


def _explicit(name, X, xi, n, n_steps, rows, d):
    """Pack explicit inputs X (n?, n_steps, rows, d) and noise xi (n?, n_steps, rows) into the
    kernels' flat layout (n, n_steps, rows*(d+1))."""
    X = _validate.finite_array(f"{name}[0] (inputs)", X, ndim=(3, 4))
    xi = _validate.finite_array(f"{name}[1] (label noise)", xi, ndim=(2, 3))
    X = _validate.with_run_axis(f"{name}[0] (inputs)", X, 3, n)
    xi = _validate.with_run_axis(f"{name}[1] (label noise)", xi, 2, n)
    if X.shape[1:][1:] != (rows, d) or X.shape[1] < n_steps:
        raise InputError(
            f"{name}[0] (inputs) must have shape ([n_runs,] >={n_steps}, {rows}, {d}), "
            f"got {X.shape}"
        )
    if xi.shape[1] < n_steps or xi.shape[2] != rows:
        raise InputError(
            f"{name}[1] (label noise) must have shape ([n_runs,] >={n_steps}, {rows}), "
            f"got {xi.shape}"
        )
    X = _validate.broadcast_runs(name, X[:, :n_steps], n)
    xi = _validate.broadcast_runs(name, xi[:, :n_steps], n)
    flat = np.concatenate([X.reshape(n, n_steps, rows * d), xi], axis=2)
    return np.ascontiguousarray(flat)


def _finish(method, t, outs, nets, d, extra, stop_time):
    eps, Q, R, v, status, _ = outs
    W, vv, Wt, vt = nets
    T = np.matmul(Wt, Wt.transpose(0, 2, 1)) / d
    t_stop = np.where(status == _k.STATUS_DIVERGED, stop_time, np.nan)
    return Result.from_params(
        extra,
        method=method,
        t=t,
        eps_g=eps,
        Q=Q,
        R=R,
        v=v,
        T=T,
        v_teacher=vt.copy(),
        status=status,
        t_stop=t_stop,
        W=W,
        v_final=vv,
    )


def simulate_sgd(
    W0,
    v0,
    W_teacher,
    v_teacher,
    lr,
    t_max,
    *,
    seeds=0,
    run_ids=None,
    times=None,
    batch_size=1,
    label_noise=0.0,
    train_second_layer=True,
    samples=None,
    max_error=1e6,
    check_every=None,
    num_threads=None,
    dtype="float64",
    sampler="direct",
    activation="quadratic",
    teacher_activation=None,
    progress=False,
):
    """Online SGD: one fresh Gaussian sample (or mini-batch) per step, time ``t = step / d``.

    ``w_j <- w_j - lr * dl/dw_j`` and ``v_j <- v_j - (lr / d) * dl/dv_j`` on the per-sample loss
    ``(f - y)^2 / 2`` with ``y = f*(x) + label_noise * xi``; a mini-batch averages ``batch_size``
    per-sample gradients. With ``f(x) = sum_j v_j g(h_j)``, ``h_j = w_j . x / sqrt d`` and the
    error ``e = f - y``, a sample moves ``w_j`` by ``-lr e v_j g'(h_j) x / sqrt d`` and ``v_j``
    by ``-(lr / d) e g(h_j)``.

    Parameters
    ----------
    W0 : array, shape (K, d) or (n_runs, K, d)
        Initial first layer (one per run with a leading run axis).
    v0 : array, shape (K,) or (n_runs, K)
    W_teacher : array, shape (M, d) or (n_runs, M, d)
    v_teacher : array, shape (M,) or (n_runs, M)
    lr : float or array of shape (n_runs,), > 0
    t_max : float
        Last time; ``round(t_max * d)`` steps.
    seeds : int or sequence of int
        Random streams. An int with n runs gives run r the stream ``(seed, r)``; a list gives run
        r the stream ``(seeds[r], 0)``. ``run_ids`` overrides the second part of the key.
    times : array, optional
        Recording times in [0, t_max] (rounded to whole steps); default log-spaced.
    batch_size : int, >= 1
    label_noise : float or array (n_runs,), >= 0
    train_second_layer : bool
    samples : tuple (X, xi), optional
        Explicit inputs ``X`` of shape ([n_runs,] n_steps, batch_size, d) and standard-normal
        label-noise draws ``xi`` of shape ([n_runs,] n_steps, batch_size), used instead of the
        random streams (for step-by-step comparisons with a reference).
    max_error : float
        A run whose eps_g exceeds this, or whose state becomes non-finite, is stopped and flagged
        diverged (with the time).
    check_every : int, optional
        Steps between divergence checks of eps_g (default d, once per unit of time); a non-finite
        per-sample error is caught at every step.
    num_threads : int, optional
        Numba threads for this call (restored afterwards). Results do not depend on it.
    dtype : {"float64", "float32"}
        Precision of the weights, the samples (32-bit normals from the same per-run streams)
        and the per-step arithmetic. ``"float32"`` is about twice as fast; order parameters and
        eps_g are still computed in float64 from the float32 weights.
    sampler : {"direct", "exact", "auto"}
        ``"direct"``: simulate the d-dimensional weights, drawing d Gaussian numbers per step.
        The inputs are drawn in the teacher's frame (:mod:`fastquad.frame`: an orthogonal
        change of coordinates, exact in law, in which the teacher's rows span the first M
        coordinates, so labels cost M^2 instead of M d multiply-adds); ``W`` is returned in
        the original coordinates, and explicit ``samples`` are used as given.
        ``"exact"``: the exact dimension-free sampler (see docs/theory.md, 'The exact
        dimension-free sampler'): the law of online SGD depends on the weights only through
        the Gram matrix of the K + M rows, which is updated exactly at a cost per step
        independent of d (float64; needs d >= K + M; no final weights ``W``).
        Same law, not the same draws, as the direct kernel. ``"auto"``: exact when d >= K + M
        and d > 4 (K + M)^2 and no explicit samples are given, else direct.
    activation : {"quadratic", "linear", "relu", "erf"}
        The student's activation g: ``"quadratic"`` ``h^2`` (the default), ``"linear"`` ``h``,
        ``"relu"`` ``max(h, 0)`` (``g'(0) = 0``), ``"erf"`` ``erf(h / sqrt 2)``. Every sampler
        and precision takes every activation; eps_g is recorded exactly for each.
    teacher_activation : str, optional
        The teacher's activation g*, one of the same names; None or ``"same"`` (the default)
        is the student's.
    progress : bool
        Show a progress bar on stderr (simulated time, mean over the runs) once the call has
        run for 5 s. It reads the records the kernel has written: the numbers are the same.

    Returns
    -------
    Result
        ``t`` (n_times,), ``eps_g`` (n_runs, n_times), ``Q``, ``R``, ``v`` per run and time,
        ``status`` and ``t_stop`` per run, final weights ``W`` and ``v_final``; the attributes
        ``activation`` and ``teacher_activation`` name the two activations.

    Examples
    --------
    Two runs (seeds 0 and 1) of d = 20 steps each, recorded at every step:

    >>> import numpy as np
    >>> import fastquad as fq
    >>> W_teacher, v_teacher = fq.make_teacher(20, 1)
    >>> W0, v0 = fq.make_student(20, 1, scale=0.5, seed=1)
    >>> res = fq.simulate_sgd(W0, v0, W_teacher, v_teacher, lr=0.1, t_max=1.0, seeds=[0, 1])
    >>> res.eps_g.shape, res.t[:3], res.status
    ((2, 21), array([0.  , 0.05, 0.1 ]), array([0, 0], dtype=int8))
    >>> Q, R, T = fq.order_parameters(W0, W_teacher)
    >>> eps0 = fq.generalization_error(Q, R, T, v0, v_teacher)
    >>> bool(np.allclose(res.eps_g[:, 0], eps0))  # eps_g is exact, not a test-set estimate
    True
    >>> bool((res.eps_g[:, -1] < eps0).all())
    True

    A seed alone reproduces the run it gives inside a list:

    >>> one = fq.simulate_sgd(W0, v0, W_teacher, v_teacher, lr=0.1, t_max=1.0, seeds=1)
    >>> bool(np.array_equal(one.eps_g[0], res.eps_g[1]))
    True

    A ReLU student learning an erf teacher:

    >>> relu = fq.simulate_sgd(W0, v0, W_teacher, v_teacher, lr=0.1, t_max=1.0,
    ...                        activation="relu", teacher_activation="erf")
    >>> relu.attrs["activation"], relu.attrs["teacher_activation"]
    ('relu', 'erf')
    """
    n_hint = 1 if isinstance(seeds, numbers.Integral) else np.size(seeds)
    if run_ids is not None:
        n_hint = max(n_hint, np.size(run_ids))
    nets, lr_arr, sigma, n = _common(W0, v0, W_teacher, v_teacher, lr, label_noise, n_hint)
    # the kernels update W and v in place: they get copies (W below, once it is in its frame)
    W, Wt = nets[0], nets[2]
    v, vt = nets[1].copy(), nets[3].copy()
    K, d = W.shape[1:]
    M = Wt.shape[1]
    p = _validate.Problems()
    names = p.check(activation_pair, activation, teacher_activation)
    opts = SGDOptions.make(p, batch_size=batch_size, sampler=sampler, dtype=dtype)
    train_v = p.check(check_option, "train_second_layer", train_second_layer)
    max_error = p.check(check_option, "max_error", max_error)
    check_every = (
        d if check_every is None else p.check(_validate.integer, "check_every", check_every, low=1)
    )
    keys = p.check(_seed_keys, seeds, run_ids, n)
    grid = p.check(_time_grid, t_max, times, d)
    p.raise_if_any()
    batch, sampler, dtype = opts.batch_size, opts.sampler, opts.dtype
    s_code, t_code = activation_codes(names)
    if batch > 1 and 16 * batch * (d + 1) * (num_threads or 1) > MEMORY_SHARE * machine_memory():
        raise InputError(
            f"batch_size must fit in memory: {batch} samples of d = {d} inputs need "
            f"about {16 * batch * (d + 1) / 2**30:.3g} GiB per thread"
        )
    r = K + M
    sampler = sampler_used(sampler, d, K, M, dtype=dtype, explicit_samples=samples is not None)
    if sampler == "exact":
        if d < r:
            raise InputError(
                f"sampler='exact' needs d >= K + M = {r}, got d={d} (use 'direct' or 'auto')"
            )
        if samples is not None:
            raise InputError("samples: explicit samples need sampler='direct'")
        if np.dtype(dtype) != np.float64:
            raise InputError("dtype: the exact sampler runs in float64 only")
        return _sgd_exact(
            W.copy(),
            v,
            Wt.copy(),
            vt,
            lr_arr,
            sigma,
            n,
            K,
            M,
            d,
            batch,
            train_v,
            max_error,
            check_every,
            keys,
            grid,
            names,
            num_threads,
            progress,
        )
    real = np.dtype(dtype)
    Wt_orig = Wt
    frame, support = None, d
    if samples is None and M < d:
        # draw the inputs in the teacher's frame (exact in law; module fastquad.frame): the
        # teacher's pre-activations then cost M^2 instead of M d multiply-adds per sample
        shared = bool((Wt == Wt[:1]).all())
        frame, Wt_rot = teacher_frame(Wt[:1] if shared else Wt)
        W = to_frame(W, frame)
        Wt = np.broadcast_to(Wt_rot, Wt.shape) if shared else Wt_rot
        support = M
    else:
        W = W.copy()
    # contiguous, writeable arrays of one dtype: one Numba specialisation per dtype
    W, v, Wt, vt = (np.require(a, real, ["C", "W"]) for a in (W, v, Wt, vt))
    seed_arr, id_arr = keys
    steps, t = steps_for_times(grid[1], d)
    if samples is None:
        smp = np.zeros((1, 1, 1), dtype=real)
    else:
        if not (isinstance(samples, tuple) and len(samples) == 2):
            raise InputError("samples must be a tuple (X, xi) of inputs and label-noise draws")
        smp = _explicit("samples", samples[0], samples[1], n, int(steps[-1]), batch, d)
        smp = np.ascontiguousarray(smp, dtype=real)
    states = _streams(seed_arr, id_arr)
    outs = _outputs(n, len(steps), K, M)
    # one kernel per kind of step: a call compiles only the one it needs
    shape = (_k.sgd_batch, W, v, Wt, support) if batch == 1 else (_k.sgd_minibatch, W, v, Wt)
    call_kernel(
        *shape,
        vt,
        lr_arr,
        sigma,
        train_v,
        *(() if batch == 1 else (batch,)),
        steps,
        check_every,
        max_error,
        states,
        smp,
        *outs,
        s_code,
        t_code,
        num_threads=num_threads,
        progress=progress and RecordProgress(outs[0], t, "sgd"),
    )
    if frame is not None:
        W = from_frame(W, frame).astype(real, copy=False)
    params = dict(
        d=d,
        K=K,
        M=M,
        lr=lr_arr,
        label_noise=sigma,
        seed=seed_arr,
        run_id=id_arr,
        batch_size=batch,
        train_second_layer=train_v,
        max_error=max_error,
        dtype=real.name,
        activation=names[0],
        teacher_activation=names[1],
    )
    Wt64, vt64 = (a.astype(np.float64) for a in (Wt_orig, vt))
    return _finish("sgd", t, outs, (W, v, Wt64, vt64), d, params, outs[5] / d)


def _sgd_exact(
    W,
    v,
    Wt,
    vt,
    lr_arr,
    sigma,
    n,
    K,
    M,
    d,
    batch,
    train_v,
    max_error,
    check_every,
    keys,
    grid,
    names,
    num_threads,
    progress,
):
    """simulate_sgd by the exact dimension-free sampler (validated inputs)."""
    from .kernels import gram as _g

    seed_arr, id_arr = keys
    steps, t = steps_for_times(grid[1], d)
    # the kernel records at increasing steps; times closer than 1/d share a record
    uniq, where = np.unique(steps, return_inverse=True)
    F = _g.initial_factor(W, Wt)
    vv = np.ascontiguousarray(v, dtype=np.float64).copy()
    vt = np.ascontiguousarray(vt, dtype=np.float64)
    states = _streams(seed_arr, id_arr)
    eps, Q, R, vo, status, stop = _outputs(n, len(uniq), K, M)
    call_kernel(
        _g.gram_sgd_batch,
        F,
        vv,
        vt,
        K,
        d,
        lr_arr,
        sigma,
        train_v,
        batch,
        uniq,
        check_every,
        max_error,
        states,
        eps,
        Q,
        R,
        vo,
        status,
        stop,
        *activation_codes(names),
        num_threads=num_threads,
        progress=progress and RecordProgress(eps, uniq / d, "sgd"),
    )
    params = dict(
        d=d,
        K=K,
        M=M,
        lr=lr_arr,
        label_noise=sigma,
        seed=seed_arr,
        run_id=id_arr,
        batch_size=batch,
        train_second_layer=train_v,
        max_error=max_error,
        dtype="float64",
        sampler="exact",
        activation=names[0],
        teacher_activation=names[1],
    )
    outs = (eps[:, where], Q[:, where], R[:, where], vo[:, where], status, stop)
    return _finish("sgd", t, outs, (None, vv, Wt, vt), d, params, stop / d)


def simulate_gd(
    W0,
    v0,
    W_teacher,
    v_teacher,
    lr,
    t_max,
    *,
    n_samples,
    batch_size=None,
    seeds=0,
    run_ids=None,
    times=None,
    label_noise=0.0,
    train_second_layer=True,
    data=None,
    max_error=1e6,
    check_every=None,
    num_threads=None,
    activation="quadratic",
    teacher_activation=None,
    progress=False,
):
    """Training on a fixed dataset of ``n_samples`` Gaussian inputs per run.

    ``batch_size=None`` (or ``n_samples``) is full-batch gradient descent; a smaller batch is
    multi-pass mini-batch SGD, reshuffled every epoch (the last partial batch of an epoch is
    dropped). One step advances time by ``1 / d``, as in online SGD, so full-batch GD with
    large n approaches the population flow on the same axis. The result carries the training
    loss (``train_error``, label noise included) beside the exact test error ``eps_g``.

    Parameters
    ----------
    n_samples : int, >= 1
        Dataset size, drawn from the run's stream (or given by ``data``).
    data : tuple (X, xi), optional
        Explicit dataset ``X`` ([n_runs,] n_samples, d) and standard-normal noise draws
        ``xi`` ([n_runs,] n_samples).
    activation, teacher_activation : str
        The student's and the teacher's activations (``"quadratic"``, ``"linear"``,
        ``"relu"``, ``"erf"``), as :func:`simulate_sgd`: the labels are the teacher's outputs,
        the training loss is the student's.
    Other parameters and returns as :func:`simulate_sgd`.

    Examples
    --------
    Full-batch GD on 40 samples in d = 20; ``train_error`` is the loss on those samples,
    ``eps_g`` the exact test error:

    >>> import numpy as np
    >>> import fastquad as fq
    >>> W_teacher, v_teacher = fq.make_teacher(20, 1)
    >>> W0, v0 = fq.make_student(20, 1, scale=0.5, seed=1)
    >>> res = fq.simulate_gd(W0, v0, W_teacher, v_teacher, lr=0.1, t_max=1.0, n_samples=40,
    ...                      times=[0.0, 0.5, 1.0])
    >>> res.method, res.t, res.train_error.shape
    ('gd', array([0. , 0.5, 1. ]), (1, 3))
    >>> bool((np.diff(res.train_error[0]) < 0).all() and res.eps_g[0, -1] < res.eps_g[0, 0])
    True
    """
    n_hint = 1 if isinstance(seeds, numbers.Integral) else np.size(seeds)
    if run_ids is not None:
        n_hint = max(n_hint, np.size(run_ids))
    nets, lr_arr, sigma, n = _common(W0, v0, W_teacher, v_teacher, lr, label_noise, n_hint)
    W, v, Wt, vt = (a.copy() for a in nets)
    K, d = W.shape[1:]
    M = Wt.shape[1]
    p = _validate.Problems()
    names = p.check(activation_pair, activation, teacher_activation)
    opts = GDOptions.make(
        p, n_samples=n_samples, batch_size=1 if batch_size is None else batch_size
    )
    if opts is not None:
        check_dataset(opts.n_samples, opts.batch_size, p)
        n_samples = opts.n_samples
        batch = n_samples if batch_size is None else opts.batch_size
    train_v = p.check(check_option, "train_second_layer", train_second_layer)
    max_error = p.check(check_option, "max_error", max_error)
    check_every = (
        d if check_every is None else p.check(_validate.integer, "check_every", check_every, low=1)
    )
    keys = p.check(_seed_keys, seeds, run_ids, n)
    grid = p.check(_time_grid, t_max, times, d)
    p.raise_if_any()
    seed_arr, id_arr = keys
    steps, t = steps_for_times(grid[1], d)
    if data is None:
        dat = np.zeros((1, 1))
    else:
        if not (isinstance(data, tuple) and len(data) == 2):
            raise InputError("data must be a tuple (X, xi) of inputs and label-noise draws")
        X = np.asarray(data[0], dtype=float)
        xi = np.asarray(data[1], dtype=float)
        dat = _explicit("data", X[..., None, :, :], xi[..., None, :], n, 1, n_samples, d)[:, 0]
    states = _streams(seed_arr, id_arr)
    eps, Q, R, vo, status, stop = _outputs(n, len(steps), K, M)
    tr = np.empty_like(eps)
    call_kernel(
        _k.gd_batch,
        W,
        v,
        Wt,
        vt,
        lr_arr,
        sigma,
        train_v,
        n_samples,
        batch,
        steps,
        check_every,
        max_error,
        states,
        np.ascontiguousarray(dat),
        eps,
        tr,
        Q,
        R,
        vo,
        status,
        stop,
        *activation_codes(names),
        num_threads=num_threads,
        progress=progress and RecordProgress(eps, t, "gd"),
    )
    params = dict(
        d=d,
        K=K,
        M=M,
        lr=lr_arr,
        label_noise=sigma,
        seed=seed_arr,
        run_id=id_arr,
        n_samples=n_samples,
        batch_size=batch,
        train_second_layer=train_v,
        max_error=max_error,
        activation=names[0],
        teacher_activation=names[1],
    )
    res = _finish("gd", t, (eps, Q, R, vo, status, stop), (W, v, Wt, vt), d, params, stop / d)
    return res.replace(train_error=tr)


def integrate_flow(
    W0,
    v0,
    W_teacher,
    v_teacher,
    lr,
    t_max,
    *,
    dt=None,
    times=None,
    train_second_layer=True,
    max_error=1e6,
    num_threads=None,
    activation="quadratic",
    teacher_activation=None,
    progress=False,
):
    """Population gradient flow in parameter space, by classic RK4.

    ``dW/dt = -lr * d * dL/dW``, ``dv/dt = -lr * dL/dv`` with L = eps_g: the continuous-time
    limit of gradient descent, on the same time axis as online SGD (exact at any d). The
    gradient is the exact population one for every activation
    (:func:`fastquad.population_gradients`).

    Parameters
    ----------
    W0, v0, W_teacher, v_teacher, lr : as :func:`simulate_sgd`
    t_max : float
    dt : float, optional
        RK4 step; default ``min(0.05, 0.01 / lr)`` for each run. The step that would pass a record
        time is shortened to land on it.
    times : array, optional
        Recording times in [0, t_max]; default log-spaced.
    train_second_layer, max_error, num_threads, activation, teacher_activation, progress
        As :func:`simulate_sgd`.

    Returns
    -------
    Result (method ``"flow"``), with final weights.

    Examples
    --------
    The flow in d = 20 follows the order-parameter ODE without its SGD-noise term, and reaches
    the teacher:

    >>> import numpy as np
    >>> import fastquad as fq
    >>> W_teacher, v_teacher = fq.make_teacher(20, 1)
    >>> W0, v0 = fq.make_student(20, 1, scale=0.5, seed=1)
    >>> times = [0.0, 1.0, 50.0]
    >>> res = fq.integrate_flow(W0, v0, W_teacher, v_teacher, lr=0.5, t_max=50.0, times=times)
    >>> Q, R, T = fq.order_parameters(W0, W_teacher)
    >>> ode = fq.integrate_ode(Q, R, v0, T, v_teacher, lr=0.5, t_max=50.0, times=times,
    ...                        sgd_noise=False)
    >>> bool(np.allclose(res.eps_g, ode.eps_g, rtol=0, atol=1e-6))
    True
    >>> bool(res.eps_g[0, -1] < 1e-10)
    True
    """
    nets, lr_arr, _, n = _common(W0, v0, W_teacher, v_teacher, lr, 0.0)
    W, v, Wt, vt = (a.copy() for a in nets)
    K, d = W.shape[1:]
    M = Wt.shape[1]
    p = _validate.Problems()
    names = p.check(activation_pair, activation, teacher_activation)
    train_v = p.check(check_option, "train_second_layer", train_second_layer)
    max_error = p.check(check_option, "max_error", max_error)
    grid = p.check(_time_grid, t_max, times, None)
    opts = FlowOptions.make(p, dt=0.0 if dt is None else dt)
    p.raise_if_any()
    t = grid[1]
    # per run, so that a run does not depend on the batch it is in
    dt = opts.dt or None
    dt = np.array([default_dt(x) for x in lr_arr]) if dt is None else np.full(n, dt)
    eps, Q, R, vo, status, _ = _outputs(n, len(t), K, M)
    t_stop = np.empty(n)
    call_kernel(
        _k.flow_batch,
        W,
        v,
        Wt,
        vt,
        lr_arr,
        train_v,
        t,
        dt,
        max_error,
        eps,
        Q,
        R,
        vo,
        status,
        t_stop,
        *activation_codes(names),
        num_threads=num_threads,
        progress=progress and RecordProgress(eps, t, "flow"),
    )
    params = dict(
        d=d,
        K=K,
        M=M,
        lr=lr_arr,
        dt=dt,
        train_second_layer=train_v,
        max_error=max_error,
        activation=names[0],
        teacher_activation=names[1],
    )
    return _finish("flow", t, (eps, Q, R, vo, status, None), (W, v, Wt, vt), d, params, t_stop)
