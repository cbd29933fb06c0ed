"""Both stacks: the compatibility module, ArviZ containers, and saved models across stacks."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from clvbayes import compat
from clvbayes.models import BetaGeoModel, GammaGammaModel

FIXTURES = Path(__file__).parent / "fixtures" / "saved_models"
PACKAGE = Path(__file__).parents[1] / "clvbayes"


def test_only_compat_branches_on_versions():
    """No module but clvbayes/compat.py looks at the ArviZ or PyMC version."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "compat.py":
            continue
        text = path.read_text()
        for needle in (
            "ARVIZ_MAJOR",
            "PYMC_MAJOR",
            "arviz.__version__",
            "pymc.__version__",
            'version("arviz")',
            'version("pymc")',
            "az.__version__",
            "pm.__version__",
        ):
            if needle in text:
                offenders.append(f"{path.relative_to(PACKAGE)}: {needle}")
    assert not offenders


def test_every_imported_distribution_is_declared():
    """Each third-party package the library imports is a declared dependency."""
    import tomllib

    declared = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    names = {
        d.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower()
        for d in declared["dependencies"]
    }
    optional = {
        d.split(">")[0].split("[")[0].strip().lower()
        for extra in declared["optional-dependencies"].values()
        for d in extra
    }
    stdlib = set(__import__("sys").stdlib_module_names)
    imported = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in stdlib and m not in ("clvbayes", "__future__")}
    aliases = {"arviz_stats": "arviz", "arviz_base": "arviz"}
    missing = sorted(m for m in third_party if aliases.get(m, m) not in names | optional)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_posterior_round_trips_through_the_installed_arviz_container():
    rng = np.random.default_rng(0)
    post = compat.posterior_from_arrays({"r": rng.gamma(2.0, size=(3, 40))})
    container = compat.to_arviz({"posterior": post}, {"note": "x"})
    if compat.ARVIZ_MAJOR >= 1:
        import xarray as xr

        assert isinstance(container, xr.DataTree)
    else:
        import arviz as az

        assert isinstance(container, az.InferenceData)
    back = compat.groups_of(container)["posterior"]
    np.testing.assert_array_equal(back["r"].values, post["r"].values)
    assert back["r"].dims == ("chain", "draw")


def test_model_idata_is_what_arviz_expects(bgnbd_mle):
    """Users pass model.idata_ straight to ArviZ."""
    import arviz as az

    table = az.summary(bgnbd_mle.idata_, var_names=["r"], kind="stats")
    assert "r" in str(table.index.tolist()) or "r" in table.columns


def test_diagnostics_and_psis_against_definitions():
    """r_hat ~ 1 and ESS ~ n for independent draws; PSIS weights normalise and k is small."""
    rng = np.random.default_rng(5)
    post = compat.posterior_from_arrays({"x": rng.normal(size=(4, 500))})
    assert compat.rhat(post, ["x"])["x"] == pytest.approx(1.0, abs=0.01)
    assert compat.ess(post, ["x"], "bulk")["x"] == pytest.approx(2000, rel=0.15)
    log_w, k = compat.psis_log_weights(rng.normal(scale=0.3, size=(6, 2000)), reff=1.0)
    np.testing.assert_allclose(np.exp(log_w).sum(axis=1), 1.0, rtol=1e-10)
    assert np.all(k < 0.5)


def test_psis_marks_a_row_of_repeated_draws_unreliable_instead_of_failing():
    """Draws from a chain that stood still repeat one value: no Pareto tail can be fitted
    (ArviZ 1.x raises); that row gets k = inf and the raw normalised ratios, the others
    their usual smoothed weights."""
    rng = np.random.default_rng(6)
    ratios = rng.normal(scale=0.3, size=(3, 400))
    ratios[1, :] = -2.0
    ratios[1, :40] = rng.normal(size=40) - 5.0  # the largest 360 ratios are equal
    log_w, k = compat.psis_log_weights(ratios, reff=1.0)
    assert np.isinf(k[1]) and np.all(k[[0, 2]] < 0.5)
    np.testing.assert_allclose(np.exp(log_w).sum(axis=1), 1.0, rtol=1e-10)
    expected = ratios[1] - np.log(np.exp(ratios[1]).sum())
    np.testing.assert_allclose(log_w[1], expected, rtol=1e-12)
    alone, _ = compat.psis_log_weights(ratios[[0]], reff=1.0)
    np.testing.assert_allclose(log_w[0], alone[0], rtol=1e-12)


