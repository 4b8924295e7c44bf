"""One results schema: the file, the Result, xarray, `fastquad info` and the docs agree with it."""

import dataclasses
from pathlib import Path

import h5py
import numpy as np
import pytest

import fastquad as fq
from fastquad import schema
from fastquad.sweep import info

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gd_result():
    W_t, v_t = fq.make_teacher(12, 2, v=[1.0, -0.5], seed=1)
    W0, v0 = fq.make_student(12, 3, scale=0.3, seed=2)
    return fq.simulate_gd(W0, v0, W_t, v_t, [0.05, 0.1], 1.0, n_samples=30, seeds=[3, 4])


def test_every_variable_round_trips_through_the_file_and_xarray(gd_result, tmp_path):
    path = tmp_path / "gd.h5"
    fq.save(path, gd_result, weights=True)
    back = fq.read(path)
    ds = fq.load(path)
    mem = gd_result.to_xarray()
    with h5py.File(path, "r") as f:
        for var in schema.variables():
            if var.field is None:
                assert var.name not in mem
                continue
            want = getattr(gd_result, var.field)
            assert want is not None, var.name  # GD with weights: every field is there
            np.testing.assert_array_equal(getattr(back, var.field), want, err_msg=var.name)
            for where in (ds, mem):
                assert where[var.name].dims == var.dims, var.name
                np.testing.assert_array_equal(where[var.name].values, want)
            assert f[var.name].dtype == np.dtype(var.dtype), var.name
            assert f[var.name].attrs["long_name"] == var.doc
            scales = [f[var.name].dims[i][0].name.lstrip("/") for i in range(len(var.dims))]
            assert tuple(scales) == var.dims
        for name in schema.ATTRIBUTES:
            assert name in f.attrs, name
    # per-run parameters are coordinates, shared ones attributes, in all three views
    assert set(back.coords) == set(gd_result.coords) and "lr" in back.coords
    np.testing.assert_array_equal(back.coords["lr"], [0.05, 0.1])
    assert back.attrs["n_samples"] == gd_result.attrs["n_samples"] == 30
    for where in (ds, mem):
        assert where["lr"].dims == ("run",) and where.attrs["n_samples"] == 30
    assert "arrays: " + ", ".join(v.name for v in schema.variables() if v.name != "message") in (
        info(path)
    )


def test_a_result_is_immutable_and_replace_makes_a_copy(gd_result):
    with pytest.raises(dataclasses.FrozenInstanceError):
        gd_result.eps_g = None
    again = gd_result.replace(params={"note": "x", "lr": np.array([1.0, 2.0])})
    assert again.attrs["note"] == "x" and "note" not in gd_result.attrs
    np.testing.assert_array_equal(again.params["lr"], [1.0, 2.0])
    np.testing.assert_array_equal(gd_result.params["lr"], [0.05, 0.1])
    with pytest.raises(TypeError):
        gd_result.params["lr"] = 0


def test_the_file_format_page_shows_the_schema():
    text = (ROOT / "docs" / "file-format.md").read_text()
    begin, end = "<!-- schema:begin -->\n", "\n<!-- schema:end -->"
    shown = text[text.index(begin) + len(begin) : text.index(end)]
    assert shown == schema.markdown(), (
        "docs/file-format.md is out of date: paste fastquad.schema.markdown() between the "
        "schema markers"
    )
    for var in schema.variables():
        assert var.dims[0] == "run" and set(var.dims) <= set(schema.DIMENSIONS)
