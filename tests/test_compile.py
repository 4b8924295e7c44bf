"""Compilation: nothing at import, only what a call needs, and a warm-up that covers a job."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastquad import config
from fastquad.sweep import parse_sweep
from fastquad.warmup import warm_up_configs

# Runs in a fresh interpreter: Numba's compile events from the start, then the kernels that
# hold machine code (compiled, or loaded from the on-disk cache) after the step.
_PROBE = r"""
import json, sys
from numba.core import event
seen = event.RecordingListener()
event.register("numba:compile", seen)
import fastquad as fq
from fastquad import rng
from fastquad.kernels import gram, ode, sgd
compiled_at_import = len(seen.buffer)
exec(sys.argv[1])
kernels = dict(
    sgd_batch=sgd.sgd_batch, sgd_minibatch=sgd.sgd_minibatch, gd_batch=sgd.gd_batch,
    flow_batch=sgd.flow_batch, gram_sgd_batch=gram.gram_sgd_batch,
    integrate_batch=ode.integrate_batch, normal_fill=rng.normal_fill,
    normal_fill32=rng.normal_fill32,
)
print(json.dumps(dict(at_import=compiled_at_import,
                      loaded={k: len(v.overloads) for k, v in kernels.items()})))
"""


def _probe(step):
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, step], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_fastquad_compiles_nothing():
    got = _probe("")
    assert got["at_import"] == 0
    assert not any(got["loaded"].values())


_DIRECT = """
W_t, v_t = fq.make_teacher(30, 2); W0, v0 = fq.make_student(30, 2, seed=1)
fq.simulate_sgd(W0, v0, W_t, v_t, 0.1, 1.0, seeds=[0, 1], num_threads=1)
"""


def _every_activation(step):
    """The step once per activation pair: the codes are runtime arguments of one kernel."""
    pairs = [("quadratic", None), ("relu", "erf"), ("linear", "quadratic"), ("erf", "same")]
    return "".join(
        step.replace("num_threads=1", f"num_threads=1, activation={a!r}, teacher_activation={t!r}")
        for a, t in pairs
    )


_GD_FLOW = """
W_t, v_t = fq.make_teacher(30, 2); W0, v0 = fq.make_student(30, 2, seed=1)
fq.simulate_gd(W0, v0, W_t, v_t, 0.1, 1.0, n_samples=5, seeds=[0, 1], num_threads=1)
fq.integrate_flow(W0, v0, W_t, v_t, 0.1, 1.0, num_threads=1)
"""


@pytest.mark.parametrize(
    "step, wanted",
    [
        (_DIRECT, {"sgd_batch"}),
        (_DIRECT.replace("seeds=[0, 1]", "seeds=[0, 1], batch_size=3"), {"sgd_minibatch"}),
        (_DIRECT.replace("seeds=[0, 1]", "seeds=[0, 1], dtype='float32'"), {"sgd_batch"}),
        (_DIRECT.replace("seeds=[0, 1]", "seeds=[0, 1], sampler='exact'"), {"gram_sgd_batch"}),
        (_every_activation(_DIRECT), {"sgd_batch"}),
        (
            _every_activation(_DIRECT.replace("seeds=[0, 1]", "seeds=[0, 1], batch_size=3")),
            {"sgd_minibatch"},
        ),
        (
            _every_activation(_DIRECT.replace("seeds=[0, 1]", "seeds=[0, 1], sampler='exact'")),
            {"gram_sgd_batch"},
        ),
        (_every_activation(_GD_FLOW), {"gd_batch", "flow_batch"}),
        (
            "Q, R, T = fq.order_parameters(np.eye(2, 10), np.eye(2, 10))\n"
            "import numpy as np\n"
            "fq.integrate_ode(Q, R, [1.0, 1.0], T, [1.0, 1.0], 0.1, 1.0)",
            {"integrate_batch"},
        ),
    ],
)
def test_a_call_compiles_only_the_kernels_it_runs(step, wanted):
    # each kernel that a call does not run stays without machine code: nothing compiled for
    # another sampler, precision or kind of step
    step = "import numpy as np\n" + step
    loaded = _probe(step)["loaded"]
    # the draws are sub-kernels: compiled into their caller (and loaded with it from the cache)
    runs = {k for k, n in loaded.items() if n} - {"normal_fill", "normal_fill32"}
    assert runs == wanted, loaded
    assert all(n <= 1 for n in loaded.values()), loaded  # one specialisation each


def test_warm_up_compiles_one_tiny_run_per_kernel_of_a_sweep():
    sweep = parse_sweep(
        "[fixed]\nd = 300\nK = 2\nM = 2\nt_max = 1.0\nn_runs = 2\n"
        '[axes]\nsampler = ["direct", "exact", "auto"]\nbatch_size = [1, 4, 8]\n'
    )
    tiny = warm_up_configs(sweep.points)
    kinds = {(c.sampler, c.batch_size) for c in tiny}
    # auto is exact at d = 300 > 4 (K + M)^2; batch sizes 4 and 8 share the mini-batch kernel
    assert kinds == {("direct", 1), ("direct", 2), ("exact", 1), ("exact", 2)}
    assert len(tiny) == len(kinds)
    assert all(c.d == 4 and c.n_runs == 1 and c.t_max == 0.5 for c in tiny)
    # a method name stands for its default options; duplicates are dropped
    names = warm_up_configs(["ode", "gd", "ode"])
    assert [c.method for c in names] == ["ode", "gd"] and names[1].n_samples >= 1


def test_one_warm_up_run_serves_every_activation():
    """The activations are runtime arguments: configurations that differ only in them share
    their kernels, hence one warm-up run (the probes above: one specialisation each)."""
    pairs = [(a, t) for a in ("quadratic", "linear", "relu", "erf") for t in ("same", "erf")]
    for method, extra in (("sgd", {"sampler": "exact"}), ("sgd", {}), ("gd", {}), ("flow", {})):
        cfgs = [
            dict(method=method, activation=a, teacher_activation=t, n_samples=4, **extra)
            for a, t in pairs
        ]
        assert len(warm_up_configs(cfgs)) == 1, method


def test_warm_up_configs_keep_what_selects_the_kernel_of_random_configurations():
    rng = np.random.default_rng(5)
    for _ in range(40):
        K, M = (int(x) for x in rng.integers(1, 5, 2))
        values = dict(
            method="sgd",
            d=int(rng.integers(K + M, 400)),
            K=K,
            M=M,
            sampler=str(rng.choice(["direct", "exact", "auto"])),
            batch_size=int(rng.integers(1, 5)),
            teacher_v=[1.0] * M,
            lr=float(rng.uniform(0.01, 1.0)),
        )
        cfg = config.make_config(values)
        (tiny,) = warm_up_configs([cfg])
        from fastquad.methods.sgd import sampler_used

        assert tiny.sampler == sampler_used(cfg.sampler, cfg.d, K, M)
        assert (tiny.batch_size > 1) == (cfg.batch_size > 1)
        assert tiny.dtype == cfg.dtype and tiny.lr == cfg.lr


def test_the_warm_up_command_names_each_kernel_and_the_cache(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[fixed]\nd = 50\nK = 1\nM = 1\nt_max = 1.0\n[zip]\nmethod = ["sgd", "ode"]\n')
    env = dict(os.environ)
    out = subprocess.run(
        ["fastquad", "warm-up", "--sweep", str(spec), "--method", "flow"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("flow ")
    assert lines[1].startswith("sgd (sampler=direct, dtype=float64, batch_size=1)")
    assert lines[2].startswith("ode ")
    assert "compiled kernels in" in lines[-1]
    if env.get("NUMBA_CACHE_DIR"):
        assert lines[-1].endswith(env["NUMBA_CACHE_DIR"])
    bad = subprocess.run(["fastquad", "warm-up", "--method", "nope"], capture_output=True)
    assert bad.returncode == 2 and b"invalid choice" in bad.stderr


@pytest.mark.parametrize(
    "args, says",
    [
        (["--config", "no-such.toml"], "--config: no such file no-such.toml"),
        (["--sweep", "no-such.toml"], "sweep file: cannot read no-such.toml"),
        (["--threads", "0"], "--threads must be an integer in [1,"),
    ],
)
def test_bad_warm_up_input_is_one_line(tmp_path, args, says):
    out = subprocess.run(
        ["fastquad", "warm-up", *args], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert says in out.stderr and "Traceback" not in out.stderr