def test_netcdf_layout_is_readable_by_the_installed_arviz(bgnbd_mle, tmp_path):
    import arviz as az

    bgnbd_mle.save(tmp_path / "m.nc")
    loaded = az.from_netcdf(str(tmp_path / "m.nc"))
    assert float(loaded.posterior["r"].values.ravel()[0]) == float(bgnbd_mle.draws()["r"][0, 0])


def test_model_files_hold_what_xarrays_to_netcdf_writes(bgnbd_mle, tmp_path):
    """write_groups bypasses to_netcdf (one open file, no dask scheduler query): the groups,
    their variables, dtypes, encodings and attributes read back as from to_netcdf's file."""
    import xarray as xr

    groups, attrs = bgnbd_mle._file_groups(True)
    ours, ref = tmp_path / "ours.nc", tmp_path / "ref.nc"
    compat.write_groups(ours, groups, attrs)
    xr.Dataset(attrs=dict(attrs)).to_netcdf(ref, mode="w", engine=compat.ENGINE)
    for name, ds in groups.items():
        ds.to_netcdf(ref, mode="a", group=name, engine=compat.ENGINE)
    got, got_attrs = compat.read_groups(ours)
    want, want_attrs = compat.read_groups(ref)
    assert got_attrs == want_attrs == dict(attrs)
    assert list(got) == list(want) == [k for k, v in groups.items() if v is not None]
    for name in want:
        xr.testing.assert_identical(got[name], want[name])
        for var in want[name].variables:
            assert got[name][var].dtype == want[name][var].dtype
            assert got[name][var].encoding.get("dtype") == want[name][var].encoding.get("dtype")


@pytest.mark.parametrize("stack", ["pymc5", "pymc6"])
def test_models_saved_by_either_stack_load_with_identical_predictions(stack):
    """Fixtures written by tests/fixtures/saved_models/make.py under each stack."""
    from fixtures.saved_models.make import predictions

    bg = BetaGeoModel.load(FIXTURES / f"bgnbd_{stack}.nc")
    gg = GammaGammaModel.load(FIXTURES / f"gamma_gamma_{stack}.nc")
    assert bg.posterior_.sizes == {"chain": 1, "draw": 50}
    expected = json.loads((FIXTURES / f"expected_{stack}.json").read_text())
    got = predictions(bg, gg)
    for name, values in expected.items():
        # same draws and data, bit for bit; the closed forms agree to rounding across numpy/scipy
        np.testing.assert_allclose(got[name], values, rtol=1e-12, atol=0, err_msg=name)


def test_save_load_round_trip_is_exact_on_this_stack(tmp_path):
    from fixtures.saved_models.make import fixture_models, predictions

    bg, gg = fixture_models()
    bg.save(tmp_path / "bg.nc")
    gg.save(tmp_path / "gg.nc")
    bg2, gg2 = BetaGeoModel.load(tmp_path / "bg.nc"), GammaGammaModel.load(tmp_path / "gg.nc")
    for k in bg.param_names:
        np.testing.assert_array_equal(bg2.draws()[k], bg.draws()[k])
    assert predictions(bg2, gg2) == predictions(bg, gg)


def test_interval_conventions_do_not_follow_arviz_defaults(cdnow):
    """clvbayes' intervals are 90 % equal-tailed whatever ArviZ's rcParams say."""
    import arviz as az

    from clvbayes.predict import summarize_draws

    m = BetaGeoModel().fit(cdnow, method="laplace", seed=4, draws=400)
    before = m.summary()
    table_before = summarize_draws(m.p_alive())
    key = "stats.ci_prob" if "stats.ci_prob" in az.rcParams else "stats.hdi_prob"
    with az.rc_context({key: 0.5}):
        after = m.summary()
        table_after = summarize_draws(m.p_alive())
    pd_testing = __import__("pandas").testing
    pd_testing.assert_frame_equal(before, after)
    pd_testing.assert_frame_equal(table_before, table_after)
    v = m.draws()["r"].ravel()
    assert before.loc["r", "lower_0.9"] == pytest.approx(np.quantile(v, 0.05), rel=1e-12)
    assert before.loc["r", "upper_0.9"] == pytest.approx(np.quantile(v, 0.95), rel=1e-12)


def test_arviz_compare_on_to_arviz_with_log_likelihood(bgnbd_nuts_small):
    """model.to_arviz(log_likelihood=True) is what arviz.compare takes, on either ArviZ."""
    import arviz as az

    table = az.compare(
        {"a": bgnbd_nuts_small.to_arviz(log_likelihood=True),
         "b": bgnbd_nuts_small.to_arviz(log_likelihood=True)}
    )  # fmt: skip
    assert len(table) == 2
