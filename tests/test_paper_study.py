"""The paper study's report: its verdicts follow from the numbers beside them.

The statistics the report's sentences are computed from (pairing of SGD runs with the ODE from
their own start, the agreement test and its family-wise level) are checked on synthetic data
whose answer is known.
"""

import numpy as np
import pytest
import xarray as xr
from conftest import runner_module

import fastquad as fq


@pytest.fixture(scope="module")
def study():
    return runner_module("paper_study")


def _dataset(sgd, ode, sgd_replicas, ode_replicas, sgd_status=None):
    n_s, n_o = len(sgd), len(ode)
    status = np.full(n_s + n_o, fq.STATUS_DONE, dtype=np.int8)
    if sgd_status is not None:
        status[:n_s] = sgd_status
    return xr.Dataset(
        {"eps_g": (("run", "time"), np.concatenate([sgd, ode])), "status": (("run",), status)},
        coords={
            "method": (("run",), np.array(["sgd"] * n_s + ["ode"] * n_o)),
            "replica": (("run",), np.concatenate([sgd_replicas, ode_replicas])),
            "time": np.arange(sgd.shape[1], dtype=float),
        },
    )


def test_sgd_runs_are_paired_with_the_ode_of_their_own_start(study):
    rng = np.random.default_rng(0)
    ode = rng.uniform(1.0, 2.0, (5, 7))
    order = np.array([3, 0, 4, 1, 2])  # the ODE runs stored in another order
    sgd = ode[order] + 1e-3 * rng.standard_normal((5, 7))
    status = np.full(5, fq.STATUS_DONE, dtype=np.int8)
    status[2] = fq.STATUS_DIVERGED
    ds = _dataset(sgd, ode, order, np.arange(5), status)
    s, o, n_left = study._paired(ds, np.ones(10, dtype=bool))
    assert n_left == 1 and len(s) == len(o) == 4
    np.testing.assert_allclose(s, o, atol=5e-3)  # each with its own ODE, not another's
    assert not np.any(np.isin(s, sgd[2]))  # the diverged run is left out


def test_the_agreement_test_holds_its_family_wise_level(study):
    # no deviation: SGD = ODE + noise, correlated over time; the test may reject at most
    # about AGREE_LEVEL of the time (Bonferroni is conservative)
    rng = np.random.default_rng(1)
    n_runs, n_times, trials = 16, 81, 2000
    limit = study._z_limit(n_runs, n_times - 1)
    assert limit > 3.0
    ode = np.ones((n_runs, n_times))
    rejected = 0
    for _ in range(trials):
        walk = np.cumsum(rng.standard_normal((n_runs, n_times)), axis=1) * 1e-3
        _, z, _ = study._deviation(ode + walk, ode)
        rejected += z > limit
    assert rejected / trials <= 1.5 * study.AGREE_LEVEL
    # a deviation of 10 standard errors at one time is found, and 6% is too large
    walk = 1e-3 * rng.standard_normal((n_runs, n_times))
    shifted = walk.copy()
    shifted[:, 40] += 10 * walk[:, 40].std(ddof=1) / np.sqrt(n_runs)
    rel, z, _ = study._deviation(ode + shifted, ode)
    assert not study._agrees(rel, z, n_runs, n_times - 1)
    rel, z, _ = study._deviation(1.06 * ode + walk, ode)
    assert rel > study.AGREE_REL and not study._agrees(rel, z, n_runs, n_times - 1)
    rel, z, _ = study._deviation(ode + walk, ode)
    assert study._agrees(rel, z, n_runs, n_times - 1)


def test_the_single_run_deviation_is_what_it_says(study):
    rng = np.random.default_rng(2)
    ode = rng.uniform(1.0, 2.0, (8, 5))
    noise = rng.standard_normal((8, 5))
    _, _, rms = study._deviation(ode + 0.01 * noise, ode)
    want = np.max(np.sqrt(((0.01 * noise[:, 1:]) ** 2).mean(axis=0)) / ode.mean(axis=0)[1:])
    assert rms == pytest.approx(want, rel=1e-12)


def test_losses_are_clamped_at_zero_with_the_floor_stated(study):
    assert study._loss(-3.55e-15) == "0" and study._loss(0.5 * study.LOSS_FLOOR) == "0"
    assert study._loss(0.01909) == "0.01909"
