"""The activation study's verdict follows from the numbers it is given, not from a script."""

import numpy as np
import pytest
from conftest import runner_module


@pytest.fixture(scope="module")
def study():
    return runner_module("activation_study")


def _facts(study, *, t_quad=40.0, t_relu=60.0, plateaus=(3, 3), stable_bad=(1, 1), extra=(0, 0)):
    curves = {
        ("quadratic", "quadratic"): dict(t_learn=t_quad, final_ode=0.0, eps0=2.0),
        ("relu", "relu"): dict(t_learn=t_relu, final_ode=0.0, eps0=0.5),
        ("relu", "quadratic"): dict(t_learn=np.inf, final_ode=0.4, eps0=2.0),
    }
    stages = {
        ("quadratic", "quadratic"): dict(counts=[plateaus[0]] * 4),
        ("relu", "relu"): dict(counts=[plateaus[1]] * 4),
    }
    fps = {}
    for K, M, _ in study.FP_CASES:
        fps[(K, M, "quadratic")] = dict(stable_bad=stable_bad[0])
        fps[(K, M, "relu")] = dict(stable_bad=stable_bad[1])
    failure = {
        s: dict(fails=50, n=112, agree=0.99, extra=e, stuck=e, eps_stuck=0.25)
        for s, e in zip(("quadratic", "relu"), extra)
    }
    finite_d = {
        s: dict(rels=[0.05, 0.01, 0.002], agree=True, dims=[1000, 10000, 100000])
        for s in ("quadratic", "relu")
    }
    return dict(curves=curves, stages=stages, fixed_points=fps, failure=failure, finite_d=finite_d)


def _split(lines):
    text = "\n".join(lines)
    yes, no = text.split("**Not faithful**")
    return yes, no


def test_verdict_follows_the_numbers(study):
    yes, no = _split(study.verdict(_facts(study)))
    assert "plateaus from a small start" in yes and "3 for the quadratic network, 3" in yes
    assert "time to learn" in yes  # 1.5x: within a factor 2
    yes, no = _split(study.verdict(_facts(study, plateaus=(3, 2), t_relu=200.0)))
    assert "plateaus from a small start" in no and "3 for the quadratic network, 2" in no
    assert "time to learn" in no and "5x" in no
    yes, no = _split(study.verdict(_facts(study, stable_bad=(1, 0))))
    assert "not global minima" in no
    yes, no = _split(study.verdict(_facts(study, extra=(0, 4))))
    assert "4 ReLU run(s) fail although their conserved quantity is positive" in no
    yes, no = _split(study.verdict(_facts(study)))
    assert "conserved quantity is positive" not in no
    # what the ReLU student leaves of a quadratic teacher is always reported, with its number
    assert "20% of its start" in no


def test_verdict_counts_match_its_lists(study):
    lines = study.verdict(_facts(study, plateaus=(3, 2)))
    text = "\n".join(lines)
    n_yes = int(text.split("**Faithful** (")[1].split(")")[0])
    n_no = int(text.split("**Not faithful** (")[1].split(")")[0])
    yes, no = _split(lines)
    assert yes.count("\n- ") == n_yes and no.count("\n- ") == n_no
