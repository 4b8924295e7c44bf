"""The method registry: every method is owned by one module, and a new one plugs in whole."""

import numpy as np
import pytest

import fastquad as fq
from fastquad import budget, config, methods
from fastquad.errors import InputError
from fastquad.methods.base import Method
from fastquad.sweep import parse_sweep
from fastquad.sweep.plan import plan_chunks
from fastquad.sweep.run import warm_up


def test_the_registry_knows_the_four_methods_and_names_them_on_error():
    assert methods.names() == ("sgd", "gd", "flow", "ode")
    assert config.METHODS == methods.names()
    for name in methods.names():
        m = methods.get(name)
        assert m.name == name and m.summary in config.PARAMETERS["method"][2]
    assert [methods.get(n).discrete for n in methods.names()] == [True, True, False, False]
    with pytest.raises(InputError, match="method must be one of sgd, gd, flow, ode; got 'x'"):
        methods.get("x")
    with pytest.raises(ValueError, match="already registered"):
        methods.register(methods.get("sgd"))


@pytest.mark.parametrize("name", ["sgd", "gd", "flow", "ode"])
def test_each_method_runs_through_the_registry_as_through_its_public_function(name):
    # the registry's run is the public function with the configuration's options: same numbers
    extra = {"n_samples": 50} if name == "gd" else {}
    cfg = config.make_config(
        dict(method=name, d=30, K=2, M=2, t_max=2.0, n_times=7, n_runs=3, lr=0.1, **extra)
    )
    res = config.run(cfg)
    W0, v0, Wt, vt = config.networks([cfg] * 3, np.arange(3))
    t = config.time_grid(cfg)
    if name == "sgd":
        ref = fq.simulate_sgd(
            W0, v0, Wt, vt, 0.1, 2.0, seeds=np.zeros(3, np.int64), run_ids=np.arange(3), times=t
        )
    elif name == "gd":
        ref = fq.simulate_gd(
            W0,
            v0,
            Wt,
            vt,
            0.1,
            2.0,
            n_samples=50,
            seeds=np.zeros(3, np.int64),
            run_ids=np.arange(3),
            times=t,
        )
    elif name == "flow":
        ref = fq.integrate_flow(W0, v0, Wt, vt, 0.1, 2.0, times=t)
    else:
        ops = [fq.order_parameters(W, T) for W, T in zip(W0, Wt)]
        ref = fq.integrate_ode(
            *(np.array([o[i] for o in ops]) for i in (0, 1)),
            v0,
            np.array([o[2] for o in ops]),
            vt,
            0.1,
            2.0,
            times=t,
        )
    np.testing.assert_array_equal(res.eps_g, ref.eps_g)
    assert budget.seconds_per_run(cfg) == methods.get(name).seconds_per_run(cfg) > 0


@pytest.fixture
def toy(monkeypatch):
    """A toy method registered for one test: the ODE at twice the learning rate."""
    ode = methods.get("ode")

    def run(c, W0, v0, Wt, vt, lr, sigma, seeds, ids, common):
        return ode.run(c, W0, v0, Wt, vt, 2 * lr, sigma, seeds, ids, common)

    method = Method(
        name="toy",
        summary="the ODE at twice the learning rate",
        run=run,
        steps=lambda c: (10.0, "t_max"),
        seconds_per_run=lambda c: 1e-3,
        options=ode.options,  # the ODE's options, checked by the ODE's rules
    )
    monkeypatch.setitem(methods._REGISTRY, "toy", method)
    return method


def test_a_new_method_plugs_into_configs_budgets_sweeps_and_warm_up(toy):
    # registering one Method is all it takes: configs accept it, budgets and sweep plans
    # use its cost, a sweep can zip it with the others, the workers warm it up
    cfg = config.make_config(dict(method="toy", d=20, K=1, M=1, t_max=1.0, n_runs=2, lr=0.05))
    fast = config.run(cfg)
    ref = config.run(cfg.replace(method="ode", lr=0.1))
    np.testing.assert_array_equal(fast.eps_g, ref.eps_g)
    assert budget.seconds_per_run(cfg) == 1e-3
    budget.check_time(cfg, 2)
    sweep = parse_sweep(
        "[fixed]\nd = 20\nK = 1\nM = 1\nt_max = 1.0\nn_runs = 2\n[zip]\nmethod = ['toy', 'sgd']\n"
    )
    assert [p.method for p in sweep.points] == ["toy", "sgd"]
    assert sum(len(c) for c in plan_chunks(sweep, np.arange(sweep.total_runs))) == 4
    warm_up(["toy"])
    with pytest.raises(InputError, match="toy"):
        config.make_config(dict(method="nope"))


