"""Shared fixtures: the CDNOW calibration/holdout table and fitted models (built once per session)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from clvbayes.models.priors import FLAT

# published MLEs (Fader, Hardie & Lee 2005; Fader & Hardie 2013 note)
BGNBD_MLE = {"r": 0.2426, "alpha": 4.4136, "a": 0.7929, "b": 2.4259}
BGNBD_MLE_SE = {"r": 0.0126, "alpha": 0.378, "a": 0.186, "b": 0.705}
GG_MLE = {"p": 6.2488, "q": 3.7446, "gamma": 15.4478}


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


@pytest.fixture(scope="session")
def cdnow():
    """CDNOW sample: weekly calibration summary (39 weeks) with holdout actuals (39 weeks)."""
    from clvbayes.data import calibration_holdout_split
    from clvbayes.datasets import load_cdnow_transactions

    return calibration_holdout_split(
        load_cdnow_transactions(),
        calibration_end="1997-09-30",
        observation_end="1998-06-30",
        monetary_value_col="amount",
        time_unit="weeks",
    )


@pytest.fixture(scope="session")
def bgnbd_mle(cdnow):
    from clvbayes.models import BetaGeoModel

    return BetaGeoModel().fit(cdnow, method="mle")


@pytest.fixture(scope="session")
def gg_mle(cdnow):
    from clvbayes.models import GammaGammaModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GammaGammaModel().fit(cdnow, method="mle")


@pytest.fixture(scope="session")
def bgnbd_nuts_small(cdnow):
    """A short NUTS run (PyMC's sampler, whatever else is installed): for tests of structure."""
    from clvbayes.models import BetaGeoModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return BetaGeoModel().fit(
            cdnow, draws=100, tune=200, chains=2, seed=3, progressbar=False, nuts_sampler="pymc"
        )


@pytest.fixture(scope="session")
def gg_nuts_small(cdnow):
    from clvbayes.models import GammaGammaModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GammaGammaModel().fit(
            cdnow, draws=100, tune=200, chains=2, seed=4, progressbar=False, nuts_sampler="pymc"
        )


def flat_priors(model_cls):
    return dict.fromkeys(model_cls.param_names, FLAT)
