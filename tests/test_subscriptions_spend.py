"""Residual value from a spend model where the charge amount varies: score_subscribers against
an independent Monte Carlo of subscribers with known parameters, and the job's two paths
(varying amounts: Gamma-Gamma; constant amounts: the price)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from clvbayes import cli
from clvbayes.compat import posterior_from_arrays
from clvbayes.models import GammaGammaModel
from clvbayes.models.sbg import ShiftedBetaGeometricModel
from clvbayes.predict.retention import score_subscribers

A, B = 0.8, 2.4  # sBG
P, Q, GAMMA = 6.0, 4.0, 60.0  # Gamma-Gamma: mean amount p gamma / (q - 1) = 120
MARGIN, RATE, K = 0.4, 0.01, 6


def _fixed(cls, values, n=40):
    model = cls()
    model.posterior_ = posterior_from_arrays({k: np.full((1, n), v) for k, v in values.items()})
    return model


def _monte_carlo(t, x, zbar, rng, m=1_500_000, keep=300_000):
    """Value of the next K due dates and the residual value of one subscriber, by importance
    sampling the prior (theta ~ Beta(A, B) weighted by survival to t; nu ~ Gamma(Q, GAMMA)
    weighted by the likelihood of her x repeat charges of mean zbar), then simulating her
    future: renew at each due date with probability 1 - theta, each charge ~ Gamma(P, nu)."""
    theta = rng.beta(A, B, m)
    nu = rng.gamma(Q, 1.0 / GAMMA, m)
    log_w = t * np.log1p(-theta) + P * x * np.log(nu) - nu * x * zbar
    w = np.exp(log_w - log_w.max())
    idx = rng.choice(m, keep, p=w / w.sum())
    theta, nu = theta[idx], nu[idx]
    renew = rng.geometric(theta) - 1  # renewals still to come
    amounts = rng.gamma(P, 1.0 / nu[:, None], (keep, K)) * MARGIN
    disc = (1.0 + RATE) ** -np.arange(K)
    value = np.sum(amounts * disc * (np.arange(K) < renew[:, None]), axis=1)
    q = 1.0 / (1.0 + RATE)
    residual = MARGIN * (P / nu) * (1 - theta) / (1 - q * (1 - theta))
    return value, residual


def test_spend_model_residual_value_matches_a_monte_carlo_of_known_subscribers(rng):
    sbg = _fixed(ShiftedBetaGeometricModel, {"alpha": A, "beta": B})
    gg = _fixed(GammaGammaModel, {"p": P, "q": Q, "gamma": GAMMA})
    hist = [(0, 0, 0.0), (3, 3, 100.0), (10, 10, 150.0)]
    table = pd.DataFrame(
        [{"periods": t, "churned": 0, "frequency": x, "monetary_value": z} for t, x, z in hist],
        index=pd.Index(["new", "mid", "old"], name="id"),
    )
    res = score_subscribers(table, sbg, spend_model=gg, horizon=K, discount_rate=RATE,
                            margin=MARGIN, seed=4, n_outcome_samples=200_000)  # fmt: skip
    s = res.subscribers
    assert res.settings["value_source"] == "spend_model"
    for (t, x, z), row in zip(hist, s.itertuples(), strict=True):
        value, residual = _monte_carlo(t, x, z, rng)
        assert row.value_mean == pytest.approx(value.mean(), rel=0.02), (t, x)
        assert row.residual_value_mean == pytest.approx(residual.mean(), rel=0.02), (t, x)
        lo, hi = np.quantile(value, [0.05, 0.95])
        assert row.value_pi_upper == pytest.approx(hi, rel=0.03), (t, x)
        assert row.value_pi_lower == pytest.approx(lo, rel=0.03, abs=1.0), (t, x)
        # closed form: margin x E[z | x, zbar] x DERL, E[z] = p (gamma + x zbar) / (p x + q - 1)
        spend = P * (GAMMA + x * z) / (P * x + Q - 1)
        assert row.residual_value_mean == pytest.approx(MARGIN * spend * row.derl_mean, rel=1e-10)
    # totals from the same draws: revenue = sum of amount x renewals
    tot = res.totals.set_index("grouping").loc["all"]
    spend = np.array([P * (GAMMA + x * z) / (P * x + Q - 1) for _, x, z in hist])
    assert tot["revenue_total_mean"] == pytest.approx(
        float(np.sum(MARGIN * spend * s["renewals_mean"].to_numpy())), rel=1e-10
    )
    assert tot["value_total_mean"] == pytest.approx(s["value_mean"].sum(), rel=1e-10)


def test_spend_draws_carry_their_uncertainty_into_the_credible_interval(rng):
    sbg = _fixed(ShiftedBetaGeometricModel, {"alpha": A, "beta": B}, n=200)
    gg = GammaGammaModel()
    gg.posterior_ = posterior_from_arrays({"p": rng.gamma(100, P / 100, (1, 200)),
                                           "q": np.full((1, 200), Q),
                                           "gamma": np.full((1, 200), GAMMA)})  # fmt: skip
    table = pd.DataFrame({"periods": [2], "churned": [0], "frequency": [2],
                          "monetary_value": [110.0]}, index=["a"])  # fmt: skip
    s = score_subscribers(table, sbg, spend_model=gg, horizon=K, discount_rate=RATE).subscribers
    assert s.at["a", "residual_value_ci_upper"] > s.at["a", "residual_value_ci_lower"]
    assert s.at["a", "derl_ci_upper"] == pytest.approx(s.at["a", "derl_ci_lower"])


def _charge_log(tmp_path, n=300, seed=5):
    """A monthly charge log whose amounts vary from delivery to delivery (Gamma-Gamma)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        start = pd.Timestamp("2023-01-05") + pd.Timedelta(days=int(rng.integers(0, 500)))
        theta = rng.beta(1.0, 5.0)
        nu = rng.gamma(Q, 1.0 / GAMMA)
        k = 0
        while True:
            day = start + pd.DateOffset(months=k)
            if day > pd.Timestamp("2024-12-31"):
                break
            rows.append((f"C{i:03d}", day.strftime("%Y-%m-%d"), round(rng.gamma(P, 1 / nu), 2)))
            if rng.random() < theta:
                break
            k += 1
    path = tmp_path / "charges.csv"
    pd.DataFrame(rows, columns=["customer_id", "date", "amount"]).to_csv(path, index=False)
    return path


def test_job_uses_the_spend_model_when_charge_amounts_vary(tmp_path, capsys):
    path = _charge_log(tmp_path)
    out = tmp_path / "report"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = cli.main(["subscriptions", str(path), "--charges", "--grace-days", "7", "--period",
                       "month", "--as-of", "2024-12-31", "--margin", "0.5", "--holdout-periods",
                       "0", "--draws", "300", "-o", str(out), "-q"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0, err
    s = json.loads((out / "model_summary.json").read_text())
    assert s["settings"]["value_source"] == "spend_model" and s["data"]["amounts_vary"]
    assert "Gamma-Gamma" in s["settings"]["value_rule"]
    assert "gamma_gamma" in s["files"]["models"] and (out / "gamma_gamma.nc").is_file()
    assert "Value per renewal" in (out / "model_summary.md").read_text()
    d = pd.read_csv(out / "data_dictionary.csv").set_index(["table", "column"])
    assert "Gamma-Gamma" in d.loc[("subscribers", "residual_value_mean"), "meaning"]
    subs = pd.read_csv(out / "subscribers.csv")
    assert (subs["value_pi_lower"] <= subs["value_mean"]).all()
    assert (subs["residual_value_ci_lower"] < subs["residual_value_ci_upper"]).all()