@pytest.mark.parametrize(
    "bad, api",
    [
        ({"method": "sgd", "d": 10, "t_max": 0.05}, {"t_max": 0.05}),
        ({"method": "gd", "n_samples": 5, "batch_size": 6}, {"n_samples": 5, "batch_size": 6}),
        ({"method": "sgd", "sampler": "fast"}, {"sampler": "fast"}),
        ({"method": "sgd", "dtype": "float16"}, {"dtype": "float16"}),
    ],
)
def test_a_rule_is_checked_once_and_says_the_same_from_the_api_and_a_config(bad, api):
    # the configuration and the public function reach the same rule: one message
    base = dict(d=10, K=1, M=1, t_max=1.0, n_runs=1, n_samples=8)
    with pytest.raises(InputError) as from_config:
        config.make_config({**base, **bad})
    W_t, v_t = fq.make_teacher(10, 1, seed=1)
    W0, v0 = fq.make_student(10, 1, seed=2)
    fn = fq.simulate_gd if bad["method"] == "gd" else fq.simulate_sgd
    kw = {"n_samples": 8} if fn is fq.simulate_gd else {}
    kw.update(api)
    t_max = kw.pop("t_max", 1.0)
    with pytest.raises(InputError) as from_api:
        fn(W0, v0, W_t, v_t, 0.1, t_max, **kw)
    assert str(from_config.value) == str(from_api.value)


def test_auto_picks_the_sampler_it_is_costed_with():
    from fastquad.methods.sgd import sampler_used

    for d, dtype, want in (
        (20, "float64", "direct"),
        (200, "float64", "exact"),
        (200, "float32", "direct"),
    ):
        assert sampler_used("auto", d, 2, 2, dtype=dtype) == want
        cfg = config.make_config(dict(method="sgd", d=d, K=2, M=2, sampler="auto", dtype=dtype))
        exact = config.make_config(dict(method="sgd", d=d, K=2, M=2, sampler=want, dtype=dtype))
        assert budget.seconds_per_run(cfg) == budget.seconds_per_run(exact)


@pytest.mark.parametrize(
    "key, value",
    [
        ("rtol", 1e-20),
        ("atol", -1.0),
        ("max_error", 0.0),
        ("batch_size", 0),
        ("train_second_layer", "maybe"),
    ],
)
def test_the_ode_options_have_one_rule_in_configs_and_the_api(key, value):
    with pytest.raises(InputError) as from_config:
        config.make_config({"method": "ode", key: value})
    Q, R, T = fq.order_parameters(*(fq.make_student(10, 1, seed=s)[0] for s in (1, 2)))
    with pytest.raises(InputError) as from_api:
        fq.integrate_ode(Q, R, [1.0], T, [1.0], 0.1, 1.0, **{key: value})
    assert str(from_config.value) == str(from_api.value)


@pytest.mark.parametrize("name", ["sgd", "gd", "flow", "ode"])
def test_a_run_with_a_progress_bar_gives_the_same_numbers(name, monkeypatch, capsys):
    from fastquad import progress

    extra = {"n_samples": 40} if name == "gd" else {}
    cfg = config.make_config(
        dict(method=name, d=25, K=2, M=2, t_max=1.0, n_times=6, n_runs=7, **extra)
    )
    whole = config.run(cfg, num_threads=1)
    assert capsys.readouterr().err == ""  # asked for none: none
    config.run(cfg, num_threads=1, progress=True)
    assert capsys.readouterr().err == ""  # a call shorter than DELAY_SECONDS: quiet
    monkeypatch.setattr(progress, "DELAY_SECONDS", 0.0)
    shown = config.run(cfg, num_threads=1, progress=True)
    err = capsys.readouterr().err
    assert f"{name} (7 runs): 100%" in err and "t = 1/1" in err, err  # the bar, on stderr
    for var in (
        "eps_g",
        "Q",
        "R",
        "v",
        "T",
        "v_teacher",
        "status",
        "t_stop",
        "train_error",
        "W",
        "v_final",
    ):
        a, b = getattr(whole, var), getattr(shown, var)
        assert (a is None) == (b is None), var
        if a is not None:
            np.testing.assert_array_equal(a, b, err_msg=var)


def test_the_bar_follows_the_records_of_each_run():
    from fastquad.progress import UNWRITTEN, RecordProgress, records

    t = np.array([0.0, 1.0, 2.0, 4.0])
    eps = records((3, 4))
    assert (eps == UNWRITTEN).all()
    bar = RecordProgress(eps, t, "sgd")
    assert bar._done() == 0.0
    eps[0, :3] = 0.5  # run 0 has recorded up to t = 2
    eps[1, :1] = 0.5  # run 1 only its start
    assert bar._done() == pytest.approx((2.0 + 0.0 + 0.0) / 3)
    eps[2, 1:] = np.nan  # run 2 diverged after its first record: done
    eps[2, 0] = 0.7
    assert bar._done() == pytest.approx((2.0 + 0.0 + 4.0) / 3)
    eps[:] = 0.1
    assert bar._done() == 4.0


def test_a_single_long_run_shows_its_bar_move(monkeypatch, capsys):
    # one run: the bar moves in simulated time while the kernel runs (it used to show none)
    from fastquad import progress

    monkeypatch.setattr(progress, "DELAY_SECONDS", 0.0)
    monkeypatch.setattr(progress, "POLL_SECONDS", 0.0)
    seen = []
    update = progress.RecordProgress.update

    def spy(self):
        update(self)
        seen.append(self._done())

    monkeypatch.setattr(progress.RecordProgress, "update", spy)
    cfg = config.make_config(dict(method="sgd", d=400, K=4, M=4, t_max=1000.0, n_runs=1))
    config.run(cfg, num_threads=1, progress=True)
    assert "sgd (1 run): 100%" in capsys.readouterr().err
    assert any(0 < x < 1000.0 for x in seen), seen  # seen part way, not only at the end


def test_each_method_owns_its_options_and_the_table_is_made_of_them():
    from dataclasses import FrozenInstanceError

    owned = {}
    for name in methods.names():
        cls = methods.get(name).options
        opts = cls()  # the defaults are valid
        with pytest.raises(FrozenInstanceError):
            opts.__setattr__(next(iter(cls.rules())), 0)
        for key, rule in cls.rules().items():
            owned.setdefault(key, set()).add(name)
            assert getattr(opts, key) == rule.default == config.PARAMETERS[key].default
            assert config.PARAMETERS[key].check is rule.check  # one rule, not a copy
    # the table is the shared parameters plus the methods' options, nothing else
    assert set(config.PARAMETERS) == set(config.COMMON) | set(owned)
    assert not set(config.COMMON) & set(owned)
    assert owned["batch_size"] == {"sgd", "gd", "ode"} and owned["dt"] == {"flow", "ode"}
    assert config.PARAMETERS["batch_size"].help.endswith("[sgd, gd, ode]")
    cfg = config.make_config(dict(method="ode", integrator="rk4", dt=0.01))
    assert cfg.options == methods.get("ode").options(integrator="rk4", dt=0.01)


# values of every option, valid and not: the options class and a configuration must agree
_TRIES = [0, 1, -1, 2.5, 3.0, 1e-20, 0.5, float("nan"), float("inf"), True, "rk4", "exact", None]


@pytest.mark.parametrize("name", ["sgd", "gd", "flow", "ode"])
def test_an_options_object_and_a_configuration_accept_and_refuse_alike(name):
    cls = methods.get(name).options
    base = dict(method=name, d=10, K=1, M=1, t_max=1.0, n_samples=8)
    for key in cls.rules():
        for value in _TRIES:
            try:
                opts = cls(**{key: value})
                direct = None
            except InputError as exc:
                opts, direct = None, str(exc)
            try:
                via_config = config.make_config({**base, key: value}).options
                from_config = None
            except InputError as exc:
                via_config, from_config = None, str(exc)
            if direct is not None:  # refused by the rule: the configuration says the same
                assert from_config == direct, (key, value)
            elif from_config is None:  # accepted by both, as the same cleaned value
                assert getattr(via_config, key) == getattr(opts, key), (key, value)
            else:  # accepted by the rule, refused only by a cross-check of the whole problem
                assert key in from_config and (key, name) in {
                    ("batch_size", "gd"),
                    ("n_samples", "gd"),
                    ("dt", "flow"),
                    ("dt", "ode"),
                }, (key, value, from_config)
